package httpapi

import (
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// defaultMaxLimitedKeys bounds the limiter map: past it, idle (full) buckets are dropped,
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
		return false, time.Second
	}
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now) // the request is refused: give the token back
		return false, d
	}
	return true, 0
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
