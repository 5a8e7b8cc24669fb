package httpapi

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/go-redis/redis_rate/v10"
	lru "github.com/hashicorp/golang-lru/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"
)

// rateDecision is the answer of a limiter for one request.
type rateDecision struct {
	allowed    bool
	remaining  int           // requests still allowed at once
	retryAfter time.Duration // when refused: until a request is allowed again
	resetAfter time.Duration // until the allowance is whole again
}

// header sets the IETF RateLimit-* fields (draft-ietf-httpapi-ratelimit-headers) of a
// limited route's response: the burst, what is left of it, seconds until it is whole again,
// and the policy (the burst over the window in which it refills).
func (d rateDecision) header(h http.Header, burst int, perSecond float64) {
	h.Set("RateLimit-Limit", strconv.Itoa(burst))
	h.Set("RateLimit-Remaining", strconv.Itoa(max(0, d.remaining)))
	h.Set("RateLimit-Reset", strconv.FormatInt(int64(math.Ceil(max(0, d.resetAfter.Seconds()))), 10))
	window := max(1, int64(math.Ceil(float64(burst)/perSecond)))
	h.Set("RateLimit-Policy", fmt.Sprintf("%d;w=%d", burst, window))
}

// sharedLimiter enforces the per-key limit in Redis (GCRA in one Lua script, redis_rate), so
// that every replica draws on the same allowance. While Redis does not answer within timeout
// it falls back to the process's own buckets, and tries Redis again after retryRedis; each
// switch is logged once and counted.
type sharedLimiter struct {
	rl      *redis_rate.Limiter
	limit   redis_rate.Limit
	local   *keyLimiter
	timeout time.Duration
	log     *slog.Logger
	now     func() time.Time

	fallbacks prometheus.Counter
	active    prometheus.Gauge

	mu      sync.Mutex
	down    bool
	retryAt time.Time
}

// Defaults of the shared limiter.
const (
	defaultRateRedisTimeout = 100 * time.Millisecond
	retryRedis              = time.Second
)

// rateMetrics are the shared limiter's metrics, registered whether or not it is on, so that
// dashboards find them at 0.
type rateMetrics struct {
	fallbacks prometheus.Counter
	active    prometheus.Gauge
}

func newRateMetrics(reg prometheus.Registerer) (rateMetrics, error) {
	m := rateMetrics{
		fallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "predq_ratelimit_fallbacks_total",
			Help: "Times the shared (Redis) rate limiter fell back to per-process buckets.",
		}),
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "predq_ratelimit_fallback_active",
			Help: "1 while rate limits are enforced per process because Redis does not answer.",
		}),
	}
	var err error
	if m.fallbacks, err = register(reg, m.fallbacks); err != nil {
		return rateMetrics{}, err
	}
	if m.active, err = register(reg, m.active); err != nil {
		return rateMetrics{}, err
	}
	return m, nil
}

func newSharedLimiter(rdb redis.UniversalClient, perSecond float64, burst int, timeout time.Duration,
	local *keyLimiter, log *slog.Logger, m rateMetrics) *sharedLimiter {
	return &sharedLimiter{
		rl: redis_rate.NewLimiter(rdb),
		// One request per emission interval: GCRA takes the rate as a count over a period.
		limit:     redis_rate.Limit{Rate: 1, Period: time.Duration(float64(time.Second) / perSecond), Burst: burst},
		local:     local,
		timeout:   timeout,
		log:       log,
		now:       time.Now,
		fallbacks: m.fallbacks,
		active:    m.active,
	}
}

// take admits or refuses one request of key.
func (l *sharedLimiter) take(ctx context.Context, key string) rateDecision {
	if l.tryRedis() {
		rctx, cancel := context.WithTimeout(ctx, l.timeout)
		res, err := l.rl.Allow(rctx, "predq:"+key, l.limit)
		cancel()
		if err == nil {
			l.redisUp(ctx)
			return rateDecision{allowed: res.Allowed > 0, remaining: res.Remaining,
				retryAfter: res.RetryAfter, resetAfter: res.ResetAfter}
		}
		if ctx.Err() == nil {
			l.redisDown(ctx, err)
		}
	}
	return l.local.take(key)
}

// tryRedis reports whether to ask Redis: always while it answers, once per retryRedis while
// it does not.
func (l *sharedLimiter) tryRedis() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.down {
		return true
	}
	if now := l.now(); !now.Before(l.retryAt) {
		l.retryAt = now.Add(retryRedis)
		return true
	}
	return false
}

func (l *sharedLimiter) redisUp(ctx context.Context) {
	l.mu.Lock()
	was := l.down
	l.down = false
	l.mu.Unlock()
	if was {
		l.active.Set(0)
		l.log.InfoContext(ctx, "rate limits shared through Redis again")
	}
}

func (l *sharedLimiter) redisDown(ctx context.Context, err error) {
	l.mu.Lock()
	was := l.down
	l.down, l.retryAt = true, l.now().Add(retryRedis)
	l.mu.Unlock()
	if !was {
		l.fallbacks.Inc()
		l.active.Set(1)
		l.log.WarnContext(ctx, "rate limits fall back to per-process buckets: Redis does not answer", "error", err.Error())
	}
}

// addrLimiter limits failed authentications per client address, in a bounded LRU of token
// buckets. Every key check takes a token first (so that concurrent guesses cannot all pass
// before the first one fails) and a successful one gives it back; an address without a
// token is refused before its key is checked. A forgotten bucket comes back full, which only
// errs in the client's favour.
type addrLimiter struct {
	perSecond float64
	burst     float64
	now       func() time.Time
	buckets   *lru.Cache[string, *addrBucket]
}

type addrBucket struct {
	mu     sync.Mutex
	tokens float64
	last   time.Time
}

func newAddrLimiter(perSecond float64, burst, maxAddrs int, now func() time.Time) *addrLimiter {
	buckets, _ := lru.New[string, *addrBucket](maxAddrs) // errors only for a size ≤ 0
	return &addrLimiter{perSecond: perSecond, burst: float64(burst), now: now, buckets: buckets}
}

// take takes a token of addr's bucket for a key check. When none is left it reports how long
// until one is (and takes nothing).
func (l *addrLimiter) take(addr string) time.Duration {
	now := l.now()
	b, ok := l.buckets.Get(addr)
	if !ok {
		b = &addrBucket{tokens: l.burst, last: now}
		if prev, found, _ := l.buckets.PeekOrAdd(addr, b); found {
			b = prev
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if now.After(b.last) {
		b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.perSecond)
		b.last = now
	}
	if b.tokens < 1 {
		return time.Duration((1 - b.tokens) / l.perSecond * float64(time.Second))
	}
	b.tokens--
	return 0
}

// refund gives back the token of a key check that succeeded.
func (l *addrLimiter) refund(addr string) {
	if b, ok := l.buckets.Peek(addr); ok {
		b.mu.Lock()
		b.tokens = min(l.burst, b.tokens+1)
		b.mu.Unlock()
	}
}

// defaultMaxLimitedKeys bounds the limiter maps: past it, idle (full) buckets are dropped,
// then the least recently used one.
const defaultMaxLimitedKeys = 10_000

// keyLimiter is a token bucket per API key in a bounded map. A dropped bucket comes back
// full, which only errs in the client's favour.
type keyLimiter struct {
	limit   rate.Limit
	burst   int
	maxKeys int
	now     func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	lim      *rate.Limiter
	lastSeen time.Time
}

func newKeyLimiter(perSecond float64, burst, maxKeys int, now func() time.Time) *keyLimiter {
	return &keyLimiter{
		limit:   rate.Limit(perSecond),
		burst:   burst,
		maxKeys: maxKeys,
		now:     now,
		buckets: make(map[string]*bucket),
	}
}

// allow takes a token of key's bucket. When none is left it reports false and how long
// until one is.
func (l *keyLimiter) allow(key string) (bool, time.Duration) {
	d := l.take(key)
	return d.allowed, d.retryAfter
}

// take takes a token of key's bucket, or refuses the request when none is left.
func (l *keyLimiter) take(key string) rateDecision {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= l.maxKeys {
			l.evict(now)
		}
		b = &bucket{lim: rate.NewLimiter(l.limit, l.burst)}
		l.buckets[key] = b
	}
	b.lastSeen = now
	r := b.lim.ReserveN(now, 1)
	if !r.OK() {
		return rateDecision{retryAfter: time.Second, resetAfter: time.Second}
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now) // the request is refused: give the token back
		return rateDecision{retryAfter: d, resetAfter: l.untilFull(b.lim.TokensAt(now))}
	}
	tokens := b.lim.TokensAt(now)
	return rateDecision{allowed: true, remaining: int(tokens), resetAfter: l.untilFull(tokens)}
}

// untilFull is how long a bucket holding tokens takes to be full.
func (l *keyLimiter) untilFull(tokens float64) time.Duration {
	return time.Duration((float64(l.burst) - tokens) / float64(l.limit) * float64(time.Second))
}

// evict drops every bucket idle long enough to be full again; if none is, the least
// recently seen one. Called with mu held, only when the map is full.
func (l *keyLimiter) evict(now time.Time) {
	refill := time.Duration(float64(l.burst) / float64(l.limit) * float64(time.Second))
	var oldestKey string
	var oldest time.Time
	for k, b := range l.buckets {
		if now.Sub(b.lastSeen) >= refill {
			delete(l.buckets, k)
			continue
		}
		if oldestKey == "" || b.lastSeen.Before(oldest) {
			oldestKey, oldest = k, b.lastSeen
		}
	}
	if len(l.buckets) >= l.maxKeys && oldestKey != "" {
		delete(l.buckets, oldestKey)
	}
}

// size reports the number of buckets held.
func (l *keyLimiter) size() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}
