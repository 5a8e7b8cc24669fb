package batch_test

import (
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/batch"
)

// item is one caller's part of a batch: n units, and the size of the batch it went in.
type item struct {
	id, n int
	done  chan int
}

func TestBatcher(t *testing.T) {
	t.Parallel()

	t.Run("ConcurrentItemsShareBatchesEachFlushedOnce", func(t *testing.T) {
		t.Parallel()
		var (
			mu       sync.Mutex
			seen     = map[int]int{}
			flushes  int
			inFlight atomic.Int32
		)
		b := batch.New(50, func(it *item) int { return it.n }, func(items []*item) {
			require.Equal(t, int32(1), inFlight.Add(1), "one flush at a time")
			defer inFlight.Add(-1)
			w := 0
			for _, it := range items {
				w += it.n
			}
			mu.Lock()
			flushes++
			for _, it := range items {
				seen[it.id]++
			}
			mu.Unlock()
			for _, it := range items {
				it.done <- w
			}
		})
		const n = 400
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				it := &item{id: i, n: 1, done: make(chan int, 1)}
				b.Add(it)
				w := <-it.done
				if w > 50 {
					t.Errorf("item %d in a batch of weight %d, more than 50", i, w)
				}
			})
		}
		wg.Wait()
		b.Wait()
		require.Len(t, seen, n)
		for id, c := range seen {
			require.Equal(t, 1, c, "item %d", id)
		}
		require.Less(t, flushes, n, "concurrent items share flushes")
		t.Logf("%d items in %d flushes", n, flushes)
	})

	t.Run("AHeavyItemIsABatchOfItsOwn", func(t *testing.T) {
		t.Parallel()
		got := make(chan []int, 4)
		b := batch.New(10, func(it *item) int { return it.n }, func(items []*item) {
			var ids []int
			for _, it := range items {
				ids = append(ids, it.id)
			}
			got <- ids
		})
		b.Add(&item{id: 1, n: 25})
		b.Wait()
		require.Equal(t, []int{1}, <-got)
	})

	t.Run("WhatGathersDuringAFlushIsTheNextBatch", func(t *testing.T) {
		t.Parallel()
		started, release := make(chan struct{}), make(chan struct{})
		var sizes []int
		b := batch.New(0, nil, func(items []int) {
			if len(sizes) == 0 {
				close(started)
				<-release // hold the first flush while the others gather
			}
			sizes = append(sizes, len(items))
		})
		b.Add(0)
		<-started
		for i := 1; i <= 100; i++ {
			b.Add(i)
		}
		close(release)
		b.Wait()
		require.Equal(t, []int{1, 100}, sizes, "no limit: the next flush takes everything pending")
	})
}
