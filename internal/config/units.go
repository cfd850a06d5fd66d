package config

import (
	"fmt"
	"math"
	"math/big"
	"regexp"
	"strings"
	"time"
)

var sizePattern = regexp.MustCompile(`^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$`)

var sizeUnits = map[string]float64{
	"": 1, "b": 1,
	"kb": 1e3, "mb": 1e6, "gb": 1e9,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30,
	"k": 1e3, "m": 1e6, "g": 1e9,
}

// ParseSize parses a byte size such as "35MB", "512KiB" or "1048576".
// Decimal units (KB, MB, GB) are powers of 1000 and binary units (KiB, MiB,
// GiB) powers of 1024, as in SMTP SIZE (RFC 1870) which counts plain octets.
func ParseSize(s string) (int64, error) {
	m := sizePattern.FindStringSubmatch(s)
	if m == nil {
		return 0, fmt.Errorf("%q is not a size; use bytes or a number with a unit such as \"35MB\" or \"10MiB\"", s)
	}
	mult, ok := sizeUnits[strings.ToLower(m[2])]
	if !ok {
		return 0, fmt.Errorf("%q has an unknown unit %q; use B, KB, MB, GB, KiB, MiB or GiB", s, m[2])
	}
	// Exact decimal arithmetic: in float64, "8.2MB" would be one byte short
	// and the bound below would let 2^62 through.
	n, ok := new(big.Rat).SetString(m[1])
	if !ok {
		return 0, fmt.Errorf("%q is not a size", s)
	}
	n.Mul(n, new(big.Rat).SetFloat64(mult))
	v := new(big.Int).Quo(n.Num(), n.Denom())
	if !v.IsInt64() || v.Int64() > math.MaxInt64/2 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return v.Int64(), nil
}

// parseDuration parses a Go duration string and requires it to be positive.
func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration; use a number with a unit such as \"30s\", \"5m\" or \"1h\"", s)
	}
	if d <= 0 {
		return 0, fmt.Errorf("%q must be greater than zero", s)
	}
	return d, nil
}
