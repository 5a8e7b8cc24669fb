// Package job is the batch-job feature: submission (streamed, validated, stored in one
// transaction), chunked processing with exactly-once progress, cancellation, and the read
// side (job objects, pages of results).
//
// Postgres is the source of truth. A job's inputs are stored a chunk per row (job_chunks);
// a chunk moves from pending to done exactly once, in the same transaction that writes its
// results and its counts, so a chunk delivered twice counts nothing twice. An active job's
// counts are the sums of its done chunks'; they are stored on the job when it ends.
package job

import (
	"encoding/json"
	"errors"
	"time"

	"github.com/google/uuid"
)

// Statuses of a job.
const (
	StatusQueued    = "queued"
	StatusRunning   = "running"
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
	StatusCancelled = "cancelled"
)

// Terminal reports whether a job in status s will not change any more.
func Terminal(s string) bool {
	return s == StatusSucceeded || s == StatusFailed || s == StatusCancelled
}

// ValidStatus reports whether s names a job status.
func ValidStatus(s string) bool {
	return s == StatusQueued || s == StatusRunning || Terminal(s)
}

// Sentinel errors.
var (
	// ErrNotFound: no job with that id belongs to the caller.
	ErrNotFound = errors.New("job not found")
	// ErrConflict: the job is in a state that does not allow the operation (cancel of a
	// terminal job).
	ErrConflict = errors.New("job state conflict")
	// ErrTooLarge: the submission has more rows than allowed.
	ErrTooLarge = errors.New("job too large")
	// ErrNotFinished: the job to replay is still queued or running.
	ErrNotFinished = errors.New("job not finished")
	// ErrInputsGone: the job to replay no longer holds its inputs (they were emptied before
	// inputs were kept, or the job was made so).
	ErrInputsGone = errors.New("job inputs gone")
	// ErrNotReplay: the job is not a replay, so it has nothing to be compared with.
	ErrNotReplay = errors.New("job is not a replay")
	// ErrUnavailable: the job store cannot be reached; nothing was created.
	ErrUnavailable = errors.New("job store unavailable")
)

// Owner is the API key a job belongs to, with what the key carries for batch work.
type Owner struct {
	ID   string // stable key id; only this key sees the job
	Name string
	// Weight is the key's share of batch capacity relative to other keys (0: 1).
	Weight int
	// MaxPendingRows and MaxQueuedJobs are the key's quotas (0: Config's defaults).
	MaxPendingRows int64
	MaxQueuedJobs  int
}

// Priorities of a job: they order the chunks of one key's jobs (high first); across keys the
// capacity is shared by weight (see ClaimNext).
const (
	PriorityHigh   = "high"
	PriorityNormal = "normal"
	PriorityLow    = "low"
)

// ValidPriority reports whether s names a priority.
func ValidPriority(s string) bool {
	return s == PriorityHigh || s == PriorityNormal || s == PriorityLow
}

// Options are the settings of a submission, shared by all its rows.
type Options struct {
	ModelVersion        string            `json:"model_version"`
	Preprocessing       string            `json:"preprocessing"`
	ConfidenceThreshold float64           `json:"confidence_threshold"`
	WebhookURL          string            `json:"webhook_url,omitempty"`
	Metadata            map[string]string `json:"metadata,omitempty"`
	Priority            string            `json:"priority,omitempty"` // high, normal (default) or low
}

// Webhook is the delivery state of a job's webhook.
type Webhook struct {
	URL         string     `json:"url"`
	Status      string     `json:"status"` // none, pending, delivered, failed
	Attempts    int        `json:"attempts"`
	LastStatus  *int       `json:"last_status,omitempty"`
	LastError   string     `json:"last_error,omitempty"`
	DeliveredAt *time.Time `json:"delivered_at,omitempty"`
}

// Job is the job object of the API (DESIGN section 6).
type Job struct {
	ID                  uuid.UUID         `json:"id"`
	Status              string            `json:"status"`
	Priority            string            `json:"priority"`
	ModelVersion        string            `json:"model_version"`
	Preprocessing       string            `json:"preprocessing"`
	ConfidenceThreshold float64           `json:"confidence_threshold"`
	Total               int               `json:"total"`
	Processed           int               `json:"processed"`
	Failed              int               `json:"failed"`
	LowConfidence       int               `json:"low_confidence"`
	Progress            float64           `json:"progress"`
	ChunksTotal         int               `json:"chunks_total"`
	ChunksDone          int               `json:"chunks_done"`
	InputFormat         string            `json:"input_format"`
	CreatedAt           time.Time         `json:"created_at"`
	StartedAt           *time.Time        `json:"started_at"`
	FinishedAt          *time.Time        `json:"finished_at"`
	DeadlineAt          time.Time         `json:"deadline_at"`
	Error               *string           `json:"error"`
	Webhook             *Webhook          `json:"webhook"`
	Metadata            map[string]string `json:"metadata"`
	// ReplayOf is the job whose stored inputs this job replays (POST /jobs/{id}/replay).
	ReplayOf *uuid.UUID `json:"replay_of,omitempty"`

	deliveryID uuid.UUID // set by finish when a webhook delivery was recorded
}

// Result is one item's result.
type Result struct {
	Index           int      `json:"index"`
	Prediction      *float64 `json:"prediction"`
	Confidence      *float64 `json:"confidence"`
	PredictionClass string   `json:"prediction_class,omitempty"`
	LowConfidence   bool     `json:"low_confidence"`
	ModelVersion    string   `json:"model_version"`
	Error           string   `json:"error,omitempty"`
}

// Summary is the one low-confidence alert a finished job raises.
type Summary struct {
	JobID         uuid.UUID `json:"job_id"`
	ModelVersion  string    `json:"model_version"`
	Threshold     float64   `json:"threshold"`
	Total         int       `json:"total"`
	LowConfidence int       `json:"low_confidence"`
}

// EventType is the webhook event type of a terminal status.
func EventType(status string) string { return "job." + status }

// MarshalEvent builds the webhook body of a terminal job.
func MarshalEvent(j Job, at time.Time) (json.RawMessage, error) {
	data, err := json.Marshal(j)
	if err != nil {
		return nil, err
	}
	return json.Marshal(struct {
		Type      string          `json:"type"`
		Timestamp time.Time       `json:"timestamp"`
		Data      json.RawMessage `json:"data"`
	}{EventType(j.Status), at.UTC(), data})
}
