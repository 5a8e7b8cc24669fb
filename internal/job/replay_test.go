package job

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/validate"
)

// runAll runs every chunk of job id to its end.
func runAll(t *testing.T, b bundle, id uuid.UUID) Job {
	t.Helper()
	ctx := context.Background()
	require.NoError(t, b.svc.Enqueue(ctx, id))
	for _, c := range b.enq.chunks[id] {
		require.NoError(t, b.svc.ProcessChunk(ctx, id, c))
	}
	j, err := b.svc.Get(ctx, owner, id)
	require.NoError(t, err)
	return j
}

func predictions(t *testing.T, b bundle, id uuid.UUID) []float64 {
	t.Helper()
	var out []float64
	require.NoError(t, b.svc.StreamResults(context.Background(), owner, id, func(r Result) error {
		require.NotNil(t, r.Prediction)
		out = append(out, *r.Prediction)
		return nil
	}))
	return out
}

func TestReplayRunsTheStoredInputsOnAnotherVersion(t *testing.T) {
	t.Parallel()
	b := setup(t, 1000)
	ctx := context.Background()
	const n = 2500
	body := ndjson(b.rows, n)
	orig, err := b.svc.Submit(ctx, owner, Options{ModelVersion: "v2.0.0", Preprocessing: "standard", ConfidenceThreshold: 0.9},
		FormatNDJSON, NewNDJSONSource(strings.NewReader(body)), nil)
	require.NoError(t, err)

	_, err = b.svc.Replay(ctx, owner, orig.ID, Options{ModelVersion: "v1.0.0"})
	require.ErrorIs(t, err, ErrNotFinished, "a queued job is not replayed")

	orig = runAll(t, b, orig.ID)
	require.Equal(t, StatusSucceeded, orig.Status)

	_, err = b.svc.Replay(ctx, Owner{ID: "key-b"}, orig.ID, Options{ModelVersion: "v1.0.0"})
	require.ErrorIs(t, err, ErrNotFound, "another key's job")
	_, err = b.svc.Replay(ctx, owner, orig.ID, Options{})
	ve, ok := errors.AsType[*validate.Error](err)
	require.True(t, ok, "%v", err)
	require.Equal(t, "model_version", ve.Errors[0].Field)

	rep, err := b.svc.Replay(ctx, owner, orig.ID, Options{ModelVersion: "v1.0.0"})
	require.NoError(t, err)
	require.Equal(t, StatusQueued, rep.Status)
	require.Equal(t, n, rep.Total)
	require.Equal(t, "v1.0.0", rep.ModelVersion)
	require.Equal(t, "standard", rep.Preprocessing, "the original's preprocessing")
	require.Equal(t, 0.9, rep.ConfidenceThreshold, "the original's threshold")
	require.Equal(t, &orig.ID, rep.ReplayOf)
	_, err = b.svc.Compare(ctx, owner, orig.ID)
	require.ErrorIs(t, err, ErrNotReplay)
	rep = runAll(t, b, rep.ID)
	require.Equal(t, StatusSucceeded, rep.Status)

	// The replay equals a fresh v1.0.0 job of the same rows, bit for bit.
	fresh, err := b.svc.Submit(ctx, owner, opts(), FormatNDJSON, NewNDJSONSource(strings.NewReader(body)), nil)
	require.NoError(t, err)
	runAll(t, b, fresh.ID)
	require.Equal(t, predictions(t, b, fresh.ID), predictions(t, b, rep.ID))

	// The comparison agrees with the figures computed here from both jobs' results.
	cmp, err := b.svc.Compare(ctx, owner, rep.ID)
	require.NoError(t, err)
	a, r := predictions(t, b, orig.ID), predictions(t, b, rep.ID)
	agreed, sum, mx := 0, 0.0, 0.0
	hist := make([]int, len(DiffEdges)-1)
	for i := range a {
		if (a[i] > 0.5) == (r[i] > 0.5) {
			agreed++
		}
		d := max(r[i]-a[i], a[i]-r[i])
		sum += d
		mx = max(mx, d)
		k := len(DiffEdges) - 2
		for e := 1; e < len(DiffEdges); e++ {
			if d < DiffEdges[e] {
				k = e - 1
				break
			}
		}
		hist[k]++
	}
	require.True(t, cmp.Complete)
	require.Equal(t, n, cmp.Compared)
	require.Equal(t, agreed, cmp.Agreed)
	require.InDelta(t, float64(agreed)/n, cmp.AgreementRate, 1e-12)
	require.InDelta(t, sum/n, cmp.AbsDiff.Mean, 1e-12)
	require.Equal(t, mx, cmp.AbsDiff.Max)
	require.LessOrEqual(t, cmp.AbsDiff.P50, cmp.AbsDiff.P90)
	require.LessOrEqual(t, cmp.AbsDiff.P90, cmp.AbsDiff.P99)
	require.LessOrEqual(t, cmp.AbsDiff.P99, cmp.AbsDiff.Max)
	got := make([]int, len(cmp.AbsDiff.Histogram))
	for i, h := range cmp.AbsDiff.Histogram {
		got[i] = h.Count
	}
	require.Equal(t, hist, got)
	require.Less(t, agreed, n, "v1.0.0 and v2.0.0 disagree on some sonar rows")

	// A replay compared with itself on the same version: full agreement, no difference.
	same, err := b.svc.Replay(ctx, owner, fresh.ID, Options{ModelVersion: "v1.0.0"})
	require.NoError(t, err)
	runAll(t, b, same.ID)
	cmp, err = b.svc.Compare(ctx, owner, same.ID)
	require.NoError(t, err)
	require.Equal(t, 1.0, cmp.AgreementRate)
	require.Zero(t, cmp.AbsDiff.Max)
	require.Equal(t, n, cmp.AbsDiff.Histogram[0].Count)
}

func TestReplayRefusesJobsWithoutInputs(t *testing.T) {
	t.Parallel()
	b := setup(t, 100)
	ctx := context.Background()
	j, err := b.svc.Submit(ctx, owner, opts(), FormatNDJSON, NewNDJSONSource(strings.NewReader(ndjson(b.rows, 300))), nil)
	require.NoError(t, err)
	runAll(t, b, j.ID)
	// As a chunk finished before inputs were kept (migration 00025) was left.
	_, err = b.svc.cfg.Pool.Exec(ctx, `UPDATE job_chunks SET features = ''::bytea WHERE job_id = $1 AND chunk_index = 1`, j.ID)
	require.NoError(t, err)
	_, err = b.svc.Replay(ctx, owner, j.ID, Options{ModelVersion: "v2.0.0"})
	require.ErrorIs(t, err, ErrInputsGone)
	var jobs int
	require.NoError(t, b.svc.cfg.Pool.QueryRow(ctx, `SELECT count(*) FROM jobs`).Scan(&jobs))
	require.Equal(t, 1, jobs, "nothing was created")
}

func TestReplayOfCancelledJobRunsEveryRow(t *testing.T) {
	t.Parallel()
	b := setup(t, 100)
	ctx := context.Background()
	j, err := b.svc.Submit(ctx, owner, opts(), FormatNDJSON, NewNDJSONSource(strings.NewReader(ndjson(b.rows, 300))), nil)
	require.NoError(t, err)
	require.NoError(t, b.svc.Enqueue(ctx, j.ID))
	require.NoError(t, b.svc.ProcessChunk(ctx, j.ID, 0))
	_, err = b.svc.Cancel(ctx, owner, j.ID)
	require.NoError(t, err)
	rep, err := b.svc.Replay(ctx, owner, j.ID, Options{ModelVersion: "v2.0.0"})
	require.NoError(t, err)
	rep = runAll(t, b, rep.ID)
	require.Equal(t, 300, rep.Processed, "the skipped chunks kept their inputs")
	cmp, err := b.svc.Compare(ctx, owner, rep.ID)
	require.NoError(t, err)
	require.Equal(t, 100, cmp.Compared, "only the rows both answered")
	require.Equal(t, 100, cmp.Original.Answered)
	require.Equal(t, 300, cmp.Replay.Answered)
}
