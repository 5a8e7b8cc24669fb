package job

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/predq/predq/internal/postgres"
)

// reconcileLimit bounds the rows one reconciler query returns; the next run takes the rest.
const reconcileLimit = 1000

// Store holds the job feature's maintenance queries: what the reconciler re-drives and what
// retention deletes. The Service keeps the queries of a job's own life.
type Store struct {
	db postgres.DBTX
}

// NewStore returns a Store over db (a pool).
func NewStore(db postgres.DBTX) *Store { return &Store{db: db} }

// Expired returns the ids of active (queued or running) jobs past their deadline, for the
// reconciler to fail.
func (s *Store) Expired(ctx context.Context) ([]uuid.UUID, error) {
	return s.ids(ctx, "expired jobs", `SELECT id FROM jobs WHERE status IN ('queued', 'running') AND deadline_at < now() LIMIT $1`, reconcileLimit)
}

// Stale returns, oldest first, the ids of queued jobs untouched for grace (0: any queued
// job): their job:run may have been lost (an enqueue that failed after the commit, or Redis
// that lost its data).
func (s *Store) Stale(ctx context.Context, grace time.Duration) ([]uuid.UUID, error) {
	return s.ids(ctx, "stale jobs", `SELECT id FROM jobs WHERE status = 'queued' AND updated_at < now() - $1::interval
		ORDER BY created_at LIMIT $2`, grace.String(), reconcileLimit)
}

// PendingChunks returns the pending chunks of the running jobs untouched for grace (0: every
// running job), by job id. A running job's updated_at moves while its chunks commit (see
// finishIfDone), so only a job whose chunk tasks may be lost is listed.
func (s *Store) PendingChunks(ctx context.Context, grace time.Duration) (map[uuid.UUID][]int, error) {
	rows, err := s.db.Query(ctx, `SELECT c.job_id, array_agg(c.chunk_index ORDER BY c.chunk_index)
		FROM job_chunks c JOIN jobs j ON j.id = c.job_id
		WHERE j.status = 'running' AND c.status = 'pending' AND j.updated_at < now() - $1::interval
		GROUP BY c.job_id LIMIT $2`, grace.String(), reconcileLimit)
	if err != nil {
		return nil, fmt.Errorf("job: pending chunks: %w", err)
	}
	out := map[uuid.UUID][]int{}
	var id uuid.UUID
	var chunks []int32
	if _, err := pgx.ForEachRow(rows, []any{&id, &chunks}, func() error {
		cs := make([]int, len(chunks))
		for i, c := range chunks {
			cs[i] = int(c)
		}
		out[id] = cs
		return nil
	}); err != nil {
		return nil, fmt.Errorf("job: pending chunks: %w", err)
	}
	return out, nil
}

// Unfinished returns, oldest first, the ids of running jobs with no chunk pending, untouched
// for grace (0: all of them): the worker of the last chunk stopped between its commit and
// finishing the job, and its task is lost. job:run again finishes them.
func (s *Store) Unfinished(ctx context.Context, grace time.Duration) ([]uuid.UUID, error) {
	return s.ids(ctx, "unfinished jobs", `SELECT id FROM jobs j WHERE status = 'running' AND updated_at < now() - $1::interval
		AND NOT EXISTS (SELECT 1 FROM job_chunks c WHERE c.job_id = j.id AND c.status = 'pending')
		ORDER BY created_at LIMIT $2`, grace.String(), reconcileLimit)
}

// DeleteOlderThan deletes the terminal jobs that finished before before, with their chunks,
// results and webhook deliveries (ON DELETE CASCADE), and returns how many jobs went. A job's
// results can be large: on a pool, the day partitions of job_results wholly before before
// whose jobs all go now (every job of the day's ids terminal and finished before before) are
// dropped first, each with one DROP TABLE (postgres.DropPartitionsBefore), so that the
// cascade finds no rows there; then jobs go a few at a time, the cascade deleting the results
// of the partitions that stay by rows. Active jobs are never deleted, nor their results.
func (s *Store) DeleteOlderThan(ctx context.Context, before time.Time) (int64, error) {
	if pool, ok := s.db.(*pgxpool.Pool); ok {
		_, err := postgres.DropPartitionsBefore(ctx, pool, "job_results", before, func(ctx context.Context, tx pgx.Tx, p postgres.Partition) (bool, error) {
			var kept bool
			err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM jobs WHERE id >= $1 AND id < $2
				AND NOT (status IN ('succeeded', 'failed', 'cancelled') AND finished_at < $3))`,
				postgres.DayBound(p.Day), postgres.DayBound(p.Day.AddDate(0, 0, 1)), before).Scan(&kept)
			return !kept, err
		})
		if err != nil {
			return 0, fmt.Errorf("job: delete older than %s: %w", before.Format(time.RFC3339), err)
		}
	}
	n, err := postgres.DeleteInBatches(ctx, s.db, `DELETE FROM jobs WHERE id IN (
		SELECT id FROM jobs WHERE status IN ('succeeded', 'failed', 'cancelled') AND finished_at < $1
		ORDER BY finished_at LIMIT $2)`, before, 5)
	if err != nil {
		return n, fmt.Errorf("job: delete older than %s: %w", before.Format(time.RFC3339), err)
	}
	return n, nil
}

func (s *Store) ids(ctx context.Context, what, sql string, args ...any) ([]uuid.UUID, error) {
	rows, err := s.db.Query(ctx, sql, args...)
	if err != nil {
		return nil, fmt.Errorf("job: %s: %w", what, err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return nil, fmt.Errorf("job: %s: %w", what, err)
	}
	return ids, nil
}
