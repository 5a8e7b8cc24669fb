package telemetry

import "sync"

// Children holds the children of metric vectors by a key of their label values, each made
// once: a vector's WithLabelValues hashes and compares the labels on every call, a cost the
// request path need not pay. The keys must be bounded, as labels are.
type Children[K comparable, V any] struct{ m sync.Map }

// Get returns the children of k, made by newChildren the first time k is asked for.
func (c *Children[K, V]) Get(k K, newChildren func() V) V {
	if v, ok := c.m.Load(k); ok {
		return v.(V)
	}
	v, _ := c.m.LoadOrStore(k, newChildren())
	return v.(V)
}
