// Package admission decides which synchronous requests run now, wait briefly, or are turned
// away when the process is overloaded.
//
// A Controller holds a concurrency limit that adapts to observed latency (failsafe-go's
// adaptive limiter: the limit shrinks while recent latencies trend above their baseline and
// grows while they do not), a short bounded queue in front of it ordered by priority class,
// and the rate at which requests drain, from which a rejection's retry delay is computed.
//
// The queue is this package's own rather than failsafe-go's: failsafe-go's queueing limiter
// wakes its waiters in arrival order whatever their priority, sizes the queue as a multiple of
// the current limit, and rejects by a priority threshold that a Prioritizer recalibrates on a
// timer; here the more important class is always served first, a full queue gives a queued
// bulk request's place to an interactive one, and the queue's bound is a fixed number.
package admission

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/failsafe-go/failsafe-go/adaptivelimiter"
	"github.com/prometheus/client_golang/prometheus"
)

// classes are the priority classes, the most important first. No class is the first; a
// class not listed is treated as the last.
var classes = []string{"interactive", "bulk"}

// Classes returns the priority classes, the most important first.
func Classes() []string { return slices.Clone(classes) }

// The reasons of a rejection.
const (
	ReasonQueueFull = "queue_full" // the limit is reached and the queue has no room for the class
	ReasonMaxWait   = "max_wait"   // the request would wait (or waited) longer than MaxWait
	ReasonShed      = "shed"       // it was queued, and gave its place to a more important class
)

// Rejected is the error of a request turned away.
type Rejected struct {
	Reason     string        // ReasonQueueFull, ReasonMaxWait or ReasonShed
	Class      string        // the request's class
	RetryAfter time.Duration // when a retry is likely to be admitted, from the drain rate
	DrainRate  float64       // requests completed per second, recently
}

func (r *Rejected) Error() string {
	return fmt.Sprintf("admission: %s request rejected (%s), retry after %s", r.Class, r.Reason, r.RetryAfter)
}

// ErrRejected matches every *Rejected with errors.Is.
var ErrRejected = errors.New("admission: rejected")

// Is makes errors.Is(err, ErrRejected) true.
func (r *Rejected) Is(target error) bool { return target == ErrRejected }

// Config bounds a Controller.
type Config struct {
	MinLimit     int           // the least concurrency the limit shrinks to (default 1)
	MaxLimit     int           // the most it grows to (default 200)
	InitialLimit int           // where it starts (default clamp(20, MinLimit, MaxLimit))
	QueueSize    int           // requests waiting for a slot at most (0: none wait)
	MaxWait      time.Duration // the longest a request waits for a slot (default 100ms)
	// Registerer receives the metrics (nil: not registered).
	Registerer prometheus.Registerer
}

// Defaults of Config.
const (
	DefaultMinLimit = 1
	DefaultMaxLimit = 200
	DefaultMaxWait  = 100 * time.Millisecond
	// maxRetryAfter caps the computed retry delay; noDrainRetryAfter is the delay given while
	// nothing has completed recently, so there is no rate to compute one from.
	maxRetryAfter     = 60 * time.Second
	noDrainRetryAfter = 5 * time.Second
	// drainTau is the time constant of the drain rate's moving average.
	drainTau = time.Second
)

// Controller admits synchronous requests. It is safe for concurrent use.
type Controller struct {
	lim   adaptivelimiter.AdaptiveLimiter[any]
	queue int
	now   func() time.Time

	mu      sync.Mutex
	maxWait time.Duration
	waiting [][]*waiter // per class, oldest first
	rate    float64     // drain rate at rateAt, completions per second
	rateAt  time.Time

	m metrics
}

type waiter struct {
	class int
	ready chan adaptivelimiter.Permit // receives the permit when it is granted (buffered)
	shed  chan struct{}               // closed when a more important request takes its place
}

// New builds a Controller.
func New(cfg Config) (*Controller, error) {
	cfg.MinLimit = cmp.Or(cfg.MinLimit, DefaultMinLimit)
	cfg.MaxLimit = cmp.Or(cfg.MaxLimit, DefaultMaxLimit)
	cfg.MaxWait = cmp.Or(cfg.MaxWait, DefaultMaxWait)
	switch {
	case cfg.MinLimit < 1 || cfg.MaxLimit < cfg.MinLimit:
		return nil, fmt.Errorf("admission: limits must be 1 ≤ min ≤ max, got min %d, max %d", cfg.MinLimit, cfg.MaxLimit)
	case cfg.InitialLimit != 0 && (cfg.InitialLimit < cfg.MinLimit || cfg.InitialLimit > cfg.MaxLimit):
		return nil, fmt.Errorf("admission: initial limit %d is not in %d..%d", cfg.InitialLimit, cfg.MinLimit, cfg.MaxLimit)
	case cfg.QueueSize < 0:
		return nil, fmt.Errorf("admission: queue size must not be negative, got %d", cfg.QueueSize)
	case cfg.MaxWait < 0:
		return nil, fmt.Errorf("admission: max wait must not be negative, got %s", cfg.MaxWait)
	}
	initial := cmp.Or(cfg.InitialLimit, min(max(20, cfg.MinLimit), cfg.MaxLimit))
	c := &Controller{
		lim: adaptivelimiter.NewBuilder[any]().
			WithLimits(uint(cfg.MinLimit), uint(cfg.MaxLimit), uint(initial)).
			Build(),
		queue:   cfg.QueueSize,
		maxWait: cfg.MaxWait,
		now:     time.Now,
		waiting: make([][]*waiter, len(classes)),
	}
	var err error
	if c.m, err = newMetrics(cfg.Registerer, c); err != nil {
		return nil, err
	}
	return c, nil
}

// classIndex returns the rank of class, 0 the most important: none ("") is the default,
// interactive; an unknown class is last.
func classIndex(class string) int {
	if class == "" {
		return 0
	}
	if i := slices.Index(classes, class); i >= 0 {
		return i
	}
	return len(classes) - 1
}

// Permit is a slot to run one request; Release it when the request is answered.
type Permit struct {
	c    *Controller
	p    adaptivelimiter.Permit
	once sync.Once
}

// Release frees the slot, records the request's latency for the limit, and hands the slot
// to the most important request waiting.
func (p *Permit) Release() {
	p.once.Do(func() {
		p.p.Record()
		p.c.completed()
		p.c.dispatch()
	})
}

// Acquire admits a request of class: at once while the limit allows and no request of its
// class or a more important one waits, else after waiting in the queue for at most MaxWait.
// It returns a *Rejected (errors.Is ErrRejected) when the request is turned away, or the
// context's error when ctx ends while it waits.
func (c *Controller) Acquire(ctx context.Context, class string) (*Permit, error) {
	ci := classIndex(class)
	class = classes[ci]
	c.mu.Lock()
	if !c.waitersUpTo(ci) {
		if p, ok := c.lim.TryAcquirePermit(); ok {
			c.mu.Unlock()
			c.m.admitted(class, 0)
			return &Permit{c: c, p: p}, nil
		}
	}
	if r := c.enqueueRefusal(ci); r != nil {
		c.mu.Unlock()
		c.m.rejected(r)
		return nil, r
	}
	w := &waiter{class: ci, ready: make(chan adaptivelimiter.Permit, 1), shed: make(chan struct{})}
	c.waiting[ci] = append(c.waiting[ci], w)
	c.m.queued.WithLabelValues(class).Inc()
	maxWait := c.maxWait
	c.mu.Unlock()
	// A slot may have freed between the failed try and the enqueue.
	c.dispatch()

	start := c.now()
	timer := time.NewTimer(maxWait)
	defer timer.Stop()
	select {
	case p := <-w.ready:
		c.m.admitted(class, c.now().Sub(start))
		return &Permit{c: c, p: p}, nil
	case <-w.shed:
		r := c.rejection(ReasonShed, class)
		c.m.rejected(r)
		return nil, r
	case <-timer.C:
		if p, ok := c.leave(w); ok {
			c.m.admitted(class, c.now().Sub(start))
			return &Permit{c: c, p: p}, nil
		}
		reason := ReasonMaxWait
		select {
		case <-w.shed: // shed as the wait ended
			reason = ReasonShed
		default:
		}
		r := c.rejection(reason, class)
		c.m.rejected(r)
		return nil, r
	case <-ctx.Done():
		if p, ok := c.leave(w); ok {
			p.Drop()
			c.dispatch()
		}
		return nil, ctx.Err()
	}
}

// leave takes w out of the queue; when it was granted a permit meanwhile, it returns it.
func (c *Controller) leave(w *waiter) (adaptivelimiter.Permit, bool) {
	c.mu.Lock()
	q := c.waiting[w.class]
	if i := slices.Index(q, w); i >= 0 {
		c.waiting[w.class] = slices.Delete(q, i, i+1)
		c.m.queued.WithLabelValues(classes[w.class]).Dec()
		c.mu.Unlock()
		return nil, false
	}
	c.mu.Unlock()
	select {
	case p := <-w.ready:
		return p, true
	default: // shed meanwhile
		return nil, false
	}
}

// waitersUpTo reports whether a request of class ci or a more important one waits. c.mu is
// held.
func (c *Controller) waitersUpTo(ci int) bool {
	for i := 0; i <= ci; i++ {
		if len(c.waiting[i]) > 0 {
			return true
		}
	}
	return false
}

// enqueueRefusal decides whether a request of class ci may wait: it returns nil when it may
// (after shedding a less important waiter if the queue is full) and the rejection when not.
// A less important class may only use half the queue, and not while a more important one
// waits: under pressure it is shed first. c.mu is held.
func (c *Controller) enqueueRefusal(ci int) *Rejected {
	class := classes[ci]
	n := 0
	for _, q := range c.waiting {
		n += len(q)
	}
	if ci > 0 && (c.waitersUpTo(ci-1) || n >= c.queue/2) {
		return c.rejectionLocked(ReasonQueueFull, class)
	}
	// The wait this request can expect: those ahead of it, at the drain rate.
	if rate := c.rateLocked(); rate > 0 {
		ahead := 0
		for i := 0; i <= ci; i++ {
			ahead += len(c.waiting[i])
		}
		if time.Duration(float64(ahead+1)/rate*float64(time.Second)) > c.maxWait {
			return c.rejectionLocked(ReasonMaxWait, class)
		}
	}
	if n < c.queue {
		return nil
	}
	// Full: the newest waiter of the least important class below ci gives its place.
	for i := len(c.waiting) - 1; i > ci; i-- {
		if q := c.waiting[i]; len(q) > 0 {
			w := q[len(q)-1]
			c.waiting[i] = q[:len(q)-1]
			c.m.queued.WithLabelValues(classes[i]).Dec()
			close(w.shed)
			return nil
		}
	}
	return c.rejectionLocked(ReasonQueueFull, class)
}

// dispatch grants free slots to the waiters, the most important class first.
func (c *Controller) dispatch() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for ci := range c.waiting {
		for len(c.waiting[ci]) > 0 {
			p, ok := c.lim.TryAcquirePermit()
			if !ok {
				return
			}
			w := c.waiting[ci][0]
			c.waiting[ci] = c.waiting[ci][1:]
			c.m.queued.WithLabelValues(classes[ci]).Dec()
			w.ready <- p
		}
	}
}

// completed adds a completion to the drain rate.
func (c *Controller) completed() {
	c.mu.Lock()
	c.rate = c.rateLocked() + 1/drainTau.Seconds()
	c.rateAt = c.now()
	c.mu.Unlock()
}

// rateLocked is the drain rate now: an exponentially weighted moving average of completions
// per second, time constant drainTau. c.mu is held.
func (c *Controller) rateLocked() float64 {
	if c.rateAt.IsZero() {
		return 0
	}
	dt := c.now().Sub(c.rateAt).Seconds()
	return c.rate * math.Exp(-dt/drainTau.Seconds())
}

// DrainRate returns the requests completed per second, recently.
func (c *Controller) DrainRate() float64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rateLocked()
}

func (c *Controller) rejection(reason, class string) *Rejected {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.rejectionLocked(reason, class)
}

// rejectionLocked computes the retry delay of a rejection: the time the requests in flight
// and waiting take to drain at the current rate, so that a retry finds room; whole seconds
// (Retry-After's unit), at least 1, at most maxRetryAfter. c.mu is held.
func (c *Controller) rejectionLocked(reason, class string) *Rejected {
	rate := c.rateLocked()
	r := &Rejected{Reason: reason, Class: class, DrainRate: rate, RetryAfter: noDrainRetryAfter}
	if rate > 0.01 {
		backlog := float64(c.lim.Inflight()+c.queuedLocked()) + 1
		d := time.Duration(math.Ceil(backlog/rate)) * time.Second
		r.RetryAfter = min(max(d, time.Second), maxRetryAfter)
	}
	return r
}

func (c *Controller) queuedLocked() int {
	n := 0
	for _, q := range c.waiting {
		n += len(q)
	}
	return n
}

// Limit returns the current concurrency limit.
func (c *Controller) Limit() int { return c.lim.Limit() }

// InFlight returns the requests admitted and not yet released.
func (c *Controller) InFlight() int { return c.lim.Inflight() }

// Queued returns the requests waiting for a slot.
func (c *Controller) Queued() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queuedLocked()
}

// metrics are the controller's Prometheus metrics.
type metrics struct {
	queued    *prometheus.GaugeVec
	rejectedN *prometheus.CounterVec
	admittedN *prometheus.CounterVec
	wait      *prometheus.HistogramVec
}

func (m metrics) admitted(class string, waited time.Duration) {
	m.admittedN.WithLabelValues(class).Inc()
	m.wait.WithLabelValues(class).Observe(waited.Seconds())
}

func (m metrics) rejected(r *Rejected) { m.rejectedN.WithLabelValues(r.Reason, r.Class).Inc() }

func newMetrics(reg prometheus.Registerer, c *Controller) (metrics, error) {
	m := metrics{
		queued: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "predq_admission_queued",
			Help: "Synchronous requests waiting for an admission slot, by priority class.",
		}, []string{"class"}),
		rejectedN: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "predq_admission_rejected_total",
			Help: "Synchronous requests turned away with 503 by admission control, by reason (queue_full, max_wait, shed) and priority class.",
		}, []string{"reason", "class"}),
		admittedN: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "predq_admission_admitted_total",
			Help: "Synchronous requests admitted by admission control, by priority class.",
		}, []string{"class"}),
		wait: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "predq_admission_wait_seconds",
			Help:    "Time an admitted synchronous request waited for its slot, by priority class.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1},
		}, []string{"class"}),
	}
	for _, class := range classes {
		m.queued.WithLabelValues(class)
		m.admittedN.WithLabelValues(class)
		m.wait.WithLabelValues(class)
		for _, reason := range []string{ReasonQueueFull, ReasonMaxWait, ReasonShed} {
			m.rejectedN.WithLabelValues(reason, class)
		}
	}
	if reg == nil {
		return m, nil
	}
	limit := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "predq_admission_limit",
		Help: "The adaptive concurrency limit of synchronous requests.",
	}, func() float64 { return float64(c.Limit()) })
	inFlight := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "predq_admission_in_flight",
		Help: "Synchronous requests admitted and not yet answered.",
	}, func() float64 { return float64(c.InFlight()) })
	drain := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "predq_admission_drain_rate",
		Help: "Synchronous requests answered per second (moving average), from which Retry-After is computed.",
	}, func() float64 { return c.DrainRate() })
	for _, col := range []prometheus.Collector{m.queued, m.rejectedN, m.admittedN, m.wait, limit, inFlight, drain} {
		if err := reg.Register(col); err != nil {
			return metrics{}, fmt.Errorf("admission: register metrics: %w", err)
		}
	}
	return m, nil
}
