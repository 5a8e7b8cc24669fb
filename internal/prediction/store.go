// The Store is the Postgres store of answered synchronous predictions: the bulk, idempotent
// write of the Recorders and of the persist worker, and the read side of
// GET /api/v1/predictions.
//
// Writes are keyed by the server's id of each prediction (the primary key; see NewID), so a
// replayed batch writes nothing twice; the client's request id is a correlation column, which
// the reads find too. A batch is first copied straight into predictions (one COPY, no ON
// CONFLICT), which is all that a batch of new predictions costs; a COPY is atomic, and when it
// fails on an id that is stored already, the batch goes again through the conflict-handling path:
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

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
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
	ID                  uuid.UUID `json:"id"`         // the server's id (NewID), the row's key
	RequestID           string    `json:"request_id"` // the client's X-Request-ID, not unique; batch samples have REQUEST-ID-<index>
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
	"id", "request_id", "input_features", "prediction", "confidence", "prediction_class",
	"model_version", "preprocessing", "confidence_threshold", "cached", "user_id",
	"latency_ms", "created_at", "updated_at",
}

const selectCols = `id, request_id, input_features, prediction, confidence, prediction_class,
	model_version, preprocessing, confidence_threshold, cached, coalesce(user_id, ''), latency_ms,
	status, created_at, updated_at`

// Insert writes recs, skipping the records that are already stored (by id), and returns how
// many rows it inserted: a replay of the same records inserts 0. Records with a zero CreatedAt
// get the current time, records with a zero ID their DerivedID (from the request id and
// CreatedAt, so that a replay of such a record is skipped too). Request ids are not keys: two
// records with the same request id and different ids are two rows.
//
// On a pool, Insert first copies recs straight into predictions (copyDirect): one COPY, which
// stores every record or, failing, none. Only when it fails on a unique violation (a replay,
// or an id repeated within recs) does Insert write recs again through the conflict-handling
// path (INSERT … ON CONFLICT (id) DO NOTHING). On a transaction (or any DB that is not a pool)
// Insert takes that path directly, since a failed COPY would abort the transaction.
//
// Errors are Postgres errors (see postgres.IsUnavailable); when one is returned, nothing is
// stored, and a retry of the same records stores them once.
func (s *Store) Insert(ctx context.Context, recs []Record) (int64, error) {
	if len(recs) == 0 {
		return 0, nil
	}
	recs = withKeys(recs, time.Now())
	if s.pool != nil {
		n, err := s.copyDirect(ctx, recs)
		if !postgres.IsCode(err, postgres.CodeUniqueViolation) {
			return n, err
		}
		// Nothing was stored: some id is stored already, or repeats within recs.
	}
	return s.insertOnce(ctx, recs)
}

// withKeys returns recs with every CreatedAt and ID set (now, DerivedID), copying recs only
// when one of them lacks either.
func withKeys(recs []Record, now time.Time) []Record {
	complete := true
	for _, r := range recs {
		if r.CreatedAt.IsZero() || r.ID == uuid.Nil {
			complete = false
			break
		}
	}
	if complete {
		return recs
	}
	out := make([]Record, len(recs))
	for i, r := range recs {
		if r.CreatedAt.IsZero() {
			r.CreatedAt = now
		}
		if r.ID == uuid.Nil {
			r.ID = DerivedID(r.RequestID, r.CreatedAt)
		}
		out[i] = r
	}
	return out
}

// copyDirect copies recs into predictions in one COPY (pgx's CopyFrom), without ON CONFLICT:
// a COPY is atomic, so when an id is stored already it fails with a unique violation
// (SQLSTATE 23505) and stores nothing. It is all that Insert costs for new predictions, the
// steady state, and one statement for any batch size.
func (s *Store) copyDirect(ctx context.Context, recs []Record) (int64, error) {
	n, err := s.pool.CopyFrom(ctx, predictionsTable, insertCols, copySource(recs))
	if err != nil {
		return 0, fmt.Errorf("insert predictions: copy: %w", err)
	}
	return n, nil
}

var predictionsTable = pgx.Identifier{"predictions"}

// pgUUID is id as pgx encodes it in binary without a detour: a uuid.UUID is a driver.Valuer,
// which pgx would call, then parse the string it returns (two allocations a row).
func pgUUID(id uuid.UUID) pgtype.UUID { return pgtype.UUID{Bytes: id, Valid: true} }

// insertOnce writes recs with ON CONFLICT (id) DO NOTHING.
func (s *Store) insertOnce(ctx context.Context, recs []Record) (int64, error) {
	if len(recs) < s.copyThreshold {
		return s.insertUnnest(ctx, recs)
	}
	return s.insertCopy(ctx, recs)
}

// insertUnnestSQL inserts one row per array element. The features of all rows travel as one
// flat float8 array in binary, each row taking its slice by offset and length (unnest would
// flatten a two-dimensional array, and rows may differ in length): text array literals cost
// Postgres a float parse per feature, most of its CPU per row.
var insertUnnestSQL = `INSERT INTO predictions (` + strings.Join(insertCols, ", ") + `)
SELECT id, r, ($2::float8[])[o + 1:o + n], p, c, pc, mv, pp, ct, ca, nullif(u, ''), l, t, t
FROM unnest($1::text[], $3::int4[], $4::int4[], $5::float8[], $6::float8[], $7::text[], $8::text[], $9::text[],
            $10::float8[], $11::bool[], $12::text[], $13::float8[], $14::timestamptz[], $15::uuid[])
     AS x(r, o, n, p, c, pc, mv, pp, ct, ca, u, l, t, id)
ON CONFLICT (id) DO NOTHING`

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
		ids   = make([]pgtype.UUID, n)
		feat  []float64
	)
	for i, r := range recs {
		rid[i], pred[i], conf[i], class[i] = r.RequestID, r.Prediction, r.Confidence, r.PredictionClass
		mv[i], prep[i], thr[i], cache[i] = r.ModelVersion, r.Preprocessing, r.ConfidenceThreshold, r.Cached
		user[i], lat[i], at[i], ids[i] = r.UserID, r.LatencyMS, r.CreatedAt, pgUUID(r.ID)
		off[i], cnt[i] = int32(len(feat)), int32(len(r.Features))
		feat = append(feat, r.Features...)
	}
	if feat == nil {
		feat = []float64{}
	}
	tag, err := s.db.Exec(ctx, insertUnnestSQL, rid, postgres.Float8s(feat), off, cnt, pred, conf, class, mv, prep, thr, cache, user, lat, at, ids)
	if err != nil {
		return 0, fmt.Errorf("insert predictions: %w", err)
	}
	return tag.RowsAffected(), nil
}

// The staging table lives as long as the session (connection) and is emptied at each commit,
// so that steady traffic does not create and drop a catalog entry per batch.
const createStagingSQL = `CREATE TEMP TABLE IF NOT EXISTS predictions_staging (
    id uuid, request_id text, input_features float8[], prediction float8, confidence float8,
    prediction_class text, model_version text, preprocessing text, confidence_threshold float8,
    cached bool, user_id text, latency_ms float8, created_at timestamptz, updated_at timestamptz
) ON COMMIT DELETE ROWS`

var moveStagingSQL = `INSERT INTO predictions (` + strings.Join(insertCols, ", ") + `)
SELECT ` + strings.Join(insertCols, ", ") + ` FROM predictions_staging
ON CONFLICT (id) DO NOTHING`

// copySource gives pgx's CopyFrom the values of recs (withKeys: every ID and CreatedAt set) in
// the order of insertCols (an empty user id NULL, no features an empty array): the rows of the
// direct COPY and of the staging table.
func copySource(recs []Record) pgx.CopyFromSource {
	return pgx.CopyFromSlice(len(recs), func(i int) ([]any, error) {
		r := recs[i]
		at := r.CreatedAt
		var user any
		if r.UserID != "" {
			user = r.UserID
		}
		feats := postgres.Float8s(r.Features)
		if feats == nil {
			feats = postgres.Float8s{}
		}
		return []any{pgUUID(r.ID), r.RequestID, feats, r.Prediction, r.Confidence, r.PredictionClass,
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
	src := copySource(recs)
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
	RequestID    string    // only the predictions sent with this X-Request-ID
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
	if f.RequestID != "" {
		where = append(where, "request_id = "+arg(f.RequestID))
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

// Get returns the prediction of tenant (its user id; "" is the predictions stored without
// one) whose id is idOrRequestID, else the newest (by created_at, then id) of its predictions
// whose request id is idOrRequestID: a client may send one X-Request-ID with several
// predictions, and ListFilter.RequestID lists them all. The tenant is part of the query, so
// that another tenant's prediction with the same request id never shadows the tenant's own.
// Errors: ErrNotFound.
func (s *Store) Get(ctx context.Context, tenant, idOrRequestID string) (Stored, error) {
	var id *uuid.UUID
	if u, err := uuid.Parse(idOrRequestID); err == nil {
		id = &u
	}
	q := getByTenantSQL
	if tenant == "" {
		q = getWithoutTenantSQL
	}
	rows, err := s.db.Query(ctx, q, tenant, id, idOrRequestID)
	if err != nil {
		return Stored{}, fmt.Errorf("get prediction: %w", err)
	}
	p, err := pgx.CollectExactlyOneRow(rows, scanPrediction)
	if errors.Is(err, pgx.ErrNoRows) {
		return Stored{}, fmt.Errorf("get prediction %q: %w", truncate(idOrRequestID, 40), ErrNotFound)
	}
	if err != nil {
		return Stored{}, fmt.Errorf("get prediction: %w", err)
	}
	return p, nil
}

// getSQL is the query of Get: two branches, each served by an index (the primary key;
// (user_id, request_id, created_at, id)), the match by id first. USER is the tenant's
// condition: $1 is the tenant.
const getSQL = `SELECT ` + selectCols + ` FROM (
	(SELECT 0 AS rank, * FROM predictions WHERE id = $2 AND USER)
	UNION ALL
	(SELECT 1, * FROM predictions WHERE USER AND request_id = $3 ORDER BY created_at DESC, id DESC LIMIT 1)
) AS p ORDER BY rank LIMIT 1`

var (
	getByTenantSQL      = strings.ReplaceAll(getSQL, "USER", "user_id = $1")
	getWithoutTenantSQL = strings.ReplaceAll(getSQL, "USER", "user_id IS NULL AND $1::text = ''")
)

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
// The labels of the predictions that go (internal/label) go with them: their partitions with
// the predictions' (postgres.Companions), their rows with the rows.
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
	// The labels of the rows go in the same statement (they have no foreign key: see
	// migrations/00022_labels.sql).
	n, err := postgres.DeleteInBatches(ctx, s.db, `WITH gone AS MATERIALIZED (
			SELECT id FROM predictions WHERE created_at < $1 ORDER BY created_at LIMIT $2),
		labels AS (DELETE FROM prediction_labels WHERE prediction_id IN (SELECT id FROM gone)),
		history AS (DELETE FROM prediction_label_history WHERE prediction_id IN (SELECT id FROM gone))
		DELETE FROM predictions WHERE id IN (SELECT id FROM gone)`, before, 5000)
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

// cursorVersion leads every cursor so that its format can change later. Version 1 held a
// bigint id, which migration 00018 replaced: its cursors are refused.
const cursorVersion = 2

// cursorLen is a cursor's length in bytes: its version, created_at, id.
const cursorLen = 1 + 8 + 16

// encodeCursor packs (created_at in Unix microseconds, id) into an opaque URL-safe string.
// Postgres keeps microseconds, so the round trip is exact.
func encodeCursor(at time.Time, id uuid.UUID) string {
	b := make([]byte, 0, cursorLen)
	b = append(b, cursorVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(at.UnixMicro()))
	b = append(b, id[:]...)
	return base64.RawURLEncoding.EncodeToString(b)
}

func decodeCursor(c string) (time.Time, uuid.UUID, error) {
	b, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil || len(b) != cursorLen || b[0] != cursorVersion {
		return time.Time{}, uuid.Nil, fmt.Errorf("%w: %q", ErrInvalidCursor, truncate(c, 40))
	}
	at := time.UnixMicro(int64(binary.BigEndian.Uint64(b[1:9]))).UTC()
	id := uuid.UUID(b[9:])
	return at, id, nil
}
