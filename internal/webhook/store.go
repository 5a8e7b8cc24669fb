package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/predq/predq/internal/postgres"
)

// ErrNotFound: no webhook delivery has that id (or the job has no delivery).
var ErrNotFound = errors.New("webhook delivery not found")

// Status is the state of a delivery: pending, then delivered or failed, exactly once.
type Status string

// Delivery statuses (the CHECK of webhook_deliveries.status).
const (
	StatusPending   Status = "pending"
	StatusDelivered Status = "delivered"
	StatusFailed    Status = "failed"
)

// maxErrorLen bounds the error text stored per attempt.
const maxErrorLen = 1000

// deliveryNamespace is the UUIDv5 namespace of DeliveryID.
var deliveryNamespace = uuid.MustParse("5b0d3c6e-8f0a-4f59-9a53-3f1f6a0c7e21")

// DeliveryID returns the deterministic id of the delivery of a job's event (a UUIDv5 of the
// job id and the event type): a replayed terminal transition computes the same id, and
// Store.Create's ON CONFLICT DO NOTHING makes it create no second delivery.
func DeliveryID(jobID uuid.UUID, eventType string) uuid.UUID {
	return uuid.NewSHA1(deliveryNamespace, append(jobID[:], eventType...))
}

// Delivery is one webhook delivery: what to send (ID, JobID, EventType, URL, Payload, set by
// the creator) and its state (the other fields, filled by Store.Get and ignored by
// Store.Create).
type Delivery struct {
	ID        uuid.UUID       // the webhook-id header; see DeliveryID
	JobID     uuid.UUID       // uuid.Nil: not tied to a job (NULL)
	EventType string          // e.g. EventJobSucceeded
	URL       string          // the receiver
	Payload   json.RawMessage // the request body, e.g. a marshalled Event; stored as jsonb

	Status      Status
	Attempts    int        // attempts recorded
	LastStatus  int        // HTTP status of the last attempt; 0 when it had no response
	LastError   string     // why the last attempt did not deliver; "" when it did
	EnqueuedAt  *time.Time // last MarkEnqueued
	CreatedAt   time.Time
	DeliveredAt *time.Time
	UpdatedAt   time.Time
}

// Summary is the delivery state shown in the job object ("webhook").
type Summary struct {
	URL         string     `json:"url"`
	Status      Status     `json:"status"`
	Attempts    int        `json:"attempts"`
	LastStatus  *int       `json:"last_status,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	DeliveredAt *time.Time `json:"delivered_at,omitempty"`
}

// Store reads and writes webhook_deliveries and webhook_attempts.
type Store struct {
	db  postgres.DBTX
	now func() time.Time
}

// NewStore returns a Store over db (a pool). now is the clock of the created_at, updated_at
// and enqueued_at columns and of Pending (nil: time.Now).
func NewStore(db postgres.DBTX, now func() time.Time) *Store {
	if now == nil {
		now = time.Now
	}
	return &Store{db: db, now: now}
}

// Create records d in db, which is meant to be the transaction that moves the job to its
// terminal state (nil: the Store's own db). It is idempotent on d.ID (ON CONFLICT (id) DO
// NOTHING): creating the same id twice leaves the first delivery as it is. When d.ID is
// uuid.Nil it is DeliveryID(d.JobID, d.EventType). It refuses (plain errors) a delivery
// without URL or event type, a payload that is not a JSON object, and a nil id without job.
// A JobID that names no job fails with a foreign-key violation.
func (s *Store) Create(ctx context.Context, db postgres.DBTX, d Delivery) error {
	if db == nil {
		db = s.db
	}
	if d.ID == uuid.Nil {
		if d.JobID == uuid.Nil {
			return errors.New("webhook: create delivery: an id or a job id is required")
		}
		d.ID = DeliveryID(d.JobID, d.EventType)
	}
	switch {
	case d.URL == "":
		return fmt.Errorf("webhook: create delivery %s: empty URL", d.ID)
	case d.EventType == "":
		return fmt.Errorf("webhook: create delivery %s: empty event type", d.ID)
	case !isJSONObject(d.Payload):
		return fmt.Errorf("webhook: create delivery %s: payload is not a JSON object", d.ID)
	}
	now := s.now()
	_, err := db.Exec(ctx, `
		INSERT INTO webhook_deliveries (id, job_id, event_type, url, payload, created_at, updated_at)
		VALUES ($1, $2, $3, $4, $5, $6, $6)
		ON CONFLICT (id) DO NOTHING`,
		d.ID, nullUUID(d.JobID), d.EventType, d.URL, []byte(d.Payload), now)
	if err != nil {
		return fmt.Errorf("webhook: create delivery %s: %w", d.ID, err)
	}
	return nil
}

// CreateDelivery is Create for a job's event with its deterministic id, in tx; it returns the
// id. It has the shape of the jobs code's Notifier.
func (s *Store) CreateDelivery(ctx context.Context, tx pgx.Tx, jobID uuid.UUID, eventType, url string, payload json.RawMessage) (uuid.UUID, error) {
	id := DeliveryID(jobID, eventType)
	if err := s.Create(ctx, tx, Delivery{ID: id, JobID: jobID, EventType: eventType, URL: url, Payload: payload}); err != nil {
		return uuid.Nil, err
	}
	return id, nil
}

const deliveryColumns = `id, job_id, event_type, url, payload, status, attempts, last_status,
	last_error, enqueued_at, created_at, delivered_at, updated_at`

func scanDelivery(row pgx.Row, extra ...any) (Delivery, error) {
	var (
		d          Delivery
		jobID      uuid.NullUUID
		payload    []byte
		lastStatus *int32
		lastError  *string
	)
	dest := append([]any{&d.ID, &jobID, &d.EventType, &d.URL, &payload, &d.Status, &d.Attempts,
		&lastStatus, &lastError, &d.EnqueuedAt, &d.CreatedAt, &d.DeliveredAt, &d.UpdatedAt}, extra...)
	if err := row.Scan(dest...); err != nil {
		return Delivery{}, err
	}
	if jobID.Valid {
		d.JobID = jobID.UUID
	}
	if lastStatus != nil {
		d.LastStatus = int(*lastStatus)
	}
	if lastError != nil {
		d.LastError = *lastError
	}
	// jsonb's text form has spaces after ':' and ','; send compact JSON.
	var buf bytes.Buffer
	if err := json.Compact(&buf, payload); err == nil {
		payload = buf.Bytes()
	}
	d.Payload = payload
	return d, nil
}

// Get returns the delivery with that id, or an error matching ErrNotFound.
func (s *Store) Get(ctx context.Context, id uuid.UUID) (Delivery, error) {
	d, err := scanDelivery(s.db.QueryRow(ctx, `SELECT `+deliveryColumns+` FROM webhook_deliveries WHERE id = $1`, id))
	if errors.Is(err, pgx.ErrNoRows) {
		return Delivery{}, fmt.Errorf("webhook: get delivery %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Delivery{}, fmt.Errorf("webhook: get delivery %s: %w", id, err)
	}
	return d, nil
}

// load is Get, and whether attempt number attempt is already recorded.
func (s *Store) load(ctx context.Context, id uuid.UUID, attempt int) (Delivery, bool, error) {
	var recorded bool
	d, err := scanDelivery(s.db.QueryRow(ctx, `SELECT `+deliveryColumns+`,
			EXISTS (SELECT 1 FROM webhook_attempts WHERE delivery_id = $1 AND attempt = $2)
		FROM webhook_deliveries WHERE id = $1`, id, attempt), &recorded)
	if errors.Is(err, pgx.ErrNoRows) {
		return Delivery{}, false, fmt.Errorf("webhook: get delivery %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Delivery{}, false, fmt.Errorf("webhook: get delivery %s: %w", id, err)
	}
	return d, recorded, nil
}

// RecordAttempt records attempt number attempt (1, 2, …) of delivery id with its result: a
// webhook_attempts row and, while the delivery is pending, on the delivery attempts+1,
// last_status, last_error and its new status (delivered, with delivered_at = r.At; failed; or
// still pending after a retryable outcome). A delivery that is already delivered or failed
// stays as it is (only the attempt row is added). An attempt number already recorded is a
// no-op: a replayed task records nothing twice. It returns an error matching ErrNotFound
// when the delivery does not exist.
func (s *Store) RecordAttempt(ctx context.Context, id uuid.UUID, attempt int, r Result) error {
	if attempt < 1 {
		return fmt.Errorf("webhook: record attempt %d of %s: attempt numbers start at 1", attempt, id)
	}
	var status Status
	switch r.Outcome {
	case OutcomeDelivered:
		status = StatusDelivered
	case OutcomeFailed:
		status = StatusFailed
	case OutcomeRetry:
		status = StatusPending
	default:
		return fmt.Errorf("webhook: record attempt %d of %s: unknown outcome %q", attempt, id, r.Outcome)
	}
	var code *int
	if r.StatusCode != 0 {
		code = &r.StatusCode
	}
	var errText *string
	if r.Err != nil {
		t := truncate(r.Err.Error(), maxErrorLen)
		errText = &t
	}
	at := r.At
	if at.IsZero() {
		at = s.now()
	}
	_, err := s.db.Exec(ctx, `
		WITH ins AS (
			INSERT INTO webhook_attempts (delivery_id, attempt, status_code, error, duration_ms, at)
			VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (delivery_id, attempt) DO NOTHING
			RETURNING delivery_id
		)
		UPDATE webhook_deliveries d SET
			attempts     = d.attempts + 1,
			last_status  = $3,
			last_error   = $4,
			status       = $7::text,
			delivered_at = CASE WHEN $7::text = 'delivered' THEN $6 END,
			updated_at   = $8
		FROM ins
		WHERE d.id = ins.delivery_id AND d.status = 'pending'`,
		id, attempt, code, errText, float64(r.Duration)/float64(time.Millisecond), at, string(status), s.now())
	if postgres.IsCode(err, postgres.CodeForeignKeyViolation) {
		return fmt.Errorf("webhook: record attempt %d of %s: %w", attempt, id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("webhook: record attempt %d of %s: %w", attempt, id, err)
	}
	return nil
}

// MarkEnqueued notes that a webhook:deliver task for the delivery was handed to the queue
// (enqueued_at and updated_at = now), so that Pending leaves it alone for a while. It returns
// an error matching ErrNotFound when the delivery does not exist.
func (s *Store) MarkEnqueued(ctx context.Context, id uuid.UUID) error {
	now := s.now()
	tag, err := s.db.Exec(ctx, `UPDATE webhook_deliveries SET enqueued_at = $2, updated_at = $2 WHERE id = $1`, id, now)
	if err != nil {
		return fmt.Errorf("webhook: mark enqueued %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("webhook: mark enqueued %s: %w", id, ErrNotFound)
	}
	return nil
}

// Pending returns, oldest first, the ids of at most limit (≤ 0: 100) pending deliveries with
// no activity for olderThan: not created, enqueued (MarkEnqueued) or attempted
// (RecordAttempt) since now-olderThan. The reconciler enqueues them again; a delivery whose
// task is still queued or waiting for its retry is harmless to enqueue again (the task id is
// the delivery id). Choose olderThan above the longest retry delay plus an attempt (BackoffMax
// + DefaultTimeout) to leave those alone.
func (s *Store) Pending(ctx context.Context, olderThan time.Duration, limit int) ([]uuid.UUID, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := s.db.Query(ctx, `
		SELECT id FROM webhook_deliveries
		WHERE status = 'pending' AND updated_at < $1
		ORDER BY created_at, id
		LIMIT $2`, s.now().Add(-olderThan), limit)
	if err != nil {
		return nil, fmt.Errorf("webhook: pending deliveries: %w", err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[uuid.UUID])
	if err != nil {
		return nil, fmt.Errorf("webhook: pending deliveries: %w", err)
	}
	return ids, nil
}

// DeleteOlderThan deletes the finished (delivered or failed) deliveries created before
// before, with their attempts, and returns how many went; pending ones are kept, since the
// reconciler still drives them. A job's deliveries also go with the job (ON DELETE CASCADE).
func (s *Store) DeleteOlderThan(ctx context.Context, before time.Time) (int64, error) {
	n, err := postgres.DeleteInBatches(ctx, s.db, `DELETE FROM webhook_deliveries WHERE id IN (
		SELECT id FROM webhook_deliveries WHERE status <> 'pending' AND created_at < $1 LIMIT $2)`, before, deleteBatch)
	if err != nil {
		return n, fmt.Errorf("webhook: delete deliveries older than %s: %w", before.Format(time.RFC3339), err)
	}
	return n, nil
}

// deleteBatch is the number of rows one DELETE of DeleteOlderThan removes.
const deleteBatch = 5000

// ForJob returns the state of the job's webhook delivery (its latest, should there be more
// than one), or an error matching ErrNotFound when the job has none.
func (s *Store) ForJob(ctx context.Context, jobID uuid.UUID) (Summary, error) {
	m, err := s.ForJobs(ctx, []uuid.UUID{jobID})
	if err != nil {
		return Summary{}, err
	}
	sum, ok := m[jobID]
	if !ok {
		return Summary{}, fmt.Errorf("webhook: delivery of job %s: %w", jobID, ErrNotFound)
	}
	return sum, nil
}

// ForJobs is ForJob for several jobs in one round trip (a page of the job list): the map has
// an entry for each job that has a delivery.
func (s *Store) ForJobs(ctx context.Context, jobIDs []uuid.UUID) (map[uuid.UUID]Summary, error) {
	out := make(map[uuid.UUID]Summary, len(jobIDs))
	if len(jobIDs) == 0 {
		return out, nil
	}
	rows, err := s.db.Query(ctx, `
		SELECT DISTINCT ON (job_id) job_id, url, status, attempts, last_status, last_error, delivered_at
		FROM webhook_deliveries
		WHERE job_id = ANY($1)
		ORDER BY job_id, created_at DESC, id DESC`, jobIDs)
	if err != nil {
		return nil, fmt.Errorf("webhook: deliveries of jobs: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			jobID      uuid.UUID
			sum        Summary
			lastStatus *int32
			lastError  *string
		)
		if err := rows.Scan(&jobID, &sum.URL, &sum.Status, &sum.Attempts, &lastStatus, &lastError, &sum.DeliveredAt); err != nil {
			return nil, fmt.Errorf("webhook: deliveries of jobs: %w", err)
		}
		if lastStatus != nil {
			v := int(*lastStatus)
			sum.LastStatus = &v
		}
		if lastError != nil {
			sum.LastError = *lastError
		}
		out[jobID] = sum
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("webhook: deliveries of jobs: %w", err)
	}
	return out, nil
}

func nullUUID(id uuid.UUID) uuid.NullUUID {
	return uuid.NullUUID{UUID: id, Valid: id != uuid.Nil}
}

func isJSONObject(b []byte) bool {
	b = bytes.TrimSpace(b)
	return len(b) > 0 && b[0] == '{' && json.Valid(b)
}

// truncate cuts s to at most n bytes on a rune boundary, with invalid UTF-8 replaced and
// control characters (NUL, which Postgres text refuses, among them) dropped.
func truncate(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) && r != '\t' && r != '\n' {
			return -1
		}
		return r
	}, strings.ToValidUTF8(s, "\uFFFD"))
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
