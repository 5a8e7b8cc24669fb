package prediction

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"log/slog"
	"math"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/predq/predq/internal/batch"
	"github.com/predq/predq/internal/breaker"
	"github.com/predq/predq/internal/inference"
)

// CacheKey is the Redis key of a prediction: it covers the concrete model version and the
// artifact's checksum (a retrained artifact under the same version never serves old
// answers), the preprocessing, and the exact bits of every feature value.
//
// The hashed bytes are the checksum, a zero byte, the preprocessing, a zero byte and each
// feature's float64 bits, little-endian. They are gathered into one buffer on the stack for
// one SHA-256 call, which is cheaper than writing each feature to the hash on its own
// (BenchmarkCacheKey).
func CacheKey(m *inference.Model, prep string, features []float64) string {
	var stack [1024]byte
	b := append(stack[:0], m.Checksum...)
	b = append(b, 0)
	b = append(b, prep...)
	b = append(b, 0)
	for _, x := range features {
		if x == 0 {
			x = 0 // -0 and +0 predict the same
		}
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(x))
	}
	sum := sha256.Sum256(b)
	const prefix = "predq:pred:"
	var kb [128]byte
	k := append(kb[:0], prefix...)
	k = append(k, m.Version...)
	k = append(k, ':')
	k = append(k, prep...)
	k = append(k, ':')
	k = hex.AppendEncode(k, sum[:20])
	return string(k)
}

// Cache is the prediction cache in Redis. Every call has a short timeout; a failing or slow
// Redis makes a call a miss (and a skipped write), never an error of the prediction. After a
// failure the cache is bypassed for a short back-off so that a dead Redis costs requests
// nothing.
//
// The calls of concurrent requests are batched (package batch): while one pipeline is in flight, the reads
// and writes of the requests that arrive meanwhile gather, and the next pipeline carries
// them all. Under load one round trip serves many requests (the system calls of a round
// trip were two fifths of the api's CPU per prediction, see the README's Benchmarks); alone,
// a call costs what a round trip of its own costs. Callers still wait for their own
// answers, so a value written by SetMany is in Redis when it returns.
type Cache struct {
	rdb     redis.UniversalClient
	ttl     time.Duration
	timeout time.Duration
	logger  *slog.Logger

	hits, misses, errors prometheus.Counter
	breaker              *breaker.Breaker // open: calls are skipped
	batches              *batch.Batcher[*cacheOp]
}

// cacheOp is one call's part of a batch: keys to read, or keys and values to write.
type cacheOp struct {
	ctx    context.Context
	get    []string
	hits   []Hit // results of get, filled by the batch
	set    []string
	values []float64
	done   chan struct{}
}

// NewCache returns a cache on rdb with the given TTL and per-call timeout.
func NewCache(rdb redis.UniversalClient, ttl, timeout time.Duration, reg prometheus.Registerer, logger *slog.Logger) *Cache {
	c := &Cache{rdb: rdb, ttl: ttl, timeout: timeout, logger: logger, breaker: breaker.New(backoff)}
	c.batches = batch.New(0, nil, c.exec)
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

func (c *Cache) available() bool { return !c.breaker.Open() }

func (c *Cache) failed(ctx context.Context, op string, err error) {
	c.errors.Inc()
	if c.breaker.Trip() {
		c.logger.WarnContext(ctx, "prediction cache unavailable, answering by inference", "op", op, "error", err, "retry_in", backoff.String())
	}
}

// Hit is the result of one lookup.
type Hit struct {
	Value float64
	OK    bool
}

// GetMany looks every key up, in the round trip of the current batch.
func (c *Cache) GetMany(ctx context.Context, keys []string) []Hit {
	if len(keys) == 0 {
		return make([]Hit, 0)
	}
	if !c.available() {
		c.misses.Add(float64(len(keys)))
		return make([]Hit, len(keys))
	}
	op := &cacheOp{ctx: ctx, get: keys, done: make(chan struct{})}
	c.batches.Add(op)
	select {
	case <-op.done:
		return op.hits
	case <-ctx.Done():
		// The batch may still fill op.hits (and counts the lookups): answer with misses of
		// our own.
		return make([]Hit, len(keys))
	}
}

// SetMany stores values under keys with the TTL, in the round trip of the current batch.
// It returns once Redis has answered (or the batch failed); errors only trip the back-off.
func (c *Cache) SetMany(ctx context.Context, keys []string, values []float64) {
	c.startSet(ctx, keys, values)()
}

// startSet queues the writes of SetMany and returns the wait for their answer, so that a
// caller can do other work (record the prediction) while they travel.
func (c *Cache) startSet(ctx context.Context, keys []string, values []float64) (wait func()) {
	if len(keys) == 0 || !c.available() {
		return func() {}
	}
	op := &cacheOp{ctx: ctx, set: keys, values: values, done: make(chan struct{})}
	c.batches.Add(op)
	return func() { <-op.done } // bounded by the batch's timeout
}

// exec runs the writes and reads of batch in one pipeline and hands each call its answer.
func (c *Cache) exec(batch []*cacheOp) {
	defer func() {
		for _, op := range batch {
			close(op.done)
		}
	}()
	nget := 0
	for _, op := range batch {
		op.hits = make([]Hit, len(op.get))
		nget += len(op.get)
	}
	if !c.available() {
		c.misses.Add(float64(nget))
		return
	}
	// The pipeline continues the trace of the first call (as a group commit does).
	ctx, cancel := context.WithTimeout(context.WithoutCancel(batch[0].ctx), c.timeout)
	defer cancel()
	// A pipeline of GETs rather than MGET: it also works on Redis Cluster, where the keys of
	// one batch live in different slots. Writes go first: a read of a key written in the same
	// batch then finds it.
	cmds := make([]*redis.StringCmd, 0, nget)
	_, err := c.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, op := range batch {
			for i, k := range op.set {
				p.Set(ctx, k, strconv.FormatFloat(op.values[i], 'g', -1, 64), c.ttl)
			}
		}
		for _, op := range batch {
			for _, k := range op.get {
				cmds = append(cmds, p.Get(ctx, k))
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		c.failed(ctx, "pipeline", err)
		c.misses.Add(float64(nget))
		return
	}
	i := 0
	for _, op := range batch {
		for j := range op.get {
			v, err := cmds[i].Result()
			i++
			if err != nil {
				c.misses.Inc()
				continue
			}
			f, err := strconv.ParseFloat(v, 64)
			if err != nil || f < 0 || f > 1 {
				c.misses.Inc()
				continue
			}
			op.hits[j] = Hit{Value: f, OK: true}
			c.hits.Inc()
		}
	}
}
