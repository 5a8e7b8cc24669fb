package job

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/predq/predq/internal/postgres"
)

// Start marks a queued job running and returns the indexes of the chunks to enqueue a work
// token (a job:chunk task) for: all of them the first time (until MarkTokens), else the
// pending ones; none for a terminal job whose tokens were enqueued.
//
// All, not only the pending ones, the first time: a token runs whichever chunk is next by
// fair order (RunNext), so other jobs' tokens may have run this job's chunks, even all of
// them, before its job:run; its tokens then run theirs. That keeps one token per chunk.
// Later deliveries (job:run delivered twice, or re-driven by the reconciler) enqueue the
// pending ones again: their task ids make those still queued one token, and extra ones
// find nothing or run another chunk.
func (s *Service) Start(ctx context.Context, id uuid.UUID) (chunks []int, first bool, err error) {
	var status string
	err = s.cfg.Pool.QueryRow(ctx, `WITH old AS (SELECT id, tokens_enqueued FROM jobs WHERE id = $1 FOR UPDATE)
		UPDATE jobs j SET status = CASE WHEN j.status = 'queued' THEN 'running' ELSE j.status END,
			started_at = COALESCE(j.started_at, now()), updated_at = now()
		FROM old WHERE j.id = old.id RETURNING j.status, NOT old.tokens_enqueued`, id).Scan(&status, &first)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, false, fmt.Errorf("start job %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, false, fmt.Errorf("start job %s: %w", id, err)
	}
	if Terminal(status) && !first {
		return nil, false, nil
	}
	rows, err := s.cfg.Pool.Query(ctx, `SELECT chunk_index FROM job_chunks WHERE job_id = $1 AND ($2 OR status = 'pending')
		ORDER BY chunk_index`, id, first)
	if err != nil {
		return nil, false, fmt.Errorf("start job %s: %w", id, err)
	}
	chunks, err = pgx.CollectRows(rows, pgx.RowTo[int])
	if err != nil {
		return nil, false, fmt.Errorf("start job %s: %w", id, err)
	}
	return chunks, first, nil
}

// markTokens records that the job's tokens were enqueued (see Start).
func (s *Service) markTokens(ctx context.Context, id uuid.UUID) error {
	if _, err := s.cfg.Pool.Exec(ctx, `UPDATE jobs SET tokens_enqueued = true WHERE id = $1 AND NOT tokens_enqueued`, id); err != nil {
		return fmt.Errorf("job %s: mark tokens: %w", id, err)
	}
	return nil
}

// Enqueue starts a job and enqueues a work token per chunk (the job:run handler; see Start).
func (s *Service) Enqueue(ctx context.Context, id uuid.UUID) error {
	chunks, first, err := s.Start(ctx, id)
	if err != nil {
		return err
	}
	if s.cfg.Enqueuer != nil && len(chunks) > 0 {
		if err := s.cfg.Enqueuer.EnqueueChunks(ctx, id, chunks); err != nil {
			return err
		}
	}
	if first {
		if err := s.markTokens(ctx, id); err != nil {
			return err
		}
	}
	// Finish the job if every chunk is done and the last chunk's worker could not.
	return s.finishIfDone(ctx, id)
}

// chunkJob is what a chunk needs of its job.
type chunkJob struct {
	status, version, prep string
	threshold             float64
	deadline              time.Time
}

// ProcessChunk runs one chunk: it infers its rows as one batch, then in one transaction,
// only if the chunk is still pending and the job still active, writes the results, marks the
// chunk done and adds its counts to the job; the last chunk finishes the job. A chunk that
// was already done, or whose job was cancelled or finished, does nothing. It returns an
// error only when it should be retried.
func (s *Service) ProcessChunk(ctx context.Context, id uuid.UUID, chunk int) error {
	var j chunkJob
	err := s.cfg.Pool.QueryRow(ctx, `SELECT status, model_version, preprocessing, confidence_threshold, deadline_at FROM jobs WHERE id = $1`, id).
		Scan(&j.status, &j.version, &j.prep, &j.threshold, &j.deadline)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil // deleted (retention) or never existed: nothing to do
	}
	if err != nil {
		return fmt.Errorf("chunk %s/%d: load job: %w", id, chunk, err)
	}
	if Terminal(j.status) {
		return nil
	}
	if time.Now().After(j.deadline) {
		return s.Fail(ctx, id, "the job exceeded its deadline (JOB_TIMEOUT) before finishing")
	}
	var status string
	var start, n, encoding int
	var blob []byte
	err = s.cfg.Pool.QueryRow(ctx, `SELECT status, start_index, rows, features, encoding FROM job_chunks WHERE job_id = $1 AND chunk_index = $2`, id, chunk).
		Scan(&status, &start, &n, &blob, &encoding)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("chunk %s/%d: load: %w", id, chunk, err)
	}
	if status != "pending" {
		// Done by an earlier delivery, which may have stopped before finishing the job.
		return s.finishIfDone(ctx, id)
	}
	model, err := s.cfg.Models.Resolve(j.version)
	if err != nil {
		return fmt.Errorf("chunk %s/%d: model %s not loaded in this worker: %w", id, chunk, j.version, err)
	}
	rows, err := decodeChunk(blob, n, encoding)
	if err != nil {
		return s.FailChunk(ctx, id, chunk, err.Error())
	}
	probs := make([]float64, n)
	if err := model.PredictBatch(rows, j.prep, probs); err != nil {
		return s.FailChunk(ctx, id, chunk, err.Error())
	}
	low := 0
	for _, p := range probs {
		if max(p, 1-p) < j.threshold {
			low++
		}
	}
	return s.commitChunk(ctx, id, chunk, func(tx pgx.Tx) error {
		_, err := tx.CopyFrom(ctx, pgx.Identifier{"job_results"}, []string{"job_id", "item_index", "prediction", "confidence", "low_confidence"}, resultRows(id, start, probs, j.threshold))
		return err
	}, n, 0, low)
}

// resultRows is the COPY source of a chunk's results: item start+i has probability
// probs[i]. The rows are made as COPY reads them, in one reused slice, and the job id is a
// pgtype.UUID, which pgx encodes directly (a uuid.UUID goes through database/sql's
// driver.Valuer and a parse for every row, which cost the worker more than the inference).
func resultRows(id uuid.UUID, start int, probs []float64, threshold float64) pgx.CopyFromSource {
	jobID := pgtype.UUID{Bytes: id, Valid: true}
	row := make([]any, 5)
	i := 0
	return pgx.CopyFromFunc(func() ([]any, error) {
		if i == len(probs) {
			return nil, nil
		}
		p := probs[i]
		conf := max(p, 1-p)
		row[0], row[1], row[2], row[3], row[4] = jobID, int32(start+i), p, conf, conf < threshold
		i++
		return row, nil
	})
}

// FailChunk records every item of a chunk as failed with reason (the chunk can never
// succeed: its task ran out of retries, or its data is unreadable), exactly once.
func (s *Service) FailChunk(ctx context.Context, id uuid.UUID, chunk int, reason string) error {
	var start, n int
	err := s.cfg.Pool.QueryRow(ctx, `SELECT start_index, rows FROM job_chunks WHERE job_id = $1 AND chunk_index = $2`, id, chunk).Scan(&start, &n)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("fail chunk %s/%d: %w", id, chunk, err)
	}
	return s.commitChunk(ctx, id, chunk, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `INSERT INTO job_results (job_id, item_index, error)
			SELECT $1, g, $4 FROM generate_series($2::int, $3::int) g ON CONFLICT DO NOTHING`, id, start, start+n-1, reason)
		return err
	}, 0, n, 0)
}

// smallChunkRows is the most rows of a chunk that commits without waiting for a writer.
const smallChunkRows = 1000

// jobLockClass is the first key of the advisory locks of jobs (pg_advisory_xact_lock(int,
// int)); the second is jobLockKey of the job id.
const jobLockClass = 0x6a6f6273 // "jobs"

// jobLockKey maps a job id onto the second key of its advisory lock. Two jobs may share a
// key: that only makes a Cancel wait for the other job's chunk commits too.
func jobLockKey(id uuid.UUID) int32 {
	return int32(binary.BigEndian.Uint32(id[12:]) ^ binary.BigEndian.Uint32(id[8:]))
}

// commitChunk is the exactly-once step: under the chunk's row lock, if it is still pending
// and its job still active, write (the results), mark it done with its counts; then, after
// the commit, finish the job if no chunk is left.
//
// The chunks of a job commit in parallel, and never write the job's row: an active job's
// counts are the sums of its done chunks' (see jobFrom), stored on the job when it ends.
// (The job's row is the target of job_results' foreign key: while it was updated by every
// chunk, the chunks committed one at a time behind its row lock, and each result row's key
// check walked the row's versions.) Each commit holds the job's advisory lock in shared mode
// from before it reads the job's status until it ends; terminate (Cancel, Fail) takes it in
// exclusive mode before it changes the status, so it waits for the commits under way, and
// the commits that come later wait for it (the lock manager queues them behind it) and then
// see the terminal status.
func (s *Service) commitChunk(ctx context.Context, id uuid.UUID, chunk int, write func(pgx.Tx) error, ok, failed, low int) error {
	// At most ChunkWriters commits at once: more only make them queue inside Postgres, for
	// the extension of job_results and the lock of the job's row in every key check.
	// A small chunk (a small job's) does not wait behind the large ones' COPYs.
	small := ok+failed <= smallChunkRows
	if !small {
		select {
		case s.writers <- struct{}{}:
		case <-ctx.Done():
			return fmt.Errorf("chunk %s/%d: %w", id, chunk, ctx.Err())
		}
	}
	committed := false
	var owner string
	err := postgres.WithTx(ctx, s.cfg.Pool, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock_shared($1, $2)`, jobLockClass, jobLockKey(id)); err != nil {
			return err
		}
		// A statement of its own, so that it reads the job after the lock is granted.
		// The chunk keeps its features: a finished job's inputs stay until retention deletes
		// the job, so that it can be replayed on another model version (Replay).
		err := tx.QueryRow(ctx, `UPDATE job_chunks c SET status = 'done', done_at = now(),
				processed = $3, failed = $4, low_confidence = $5, lease_until = NULL
			FROM jobs j
			WHERE c.job_id = $1 AND c.chunk_index = $2 AND c.status = 'pending'
			  AND j.id = c.job_id AND j.status IN ('queued', 'running')
			RETURNING j.owner`, id, chunk, ok, failed, low).Scan(&owner)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil // done by an earlier delivery of this chunk, or the job is over
		}
		if err != nil {
			return err
		}
		if err := write(tx); err != nil {
			return err
		}
		committed = true
		return nil
	})
	if !small {
		<-s.writers
	}
	if err != nil {
		return fmt.Errorf("chunk %s/%d: %w", id, chunk, err)
	}
	if committed {
		s.metrics.items.WithLabelValues("processed").Add(float64(ok))
		s.metrics.items.WithLabelValues("failed").Add(float64(failed))
		s.metrics.rowsDone.WithLabelValues(owner).Add(float64(ok + failed))
	}
	return s.finishIfDone(ctx, id)
}

// finishIfDone finishes a running job none of whose chunks is pending, and otherwise marks
// it alive for the reconciler (updated_at, at most every few seconds). Every chunk calls it
// after its commit: the last one to commit finds no chunk pending (two may, and the second
// finds the job finished). A chunk delivered again after its commit calls it too, so a
// worker that stopped between the two does not leave the job running.
func (s *Service) finishIfDone(ctx context.Context, id uuid.UUID) error {
	var pending bool
	err := s.cfg.Pool.QueryRow(ctx, `WITH alive AS (
			UPDATE jobs SET updated_at = now() WHERE id = $1 AND status IN ('queued', 'running') AND updated_at < now() - interval '5 seconds')
		SELECT EXISTS (SELECT 1 FROM job_chunks WHERE job_id = $1 AND status = 'pending')`, id).Scan(&pending)
	if err != nil {
		return fmt.Errorf("job %s: pending chunks: %w", id, err)
	}
	if pending {
		return nil
	}
	var finished *Job
	err = postgres.WithTx(ctx, s.cfg.Pool, func(tx pgx.Tx) error {
		var status string
		var pending bool
		err := tx.QueryRow(ctx, `SELECT status FROM jobs WHERE id = $1 FOR UPDATE`, id).Scan(&status)
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && Terminal(status)) {
			return nil // gone, or finished already
		}
		if err != nil {
			return err
		}
		// Under the job's lock, in a statement that sees every commit before it.
		if err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM job_chunks WHERE job_id = $1 AND status = 'pending')`, id).Scan(&pending); err != nil || pending {
			return err
		}
		finished, err = s.finish(ctx, tx, id, "", "")
		return err
	})
	if err != nil {
		return fmt.Errorf("finish job %s: %w", id, err)
	}
	if finished != nil {
		s.afterFinish(ctx, *finished)
	}
	return nil
}

// finish moves a job to its terminal status inside tx: status (succeeded, or failed when
// items failed) unless forced, finished_at, and the webhook delivery. It returns the job.
//
// The caller holds the job's row lock, and no chunk commit of the job is under way (the last
// one has committed, or terminate holds the job's advisory lock), so the counts summed from
// the chunks here are final.
func (s *Service) finish(ctx context.Context, tx pgx.Tx, id uuid.UUID, forceStatus, reason string) (*Job, error) {
	if _, err := tx.Exec(ctx, `UPDATE jobs j SET
			processed = c.processed, failed = c.failed, low_confidence = c.low_confidence, chunks_done = c.done,
			status = CASE WHEN $2 <> '' THEN $2 WHEN c.failed > 0 THEN 'failed' ELSE 'succeeded' END,
			error = CASE WHEN $3 <> '' THEN $3 WHEN $2 = '' AND c.failed > 0 THEN c.failed || ' of ' || j.total || ' items failed' ELSE j.error END,
			started_at = COALESCE(j.started_at, now()), finished_at = now(), updated_at = now()
		FROM (SELECT COALESCE(sum(processed), 0)::int AS processed, COALESCE(sum(failed), 0)::int AS failed,
				COALESCE(sum(low_confidence), 0)::int AS low_confidence, count(*)::int AS done
			FROM job_chunks WHERE job_id = $1 AND status = 'done') c
		WHERE j.id = $1`, id, forceStatus, reason); err != nil {
		return nil, err
	}
	if forceStatus != "" {
		if _, err := tx.Exec(ctx, `UPDATE job_chunks SET status = 'skipped' WHERE job_id = $1 AND status = 'pending'`, id); err != nil {
			return nil, err
		}
	}
	j, err := s.get(ctx, tx, "", id)
	if err != nil {
		return nil, err
	}
	if j.Webhook != nil && s.cfg.Notifier != nil {
		payload, err := MarshalEvent(j, time.Now())
		if err != nil {
			return nil, err
		}
		did, err := s.cfg.Notifier.CreateDelivery(ctx, tx, id, EventType(j.Status), j.Webhook.URL, payload)
		if err != nil {
			return nil, fmt.Errorf("record webhook: %w", err)
		}
		j.deliveryID = did
	}
	return &j, nil
}

// afterFinish hands the follow-ups of a terminal job to the queues. Both are recorded in
// Postgres already (the delivery row; the job's low_confidence count), so a failed enqueue is
// re-driven by the reconciler.
func (s *Service) afterFinish(ctx context.Context, j Job) {
	s.metrics.finished.WithLabelValues(j.Status).Inc()
	if j.StartedAt != nil && j.FinishedAt != nil {
		s.metrics.duration.WithLabelValues(j.Status).Observe(j.FinishedAt.Sub(j.CreatedAt).Seconds())
	}
	s.logger.InfoContext(ctx, "job finished", "job_id", j.ID, "status", j.Status, "total", j.Total,
		"processed", j.Processed, "failed", j.Failed, "low_confidence", j.LowConfidence)
	if s.cfg.Enqueuer == nil {
		return
	}
	if j.deliveryID != uuid.Nil {
		enqueue := func(ctx context.Context) {
			if err := s.cfg.Enqueuer.EnqueueWebhook(ctx, j.deliveryID); err != nil {
				s.logger.WarnContext(ctx, "webhook recorded but not enqueued; the reconciler will", "job_id", j.ID, "error", err)
			} else if err := s.cfg.Notifier.MarkEnqueued(ctx, j.deliveryID); err != nil {
				s.logger.WarnContext(ctx, "webhook enqueued but not marked", "job_id", j.ID, "delivery_id", j.deliveryID, "error", err)
			}
		}
		now := s.cfg.DeliverNow != nil
		if now {
			select {
			case s.delivering <- struct{}{}:
			default:
				now = false // 16 under way: the task alone
			}
		}
		if now {
			// The first attempt now; the task, enqueued after it, carries the retries (its
			// first attempt finds this one recorded). If this process stops meanwhile, the
			// delivery stays pending and the reconciler enqueues it.
			go func(ctx context.Context) {
				defer func() { <-s.delivering }()
				settled, err := s.cfg.DeliverNow(ctx, j.deliveryID)
				if err != nil {
					s.logger.DebugContext(ctx, "first webhook attempt not settled; the task retries", "job_id", j.ID, "error", err)
				}
				if !settled {
					enqueue(ctx)
				}
			}(context.WithoutCancel(ctx))
		} else {
			enqueue(ctx)
		}
	}
	if j.LowConfidence > 0 {
		if err := s.cfg.Enqueuer.EnqueueJobAlert(ctx, Summary{JobID: j.ID, ModelVersion: j.ModelVersion,
			Threshold: j.ConfidenceThreshold, Total: j.Total, LowConfidence: j.LowConfidence}); err != nil {
			s.logger.WarnContext(ctx, "low-confidence summary not enqueued", "job_id", j.ID, "error", err)
		}
	}
}

// Fail moves an active job to failed with reason (deadline passed, unrecoverable error).
// A terminal job is left as it is.
func (s *Service) Fail(ctx context.Context, id uuid.UUID, reason string) error {
	return s.terminate(ctx, "", id, StatusFailed, reason)
}

// Cancel moves a queued or running job of owner to cancelled: chunks not yet started do
// nothing, finished results stay readable. Errors: ErrNotFound, ErrConflict (terminal).
func (s *Service) Cancel(ctx context.Context, owner Owner, id uuid.UUID) (Job, error) {
	if err := s.terminate(ctx, owner.ID, id, StatusCancelled, ""); err != nil {
		return Job{}, err
	}
	return s.Get(ctx, owner, id)
}

func (s *Service) terminate(ctx context.Context, owner string, id uuid.UUID, status, reason string) error {
	var finished *Job
	err := postgres.WithTx(ctx, s.cfg.Pool, func(tx pgx.Tx) error {
		// Exclusive: wait for the chunk commits under way (see commitChunk).
		if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1, $2)`, jobLockClass, jobLockKey(id)); err != nil {
			return classify(err)
		}
		var cur string
		err := tx.QueryRow(ctx, `SELECT status FROM jobs WHERE id = $1 AND ($2 = '' OR owner = $2) FOR UPDATE`, id, owner).Scan(&cur)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return classify(err)
		}
		if Terminal(cur) {
			if owner == "" {
				return nil
			}
			return fmt.Errorf("%w: job is %s", ErrConflict, cur)
		}
		finished, err = s.finish(ctx, tx, id, status, reason)
		return err
	})
	if err != nil {
		return err
	}
	if finished != nil {
		s.afterFinish(ctx, *finished)
	}
	return nil
}
