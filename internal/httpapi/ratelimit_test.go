package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/redistest"
)

func TestRateLimitHeaders(t *testing.T) {
	t.Parallel()
	s, _ := setup(t, func(c *Config) { c.RateLimit = 0.01; c.RateBurst = 2 }) // a token per 100 s
	body := `{"features":[1]}`

	rec := predict(t, s, body)
	require.Equal(t, http.StatusOK, rec.Code)
	require.Equal(t, "2", rec.Header().Get("RateLimit-Limit"))
	require.Equal(t, "1", rec.Header().Get("RateLimit-Remaining"))
	require.Equal(t, "100", rec.Header().Get("RateLimit-Reset"))
	require.Equal(t, "2;w=200", rec.Header().Get("RateLimit-Policy"))

	predict(t, s, body)
	rec = predict(t, s, body)
	require.Equal(t, http.StatusTooManyRequests, rec.Code)
	require.Equal(t, "0", rec.Header().Get("RateLimit-Remaining"))
	require.Equal(t, "200", rec.Header().Get("RateLimit-Reset"))
	require.Equal(t, "100", rec.Header().Get("Retry-After"))

	require.Empty(t, do(t, s, request{path: "/health"}).Header().Get("RateLimit-Limit"), "open routes are not limited")
}

func TestSharedRateLimit(t *testing.T) {
	t.Parallel()

	t.Run("two servers on one Redis share one allowance per key", func(t *testing.T) {
		t.Parallel()
		rs := redistest.New(t)
		// A generous Redis timeout: this subtest is about sharing, and on a loaded host a call
		// past the default timeout would (rightly) fall back to the per-process buckets.
		limited := func(c *Config) {
			c.RateLimit, c.RateBurst, c.RateRedis, c.RateRedisTimeout = 0.01, 5, rs.Client(t), 10*time.Second
		}
		a, _ := setup(t, limited)
		b, _ := setup(t, limited)
		admitted := 0
		for i := range 20 {
			s := a
			if i%2 == 1 {
				s = b
			}
			rec := predict(t, s, `{"features":[1]}`)
			switch rec.Code {
			case http.StatusOK:
				admitted++
			case http.StatusTooManyRequests:
				secs, err := strconv.Atoi(rec.Header().Get("Retry-After"))
				require.NoError(t, err)
				require.Greater(t, secs, 90)
			default:
				t.Fatalf("status %d: %s", rec.Code, rec.Body.String())
			}
		}
		require.Equal(t, 5, admitted, "per-process buckets would admit 10")
		require.Zero(t, testutil.ToFloat64(a.shared.fallbacks)+testutil.ToFloat64(b.shared.fallbacks), "Redis answered every time")
	})

	t.Run("while Redis is down each server limits on its own", func(t *testing.T) {
		t.Parallel()
		rs := redistest.New(t)
		s, b := setup(t, func(c *Config) { c.RateLimit = 0.01; c.RateBurst = 3; c.RateRedis = rs.Client(t) })
		require.Equal(t, http.StatusOK, predict(t, s, `{"features":[1]}`).Code)
		probe := rs.Client(t)
		rs.Stop()
		require.Eventually(t, func() bool { return probe.Ping(context.Background()).Err() != nil }, 10*time.Second, 10*time.Millisecond)

		codes := map[int]int{}
		for range 6 {
			codes[predict(t, s, `{"features":[1]}`).Code]++
		}
		require.Equal(t, map[int]int{http.StatusOK: 3, http.StatusTooManyRequests: 3}, codes,
			"the local bucket (burst 3) limits, and no request fails because Redis is away")
		require.Equal(t, 1.0, testutil.ToFloat64(s.shared.fallbacks), "the switch is counted once")
		require.Equal(t, 1.0, testutil.ToFloat64(s.shared.active))
		require.Contains(t, b.logs.String(), "rate limits fall back to per-process buckets")
	})
}
