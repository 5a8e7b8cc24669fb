// Package breaker is the circuit breaker in front of the dependencies that have a fallback
// (the prediction cache, the queue, Postgres): a failure opens it for a cooldown, during which
// callers skip the dependency and take their fallback at once instead of waiting for a
// timeout each; the first call after the cooldown tries the dependency again, and a failure
// opens it again.
//
// It is this small on purpose: one failure opens it and time alone closes it, with no
// failure ratio, half-open trial budget or state listeners to configure (what a library such
// as failsafe-go's circuitbreaker adds, and what these fallbacks do not need).
package breaker

import (
	"sync/atomic"
	"time"
)

// Breaker is a circuit breaker; its zero value is not usable (see New). It is safe for
// concurrent use.
type Breaker struct {
	cooldown  time.Duration
	openUntil atomic.Int64 // unix nanoseconds
	now       func() time.Time
}

// New returns a closed Breaker that Trip opens for cooldown.
func New(cooldown time.Duration) *Breaker {
	return &Breaker{cooldown: cooldown, now: time.Now}
}

// Open reports whether the breaker is open: the dependency failed less than a cooldown ago.
func (b *Breaker) Open() bool { return b.now().UnixNano() < b.openUntil.Load() }

// Trip records a failure: the breaker is open for the cooldown from now. It reports whether
// the breaker was closed, so that the caller logs the transition once.
func (b *Breaker) Trip() bool {
	now := b.now()
	return b.openUntil.Swap(now.Add(b.cooldown).UnixNano()) <= now.UnixNano()
}

// Cooldown is how long Trip opens the breaker.
func (b *Breaker) Cooldown() time.Duration { return b.cooldown }
