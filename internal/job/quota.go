package job

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/predq/predq/internal/postgres"
)

// Quotas of a key, by the name a refusal gives (QuotaError.Quota).
const (
	// QuotaPendingRows bounds the rows not yet done across the key's active jobs.
	QuotaPendingRows = "pending_rows"
	// QuotaQueuedJobs bounds the key's active (queued or running) jobs.
	QuotaQueuedJobs = "queued_jobs"
)

// ErrQuota: a submission would take its key past a quota; errors.As gives the *QuotaError.
var ErrQuota = errors.New("job quota exceeded")

// QuotaError is a submission refused by a quota of its key. Nothing of it was stored.
type QuotaError struct {
	Quota     string // QuotaPendingRows or QuotaQueuedJobs
	Limit     int64
	Current   int64 // the key's figure without this submission
	Requested int64 // what this submission adds (rows, or 1 job); 0 when refused before its body was read
	// RetryAfter estimates when enough frees, from the key's rows done in the last minute
	// (or, when it did none, the share of everyone's that one more key would get).
	RetryAfter time.Duration
}

func (e *QuotaError) Error() string {
	return fmt.Sprintf("%s: %s %d of %d (requested %d)", ErrQuota, e.Quota, e.Current, e.Limit, e.Requested)
}

// Is makes errors.Is(err, ErrQuota) true.
func (e *QuotaError) Is(target error) bool { return target == ErrQuota }

// quotaLockClass is the first key of the per-key advisory lock of the final quota check.
const quotaLockClass = 0x71756f74 // "quot"

func quotaLockKey(owner string) int32 {
	h := fnv.New32a()
	h.Write([]byte(owner))
	return int32(h.Sum32()) //nolint:gosec // a lock key: wrapping is fine
}

// limits are the quotas of owner (its own, else the configured defaults; negative: none).
func (s *Service) limits(owner Owner) (rows int64, jobs int64) {
	rows, jobs = s.cfg.MaxPendingRows, int64(s.cfg.MaxQueuedJobs)
	if owner.MaxPendingRows > 0 {
		rows = owner.MaxPendingRows
	}
	if owner.MaxQueuedJobs > 0 {
		jobs = int64(owner.MaxQueuedJobs)
	}
	return rows, jobs
}

// usage is owner's active jobs and their pending rows, leaving out job exclude.
func usage(ctx context.Context, db postgres.DBTX, owner string, exclude uuid.UUID) (jobs, rows int64, err error) {
	err = db.QueryRow(ctx, `SELECT
		(SELECT count(*) FROM jobs WHERE owner = $1 AND status IN ('queued', 'running') AND id <> $2),
		(SELECT COALESCE(sum(c.rows), 0) FROM jobs j JOIN job_chunks c ON c.job_id = j.id AND c.status = 'pending'
			WHERE j.owner = $1 AND j.status IN ('queued', 'running') AND j.id <> $2)::bigint`, owner, exclude).Scan(&jobs, &rows)
	if err != nil {
		return 0, 0, fmt.Errorf("quota usage: %w", classify(err))
	}
	return jobs, rows, nil
}

// checkQuota refuses a submission of rows more rows (0: not read yet, counted as 1) that
// would take owner past a quota. final takes the key's advisory lock first, inside the
// submission's transaction, so that of two submissions of one key the second counts the
// first: the lock is held until the commit, and the quotas are never overshot.
func (s *Service) checkQuota(ctx context.Context, db postgres.DBTX, owner Owner, jobID uuid.UUID, rows int64, final bool) error {
	maxRows, maxJobs := s.limits(owner)
	if maxRows < 0 && maxJobs < 0 {
		return nil
	}
	if final {
		if _, err := db.Exec(ctx, `SELECT pg_advisory_xact_lock($1, $2)`, quotaLockClass, quotaLockKey(owner.ID)); err != nil {
			return fmt.Errorf("quota lock: %w", classify(err))
		}
	}
	jobs, pending, err := usage(ctx, db, owner.ID, jobID)
	if err != nil {
		return err
	}
	adds := max(rows, 1)
	switch {
	case maxJobs >= 0 && jobs+1 > maxJobs:
		e := &QuotaError{Quota: QuotaQueuedJobs, Limit: maxJobs, Current: jobs, Requested: 1}
		e.RetryAfter = s.retryJobs(ctx, db, owner.ID, jobID)
		return e
	case maxRows >= 0 && pending+adds > maxRows:
		e := &QuotaError{Quota: QuotaPendingRows, Limit: maxRows, Current: pending, Requested: rows}
		e.RetryAfter = s.retryRows(ctx, db, owner.ID, pending+adds-maxRows)
		return e
	}
	return nil
}

// drainRate is owner's rows done per second over the last minute or, when it did none, the
// share of everyone's that one more active key would get. 0: nothing ran anywhere.
func drainRate(ctx context.Context, db postgres.DBTX, owner string) float64 {
	var mine, all float64
	var keys int64
	err := db.QueryRow(ctx, `SELECT
		(SELECT COALESCE(sum(c.rows), 0) FROM jobs j JOIN job_chunks c ON c.job_id = j.id
			WHERE j.owner = $1 AND (j.finished_at IS NULL OR j.finished_at > now() - interval '1 minute')
			  AND c.status = 'done' AND c.done_at > now() - interval '1 minute')::float8,
		(SELECT COALESCE(sum(c.rows), 0) FROM jobs j JOIN job_chunks c ON c.job_id = j.id
			WHERE (j.finished_at IS NULL OR j.finished_at > now() - interval '1 minute')
			  AND c.status = 'done' AND c.done_at > now() - interval '1 minute')::float8,
		(SELECT count(DISTINCT owner) FROM jobs WHERE status IN ('queued', 'running'))`, owner).Scan(&mine, &all, &keys)
	if err != nil {
		return 0
	}
	if mine > 0 {
		return mine / 60
	}
	return all / 60 / float64(keys+1)
}

// fallbackRetry is the Retry-After when no rows ran anywhere in the last minute.
const fallbackRetry = 30 * time.Second

func retryFor(rows int64, rate float64) time.Duration {
	if rate <= 0 {
		return fallbackRetry
	}
	secs := math.Ceil(float64(rows) / rate)
	return time.Duration(min(max(secs, 1), 3600)) * time.Second
}

// retryRows estimates when excess rows of owner will have been done.
func (s *Service) retryRows(ctx context.Context, db postgres.DBTX, owner string, excess int64) time.Duration {
	return retryFor(excess, drainRate(ctx, db, owner))
}

// retryJobs estimates when owner's active job closest to its end finishes.
func (s *Service) retryJobs(ctx context.Context, db postgres.DBTX, owner string, exclude uuid.UUID) time.Duration {
	var left int64
	err := db.QueryRow(ctx, `SELECT COALESCE(min(p.rows), 0) FROM (
		SELECT COALESCE(sum(c.rows), 0) AS rows FROM jobs j LEFT JOIN job_chunks c ON c.job_id = j.id AND c.status = 'pending'
		WHERE j.owner = $1 AND j.status IN ('queued', 'running') AND j.id <> $2 GROUP BY j.id) p`, owner, exclude).Scan(&left)
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return fallbackRetry
	}
	return retryFor(max(left, 1), drainRate(ctx, db, owner))
}
