// Package batch gathers the work of concurrent callers into batches (group commit): while
// one batch is being flushed, the items that arrive meanwhile gather, and the next flush takes
// them all. Nothing waits for a timer: under light load a batch holds one item and costs one
// flush of its own; under load one flush carries the items of many callers.
package batch

import (
	"runtime"
	"sync"
)

// gatherRounds bounds how often a flush yields to the runnable goroutines before it takes
// the pending items (see Batcher).
const gatherRounds = 4

// Batcher hands the items given to Add to its flush function in batches, one flush at a
// time, from a goroutine it starts when items are pending and that ends when none are.
//
// Before it takes a batch, the flush goroutine yields to the goroutines that can run now, as
// long as that brings more items (gatherRounds at most): on a busy process a batch then holds
// the items of every caller about to add one, not of the one or two that came first; on an
// idle process it costs one runtime.Gosched. The flush function tells each caller how its
// item went (the items carry their own way back, a channel for instance).
type Batcher[T any] struct {
	flush     func([]T)
	weight    func(T) int
	maxWeight int

	mu      sync.Mutex
	pending []T
	weights int // the sum of the weights of pending
	running bool
	wg      sync.WaitGroup
}

// New returns a Batcher that calls flush with the pending items. maxWeight > 0 bounds a
// batch: items are taken while the batch weighs less than maxWeight, so a batch may pass it by
// its last item, and an item heavier than maxWeight is a batch of its own. weight gives an
// item's weight (nil: 1 an item); maxWeight <= 0 takes every pending item.
func New[T any](maxWeight int, weight func(T) int, flush func([]T)) *Batcher[T] {
	if weight == nil {
		weight = func(T) int { return 1 }
	}
	return &Batcher[T]{flush: flush, weight: weight, maxWeight: maxWeight}
}

// Add queues item for the next batch and returns at once.
func (b *Batcher[T]) Add(item T) {
	b.mu.Lock()
	b.pending = append(b.pending, item)
	b.weights += b.weight(item)
	if !b.running {
		b.running = true
		b.wg.Add(1)
		go b.run()
	}
	b.mu.Unlock()
}

// Wait waits until the items added so far are flushed and the flush goroutine has ended.
// Call it after the last Add (it does not stop later ones).
func (b *Batcher[T]) Wait() { b.wg.Wait() }

// run flushes batches until none is pending.
func (b *Batcher[T]) run() {
	defer b.wg.Done()
	for {
		batch := b.take()
		if batch == nil {
			return
		}
		b.flush(batch)
	}
}

// take returns the next batch, or nil (and marks the goroutine stopped) when nothing is
// pending.
func (b *Batcher[T]) take() []T {
	for range gatherRounds {
		n := b.pendingWeight()
		if b.full(n) {
			break
		}
		runtime.Gosched()
		if b.pendingWeight() == n {
			break
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.pending) == 0 {
		b.running = false
		return nil
	}
	k, w := 0, 0
	for k < len(b.pending) && !b.full(w) {
		w += b.weight(b.pending[k])
		k++
	}
	batch := b.pending[:k:k]
	if k == len(b.pending) {
		b.pending = nil
	} else {
		b.pending = b.pending[k:]
	}
	b.weights -= w
	return batch
}

func (b *Batcher[T]) full(weight int) bool { return b.maxWeight > 0 && weight >= b.maxWeight }

func (b *Batcher[T]) pendingWeight() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.weights
}
