package admission

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"
)

// fixed is a controller whose limit cannot move (min = max), so that a test knows how many
// requests run at once.
func fixed(t *testing.T, limit, queue int, maxWait time.Duration) (*Controller, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	c, err := New(Config{MinLimit: limit, MaxLimit: limit, InitialLimit: limit, QueueSize: queue, MaxWait: maxWait, Registerer: reg})
	require.NoError(t, err)
	return c, reg
}

type result struct {
	p   *Permit
	err error
}

// acquireAsync starts Acquire and waits until the request is queued (or answered).
func acquireAsync(t *testing.T, c *Controller, ctx context.Context, class string) <-chan result {
	t.Helper()
	before := c.Queued()
	ch := make(chan result, 1)
	go func() {
		p, err := c.Acquire(ctx, class)
		ch <- result{p, err}
	}()
	require.Eventually(t, func() bool { return c.Queued() > before || len(ch) > 0 }, 5*time.Second, time.Millisecond)
	return ch
}

// acquireAsyncNoWait starts Acquire; the caller knows how to tell when it has queued.
func acquireAsyncNoWait(c *Controller, ctx context.Context, class string) <-chan result {
	ch := make(chan result, 1)
	go func() {
		p, err := c.Acquire(ctx, class)
		ch <- result{p, err}
	}()
	return ch
}

func rejected(t *testing.T, err error) *Rejected {
	t.Helper()
	r, ok := errors.AsType[*Rejected](err)
	require.True(t, ok, "want a *Rejected, got %v", err)
	require.ErrorIs(t, err, ErrRejected)
	return r
}

// Under the limit a request runs at once; at it, the waiters are served the most important
// class first, whatever their arrival order, and each release hands its slot on.
func TestInteractiveIsServedBeforeBulk(t *testing.T) {
	t.Parallel()
	c, reg := fixed(t, 2, 8, 5*time.Second)
	ctx := context.Background()
	a, err := c.Acquire(ctx, "interactive")
	require.NoError(t, err)
	b, err := c.Acquire(ctx, "bulk")
	require.NoError(t, err)
	require.Equal(t, 2, c.InFlight())

	bulk := acquireAsync(t, c, ctx, "bulk")
	inter := acquireAsync(t, c, ctx, "interactive")
	require.Equal(t, 2, c.Queued())
	require.Equal(t, 1.0, testutil.ToFloat64(c.m.queued.WithLabelValues("bulk")))

	a.Release()
	got := <-inter
	require.NoError(t, got.err, "the interactive request, queued last, gets the first slot")
	require.Empty(t, bulk)
	b.Release()
	gotBulk := <-bulk
	require.NoError(t, gotBulk.err)
	got.p.Release()
	gotBulk.p.Release()
	got.p.Release() // a second release is a no-op
	require.Equal(t, 0, c.InFlight())
	require.Equal(t, 0, c.Queued())
	require.Equal(t, 2.0, testutil.ToFloat64(c.m.admittedN.WithLabelValues("interactive")))
	require.Equal(t, 2.0, testutil.ToFloat64(c.m.admittedN.WithLabelValues("bulk")))
	n, err := testutil.GatherAndCount(reg, "predq_admission_limit", "predq_admission_in_flight", "predq_admission_drain_rate")
	require.NoError(t, err)
	require.Equal(t, 3, n)
}

// Bulk is shed first: it may use half the queue, none of it while an interactive request
// waits, and a queued bulk request gives its place to an interactive one when the queue is
// full. Interactive requests are refused only when the queue is full of interactive ones.
func TestBulkIsShedFirst(t *testing.T) {
	t.Parallel()
	c, _ := fixed(t, 1, 4, 5*time.Second)
	ctx := context.Background()
	hold, err := c.Acquire(ctx, "interactive")
	require.NoError(t, err)

	b1 := acquireAsync(t, c, ctx, "bulk")
	b2 := acquireAsync(t, c, ctx, "bulk")
	_, err = c.Acquire(ctx, "bulk")
	require.Equal(t, ReasonQueueFull, rejected(t, err).Reason, "bulk has half the queue")
	_, err = c.Acquire(ctx, "batch")
	require.Equal(t, "bulk", rejected(t, err).Class, "an unknown class counts as the last")

	i1 := acquireAsync(t, c, ctx, "interactive")
	i2 := acquireAsync(t, c, ctx, "") // no class: the default, interactive
	require.Equal(t, 4, c.Queued())
	_, err = c.Acquire(ctx, "bulk")
	require.Equal(t, ReasonQueueFull, rejected(t, err).Reason, "no bulk waits while interactive does")

	i3 := acquireAsyncNoWait(c, ctx, "interactive")
	r := <-b2
	require.Equal(t, ReasonShed, rejected(t, r.err).Reason, "the newest bulk waiter gives its place")
	require.Equal(t, "bulk", rejected(t, r.err).Class)
	i4 := acquireAsyncNoWait(c, ctx, "interactive")
	r = <-b1
	require.Equal(t, ReasonShed, rejected(t, r.err).Reason)

	_, err = c.Acquire(ctx, "interactive")
	rj := rejected(t, err)
	require.Equal(t, ReasonQueueFull, rj.Reason, "a queue full of interactive requests refuses one more")
	require.Equal(t, "interactive", rj.Class)
	require.GreaterOrEqual(t, rj.RetryAfter, time.Second)

	hold.Release()
	for _, ch := range []<-chan result{i1, i2, i3, i4} {
		got := <-ch
		require.NoError(t, got.err)
		got.p.Release()
	}
	require.Equal(t, 2.0, testutil.ToFloat64(c.m.rejectedN.WithLabelValues(ReasonShed, "bulk")))
	require.Equal(t, 3.0, testutil.ToFloat64(c.m.rejectedN.WithLabelValues(ReasonQueueFull, "bulk")))
	require.Equal(t, 1.0, testutil.ToFloat64(c.m.rejectedN.WithLabelValues(ReasonQueueFull, "interactive")))
}

// A waiter that gets no slot within MaxWait is refused; one whose client goes away leaves
// the queue without a rejection; without a queue a request past the limit is refused at
// once.
func TestWaitIsBounded(t *testing.T) {
	t.Parallel()
	c, _ := fixed(t, 1, 4, 30*time.Millisecond)
	hold, err := c.Acquire(context.Background(), "interactive")
	require.NoError(t, err)
	_, err = c.Acquire(context.Background(), "interactive")
	require.Equal(t, ReasonMaxWait, rejected(t, err).Reason)
	require.Equal(t, 0, c.Queued())

	ctx, cancel := context.WithCancel(context.Background())
	ch := acquireAsync(t, c, ctx, "interactive")
	cancel()
	require.ErrorIs(t, (<-ch).err, context.Canceled)
	require.Equal(t, 0, c.Queued())
	require.Equal(t, 1.0, testutil.ToFloat64(c.m.rejectedN.WithLabelValues(ReasonMaxWait, "interactive")), "a client gone is no rejection")
	hold.Release()

	none, _ := fixed(t, 1, 0, time.Second)
	hold, err = none.Acquire(context.Background(), "bulk")
	require.NoError(t, err)
	_, err = none.Acquire(context.Background(), "interactive")
	require.Equal(t, ReasonQueueFull, rejected(t, err).Reason)
	hold.Release()
}

// Retry-After is the backlog (in flight, waiting, and the request itself) over the drain
// rate, in whole seconds: it grows with the backlog and shrinks with the rate. A waiter the
// drain rate says would wait past MaxWait is refused before it waits.
func TestRetryAfterFollowsTheDrainRate(t *testing.T) {
	t.Parallel()
	c, _ := fixed(t, 2, 8, 10*time.Second)
	now := time.Unix(1_000_000, 0)
	var mu sync.Mutex
	c.now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	ctx := context.Background()

	for range 2 { // two completions at one instant: 2 requests/s
		p, err := c.Acquire(ctx, "interactive")
		require.NoError(t, err)
		p.Release()
	}
	require.InDelta(t, 2.0, c.DrainRate(), 1e-9)
	a, _ := c.Acquire(ctx, "interactive")
	b, _ := c.Acquire(ctx, "interactive")
	r := c.rejection(ReasonQueueFull, "interactive")
	require.Equal(t, 2*time.Second, r.RetryAfter, "(2 in flight + 1) / 2 per second = 1.5 s, rounded up")
	w := acquireAsync(t, c, ctx, "interactive")
	w2 := acquireAsync(t, c, ctx, "interactive")
	require.Equal(t, 3*time.Second, c.rejection(ReasonQueueFull, "interactive").RetryAfter, "(2 + 2 + 1) / 2 = 2.5 s")

	mu.Lock()
	now = now.Add(time.Second) // the rate decays: 2/e per second
	mu.Unlock()
	require.Equal(t, 7*time.Second, c.rejection(ReasonQueueFull, "interactive").RetryAfter, "5 / 0.74 = 6.8 s")

	c.mu.Lock()
	c.maxWait = time.Second // the next waiter would wait 3 / 0.74 s: refused at once
	c.mu.Unlock()
	_, err := c.Acquire(ctx, "interactive")
	require.Equal(t, ReasonMaxWait, rejected(t, err).Reason)

	a.Release()
	b.Release()
	for _, ch := range []<-chan result{w, w2} {
		got := <-ch
		require.NoError(t, got.err)
		got.p.Release()
	}
}

func TestNewChecksBounds(t *testing.T) {
	t.Parallel()
	for _, cfg := range []Config{
		{MinLimit: 5, MaxLimit: 2},
		{MinLimit: 2, MaxLimit: 5, InitialLimit: 9},
		{QueueSize: -1},
		{MaxWait: -time.Second},
	} {
		_, err := New(cfg)
		require.Error(t, err, "%+v", cfg)
	}
	c, err := New(Config{})
	require.NoError(t, err)
	require.Equal(t, 20, c.Limit())
}
