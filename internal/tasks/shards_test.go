package tasks_test

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/redistest"
	"github.com/predq/predq/internal/tasks"
)

func TestBatchQueues(t *testing.T) {
	t.Parallel()
	require.Equal(t, []string{"batch"}, tasks.BatchQueues(1), "one shard is the one queue of a single Redis")
	require.Equal(t, []string{"batch"}, tasks.BatchQueues(0))
	require.Equal(t, []string{"batch-0-3", "batch-1-2", "batch-2-2"}, tasks.BatchQueues(3))
	for n := 2; n <= 8; n++ {
		for i, q := range tasks.BatchQueues(n) {
			s := tasks.KeySlot("asynq:{" + q + "}:pending")
			require.GreaterOrEqual(t, s, i*16384/n, "%s", q)
			require.Less(t, s, (i+1)*16384/n, "%s", q)
		}
	}
	// The chunks of one job spread over every shard, the same chunk always to the same one.
	id := uuid.MustParse("0b5e8e4e-5f29-4b4c-9a3e-6f1d2c3b4a59")
	seen := map[string]int{}
	for c := range 300 {
		seen[tasks.BatchQueue(3, id, c)]++
		require.Equal(t, tasks.BatchQueue(3, id, c), tasks.BatchQueue(3, id, c))
	}
	require.Len(t, seen, 3)
	for q, k := range seen {
		require.Greater(t, k, 60, "%s gets about a third: %v", q, seen)
	}
	require.Equal(t, "batch", tasks.BatchQueue(1, id, 7))

	got := tasks.ShardQueues(map[string]int{"critical": 6, "default": 3, "batch": 2, "low": 1}, 3)
	want := map[string]int{"critical": 6, "default": 3, "batch-0-3": 2, "batch-1-2": 2, "batch-2-2": 2, "low": 1}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ShardQueues (-want +got):\n%s", diff)
	}
}

// KeySlot agrees with CLUSTER KEYSLOT, and on a cluster made by redis-cli --cluster create
// the shards of BatchQueues(3) are served by three different masters (CLUSTER SLOTS).
func TestBatchShardsLandOnDifferentMasters(t *testing.T) {
	t.Parallel()
	c := redistest.NewCluster(t, 3, 1)
	ctx := context.Background()
	rdb := c.Client(t)
	masters := map[string]string{}
	for _, q := range tasks.BatchQueues(3) {
		key := "asynq:{" + q + "}:pending"
		slot, err := rdb.ClusterKeySlot(ctx, key).Result()
		require.NoError(t, err)
		require.Equal(t, int64(tasks.KeySlot(key)), slot, key)
		m, err := c.MasterOf(ctx, key)
		require.NoError(t, err)
		t.Logf("%s: slot %d, master %s", q, slot, m)
		masters[m] = q
	}
	require.Len(t, masters, 3, "one shard per master: %v", masters)
}
