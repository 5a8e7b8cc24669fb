package tasks

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/predq/predq/internal/job"
)

// WakeKey is the Redis list through which the api wakes idle workers for a small job: an
// idle asynq worker looks at its queues again only every TaskCheckInterval (100 ms), and
// a one-chunk job took three such waits (job:run, job:chunk, webhook:deliver). A worker's
// lanes block on this list (BLPOP: no polling) and run a chunk by fair order as soon as an
// entry arrives. The list is a hint: the job's tokens are still enqueued as usual, so a lost
// entry (or a lost list) only costs the wait.
const WakeKey = "predq:jobs:wake"

// wakeMax bounds the list: entries beyond it are dropped (their jobs run through asynq).
const wakeMax = 10_000

// Waker pushes wake-up entries (the api's side); it implements job.Waker.
type Waker struct {
	rdb redis.UniversalClient
}

var _ job.Waker = (*Waker)(nil)

// NewWaker returns a Waker on the queue Redis.
func NewWaker(rdb redis.UniversalClient) *Waker { return &Waker{rdb: rdb} }

// Wake asks idle workers to run n chunks now (one entry per chunk).
func (w *Waker) Wake(ctx context.Context, id uuid.UUID, n int) error {
	vals := make([]any, n)
	for i := range vals {
		vals[i] = id.String()
	}
	_, err := w.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.LPush(ctx, WakeKey, vals...)
		p.LTrim(ctx, WakeKey, 0, wakeMax-1)
		return nil
	})
	return err
}

// Lanes runs chunks as wake-up entries arrive: each of n goroutines blocks on WakeKey and, for
// each entry, runs the next chunk by fair order (run, job.Service.RunNext). It returns when
// ctx ends and the lanes have finished their chunk.
func Lanes(ctx context.Context, rdb redis.UniversalClient, n int, run func(context.Context) (bool, error), logger *slog.Logger) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			for ctx.Err() == nil {
				_, err := rdb.BLPop(ctx, time.Second, WakeKey).Result()
				if errors.Is(err, redis.Nil) || ctx.Err() != nil {
					continue
				}
				if err != nil {
					logger.WarnContext(ctx, "wake lane: redis", "error", err)
					select {
					case <-ctx.Done():
					case <-time.After(time.Second):
					}
					continue
				}
				// The chunk runs to its end even when ctx ends meanwhile (shutdown).
				if _, err := run(context.WithoutCancel(ctx)); err != nil {
					logger.WarnContext(ctx, "wake lane: chunk failed; its token retries it", "error", err)
				}
			}
		})
	}
	wg.Wait()
}
