package tasks_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	standardwebhooks "github.com/standard-webhooks/standard-webhooks/libraries/go"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/tasks"
	"github.com/predq/predq/internal/webhook"
)

// The alert POST goes through the webhook sender: signed per Standard Webhooks with the
// Idempotency-Key kept, and refused for a private address unless that is allowed.
func TestAlertWebhookIsSignedAndGuarded(t *testing.T) {
	t.Parallel()
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	got := make(chan *http.Request, 4)
	bodies := make(chan []byte, 4)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- r
		bodies <- b
	}))
	t.Cleanup(hook.Close)
	payload, err := json.Marshal(tasks.AlertPayload{RequestID: "r-1", ModelVersion: "v1.0.0", Confidence: 0.55, Threshold: 0.7, CreatedAt: time.Now()})
	require.NoError(t, err)
	task := asynq.NewTask(tasks.TypeAlertLowConfidence, payload)

	guarded, err := webhook.NewSender(webhook.SenderConfig{Secret: secret})
	require.NoError(t, err)
	err = tasks.HandleAlertLowConfidence(tasks.AlertConfig{WebhookURL: hook.URL, Sender: guarded}).ProcessTask(context.Background(), task)
	require.ErrorIs(t, err, webhook.ErrForbiddenURL)
	require.ErrorIs(t, err, asynq.SkipRetry, "a refused URL is never retried")
	require.Empty(t, got, "nothing reached the loopback receiver")

	require.NoError(t, tasks.HandleAlertLowConfidence(tasks.AlertConfig{WebhookURL: hook.URL, Sender: alertSender(t)}).ProcessTask(context.Background(), task))
	r, body := <-got, <-bodies
	require.Equal(t, "alert:low_confidence:r-1", r.Header.Get("Idempotency-Key"))
	wh, err := standardwebhooks.NewWebhook(secret)
	require.NoError(t, err)
	require.NoError(t, wh.Verify(body, r.Header), "signed with WEBHOOK_SECRET")
	var b tasks.AlertWebhookBody
	require.NoError(t, json.Unmarshal(body, &b))
	require.Equal(t, tasks.AlertEventType, b.Type)
	require.Equal(t, "r-1", b.Data.RequestID)
}
