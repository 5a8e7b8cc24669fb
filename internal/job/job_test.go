package job

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/modelreg"
	"github.com/predq/predq/internal/pgtest"
	"github.com/predq/predq/internal/validate"
)

var owner = Owner{ID: "key-a", Name: "a"}

// recordingEnqueuer remembers what would have been enqueued.
type recordingEnqueuer struct {
	mu       sync.Mutex
	runs     []uuid.UUID
	chunks   map[uuid.UUID][]int
	webhooks []uuid.UUID
	alerts   []Summary
}

func (e *recordingEnqueuer) EnqueueJobRun(_ context.Context, id uuid.UUID) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.runs = append(e.runs, id)
	return nil
}

func (e *recordingEnqueuer) EnqueueChunks(_ context.Context, id uuid.UUID, chunks []int) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.chunks == nil {
		e.chunks = map[uuid.UUID][]int{}
	}
	e.chunks[id] = append(e.chunks[id], chunks...)
	return nil
}

func (e *recordingEnqueuer) EnqueueWebhook(_ context.Context, id uuid.UUID) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.webhooks = append(e.webhooks, id)
	return nil
}

func (e *recordingEnqueuer) EnqueueJobAlert(_ context.Context, s Summary) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.alerts = append(e.alerts, s)
	return nil
}

type bundle struct {
	svc    *Service
	enq    *recordingEnqueuer
	models *modelreg.Registry
	rows   [][]float64
}

func setup(t *testing.T, chunkSize int) bundle {
	t.Helper()
	models := modelreg.New("../../models", nil, slog.New(slog.DiscardHandler))
	require.NoError(t, models.Load(context.Background()))
	enq := &recordingEnqueuer{}
	svc, err := NewService(Config{Pool: pgtest.New(t), Models: models, Enqueuer: enq, ChunkSize: chunkSize, MaxRows: 50_000, MaxSamples: 1000})
	require.NoError(t, err)
	return bundle{svc: svc, enq: enq, models: models, rows: sonarRows(t)}
}

func sonarRows(t *testing.T) [][]float64 {
	t.Helper()
	f, err := os.Open("../../data/sonar.csv")
	require.NoError(t, err)
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	require.NoError(t, err)
	out := make([][]float64, len(recs))
	for i, r := range recs {
		out[i] = make([]float64, 60)
		for j := range 60 {
			out[i][j], _ = strconv.ParseFloat(r[j], 64)
		}
	}
	return out
}

func ndjson(rows [][]float64, n int) string {
	var b strings.Builder
	for i := range n {
		r := rows[i%len(rows)]
		if i%2 == 0 {
			b.WriteString(`{"features":[`)
		} else {
			b.WriteString("[")
		}
		for j, x := range r {
			if j > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strconv.FormatFloat(x, 'g', -1, 64))
		}
		if i%2 == 0 {
			b.WriteString("]}\n")
		} else {
			b.WriteString("]\n")
		}
	}
	return b.String()
}

func opts() Options {
	return Options{ModelVersion: "v1.0.0", Preprocessing: "standard", ConfidenceThreshold: 0.9}
}

func TestSubmitAndProcessExactlyOnce(t *testing.T) {
	t.Parallel()
	b := setup(t, 1000)
	ctx := context.Background()
	const n = 5321
	j, err := b.svc.Submit(ctx, owner, opts(), FormatNDJSON, NewNDJSONSource(strings.NewReader(ndjson(b.rows, n))), nil)
	require.NoError(t, err)
	require.Equal(t, StatusQueued, j.Status)
	require.Equal(t, n, j.Total)
	require.Equal(t, 6, j.ChunksTotal)
	require.Equal(t, []uuid.UUID{j.ID}, b.enq.runs)

	require.NoError(t, b.svc.Enqueue(ctx, j.ID))
	chunks := b.enq.chunks[j.ID]
	require.Equal(t, []int{0, 1, 2, 3, 4, 5}, chunks)

	// Every chunk delivered twice, concurrently: nothing is written or counted twice.
	var wg sync.WaitGroup
	for _, c := range append(chunks, chunks...) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			require.NoError(t, b.svc.ProcessChunk(ctx, j.ID, c))
		}()
	}
	wg.Wait()

	j, err = b.svc.Get(ctx, owner, j.ID)
	require.NoError(t, err)
	require.Equal(t, StatusSucceeded, j.Status)
	require.Equal(t, n, j.Processed)
	require.Zero(t, j.Failed)
	require.Equal(t, 1.0, j.Progress)
	require.NotNil(t, j.FinishedAt)

	m, err := b.models.Resolve("v1.0.0")
	require.NoError(t, err)
	seen := 0
	low := 0
	require.NoError(t, b.svc.StreamResults(ctx, owner, j.ID, func(r Result) error {
		require.Equal(t, seen, r.Index)
		want, err := m.PredictOne(b.rows[r.Index%len(b.rows)], "standard")
		require.NoError(t, err)
		require.InDelta(t, want, *r.Prediction, 1e-12)
		if r.LowConfidence {
			low++
		}
		seen++
		return nil
	}))
	require.Equal(t, n, seen)
	require.Equal(t, low, j.LowConfidence)
	if low > 0 {
		require.Len(t, b.enq.alerts, 1, "one low-confidence summary per job")
	}

	page, next, err := b.svc.Results(ctx, owner, j.ID, -1, 100)
	require.NoError(t, err)
	require.Len(t, page, 100)
	require.Equal(t, 99, next)
	page, _, err = b.svc.Results(ctx, owner, j.ID, next, 100)
	require.NoError(t, err)
	require.Equal(t, 100, page[0].Index)

	_, err = b.svc.Get(ctx, Owner{ID: "key-b"}, j.ID)
	require.ErrorIs(t, err, ErrNotFound, "another key does not see the job")
}

func TestSubmitRefusesBadRowsAndStoresNothing(t *testing.T) {
	t.Parallel()
	b := setup(t, 100)
	ctx := context.Background()
	body := ndjson(b.rows, 300)
	lines := strings.Split(body, "\n")
	lines[4] = `{"features":[1,2,3]}`
	lines[150] = `{"features":"x"}`
	lines[151] = `not json`
	body = strings.Join(lines, "\n")
	_, err := b.svc.Submit(ctx, owner, opts(), FormatNDJSON, NewNDJSONSource(strings.NewReader(body)), nil)
	var v *validate.Error
	require.ErrorAs(t, err, &v)
	require.Len(t, v.Errors, 3)
	require.Equal(t, "rows[5].features", v.Errors[0].Field)
	require.Contains(t, v.Errors[0].Message, "must hold 60 numbers")
	require.Equal(t, "rows[151].features", v.Errors[1].Field)
	require.Equal(t, "rows[152].features", v.Errors[2].Field)

	var jobs, chunks int
	require.NoError(t, b.svc.cfg.Pool.QueryRow(ctx, `SELECT (SELECT count(*) FROM jobs), (SELECT count(*) FROM job_chunks)`).Scan(&jobs, &chunks))
	require.Zero(t, jobs)
	require.Zero(t, chunks)
	require.Empty(t, b.enq.runs)
}

func TestSubmitLimitsAndEmptyBodies(t *testing.T) {
	t.Parallel()
	b := setup(t, 1000)
	ctx := context.Background()
	_, err := b.svc.Submit(ctx, owner, opts(), FormatNDJSON, NewNDJSONSource(strings.NewReader(ndjson(b.rows, 50_001))), nil)
	require.ErrorIs(t, err, ErrTooLarge)
	_, err = b.svc.Submit(ctx, owner, opts(), FormatNDJSON, NewNDJSONSource(strings.NewReader("\n\n")), nil)
	var v *validate.Error
	require.ErrorAs(t, err, &v)
	require.Equal(t, "body", v.Errors[0].Field)

	bad := opts()
	bad.ModelVersion = "v1.0.0"
	bad.Preprocessing = "robust"
	_, err = b.svc.Submit(ctx, owner, bad, FormatNDJSON, NewNDJSONSource(strings.NewReader(ndjson(b.rows, 1))), nil)
	require.ErrorAs(t, err, &v)
	require.Equal(t, "preprocessing", v.Errors[0].Field)
}

func TestCSVWithHeader(t *testing.T) {
	t.Parallel()
	b := setup(t, 50)
	var sb strings.Builder
	for j := range 60 {
		if j > 0 {
			sb.WriteByte(',')
		}
		fmt.Fprintf(&sb, "band_%02d", j)
	}
	sb.WriteByte('\n')
	for _, r := range b.rows[:120] {
		for j, x := range r {
			if j > 0 {
				sb.WriteByte(',')
			}
			sb.WriteString(strconv.FormatFloat(x, 'g', -1, 64))
		}
		sb.WriteByte('\n')
	}
	j, err := b.svc.Submit(context.Background(), owner, opts(), FormatCSV, NewCSVSource(strings.NewReader(sb.String())), nil)
	require.NoError(t, err)
	require.Equal(t, 120, j.Total)
	require.Equal(t, 3, j.ChunksTotal)

	_, err = b.svc.Submit(context.Background(), owner, opts(), FormatCSV, NewCSVSource(strings.NewReader("1,2\n3,abc\n")), nil)
	var v *validate.Error
	require.ErrorAs(t, err, &v)
	require.Equal(t, "rows[1].features", v.Errors[0].Field)
	require.Equal(t, "rows[2].features[1]", v.Errors[1].Field)
}

func TestJSONBodyStreamsSamples(t *testing.T) {
	t.Parallel()
	b := setup(t, 10)
	var sb strings.Builder
	sb.WriteString(`{"samples":[`)
	for i := range 25 {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteString(`{"features":[`)
		for j, x := range b.rows[i] {
			if j > 0 {
				sb.WriteByte(',')
			}
			sb.WriteString(strconv.FormatFloat(x, 'g', -1, 64))
		}
		sb.WriteString(`]}`)
	}
	sb.WriteString(`],"model_version":"v2.0.0","metadata":{"team":"sonar"}}`)
	var jo JSONOptions
	src := NewJSONSource(strings.NewReader(sb.String()), &jo)
	j, err := b.svc.Submit(context.Background(), owner, Options{}, FormatJSON, src, func() (Options, error) {
		o := Options{Metadata: jo.Metadata, ConfidenceThreshold: 0.5}
		if jo.ModelVersion != nil {
			o.ModelVersion = *jo.ModelVersion
		}
		return o, nil
	})
	require.NoError(t, err)
	require.Equal(t, 25, j.Total)
	require.Equal(t, "v2.0.0", j.ModelVersion)
	require.Equal(t, map[string]string{"team": "sonar"}, j.Metadata)

	for _, body := range []string{`{"samples":[{"features":[1]}]} x`, `{"samples":[`, `[1,2]`} {
		var jo JSONOptions
		_, err := b.svc.Submit(context.Background(), owner, Options{}, FormatJSON, NewJSONSource(strings.NewReader(body), &jo), func() (Options, error) {
			return Options{ConfidenceThreshold: 0.5}, nil
		})
		var de *DecodeError
		require.True(t, errors.As(err, &de), "%s: %v", body, err)
	}
}

func TestCancel(t *testing.T) {
	t.Parallel()
	b := setup(t, 100)
	ctx := context.Background()
	j, err := b.svc.Submit(ctx, owner, opts(), FormatNDJSON, NewNDJSONSource(strings.NewReader(ndjson(b.rows, 500))), nil)
	require.NoError(t, err)
	require.NoError(t, b.svc.Enqueue(ctx, j.ID))
	require.NoError(t, b.svc.ProcessChunk(ctx, j.ID, 0))
	require.NoError(t, b.svc.ProcessChunk(ctx, j.ID, 1))

	_, err = b.svc.Cancel(ctx, Owner{ID: "other"}, j.ID)
	require.ErrorIs(t, err, ErrNotFound)
	c, err := b.svc.Cancel(ctx, owner, j.ID)
	require.NoError(t, err)
	require.Equal(t, StatusCancelled, c.Status)
	require.Equal(t, 200, c.Processed)

	// Chunks that had not started do nothing.
	require.NoError(t, b.svc.ProcessChunk(ctx, j.ID, 2))
	c, err = b.svc.Get(ctx, owner, j.ID)
	require.NoError(t, err)
	require.Equal(t, 200, c.Processed)
	res, _, err := b.svc.Results(ctx, owner, j.ID, -1, 1000)
	require.NoError(t, err)
	require.Len(t, res, 200, "finished results stay readable")

	_, err = b.svc.Cancel(ctx, owner, j.ID)
	require.ErrorIs(t, err, ErrConflict)
}

func TestFailedChunkFailsTheJob(t *testing.T) {
	t.Parallel()
	b := setup(t, 100)
	ctx := context.Background()
	j, err := b.svc.Submit(ctx, owner, opts(), FormatNDJSON, NewNDJSONSource(strings.NewReader(ndjson(b.rows, 250))), nil)
	require.NoError(t, err)
	require.NoError(t, b.svc.ProcessChunk(ctx, j.ID, 0))
	require.NoError(t, b.svc.FailChunk(ctx, j.ID, 1, "panic: boom"))
	require.NoError(t, b.svc.FailChunk(ctx, j.ID, 1, "panic: boom"))
	require.NoError(t, b.svc.ProcessChunk(ctx, j.ID, 2))
	j, err = b.svc.Get(ctx, owner, j.ID)
	require.NoError(t, err)
	require.Equal(t, StatusFailed, j.Status)
	require.Equal(t, 150, j.Processed)
	require.Equal(t, 100, j.Failed)
	require.Equal(t, j.Total, j.Processed+j.Failed)
	require.Equal(t, "100 of 250 items failed", *j.Error)
}

func TestListNewestFirstWithCursor(t *testing.T) {
	t.Parallel()
	b := setup(t, 100)
	ctx := context.Background()
	var ids []uuid.UUID
	for range 5 {
		j, err := b.svc.Submit(ctx, owner, opts(), FormatNDJSON, NewNDJSONSource(strings.NewReader(ndjson(b.rows, 3))), nil)
		require.NoError(t, err)
		ids = append(ids, j.ID)
	}
	page, next, err := b.svc.List(ctx, owner, ListFilter{Limit: 3})
	require.NoError(t, err)
	require.Len(t, page, 3)
	require.Equal(t, ids[4], page[0].ID)
	require.NotEmpty(t, next)
	page, next, err = b.svc.List(ctx, owner, ListFilter{Limit: 3, Cursor: next})
	require.NoError(t, err)
	require.Len(t, page, 2)
	require.Equal(t, ids[1], page[0].ID)
	require.Empty(t, next)
	page, _, err = b.svc.List(ctx, owner, ListFilter{Status: StatusSucceeded})
	require.NoError(t, err)
	require.Empty(t, page)
	_, _, err = b.svc.List(ctx, owner, ListFilter{Cursor: "garbage"})
	require.ErrorIs(t, err, ErrBadCursor)
	page, _, err = b.svc.List(ctx, Owner{ID: "someone"}, ListFilter{})
	require.NoError(t, err)
	require.Empty(t, page)
}
