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

// daysPrefix matches a leading number of days, the unit time.ParseDuration
// lacks and retention settings need ("30d", "1.5d", "1d12h").
var daysPrefix = regexp.MustCompile(`^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)d`)

// ParseDuration parses a duration as the configuration writes it (see
// parseDuration): the admin API takes "since=7d" in the same words.
func ParseDuration(s string) (time.Duration, error) { return parseDuration(s) }

// parseDuration parses a Go duration string, optionally led by a number of
// days (24 hours each), and requires it to be positive.
func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(daysToHours(s))
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration; use a number with a unit such as \"30s\", \"5m\", \"1h\" or \"30d\"", s)
	}
	if d <= 0 {
		return 0, fmt.Errorf("%q must be greater than zero", s)
	}
	return d, nil
}

// daysToHours rewrites a leading number of days as hours, exactly
// ("1.5d12h" becomes "36.0h12h", which time.ParseDuration sums), and
// returns any other string unchanged.
func daysToHours(s string) string {
	m := daysPrefix.FindStringSubmatch(s)
	if m == nil {
		return s
	}
	days, ok := new(big.Rat).SetString(m[1])
	if !ok {
		return s
	}
	fraction := 0
	if _, frac, found := strings.Cut(m[1], "."); found {
		fraction = len(frac)
	}
	hours := days.Mul(days, big.NewRat(24, 1)).FloatString(fraction)
	return hours + "h" + s[len(m[0]):]
}
