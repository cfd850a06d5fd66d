package config

import (
	"math"
	"math/big"
	"regexp"
	"strings"
	"testing"
	"time"
)

// sizeUnitsInOrder lists every size unit from the smallest, with its exact
// number of bytes (README "Configuration reference": "35MB" = 35×10⁶,
// "25MiB" = 25×2²⁰).
var sizeUnitsInOrder = []struct {
	unit  string
	bytes int64
}{
	{"B", 1}, {"KB", 1e3}, {"KiB", 1 << 10}, {"MB", 1e6}, {"MiB", 1 << 20}, {"GB", 1e9}, {"GiB", 1 << 30},
}

// sizeUnitBytes: the units above in lower case, plus a bare number (bytes)
// and the one-letter forms k, m and g (decimal).
var sizeUnitBytes = map[string]int64{
	"": 1, "b": 1, "kb": 1e3, "kib": 1 << 10, "mb": 1e6, "mib": 1 << 20, "gb": 1e9, "gib": 1 << 30,
	"k": 1e3, "m": 1e6, "g": 1e9,
}

// sizeNumber is a size's numeric part as the README describes it: digits,
// optionally with a decimal fraction.
var sizeNumber = regexp.MustCompile(`^\s*([0-9]+(?:\.[0-9]+)?)`)

// FuzzParseSize checks ParseSize: no panic; a result is never negative nor
// larger than the documented bound; units are case-insensitive (ASCII) and
// ordered; decimal values are exact ("8.2MB" is 8,200,000 bytes, not one
// byte less through floating point).
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{
		"0", "1", "1048576", "35MB", "25MiB", "512KiB", "10kb", "1k", "2M", "3g", " 10 MB ", "1\tKB",
		"8.2MB", "4.35KB", "1.5GiB", "0.5B", "0.001KB", "0.0001KB", "1.999999999999999999999GB",
		"4611686018427387903", "4611686018427387904", "4611686018427387903B", "4294967296GiB", "4294967295GiB",
		"99999999999999999999", "0." + strings.Repeat("9", 400) + "GB",
		"", " ", "MB", "-1", "+1", "1e6", "1.", ".5MB", "1..5", "0x10", "1_000", "NaN", "Inf",
		"1TB", "1 K B", "1KBB", "35XB", "١٢MB", "1kıb", "\x00", "1MB\x00", "1\nMB",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			if n != 0 {
				t.Fatalf("ParseSize(%q) = %d with error %v", s, n, err)
			}
			return
		}
		if n < 0 || n > math.MaxInt64/2 {
			t.Fatalf("ParseSize(%q) = %d, outside [0, MaxInt64/2]", s, n)
		}
		for _, variant := range []string{asciiUpper(s), asciiLower(s)} {
			if m, err := ParseSize(variant); err != nil || m != n {
				t.Fatalf("ParseSize(%q) = %d but ParseSize(%q) = %d, %v", s, n, variant, m, err)
			}
		}
		num := sizeNumber.FindStringSubmatch(s)
		if num == nil {
			t.Fatalf("ParseSize(%q) = %d without a number", s, n)
		}
		checkSizeExact(t, s, n, num[1])
		checkSizeUnitsOrdered(t, num[1])
	})
}

// checkSizeExact compares n with the exact value: the number times its
// unit, truncated to whole bytes.
func checkSizeExact(t *testing.T, s string, n int64, number string) {
	t.Helper()
	unit := strings.ToLower(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(s), number)))
	mult, ok := sizeUnitBytes[unit]
	if !ok {
		t.Fatalf("ParseSize(%q) = %d with a unit (%q) the README does not list", s, n, unit)
	}
	r, ok := new(big.Rat).SetString(number)
	if !ok {
		t.Fatalf("cannot parse %q", number)
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	want := new(big.Int).Quo(r.Num(), r.Denom())
	if !want.IsInt64() || want.Int64() != n {
		t.Fatalf("ParseSize(%q) = %d, want %s", s, n, want)
	}
}

// checkSizeUnitsOrdered: the same number with a bigger unit is never
// smaller, and once a unit makes it too large every bigger one does too.
func checkSizeUnitsOrdered(t *testing.T, number string) {
	t.Helper()
	prev, tooLarge := int64(-1), false
	for _, u := range sizeUnitsInOrder {
		v, err := ParseSize(number + u.unit)
		switch {
		case err != nil:
			tooLarge = true
		case tooLarge:
			t.Fatalf("%s%s parses after a smaller unit was too large", number, u.unit)
		case v < prev:
			t.Fatalf("%s%s = %d is less than with the previous unit (%d)", number, u.unit, v, prev)
		default:
			prev = v
		}
	}
}

var durationUnitsInOrder = []string{"ns", "us", "ms", "s", "m", "h", "d"}

var durationNumber = regexp.MustCompile(`^[0-9]*(?:\.[0-9]*)?`)

// leadingDays splits a duration into a leading number of days and the
// rest, as the README describes the "d" unit ("30d", "1d12h").
var leadingDays = regexp.MustCompile(`^([0-9]+(?:\.[0-9]*)?|\.[0-9]+)d(.*)$`)

// FuzzParseDuration checks the duration parser: no panic; a duration is
// always positive; without days it is exactly what time.ParseDuration
// reads, and a whole number of days adds exactly that many 24 hours; "us"
// and "µs" agree; a bigger unit never gives a smaller duration.
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{
		"30s", "5m", "1h", "1h30m", "300ms", "1.5h", "1µs", "1μs", "1us", "1ns", ".5s", "5.s",
		"9223372036854775807ns", "9223372036854775808ns", "2562047h", "2562048h", "2562047h47m16.854775807s",
		"0", "0s", "-5s", "-0s", "+5s", "", " 5s", "5 s", "5", "1d", "30d", "1e3s", "5S", "\x00", "1h\x00",
		"0.0000000001s", "1" + strings.Repeat("0", 40) + "ns",
		"1d12h", "1.5d", ".5d", "5.d", "0d", "0d1s", "1d0", "1d-5s", "1d+5s", "1d1d", "-1d", "1D", "d", ".d",
		"106751d", "106752d", "106751d23h47m16.854775807s", "106751d23h47m16.854775808s", "1" + strings.Repeat("0", 400) + "d",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseDuration(s)
		if err != nil {
			if d != 0 {
				t.Fatalf("parseDuration(%q) = %v with error %v", s, d, err)
			}
		} else if d <= 0 {
			t.Fatalf("parseDuration(%q) = %v, not positive", s, d)
		}
		checkDurationOracle(t, s, d, err)
		number := durationNumber.FindString(s)
		if strings.Trim(number, ".") == "" {
			return
		}
		checkDurationUnitsOrdered(t, number)
	})
}

// checkDurationOracle compares parseDuration with time.ParseDuration: the
// same result without days; with a whole number of days, that many times
// 24 hours plus the rest; with a fraction of a day, within the day after
// the whole part.
func checkDurationOracle(t *testing.T, s string, d time.Duration, err error) {
	t.Helper()
	m := leadingDays.FindStringSubmatch(s)
	if m == nil {
		if std, stdErr := time.ParseDuration(s); (err == nil) != (stdErr == nil && std > 0) || err == nil && std != d {
			t.Fatalf("parseDuration(%q) = %v, %v; time.ParseDuration says %v, %v", s, d, err, std, stdErr)
		}
		return
	}
	whole, frac, _ := strings.Cut(m[1], ".")
	want, ok := wholeDays(whole, m[2])
	if strings.Trim(frac, "0") == "" {
		if (err == nil) != (ok && want > 0) || err == nil && d != want {
			t.Fatalf("parseDuration(%q) = %v, %v; want %v (valid: %v)", s, d, err, want, ok)
		}
		return
	}
	if err == nil && ok && (d < want || d-want > 24*time.Hour) {
		t.Fatalf("parseDuration(%q) = %v, not within a day after %v", s, d, want)
	}
}

// wholeDays is days×24h plus the rest of the string as time.ParseDuration
// reads it after a number of hours: a sign or a bare "0" is invalid there.
func wholeDays(days, rest string) (time.Duration, bool) {
	n, ok := new(big.Int).SetString("0"+days, 10)
	limit := big.NewInt(math.MaxInt64 / int64(24*time.Hour))
	if !ok || n.Cmp(limit) > 0 {
		return 0, false
	}
	total := time.Duration(n.Int64()) * 24 * time.Hour
	if rest == "" {
		return total, true
	}
	if rest == "0" || rest[0] == '+' || rest[0] == '-' {
		return 0, false
	}
	r, err := time.ParseDuration(rest)
	if err != nil || r > math.MaxInt64-total {
		return 0, false
	}
	return total + r, true
}

func checkDurationUnitsOrdered(t *testing.T, number string) {
	t.Helper()
	us, errUS := parseDuration(number + "us")
	micro, errMicro := parseDuration(number + "µs")
	if us != micro || (errUS == nil) != (errMicro == nil) {
		t.Fatalf("%sus = %v, %v but %sµs = %v, %v", number, us, errUS, number, micro, errMicro)
	}
	// A small unit may give zero (rejected); only a failure after a success
	// is an overflow, and no bigger unit may succeed after it.
	prev, overflowed := time.Duration(0), false
	for _, u := range durationUnitsInOrder {
		d, err := parseDuration(number + u)
		switch {
		case err != nil:
			overflowed = overflowed || prev > 0
		case overflowed:
			t.Fatalf("%s%s parses after a smaller unit overflowed", number, u)
		case d < prev:
			t.Fatalf("%s%s = %v is less than with the previous unit (%v)", number, u, d, prev)
		default:
			prev = d
		}
	}
}

func asciiUpper(s string) string { return mapASCII(s, 'a', 'z', 'A'-'a') }
func asciiLower(s string) string { return mapASCII(s, 'A', 'Z', 'a'-'A') }

// mapASCII shifts the bytes in [lo, hi] by delta and leaves every other
// byte alone (strings.ToUpper would also turn "ı" into "I").
func mapASCII(s string, lo, hi byte, delta int) string {
	b := []byte(s)
	for i, c := range b {
		if c >= lo && c <= hi {
			b[i] = byte(int(c) + delta)
		}
	}
	return string(b)
}
