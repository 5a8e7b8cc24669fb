package prediction

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"log/slog"
	"math"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/predq/predq/internal/inference"
)

// CacheKey is the Redis key of a prediction: it covers the concrete model version and the
// artifact's checksum (a retrained artifact under the same version never serves old
// answers), the preprocessing, and the exact bits of every feature value.
func CacheKey(m *inference.Model, prep string, features []float64) string {
	h := sha256.New()
	var buf [8]byte
	h.Write([]byte(m.Checksum))
	h.Write([]byte{0})
	h.Write([]byte(prep))
	h.Write([]byte{0})
	for _, x := range features {
		if x == 0 {
			x = 0 // -0 and +0 predict the same
		}
		binary.LittleEndian.PutUint64(buf[:], math.Float64bits(x))
		h.Write(buf[:])
	}
	return "predq:pred:" + m.Version + ":" + prep + ":" + hex.EncodeToString(h.Sum(nil)[:20])
}

// Cache is the prediction cache in Redis. Every call has a short timeout; a failing or slow
// Redis makes a call a miss (and a skipped write), never an error of the prediction. After a
// failure the cache is bypassed for a short back-off so that a dead Redis costs requests
// nothing.
type Cache struct {
	rdb     redis.UniversalClient
	ttl     time.Duration
	timeout time.Duration
	logger  *slog.Logger

	hits, misses, errors prometheus.Counter
	downUntil            atomic.Int64 // unix nanos; calls before it are skipped
}

// NewCache returns a cache on rdb with the given TTL and per-call timeout.
func NewCache(rdb redis.UniversalClient, ttl, timeout time.Duration, reg prometheus.Registerer, logger *slog.Logger) *Cache {
	c := &Cache{rdb: rdb, ttl: ttl, timeout: timeout, logger: logger}
	ops := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ml_cache_requests_total",
		Help: "Prediction cache lookups by result (hit, miss, error).",
	}, []string{"result"})
	if reg != nil {
		reg.MustRegister(ops)
	}
	c.hits, c.misses, c.errors = ops.WithLabelValues("hit"), ops.WithLabelValues("miss"), ops.WithLabelValues("error")
	if c.logger == nil {
		c.logger = slog.New(slog.DiscardHandler)
	}
	return c
}

// backoff is how long the cache is bypassed after a failed call.
const backoff = 2 * time.Second

func (c *Cache) available() bool { return time.Now().UnixNano() >= c.downUntil.Load() }

func (c *Cache) failed(ctx context.Context, op string, err error) {
	c.errors.Inc()
	if c.downUntil.Swap(time.Now().Add(backoff).UnixNano()) < time.Now().UnixNano() {
		c.logger.WarnContext(ctx, "prediction cache unavailable, answering by inference", "op", op, "error", err, "retry_in", backoff.String())
	}
}

// Hit is the result of one lookup.
type Hit struct {
	Value float64
	OK    bool
}

// GetMany looks every key up in one round trip.
func (c *Cache) GetMany(ctx context.Context, keys []string) []Hit {
	out := make([]Hit, len(keys))
	if len(keys) == 0 {
		return out
	}
	if !c.available() {
		c.misses.Add(float64(len(keys)))
		return out
	}
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()
	// A pipeline of GETs rather than MGET: it also works on Redis Cluster, where the keys of
	// one batch live in different slots.
	cmds := make([]*redis.StringCmd, len(keys))
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = p.Get(ctx, k)
		}
		return nil
	})
	if err != nil && err != redis.Nil {
		c.failed(ctx, "get", err)
		c.misses.Add(float64(len(keys)))
		return out
	}
	for i, cmd := range cmds {
		v, err := cmd.Result()
		if err != nil {
			c.misses.Inc()
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || f > 1 {
			c.misses.Inc()
			continue
		}
		out[i] = Hit{Value: f, OK: true}
		c.hits.Inc()
	}
	return out
}

// SetMany stores values under keys with the TTL, in one pipeline.
func (c *Cache) SetMany(ctx context.Context, keys []string, values []float64) {
	if len(keys) == 0 || !c.available() {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.timeout)
	defer cancel()
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			p.Set(ctx, k, strconv.FormatFloat(values[i], 'g', -1, 64), c.ttl)
		}
		return nil
	})
	if err != nil {
		c.failed(ctx, "set", err)
	}
}
