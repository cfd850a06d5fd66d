package httpsend

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxDelaySeconds is the largest delay-seconds a time.Duration holds; a
// larger one is taken as malformed rather than wrapped into the past.
const maxDelaySeconds = int(math.MaxInt64 / int64(time.Second))

// RetryAfter parses a Retry-After value, delay-seconds or an HTTP-date
// (RFC 9110 §10.2.3), into a time; zero when absent or malformed.
func RetryAfter(v string, now time.Time) time.Time {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 && s <= maxDelaySeconds {
		return now.Add(time.Duration(s) * time.Second)
	}
	if t, err := http.ParseTime(v); err == nil {
		return t
	}
	return time.Time{}
}
