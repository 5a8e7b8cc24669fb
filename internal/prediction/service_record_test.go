package prediction_test

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/inference"
	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/redistest"
	"github.com/predq/predq/internal/validate"
)

// capture is a Recorder that keeps what it is given.
type capture struct {
	mu   sync.Mutex
	recs []prediction.Record
}

func (c *capture) Record(_ context.Context, recs []prediction.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.recs = append(c.recs, recs...)
	return nil
}

func (c *capture) take() []prediction.Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := c.recs
	c.recs = nil
	return r
}

// TestCacheHitsAreRecordedWhenAsked: a computed prediction is always recorded; a cache hit
// only when it is below its threshold, or always with PersistCacheHits. The answers are the
// same either way.
func TestCacheHitsAreRecordedWhenAsked(t *testing.T) {
	b, err := os.ReadFile("../../models/v1.0.0.json")
	require.NoError(t, err)
	m, err := inference.DecodeArtifact(b)
	require.NoError(t, err)
	rs := redistest.New(t)
	row := func(k int) []float64 {
		x := make([]float64, m.InputSize)
		for i := range x {
			x[i] = 0.001 * float64(i*k%97)
		}
		return x
	}

	for _, all := range []bool{false, true} {
		rdb := rs.Client(t)
		require.NoError(t, rdb.FlushDB(context.Background()).Err())
		rec := &capture{}
		svc, err := prediction.NewService(prediction.ServiceConfig{
			Models: oneModel{m}, Cache: prediction.NewCache(rdb, time.Minute, 2*time.Second, nil, nil),
			Recorder: rec, PersistCacheHits: all,
		})
		require.NoError(t, err)
		ctx := context.Background()
		in := prediction.Input{Features: row(3), ConfidenceThreshold: 0.5}

		miss, err := svc.Predict(ctx, in, prediction.Meta{RequestID: "miss"})
		require.NoError(t, err)
		require.False(t, miss.Cached)
		got := rec.take()
		require.Len(t, got, 1, "a computed prediction is recorded")
		require.Equal(t, "miss", got[0].RequestID)
		require.False(t, got[0].Cached)
		require.EqualValues(t, 7, got[0].ID.Version(), "a server id, a UUIDv7")
		require.Equal(t, got[0].ID, miss.ID, "the answer carries the id it is stored under")

		// The same request id again (a client reusing its X-Request-ID): another id.
		again, err := svc.Predict(ctx, prediction.Input{Features: row(4), ConfidenceThreshold: 0.5}, prediction.Meta{RequestID: "miss"})
		require.NoError(t, err)
		got = rec.take()
		require.Len(t, got, 1)
		require.Equal(t, "miss", got[0].RequestID)
		require.Equal(t, again.ID, got[0].ID)
		require.NotEqual(t, miss.ID, again.ID)

		hit, err := svc.Predict(ctx, in, prediction.Meta{RequestID: "hit"})
		require.NoError(t, err)
		require.True(t, hit.Cached)
		require.Equal(t, miss.Prediction, hit.Prediction)
		got = rec.take()
		if all {
			require.Len(t, got, 1, "PersistCacheHits records the hit")
			require.Equal(t, "hit", got[0].RequestID)
			require.True(t, got[0].Cached)
			require.Equal(t, got[0].ID, hit.ID)
		} else {
			require.Empty(t, got, "a confident hit is not recorded")
			require.Equal(t, uuid.Nil, hit.ID, "nor does its answer carry an id")
		}

		// The same features with a threshold no answer reaches: a low-confidence hit, always
		// recorded (its alert refers to it).
		low := in
		low.ConfidenceThreshold = 1
		lowHit, err := svc.Predict(ctx, low, prediction.Meta{RequestID: "low"})
		require.NoError(t, err)
		require.True(t, lowHit.Cached)
		got = rec.take()
		require.Len(t, got, 1, "a low-confidence hit is recorded")
		require.Equal(t, "low", got[0].RequestID)
		require.True(t, got[0].Cached)
		require.True(t, got[0].LowConfidence())

		// A batch of a hit and a miss: the miss always, the hit with PersistCacheHits.
		outs, err := svc.PredictBatch(ctx, []prediction.Input{in, {Features: row(5), ConfidenceThreshold: 0.5}}, false, prediction.Meta{RequestID: "b"})
		require.NoError(t, err)
		require.True(t, outs[0].Cached)
		require.False(t, outs[1].Cached)
		var ids []string
		stored := map[uuid.UUID]bool{}
		for _, r := range rec.take() {
			ids = append(ids, r.RequestID)
			stored[r.ID] = true
		}
		if all {
			require.Equal(t, []string{"b-0", "b-1"}, ids)
			require.True(t, stored[outs[0].ID])
		} else {
			require.Equal(t, []string{"b-1"}, ids)
			require.Equal(t, uuid.Nil, outs[0].ID)
		}
		require.True(t, stored[outs[1].ID], "each sample's answer carries its own id")
	}
}

// The service is where inputs are checked: a batch names every sample's broken rule at once,
// before any model is looked up (a sample naming an unknown version does not hide them).
func TestServiceChecksInputsOnce(t *testing.T) {
	t.Parallel()
	svc, err := prediction.NewService(prediction.ServiceConfig{Models: noModels{}})
	require.NoError(t, err)
	_, err = svc.PredictBatch(context.Background(), []prediction.Input{
		{Features: []float64{1}, ModelVersion: "v9.9.9", ConfidenceThreshold: 0.5},
		{Features: []float64{1, 5000}, ConfidenceThreshold: 0},
	}, false, prediction.Meta{RequestID: "r"})
	var v *validate.Error
	require.ErrorAs(t, err, &v)
	var fields []string
	for _, e := range v.Errors {
		fields = append(fields, e.Field)
	}
	require.Equal(t, []string{"samples[1].features[1]", "samples[1].confidence_threshold"}, fields)

	_, err = svc.Predict(context.Background(), prediction.Input{Features: []float64{1}, ModelVersion: " latest ", Preprocessing: "zz", ConfidenceThreshold: 0.5}, prediction.Meta{})
	require.ErrorAs(t, err, &v)
	require.Equal(t, "preprocessing", v.Errors[0].Field)
	_, err = svc.Predict(context.Background(), prediction.Input{Features: []float64{1}, ConfidenceThreshold: 0.5}, prediction.Meta{})
	require.ErrorIs(t, err, prediction.ErrModelNotFound, "a valid input goes on to the model lookup")
}

type noModels struct{}

func (noModels) Resolve(string) (*inference.Model, error) { return nil, errors.New("none") }
