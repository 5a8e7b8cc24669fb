// Package maintenance holds the periodic upkeep that the scheduler triggers: deleting data
// past its retention age, in bounded batches so that no statement holds a long lock.
package maintenance

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
)

// Retention are the ages past which data is deleted.
type Retention struct {
	Predictions time.Duration // persisted synchronous predictions (default 30 days)
	Jobs        time.Duration // terminal jobs with their inputs, results and webhooks (default 7 days)
	Idempotency time.Duration // idempotency keys (default 24 hours)
	Deliveries  time.Duration // webhook deliveries whose job is gone or that have none (default 7 days)
	BatchSize   int           // rows deleted per statement (default 5,000)
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
	if r.BatchSize <= 0 {
		r.BatchSize = 5000
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

// RunRetention deletes everything older than its age, a batch at a time, until nothing is
// left or ctx ends. Deleting a job cascades to its chunks, results and deliveries; a job's
// results can be large, so jobs go a few at a time.
func RunRetention(ctx context.Context, pool *pgxpool.Pool, r Retention) (Deleted, error) {
	r = r.withDefaults()
	var d Deleted
	var err error
	if d.Predictions, err = deleteInBatches(ctx, pool, `DELETE FROM predictions WHERE id IN (
		SELECT id FROM predictions WHERE created_at < now() - $1::interval ORDER BY created_at LIMIT $2)`, r.Predictions, r.BatchSize); err != nil {
		return d, fmt.Errorf("retention: predictions: %w", err)
	}
	if d.Jobs, err = deleteInBatches(ctx, pool, `DELETE FROM jobs WHERE id IN (
		SELECT id FROM jobs WHERE status IN ('succeeded', 'failed', 'cancelled') AND finished_at < now() - $1::interval
		ORDER BY finished_at LIMIT $2)`, r.Jobs, max(1, r.BatchSize/1000)); err != nil {
		return d, fmt.Errorf("retention: jobs: %w", err)
	}
	if d.IdempotencyKeys, err = deleteInBatches(ctx, pool, `DELETE FROM idempotency_keys WHERE (owner, key) IN (
		SELECT owner, key FROM idempotency_keys WHERE created_at < now() - $1::interval LIMIT $2)`, r.Idempotency, r.BatchSize); err != nil {
		return d, fmt.Errorf("retention: idempotency keys: %w", err)
	}
	if d.Deliveries, err = deleteInBatches(ctx, pool, `DELETE FROM webhook_deliveries WHERE id IN (
		SELECT id FROM webhook_deliveries WHERE status <> 'pending' AND created_at < now() - $1::interval LIMIT $2)`, r.Deliveries, r.BatchSize); err != nil {
		return d, fmt.Errorf("retention: webhook deliveries: %w", err)
	}
	return d, nil
}

func deleteInBatches(ctx context.Context, pool *pgxpool.Pool, sql string, age time.Duration, batch int) (int64, error) {
	var total int64
	for {
		tag, err := pool.Exec(ctx, sql, age.String(), batch)
		if err != nil {
			return total, err
		}
		total += tag.RowsAffected()
		if tag.RowsAffected() < int64(batch) {
			return total, nil
		}
		if err := ctx.Err(); err != nil {
			return total, err
		}
	}
}
