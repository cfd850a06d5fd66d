package main

import (
	"os"
	"path/filepath"
	"testing"
)

func TestSample(t *testing.T) {
	tests := []struct {
		line  string
		name  string
		value float64
		ok    bool
	}{
		{"oauthrelay_store_commits_total 1234", "oauthrelay_store_commits_total", 1234, true},
		{`oauthrelay_queue_enqueued_total{account="a@example.com"} 7`, "oauthrelay_queue_enqueued_total", 7, true},
		{`m{l="a } b"} 2.5e+03 1700000000000`, "m", 2500, true},
		{"# HELP oauthrelay_store_commits_total Write transactions.", "", 0, false},
		{"", "", 0, false},
		{"m NaNx", "m", 0, false},
		{`m{l="x"`, "", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.line, func(t *testing.T) {
			name, value, ok := sample(tt.line)
			if ok != tt.ok || (ok && (name != tt.name || value != tt.value)) {
				t.Errorf("sample(%q) = %q, %v, %v; want %q, %v, %v", tt.line, name, value, ok, tt.name, tt.value, tt.ok)
			}
		})
	}
}

func TestParsePerfCSV(t *testing.T) {
	tests := []struct {
		name    string
		out     string
		want    int
		wantErr bool
	}{
		{"both events", "# started on Thu Nov 26 02:31:44 2026\n\n12,,syscalls:sys_enter_fsync,63258477,100.00,,\n3400,,syscalls:sys_enter_fdatasync,63258477,100.00,,\n", 3412, false},
		{"not counted", "<not counted>,,syscalls:sys_enter_fsync,0,100.00,,\n5,,syscalls:sys_enter_fdatasync,1,100.00,,\n", 0, true},
		{"an event missing", "5,,syscalls:sys_enter_fdatasync,1,100.00,,\n", 0, true},
		{"empty", "", 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "perf.csv")
			if err := os.WriteFile(path, []byte(tt.out), 0o600); err != nil {
				t.Fatal(err)
			}
			got, err := parsePerfCSV(path, len(fsyncEvents))
			if (err != nil) != tt.wantErr || got != tt.want {
				t.Errorf("parsePerfCSV = %d, %v; want %d, error %v", got, err, tt.want, tt.wantErr)
			}
		})
	}
}
