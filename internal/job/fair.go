package job

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// Fair share of batch capacity (README, "Fair share of batch capacity").
//
// A job:chunk task is a work token, not an order: whichever token a worker runs, it claims
// the next chunk by fair order from Postgres (ClaimNext), so no FIFO queue decides which key
// goes first. The order is weighted fair queuing over keys: every key has a virtual time,
// the rows claimed for it divided by its weight (fair_tenants.vtime); the next chunk is the
// pending chunk whose virtual finish time (its key's virtual time plus its rows / weight) is
// the smallest, and claiming it adds rows/weight to that key's. Within one key, jobs go by priority (high, normal, low), then in
// the order they were submitted, and a job's chunks in order. A key that submits after being
// idle starts at the smallest virtual time of the keys with work (see liftTenant), so idling
// saves up no credit.
//
// Exactly-once is unchanged: a claim only leases the chunk (job_chunks.lease_until); its
// results, its done mark and its counts still commit in one transaction that checks the
// chunk is pending (commitChunk). A worker that dies holding a claim lets the lease lapse;
// its token comes back from asynq, or the reconciler enqueues one, and the chunk is claimed
// again. Each claim counts an attempt; a chunk that fails ChunkAttempts times has its items
// recorded as failed.

// Claim is one chunk claimed for a worker by ClaimNext.
type Claim struct {
	JobID   uuid.UUID
	Chunk   int
	Rows    int
	Owner   string // the key (tenant)
	Attempt int    // 1 for the first claim of the chunk
}

// claimSQL claims the first claimable chunk in fair order, charges its key, and marks a
// queued job running, in one statement. Concurrent claimers skip each other's rows (SKIP
// LOCKED) and see each other's leases once committed.
const claimSQL = `WITH next AS (
	SELECT c.job_id, c.chunk_index, c.rows, j.owner, j.status AS job_status
	FROM jobs j
	JOIN job_chunks c ON c.job_id = j.id AND c.status = 'pending'
	LEFT JOIN fair_tenants f ON f.owner = j.owner
	WHERE j.status IN ('queued', 'running') AND (c.lease_until IS NULL OR c.lease_until < now())
	ORDER BY COALESCE(f.vtime, 0) + c.rows::float8 / COALESCE(f.weight, 1), CASE j.priority WHEN 'high' THEN 0 WHEN 'normal' THEN 1 ELSE 2 END,
		j.created_at, j.id, c.chunk_index
	LIMIT 1
	FOR UPDATE OF c SKIP LOCKED
), claimed AS (
	UPDATE job_chunks c SET lease_until = now() + $1::interval, attempts = c.attempts + 1
	FROM next WHERE c.job_id = next.job_id AND c.chunk_index = next.chunk_index
	RETURNING c.job_id, c.chunk_index, c.rows, c.attempts, next.owner, next.job_status
), charged AS (
	INSERT INTO fair_tenants AS f (owner, vtime) SELECT owner, rows FROM claimed
	ON CONFLICT (owner) DO UPDATE SET vtime = f.vtime + EXCLUDED.vtime / f.weight, updated_at = now()
), started AS (
	UPDATE jobs j SET status = 'running', started_at = COALESCE(j.started_at, now()), updated_at = now()
	FROM claimed WHERE j.id = claimed.job_id AND claimed.job_status = 'queued' AND j.status = 'queued'
)
SELECT job_id, chunk_index, rows, attempts, owner FROM claimed`

// ClaimNext claims the next chunk to run by fair order (see the package's fair share notes)
// for ChunkLease. It reports false when no chunk is claimable: none pending, or every pending
// one claimed by another worker.
func (s *Service) ClaimNext(ctx context.Context) (Claim, bool, error) {
	var c Claim
	err := s.cfg.Pool.QueryRow(ctx, claimSQL, s.cfg.ChunkLease.String()).Scan(&c.JobID, &c.Chunk, &c.Rows, &c.Attempt, &c.Owner)
	if errors.Is(err, pgx.ErrNoRows) {
		return Claim{}, false, nil
	}
	if err != nil {
		return Claim{}, false, fmt.Errorf("claim chunk: %w", err)
	}
	return c, true, nil
}

// RunNext claims the next chunk by fair order and runs it (ProcessChunk). It reports whether
// it found a chunk. It first waits for one of this process's claim slots (twice
// ChunkWriters), so that a chunk is claimed only when it can soon be committed. A chunk that fails (an error or a panic) is released for a back-off that
// grows with its attempts and the error is returned, so that the token is retried; on its
// ChunkAttempts-th attempt its items are recorded as failed instead, and RunNext returns nil.
func (s *Service) RunNext(ctx context.Context) (ran bool, err error) {
	select {
	case s.claims <- struct{}{}:
	case <-ctx.Done():
		return false, ctx.Err()
	}
	defer func() { <-s.claims }()
	return s.RunNextNow(ctx)
}

// RunNextNow is RunNext without waiting for a claim slot: the wake-up lanes' (a few per
// worker), so that a small job woken at once is not held behind the chunks already claimed.
func (s *Service) RunNextNow(ctx context.Context) (ran bool, err error) {
	c, ok, err := s.ClaimNext(ctx)
	if err != nil || !ok {
		return false, err
	}
	running := s.metrics.running.WithLabelValues(c.Owner)
	running.Inc()
	defer running.Dec()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("panic: %v", r)
			s.logger.ErrorContext(ctx, "job chunk panicked", "job_id", c.JobID, "chunk", c.Chunk, "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
		}
		if err != nil {
			err = s.chunkFailed(context.WithoutCancel(ctx), c, err)
		}
	}()
	return true, s.ProcessChunk(ctx, c.JobID, c.Chunk)
}

// chunkFailed handles a failed attempt of claim c: the chunk's items fail on its last
// attempt (nil is returned: nothing is left to retry); before that the chunk's lease is set
// to a back-off and cause is returned.
func (s *Service) chunkFailed(ctx context.Context, c Claim, cause error) error {
	if c.Attempt >= s.cfg.ChunkAttempts {
		reason := fmt.Sprintf("chunk %d failed after its last retry: %v", c.Chunk, cause)
		if err := s.FailChunk(ctx, c.JobID, c.Chunk, reason); err != nil {
			return errors.Join(cause, err)
		}
		return nil
	}
	backoff := min(time.Second<<min(c.Attempt-1, 6), time.Minute)
	if _, err := s.cfg.Pool.Exec(ctx, `UPDATE job_chunks SET lease_until = now() + $3::interval
		WHERE job_id = $1 AND chunk_index = $2 AND status = 'pending'`, c.JobID, c.Chunk, backoff.String()); err != nil {
		return errors.Join(cause, fmt.Errorf("back off chunk %s/%d: %w", c.JobID, c.Chunk, err))
	}
	return cause
}

// liftTenant records owner's weight and, when owner has no other active job, sets its
// virtual time to at least the floor: the smallest virtual time of the keys with active jobs
// or, when no other key has any, the largest of all keys. A key therefore saves up no credit
// while idle, and two keys that start at once start level. It runs in the submission's
// transaction, after its rows, so that the key's row is locked only briefly.
func liftTenant(ctx context.Context, tx pgx.Tx, owner string, weight int, jobID uuid.UUID) error {
	_, err := tx.Exec(ctx, `WITH act AS (
			SELECT DISTINCT owner FROM jobs WHERE status IN ('queued', 'running') AND owner <> $1),
		floor AS (SELECT COALESCE(
			(SELECT min(f.vtime) FROM fair_tenants f JOIN act ON act.owner = f.owner),
			(SELECT max(vtime) FROM fair_tenants WHERE owner <> $1), 0) AS v)
		INSERT INTO fair_tenants AS t (owner, weight, vtime) SELECT $1, $2, v FROM floor
		ON CONFLICT (owner) DO UPDATE SET weight = EXCLUDED.weight, updated_at = now(),
			vtime = CASE WHEN EXISTS (SELECT 1 FROM jobs WHERE owner = $1 AND status IN ('queued', 'running') AND id <> $3)
				THEN t.vtime ELSE GREATEST(t.vtime, EXCLUDED.vtime) END`, owner, max(weight, 1), jobID)
	return err
}

// TenantShare is one key's state in the fair share: what it is owed and running.
type TenantShare struct {
	Owner       string
	Weight      int
	VirtualTime float64
	PendingRows int64 // rows of its active jobs not yet done
}

// TenantShares returns the fair-share state of the keys with active jobs (for metrics).
func (s *Store) TenantShares(ctx context.Context) ([]TenantShare, error) {
	rows, err := s.db.Query(ctx, `SELECT j.owner, COALESCE(max(f.weight), 1), COALESCE(max(f.vtime), 0), COALESCE(sum(c.rows), 0)::bigint
		FROM jobs j JOIN job_chunks c ON c.job_id = j.id AND c.status = 'pending'
		LEFT JOIN fair_tenants f ON f.owner = j.owner
		WHERE j.status IN ('queued', 'running') GROUP BY j.owner ORDER BY j.owner LIMIT $1`, reconcileLimit)
	if err != nil {
		return nil, fmt.Errorf("job: tenant shares: %w", err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (TenantShare, error) {
		var t TenantShare
		err := r.Scan(&t.Owner, &t.Weight, &t.VirtualTime, &t.PendingRows)
		return t, err
	})
	if err != nil {
		return nil, fmt.Errorf("job: tenant shares: %w", err)
	}
	return out, nil
}
