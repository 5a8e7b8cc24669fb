package tasks

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"go.opentelemetry.io/otel/propagation"
)

// Defaults of the group aggregation of prediction:persist tasks (WorkerConfig).
//
// asynq's aggregator runs once per grace period (at least 1 s, asynq refuses less) and keeps
// second-resolution timestamps; each run turns at most GroupMaxSize tasks of each group into
// one task. So a record waits 1-3 s (grace period up to max delay) before its batch is
// written, and the write rate is bounded by GroupMaxSize x groups per second per worker
// process. 500 records of 60 features are a payload of about 0.6 MB.
const (
	DefaultGroupMaxSize     = 500
	DefaultGroupGracePeriod = time.Second     // asynq's minimum
	DefaultGroupMaxDelay    = 2 * time.Second // a group under steady traffic is flushed at least this often
)

// NewAggregator returns the GroupAggregator of the worker. Groups are used by
// prediction:persist only: it concatenates the payloads of a group's tasks (each a record
// object, or an array of records) into one JSON array without decoding the records, and
// returns one prediction:persist task. A payload that is not valid JSON, or a task of another
// type, is logged and left out rather than poisoning the whole batch. The aggregated task
// continues the trace of the first record and carries the traceparents of up to
// MaxTraceLinks other requests in HeaderTraceLinks, which the consumer span links.
func NewAggregator(logger *slog.Logger) asynq.GroupAggregator {
	return asynq.GroupAggregatorFunc(func(group string, ts []*asynq.Task) *asynq.Task {
		size := 2
		for _, t := range ts {
			size += len(t.Payload()) + 1
		}
		buf := make([]byte, 0, size)
		buf = append(buf, '[')
		n := 0
		var headers map[string]string
		var links []string
		seen := map[string]bool{}
		for _, t := range ts {
			p := bytes.TrimSpace(t.Payload())
			if t.Type() != TypePredictionPersist || len(p) < 2 || !json.Valid(p) || (p[0] != '{' && p[0] != '[') {
				logger.Error("aggregate: task left out of its batch", "group", group, "task_type", t.Type(),
					"payload_bytes", len(p))
				continue
			}
			if p[0] == '[' {
				p = bytes.TrimSpace(p[1 : len(p)-1])
				if len(p) == 0 {
					continue
				}
			}
			if n > 0 {
				buf = append(buf, ',')
			}
			buf = append(buf, p...)
			n++
			tp := t.Headers()["traceparent"]
			switch {
			case headers == nil:
				headers = t.Headers()
				seen[tp] = true
			case tp != "" && !seen[tp] && len(links) < MaxTraceLinks:
				seen[tp] = true
				links = append(links, tp)
			}
		}
		buf = append(buf, ']')
		out := map[string]string{}
		for k, v := range headers {
			if k != HeaderTraceLinks {
				out[k] = v
			}
		}
		if len(links) > 0 {
			out[HeaderTraceLinks] = strings.Join(links, ",")
		}
		return NewPredictionPersistBatchTask(buf, out)
	})
}

// traceparentCarrier holds one traceparent as a carrier for the W3C propagator.
func traceparentCarrier(tp string) propagation.MapCarrier {
	return propagation.MapCarrier{"traceparent": tp}
}
