package postgres

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestSplitStatements(t *testing.T) {
	cases := []struct {
		name string
		sql  string
		want []string
	}{
		{"two", "SELECT 1; SELECT 2;", []string{"SELECT 1", "SELECT 2"}},
		{"last without a semicolon", "SELECT 1;\nSELECT 2\n", []string{"SELECT 1", "SELECT 2"}},
		{"comments and blanks are no statements", "-- a; b\n/* c; */\n;\n  ;-- d", nil},
		{"comments before a statement are left out", "-- why;\n/* more */ SELECT 1; -- after\n", []string{"SELECT 1"}},
		{"comment inside a statement", "SELECT 1 -- one; two\n + 2;", []string{"SELECT 1 -- one; two\n + 2"}},
		{"nested block comment", "SELECT /* a /* b; */ c; */ 1;", []string{"SELECT /* a /* b; */ c; */ 1"}},
		{"string", "SELECT 'a;b', 'it''s;';", []string{"SELECT 'a;b', 'it''s;'"}},
		{"escape string", `SELECT E'a\';b', 'c\';`, []string{`SELECT E'a\';b', 'c\'`}},
		{"E ending an identifier is no escape string", `SELECT name'x\'; SELECT 2;`, []string{`SELECT name'x\'`, "SELECT 2"}},
		{"quoted identifier", `SELECT 1 AS "a;""b";`, []string{`SELECT 1 AS "a;""b"`}},
		{"dollar quotes", "DO $$ BEGIN PERFORM 1; END $$; SELECT 2;", []string{"DO $$ BEGIN PERFORM 1; END $$", "SELECT 2"}},
		{"tagged dollar quotes", "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $f$ SELECT 1; $$ $f$;",
			[]string{"CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $f$ SELECT 1; $$ $f$"}},
		{"dollar quotes inside dollar quotes", "DO $$ BEGIN EXECUTE $q$ SELECT 1; $q$; END $$;",
			[]string{"DO $$ BEGIN EXECUTE $q$ SELECT 1; $q$; END $$"}},
		{"parameters are no dollar quotes", "SELECT $1; SELECT $2;", []string{"SELECT $1", "SELECT $2"}},
		{"a dollar inside an identifier", "SELECT a$b; SELECT 2;", []string{"SELECT a$b", "SELECT 2"}},
		{"non-ASCII", "SELECT 'ü;'; SELECT 2;", []string{"SELECT 'ü;'", "SELECT 2"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := splitStatements(tc.sql)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("splitStatements(%q) (-want +got):\n%s", tc.sql, diff)
			}
		})
	}
}

func TestSplitStatementsUnterminated(t *testing.T) {
	for _, sql := range []string{"SELECT 'a;", `SELECT "a;`, "DO $$ BEGIN; END;", "SELECT /* /* */ 1;", "DO $f$ x $g$;", `SELECT E'\';`} {
		if got, err := splitStatements(sql); err == nil {
			t.Errorf("splitStatements(%q) = %q, want an error", sql, got)
		}
	}
}
