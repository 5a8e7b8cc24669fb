package main

import (
	"context"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/redistest"
)

// TestWaitDrained: a queue that never held a task is drained; one with a pending task is not
// until it is gone.
func TestWaitDrained(t *testing.T) {
	t.Parallel()
	srv := redistest.New(t)
	opt := asynq.RedisClientOpt{Addr: srv.Addr}
	insp := asynq.NewInspector(opt)
	t.Cleanup(func() { _ = insp.Close() })
	ctx := context.Background()

	_, err := waitDrained(ctx, insp, "never-used", time.Second)
	require.NoError(t, err)

	client := asynq.NewClient(opt)
	t.Cleanup(func() { _ = client.Close() })
	info, err := client.Enqueue(asynq.NewTask("noop", nil), asynq.Queue("q"))
	require.NoError(t, err)
	_, err = waitDrained(ctx, insp, "q", 200*time.Millisecond)
	require.ErrorContains(t, err, "not drained")

	require.NoError(t, insp.DeleteTask("q", info.ID))
	_, err = waitDrained(ctx, insp, "q", time.Second)
	require.NoError(t, err)
}
