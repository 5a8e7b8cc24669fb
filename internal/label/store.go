package label

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/predq/predq/internal/postgres"
	"github.com/predq/predq/internal/validate"
)

// maxRowErrors is how many bad rows a refused labels body names.
const maxRowErrors = 10

// DefaultMaxRows bounds the rows of one labels body (a job holds at most as many rows as
// MAX_JOB_ROWS; a body can hold each once).
const DefaultMaxRows = 10_000_000

// Store reads and writes labels in Postgres. Every method is scoped to an owner (the API key's
// id, the tenant of predictions and jobs): a subject of another owner is ErrNotFound.
type Store struct {
	pool *pgxpool.Pool
}

// NewStore returns a Store on pool.
func NewStore(pool *pgxpool.Pool) *Store {
	return &Store{pool: pool}
}

const labelCols = `label, coalesce(source, ''), revision, model_version, score, created_at, updated_at`

func scanLabel(row pgx.Row, l *Label) error {
	var v int16
	if err := row.Scan(&v, &l.Source, &l.Revision, &l.ModelVersion, &l.Score, &l.CreatedAt, &l.UpdatedAt); err != nil {
		return err
	}
	l.Value, l.Label = int(v), Name(int(v))
	l.CreatedAt, l.UpdatedAt = l.CreatedAt.UTC(), l.UpdatedAt.UTC()
	return nil
}

// SetPrediction sets the label of the owner's prediction id, from source (optional, at most
// MaxSourceLen bytes), and returns the current label. It is idempotent: the same label again
// changes nothing (Changed false, no new revision, no history row; the source stays the
// first one's). Another label is a new revision, recorded in the history. It returns
// ErrNotFound when the owner has no stored prediction with that id.
func (s *Store) SetPrediction(ctx context.Context, owner string, predictionID uuid.UUID, label int, source string) (Label, error) {
	if label != Positive && label != Negative {
		return Label{}, validate.Field("label", `must be "positive", "negative", 1 or 0`)
	}
	if err := CheckSource(source); err != nil {
		return Label{}, validate.Field("source", "%s", err.Error())
	}
	var out Label
	err := postgres.WithTx(ctx, s.pool, func(tx pgx.Tx) error {
		var version string
		var score float64
		err := tx.QueryRow(ctx, `SELECT model_version, prediction FROM predictions
			WHERE id = $1 AND (user_id = $2 OR (user_id IS NULL AND $2 = ''))`, predictionID, owner).Scan(&version, &score)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		// The upsert changes the row only for another label; no row back means the same one.
		row := tx.QueryRow(ctx, `INSERT INTO prediction_labels AS l (prediction_id, owner, label, source, model_version, score)
			VALUES ($1, $2, $3, NULLIF($4, ''), $5, $6)
			ON CONFLICT (prediction_id) DO UPDATE SET label = EXCLUDED.label, source = EXCLUDED.source,
				revision = l.revision + 1, updated_at = now()
			WHERE l.label <> EXCLUDED.label
			RETURNING `+labelCols, predictionID, owner, label, source, version, score)
		switch err := scanLabel(row, &out); {
		case errors.Is(err, pgx.ErrNoRows):
			return scanLabel(tx.QueryRow(ctx, `SELECT `+labelCols+` FROM prediction_labels WHERE prediction_id = $1`, predictionID), &out)
		case err != nil:
			return err
		}
		out.Changed = true
		_, err = tx.Exec(ctx, `INSERT INTO prediction_label_history (prediction_id, revision, label, source)
			VALUES ($1, $2, $3, NULLIF($4, ''))`, predictionID, out.Revision, label, source)
		return err
	})
	if err != nil {
		return Label{}, fmt.Errorf("label: set prediction %s: %w", predictionID, err)
	}
	out.PredictionID = &predictionID
	return out, nil
}

// GetPrediction returns the current label of the owner's prediction id and its history,
// oldest first. It returns ErrNotFound when the prediction has no label (or is not the
// owner's).
func (s *Store) GetPrediction(ctx context.Context, owner string, predictionID uuid.UUID) (Label, []Change, error) {
	var l Label
	err := scanLabel(s.pool.QueryRow(ctx, `SELECT `+labelCols+` FROM prediction_labels WHERE prediction_id = $1 AND owner = $2`,
		predictionID, owner), &l)
	if errors.Is(err, pgx.ErrNoRows) {
		return Label{}, nil, fmt.Errorf("label: prediction %s: %w", predictionID, ErrNotFound)
	}
	if err != nil {
		return Label{}, nil, fmt.Errorf("label: prediction %s: %w", predictionID, err)
	}
	l.PredictionID = &predictionID
	rows, err := s.pool.Query(ctx, `SELECT revision, label, coalesce(source, ''), at FROM prediction_label_history
		WHERE prediction_id = $1 ORDER BY revision`, predictionID)
	if err != nil {
		return Label{}, nil, fmt.Errorf("label: history of %s: %w", predictionID, err)
	}
	h, err := collectChanges(rows)
	if err != nil {
		return Label{}, nil, fmt.Errorf("label: history of %s: %w", predictionID, err)
	}
	return l, h, nil
}

func collectChanges(rows pgx.Rows) ([]Change, error) {
	return pgx.CollectRows(rows, func(r pgx.CollectableRow) (Change, error) {
		var c Change
		var v int16
		err := r.Scan(&c.Revision, &v, &c.Source, &c.At)
		c.Label, c.At = Name(int(v)), c.At.UTC()
		return c, err
	})
}

// SetJobRows sets the labels of rows of the owner's finished job, read from src, from source
// (optional): every row's item index must be one of the job's (0 to total-1) and appear once.
// The rows are copied (COPY) into a temporary table and upserted from it in one transaction:
// a bad row refuses the whole body with a *validate.Error naming the first bad rows
// (rows[n].item_index or rows[n].label, n 1-based), and nothing is written. Like
// SetPrediction it is idempotent per row: a row's same label again changes nothing. It
// returns ErrNotFound when the owner has no such job, ErrJobActive while it is queued or
// running, and a *validate.Error for a body of no row.
func (s *Store) SetJobRows(ctx context.Context, owner string, jobID uuid.UUID, src RowSource, source string) (JobResult, error) {
	if err := CheckSource(source); err != nil {
		return JobResult{}, validate.Field("source", "%s", err.Error())
	}
	res := JobResult{JobID: jobID}
	err := postgres.WithTx(ctx, s.pool, func(tx pgx.Tx) error {
		var status, version string
		var total int
		err := tx.QueryRow(ctx, `SELECT status, total, model_version FROM jobs WHERE id = $1 AND owner = $2`, jobID, owner).
			Scan(&status, &total, &version)
		if errors.Is(err, pgx.ErrNoRows) {
			return ErrNotFound
		}
		if err != nil {
			return err
		}
		if status == "queued" || status == "running" {
			return ErrJobActive
		}
		if _, err := tx.Exec(ctx, `CREATE TEMP TABLE label_upload (item_index integer NOT NULL, label smallint NOT NULL) ON COMMIT DROP`); err != nil {
			return err
		}
		feed := &rowFeed{src: src, total: total, seen: make([]uint64, (total+63)/64)}
		if _, err := tx.CopyFrom(ctx, pgx.Identifier{"label_upload"}, []string{"item_index", "label"}, feed); err != nil {
			if feed.err != nil {
				return feed.err
			}
			return err
		}
		if feed.err != nil {
			return feed.err
		}
		if feed.rows == 0 {
			return validate.Field("body", "must hold at least 1 row (item_index,label)")
		}
		res.Rows = feed.rows
		var changed, unscored int
		err = tx.QueryRow(ctx, `WITH up AS (
				INSERT INTO job_labels AS l (job_id, item_index, label, source, model_version, score)
				SELECT $1, u.item_index, u.label, NULLIF($2, ''), $3, r.prediction
				FROM label_upload u LEFT JOIN job_results r ON r.job_id = $1 AND r.item_index = u.item_index
				ON CONFLICT (job_id, item_index) DO UPDATE SET label = EXCLUDED.label, source = EXCLUDED.source,
					revision = l.revision + 1, updated_at = now()
				WHERE l.label <> EXCLUDED.label
				RETURNING item_index, revision, label, source, score),
			h AS (INSERT INTO job_label_history (job_id, item_index, revision, label, source)
				SELECT $1, item_index, revision, label, source FROM up)
			SELECT count(*), count(*) FILTER (WHERE score IS NULL) FROM up`, jobID, source, version).Scan(&changed, &unscored)
		if err != nil {
			return err
		}
		res.Changed = changed
		if changed < res.Rows {
			// Unchanged rows: their unscored count is read from the rows as stored.
			err = tx.QueryRow(ctx, `SELECT count(*) FROM job_labels l JOIN label_upload u ON u.item_index = l.item_index
				WHERE l.job_id = $1 AND l.score IS NULL`, jobID).Scan(&unscored)
			if err != nil {
				return err
			}
		}
		res.Unscored = unscored
		return nil
	})
	if err != nil {
		return JobResult{}, fmt.Errorf("label: set rows of job %s: %w", jobID, err)
	}
	return res, nil
}

// JobRows returns the current labels of the owner's job with item index > after, in item
// order, at most limit of them. It returns ErrNotFound when the owner has no such job.
func (s *Store) JobRows(ctx context.Context, owner string, jobID uuid.UUID, after, limit int) ([]Label, error) {
	var ok bool
	if err := s.pool.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM jobs WHERE id = $1 AND owner = $2)`, jobID, owner).Scan(&ok); err != nil {
		return nil, fmt.Errorf("label: job %s: %w", jobID, err)
	}
	if !ok {
		return nil, fmt.Errorf("label: job %s: %w", jobID, ErrNotFound)
	}
	rows, err := s.pool.Query(ctx, `SELECT item_index, `+labelCols+` FROM job_labels
		WHERE job_id = $1 AND item_index > $2 ORDER BY item_index LIMIT $3`, jobID, after, limit)
	if err != nil {
		return nil, fmt.Errorf("label: rows of job %s: %w", jobID, err)
	}
	out, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (Label, error) {
		var l Label
		var idx int
		var v int16
		err := r.Scan(&idx, &v, &l.Source, &l.Revision, &l.ModelVersion, &l.Score, &l.CreatedAt, &l.UpdatedAt)
		l.Value, l.Label, l.JobID, l.ItemIndex = int(v), Name(int(v)), &jobID, &idx
		l.CreatedAt, l.UpdatedAt = l.CreatedAt.UTC(), l.UpdatedAt.UTC()
		return l, err
	})
	if err != nil {
		return nil, fmt.Errorf("label: rows of job %s: %w", jobID, err)
	}
	return out, nil
}

// rowFeed is the pgx.CopyFromSource of SetJobRows: it reads rows from src and checks them
// (the item index within the job, once each). On the first bad row it stops feeding COPY but
// reads on, up to maxRowErrors bad rows, to name them all.
type rowFeed struct {
	src    RowSource
	total  int
	seen   []uint64 // a bit per item index
	rows   int
	values [2]any
	err    error
}

func (f *rowFeed) Next() bool {
	if f.err != nil {
		return false
	}
	r, err := f.src.Next()
	if errors.Is(err, io.EOF) {
		return false
	}
	if err == nil {
		f.rows++
		err = f.check(r)
	}
	if err != nil {
		f.fail(err)
		return false
	}
	if f.rows > DefaultMaxRows {
		f.err = validate.Field("body", "must hold at most %d rows", DefaultMaxRows)
		return false
	}
	f.values = [2]any{int32(r.ItemIndex), int16(r.Label)}
	return true
}

// rowNum is the number of the row just read as the client counts it: its source's (the
// line of an NDJSON body, the record of a CSV body) when the source tells, else its place.
func (f *rowFeed) rowNum() int {
	if n, ok := f.src.(interface{ Row() int }); ok {
		return n.Row()
	}
	return f.rows
}

func (f *rowFeed) check(r JobRow) error {
	row := f.rowNum()
	if r.ItemIndex < 0 || r.ItemIndex >= f.total {
		return &RowError{Row: row, Field: "item_index", Message: fmt.Sprintf("the job's rows are 0 to %d, got %d", f.total-1, r.ItemIndex)}
	}
	if r.Label != Positive && r.Label != Negative {
		return &RowError{Row: row, Field: "label", Message: `must be "positive", "negative", 1 or 0`}
	}
	w, b := r.ItemIndex/64, uint64(1)<<(r.ItemIndex%64)
	if f.seen[w]&b != 0 {
		return &RowError{Row: row, Field: "item_index", Message: fmt.Sprintf("item %d is labelled twice in this body", r.ItemIndex)}
	}
	f.seen[w] |= b
	return nil
}

// fail records a bad row and reads on for up to maxRowErrors of them; an error that is not a
// row's (a broken body) ends the upload at once.
func (f *rowFeed) fail(first error) {
	var re *RowError
	if !errors.As(first, &re) {
		f.err = first
		return
	}
	v := &validate.Error{}
	add := func(re *RowError) {
		v.Add("rows["+strconv.Itoa(re.Row)+"]."+re.Field, "row %d: %s", re.Row, re.Message)
	}
	add(re)
	for v.Len() < maxRowErrors {
		r, err := f.src.Next()
		if err != nil {
			if errors.As(err, &re) {
				f.rows++
				add(re)
				continue
			}
			break
		}
		f.rows++
		if err := f.check(r); err != nil && errors.As(err, &re) {
			add(re)
		}
	}
	f.err = v
}

func (f *rowFeed) Values() ([]any, error) { return f.values[:], nil }
func (f *rowFeed) Err() error             { return f.err }
