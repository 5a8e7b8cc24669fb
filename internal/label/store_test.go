package label_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/label"
	"github.com/predq/predq/internal/maintenance"
	"github.com/predq/predq/internal/pgtest"
	"github.com/predq/predq/internal/postgres"
	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/validate"
)

type bundle struct {
	pool  *pgxpool.Pool
	store *label.Store
}

func setup(t *testing.T) bundle {
	t.Helper()
	pool := pgtest.New(t)
	return bundle{pool: pool, store: label.NewStore(pool)}
}

// storedPrediction inserts a prediction of owner ("" for none) with score p and returns its id.
func storedPrediction(t *testing.T, pool *pgxpool.Pool, owner string, p float64) uuid.UUID {
	t.Helper()
	id := uuid.Must(uuid.NewV7())
	var user any
	if owner != "" {
		user = owner
	}
	class := "negative"
	if p > 0.5 {
		class = "positive"
	}
	_, err := pool.Exec(context.Background(), `INSERT INTO predictions (id, request_id, input_features, prediction, confidence,
		prediction_class, model_version, preprocessing, confidence_threshold, user_id, latency_ms)
		VALUES ($1, $2, '{1,2}', $3::float8, greatest($3::float8, 1 - $3::float8), $4, 'v1.0.0', 'standard', 0.5, $5, 1)`, id, "r-"+id.String(), p, class, user)
	require.NoError(t, err)
	return id
}

// finishedJob inserts a job of owner with n results (item i scored i/n; item 3 failed) in
// status and returns its id.
func finishedJob(t *testing.T, pool *pgxpool.Pool, owner string, n int, status string) uuid.UUID {
	t.Helper()
	ctx := context.Background()
	id := uuid.Must(uuid.NewV7())
	_, err := pool.Exec(ctx, `INSERT INTO jobs (id, owner, owner_name, status, model_version, preprocessing, confidence_threshold,
		total, chunk_size, input_format, deadline_at) VALUES ($1, $2, $2, $3, 'v2.0.0', 'standard', 0.5, $4, 100, 'csv', now() + interval '1 hour')`,
		id, owner, status, n)
	require.NoError(t, err)
	_, err = pool.Exec(ctx, `INSERT INTO job_results (job_id, item_index, prediction, confidence, error)
		SELECT $1, i, CASE WHEN i = 3 THEN NULL ELSE i::float8 / $2 END, 0.5, CASE WHEN i = 3 THEN 'bad' END
		FROM generate_series(0, $2 - 1) AS i`, id, n)
	require.NoError(t, err)
	return id
}

func historyRows(t *testing.T, pool *pgxpool.Pool, table string) int {
	t.Helper()
	var n int
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT count(*) FROM `+table).Scan(&n))
	return n
}

func fields(t *testing.T, err error) map[string]string {
	t.Helper()
	ve, ok := errors.AsType[*validate.Error](err)
	require.True(t, ok, "a *validate.Error, got %v", err)
	out := map[string]string{}
	for _, f := range ve.Errors {
		out[f.Field] = f.Message
	}
	return out
}

func TestSetPrediction(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("first label, same again, then another", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := storedPrediction(t, b.pool, "k1", 0.8)
		l, err := b.store.SetPrediction(ctx, "k1", id, label.Positive, "crm")
		require.NoError(t, err)
		require.True(t, l.Changed)
		require.Equal(t, 1, l.Revision)
		require.Equal(t, "positive", l.Label)
		require.Equal(t, "v1.0.0", l.ModelVersion)
		require.InDelta(t, 0.8, *l.Score, 0)
		require.Equal(t, "crm", l.Source)

		again, err := b.store.SetPrediction(ctx, "k1", id, label.Positive, "other")
		require.NoError(t, err)
		require.False(t, again.Changed, "the same label again changes nothing")
		require.Equal(t, 1, again.Revision)
		require.Equal(t, "crm", again.Source)
		require.Equal(t, 1, historyRows(t, b.pool, "prediction_label_history"))

		flipped, err := b.store.SetPrediction(ctx, "k1", id, label.Negative, "")
		require.NoError(t, err)
		require.True(t, flipped.Changed)
		require.Equal(t, 2, flipped.Revision)
		require.Equal(t, "negative", flipped.Label)

		cur, hist, err := b.store.GetPrediction(ctx, "k1", id)
		require.NoError(t, err)
		require.Equal(t, "negative", cur.Label)
		require.Len(t, hist, 2)
		require.Equal(t, []string{"positive", "negative"}, []string{hist[0].Label, hist[1].Label})
		require.Equal(t, "crm", hist[0].Source)
	})

	t.Run("another owner's prediction is not found", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := storedPrediction(t, b.pool, "k1", 0.3)
		_, err := b.store.SetPrediction(ctx, "k2", id, label.Positive, "")
		require.ErrorIs(t, err, label.ErrNotFound)
		_, err = b.store.SetPrediction(ctx, "k1", uuid.Must(uuid.NewV7()), label.Positive, "")
		require.ErrorIs(t, err, label.ErrNotFound)
		_, _, err = b.store.GetPrediction(ctx, "k2", id)
		require.ErrorIs(t, err, label.ErrNotFound)
		require.Zero(t, historyRows(t, b.pool, "prediction_labels"))
	})

	t.Run("a prediction with no tenant is the empty owner's", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := storedPrediction(t, b.pool, "", 0.3)
		_, err := b.store.SetPrediction(ctx, "", id, label.Negative, "")
		require.NoError(t, err)
		_, err = b.store.SetPrediction(ctx, "k1", id, label.Negative, "")
		require.ErrorIs(t, err, label.ErrNotFound)
	})

	t.Run("bad label and source", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := storedPrediction(t, b.pool, "k1", 0.3)
		_, err := b.store.SetPrediction(ctx, "k1", id, 2, "")
		require.Contains(t, fields(t, err), "label")
		_, err = b.store.SetPrediction(ctx, "k1", id, 1, strings.Repeat("x", label.MaxSourceLen+1))
		require.Contains(t, fields(t, err), "source")
		_, err = b.store.SetPrediction(ctx, "k1", id, 1, "a\nb")
		require.Contains(t, fields(t, err), "source")
	})

	t.Run("concurrent writes of both labels leave one history per change", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := storedPrediction(t, b.pool, "k1", 0.6)
		errs := make(chan error, 20)
		for i := range 20 {
			go func() {
				_, err := b.store.SetPrediction(ctx, "k1", id, i%2, "")
				errs <- err
			}()
		}
		for range 20 {
			require.NoError(t, <-errs)
		}
		cur, hist, err := b.store.GetPrediction(ctx, "k1", id)
		require.NoError(t, err)
		require.Len(t, hist, cur.Revision, "one history row per revision")
		for i := 1; i < len(hist); i++ {
			require.NotEqual(t, hist[i-1].Label, hist[i].Label, "each revision changes the label")
		}
	})
}

func csvBody(rows ...string) label.RowSource {
	return label.NewCSVSource(strings.NewReader(strings.Join(rows, "\n")))
}

func TestSetJobRows(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("labels a finished job's rows once each, idempotently", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := finishedJob(t, b.pool, "k1", 10, "succeeded")
		res, err := b.store.SetJobRows(ctx, "k1", id, csvBody("item_index,label", "0,positive", "3,negative", "9,1"), "file")
		require.NoError(t, err)
		require.Equal(t, label.JobResult{JobID: id, Rows: 3, Changed: 3, Unscored: 1}, res)

		res, err = b.store.SetJobRows(ctx, "k1", id, label.NewNDJSONSource(strings.NewReader(
			`{"item_index":0,"label":"positive"}`+"\n\n"+`{"item_index":9,"label":0}`+"\n"+`{"item_index":5,"label":"negative"}`)), "")
		require.NoError(t, err)
		require.Equal(t, label.JobResult{JobID: id, Rows: 3, Changed: 2, Unscored: 0}, res)
		require.Equal(t, 5, historyRows(t, b.pool, "job_label_history"))

		rows, err := b.store.JobRows(ctx, "k1", id, -1, 100)
		require.NoError(t, err)
		var got []string
		for _, l := range rows {
			score := "null"
			if l.Score != nil {
				score = fmt.Sprint(*l.Score)
			}
			got = append(got, fmt.Sprintf("%d:%s:r%d:%s", *l.ItemIndex, l.Label, l.Revision, score))
		}
		require.Equal(t, []string{"0:positive:r1:0", "3:negative:r1:null", "5:negative:r1:0.5", "9:negative:r2:0.9"}, got)
	})

	t.Run("a bad row refuses the body, naming the rows, nothing written", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := finishedJob(t, b.pool, "k1", 10, "succeeded")
		_, err := b.store.SetJobRows(ctx, "k1", id, csvBody("0,positive", "10,negative", "2,maybe", "0,negative", "x,1", "4,1,2"), "")
		got := fields(t, err)
		require.Contains(t, got["rows[2].item_index"], "0 to 9, got 10")
		require.Contains(t, got["rows[3].label"], `got "maybe"`)
		require.Contains(t, got["rows[4].item_index"], "labelled twice")
		require.Contains(t, got["rows[5].item_index"], `got "x"`)
		require.Contains(t, got, "rows[6].label")
		require.Zero(t, historyRows(t, b.pool, "job_labels"))
		require.Zero(t, historyRows(t, b.pool, "job_label_history"))

		_, err = b.store.SetJobRows(ctx, "k1", id, label.NewNDJSONSource(strings.NewReader(
			`{"item_index":1,"label":"yes"}`+"\n"+`{"label":1}`+"\n"+`{"item_index":2,"label":1,"extra":1}`+"\n"+`{"item_index":-1,"label":1}`)), "")
		got = fields(t, err)
		require.Contains(t, got, "rows[1].label")
		require.Equal(t, "row 2: is required", got["rows[2].item_index"])
		require.Contains(t, got, "rows[3].item_index")
		require.Contains(t, got, "rows[4].item_index")

		_, err = b.store.SetJobRows(ctx, "k1", id, csvBody("item_index,label"), "")
		require.Contains(t, fields(t, err), "body")
		require.Zero(t, historyRows(t, b.pool, "job_labels"))
	})

	t.Run("another owner's job, an active job", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := finishedJob(t, b.pool, "k1", 4, "succeeded")
		_, err := b.store.SetJobRows(ctx, "k2", id, csvBody("0,1"), "")
		require.ErrorIs(t, err, label.ErrNotFound)
		_, err = b.store.JobRows(ctx, "k2", id, -1, 10)
		require.ErrorIs(t, err, label.ErrNotFound)
		running := finishedJob(t, b.pool, "k1", 4, "running")
		_, err = b.store.SetJobRows(ctx, "k1", running, csvBody("0,1"), "")
		require.ErrorIs(t, err, label.ErrJobActive)
	})

	t.Run("labels go with their job", func(t *testing.T) {
		t.Parallel()
		b := setup(t)
		id := finishedJob(t, b.pool, "k1", 4, "succeeded")
		_, err := b.store.SetJobRows(ctx, "k1", id, csvBody("0,1", "1,0"), "")
		require.NoError(t, err)
		_, err = b.pool.Exec(ctx, `DELETE FROM jobs WHERE id = $1`, id)
		require.NoError(t, err)
		require.Zero(t, historyRows(t, b.pool, "job_labels"))
		require.Zero(t, historyRows(t, b.pool, "job_label_history"))
	})
}

// Labels sit in their subject's day partition, and retention takes them with it: whole
// partitions with the subject's, rows with the rows.
func TestLabelsGoWithRetention(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := setup(t)
	id := storedPrediction(t, b.pool, "k1", 0.9)
	_, err := b.store.SetPrediction(ctx, "k1", id, label.Positive, "")
	require.NoError(t, err)
	var part string
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT tableoid::regclass::text FROM prediction_labels WHERE prediction_id = $1`, id).Scan(&part))
	require.Equal(t, "prediction_labels_p"+time.Now().UTC().Format("20060102"), part)
	// By rows: the prediction's row goes, its labels with it.
	_, err = b.pool.Exec(ctx, `UPDATE predictions SET created_at = now() - interval '1 hour' WHERE id = $1`, id)
	require.NoError(t, err)
	n, err := predictionStore(b.pool).DeleteOlderThan(ctx, time.Now().Add(-time.Minute))
	require.NoError(t, err)
	require.EqualValues(t, 1, n)
	require.Zero(t, historyRows(t, b.pool, "prediction_labels"))
	require.Zero(t, historyRows(t, b.pool, "prediction_label_history"))

	// By partitions: an old day's partition of predictions goes with its labels' partitions.
	now := time.Now().UTC()
	_, err = maintenance.EnsurePartitions(ctx, b.pool, now.AddDate(0, 0, -10), 11)
	require.NoError(t, err)
	oldAt := now.AddDate(0, 0, -5)
	old := v7At(oldAt)
	_, err = b.pool.Exec(ctx, `INSERT INTO predictions (id, request_id, input_features, prediction, confidence,
		prediction_class, model_version, preprocessing, confidence_threshold, user_id, latency_ms, created_at)
		VALUES ($1, 'old', '{1}', 0.2, 0.8, 'negative', 'v1.0.0', 'standard', 0.5, 'k1', 1, $2)`, old, oldAt)
	require.NoError(t, err)
	_, err = b.store.SetPrediction(ctx, "k1", old, label.Negative, "")
	require.NoError(t, err)
	for _, table := range []string{"predictions", "prediction_labels", "prediction_label_history"} {
		require.True(t, exists(t, b.pool, postgres.PartitionName(table, oldAt)), table)
	}
	_, err = predictionStore(b.pool).DeleteOlderThan(ctx, now.AddDate(0, 0, -2))
	require.NoError(t, err)
	for _, table := range []string{"predictions", "prediction_labels", "prediction_label_history"} {
		require.False(t, exists(t, b.pool, postgres.PartitionName(table, oldAt)), "%s's old day is dropped", table)
	}
	require.True(t, exists(t, b.pool, postgres.PartitionName("prediction_labels", now)), "today's stays")
}

func predictionStore(pool *pgxpool.Pool) *prediction.Store { return prediction.NewStore(pool) }

func exists(t *testing.T, pool *pgxpool.Pool, name string) bool {
	t.Helper()
	var ok bool
	require.NoError(t, pool.QueryRow(context.Background(), `SELECT to_regclass($1) IS NOT NULL`, name).Scan(&ok))
	return ok
}

// v7At returns a UUIDv7 of time at.
func v7At(at time.Time) uuid.UUID {
	id := uuid.Must(uuid.NewV7())
	ms := uint64(at.UnixMilli())
	for i := range 6 {
		id[i] = byte(ms >> (8 * (5 - i)))
	}
	return id
}
