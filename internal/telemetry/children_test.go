package telemetry

import (
	"sync"
	"sync/atomic"
	"testing"
)

// Children makes the value of a key once, and every caller of that key gets that value, from
// any goroutine; another key gets its own.
func TestChildrenMadeOncePerKey(t *testing.T) {
	t.Parallel()
	var c Children[string, *int]
	var made atomic.Int32
	newChild := func() *int { made.Add(1); return new(int) }
	var wg sync.WaitGroup
	got := make([]*int, 16)
	for i := range got {
		wg.Go(func() { got[i] = c.Get("v1.0.0", newChild) })
	}
	wg.Wait()
	for _, p := range got {
		if p != got[0] {
			t.Fatal("two callers of one key got different values")
		}
	}
	// A racing first Get may make a value that LoadOrStore then drops; after that, no more.
	before := made.Load()
	if c.Get("v1.0.0", newChild) != got[0] || made.Load() != before {
		t.Fatal("a later Get made the value again")
	}
	if other := c.Get("v2.0.0", newChild); other == got[0] {
		t.Fatal("another key got the first key's value")
	}
}
