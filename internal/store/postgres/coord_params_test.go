package postgres

import (
	"testing"
	"time"

	"github.com/oauthrelay/oauthrelay/internal/store"
)

func TestParamsOf(t *testing.T) {
	quarter := int64(15 * time.Minute)
	cases := []struct {
		name string
		l    store.SharedLimits
		want limitParams
		bad  bool
	}{
		{"nothing set", store.SharedLimits{}, limitParams{width: quarter, buckets: 96}, false},
		{"rate and burst", store.SharedLimits{PerMinute: 30, Burst: 5},
			limitParams{emission: int64(2 * time.Second), burst: 5, width: quarter, buckets: 96}, false},
		{"a Burst of 0 is PerMinute", store.SharedLimits{PerMinute: 30},
			limitParams{emission: int64(2 * time.Second), burst: 30, width: quarter, buckets: 96}, false},
		{"negative limits are off", store.SharedLimits{PerMinute: -1, DailyMsgs: -5, DailyRcpts: -1},
			limitParams{width: quarter, buckets: 96}, false},
		{"daily quotas and hourly buckets", store.SharedLimits{DailyMsgs: 10000, DailyRcpts: 1 << 40, BucketWidth: time.Hour},
			limitParams{dailyMsgs: 10000, dailyRcpts: 1<<31 - 1, width: int64(time.Hour), buckets: 24}, false},
		{"faster than a nanosecond apart is no rate", store.SharedLimits{PerMinute: 1 << 40},
			limitParams{width: quarter, buckets: 96}, false},
		{"buckets under a second", store.SharedLimits{BucketWidth: time.Millisecond}, limitParams{}, true},
		{"buckets over a day", store.SharedLimits{BucketWidth: 25 * time.Hour}, limitParams{}, true},
		{"a burst beyond any clock", store.SharedLimits{PerMinute: 1, Burst: 1 << 30}, limitParams{}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := paramsOf(tc.l)
			if (err != nil) != tc.bad || got != tc.want {
				t.Fatalf("paramsOf(%+v) = %+v, %v; want %+v, error %v", tc.l, got, err, tc.want, tc.bad)
			}
		})
	}
}
