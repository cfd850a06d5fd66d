package engine

import (
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"
)

func TestMigrations(t *testing.T) {
	file := func(text string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(text)} }
	fsys := fstest.MapFS{
		"m/0002_index.sql":  file(NoTransactionMarker + "\nCREATE INDEX CONCURRENTLY IF NOT EXISTS i ON t (c);\n"),
		"m/0001_init.sql":   file("CREATE TABLE t (c int);\n"),
		"m/0003_later.sql":  file("-- a comment\n" + NoTransactionMarker + "\nSELECT 1;\n"),
		"m/0004_crlf.sql":   file(NoTransactionMarker + "\r\nSELECT 1;\r\n"),
		"m/readme.txt":      file("not a migration"),
		"other/0009_x.sql":  file("SELECT 1;"),
		"m/sub/0005_no.sql": file("SELECT 1;"),
	}
	ms, err := Migrations(fsys, "m")
	if err != nil {
		t.Fatal(err)
	}
	type step struct {
		Version int
		Name    string
		NoTx    bool
	}
	var got []step
	for _, m := range ms {
		got = append(got, step{m.Version, m.Name, m.NoTransaction})
	}
	// The marker counts on the first line only.
	want := []step{{1, "0001_init.sql", false}, {2, "0002_index.sql", true}, {3, "0003_later.sql", false}, {4, "0004_crlf.sql", true}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Migrations (-want +got):\n%s", diff)
	}
}

func TestMigrationsRefused(t *testing.T) {
	file := func(text string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(text)} }
	for name, fsys := range map[string]fstest.MapFS{
		"a gap":       {"m/0001_a.sql": file("SELECT 1;"), "m/0003_c.sql": file("SELECT 1;")},
		"no number":   {"m/init.sql": file("SELECT 1;")},
		"not from 1":  {"m/0002_b.sql": file("SELECT 1;")},
		"twice a one": {"m/0001_a.sql": file("SELECT 1;"), "m/0001_b.sql": file("SELECT 1;")},
	} {
		if ms, err := Migrations(fsys, "m"); err == nil {
			t.Errorf("%s: Migrations = %d steps, want an error", name, len(ms))
		}
	}
}
