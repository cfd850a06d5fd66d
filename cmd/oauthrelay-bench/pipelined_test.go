package main

import "testing"

func TestDotStuffed(t *testing.T) {
	tests := []struct{ in, want string }{
		{"Subject: x\r\n\r\nbody\r\n", "Subject: x\r\n\r\nbody\r\n"},
		{".first\r\n", "..first\r\n"},
		{"a\r\n.b\r\n..c\r\n", "a\r\n..b\r\n...c\r\n"},
	}
	for _, tt := range tests {
		if got := dotStuffed(tt.in); got != tt.want {
			t.Errorf("dotStuffed(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}
