package tasks_test

import (
	"context"
	"sync"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/tasks"
)

func TestGroupCommitBatchesConcurrentRecords(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rec, _ := newRecorder(t, b, nil)
	gc := tasks.NewGroupCommit(rec, 50, 2)
	const n = 400
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			require.NoError(t, gc.Record(context.Background(), []prediction.Record{record("gc", i, 0.9)}))
		})
	}
	wg.Wait()
	gc.Close()

	tasksInfo, err := b.inspector.ListPendingTasks(tasks.QueueDefault, asynq.PageSize(1000))
	require.NoError(t, err)
	seen := map[string]int{}
	for _, ti := range tasksInfo {
		recs, err := tasks.ParsePersistPayload(ti.Payload)
		require.NoError(t, err)
		require.LessOrEqual(t, len(recs), 50, "a batch holds at most maxBatch records")
		for _, r := range recs {
			seen[r.RequestID]++
		}
	}
	require.Len(t, seen, n, "every record is in exactly one task")
	for id, c := range seen {
		require.Equal(t, 1, c, id)
	}
	require.Less(t, len(tasksInfo), n, "concurrent records share tasks")
	t.Logf("%d records in %d tasks", n, len(tasksInfo))
}

func TestGroupCommitFallsBackToPostgres(t *testing.T) {
	t.Parallel()
	b := setup(t)
	rec, _ := newRecorder(t, b, nil)
	gc := tasks.NewGroupCommit(rec, 0, 0)
	defer gc.Close()
	b.redis.Stop()
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			require.NoError(t, gc.Record(context.Background(), []prediction.Record{record("down", i, 0.9)}))
		})
	}
	wg.Wait()
	n, err := b.store.Count(context.Background())
	require.NoError(t, err)
	require.Equal(t, int64(20), n, "answered predictions are stored even with Redis down")
}
