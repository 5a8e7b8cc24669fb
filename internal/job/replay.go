package job

import (
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/predq/predq/internal/postgres"
	"github.com/predq/predq/internal/validate"
)

// Replay makes a new job of owner over the stored inputs of owner's finished job id, run by
// opts.ModelVersion: no upload, the original's rows copied inside Postgres chunk by chunk
// (same chunks, same encoding, so the replay's model reads exactly the numbers the original's
// did). Options left zero take the original's (preprocessing, confidence threshold,
// priority); the metadata and webhook are the replay's own. The new job has replay_of set and
// is queued like a submission (quotas, fair share, job:run).
//
// Errors: ErrNotFound (no such job of owner), ErrNotFinished (it is queued or running),
// ErrInputsGone (its inputs were emptied), *validate.Error (bad options, or a model whose
// input size is not the rows'), an error wrapping prediction.ErrModelNotFound, a
// *QuotaError, ErrUnavailable.
func (s *Service) Replay(ctx context.Context, owner Owner, id uuid.UUID, opts Options) (Job, error) {
	var status, prep, priority string
	var threshold float64
	var total, chunks int
	err := s.cfg.Pool.QueryRow(ctx, `SELECT status, preprocessing, confidence_threshold, priority, total, chunks_total
		FROM jobs WHERE id = $1 AND owner = $2`, id, owner.ID).Scan(&status, &prep, &threshold, &priority, &total, &chunks)
	if errors.Is(err, pgx.ErrNoRows) {
		return Job{}, ErrNotFound
	}
	if err != nil {
		return Job{}, classify(err)
	}
	if !Terminal(status) {
		return Job{}, fmt.Errorf("%w: job %s is %s", ErrNotFinished, id, status)
	}
	if opts.ModelVersion == "" {
		return Job{}, validate.Field("model_version", "is required: the version to replay the job on")
	}
	opts.Preprocessing = cmp.Or(opts.Preprocessing, prep)
	if opts.ConfidenceThreshold == 0 {
		opts.ConfidenceThreshold = threshold
	}
	opts.Priority = cmp.Or(opts.Priority, priority)
	model, err := s.ValidateOptions(ctx, &opts)
	if err != nil {
		return Job{}, err
	}
	// The rows' width, from the first chunk's header; an emptied chunk means the inputs are gone.
	var first []byte
	var firstRows, firstLen, encoding int
	var emptied bool
	err = s.cfg.Pool.QueryRow(ctx, `SELECT substr(features, 1, 16), octet_length(features), rows, encoding,
			EXISTS (SELECT 1 FROM job_chunks e WHERE e.job_id = $1 AND octet_length(e.features) = 0)
		FROM job_chunks WHERE job_id = $1 ORDER BY chunk_index LIMIT 1`, id).Scan(&first, &firstLen, &firstRows, &encoding, &emptied)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && emptied) {
		return Job{}, fmt.Errorf("%w: job %s", ErrInputsGone, id)
	}
	if err != nil {
		return Job{}, classify(err)
	}
	if width := chunkWidth(first, firstLen, firstRows, encoding); width != model.InputSize {
		return Job{}, validate.Field("model_version", "model %s takes %d features; the job's rows have %d", model.Version, model.InputSize, width)
	}

	newID, err := uuid.NewV7()
	if err != nil {
		return Job{}, err
	}
	if err := s.checkQuota(ctx, s.cfg.Pool, owner, newID, 0, false); err != nil {
		return Job{}, err
	}
	start := time.Now()
	err = postgres.WithTx(ctx, s.cfg.Pool, func(tx pgx.Tx) error {
		meta, _ := json.Marshal(orEmpty(opts.Metadata))
		tag, err := tx.Exec(ctx, `INSERT INTO jobs (id, owner, owner_name, model_version, preprocessing, confidence_threshold,
				chunk_size, metadata, webhook_url, input_format, deadline_at, priority, total, chunks_total, replay_of)
			SELECT $1, $2, $3, $4, $5, $6, o.chunk_size, $7, NULLIF($8, ''), o.input_format, now() + $9::interval, $10,
				o.total, o.chunks_total, o.id
			FROM jobs o WHERE o.id = $11 AND o.owner = $2 AND o.status IN ('succeeded', 'failed', 'cancelled')`,
			newID, owner.ID, owner.Name, model.Version, opts.Preprocessing, opts.ConfidenceThreshold, meta, opts.WebhookURL,
			s.cfg.Timeout.String(), opts.Priority, id)
		if err != nil {
			return classify(err)
		}
		if tag.RowsAffected() == 0 {
			return ErrNotFound // deleted by retention meanwhile
		}
		tag, err = tx.Exec(ctx, `INSERT INTO job_chunks (job_id, chunk_index, start_index, rows, features, encoding)
			SELECT $1, chunk_index, start_index, rows, features, encoding FROM job_chunks
			WHERE job_id = $2 AND octet_length(features) > 0`, newID, id)
		if err != nil {
			return classify(err)
		}
		if int(tag.RowsAffected()) != chunks {
			return fmt.Errorf("%w: job %s", ErrInputsGone, id)
		}
		if err := s.checkQuota(ctx, tx, owner, newID, int64(total), true); err != nil {
			return err
		}
		return classify(liftTenant(ctx, tx, owner.ID, owner.Weight, newID))
	})
	if err != nil {
		return Job{}, err
	}
	s.metrics.submitted.Inc()
	s.metrics.items.WithLabelValues("submitted").Add(float64(total))
	s.logger.InfoContext(ctx, "job replay submitted", "job_id", newID, "replay_of", id, "model_version", model.Version,
		"rows", total, "took_ms", time.Since(start).Milliseconds())
	if s.cfg.Waker != nil && chunks <= WakeChunks {
		if err := s.cfg.Waker.Wake(ctx, newID, chunks); err != nil {
			s.logger.WarnContext(ctx, "workers not woken; the job runs through the queue", "job_id", newID, "error", err)
		}
	}
	if s.cfg.Enqueuer != nil {
		if err := s.cfg.Enqueuer.EnqueueJobRun(ctx, newID); err != nil {
			s.logger.WarnContext(ctx, "job stored but not enqueued; the reconciler will enqueue it", "job_id", newID, "error", err)
		}
	}
	return s.Get(ctx, owner, newID)
}

// chunkWidth returns the features per row of a chunk of size bytes holding rows rows in
// encoding, from the start of its bytes head (the header of encodingDecimal), or -1.
func chunkWidth(head []byte, size, rows, encoding int) int {
	switch encoding {
	case encodingDecimal:
		if d, n := binary.Uvarint(head); n > 0 && d <= 1<<16 {
			return int(d)
		}
	case encodingFloat64:
		if rows > 0 && size%(8*rows) == 0 {
			return size / 8 / rows
		}
	}
	return -1
}

// Comparison is the report of a replay against the job it replays, over the items both
// answered (neither failed).
type Comparison struct {
	JobID    uuid.UUID   `json:"job_id"`
	ReplayOf uuid.UUID   `json:"replay_of"`
	Original ComparedJob `json:"original"`
	Replay   ComparedJob `json:"replay"`
	Complete bool        `json:"complete"` // both jobs are finished: the figures are final
	Compared int         `json:"compared"` // items both answered
	Agreed   int         `json:"agreed"`   // of them, items of the same class (p > 0.5)
	// AgreementRate is Agreed / Compared (0 when nothing was compared).
	AgreementRate float64   `json:"agreement_rate"`
	AbsDiff       DiffStats `json:"abs_diff"` // |p_replay - p_original| over the compared items
}

// ComparedJob is one side of a Comparison.
type ComparedJob struct {
	ID           uuid.UUID `json:"id"`
	ModelVersion string    `json:"model_version"`
	Status       string    `json:"status"`
	Total        int       `json:"total"`
	Answered     int       `json:"answered"` // items with a prediction
}

// DiffStats is the distribution of |Δp|.
type DiffStats struct {
	Mean      float64      `json:"mean"`
	P50       float64      `json:"p50"`
	P90       float64      `json:"p90"`
	P99       float64      `json:"p99"`
	Max       float64      `json:"max"`
	Histogram []DiffBucket `json:"histogram"`
}

// DiffBucket counts the compared items whose |Δp| is in [From, To) (the last bucket
// includes 1).
type DiffBucket struct {
	From  float64 `json:"from"`
	To    float64 `json:"to"`
	Count int     `json:"count"`
}

// DiffEdges are the edges of the |Δp| histogram.
var DiffEdges = []float64{0, 1e-9, 1e-6, 1e-3, 0.01, 0.05, 0.1, 0.2, 0.5, 1}

// Compare reports owner's replay job id against the job it replays. It reads both jobs'
// results in one query (a join on item index, a sort of the |Δp| for the percentiles).
// Errors: ErrNotFound (no such job of owner, or the original is gone), ErrNotReplay,
// ErrUnavailable.
func (s *Service) Compare(ctx context.Context, owner Owner, id uuid.UUID) (Comparison, error) {
	rj, err := s.Get(ctx, owner, id)
	if err != nil {
		return Comparison{}, err
	}
	if rj.ReplayOf == nil {
		return Comparison{}, fmt.Errorf("%w: job %s", ErrNotReplay, id)
	}
	oj, err := s.Get(ctx, owner, *rj.ReplayOf)
	if errors.Is(err, ErrNotFound) {
		return Comparison{}, fmt.Errorf("%w: the original job %s was deleted", ErrNotFound, *rj.ReplayOf)
	}
	if err != nil {
		return Comparison{}, err
	}
	c := Comparison{JobID: rj.ID, ReplayOf: oj.ID, Complete: Terminal(rj.Status) && Terminal(oj.Status),
		Original: ComparedJob{ID: oj.ID, ModelVersion: oj.ModelVersion, Status: oj.Status, Total: oj.Total},
		Replay:   ComparedJob{ID: rj.ID, ModelVersion: rj.ModelVersion, Status: rj.Status, Total: rj.Total}}
	var counts []int32
	var mean, p50, p90, p99, mx *float64
	err = s.cfg.Pool.QueryRow(ctx, `WITH d AS (
			SELECT abs(b.prediction - a.prediction) AS d, (a.prediction > 0.5) = (b.prediction > 0.5) AS agree
			FROM job_results a JOIN job_results b ON b.job_id = $2 AND b.item_index = a.item_index
			WHERE a.job_id = $1 AND a.prediction IS NOT NULL AND b.prediction IS NOT NULL),
		h AS (SELECT LEAST(width_bucket(d, $3::float8[]), $4) AS b, count(*) AS n FROM d GROUP BY 1)
		SELECT (SELECT count(*) FROM job_results WHERE job_id = $1 AND prediction IS NOT NULL),
			(SELECT count(*) FROM job_results WHERE job_id = $2 AND prediction IS NOT NULL),
			count(*), count(*) FILTER (WHERE agree), avg(d), max(d),
			percentile_cont(0.5) WITHIN GROUP (ORDER BY d), percentile_cont(0.9) WITHIN GROUP (ORDER BY d),
			percentile_cont(0.99) WITHIN GROUP (ORDER BY d),
			(SELECT array_agg(COALESCE(h.n, 0)::int ORDER BY i) FROM generate_series(1, $4) i LEFT JOIN h ON h.b = i)
		FROM d`, oj.ID, rj.ID, DiffEdges, len(DiffEdges)-1).
		Scan(&c.Original.Answered, &c.Replay.Answered, &c.Compared, &c.Agreed, &mean, &mx, &p50, &p90, &p99, &counts)
	if err != nil {
		return Comparison{}, classify(err)
	}
	if c.Compared > 0 {
		c.AgreementRate = float64(c.Agreed) / float64(c.Compared)
		c.AbsDiff = DiffStats{Mean: *mean, P50: *p50, P90: *p90, P99: *p99, Max: *mx}
	}
	c.AbsDiff.Histogram = make([]DiffBucket, len(DiffEdges)-1)
	for i := range c.AbsDiff.Histogram {
		c.AbsDiff.Histogram[i] = DiffBucket{From: DiffEdges[i], To: DiffEdges[i+1]}
		if i < len(counts) {
			c.AbsDiff.Histogram[i].Count = int(counts[i])
		}
	}
	return c, nil
}
