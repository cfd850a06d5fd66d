package telemetry

import (
	"fmt"
	"reflect"
	"time"

	"github.com/hashicorp/go-hclog"
)

// redactingSink replaces registered secrets in a log line's message and
// arguments before the wrapped sink formats them. Formatting escapes
// characters — JSON writes & as \u0026 and " as \", the text format quotes
// values and indents multi-line ones — and an escaped secret no longer
// matches the bytes the output-level net (Redactor.Write) looks for.
type redactingSink struct {
	next     hclog.SinkAdapter
	redactor *Redactor
	// level is next's: a line below it is dropped before it is
	// redacted. The root logger passes every line of every level to its
	// sinks (hclog's interceptLogger), so at the default level each
	// Debug call of a busy relay would otherwise be formatted and
	// searched for secrets only to be thrown away.
	level hclog.Level
}

// Accept implements hclog.SinkAdapter.
func (s *redactingSink) Accept(name string, level hclog.Level, msg string, args ...interface{}) {
	if level < s.level {
		return
	}
	clean := make([]interface{}, len(args))
	for i, a := range args {
		clean[i] = s.redactor.redactValue(a)
	}
	s.next.Accept(name, level, s.redactor.RedactString(msg), clean...)
}

// redactValue returns v with secrets replaced. Values that can hold text
// (strings, byte slices, errors, Stringers, structs, maps, slices) are
// formatted to a string here, so that what is checked is exactly what
// the formatter would print; numbers, booleans and times pass unchanged.
func (r *Redactor) redactValue(v interface{}) interface{} {
	switch x := v.(type) {
	case nil, bool, time.Duration, time.Time, hclog.Hex, hclog.Octal, hclog.Binary:
		return v
	case string:
		return r.RedactString(x)
	case hclog.Quote:
		return hclog.Quote(r.RedactString(string(x)))
	case hclog.CapturedStacktrace:
		return hclog.CapturedStacktrace(r.RedactString(string(x)))
	case hclog.Format:
		if len(x) == 0 {
			return ""
		}
		return r.RedactString(fmt.Sprintf(fmt.Sprint(x[0]), x[1:]...))
	case []byte:
		// Printed as a string rather than numbers or base64, which
		// neither layer of the net could recognise.
		return r.RedactString(string(x))
	case error:
		return r.RedactString(x.Error())
	case fmt.Stringer:
		return r.RedactString(x.String())
	}
	switch reflect.ValueOf(v).Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128, reflect.Bool:
		return v
	}
	return r.RedactString(fmt.Sprintf("%+v", v))
}
