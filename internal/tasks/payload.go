package tasks

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/hibiken/asynq"

	"github.com/predq/predq/internal/prediction"
)

// Options of the task types.
const (
	// PersistMaxRetry: a persist task that keeps failing (Postgres down for a long time) is
	// retried with asynq's exponential backoff for days before it is archived.
	PersistMaxRetry = 25
	// PersistTimeout bounds one persist task (one batch insert).
	PersistTimeout = time.Minute
	// AlertMaxRetry bounds the retries of an alert whose webhook fails.
	AlertMaxRetry = 10
	// AlertTimeout bounds one alert task (the webhook POST has its own 5 s timeout).
	AlertTimeout = 15 * time.Second
)

// Header keys of task headers besides the W3C trace context (traceparent, tracestate).
const (
	// HeaderTraceLinks holds up to MaxTraceLinks traceparent values, comma-separated, of the
	// other requests whose records a persist task carries; the consumer span links them.
	HeaderTraceLinks = "predq-trace-links"
	// MaxTraceLinks bounds HeaderTraceLinks.
	MaxTraceLinks = prediction.MaxTraceLinks
)

// AlertTaskID returns the TaskID of the alert:low_confidence task whose key is key: a
// prediction's id (AlertKey), or a job summary's "job:<id>".
func AlertTaskID(key string) string { return TypeAlertLowConfidence + ":" + key }

// AlertKey returns the key of a prediction's alert: its server id, unique to the prediction
// (two predictions sent with the same X-Request-ID get an alert each), or its request id for a
// record without one (an older api's) and for a job summary.
func AlertKey(p AlertPayload) string {
	if p.PredictionID != uuid.Nil {
		return p.PredictionID.String()
	}
	return p.RequestID
}

// NewPredictionPersistTask returns the prediction:persist task of recs on the default
// queue: its payload is the JSON array of the records (features.go), and headers carry the
// trace context. asynq gives it a random TaskID; replays are harmless because the insert skips
// stored ids (each record's server id, prediction.Record.ID). It fails only when a record cannot be encoded (a NaN or infinity).
func NewPredictionPersistTask(recs []prediction.Record, headers map[string]string) (*asynq.Task, error) {
	b, err := marshalPersistBatch(recs)
	if err != nil {
		return nil, fmt.Errorf("encode %s payload: %w", TypePredictionPersist, err)
	}
	return asynq.NewTaskWithHeaders(TypePredictionPersist, b, headers,
		asynq.Queue(QueueDefault), asynq.MaxRetry(PersistMaxRetry), asynq.Timeout(PersistTimeout)), nil
}

// ErrBadPayload: a task payload that cannot be decoded; handlers wrap it with asynq.SkipRetry.
var ErrBadPayload = errors.New("bad task payload")

// ParsePersistPayload decodes a prediction:persist payload, a JSON array of records
// (features.go). Errors wrap ErrBadPayload.
func ParsePersistPayload(b []byte) ([]prediction.Record, error) {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '[' {
		return nil, fmt.Errorf("%w: want a JSON array of records", ErrBadPayload)
	}
	var rs []prediction.Record
	if err := unmarshalPersist(b, &rs); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadPayload, err)
	}
	return rs, nil
}

// checkRecord reports why a decoded record cannot be stored, or nil.
func checkRecord(r prediction.Record) error {
	switch {
	case r.RequestID == "":
		return errors.New("request_id is empty")
	case len(r.RequestID) > 1000:
		return errors.New("request_id is longer than 1000 bytes")
	case len(r.Features) == 0:
		return errors.New("features are empty")
	case r.ModelVersion == "":
		return errors.New("model_version is empty")
	case r.PredictionClass == "":
		return errors.New("prediction_class is empty")
	}
	return nil
}

// AlertPayload is the payload of alert:low_confidence, and the "data" of the alert webhook.
type AlertPayload struct {
	// PredictionID is the server's id of the stored prediction (GET /api/v1/predictions/{id});
	// absent in a job summary, and in the alerts of an older api.
	PredictionID    uuid.UUID `json:"prediction_id,omitzero"`
	RequestID       string    `json:"request_id"`
	UserID          string    `json:"user_id,omitempty"`
	ModelVersion    string    `json:"model_version"`
	Prediction      float64   `json:"prediction"`
	PredictionClass string    `json:"prediction_class"`
	Confidence      float64   `json:"confidence"`
	Threshold       float64   `json:"threshold"`
	CreatedAt       time.Time `json:"created_at"`
	// A finished batch job raises one summary instead of one alert per item: JobID is set,
	// RequestID is "job:<id>", Items is the job's total and LowConfidenceItems how many of
	// them were below Threshold.
	JobID              string `json:"job_id,omitempty"`
	Items              int    `json:"items,omitempty"`
	LowConfidenceItems int    `json:"low_confidence_items,omitempty"`
}

// AlertFromRecord returns the alert payload of a record.
func AlertFromRecord(r prediction.Record) AlertPayload {
	return AlertPayload{
		PredictionID: r.ID, RequestID: r.RequestID, UserID: r.UserID, ModelVersion: r.ModelVersion, Prediction: r.Prediction,
		PredictionClass: r.PredictionClass, Confidence: r.Confidence, Threshold: r.ConfidenceThreshold,
		CreatedAt: r.CreatedAt,
	}
}

// NewAlertLowConfidenceTask returns the alert:low_confidence task of a record, on the
// critical queue, with a TaskID derived from its AlertKey.
func NewAlertLowConfidenceTask(rec prediction.Record, headers map[string]string) (*asynq.Task, error) {
	p := AlertFromRecord(rec)
	b, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode %s payload: %w", TypeAlertLowConfidence, err)
	}
	return asynq.NewTaskWithHeaders(TypeAlertLowConfidence, b, headers,
		asynq.Queue(QueueCritical), asynq.TaskID(AlertTaskID(AlertKey(p))),
		asynq.MaxRetry(AlertMaxRetry), asynq.Timeout(AlertTimeout)), nil
}
