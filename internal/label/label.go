// Package label is the ground truth of predq: the label (the true class) of a synchronous
// prediction or of a job row, as the client learns it, one current label per subject with the
// history of its changes (migrations/00022_labels.sql). Labels are scoped to the owner of
// their subject, the API key that made it. The live quality figures (internal/quality) are
// folded from the history; the review feature records its decisions through the same Store.
package label

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
)

// The classes of a label.
const (
	Negative = 0
	Positive = 1
)

// MaxSourceLen bounds the source of a label, in bytes.
const MaxSourceLen = 200

// Errors of the Store.
var (
	// ErrNotFound: no prediction or job with that id belongs to the owner (or the prediction
	// is not stored yet: predictions are stored within seconds of their answer).
	ErrNotFound = errors.New("label: not found")
	// ErrJobActive: the job is still queued or running; its rows can be labelled once it ends.
	ErrJobActive = errors.New("label: the job has not finished")
)

// Parse reads a label as a client writes it: "positive" or "negative" (any case, trimmed),
// or 1 or 0 ("1", "0", "1.0" and "0.0" too). It reports false for anything else.
func Parse(s string) (int, bool) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "positive", "1", "1.0":
		return Positive, true
	case "negative", "0", "0.0":
		return Negative, true
	}
	return 0, false
}

// Name returns "positive" or "negative".
func Name(label int) string {
	if label == Positive {
		return "positive"
	}
	return "negative"
}

// CheckSource refuses a source longer than MaxSourceLen or holding control characters.
func CheckSource(s string) error {
	if len(s) > MaxSourceLen {
		return fmt.Errorf("must be at most %d bytes", MaxSourceLen)
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return errors.New("must not hold control characters")
		}
	}
	return nil
}

// Label is the current label of a prediction or of a job row.
type Label struct {
	// PredictionID is set for the label of a prediction; JobID and ItemIndex for a job row's.
	PredictionID *uuid.UUID `json:"prediction_id,omitempty"`
	JobID        *uuid.UUID `json:"job_id,omitempty"`
	ItemIndex    *int       `json:"item_index,omitempty"`
	// Label is "positive" or "negative"; Value 1 or 0.
	Label string `json:"label"`
	Value int    `json:"value"`
	// Source is the client's name for where the label came from (optional).
	Source string `json:"source,omitempty"`
	// Revision counts the changes of the label: 1 for the first.
	Revision int `json:"revision"`
	// ModelVersion and Score are the subject's: the version that answered and its
	// probability of the positive class (nil for a job row that failed).
	ModelVersion string    `json:"model_version"`
	Score        *float64  `json:"score"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
	// Changed reports, on a write, whether it changed anything (false: the same label again).
	Changed bool `json:"changed"`
}

// Change is one revision of a label.
type Change struct {
	Revision int       `json:"revision"`
	Label    string    `json:"label"`
	Source   string    `json:"source,omitempty"`
	At       time.Time `json:"at"`
}

// JobRow is one row of a job's labels: the item index (0-based, as in the job's results) and
// its label (Positive or Negative).
type JobRow struct {
	ItemIndex int
	Label     int
}

// JobResult is what SetJobRows did.
type JobResult struct {
	JobID uuid.UUID `json:"job_id"`
	// Rows is how many rows the body held; Changed how many of them were new or changed
	// labels (the others repeated the current label).
	Rows    int `json:"rows"`
	Changed int `json:"changed"`
	// Unscored is how many of the labelled rows have no prediction (the row failed): they
	// are stored but count in no quality figure.
	Unscored int `json:"unscored"`
}

// RowError is a problem with one row of a labels body. Row is 1-based (the line of an NDJSON
// body, the record of a CSV body after any header); Field is "item_index" or "label".
type RowError struct {
	Row     int
	Field   string
	Message string
}

func (e *RowError) Error() string {
	return "row " + strconv.Itoa(e.Row) + ": " + e.Field + ": " + e.Message
}
