package job

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"
)

func submitRows(t *testing.T, b bundle, o Owner, n int, priority string) Job {
	t.Helper()
	op := opts()
	op.Priority = priority
	j, err := b.svc.Submit(context.Background(), o, op, FormatNDJSON, NewNDJSONSource(strings.NewReader(ndjson(b.rows, n))), nil)
	require.NoError(t, err)
	return j
}

func claim(t *testing.T, b bundle) Claim {
	t.Helper()
	c, ok, err := b.svc.ClaimNext(context.Background())
	require.NoError(t, err)
	require.True(t, ok, "a chunk is claimable")
	return c
}

func TestClaimNextSharesByKey(t *testing.T) {
	t.Parallel()

	t.Run("a key arriving late goes next, then the keys alternate", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 10)
		a := Owner{ID: "key-a", Name: "a"}
		k := Owner{ID: "key-b", Name: "b"}
		big := submitRows(t, b, a, 200, "") // 20 chunks
		for range 3 {
			require.Equal(t, big.ID, claim(t, b).JobID)
		}
		// B's two one-chunk jobs start level with A (no credit from before), and take two
		// of the next four claims although 17 of A's chunks were queued first.
		small1 := submitRows(t, b, k, 10, "")
		small2 := submitRows(t, b, k, 10, "")
		var got []uuid.UUID
		for range 4 {
			got = append(got, claim(t, b).JobID)
		}
		require.ElementsMatch(t, []uuid.UUID{big.ID, big.ID, small1.ID, small2.ID}, got)
		// Only A is left.
		require.Equal(t, big.ID, claim(t, b).JobID)
	})

	t.Run("weights divide the claims", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 10)
		a := Owner{ID: "key-a", Name: "a", Weight: 1}
		k := Owner{ID: "key-b", Name: "b", Weight: 3}
		ja := submitRows(t, b, a, 500, "")
		jb := submitRows(t, b, k, 500, "")
		n := map[uuid.UUID]int{}
		for range 40 {
			n[claim(t, b).JobID]++
		}
		require.InDelta(t, 10, n[ja.ID], 1, "weight 1 of 4")
		require.InDelta(t, 30, n[jb.ID], 1, "weight 3 of 4")
	})

	t.Run("priority orders a key's own jobs", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 10)
		low := submitRows(t, b, owner, 20, PriorityLow)
		normal := submitRows(t, b, owner, 10, "")
		high := submitRows(t, b, owner, 10, PriorityHigh)
		var got []uuid.UUID
		for range 4 {
			got = append(got, claim(t, b).JobID)
		}
		require.Equal(t, []uuid.UUID{high.ID, normal.ID, low.ID, low.ID}, got)
		j, err := b.svc.Get(context.Background(), owner, high.ID)
		require.NoError(t, err)
		require.Equal(t, PriorityHigh, j.Priority)
		require.Equal(t, StatusRunning, j.Status, "claiming a chunk starts its job")
	})

	t.Run("a bad priority is refused", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 10)
		op := opts()
		op.Priority = "urgent"
		_, err := b.svc.Submit(context.Background(), owner, op, FormatNDJSON, NewNDJSONSource(strings.NewReader(ndjson(b.rows, 5))), nil)
		require.ErrorContains(t, err, "priority")
	})

	t.Run("claimed chunks are leased; RunNext runs every chunk once", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 10)
		ja := submitRows(t, b, Owner{ID: "key-a"}, 95, "")
		jb := submitRows(t, b, Owner{ID: "key-b"}, 37, "")
		var wg sync.WaitGroup
		var mu sync.Mutex
		ran := 0
		for range 4 {
			wg.Go(func() {
				for {
					ok, err := b.svc.RunNext(context.Background())
					require.NoError(t, err)
					if !ok {
						return
					}
					mu.Lock()
					ran++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		require.Equal(t, 10+4, ran, "each chunk claimed once")
		for _, j := range []Job{ja, jb} {
			got, err := b.svc.Get(context.Background(), Owner{ID: map[uuid.UUID]string{ja.ID: "key-a", jb.ID: "key-b"}[j.ID]}, j.ID)
			require.NoError(t, err)
			require.Equal(t, StatusSucceeded, got.Status)
			require.Equal(t, j.Total, got.Processed)
		}
	})
}

func TestQuotas(t *testing.T) {
	t.Parallel()

	t.Run("queued jobs", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 10)
		o := Owner{ID: "key-q", MaxQueuedJobs: 2}
		submitRows(t, b, o, 5, "")
		submitRows(t, b, o, 5, "")
		_, err := b.svc.Submit(context.Background(), o, opts(), FormatNDJSON, NewNDJSONSource(strings.NewReader(ndjson(b.rows, 5))), nil)
		var qe *QuotaError
		require.ErrorAs(t, err, &qe)
		require.ErrorIs(t, err, ErrQuota)
		require.Equal(t, QuotaQueuedJobs, qe.Quota)
		require.EqualValues(t, 2, qe.Limit)
		require.EqualValues(t, 2, qe.Current)
		require.Positive(t, qe.RetryAfter)
		// Another key is not affected.
		submitRows(t, b, Owner{ID: "key-other", MaxQueuedJobs: 2}, 5, "")
	})

	t.Run("pending rows: refused at the end of the body, nothing stored", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 10)
		o := Owner{ID: "key-r", MaxPendingRows: 150}
		submitRows(t, b, o, 100, "")
		_, err := b.svc.Submit(context.Background(), o, opts(), FormatNDJSON, NewNDJSONSource(strings.NewReader(ndjson(b.rows, 100))), nil)
		var qe *QuotaError
		require.ErrorAs(t, err, &qe)
		require.Equal(t, QuotaPendingRows, qe.Quota)
		require.EqualValues(t, 150, qe.Limit)
		require.EqualValues(t, 100, qe.Current)
		require.EqualValues(t, 100, qe.Requested)
		var jobs int
		require.NoError(t, b.svc.cfg.Pool.QueryRow(context.Background(), `SELECT count(*) FROM jobs WHERE owner = 'key-r'`).Scan(&jobs))
		require.Equal(t, 1, jobs, "the refused job left nothing")
		// 50 rows still fit; once A's rows are done, 150 fit again.
		submitRows(t, b, o, 50, "")
		for {
			ok, err := b.svc.RunNext(context.Background())
			require.NoError(t, err)
			if !ok {
				break
			}
		}
		submitRows(t, b, o, 150, "")
	})

	t.Run("concurrent submissions never overshoot", func(t *testing.T) {
		t.Parallel()
		b := setup(t, 10)
		o := Owner{ID: "key-c", MaxQueuedJobs: 3}
		var wg sync.WaitGroup
		var mu sync.Mutex
		accepted, refused := 0, 0
		for range 8 {
			wg.Go(func() {
				_, err := b.svc.Submit(context.Background(), o, opts(), FormatNDJSON, NewNDJSONSource(strings.NewReader(ndjson(b.rows, 20))), nil)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					accepted++
				case errors.Is(err, ErrQuota):
					refused++
				default:
					t.Error(err)
				}
			})
		}
		wg.Wait()
		require.Equal(t, 3, accepted)
		require.Equal(t, 5, refused)
	})
}
