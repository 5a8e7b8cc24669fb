package job

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/predq/predq/internal/postgres"
	"github.com/predq/predq/internal/prediction"
)

// jobColumns are the columns of a Job. An active job's counts are the sums of its done
// chunks' (p); a terminal job's are stored on its row (see commitChunk and finish).
const jobColumns = `j.id, j.status, j.priority, j.model_version, j.preprocessing, j.confidence_threshold, j.total,
	CASE WHEN j.status IN ('queued', 'running') THEN COALESCE(p.processed, 0) ELSE j.processed END,
	CASE WHEN j.status IN ('queued', 'running') THEN COALESCE(p.failed, 0) ELSE j.failed END,
	CASE WHEN j.status IN ('queued', 'running') THEN COALESCE(p.low_confidence, 0) ELSE j.low_confidence END,
	j.chunks_total,
	CASE WHEN j.status IN ('queued', 'running') THEN COALESCE(p.done, 0) ELSE j.chunks_done END,
	j.input_format, j.created_at, j.started_at, j.finished_at,
	j.deadline_at, j.error, j.metadata, j.webhook_url,
	d.id, d.status, d.attempts, d.last_status, d.last_error, d.delivered_at, j.replay_of`

// jobFrom joins the latest webhook delivery of the job and, for an active job only, the
// sums of its done chunks.
const jobFrom = `FROM jobs j LEFT JOIN LATERAL (
	SELECT id, status, attempts, last_status, last_error, delivered_at FROM webhook_deliveries
	WHERE job_id = j.id ORDER BY created_at DESC LIMIT 1) d ON true
	LEFT JOIN LATERAL (
	SELECT sum(c.processed)::int AS processed, sum(c.failed)::int AS failed,
		sum(c.low_confidence)::int AS low_confidence, count(*)::int AS done
	FROM job_chunks c WHERE c.job_id = j.id AND c.status = 'done' AND j.status IN ('queued', 'running')) p ON true`

func scanJob(row pgx.Row) (Job, error) {
	var j Job
	var webhookURL, dStatus, dError *string
	var dID *uuid.UUID
	var dAttempts, dLast *int
	var dAt *time.Time
	err := row.Scan(&j.ID, &j.Status, &j.Priority, &j.ModelVersion, &j.Preprocessing, &j.ConfidenceThreshold, &j.Total,
		&j.Processed, &j.Failed, &j.LowConfidence, &j.ChunksTotal, &j.ChunksDone, &j.InputFormat, &j.CreatedAt,
		&j.StartedAt, &j.FinishedAt, &j.DeadlineAt, &j.Error, &j.Metadata, &webhookURL,
		&dID, &dStatus, &dAttempts, &dLast, &dError, &dAt, &j.ReplayOf)
	if err != nil {
		return Job{}, err
	}
	if j.Total > 0 {
		j.Progress = float64(j.Processed+j.Failed) / float64(j.Total)
	}
	if j.Metadata == nil {
		j.Metadata = map[string]string{}
	}
	if webhookURL != nil {
		j.Webhook = &Webhook{URL: *webhookURL, Status: "none"}
		if dStatus != nil {
			j.Webhook.Status = *dStatus
			j.Webhook.Attempts = *dAttempts
			j.Webhook.LastStatus = dLast
			j.Webhook.DeliveredAt = dAt
			if dError != nil {
				j.Webhook.LastError = *dError
			}
		}
	}
	return j, nil
}

// Get returns the job id of owner. Errors: ErrNotFound (also for another owner's job),
// ErrUnavailable.
func (s *Service) Get(ctx context.Context, owner Owner, id uuid.UUID) (Job, error) {
	return s.get(ctx, s.cfg.Pool, owner.ID, id)
}

func (s *Service) get(ctx context.Context, db postgres.DBTX, owner string, id uuid.UUID) (Job, error) {
	j, err := scanJob(db.QueryRow(ctx, `SELECT `+jobColumns+` `+jobFrom+` WHERE j.id = $1 AND ($2 = '' OR j.owner = $2)`, id, owner))
	if errors.Is(err, pgx.ErrNoRows) {
		return Job{}, ErrNotFound
	}
	if err != nil {
		return Job{}, classify(err)
	}
	return j, nil
}

// ListFilter selects a page of jobs.
type ListFilter struct {
	Status string // "" for all
	Limit  int    // 1..100, default 20
	Cursor string // from the previous page
}

// List returns owner's jobs, newest first, and the cursor of the next page ("" at the end).
// A cursor that does not decode is a *validate.Error-like ErrBadCursor.
func (s *Service) List(ctx context.Context, owner Owner, f ListFilter) ([]Job, string, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = 20
	}
	var after time.Time
	var afterID uuid.UUID
	if f.Cursor != "" {
		var err error
		if after, afterID, err = decodeCursor(f.Cursor); err != nil {
			return nil, "", err
		}
	}
	const listSQL = `SELECT ` + jobColumns + ` ` + jobFrom + `
		WHERE j.owner = $1 AND ($2 = '' OR j.status = $2)
		  AND ($3::timestamptz IS NULL OR (j.created_at, j.id) < ($3, $4))
		ORDER BY j.created_at DESC, j.id DESC LIMIT $5`
	list := func(db postgres.DBTX) ([]Job, error) {
		rows, err := db.Query(ctx, listSQL, owner.ID, f.Status, nullTime(after), afterID, limit+1)
		if err != nil {
			return nil, err
		}
		return pgx.CollectRows(rows, func(row pgx.CollectableRow) (Job, error) { return scanJob(row) })
	}
	// A list tolerates the replica's lag (a job submitted a moment ago may be missing from
	// it); an unreachable replica gives way to the primary.
	db, label := s.cfg.Pool, "primary"
	if s.cfg.ReadPool != nil {
		db, label = s.cfg.ReadPool, "replica"
	}
	out, err := list(db)
	if err != nil && db != s.cfg.Pool && postgres.IsUnavailable(err) {
		s.logger.WarnContext(ctx, "read replica unavailable; listing on the primary", "error", err)
		label = "primary"
		out, err = list(s.cfg.Pool)
	}
	s.metrics.reads.WithLabelValues(label).Inc()
	if err != nil {
		return nil, "", classify(err)
	}
	next := ""
	if len(out) > limit {
		out = out[:limit]
		last := out[limit-1]
		next = encodeCursor(last.CreatedAt, last.ID)
	}
	return out, next, nil
}

// ErrBadCursor: a pagination cursor that this service did not make.
var ErrBadCursor = errors.New("invalid cursor")

func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func encodeCursor(t time.Time, id uuid.UUID) string {
	b := binary.BigEndian.AppendUint64(nil, uint64(t.UnixMicro()))
	b = append(b, id[:]...)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(c string) (time.Time, uuid.UUID, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) != 24 {
		return time.Time{}, uuid.Nil, ErrBadCursor
	}
	id, _ := uuid.FromBytes(b[8:])
	return time.UnixMicro(int64(binary.BigEndian.Uint64(b[:8]))), id, nil
}

// Results returns up to limit results of the job from item index after+1 on (after = -1 for
// the first page), in item order, with the index to pass for the next page (-1 at the end of
// what exists now). Results of a running job are the ones finished so far.
func (s *Service) Results(ctx context.Context, owner Owner, id uuid.UUID, after, limit int) ([]Result, int, error) {
	j, db, err := s.getForResults(ctx, owner, id)
	if err != nil {
		return nil, -1, err
	}
	var out []Result
	err = s.eachResult(ctx, db, j, after, limit+1, func(r Result) error {
		out = append(out, r)
		return nil
	})
	if err != nil {
		return nil, -1, err
	}
	next := -1
	if len(out) > limit {
		out = out[:limit]
		next = out[limit-1].Index
	}
	return out, next, nil
}

// StreamResults calls fn for every result of the job in item order, reading them in
// batches so that a job of millions of results is streamed with bounded memory.
func (s *Service) StreamResults(ctx context.Context, owner Owner, id uuid.UUID, fn func(Result) error) error {
	j, db, err := s.getForResults(ctx, owner, id)
	if err != nil {
		return err
	}
	const batch = 10_000
	after := -1
	for {
		n := 0
		err := s.eachResult(ctx, db, j, after, batch, func(r Result) error {
			n++
			after = r.Index
			return fn(r)
		})
		if err != nil {
			return err
		}
		if n < batch {
			return nil
		}
	}
}

// getForResults reads the job on the primary (a job submitted a moment ago is found, whatever
// the replica's lag) and returns the database to read its results from: the replica when it
// has replayed the primary's WAL up to where it was after that read, so that the results it
// returns are at least those of the job as read (all of them for a finished job), else the
// primary. The check costs a round trip to each. Without a ReadPool, the primary.
func (s *Service) getForResults(ctx context.Context, owner Owner, id uuid.UUID) (Job, postgres.DBTX, error) {
	j, err := s.Get(ctx, owner, id)
	if err != nil {
		return Job{}, nil, err
	}
	if s.cfg.ReadPool == nil {
		s.metrics.reads.WithLabelValues("primary").Inc()
		return j, s.cfg.Pool, nil
	}
	if s.replicaCaughtUp(ctx) {
		s.metrics.reads.WithLabelValues("replica").Inc()
		return j, s.cfg.ReadPool, nil
	}
	s.metrics.reads.WithLabelValues("primary").Inc()
	return j, s.cfg.Pool, nil
}

// replicaCaughtUp reports whether the ReadPool's server has replayed the WAL up to the
// primary's current insert position (which is past every commit visible on the primary; the
// write position can be behind an asynchronous commit) (a server that is not a standby, a ReadPool on the primary
// itself, always has). An error of either says no: the primary serves the read.
func (s *Service) replicaCaughtUp(ctx context.Context) bool {
	var lsn string
	if err := s.cfg.Pool.QueryRow(ctx, `SELECT pg_current_wal_insert_lsn()::text`).Scan(&lsn); err != nil {
		return false
	}
	var ok bool
	err := s.cfg.ReadPool.QueryRow(ctx, `SELECT coalesce(pg_last_wal_replay_lsn() >= $1::pg_lsn, NOT pg_is_in_recovery())`, lsn).Scan(&ok)
	if err != nil {
		s.logger.WarnContext(ctx, "read replica unavailable; reading results on the primary", "error", err)
		return false
	}
	return ok
}

func (s *Service) eachResult(ctx context.Context, db postgres.DBTX, j Job, after, limit int, fn func(Result) error) error {
	rows, err := db.Query(ctx, `SELECT item_index, prediction, confidence, low_confidence, error FROM job_results
		WHERE job_id = $1 AND item_index > $2 ORDER BY item_index LIMIT $3`, j.ID, after, limit)
	if err != nil {
		return classify(err)
	}
	defer rows.Close()
	for rows.Next() {
		var r Result
		var errText *string
		if err := rows.Scan(&r.Index, &r.Prediction, &r.Confidence, &r.LowConfidence, &errText); err != nil {
			return err
		}
		r.ModelVersion = j.ModelVersion
		if r.Prediction != nil {
			r.PredictionClass = prediction.ClassNegative
			if *r.Prediction > 0.5 {
				r.PredictionClass = prediction.ClassPositive
			}
		}
		if errText != nil {
			r.Error = *errText
		}
		if err := fn(r); err != nil {
			return err
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("results: %w", classify(err))
	}
	return nil
}
