package tasks_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/job"
	"github.com/predq/predq/internal/tasks"
)

type noFail struct{ t *testing.T }

func (f noFail) Fail(context.Context, uuid.UUID, string) error {
	f.t.Error("Reconcile failed a job that is within its deadline")
	return nil
}

// A running job whose chunks are all done but which nobody finished (its last worker
// stopped between the chunk's commit and finishing, and Redis lost the task) gets job:run
// again; a running job with pending chunks gets its chunks, not job:run.
func TestReconcileRedrivesARunningJobWithNoChunkLeft(t *testing.T) {
	t.Parallel()
	b := setup(t)
	ctx := context.Background()
	newJob := func(chunkStatus string) uuid.UUID {
		var id uuid.UUID
		require.NoError(t, b.pool.QueryRow(ctx, `INSERT INTO jobs (id, owner, owner_name, model_version, preprocessing,
				confidence_threshold, chunk_size, input_format, deadline_at, status, total, chunks_total, updated_at)
			VALUES (gen_random_uuid(), 'o', 'o', 'v2.0.0', 'standard', 0.5, 10, 'ndjson', now() + interval '1 hour',
				'running', 10, 1, now() - interval '1 hour') RETURNING id`).Scan(&id))
		_, err := b.pool.Exec(ctx, `INSERT INTO job_chunks (job_id, chunk_index, start_index, rows, features, status)
			VALUES ($1, 0, 0, 10, ''::bytea, $2)`, id, chunkStatus)
		require.NoError(t, err)
		return id
	}
	stalled, pending := newJob("done"), newJob("pending")
	jobs := tasks.NewJobClient(tasks.RedisConnOpt(b.opts, 0), b.logger)
	t.Cleanup(func() { _ = jobs.Close() })

	res, err := tasks.Reconcile(ctx, tasks.ReconcileConfig{Jobs: job.NewStore(b.pool), Enqueuer: jobs, Runner: noFail{t}, Logger: b.logger}, time.Second)
	require.NoError(t, err)
	require.Equal(t, 1, res.UnfinishedJobs)
	require.Equal(t, 1, res.Chunks)

	info, err := b.inspector.GetTaskInfo(tasks.QueueBatch, tasks.JobRunTaskID(stalled))
	require.NoError(t, err, "job:run of the stalled job")
	require.Equal(t, asynq.TaskStatePending, info.State)
	_, err = b.inspector.GetTaskInfo(tasks.QueueBatch, tasks.JobRunTaskID(pending))
	require.ErrorIs(t, err, asynq.ErrTaskNotFound, "the job with a pending chunk gets its chunk, not job:run")
	_, err = b.inspector.GetTaskInfo(tasks.QueueBatch, tasks.JobChunkTaskID(pending, 0))
	require.NoError(t, err, "job:chunk of the pending chunk")
}
