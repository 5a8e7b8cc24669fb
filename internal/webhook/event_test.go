package webhook_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/webhook"
)

func TestEvent(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 3, 1, 13, 4, 5, 123000000, time.FixedZone("CET", 3600))

	t.Run("MarshalsTypeTimestampData", func(t *testing.T) {
		t.Parallel()
		b, err := json.Marshal(webhook.Event{Type: webhook.EventJobFailed, Timestamp: at, Data: json.RawMessage(`{"id": "j1", "status": "failed"}`)})
		require.NoError(t, err)
		require.Equal(t, `{"type":"job.failed","timestamp":"2026-03-01T12:04:05.123Z","data":{"id":"j1","status":"failed"}}`, string(b))

		var back webhook.Event
		require.NoError(t, json.Unmarshal(b, &back))
		require.True(t, back.Timestamp.Equal(at))
		_, err = time.Parse(time.RFC3339, "2026-03-01T12:04:05.123Z")
		require.NoError(t, err, "the timestamp is RFC 3339")
	})
	t.Run("EmptyDataIsAnObject", func(t *testing.T) {
		t.Parallel()
		b, err := json.Marshal(webhook.Event{Type: webhook.EventJobCancelled, Timestamp: at})
		require.NoError(t, err)
		require.JSONEq(t, `{"type":"job.cancelled","timestamp":"2026-03-01T12:04:05.123Z","data":{}}`, string(b))
	})
	t.Run("RefusesBadEvents", func(t *testing.T) {
		t.Parallel()
		_, err := json.Marshal(webhook.Event{Timestamp: at})
		require.Error(t, err)
		_, err = json.Marshal(webhook.Event{Type: webhook.EventJobSucceeded, Data: json.RawMessage(`[1]`)})
		require.Error(t, err)
		_, err = json.Marshal(webhook.Event{Type: webhook.EventJobSucceeded, Data: json.RawMessage(`{"a":`)})
		require.Error(t, err)
	})
}

func TestDeliveryID(t *testing.T) {
	t.Parallel()
	job := uuid.MustParse("0195a1b2-0000-7000-8000-000000000001")
	id := webhook.DeliveryID(job, webhook.EventJobSucceeded)
	require.Equal(t, id, webhook.DeliveryID(job, webhook.EventJobSucceeded), "deterministic")
	require.Equal(t, uuid.Version(5), id.Version())
	require.NotEqual(t, id, webhook.DeliveryID(job, webhook.EventJobFailed))
	require.NotEqual(t, id, webhook.DeliveryID(uuid.MustParse("0195a1b2-0000-7000-8000-000000000002"), webhook.EventJobSucceeded))
	require.Equal(t, job, uuid.MustParse("0195a1b2-0000-7000-8000-000000000001"), "the job id is not modified")
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	t.Run("FullJitterUnderExponentialCeiling", func(t *testing.T) {
		t.Parallel()
		for n := range 15 {
			limit := min(webhook.BackoffBase<<n, webhook.BackoffMax)
			for range 200 {
				d := webhook.Backoff(n)
				require.GreaterOrEqual(t, d, time.Duration(0))
				require.Less(t, d, limit, "n=%d", n)
			}
		}
	})
	t.Run("CappedAndNeverOverflows", func(t *testing.T) {
		t.Parallel()
		for _, n := range []int{-5, 20, 62, 63, 64, 1000, int(^uint(0) >> 1)} {
			for range 50 {
				d := webhook.Backoff(n)
				require.GreaterOrEqual(t, d, time.Duration(0), "n=%d", n)
				require.Less(t, d, webhook.BackoffMax, "n=%d", n)
			}
		}
	})
	t.Run("Jittered", func(t *testing.T) {
		t.Parallel()
		seen := map[time.Duration]bool{}
		for range 20 {
			seen[webhook.Backoff(10)] = true
		}
		require.Greater(t, len(seen), 1)
	})
	t.Run("Scaled", func(t *testing.T) {
		t.Parallel()
		for n := range 10 {
			require.Less(t, webhook.BackoffWith(n, time.Millisecond, 50*time.Millisecond), min(time.Millisecond<<n, 50*time.Millisecond))
		}
		require.Zero(t, webhook.BackoffWith(3, 0, time.Second))
	})
	t.Run("RetryDelayHonoursRetryAfter", func(t *testing.T) {
		t.Parallel()
		err := &webhook.RetryError{RetryAfter: 5 * time.Minute, Err: errFake}
		require.Equal(t, 5*time.Minute, webhook.RetryDelay(0, err))
		require.Less(t, webhook.RetryDelay(0, &webhook.RetryError{Err: errFake}), webhook.BackoffBase)
		require.Less(t, webhook.RetryDelay(0, errFake), webhook.BackoffBase)
	})
}

var errFake = fakeError("fake")

type fakeError string

func (e fakeError) Error() string { return string(e) }
