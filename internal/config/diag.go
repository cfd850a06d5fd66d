package config

import (
	"fmt"
	"io"
	"strings"

	"github.com/hashicorp/hcl/v2"
)

// Position is where a range starts, as "file:line:col": the prefix of
// every error that points into the configuration.
func Position(at hcl.Range) string {
	return fmt.Sprintf("%s:%d:%d", at.Filename, at.Start.Line, at.Start.Column)
}

// FormatDiagnostic renders one diagnostic on a single line as
// "file:line:col: severity: summary: detail", the form editors and CI logs
// link to.
func FormatDiagnostic(d *hcl.Diagnostic) string {
	var b strings.Builder
	if d.Subject != nil && d.Subject.Filename != "" {
		if d.Subject.Start.Line > 0 {
			fmt.Fprintf(&b, "%s: ", Position(*d.Subject))
		} else {
			fmt.Fprintf(&b, "%s: ", d.Subject.Filename)
		}
	}
	if d.Severity == hcl.DiagWarning {
		b.WriteString("warning: ")
	}
	b.WriteString(d.Summary)
	if d.Detail != "" {
		b.WriteString(": ")
		b.WriteString(strings.Join(strings.Fields(d.Detail), " "))
	}
	return b.String()
}

// WriteDiagnostics prints diagnostics one per line, or, when pretty is set
// (a terminal), with hcl's source snippets under each line.
func (l Loaded) WriteDiagnostics(w io.Writer, pretty bool, width uint) error {
	for _, d := range l.Diagnostics {
		if _, err := fmt.Fprintln(w, FormatDiagnostic(d)); err != nil {
			return err
		}
		if pretty && d.Subject != nil && l.Files != nil {
			snippet := hcl.NewDiagnosticTextWriter(w, l.Files, width, false)
			// The text writer repeats the summary; it is the snippet we want.
			if err := snippet.WriteDiagnostic(d); err != nil {
				return err
			}
		}
	}
	return nil
}
