package webhook

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Event types of job webhooks, one per terminal job status.
const (
	EventJobSucceeded = "job.succeeded"
	EventJobFailed    = "job.failed"
	EventJobCancelled = "job.cancelled"
)

// Event is the body of a webhook request, per the Standard Webhooks payload structure:
//
//	{"type":"job.succeeded","timestamp":"2026-03-01T12:00:00.123Z","data":{…the job object…}}
//
// Timestamp is when the event happened (not when an attempt was made: that is the
// webhook-timestamp header), encoded in RFC 3339 in UTC. Data must be a JSON object; empty Data
// is encoded as {}.
type Event struct {
	Type      string          `json:"type"`
	Timestamp time.Time       `json:"timestamp"`
	Data      json.RawMessage `json:"data"`
}

// MarshalJSON encodes e with its timestamp in UTC. It refuses an empty Type and Data that is
// not a JSON object.
func (e Event) MarshalJSON() ([]byte, error) {
	if e.Type == "" {
		return nil, errors.New("webhook event: empty type")
	}
	data := bytes.TrimSpace(e.Data)
	if len(data) == 0 {
		data = []byte("{}")
	}
	if data[0] != '{' || !json.Valid(data) {
		return nil, fmt.Errorf("webhook event %s: data is not a JSON object", e.Type)
	}
	type wire Event // no MarshalJSON method: no recursion
	return json.Marshal(wire{Type: e.Type, Timestamp: e.Timestamp.UTC(), Data: data})
}
