package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"

	"github.com/predq/predq/internal/postgres"
	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/webhook"
)

// HandlePredictionPersist returns the handler of prediction:persist. It decodes the records,
// leaves out and logs records that cannot be stored
// (no request id, no features…), and writes the rest with one store.Insert; ids already
// stored are skipped, so a replayed task writes nothing twice (each record carries the id the
// api gave its prediction; a record of an older api, without one, is stored under its
// prediction.DerivedID, the same at every replay). A payload that does
// not decode returns an error wrapping asynq.SkipRetry (archived, never retried). When
// Postgres refuses the batch for its data (SQLSTATE class 22 or 23), the records are written
// one at a time so that one bad record does not hold back the others.
//
// m and logger may be nil (not counted, not logged).
func HandlePredictionPersist(store prediction.Inserter, m *WorkerMetrics, logger *slog.Logger) asynq.HandlerFunc {
	if m == nil {
		m = NewWorkerMetrics(nil)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return func(ctx context.Context, t *asynq.Task) error {
		recs, err := ParsePersistPayload(t.Payload())
		if err != nil {
			return fmt.Errorf("%s: %w: %w", TypePredictionPersist, err, asynq.SkipRetry)
		}
		valid := recs[:0:0]
		for _, r := range recs {
			if err := checkRecord(r); err != nil {
				m.persisted.WithLabelValues("invalid").Inc()
				logger.ErrorContext(ctx, "prediction record left out", "prediction_id", r.ID.String(), "request_id", r.RequestID, "error", err.Error())
				continue
			}
			valid = append(valid, r)
		}
		if len(valid) == 0 {
			if len(recs) > 0 {
				return fmt.Errorf("%s: no storable record among %d: %w", TypePredictionPersist, len(recs), asynq.SkipRetry)
			}
			return nil
		}
		m.batch.Observe(float64(len(valid)))
		n, err := store.Insert(ctx, valid)
		if err != nil && postgres.IsDataError(err) && len(valid) > 1 {
			return persistOneByOne(ctx, store, valid, m, logger)
		}
		if err != nil {
			return fmt.Errorf("%s: %d records: %w", TypePredictionPersist, len(valid), err)
		}
		m.persisted.WithLabelValues("inserted").Add(float64(n))
		m.persisted.WithLabelValues("duplicate").Add(float64(int64(len(valid)) - n))
		return nil
	}
}

// persistOneByOne writes recs one at a time, logging and leaving out the ones Postgres
// refuses for their data. Any other error stops it (the task is retried; the records already
// written are skipped then).
func persistOneByOne(ctx context.Context, store prediction.Inserter, recs []prediction.Record, m *WorkerMetrics, logger *slog.Logger) error {
	for _, r := range recs {
		n, err := store.Insert(ctx, []prediction.Record{r})
		switch {
		case err == nil:
			m.persisted.WithLabelValues("inserted").Add(float64(n))
			m.persisted.WithLabelValues("duplicate").Add(float64(1 - n))
		case postgres.IsDataError(err):
			m.persisted.WithLabelValues("invalid").Inc()
			logger.ErrorContext(ctx, "prediction record refused by Postgres", "prediction_id", r.ID.String(), "request_id", r.RequestID, "error", err.Error())
		default:
			return fmt.Errorf("%s: one by one: %w", TypePredictionPersist, err)
		}
	}
	return nil
}

// AlertConfig configures the alert:low_confidence handler.
type AlertConfig struct {
	// WebhookURL receives a POST of each alert (ALERT_WEBHOOK_URL; empty: no webhook).
	WebhookURL string
	// Sender signs and sends the POST through the SSRF guard, as job webhooks are sent (a
	// *webhook.Sender); required with WebhookURL.
	Sender AlertSender
	// Metrics counts alerts and webhook attempts (nil: not counted).
	Metrics *WorkerMetrics
	// Logger receives the warnings (nil: discarded).
	Logger *slog.Logger
}

// AlertSender makes one signed webhook attempt (*webhook.Sender).
type AlertSender interface {
	SendWithHeader(ctx context.Context, d webhook.Delivery, h http.Header) webhook.Result
}

// alertNamespace is the UUIDv5 namespace of an alert's webhook-id.
var alertNamespace = uuid.MustParse("0f6f3c1e-5d0b-4c55-8a0e-7b7f2f1c9a44")

// AlertEventType is the type of an alert webhook's body (and its event type).
const AlertEventType = "prediction.low_confidence"

// AlertWebhookBody is the JSON body POSTed to the alert webhook.
type AlertWebhookBody struct {
	Type      string       `json:"type"` // "prediction.low_confidence"
	Timestamp time.Time    `json:"timestamp"`
	Data      AlertPayload `json:"data"`
}

// HandleAlertLowConfidence returns the handler of alert:low_confidence. On the first attempt
// it logs a structured warning (request_id, model_version, confidence, threshold) and counts
// ml_low_confidence_total{model_version}; retries (of a failed webhook) neither log nor count
// again. With a webhook URL it POSTs an AlertWebhookBody through cfg.Sender: signed as job
// webhooks are (webhook-id: a UUIDv5 of the alert's task id, AlertTaskID(AlertKey(payload));
// header Idempotency-Key: that task id, so that the receiver can drop repeats) and under the same SSRF guard. A network error
// or a non-2xx status is returned so that asynq retries; a URL the guard refuses, or a
// payload that does not decode, wraps asynq.SkipRetry.
func HandleAlertLowConfidence(cfg AlertConfig) asynq.HandlerFunc {
	if cfg.Metrics == nil {
		cfg.Metrics = NewWorkerMetrics(nil)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return func(ctx context.Context, t *asynq.Task) error {
		var p AlertPayload
		if err := json.Unmarshal(t.Payload(), &p); err != nil || p.RequestID == "" {
			return fmt.Errorf("%s: %w: %v: %w", TypeAlertLowConfidence, ErrBadPayload, err, asynq.SkipRetry) //nolint:errorlint // err is nil when only a field is missing; the task is refused either way
		}
		if retried, _ := asynq.GetRetryCount(ctx); retried == 0 {
			if p.JobID != "" {
				cfg.Metrics.lowConfidence.WithLabelValues(p.ModelVersion).Add(float64(p.LowConfidenceItems))
				cfg.Logger.WarnContext(ctx, "low-confidence items in a batch job",
					"job_id", p.JobID, "model_version", p.ModelVersion, "threshold", p.Threshold,
					"items", p.Items, "low_confidence_items", p.LowConfidenceItems)
			} else {
				cfg.Metrics.lowConfidence.WithLabelValues(p.ModelVersion).Inc()
				cfg.Logger.WarnContext(ctx, "low-confidence prediction",
					"prediction_id", p.PredictionID.String(), "request_id", p.RequestID, "model_version", p.ModelVersion,
					"confidence", p.Confidence, "threshold", p.Threshold, "prediction", p.Prediction)
			}
		}
		if cfg.WebhookURL == "" {
			return nil
		}
		if cfg.Sender == nil {
			return fmt.Errorf("%s: no webhook sender configured: %w", TypeAlertLowConfidence, asynq.SkipRetry)
		}
		body, err := json.Marshal(AlertWebhookBody{Type: AlertEventType, Timestamp: time.Now().UTC(), Data: p})
		if err != nil {
			return fmt.Errorf("%s: encode webhook: %w: %w", TypeAlertLowConfidence, err, asynq.SkipRetry)
		}
		key := AlertTaskID(AlertKey(p))
		res := cfg.Sender.SendWithHeader(ctx, webhook.Delivery{
			ID: uuid.NewSHA1(alertNamespace, []byte(key)), EventType: AlertEventType, URL: cfg.WebhookURL, Payload: body,
		}, http.Header{"Idempotency-Key": {key}})
		if res.Outcome == webhook.OutcomeDelivered {
			cfg.Metrics.webhook.WithLabelValues("delivered").Inc()
			return nil
		}
		cfg.Metrics.webhook.WithLabelValues("error").Inc()
		if errors.Is(res.Err, webhook.ErrForbiddenURL) {
			return fmt.Errorf("%s: webhook: %w: %w", TypeAlertLowConfidence, res.Err, asynq.SkipRetry)
		}
		return fmt.Errorf("%s: webhook: %w", TypeAlertLowConfidence, res.Err)
	}
}
