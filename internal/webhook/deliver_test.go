package webhook_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/webhook"
)

type deliverBundle struct {
	storeBundle
	sender senderBundle
	store  *webhook.Store
}

// setupDeliverer returns a Deliverer over a fresh database and a Sender that may reach local
// receivers (allowPrivate) or not, sharing one test clock.
func setupDeliverer(t *testing.T, allowPrivate bool) (*webhook.Deliverer, deliverBundle) {
	t.Helper()
	store, sb := setupStore(t)
	sender, b := newSender(t, webhook.SenderConfig{AllowPrivate: allowPrivate, Now: sb.clock.Now})
	b.clock = sb.clock
	return webhook.NewDeliverer(store, sender, testLogger(t)), deliverBundle{storeBundle: sb, sender: b, store: store}
}

// create stores a delivery of a new job to url.
func (b deliverBundle) create(t *testing.T, url string) webhook.Delivery {
	t.Helper()
	d := delivery(t, insertJob(t, b.pool), url)
	require.NoError(t, b.store.Create(context.Background(), nil, d))
	return d
}

func TestDeliver(t *testing.T) {
	t.Parallel()
	ctx := context.Background()

	t.Run("RetriesTwiceThenDelivers", func(t *testing.T) {
		t.Parallel()
		rcv := newReceiver(t, func(n int, w http.ResponseWriter, _ *http.Request) {
			if n <= 2 {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		})
		dl, b := setupDeliverer(t, true)
		d := b.create(t, rcv.URL()+"/hook")

		for attempt := 1; attempt <= 2; attempt++ {
			err := dl.Deliver(ctx, d.ID, attempt, false)
			require.ErrorIs(t, err, webhook.ErrRetry, "attempt %d", attempt)
			var re *webhook.RetryError
			require.ErrorAs(t, err, &re)
			require.Equal(t, http.StatusServiceUnavailable, re.StatusCode)
			require.Equal(t, attempt, re.Attempt)
			b.clock.Advance(webhook.Backoff(attempt - 1))
		}
		require.NoError(t, dl.Deliver(ctx, d.ID, 3, false))

		got, err := b.store.Get(ctx, d.ID)
		require.NoError(t, err)
		require.Equal(t, webhook.StatusDelivered, got.Status)
		require.Equal(t, 3, got.Attempts)
		require.Equal(t, http.StatusOK, got.LastStatus)
		require.Empty(t, got.LastError)
		require.NotNil(t, got.DeliveredAt)

		rows := attempts(t, b.pool, d.ID)
		require.Len(t, rows, 3)
		for i, want := range []int32{503, 503, 200} {
			require.Equal(t, i+1, rows[i].Attempt)
			require.Equal(t, want, *rows[i].StatusCode)
		}

		// Three requests, one webhook-id, each verified by the reference library.
		for range 3 {
			r := rcv.next(t)
			verify(t, r)
			require.Equal(t, d.ID.String(), r.header.Get("webhook-id"))
			require.JSONEq(t, string(d.Payload), string(r.body))
		}
		require.Equal(t, 2.0, b.sender.counter(t, webhook.OutcomeRetry))
		require.Equal(t, 1.0, b.sender.counter(t, webhook.OutcomeDelivered))

		// A replayed task sends and records nothing.
		require.NoError(t, dl.Deliver(ctx, d.ID, 3, false))
		require.NoError(t, dl.Deliver(ctx, d.ID, 4, false))
		require.EqualValues(t, 3, rcv.hits.Load())
		require.Len(t, attempts(t, b.pool, d.ID), 3)
	})

	t.Run("GoneFailsWithoutRetry", func(t *testing.T) {
		t.Parallel()
		rcv := newReceiver(t, status(http.StatusGone))
		dl, b := setupDeliverer(t, true)
		d := b.create(t, rcv.URL())

		require.NoError(t, dl.Deliver(ctx, d.ID, 1, false), "nothing to retry")
		got, err := b.store.Get(ctx, d.ID)
		require.NoError(t, err)
		require.Equal(t, webhook.StatusFailed, got.Status)
		require.Equal(t, 1, got.Attempts)
		require.Equal(t, http.StatusGone, got.LastStatus)
		require.Contains(t, got.LastError, "410 Gone")
		require.Nil(t, got.DeliveredAt)
		require.Equal(t, 1.0, b.sender.counter(t, webhook.OutcomeFailed))

		require.NoError(t, dl.Deliver(ctx, d.ID, 2, false))
		require.EqualValues(t, 1, rcv.hits.Load(), "a failed delivery is not sent again")
	})

	t.Run("FinalAttemptMarksFailed", func(t *testing.T) {
		t.Parallel()
		rcv := newReceiver(t, status(http.StatusBadGateway))
		dl, b := setupDeliverer(t, true)
		d := b.create(t, rcv.URL())

		require.ErrorIs(t, dl.Deliver(ctx, d.ID, 1, false), webhook.ErrRetry)
		require.NoError(t, dl.Deliver(ctx, d.ID, 2, true))
		got, err := b.store.Get(ctx, d.ID)
		require.NoError(t, err)
		require.Equal(t, webhook.StatusFailed, got.Status)
		require.Equal(t, 2, got.Attempts)
		require.Equal(t, http.StatusBadGateway, got.LastStatus)
		require.Contains(t, got.LastError, "last attempt")
		require.Equal(t, 1.0, b.sender.counter(t, webhook.OutcomeRetry))
		require.Equal(t, 1.0, b.sender.counter(t, webhook.OutcomeFailed))
	})

	t.Run("ReplayedAttemptIsNotSentTwice", func(t *testing.T) {
		t.Parallel()
		rcv := newReceiver(t, status(http.StatusInternalServerError))
		dl, b := setupDeliverer(t, true)
		d := b.create(t, rcv.URL())

		require.ErrorIs(t, dl.Deliver(ctx, d.ID, 1, false), webhook.ErrRetry)
		err := dl.Deliver(ctx, d.ID, 1, false)
		require.ErrorIs(t, err, webhook.ErrRetry, "the recorded outcome is returned again")
		require.EqualValues(t, 1, rcv.hits.Load())
		require.Len(t, attempts(t, b.pool, d.ID), 1)
		got, err := b.store.Get(ctx, d.ID)
		require.NoError(t, err)
		require.Equal(t, 1, got.Attempts)
	})

	t.Run("TimeoutIsRetried", func(t *testing.T) {
		t.Parallel()
		release := make(chan struct{})
		rcv := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-release:
			}
		})
		t.Cleanup(func() { close(release) })
		store, sb := setupStore(t)
		sender, _ := newSender(t, webhook.SenderConfig{AllowPrivate: true, Timeout: 100 * time.Millisecond, Now: sb.clock.Now})
		dl := webhook.NewDeliverer(store, sender, testLogger(t))
		d := delivery(t, insertJob(t, sb.pool), rcv.URL())
		require.NoError(t, store.Create(ctx, nil, d))

		err := dl.Deliver(ctx, d.ID, 1, false)
		require.ErrorIs(t, err, webhook.ErrRetry)
		require.ErrorContains(t, err, "timeout after 100ms")
		got, err := store.Get(ctx, d.ID)
		require.NoError(t, err)
		require.Equal(t, webhook.StatusPending, got.Status)
		require.Zero(t, got.LastStatus)
		require.Contains(t, got.LastError, "timeout")
	})

	t.Run("CancelledContextStillRecords", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(context.Background())
		rcv := newReceiver(t, func(_ int, w http.ResponseWriter, r *http.Request) {
			cancel() // the worker shuts down while the receiver is answering
			<-r.Context().Done()
		})
		dl, b := setupDeliverer(t, true)
		d := b.create(t, rcv.URL())

		err := dl.Deliver(ctx, d.ID, 1, false)
		require.ErrorIs(t, err, webhook.ErrRetry)
		rows := attempts(t, b.pool, d.ID)
		require.Len(t, rows, 1)
		require.Contains(t, *rows[0].Error, "interrupted")
	})

	t.Run("LoopbackRefusedWithoutAllowPrivate", func(t *testing.T) {
		t.Parallel()
		rcv := newReceiver(t, status(http.StatusOK))
		dl, b := setupDeliverer(t, false)
		d := b.create(t, rcv.URL())

		require.NoError(t, dl.Deliver(ctx, d.ID, 1, false), "a refused URL is a permanent failure")
		got, err := b.store.Get(ctx, d.ID)
		require.NoError(t, err)
		require.Equal(t, webhook.StatusFailed, got.Status)
		require.Contains(t, got.LastError, "webhook URL refused")
		require.Zero(t, rcv.hits.Load())
	})

	t.Run("MissingDeliveryIsPermanent", func(t *testing.T) {
		t.Parallel()
		dl, _ := setupDeliverer(t, true)
		err := dl.Deliver(ctx, uuid.New(), 1, false)
		require.ErrorIs(t, err, webhook.ErrNotFound)
		require.NotErrorIs(t, err, webhook.ErrRetry)
	})

	t.Run("BadAttemptNumber", func(t *testing.T) {
		t.Parallel()
		dl, b := setupDeliverer(t, true)
		d := b.create(t, "http://127.0.0.1:1/")
		require.Error(t, dl.Deliver(ctx, d.ID, 0, false))
	})
}
