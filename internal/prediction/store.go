// The Store is the Postgres store of answered synchronous predictions: the bulk, idempotent
// write of the Recorders and of the persist worker, and the read side of
// GET /api/v1/predictions.
//
// Writes are keyed by request id (UNIQUE (request_id)), so a replayed batch writes nothing
// twice. A batch is first copied straight into predictions (one COPY, no ON CONFLICT), which
// is all that a batch of new predictions costs; a COPY is atomic, and when it fails on a
// request id that is stored already, the batch goes again through the conflict-handling path:
// small batches in one multi-row INSERT built from unnest arrays, large ones copied into a
// session temporary table and moved into predictions, both with ON CONFLICT DO NOTHING.
package prediction

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/predq/predq/internal/postgres"
)

// Sentinel errors of the store.
var (
	// ErrNotFound: no prediction has that id or request id.
	ErrNotFound = errors.New("prediction not found")
	// ErrInvalidCursor: a List cursor that this store did not produce.
	ErrInvalidCursor = errors.New("invalid cursor")
)

// Limits of List.
const (
	DefaultListLimit = 50
	MaxListLimit     = 1000
)

// DefaultCopyThreshold is the batch size from which the conflict-handling path of Insert (taken
// when the direct COPY of a batch meets a request id that is stored already) copies through a
// temporary table instead of one unnest INSERT. Measured with BenchmarkInsert (60 features a
// row, 2 cores): unnest is 1.3-4x faster up to 100 rows (one round trip against five), both
// tie at 200, and COPY is 10-20% faster from 500 rows on.
const DefaultCopyThreshold = 200

// DB is what the store needs: a pool or a transaction (Begin on a transaction opens a
// savepoint). *pgxpool.Pool and pgx.Tx satisfy it.
type DB interface {
	postgres.DBTX
	Begin(ctx context.Context) (pgx.Tx, error)
}

// Store reads and writes the predictions table.
type Store struct {
	db            DB
	copyThreshold int
	// pool, when db is a pool, serves the direct COPY of Insert (nil: no direct COPY). The
	// direct COPY needs a connection of its own: in a transaction, a COPY that fails on a
	// stored request id would abort the transaction.
	pool *pgxpool.Pool
}

// StoreOption configures a Store.
type StoreOption func(*Store)

// WithCopyThreshold sets the batch size from which the conflict-handling path of Insert copies
// through a temporary table (default DefaultCopyThreshold; 1 always does, a huge value never
// does). It does not change the direct COPY that Insert tries first.
func WithCopyThreshold(n int) StoreOption {
	return func(s *Store) {
		if n > 0 {
			s.copyThreshold = n
		}
	}
}

// NewStore returns a Store over db.
func NewStore(db DB, opts ...StoreOption) *Store {
	s := &Store{db: db, copyThreshold: DefaultCopyThreshold}
	s.pool, _ = db.(*pgxpool.Pool)
	for _, o := range opts {
		o(s)
	}
	return s
}

// Stored is one stored prediction: a row of the predictions table.
type Stored struct {
	ID                  int64     `json:"id"`         // the row's identity
	RequestID           string    `json:"request_id"` // unique; batch samples have REQUEST-ID-<index>
	UserID              string    `json:"user_id,omitempty"`
	Features            []float64 `json:"input_features"`
	Prediction          float64   `json:"prediction"` // probability of the positive class
	Confidence          float64   `json:"confidence"` // max(p, 1-p)
	PredictionClass     string    `json:"prediction_class"`
	ModelVersion        string    `json:"model_version"` // the concrete version, never an alias
	Preprocessing       string    `json:"preprocessing"`
	ConfidenceThreshold float64   `json:"confidence_threshold"`
	Cached              bool      `json:"cached"`
	LatencyMS           float64   `json:"latency_ms"`
	Status              string    `json:"status"` // "completed"
	CreatedAt           time.Time `json:"created_at"`
	UpdatedAt           time.Time `json:"updated_at"`
}

// insertCols are the columns Insert writes, in the order of the COPY rows and unnest arrays.
var insertCols = []string{
	"request_id", "input_features", "prediction", "confidence", "prediction_class",
	"model_version", "preprocessing", "confidence_threshold", "cached", "user_id",
	"latency_ms", "created_at", "updated_at",
}

const selectCols = `id, request_id, input_features, prediction, confidence, prediction_class,
	model_version, preprocessing, confidence_threshold, cached, coalesce(user_id, ''), latency_ms,
	status, created_at, updated_at`

// Insert writes recs, skipping the records that are already stored, and returns how many rows
// it inserted: a replay of the same records inserts 0. Records with a zero CreatedAt get the
// current time.
//
// A record is the one already stored under its request id when their created_at match. A
// client may send the same X-Request-ID with two different predictions, though: when a
// request id is taken by another prediction, the record is stored under
// "<request id>~<created_at in µs, base 36>", a second statement (a replay of it, again,
// inserts nothing).
//
// On a pool, Insert first copies recs straight into predictions (copyDirect): one COPY, which
// stores every record or, failing, none. Only when it fails on a unique violation (a replay,
// a request id taken by another prediction, or one repeated within recs) does Insert write recs
// again through the conflict-handling path (INSERT … ON CONFLICT DO NOTHING, then the renamed
// records). On a transaction (or any DB that is not a pool) Insert takes that path directly,
// since a failed COPY would abort the transaction.
//
// Errors are Postgres errors (see postgres.IsUnavailable); when one is returned, the rows of
// a first statement may be stored, and a retry of the same records completes the rest.
func (s *Store) Insert(ctx context.Context, recs []Record) (int64, error) {
	if len(recs) == 0 {
		return 0, nil
	}
	if s.pool != nil {
		n, err := s.copyDirect(ctx, recs)
		if !postgres.IsCode(err, postgres.CodeUniqueViolation) {
			return n, err
		}
		// Nothing was stored: some request id is stored already, or repeats within recs.
	}
	n, err := s.insertOnce(ctx, recs)
	if err != nil || n == int64(len(recs)) {
		return n, err
	}
	// Some request ids were taken: by these records (a replay), or by other predictions.
	others, err := s.takenByOthers(ctx, recs)
	if err != nil || len(others) == 0 {
		return n, err
	}
	m, err := s.insertOnce(ctx, others)
	return n + m, err
}

// copyDirect copies recs into predictions in one COPY (pgx's CopyFrom), without ON CONFLICT:
// a COPY is atomic, so when a request id is stored already it fails with a unique violation
// (SQLSTATE 23505) and stores nothing. It is all that Insert costs for new predictions, the
// steady state, and one statement for any batch size.
func (s *Store) copyDirect(ctx context.Context, recs []Record) (int64, error) {
	n, err := s.pool.CopyFrom(ctx, predictionsTable, insertCols, copySource(recs, time.Now()))
	if err != nil {
		return 0, fmt.Errorf("insert predictions: copy: %w", err)
	}
	return n, nil
}

var predictionsTable = pgx.Identifier{"predictions"}

// insertOnce writes recs with ON CONFLICT (request_id) DO NOTHING.
func (s *Store) insertOnce(ctx context.Context, recs []Record) (int64, error) {
	if len(recs) == 0 {
		return 0, nil
	}
	if len(recs) < s.copyThreshold {
		return s.insertUnnest(ctx, recs)
	}
	return s.insertCopy(ctx, recs)
}

// takenByOthers returns, renamed (see Insert), the records whose request id is stored with
// another created_at; records stored already, and records with a zero CreatedAt (which
// cannot be told apart), are left out.
func (s *Store) takenByOthers(ctx context.Context, recs []Record) ([]Record, error) {
	ids := make([]string, len(recs))
	for i, r := range recs {
		ids[i] = r.RequestID
	}
	rows, err := s.db.Query(ctx, `SELECT request_id, created_at FROM predictions WHERE request_id = ANY($1)`, ids)
	if err != nil {
		return nil, fmt.Errorf("insert predictions: taken request ids: %w", err)
	}
	stored := map[string]time.Time{}
	var id string
	var at time.Time
	if _, err := pgx.ForEachRow(rows, []any{&id, &at}, func() error {
		stored[id] = at
		return nil
	}); err != nil {
		return nil, fmt.Errorf("insert predictions: taken request ids: %w", err)
	}
	var others []Record
	for _, r := range recs {
		at, ok := stored[r.RequestID]
		if !ok || r.CreatedAt.IsZero() || sameMicrosecond(at, r.CreatedAt) {
			continue
		}
		r.RequestID += "~" + strconv.FormatInt(r.CreatedAt.UnixMicro(), 36)
		others = append(others, r)
	}
	return others, nil
}

// sameMicrosecond reports whether a, read from Postgres (microseconds, rounded), is the
// stored form of b.
func sameMicrosecond(a, b time.Time) bool {
	d := a.Sub(b)
	return d < time.Microsecond && d > -time.Microsecond
}

// insertUnnestSQL inserts one row per array element. The features of all rows travel as one
// flat float8 array in binary, each row taking its slice by offset and length (unnest would
// flatten a two-dimensional array, and rows may differ in length): text array literals cost
// Postgres a float parse per feature, most of its CPU per row.
var insertUnnestSQL = `INSERT INTO predictions (` + strings.Join(insertCols, ", ") + `)
SELECT r, ($2::float8[])[o + 1:o + n], p, c, pc, mv, pp, ct, ca, nullif(u, ''), l, t, t
FROM unnest($1::text[], $3::int4[], $4::int4[], $5::float8[], $6::float8[], $7::text[], $8::text[], $9::text[],
            $10::float8[], $11::bool[], $12::text[], $13::float8[], $14::timestamptz[])
     AS x(r, o, n, p, c, pc, mv, pp, ct, ca, u, l, t)
ON CONFLICT (request_id) DO NOTHING`

func (s *Store) insertUnnest(ctx context.Context, recs []Record) (int64, error) {
	n := len(recs)
	var (
		rid   = make([]string, n)
		off   = make([]int32, n)
		cnt   = make([]int32, n)
		pred  = make([]float64, n)
		conf  = make([]float64, n)
		class = make([]string, n)
		mv    = make([]string, n)
		prep  = make([]string, n)
		thr   = make([]float64, n)
		cache = make([]bool, n)
		user  = make([]string, n)
		lat   = make([]float64, n)
		at    = make([]time.Time, n)
		feat  []float64
	)
	now := time.Now()
	for i, r := range recs {
		rid[i], pred[i], conf[i], class[i] = r.RequestID, r.Prediction, r.Confidence, r.PredictionClass
		mv[i], prep[i], thr[i], cache[i] = r.ModelVersion, r.Preprocessing, r.ConfidenceThreshold, r.Cached
		user[i], lat[i], at[i] = r.UserID, r.LatencyMS, r.CreatedAt
		if at[i].IsZero() {
			at[i] = now
		}
		off[i], cnt[i] = int32(len(feat)), int32(len(r.Features))
		feat = append(feat, r.Features...)
	}
	if feat == nil {
		feat = []float64{}
	}
	tag, err := s.db.Exec(ctx, insertUnnestSQL, rid, postgres.Float8s(feat), off, cnt, pred, conf, class, mv, prep, thr, cache, user, lat, at)
	if err != nil {
		return 0, fmt.Errorf("insert predictions: %w", err)
	}
	return tag.RowsAffected(), nil
}

// The staging table lives as long as the session (connection) and is emptied at each commit,
// so that steady traffic does not create and drop a catalog entry per batch.
const createStagingSQL = `CREATE TEMP TABLE IF NOT EXISTS predictions_staging (
    request_id text, input_features float8[], prediction float8, confidence float8,
    prediction_class text, model_version text, preprocessing text, confidence_threshold float8,
    cached bool, user_id text, latency_ms float8, created_at timestamptz, updated_at timestamptz
) ON COMMIT DELETE ROWS`

var moveStagingSQL = `INSERT INTO predictions (` + strings.Join(insertCols, ", ") + `)
SELECT ` + strings.Join(insertCols, ", ") + ` FROM predictions_staging
ON CONFLICT (request_id) DO NOTHING`

// copySource gives pgx's CopyFrom the values of recs in the order of insertCols (a zero
// CreatedAt is now, an empty user id NULL, no features an empty array): the rows of the direct
// COPY and of the staging table.
func copySource(recs []Record, now time.Time) pgx.CopyFromSource {
	return pgx.CopyFromSlice(len(recs), func(i int) ([]any, error) {
		r := recs[i]
		at := r.CreatedAt
		if at.IsZero() {
			at = now
		}
		var user any
		if r.UserID != "" {
			user = r.UserID
		}
		feats := postgres.Float8s(r.Features)
		if feats == nil {
			feats = postgres.Float8s{}
		}
		return []any{r.RequestID, feats, r.Prediction, r.Confidence, r.PredictionClass,
			r.ModelVersion, r.Preprocessing, r.ConfidenceThreshold, r.Cached, user, r.LatencyMS, at, at}, nil
	})
}

func (s *Store) insertCopy(ctx context.Context, recs []Record) (int64, error) {
	tx, err := s.db.Begin(ctx)
	if err != nil {
		return 0, fmt.Errorf("insert predictions: begin: %w", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // a no-op after Commit
	if _, err := tx.Exec(ctx, createStagingSQL); err != nil {
		return 0, fmt.Errorf("insert predictions: staging table: %w", err)
	}
	src := copySource(recs, time.Now())
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"predictions_staging"}, insertCols, src); err != nil {
		return 0, fmt.Errorf("insert predictions: copy: %w", err)
	}
	tag, err := tx.Exec(ctx, moveStagingSQL)
	if err != nil {
		return 0, fmt.Errorf("insert predictions: %w", err)
	}
	if err := tx.Commit(ctx); err != nil {
		return 0, fmt.Errorf("insert predictions: commit: %w", err)
	}
	return tag.RowsAffected(), nil
}

// ListFilter selects the predictions of List. Zero fields do not filter.
type ListFilter struct {
	UserID       string    // only this API key's predictions
	ModelVersion string    // exact version, e.g. v1.2.0
	From         time.Time // created_at >= From
	To           time.Time // created_at < To
	Limit        int       // page size: DefaultListLimit when <= 0, at most MaxListLimit
	Cursor       string    // NextCursor of the previous page; empty for the first page
}

// List returns one page of predictions, newest first (created_at, then id, descending), and
// the cursor of the next page ("" on the last page). Keyset pagination: a page is stable
// under concurrent inserts of newer rows. Errors: ErrInvalidCursor.
func (s *Store) List(ctx context.Context, f ListFilter) ([]Stored, string, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = DefaultListLimit
	}
	limit = min(limit, MaxListLimit)
	var (
		where []string
		args  []any
	)
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	if f.Cursor != "" {
		at, id, err := decodeCursor(f.Cursor)
		if err != nil {
			return nil, "", err
		}
		where = append(where, "(created_at, id) < ("+arg(at)+", "+arg(id)+")")
	}
	if f.UserID != "" {
		where = append(where, "user_id = "+arg(f.UserID))
	}
	if f.ModelVersion != "" {
		where = append(where, "model_version = "+arg(f.ModelVersion))
	}
	if !f.From.IsZero() {
		where = append(where, "created_at >= "+arg(f.From))
	}
	if !f.To.IsZero() {
		where = append(where, "created_at < "+arg(f.To))
	}
	q := "SELECT " + selectCols + " FROM predictions"
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	q += " ORDER BY created_at DESC, id DESC LIMIT " + arg(limit+1)
	rows, err := s.db.Query(ctx, q, args...)
	if err != nil {
		return nil, "", fmt.Errorf("list predictions: %w", err)
	}
	items, err := pgx.CollectRows(rows, scanPrediction)
	if err != nil {
		return nil, "", fmt.Errorf("list predictions: %w", err)
	}
	next := ""
	if len(items) > limit {
		items = items[:limit]
		last := items[limit-1]
		next = encodeCursor(last.CreatedAt, last.ID)
	}
	return items, next, nil
}

// Get returns the prediction whose id or request id is idOrRequestID. A string of digits is
// matched as an id first, then as a request id. Errors: ErrNotFound.
func (s *Store) Get(ctx context.Context, idOrRequestID string) (Stored, error) {
	var id *int64
	if n, err := strconv.ParseInt(idOrRequestID, 10, 64); err == nil && n > 0 {
		id = &n
	}
	rows, err := s.db.Query(ctx, "SELECT "+selectCols+` FROM predictions
		WHERE id = $1 OR request_id = $2 ORDER BY (id = $1) DESC NULLS LAST LIMIT 1`, id, idOrRequestID)
	if err != nil {
		return Stored{}, fmt.Errorf("get prediction: %w", err)
	}
	p, err := pgx.CollectExactlyOneRow(rows, scanPrediction)
	if errors.Is(err, pgx.ErrNoRows) {
		return Stored{}, fmt.Errorf("get prediction %q: %w", idOrRequestID, ErrNotFound)
	}
	if err != nil {
		return Stored{}, fmt.Errorf("get prediction: %w", err)
	}
	return p, nil
}

// Count returns the number of stored predictions (for tests and operators; a full scan).
func (s *Store) Count(ctx context.Context) (int64, error) {
	var n int64
	if err := s.db.QueryRow(ctx, "SELECT count(*) FROM predictions").Scan(&n); err != nil {
		return 0, fmt.Errorf("count predictions: %w", err)
	}
	return n, nil
}

// DeleteOlderThan deletes the predictions created before before and returns how many went.
// On a pool, the day partitions wholly before before whose rows are all older than before go
// first, each with one DROP TABLE (postgres.DropPartitionsBefore); the rest, in the
// partition that straddles before, in the default partition, or in a partition whose drop
// gave way to a lock, are deleted by rows, oldest first, a bounded batch per statement.
// (The partition of a day holds the ids of that day, and created_at is set with the id, so
// the check of created_at keeps only a row made at the edge of a day from dropping early.)
func (s *Store) DeleteOlderThan(ctx context.Context, before time.Time) (int64, error) {
	var dropped int64
	if s.pool != nil {
		n, err := postgres.DropPartitionsBefore(ctx, s.pool, "predictions", before, func(ctx context.Context, tx pgx.Tx, p postgres.Partition) (bool, error) {
			var younger bool
			err := tx.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM `+pgx.Identifier{p.Name}.Sanitize()+` WHERE created_at >= $1)`, before).Scan(&younger)
			return !younger, err
		})
		if err != nil {
			return n, fmt.Errorf("prediction: delete older than %s: %w", before.Format(time.RFC3339), err)
		}
		dropped = n
	}
	n, err := postgres.DeleteInBatches(ctx, s.db, `DELETE FROM predictions WHERE id IN (
		SELECT id FROM predictions WHERE created_at < $1 ORDER BY created_at LIMIT $2)`, before, 5000)
	if err != nil {
		return dropped + n, fmt.Errorf("prediction: delete older than %s: %w", before.Format(time.RFC3339), err)
	}
	return dropped + n, nil
}

func scanPrediction(row pgx.CollectableRow) (Stored, error) {
	var p Stored
	err := row.Scan(&p.ID, &p.RequestID, &p.Features, &p.Prediction, &p.Confidence, &p.PredictionClass,
		&p.ModelVersion, &p.Preprocessing, &p.ConfidenceThreshold, &p.Cached, &p.UserID, &p.LatencyMS,
		&p.Status, &p.CreatedAt, &p.UpdatedAt)
	p.CreatedAt, p.UpdatedAt = p.CreatedAt.UTC(), p.UpdatedAt.UTC()
	return p, err
}

// cursorVersion leads every cursor so that its format can change later.
const cursorVersion = 1

// encodeCursor packs (created_at in Unix microseconds, id) into an opaque URL-safe string.
// Postgres keeps microseconds, so the round trip is exact.
func encodeCursor(at time.Time, id int64) string {
	b := make([]byte, 0, 17)
	b = append(b, cursorVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(at.UnixMicro()))
	b = binary.BigEndian.AppendUint64(b, uint64(id))
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(c string) (time.Time, int64, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) != 17 || b[0] != cursorVersion {
		return time.Time{}, 0, fmt.Errorf("%w: %q", ErrInvalidCursor, truncate(c, 40))
	}
	at := time.UnixMicro(int64(binary.BigEndian.Uint64(b[1:9]))).UTC()
	id := int64(binary.BigEndian.Uint64(b[9:]))
	return at, id, nil
}
