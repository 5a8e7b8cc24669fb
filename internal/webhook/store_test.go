package webhook_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/pgtest"
	"github.com/predq/predq/internal/postgres"
	"github.com/predq/predq/internal/webhook"
)

type storeBundle struct {
	pool  *pgxpool.Pool
	clock *clock
}

func setupStore(t *testing.T) (*webhook.Store, storeBundle) {
	t.Helper()
	b := storeBundle{pool: pgtest.New(t), clock: newClock()}
	return webhook.NewStore(b.pool, b.clock.Now), b
}

// insertJob is the factory of jobs rows (the deliveries' foreign key).
func insertJob(t *testing.T, pool *pgxpool.Pool) uuid.UUID {
	t.Helper()
	id := uuid.Must(uuid.NewV7())
	_, err := pool.Exec(context.Background(), `
		INSERT INTO jobs (id, owner, owner_name, model_version, preprocessing, confidence_threshold,
			chunk_size, input_format, deadline_at)
		VALUES ($1, 'key-1', 'test', 'v1.0.0', 'standard', 0.5, 100, 'json', now() + interval '1 hour')`, id)
	require.NoError(t, err)
	return id
}

type attemptRow struct {
	Attempt    int
	StatusCode *int32
	Error      *string
	DurationMS float64
	At         time.Time
}

func attempts(t *testing.T, pool *pgxpool.Pool, id uuid.UUID) []attemptRow {
	t.Helper()
	rows, err := pool.Query(context.Background(), `
		SELECT attempt, status_code, error, duration_ms, at FROM webhook_attempts
		WHERE delivery_id = $1 ORDER BY attempt`, id)
	require.NoError(t, err)
	out, err := pgx.CollectRows(rows, pgx.RowToStructByPos[attemptRow])
	require.NoError(t, err)
	return out
}

func TestStore(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("CreateAndGet", func(t *testing.T) {
		t.Parallel()
		s, b := setupStore(t)
		d := delivery(t, insertJob(t, b.pool), "https://hooks.example.com/predq?token=x")
		require.NoError(t, s.Create(ctx, nil, d))

		got, err := s.Get(ctx, d.ID)
		require.NoError(t, err)
		require.Equal(t, d.ID, got.ID)
		require.Equal(t, d.JobID, got.JobID)
		require.Equal(t, d.EventType, got.EventType)
		require.Equal(t, d.URL, got.URL)
		require.JSONEq(t, string(d.Payload), string(got.Payload))
		require.True(t, json.Valid(got.Payload))
		require.NotContains(t, string(got.Payload), ": ", "compact JSON, not jsonb's text form")
		require.Equal(t, webhook.StatusPending, got.Status)
		require.Zero(t, got.Attempts)
		require.Zero(t, got.LastStatus)
		require.Empty(t, got.LastError)
		require.Nil(t, got.EnqueuedAt)
		require.Nil(t, got.DeliveredAt)
		require.True(t, got.CreatedAt.Equal(b.clock.Now()))
	})

	t.Run("CreateIsIdempotentOnID", func(t *testing.T) {
		t.Parallel()
		s, b := setupStore(t)
		job := insertJob(t, b.pool)
		d := delivery(t, job, "https://hooks.example.com/a")
		// A replayed terminal transition: same deterministic id, in a transaction each time.
		for range 2 {
			require.NoError(t, postgres.WithTx(ctx, b.pool, func(tx pgx.Tx) error {
				return s.Create(ctx, tx, d)
			}))
		}
		again := d
		again.URL = "https://hooks.example.com/b"
		require.NoError(t, s.Create(ctx, nil, again))

		var n int
		require.NoError(t, b.pool.QueryRow(ctx, `SELECT count(*) FROM webhook_deliveries WHERE job_id = $1`, job).Scan(&n))
		require.Equal(t, 1, n)
		got, err := s.Get(ctx, d.ID)
		require.NoError(t, err)
		require.Equal(t, "https://hooks.example.com/a", got.URL, "the first delivery stays as it was")
	})

	t.Run("CreateRolledBackWithTheJobTransaction", func(t *testing.T) {
		t.Parallel()
		s, b := setupStore(t)
		d := delivery(t, insertJob(t, b.pool), "https://hooks.example.com/a")
		boom := errors.New("terminal transition failed")
		err := postgres.WithTx(ctx, b.pool, func(tx pgx.Tx) error {
			require.NoError(t, s.Create(ctx, tx, d))
			return boom
		})
		require.ErrorIs(t, err, boom)
		_, err = s.Get(ctx, d.ID)
		require.ErrorIs(t, err, webhook.ErrNotFound)
	})

	t.Run("CreateDeliveryForJob", func(t *testing.T) {
		t.Parallel()
		s, b := setupStore(t)
		job := insertJob(t, b.pool)
		payload := delivery(t, job, "").Payload
		var ids []uuid.UUID
		for range 2 {
			require.NoError(t, postgres.WithTx(ctx, b.pool, func(tx pgx.Tx) error {
				id, err := s.CreateDelivery(ctx, tx, job, webhook.EventJobSucceeded, "https://hooks.example.com/a", payload)
				ids = append(ids, id)
				return err
			}))
		}
		require.Equal(t, webhook.DeliveryID(job, webhook.EventJobSucceeded), ids[0])
		require.Equal(t, ids[0], ids[1])
		_, err := s.Get(ctx, ids[0])
		require.NoError(t, err)
	})

	t.Run("CreateDerivesMissingID", func(t *testing.T) {
		t.Parallel()
		s, b := setupStore(t)
		d := delivery(t, insertJob(t, b.pool), "https://hooks.example.com/a")
		d.ID = uuid.Nil
		require.NoError(t, s.Create(ctx, nil, d))
		_, err := s.Get(ctx, webhook.DeliveryID(d.JobID, d.EventType))
		require.NoError(t, err)
	})

	t.Run("CreateWithoutJob", func(t *testing.T) {
		t.Parallel()
		s, _ := setupStore(t)
		d := delivery(t, uuid.Nil, "https://hooks.example.com/a")
		d.ID = uuid.New()
		require.NoError(t, s.Create(ctx, nil, d))
		got, err := s.Get(ctx, d.ID)
		require.NoError(t, err)
		require.Equal(t, uuid.Nil, got.JobID)
	})

	t.Run("CreateRefusesBadDeliveries", func(t *testing.T) {
		t.Parallel()
		s, b := setupStore(t)
		good := delivery(t, insertJob(t, b.pool), "https://hooks.example.com/a")
		for name, mutate := range map[string]func(*webhook.Delivery){
			"NoURL":          func(d *webhook.Delivery) { d.URL = "" },
			"NoEventType":    func(d *webhook.Delivery) { d.EventType = "" },
			"PayloadNotJSON": func(d *webhook.Delivery) { d.Payload = json.RawMessage(`{"a":`) },
			"PayloadArray":   func(d *webhook.Delivery) { d.Payload = json.RawMessage(`[]`) },
			"NoIDNoJob":      func(d *webhook.Delivery) { d.ID, d.JobID = uuid.Nil, uuid.Nil },
			"UnknownJob":     func(d *webhook.Delivery) { d.JobID = uuid.New() },
		} {
			d := good
			mutate(&d)
			require.Error(t, s.Create(ctx, nil, d), name)
		}
	})

	t.Run("GetMissing", func(t *testing.T) {
		t.Parallel()
		s, _ := setupStore(t)
		_, err := s.Get(ctx, uuid.New())
		require.ErrorIs(t, err, webhook.ErrNotFound)
	})

	t.Run("RecordAttempt", func(t *testing.T) {
		t.Parallel()
		s, b := setupStore(t)
		d := delivery(t, insertJob(t, b.pool), "https://hooks.example.com/a")
		require.NoError(t, s.Create(ctx, nil, d))
		t0 := b.clock.Now()

		retry := webhook.Result{Outcome: webhook.OutcomeRetry, StatusCode: 503, Err: errors.New("receiver answered 503 Service Unavailable"), At: t0, Duration: 42 * time.Millisecond}
		require.NoError(t, s.RecordAttempt(ctx, d.ID, 1, retry))
		require.NoError(t, s.RecordAttempt(ctx, d.ID, 1, webhook.Result{Outcome: webhook.OutcomeDelivered, StatusCode: 200, At: t0}), "replay: a no-op")
		got, err := s.Get(ctx, d.ID)
		require.NoError(t, err)
		require.Equal(t, webhook.StatusPending, got.Status)
		require.Equal(t, 1, got.Attempts)
		require.Equal(t, 503, got.LastStatus)
		require.Equal(t, "receiver answered 503 Service Unavailable", got.LastError)

		timeout := webhook.Result{Outcome: webhook.OutcomeRetry, Err: errors.New("timeout after 10s"), At: t0.Add(time.Minute), Duration: 10 * time.Second}
		require.NoError(t, s.RecordAttempt(ctx, d.ID, 2, timeout))
		got, err = s.Get(ctx, d.ID)
		require.NoError(t, err)
		require.Equal(t, 2, got.Attempts)
		require.Zero(t, got.LastStatus, "no response: NULL")

		delivered := webhook.Result{Outcome: webhook.OutcomeDelivered, StatusCode: 204, At: t0.Add(2 * time.Minute), Duration: 5 * time.Millisecond}
		require.NoError(t, s.RecordAttempt(ctx, d.ID, 3, delivered))
		got, err = s.Get(ctx, d.ID)
		require.NoError(t, err)
		require.Equal(t, webhook.StatusDelivered, got.Status)
		require.Equal(t, 3, got.Attempts)
		require.Equal(t, 204, got.LastStatus)
		require.Empty(t, got.LastError)
		require.NotNil(t, got.DeliveredAt)
		require.True(t, got.DeliveredAt.Equal(t0.Add(2*time.Minute)))

		// A late attempt cannot take a delivered delivery back.
		require.NoError(t, s.RecordAttempt(ctx, d.ID, 4, webhook.Result{Outcome: webhook.OutcomeFailed, StatusCode: 410, Err: errors.New("gone"), At: t0.Add(3 * time.Minute)}))
		again, err := s.Get(ctx, d.ID)
		require.NoError(t, err)
		require.Equal(t, got, again, "a finished delivery stays as it is")

		rows := attempts(t, b.pool, d.ID)
		require.Len(t, rows, 4)
		require.Equal(t, 1, rows[0].Attempt)
		require.EqualValues(t, 503, *rows[0].StatusCode)
		require.Equal(t, "receiver answered 503 Service Unavailable", *rows[0].Error)
		require.InDelta(t, 42.0, rows[0].DurationMS, 0.001)
		require.True(t, rows[0].At.Equal(t0))
		require.Nil(t, rows[1].StatusCode)
		require.Nil(t, rows[2].Error)
	})

	t.Run("RecordAttemptFailed", func(t *testing.T) {
		t.Parallel()
		s, b := setupStore(t)
		d := delivery(t, insertJob(t, b.pool), "https://hooks.example.com/a")
		require.NoError(t, s.Create(ctx, nil, d))
		require.NoError(t, s.RecordAttempt(ctx, d.ID, 1, webhook.Result{Outcome: webhook.OutcomeFailed, StatusCode: 410, Err: errors.New("receiver answered 410 Gone")}))
		got, err := s.Get(ctx, d.ID)
		require.NoError(t, err)
		require.Equal(t, webhook.StatusFailed, got.Status)
		require.Nil(t, got.DeliveredAt)
	})

	t.Run("RecordAttemptBadInput", func(t *testing.T) {
		t.Parallel()
		s, b := setupStore(t)
		require.ErrorIs(t, s.RecordAttempt(ctx, uuid.New(), 1, webhook.Result{Outcome: webhook.OutcomeRetry}), webhook.ErrNotFound)
		d := delivery(t, insertJob(t, b.pool), "https://hooks.example.com/a")
		require.NoError(t, s.Create(ctx, nil, d))
		require.Error(t, s.RecordAttempt(ctx, d.ID, 0, webhook.Result{Outcome: webhook.OutcomeRetry}))
		require.Error(t, s.RecordAttempt(ctx, d.ID, 1, webhook.Result{}))
		require.Empty(t, attempts(t, b.pool, d.ID))
	})

	t.Run("LongErrorsAreTruncated", func(t *testing.T) {
		t.Parallel()
		s, b := setupStore(t)
		d := delivery(t, insertJob(t, b.pool), "https://hooks.example.com/a")
		require.NoError(t, s.Create(ctx, nil, d))
		long := "\x00\xff" + strings.Repeat("é", 3000)
		require.NoError(t, s.RecordAttempt(ctx, d.ID, 1, webhook.Result{Outcome: webhook.OutcomeRetry, Err: errors.New(long)}))
		got, err := s.Get(ctx, d.ID)
		require.NoError(t, err)
		require.LessOrEqual(t, len(got.LastError), 1000+len("…"))
		require.Greater(t, len(got.LastError), 900)
		require.True(t, utf8.ValidString(got.LastError))
		require.True(t, strings.HasPrefix(got.LastError, "\uFFFDé"), "NUL dropped, invalid byte replaced")
	})

	t.Run("MarkEnqueuedAndPending", func(t *testing.T) {
		t.Parallel()
		s, b := setupStore(t)
		job := insertJob(t, b.pool)
		mk := func(event string) webhook.Delivery {
			d := delivery(t, job, "https://hooks.example.com/a")
			d.EventType = event
			d.ID = webhook.DeliveryID(job, event)
			require.NoError(t, s.Create(ctx, nil, d))
			b.clock.Advance(time.Second)
			return d
		}
		never := mk("job.never_enqueued")
		enq := mk("job.enqueued")
		tried := mk("job.tried")
		done := mk("job.delivered")
		require.NoError(t, s.RecordAttempt(ctx, done.ID, 1, webhook.Result{Outcome: webhook.OutcomeDelivered, StatusCode: 200}))

		pending, err := s.Pending(ctx, time.Minute, 10)
		require.NoError(t, err)
		require.Empty(t, pending, "nothing is older than a minute yet")

		b.clock.Advance(2 * time.Minute)
		require.NoError(t, s.MarkEnqueued(ctx, enq.ID))
		require.NoError(t, s.RecordAttempt(ctx, tried.ID, 1, webhook.Result{Outcome: webhook.OutcomeRetry, Err: errors.New("timeout")}))
		got, err := s.Get(ctx, enq.ID)
		require.NoError(t, err)
		require.NotNil(t, got.EnqueuedAt)
		require.True(t, got.EnqueuedAt.Equal(b.clock.Now()))

		pending, err = s.Pending(ctx, time.Minute, 10)
		require.NoError(t, err)
		require.Equal(t, []uuid.UUID{never.ID}, pending, "recently enqueued or attempted ones are left alone")

		b.clock.Advance(2 * time.Minute)
		pending, err = s.Pending(ctx, time.Minute, 10)
		require.NoError(t, err)
		require.Equal(t, []uuid.UUID{never.ID, enq.ID, tried.ID}, pending, "oldest first; delivered ones never")
		pending, err = s.Pending(ctx, time.Minute, 2)
		require.NoError(t, err)
		require.Equal(t, []uuid.UUID{never.ID, enq.ID}, pending)

		require.ErrorIs(t, s.MarkEnqueued(ctx, uuid.New()), webhook.ErrNotFound)
	})

	t.Run("ForJob", func(t *testing.T) {
		t.Parallel()
		s, b := setupStore(t)
		job, other, none := insertJob(t, b.pool), insertJob(t, b.pool), insertJob(t, b.pool)
		d := delivery(t, job, "https://hooks.example.com/a")
		require.NoError(t, s.Create(ctx, nil, d))
		require.NoError(t, s.Create(ctx, nil, delivery(t, other, "https://hooks.example.com/b")))

		sum, err := s.ForJob(ctx, job)
		require.NoError(t, err)
		require.Equal(t, webhook.Summary{URL: "https://hooks.example.com/a", Status: webhook.StatusPending}, sum)
		j, err := json.Marshal(sum)
		require.NoError(t, err)
		require.JSONEq(t, `{"url":"https://hooks.example.com/a","status":"pending","attempts":0}`, string(j))

		at := b.clock.Now()
		require.NoError(t, s.RecordAttempt(ctx, d.ID, 1, webhook.Result{Outcome: webhook.OutcomeRetry, StatusCode: 500, Err: errors.New("receiver answered 500 Internal Server Error")}))
		require.NoError(t, s.RecordAttempt(ctx, d.ID, 2, webhook.Result{Outcome: webhook.OutcomeDelivered, StatusCode: 200, At: at}))
		sum, err = s.ForJob(ctx, job)
		require.NoError(t, err)
		require.Equal(t, webhook.StatusDelivered, sum.Status)
		require.Equal(t, 2, sum.Attempts)
		require.NotNil(t, sum.LastStatus)
		require.Equal(t, 200, *sum.LastStatus)
		require.Empty(t, sum.LastError)
		require.NotNil(t, sum.DeliveredAt)
		require.True(t, sum.DeliveredAt.Equal(at))

		_, err = s.ForJob(ctx, none)
		require.ErrorIs(t, err, webhook.ErrNotFound)

		m, err := s.ForJobs(ctx, []uuid.UUID{job, other, none})
		require.NoError(t, err)
		require.Len(t, m, 2)
		require.Equal(t, webhook.StatusDelivered, m[job].Status)
		require.Equal(t, "https://hooks.example.com/b", m[other].URL)
		m, err = s.ForJobs(ctx, nil)
		require.NoError(t, err)
		require.Empty(t, m)
	})

	t.Run("DeletedWithTheJob", func(t *testing.T) {
		t.Parallel()
		s, b := setupStore(t)
		job := insertJob(t, b.pool)
		d := delivery(t, job, "https://hooks.example.com/a")
		require.NoError(t, s.Create(ctx, nil, d))
		require.NoError(t, s.RecordAttempt(ctx, d.ID, 1, webhook.Result{Outcome: webhook.OutcomeRetry}))
		_, err := b.pool.Exec(ctx, `DELETE FROM jobs WHERE id = $1`, job)
		require.NoError(t, err)
		_, err = s.Get(ctx, d.ID)
		require.ErrorIs(t, err, webhook.ErrNotFound)
		require.Empty(t, attempts(t, b.pool, d.ID))
	})
}
