package prediction_test

import (
	"context"
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/pgtest"
	"github.com/predq/predq/internal/postgres"
	"github.com/predq/predq/internal/prediction"
)

type storeBundle struct {
	pool *pgxpool.Pool
}

func setupStore(t *testing.T, opts ...prediction.StoreOption) (*prediction.Store, storeBundle) {
	t.Helper()
	pool := pgtest.New(t)
	return prediction.NewStore(pool, opts...), storeBundle{pool: pool}
}

var base = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// record is the factory of test records: deterministic, 60 features, one per i.
func storeRecord(prefix string, i int) prediction.Record {
	feats := make([]float64, 60)
	for j := range feats {
		feats[j] = float64(i*60+j)/7 - 3.25
	}
	p := float64(i%100) / 100
	class := prediction.ClassNegative
	if p > 0.5 {
		class = prediction.ClassPositive
	}
	id, at := prefix+"-"+strconv.Itoa(i), base.Add(time.Duration(i)*time.Millisecond)
	return prediction.Record{
		ID: prediction.NewID(id, at), RequestID: id, UserID: "alice", Features: feats,
		Prediction: p, Confidence: max(p, 1-p), PredictionClass: class, ModelVersion: "v1.0.0",
		Preprocessing: "standard", ConfidenceThreshold: 0.6, Cached: i%3 == 0, LatencyMS: 1.25,
		CreatedAt: at,
	}
}

func storeRecords(prefix string, n int) []prediction.Record {
	out := make([]prediction.Record, n)
	for i := range out {
		out[i] = storeRecord(prefix, i)
	}
	return out
}

func countStored(t *testing.T, pool *pgxpool.Pool) int64 {
	t.Helper()
	var n int64
	require.NoError(t, pool.QueryRow(context.Background(), "SELECT count(*) FROM predictions").Scan(&n))
	return n
}

func TestInsert(t *testing.T) {
	t.Parallel()
	// direct: Insert as it is (the direct COPY, then the unnest path on a conflict);
	// direct+copy: the same with the temporary-table path on a conflict; unnest and copy: the
	// conflict-handling paths alone.
	paths := []struct {
		name string
		opts []prediction.StoreOption
	}{
		{"direct", nil},
		{"direct+copy", []prediction.StoreOption{prediction.WithCopyThreshold(1)}},
		{"unnest", []prediction.StoreOption{prediction.WithoutDirectCopy(), prediction.WithCopyThreshold(1 << 30)}},
		{"copy", []prediction.StoreOption{prediction.WithoutDirectCopy(), prediction.WithCopyThreshold(1)}},
	}
	for _, path := range paths {
		t.Run(path.name, func(t *testing.T) {
			t.Parallel()

			t.Run("StoresEveryColumn", func(t *testing.T) {
				t.Parallel()
				store, b := setupStore(t, path.opts...)
				ctx := context.Background()
				recs := storeRecords("a", 4)
				recs[1].UserID = "" // stored as NULL, read back as ""
				recs[2].Features = []float64{1e-300, -0.1, 123.456789012345678, 1000, math.MaxFloat64, -0}
				recs[3].CreatedAt = time.Date(1999, 12, 31, 23, 59, 59, 999999000, time.UTC) // before Postgres's epoch
				recs[3].PredictionClass, recs[3].Preprocessing = "Mine ⛏", "minmax"
				n, err := store.Insert(ctx, recs)
				require.NoError(t, err)
				require.EqualValues(t, 4, n)
				require.EqualValues(t, 4, countStored(t, b.pool))
				for _, r := range recs {
					got, err := store.Get(ctx, r.UserID, r.ID.String())
					require.NoError(t, err)
					require.Equal(t, r.ID, got.ID)
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
				store, b := setupStore(t, path.opts...)
				ctx := context.Background()
				recs := storeRecords("r", 20)
				n, err := store.Insert(ctx, recs)
				require.NoError(t, err)
				require.EqualValues(t, 20, n)

				n, err = store.Insert(ctx, recs)
				require.NoError(t, err)
				require.EqualValues(t, 0, n)

				// Half old, half new: only the new half is written.
				mixed := append(append([]prediction.Record{}, recs[10:]...), storeRecords("s", 10)...)
				n, err = store.Insert(ctx, mixed)
				require.NoError(t, err)
				require.EqualValues(t, 10, n)
				require.EqualValues(t, 30, countStored(t, b.pool))
			})

			t.Run("ARequestIDReusedByAnotherPredictionKeepsBoth", func(t *testing.T) {
				t.Parallel()
				store, b := setupStore(t, path.opts...)
				ctx := context.Background()
				// Two predictions a client sent with the same X-Request-ID: another time,
				// other features, an id each.
				first, second := storeRecord("x", 1), storeRecord("x", 2)
				second.RequestID = first.RequestID

				n, err := store.Insert(ctx, []prediction.Record{first})
				require.NoError(t, err)
				require.EqualValues(t, 1, n)
				n, err = store.Insert(ctx, []prediction.Record{second})
				require.NoError(t, err)
				require.EqualValues(t, 1, n, "the second prediction is stored too")
				for _, r := range []prediction.Record{first, second} {
					got, err := store.Get(ctx, "alice", r.ID.String())
					require.NoError(t, err)
					require.Equal(t, r.ID, got.ID)
					require.Equal(t, first.RequestID, got.RequestID, "both keep the client's request id")
					require.Equal(t, r.Features, got.Features)
					require.Equal(t, r.Prediction, got.Prediction)
				}
				got, err := store.Get(ctx, "alice", first.RequestID)
				require.NoError(t, err)
				require.Equal(t, second.ID, got.ID, "by request id: the newest")

				// Replays of either, alone or together, write nothing.
				for _, replay := range [][]prediction.Record{{second}, {first}, {first, second}, {second, first, second}} {
					n, err = store.Insert(ctx, replay)
					require.NoError(t, err)
					require.EqualValues(t, 0, n)
				}
				require.EqualValues(t, 2, countStored(t, b.pool))

				// Both in one batch, never stored before: both written.
				third, fourth := storeRecord("y", 3), storeRecord("y", 4)
				fourth.RequestID = third.RequestID
				n, err = store.Insert(ctx, []prediction.Record{third, fourth})
				require.NoError(t, err)
				require.EqualValues(t, 2, n)
				n, err = store.Insert(ctx, []prediction.Record{fourth, third})
				require.NoError(t, err)
				require.EqualValues(t, 0, n)
				require.EqualValues(t, 4, countStored(t, b.pool))
			})

			t.Run("DuplicateWithinOneBatchIsWrittenOnce", func(t *testing.T) {
				t.Parallel()
				store, b := setupStore(t, path.opts...)
				r := storeRecord("d", 1)
				n, err := store.Insert(context.Background(), []prediction.Record{r, r, r})
				require.NoError(t, err)
				require.EqualValues(t, 1, n)
				require.EqualValues(t, 1, countStored(t, b.pool))
			})

			t.Run("NoFeaturesAreAnEmptyArray", func(t *testing.T) {
				t.Parallel()
				store, _ := setupStore(t, path.opts...)
				r := storeRecord("e", 1)
				r.Features = nil
				n, err := store.Insert(context.Background(), []prediction.Record{r})
				require.NoError(t, err)
				require.EqualValues(t, 1, n)
				got, err := store.Get(context.Background(), "alice", r.RequestID)
				require.NoError(t, err)
				require.Empty(t, got.Features)
			})

			t.Run("ZeroCreatedAtGetsNow", func(t *testing.T) {
				t.Parallel()
				store, _ := setupStore(t, path.opts...)
				r := storeRecord("z", 1)
				r.CreatedAt = time.Time{}
				before := time.Now().Add(-time.Second)
				_, err := store.Insert(context.Background(), []prediction.Record{r})
				require.NoError(t, err)
				got, err := store.Get(context.Background(), "alice", r.RequestID)
				require.NoError(t, err)
				require.True(t, got.CreatedAt.After(before))
			})

			t.Run("ZeroIDGetsTheDerivedID", func(t *testing.T) {
				t.Parallel()
				// A record of an older api's persist task: no id. It gets the one derived from
				// its request id and created_at, every time: its replays store nothing.
				store, b := setupStore(t, path.opts...)
				ctx := context.Background()
				r := storeRecord("legacy", 1)
				r.ID = uuid.Nil
				for want := int64(1); want >= 0; want-- {
					n, err := store.Insert(ctx, []prediction.Record{r})
					require.NoError(t, err)
					require.Equal(t, want, n)
				}
				got, err := store.Get(ctx, "alice", r.RequestID)
				require.NoError(t, err)
				require.Equal(t, prediction.DerivedID(r.RequestID, r.CreatedAt), got.ID)
				require.EqualValues(t, 1, countStored(t, b.pool))
			})

			t.Run("ManyRecordsInOneCall", func(t *testing.T) {
				t.Parallel()
				store, b := setupStore(t, path.opts...)
				n, err := store.Insert(context.Background(), storeRecords("m", 2000))
				require.NoError(t, err)
				require.EqualValues(t, 2000, n)
				require.EqualValues(t, 2000, countStored(t, b.pool))
			})
		})
	}

	t.Run("InsideATransactionUsesASavepoint", func(t *testing.T) {
		t.Parallel()
		pool := pgtest.New(t)
		ctx := context.Background()
		err := postgres.WithTx(ctx, pool, func(tx pgx.Tx) error {
			n, err := prediction.NewStore(tx, prediction.WithCopyThreshold(1)).Insert(ctx, storeRecords("tx", 5))
			require.EqualValues(t, 5, n)
			return err
		})
		require.NoError(t, err)
		require.EqualValues(t, 5, countStored(t, pool))
	})

	t.Run("InsideATransactionAReplayDoesNotAbortIt", func(t *testing.T) {
		t.Parallel()
		pool := pgtest.New(t)
		ctx := context.Background()
		recs := storeRecords("txr", 26)
		err := postgres.WithTx(ctx, pool, func(tx pgx.Tx) error {
			store := prediction.NewStore(tx)
			n, err := store.Insert(ctx, recs[:13])
			require.NoError(t, err)
			require.EqualValues(t, 13, n)
			n, err = store.Insert(ctx, recs) // half of it stored already
			require.NoError(t, err)
			require.EqualValues(t, 13, n)
			n, err = store.Insert(ctx, recs)
			require.NoError(t, err)
			require.EqualValues(t, 0, n)
			return nil
		})
		require.NoError(t, err, "the transaction commits")
		require.EqualValues(t, 26, countStored(t, pool))
	})

	t.Run("EmptyIsANoOp", func(t *testing.T) {
		t.Parallel()
		store, _ := setupStore(t)
		n, err := store.Insert(context.Background(), nil)
		require.NoError(t, err)
		require.Zero(t, n)
	})

	t.Run("UnreachableServerIsUnavailable", func(t *testing.T) {
		t.Parallel()
		_, err := prediction.NewStore(pgtest.Unreachable(t)).Insert(context.Background(), storeRecords("u", 1))
		require.Error(t, err)
		require.True(t, postgres.IsUnavailable(err), "got %v", err)
	})
}

// opsTracer records the statements a pool runs, in order: "copy <table>" for a COPY, the
// first word of the SQL otherwise, followed by the SQLSTATE when it failed.
type opsTracer struct {
	mu  sync.Mutex
	ops []string
}

type opKey struct{}

func (o *opsTracer) TraceQueryStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryStartData) context.Context {
	word, _, _ := strings.Cut(strings.TrimSpace(data.SQL), " ")
	return context.WithValue(ctx, opKey{}, strings.ToLower(word))
}

func (o *opsTracer) TraceQueryEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceQueryEndData) {
	o.add(ctx.Value(opKey{}).(string), data.Err)
}

func (o *opsTracer) TraceCopyFromStart(ctx context.Context, _ *pgx.Conn, data pgx.TraceCopyFromStartData) context.Context {
	return context.WithValue(ctx, opKey{}, "copy "+data.TableName.Sanitize())
}

func (o *opsTracer) TraceCopyFromEnd(ctx context.Context, _ *pgx.Conn, data pgx.TraceCopyFromEndData) {
	o.add(ctx.Value(opKey{}).(string), data.Err)
}

func (o *opsTracer) add(op string, err error) {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		op += " " + pgErr.Code
	} else if err != nil {
		op += " error"
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ops = append(o.ops, op)
}

// take returns the statements recorded since the last take.
func (o *opsTracer) take() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	ops := o.ops
	o.ops = nil
	return ops
}

// setupTraced is setup with a pool whose statements are recorded.
func setupTraced(t *testing.T, opts ...prediction.StoreOption) (*prediction.Store, *pgxpool.Pool, *opsTracer) {
	t.Helper()
	cfg, err := pgxpool.ParseConfig(pgtest.NewURL(t))
	require.NoError(t, err)
	tr := &opsTracer{}
	cfg.ConnConfig.Tracer = tr
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	return prediction.NewStore(pool, opts...), pool, tr
}

// requireStored checks that every record of recs is stored under its id, with its own request
// id, features and prediction.
func requireStored(t *testing.T, store *prediction.Store, recs []prediction.Record) {
	t.Helper()
	for _, r := range recs {
		id := r.ID.String()
		got, err := store.Get(context.Background(), r.UserID, id)
		require.NoError(t, err, id)
		require.Equal(t, r.RequestID, got.RequestID, id)
		require.Equal(t, r.Features, got.Features, id)
		require.Equal(t, r.Prediction, got.Prediction, id)
		require.True(t, r.CreatedAt.Equal(got.CreatedAt), id)
	}
}

// TestInsertDirectCopy checks the direct COPY of Insert and its fallback to the
// conflict-handling path (with either of its two forms) on a unique violation, by what is
// stored and by the statements run.
func TestInsertDirectCopy(t *testing.T) {
	t.Parallel()
	const directCopy, failedCopy = `copy "predictions"`, `copy "predictions" 23505`
	for _, fallback := range []struct {
		name string
		opts []prediction.StoreOption
	}{
		{"unnest", nil},
		{"copy", []prediction.StoreOption{prediction.WithCopyThreshold(1)}},
	} {
		t.Run(fallback.name, func(t *testing.T) {
			t.Parallel()

			t.Run("ABatchIsStoredByOneCopy", func(t *testing.T) {
				t.Parallel()
				store, pool, tr := setupTraced(t, fallback.opts...)
				recs := storeRecords("c", 26)
				n, err := store.Insert(context.Background(), recs)
				require.NoError(t, err)
				require.EqualValues(t, 26, n)
				require.Equal(t, []string{directCopy}, tr.take(), "one COPY, nothing else")
				require.EqualValues(t, 26, countStored(t, pool))
				requireStored(t, store, recs)
			})

			t.Run("AReplayedBatchStoresNothingTwice", func(t *testing.T) {
				t.Parallel()
				store, pool, tr := setupTraced(t, fallback.opts...)
				ctx := context.Background()
				recs := storeRecords("r", 26)
				n, err := store.Insert(ctx, recs)
				require.NoError(t, err)
				require.EqualValues(t, 26, n)
				for range 2 {
					tr.take()
					n, err = store.Insert(ctx, recs)
					require.NoError(t, err)
					require.EqualValues(t, 0, n)
					ops := tr.take()
					require.Equal(t, failedCopy, ops[0], "the direct COPY fails: %q", ops)
					require.Greater(t, len(ops), 1, "then the conflict-handling path runs")
					require.EqualValues(t, 26, countStored(t, pool))
				}
				requireStored(t, store, recs)
			})

			t.Run("ARequestIDTakenByAnotherPredictionIsNoConflict", func(t *testing.T) {
				t.Parallel()
				store, pool, tr := setupTraced(t, fallback.opts...)
				ctx := context.Background()
				recs := storeRecords("t", 26)
				// Another prediction, stored before, that a client sent with the request id of
				// recs[5]: another time, other features, another id.
				other := storeRecord("other", 1000)
				other.RequestID = recs[5].RequestID
				n, err := store.Insert(ctx, []prediction.Record{other})
				require.NoError(t, err)
				require.EqualValues(t, 1, n)
				tr.take()

				n, err = store.Insert(ctx, recs)
				require.NoError(t, err)
				require.EqualValues(t, 26, n, "every record is stored")
				require.Equal(t, []string{directCopy}, tr.take(), "by the direct COPY: request ids are no key")
				require.EqualValues(t, 27, countStored(t, pool))
				requireStored(t, store, recs)
				requireStored(t, store, []prediction.Record{other})

				// A replay of the batch stores nothing.
				n, err = store.Insert(ctx, recs)
				require.NoError(t, err)
				require.EqualValues(t, 0, n)
				require.EqualValues(t, 27, countStored(t, pool))
			})

			t.Run("HalfStoredStoresTheOtherHalf", func(t *testing.T) {
				t.Parallel()
				store, pool, tr := setupTraced(t, fallback.opts...)
				ctx := context.Background()
				recs := storeRecords("h", 26)
				n, err := store.Insert(ctx, recs[:13])
				require.NoError(t, err)
				require.EqualValues(t, 13, n)
				tr.take()

				n, err = store.Insert(ctx, recs)
				require.NoError(t, err)
				require.EqualValues(t, 13, n)
				ops := tr.take()
				require.Equal(t, failedCopy, ops[0], "the direct COPY fails: %q", ops)
				require.EqualValues(t, 26, countStored(t, pool))
				requireStored(t, store, recs)
			})

			t.Run("ADataErrorIsReturnedAsIs", func(t *testing.T) {
				t.Parallel()
				store, pool, tr := setupTraced(t, fallback.opts...)
				recs := storeRecords("bad", 26)
				recs[7].UserID = "\xff" // not UTF-8
				_, err := store.Insert(context.Background(), recs)
				require.True(t, postgres.IsCode(err, "22021"), "got %v", err)
				require.Equal(t, []string{directCopy + " 22021"}, tr.take(), "no fallback for other errors")
				require.EqualValues(t, 0, countStored(t, pool), "a failed COPY stores nothing")
			})
		})
	}
}

func TestGet(t *testing.T) {
	t.Parallel()
	store, _ := setupStore(t)
	ctx := context.Background()
	recs := storeRecords("g", 8)
	recs[2].RequestID = "424242" // a request id made of digits
	// The same request id, sent twice by alice and once by bob: each prediction its own row.
	recs[3].RequestID, recs[4].RequestID, recs[5].RequestID = "again", "again", "again"
	recs[5].UserID = "bob"
	// A request id shaped like a UUID (the api makes UUIDv7 request ids).
	recs[6].RequestID = "0199f0c4-1b2a-7c3d-8e4f-5a6b7c8d9e0f"
	recs[7].UserID = "" // stored without a user id
	_, err := store.Insert(ctx, recs)
	require.NoError(t, err)

	t.Run("ByRequestID", func(t *testing.T) {
		got, err := store.Get(ctx, "alice", "g-1")
		require.NoError(t, err)
		require.Equal(t, recs[1].ID, got.ID)
		require.Equal(t, "g-1", got.RequestID)
	})

	t.Run("ByID", func(t *testing.T) {
		got, err := store.Get(ctx, "alice", recs[0].ID.String())
		require.NoError(t, err)
		require.Equal(t, recs[0].ID, got.ID)
		require.Equal(t, "g-0", got.RequestID)
	})

	t.Run("DigitsMatchTheRequestID", func(t *testing.T) {
		got, err := store.Get(ctx, "alice", "424242")
		require.NoError(t, err)
		require.Equal(t, recs[2].ID, got.ID)
	})

	t.Run("AUUIDThatIsNoIDMatchesTheRequestID", func(t *testing.T) {
		got, err := store.Get(ctx, "alice", recs[6].RequestID)
		require.NoError(t, err)
		require.Equal(t, recs[6].ID, got.ID)
	})

	t.Run("AReusedRequestIDFindsTheTenantsNewest", func(t *testing.T) {
		got, err := store.Get(ctx, "alice", "again")
		require.NoError(t, err)
		require.Equal(t, recs[4].ID, got.ID, "alice's newer one; bob's, newer still, is not alice's")
		got, err = store.Get(ctx, "bob", "again")
		require.NoError(t, err)
		require.Equal(t, recs[5].ID, got.ID)
		got, err = store.Get(ctx, "alice", recs[3].ID.String())
		require.NoError(t, err)
		require.Equal(t, recs[3].ID, got.ID, "the older one by its id")
	})

	t.Run("AnotherTenantsPredictionIsNotFound", func(t *testing.T) {
		for _, key := range []string{recs[5].ID.String(), "g-1", recs[0].ID.String()} {
			_, err := store.Get(ctx, "carol", key)
			require.ErrorIs(t, err, prediction.ErrNotFound, "key %q", key)
		}
		_, err := store.Get(ctx, "bob", recs[4].ID.String())
		require.ErrorIs(t, err, prediction.ErrNotFound)
	})

	t.Run("NoTenantIsTheRowsWithoutAUserID", func(t *testing.T) {
		got, err := store.Get(ctx, "", "g-7")
		require.NoError(t, err)
		require.Equal(t, recs[7].ID, got.ID)
		_, err = store.Get(ctx, "", "g-1")
		require.ErrorIs(t, err, prediction.ErrNotFound)
		_, err = store.Get(ctx, "alice", "g-7")
		require.ErrorIs(t, err, prediction.ErrNotFound)
	})

	t.Run("UnknownIsErrNotFound", func(t *testing.T) {
		for _, key := range []string{"nope", "999999999", "", "-1", uuid.NewString()} {
			_, err := store.Get(ctx, "alice", key)
			require.ErrorIs(t, err, prediction.ErrNotFound, "key %q", key)
		}
	})
}

func TestList(t *testing.T) {
	t.Parallel()
	store, _ := setupStore(t)
	ctx := context.Background()
	// 25 records: odd ones on v2.0.0; two share a created_at to exercise the id tie-break.
	recs := storeRecords("l", 25)
	for i := range recs {
		if i%2 == 1 {
			recs[i].ModelVersion = "v2.0.0"
		}
	}
	recs[11].CreatedAt = recs[10].CreatedAt
	recs[20].RequestID, recs[22].RequestID = "l-3", "l-3" // a request id sent three times
	_, err := store.Insert(ctx, recs)
	require.NoError(t, err)

	all := func(f prediction.ListFilter) []string {
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
		got := all(prediction.ListFilter{Limit: 7})
		require.Len(t, got, 25)
		want := make([]string, 0, 25)
		for i := 24; i >= 0; i-- {
			want = append(want, recs[i].RequestID)
		}
		// l-10 and l-11 share created_at: the larger id (l-11's, made later: UUIDv7) comes first.
		require.Equal(t, want, got)
	})

	t.Run("ExactPageSizeHasNoEmptyExtraPage", func(t *testing.T) {
		items, next, err := store.List(ctx, prediction.ListFilter{Limit: 25})
		require.NoError(t, err)
		require.Len(t, items, 25)
		require.Empty(t, next)
	})

	t.Run("FilterByModelVersion", func(t *testing.T) {
		got := all(prediction.ListFilter{ModelVersion: "v2.0.0", Limit: 5})
		require.Len(t, got, 12)
		for _, id := range got {
			n, _ := strconv.Atoi(id[2:])
			require.Equal(t, 1, n%2, id)
		}
	})

	t.Run("FilterByRequestIDListsEveryPredictionSentWithIt", func(t *testing.T) {
		items, next, err := store.List(ctx, prediction.ListFilter{RequestID: "l-3"})
		require.NoError(t, err)
		require.Empty(t, next)
		got := make([]uuid.UUID, len(items))
		for i, it := range items {
			got[i] = it.ID
		}
		require.Equal(t, []uuid.UUID{recs[22].ID, recs[20].ID, recs[3].ID}, got, "newest first")
	})

	t.Run("FilterByTimeIsHalfOpen", func(t *testing.T) {
		got := all(prediction.ListFilter{From: base.Add(5 * time.Millisecond), To: base.Add(9 * time.Millisecond), Limit: 2})
		require.Equal(t, []string{"l-8", "l-7", "l-6", "l-5"}, got)
	})

	t.Run("DefaultAndMaximumLimit", func(t *testing.T) {
		items, _, err := store.List(ctx, prediction.ListFilter{})
		require.NoError(t, err)
		require.Len(t, items, 25) // fewer than DefaultLimit rows
		items, _, err = store.List(ctx, prediction.ListFilter{Limit: prediction.MaxListLimit * 10})
		require.NoError(t, err)
		require.Len(t, items, 25)
	})

	t.Run("ForeignCursorIsErrInvalidCursor", func(t *testing.T) {
		// The last: a cursor of the bigint ids before migration 00018 (version 1).
		for _, c := range []string{"x", "!!!", "AAAA", "AQ", "AQAGRCaTvXwAAAAAAAAAAAc"} {
			_, _, err := store.List(ctx, prediction.ListFilter{Cursor: c})
			require.ErrorIs(t, err, prediction.ErrInvalidCursor, "cursor %q", c)
		}
	})
}

// The direct COPY (pgx's CopyFrom) is one statement; these check that the connection
// stays in step with its backend whatever the COPY's outcome, on a pool of one connection so
// that every statement after it runs on the same one.
func TestDirectCopyKeepsTheConnectionInStep(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.NewURL(t)
	pool, err := postgres.Open(ctx, url, 1)
	require.NoError(t, err)
	t.Cleanup(pool.Close)
	store := prediction.NewStore(pool)
	backend := func() int32 {
		var pid int32
		require.NoError(t, pool.QueryRow(ctx, "SELECT pg_backend_pid()").Scan(&pid))
		return pid
	}
	admin, err := pgx.Connect(ctx, url)
	require.NoError(t, err)
	t.Cleanup(func() { _ = admin.Close(context.Background()) })

	first := storeRecords("s", 26)
	n, err := store.Insert(ctx, first)
	require.NoError(t, err)
	require.EqualValues(t, 26, n)
	pid := backend()

	// A COPY that fails on its data (a stored request id): the backend ignores the rest of
	// what was sent, the conflict-handling path runs on the same connection.
	n, err = store.Insert(ctx, first)
	require.NoError(t, err)
	require.Zero(t, n)
	require.Equal(t, pid, backend(), "the same connection")

	// A statement that fails before the COPY starts (no such table).
	_, err = admin.Exec(ctx, "ALTER TABLE predictions RENAME TO predictions_away")
	require.NoError(t, err)
	_, err = store.Insert(ctx, storeRecords("gone", 26))
	require.True(t, postgres.IsCode(err, "42P01"), "got %v", err)
	_, err = admin.Exec(ctx, "ALTER TABLE predictions_away RENAME TO predictions")
	require.NoError(t, err)
	second := storeRecords("t", 26)
	n, err = store.Insert(ctx, second)
	require.NoError(t, err)
	require.EqualValues(t, 26, n)
	require.Equal(t, pid, backend(), "the same connection")

	// A COPY whose context ends while the backend waits for a lock: the connection is
	// closed (its state is unknown), and the batch, replayed as the persist worker would,
	// is stored once whether or not the backend went on to commit it.
	tx, err := admin.Begin(ctx)
	require.NoError(t, err)
	_, err = tx.Exec(ctx, "LOCK TABLE predictions IN ACCESS EXCLUSIVE MODE")
	require.NoError(t, err)
	third := storeRecords("u", 26)
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = store.Insert(short, third)
	cancel()
	require.Error(t, err)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	require.NoError(t, tx.Rollback(ctx))
	n, err = store.Insert(ctx, third)
	require.NoError(t, err)
	require.LessOrEqual(t, n, int64(26))
	require.NotEqual(t, pid, backend(), "a new connection")
	require.EqualValues(t, 78, countStored(t, pool))
	requireStored(t, store, slices.Concat(first, second, third))
}

func TestDeleteOlderThan(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s, b := setupStore(t)
	recs := make([]prediction.Record, 10)
	for i := range recs {
		recs[i] = storeRecord("ret", i)
		recs[i].CreatedAt = time.Now().Add(-time.Duration(i) * 24 * time.Hour)
	}
	_, err := s.Insert(ctx, recs)
	require.NoError(t, err)

	n, err := s.DeleteOlderThan(ctx, time.Now().Add(-(6*24*time.Hour + time.Hour)))
	require.NoError(t, err)
	require.EqualValues(t, 3, n, "the records of 7, 8 and 9 days ago")
	var left int
	require.NoError(t, b.pool.QueryRow(ctx, `SELECT count(*) FROM predictions WHERE created_at > now() - interval '7 days'`).Scan(&left))
	require.Equal(t, 7, left)
	total, err := s.Count(ctx)
	require.NoError(t, err)
	require.EqualValues(t, 7, total)
}
