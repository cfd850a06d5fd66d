// Package telemetry sets up logging and serves metrics and health over
// HTTP. Other packages register into it; it imports none of them.
package telemetry

import (
	"io"
	"os"

	"github.com/hashicorp/go-hclog"
)

// LogOptions configure the root logger.
type LogOptions struct {
	Level  string // trace, debug, info, warn, error
	Format string // text or json
	Output io.Writer
}

// NewLogger returns the root logger; components take Named() children and
// log key/value pairs.
func NewLogger(o LogOptions) hclog.InterceptLogger {
	if o.Output == nil {
		o.Output = os.Stderr
	}
	level := hclog.LevelFromString(o.Level)
	if level == hclog.NoLevel {
		level = hclog.Info
	}
	return hclog.NewInterceptLogger(&hclog.LoggerOptions{
		Name:            "oauthrelay",
		Level:           level,
		JSONFormat:      o.Format == "json",
		Output:          o.Output,
		TimeFormat:      "2006-01-02T15:04:05.000Z0700",
		IncludeLocation: false,
		Color:           hclog.ColorOff,
	})
}
