// Package maintenance holds the periodic upkeep that the scheduler triggers: deleting data
// past its retention age. Each feature's store owns its DELETE (bounded batches, so that no
// statement holds a long lock); this package only walks them with their ages.
package maintenance

import (
	"context"
	"fmt"
	"time"
)

// Deleter deletes one kind of data created (or finished) before a time and reports how many
// rows went. Each feature's store implements it for its own tables.
type Deleter interface {
	DeleteOlderThan(ctx context.Context, before time.Time) (int64, error)
}

// Stores are the Deleters retention walks, one per kind of data; a nil one is skipped.
type Stores struct {
	Predictions Deleter // persisted synchronous predictions
	Jobs        Deleter // terminal jobs with their inputs, results and webhooks
	Idempotency Deleter // idempotency keys
	Deliveries  Deleter // webhook deliveries whose job is gone or that have none
}

// Retention are the ages past which data is deleted.
type Retention struct {
	Predictions time.Duration // persisted synchronous predictions (default 30 days)
	Jobs        time.Duration // terminal jobs with their inputs, results and webhooks (default 7 days)
	Idempotency time.Duration // idempotency keys (default 24 hours)
	Deliveries  time.Duration // webhook deliveries whose job is gone or that have none (default 7 days)
}

func (r Retention) withDefaults() Retention {
	if r.Predictions <= 0 {
		r.Predictions = 30 * 24 * time.Hour
	}
	if r.Jobs <= 0 {
		r.Jobs = 7 * 24 * time.Hour
	}
	if r.Idempotency <= 0 {
		r.Idempotency = 24 * time.Hour
	}
	if r.Deliveries <= 0 {
		r.Deliveries = 7 * 24 * time.Hour
	}
	return r
}

// Deleted counts what one run deleted.
type Deleted struct {
	Predictions     int64 `json:"predictions"`
	Jobs            int64 `json:"jobs"`
	IdempotencyKeys int64 `json:"idempotency_keys"`
	Deliveries      int64 `json:"webhook_deliveries"`
}

// RunRetention deletes everything older than its age, store after store, until nothing is
// left or ctx ends. The first error stops the run; what was deleted until then is returned.
func RunRetention(ctx context.Context, s Stores, r Retention) (Deleted, error) {
	r = r.withDefaults()
	now := time.Now()
	var d Deleted
	for _, step := range []struct {
		name  string
		store Deleter
		age   time.Duration
		n     *int64
	}{
		{"predictions", s.Predictions, r.Predictions, &d.Predictions},
		{"jobs", s.Jobs, r.Jobs, &d.Jobs},
		{"idempotency keys", s.Idempotency, r.Idempotency, &d.IdempotencyKeys},
		{"webhook deliveries", s.Deliveries, r.Deliveries, &d.Deliveries},
	} {
		if step.store == nil {
			continue
		}
		n, err := step.store.DeleteOlderThan(ctx, now.Add(-step.age))
		*step.n = n
		if err != nil {
			return d, fmt.Errorf("retention: %s: %w", step.name, err)
		}
	}
	return d, nil
}
