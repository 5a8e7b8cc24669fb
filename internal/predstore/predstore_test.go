package predstore_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/localsvc"
	"github.com/predq/predq/internal/pgtest"
	"github.com/predq/predq/internal/postgres"
	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/predstore"
)

type bundle struct {
	pool *pgxpool.Pool
}

func setup(t *testing.T, opts ...predstore.Option) (*predstore.Store, bundle) {
	t.Helper()
	pool := pgtest.New(t)
	return predstore.New(pool, opts...), bundle{pool: pool}
}

var base = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// record is the factory of test records: deterministic, 60 features, one per i.
func record(prefix string, i int) prediction.Record {
	feats := make([]float64, 60)
	for j := range feats {
		feats[j] = float64(i*60+j)/7 - 3.25
	}
	p := float64(i%100) / 100
	class := prediction.ClassNegative
	if p > 0.5 {
		class = prediction.ClassPositive
	}
	return prediction.Record{
		RequestID: prefix + "-" + strconv.Itoa(i), UserID: "alice", Features: feats,
		Prediction: p, Confidence: max(p, 1-p), PredictionClass: class, ModelVersion: "v1.0.0",
		Preprocessing: "standard", ConfidenceThreshold: 0.6, Cached: i%3 == 0, LatencyMS: 1.25,
		CreatedAt: base.Add(time.Duration(i) * time.Millisecond),
	}
}

func records(prefix string, n int) []prediction.Record {
	out := make([]prediction.Record, n)
	for i := range out {
		out[i] = record(prefix, i)
	}
	return out
}

func count(t *testing.T, pool *pgxpool.Pool) int64 {
	t.Helper()
	var n int64
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT count(*) FROM predictions").Scan(&n))
	return n
}

func TestInsert(t *testing.T) {
	t.Parallel()
	paths := []struct {
		name string
		opt  predstore.Option
	}{
		{"unnest", predstore.WithCopyThreshold(1 << 30)},
		{"copy", predstore.WithCopyThreshold(1)},
	}
	for _, path := range paths {
		t.Run(path.name, func(t *testing.T) {
			t.Parallel()

			t.Run("StoresEveryColumn", func(t *testing.T) {
				t.Parallel()
				store, b := setup(t, path.opt)
				ctx := context.Background()
				recs := records("a", 3)
				recs[1].UserID = "" // stored as NULL, read back as ""
				recs[2].Features = []float64{1e-300, -0.1, 123.456789012345678, 1000}
				n, err := store.Insert(ctx, recs)
				require.NoError(t, err)
				require.EqualValues(t, 3, n)
				require.EqualValues(t, 3, count(t, b.pool))
				for _, r := range recs {
					got, err := store.Get(ctx, r.RequestID)
					require.NoError(t, err)
					require.Equal(t, r.RequestID, got.RequestID)
					require.Equal(t, r.UserID, got.UserID)
					require.Equal(t, r.Features, got.Features, "features round-trip exactly")
					require.Equal(t, r.Prediction, got.Prediction)
					require.Equal(t, r.Confidence, got.Confidence)
					require.Equal(t, r.PredictionClass, got.PredictionClass)
					require.Equal(t, r.ModelVersion, got.ModelVersion)
					require.Equal(t, r.Preprocessing, got.Preprocessing)
					require.Equal(t, r.ConfidenceThreshold, got.ConfidenceThreshold)
					require.Equal(t, r.Cached, got.Cached)
					require.Equal(t, r.LatencyMS, got.LatencyMS)
					require.Equal(t, "completed", got.Status)
					require.True(t, r.CreatedAt.Equal(got.CreatedAt), "created_at %s, want %s", got.CreatedAt, r.CreatedAt)
					require.True(t, r.CreatedAt.Equal(got.UpdatedAt))
				}
			})

			t.Run("ReplayWritesNothingTwice", func(t *testing.T) {
				t.Parallel()
				store, b := setup(t, path.opt)
				ctx := context.Background()
				recs := records("r", 20)
				n, err := store.Insert(ctx, recs)
				require.NoError(t, err)
				require.EqualValues(t, 20, n)

				n, err = store.Insert(ctx, recs)
				require.NoError(t, err)
				require.EqualValues(t, 0, n)

				// Half old, half new: only the new half is written.
				mixed := append(append([]prediction.Record{}, recs[10:]...), records("s", 10)...)
				n, err = store.Insert(ctx, mixed)
				require.NoError(t, err)
				require.EqualValues(t, 10, n)
				require.EqualValues(t, 30, count(t, b.pool))
			})

			t.Run("ARequestIDReusedByAnotherPredictionKeepsBoth", func(t *testing.T) {
				t.Parallel()
				store, b := setup(t, path.opt)
				ctx := context.Background()
				// Two predictions a client sent with the same X-Request-ID: another time,
				// other features.
				first, second := record("x", 1), record("x", 2)
				second.RequestID = first.RequestID
				renamed := first.RequestID + "~" + strconv.FormatInt(second.CreatedAt.UnixMicro(), 36)

				n, err := store.Insert(ctx, []prediction.Record{first})
				require.NoError(t, err)
				require.EqualValues(t, 1, n)
				n, err = store.Insert(ctx, []prediction.Record{second})
				require.NoError(t, err)
				require.EqualValues(t, 1, n, "the second prediction is stored too")
				got, err := store.Get(ctx, first.RequestID)
				require.NoError(t, err)
				require.Equal(t, first.Features, got.Features)
				got, err = store.Get(ctx, renamed)
				require.NoError(t, err)
				require.Equal(t, second.Features, got.Features)
				require.Equal(t, second.Prediction, got.Prediction)

				// Replays of either, alone or together, write nothing.
				for _, replay := range [][]prediction.Record{{second}, {first}, {first, second}, {second, first, second}} {
					n, err = store.Insert(ctx, replay)
					require.NoError(t, err)
					require.EqualValues(t, 0, n)
				}
				require.EqualValues(t, 2, count(t, b.pool))

				// Both in one batch, never stored before: both written.
				third, fourth := record("y", 3), record("y", 4)
				fourth.RequestID = third.RequestID
				n, err = store.Insert(ctx, []prediction.Record{third, fourth})
				require.NoError(t, err)
				require.EqualValues(t, 2, n)
				n, err = store.Insert(ctx, []prediction.Record{fourth, third})
				require.NoError(t, err)
				require.EqualValues(t, 0, n)
				require.EqualValues(t, 4, count(t, b.pool))
			})

			t.Run("DuplicateWithinOneBatchIsWrittenOnce", func(t *testing.T) {
				t.Parallel()
				store, b := setup(t, path.opt)
				r := record("d", 1)
				n, err := store.Insert(context.Background(), []prediction.Record{r, r, r})
				require.NoError(t, err)
				require.EqualValues(t, 1, n)
				require.EqualValues(t, 1, count(t, b.pool))
			})

			t.Run("ZeroCreatedAtGetsNow", func(t *testing.T) {
				t.Parallel()
				store, _ := setup(t, path.opt)
				r := record("z", 1)
				r.CreatedAt = time.Time{}
				before := time.Now().Add(-time.Second)
				_, err := store.Insert(context.Background(), []prediction.Record{r})
				require.NoError(t, err)
				got, err := store.Get(context.Background(), r.RequestID)
				require.NoError(t, err)
				require.True(t, got.CreatedAt.After(before))
			})

			t.Run("ManyRecordsInOneCall", func(t *testing.T) {
				t.Parallel()
				store, b := setup(t, path.opt)
				n, err := store.Insert(context.Background(), records("m", 2000))
				require.NoError(t, err)
				require.EqualValues(t, 2000, n)
				require.EqualValues(t, 2000, count(t, b.pool))
			})
		})
	}

	t.Run("InsideATransactionUsesASavepoint", func(t *testing.T) {
		t.Parallel()
		pool := pgtest.New(t)
		ctx := context.Background()
		err := postgres.WithTx(ctx, pool, func(tx pgx.Tx) error {
			n, err := predstore.New(tx, predstore.WithCopyThreshold(1)).Insert(ctx, records("tx", 5))
			require.EqualValues(t, 5, n)
			return err
		})
		require.NoError(t, err)
		require.EqualValues(t, 5, count(t, pool))
	})

	t.Run("EmptyIsANoOp", func(t *testing.T) {
		t.Parallel()
		store, _ := setup(t)
		n, err := store.Insert(context.Background(), nil)
		require.NoError(t, err)
		require.Zero(t, n)
	})

	t.Run("UnreachableServerIsUnavailable", func(t *testing.T) {
		t.Parallel()
		port, err := localsvc.FreePort()
		require.NoError(t, err)
		pool, err := postgres.Open(context.Background(), fmt.Sprintf("postgres://postgres@127.0.0.1:%d/x?sslmode=disable&connect_timeout=1", port), 2)
		require.NoError(t, err)
		t.Cleanup(pool.Close)
		_, err = predstore.New(pool).Insert(context.Background(), records("u", 1))
		require.Error(t, err)
		require.True(t, postgres.IsUnavailable(err), "got %v", err)
	})
}

func TestGet(t *testing.T) {
	t.Parallel()
	store, b := setup(t)
	ctx := context.Background()
	recs := records("g", 3)
	recs[2].RequestID = "424242" // a request id made of digits
	_, err := store.Insert(ctx, recs)
	require.NoError(t, err)

	t.Run("ByRequestID", func(t *testing.T) {
		got, err := store.Get(ctx, "g-1")
		require.NoError(t, err)
		require.Equal(t, "g-1", got.RequestID)
	})

	t.Run("ByID", func(t *testing.T) {
		var id int64
		require.NoError(t, b.pool.QueryRow(ctx, "SELECT id FROM predictions WHERE request_id = 'g-0'").Scan(&id))
		got, err := store.Get(ctx, strconv.FormatInt(id, 10))
		require.NoError(t, err)
		require.Equal(t, id, got.ID)
		require.Equal(t, "g-0", got.RequestID)
	})

	t.Run("DigitsThatAreNoIDMatchTheRequestID", func(t *testing.T) {
		got, err := store.Get(ctx, "424242")
		require.NoError(t, err)
		require.Equal(t, "424242", got.RequestID)
	})

	t.Run("UnknownIsErrNotFound", func(t *testing.T) {
		for _, key := range []string{"nope", "999999999", "", "-1"} {
			_, err := store.Get(ctx, key)
			require.ErrorIs(t, err, predstore.ErrNotFound, "key %q", key)
		}
	})
}

func TestList(t *testing.T) {
	t.Parallel()
	store, _ := setup(t)
	ctx := context.Background()
	// 25 records: odd ones on v2.0.0; two share a created_at to exercise the id tie-break.
	recs := records("l", 25)
	for i := range recs {
		if i%2 == 1 {
			recs[i].ModelVersion = "v2.0.0"
		}
	}
	recs[11].CreatedAt = recs[10].CreatedAt
	_, err := store.Insert(ctx, recs)
	require.NoError(t, err)

	all := func(f predstore.Filter) []string {
		t.Helper()
		var ids []string
		for pages := 0; ; pages++ {
			require.Less(t, pages, 100, "pagination does not end")
			items, next, err := store.List(ctx, f)
			require.NoError(t, err)
			for _, it := range items {
				ids = append(ids, it.RequestID)
			}
			if next == "" {
				return ids
			}
			require.Len(t, items, f.Limit, "a page before the last is full")
			f.Cursor = next
		}
	}

	t.Run("NewestFirstAcrossPagesEachOnce", func(t *testing.T) {
		got := all(predstore.Filter{Limit: 7})
		require.Len(t, got, 25)
		want := make([]string, 0, 25)
		for i := 24; i >= 0; i-- {
			want = append(want, "l-"+strconv.Itoa(i))
		}
		// l-10 and l-11 share created_at: the larger id (l-11, inserted later) comes first.
		require.Equal(t, want, got)
	})

	t.Run("ExactPageSizeHasNoEmptyExtraPage", func(t *testing.T) {
		items, next, err := store.List(ctx, predstore.Filter{Limit: 25})
		require.NoError(t, err)
		require.Len(t, items, 25)
		require.Empty(t, next)
	})

	t.Run("FilterByModelVersion", func(t *testing.T) {
		got := all(predstore.Filter{ModelVersion: "v2.0.0", Limit: 5})
		require.Len(t, got, 12)
		for _, id := range got {
			n, _ := strconv.Atoi(id[2:])
			require.Equal(t, 1, n%2, id)
		}
	})

	t.Run("FilterByTimeIsHalfOpen", func(t *testing.T) {
		got := all(predstore.Filter{From: base.Add(5 * time.Millisecond), To: base.Add(9 * time.Millisecond), Limit: 2})
		require.Equal(t, []string{"l-8", "l-7", "l-6", "l-5"}, got)
	})

	t.Run("DefaultAndMaximumLimit", func(t *testing.T) {
		items, _, err := store.List(ctx, predstore.Filter{})
		require.NoError(t, err)
		require.Len(t, items, 25) // fewer than DefaultLimit rows
		items, _, err = store.List(ctx, predstore.Filter{Limit: predstore.MaxLimit * 10})
		require.NoError(t, err)
		require.Len(t, items, 25)
	})

	t.Run("ForeignCursorIsErrInvalidCursor", func(t *testing.T) {
		for _, c := range []string{"x", "!!!", "AAAA", "AQ"} {
			_, _, err := store.List(ctx, predstore.Filter{Cursor: c})
			require.ErrorIs(t, err, predstore.ErrInvalidCursor, "cursor %q", c)
		}
	})
}
