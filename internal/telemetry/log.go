// Package telemetry sets up logging and serves metrics and health over
// HTTP. Other packages register into it; it imports none of them.
package telemetry

import (
	"io"
	"os"
	"sync"

	"github.com/hashicorp/go-hclog"
)

// Logging is the process's logging: a root logger whose level and format
// can change on reload, writing through a redaction safety net of two
// layers: secrets are replaced in the message and arguments before they
// are formatted (so escaping cannot hide them), and again in the output.
type Logging struct {
	root     hclog.InterceptLogger
	redactor *Redactor

	mu   sync.Mutex
	sink hclog.SinkAdapter
}

// NewLogging returns logging to out at the given level and format
// ("text" or "json").
func NewLogging(out io.Writer, level, format string) *Logging {
	if out == nil {
		out = os.Stderr
	}
	l := &Logging{redactor: NewRedactor(out)}
	// The root only fans out to the sink; the sink formats and filters,
	// and can be replaced while components keep their Named() loggers.
	l.root = hclog.NewInterceptLogger(&hclog.LoggerOptions{Name: "oauthrelay", Level: hclog.Off, Output: io.Discard})
	l.Configure(level, format)
	return l
}

// Logger returns the root logger.
func (l *Logging) Logger() hclog.Logger { return l.root }

// Redactor returns the safety net, to register secret values with.
func (l *Logging) Redactor() *Redactor { return l.redactor }

// Configure switches level and format.
func (l *Logging) Configure(level, format string) {
	lvl := hclog.LevelFromString(level)
	if lvl == hclog.NoLevel {
		lvl = hclog.Info
	}
	formatter := hclog.NewSinkAdapter(&hclog.LoggerOptions{
		Level:      lvl,
		JSONFormat: format == "json",
		Output:     l.redactor,
		TimeFormat: "2006-01-02T15:04:05.000Z0700",
		Color:      hclog.ColorOff,
	})
	sink := &redactingSink{next: formatter, redactor: l.redactor, level: lvl}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.root.RegisterSink(sink)
	if l.sink != nil {
		l.root.DeregisterSink(l.sink)
	}
	l.sink = sink
}
