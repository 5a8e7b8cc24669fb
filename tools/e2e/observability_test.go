package e2e

// Issue 6: what the processes report. Traces cross the queue hop (an in-process OTLP
// receiver collects the spans of the api and the worker), every metric family that the
// dashboards and alert rules use is really exposed after traffic, the asynqmon dashboard is
// behind Basic auth, and log lines carry request and trace ids.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/prediction"
)

// service.name of the processes' spans.
const (
	svcAPI    = "predq-api"
	svcWorker = "predq-worker"
)

// traceWait bounds the wait for exported spans: the batch span processors export every 2 s,
// and a task's span ends only after the worker has run it.
const traceWait = 30 * time.Second

// predictAnswer is the part of a predict answer the tests read.
type predictAnswer struct {
	RequestID  string  `json:"request_id"`
	Confidence float64 `json:"confidence"`
	Cached     bool    `json:"cached"`
}

// predict posts one prediction and returns its answer.
func (s *stack) predict(features []float64, threshold float64, requestID string) predictAnswer {
	s.t.Helper()
	body := map[string]any{"features": features}
	if threshold > 0 {
		body["confidence_threshold"] = threshold
	}
	r := s.call("POST", "/api/v1/predict", body, map[string]string{"X-Request-ID": requestID})
	require.Equal(s.t, http.StatusOK, r.status, string(r.body))
	var out predictAnswer
	r.decode(s.t, &out)
	require.Equal(s.t, requestID, out.RequestID)
	return out
}

// serverSpan waits for the one server span of the api named name and returns it.
func serverSpan(t *testing.T, rcv *otlpReceiver, name string) otlpSpan {
	t.Helper()
	var got spanSet
	rcv.waitFor(t, traceWait, "api span "+name, func(spans []otlpSpan) bool {
		got = spanSet(spans).named(svcAPI, name)
		return len(got) > 0
	})
	require.Len(t, got, 1, "one request, one span:\n%s", dumpSpans(rcv.Spans()))
	require.Equal(t, "SPAN_KIND_SERVER", got[0].Kind)
	return got[0]
}

// logLine returns the first JSON log line of a process for which match is true.
func logLine(t *testing.T, logs string, match func(map[string]any) bool) (map[string]any, bool) {
	t.Helper()
	sc := bufio.NewScanner(strings.NewReader(logs))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) != nil {
			continue // not a JSON line (a panic, the Go runtime)
		}
		if match(m) {
			return m, true
		}
	}
	return nil, false
}

// fullLogs is everything a process wrote so far (stack.logs keeps only the last 4 KB).
func (s *stack) fullLogs(name string) string { return s.procs[name].Log() }

// A prediction's trace holds the api's HTTP server span, the enqueue span, and the worker's
// prediction:persist task span (PERSIST_PATH=queue); a low-confidence one also its
// alert:low_confidence span. The access-log line of the request names the same trace and span.
func TestTracePredictionAcrossTheQueue(t *testing.T) {
	t.Parallel()
	rcv := newOTLPReceiver(t)
	s := startStack(t, stackOpts{env: map[string]string{
		"PERSIST_PATH":                "queue",
		"OTEL_EXPORTER_OTLP_ENDPOINT": rcv.Endpoint(),
		// The exporters compress (the receiver handles both; the other tests send plain).
		"OTEL_EXPORTER_OTLP_COMPRESSION": "gzip",
	}})
	xs, _ := sonar(t)

	// One prediction: one record, one persist task (an aggregated task continues the trace
	// of its first record and links the others: with one record there are no links).
	s.predict(xs[0], 0, "trace-persist")
	http1 := serverSpan(t, rcv, "POST /api/v1/predict")
	var persist otlpSpan
	rcv.waitFor(t, traceWait, "prediction:persist span in the request's trace", func(spans []otlpSpan) bool {
		ss := spanSet(spans).trace(http1.TraceID).named(svcWorker, "prediction:persist")
		if len(ss) > 0 {
			persist = ss[0]
		}
		return len(ss) > 0
	})
	tr := spanSet(rcv.Spans()).trace(http1.TraceID)
	require.Equal(t, "SPAN_KIND_CONSUMER", persist.Kind)
	require.Equal(t, "default", persist.Attrs["messaging.destination.name"])
	require.Empty(t, persist.Links)
	require.True(t, tr.descends(persist, http1.SpanID), "the task span descends from the HTTP span:\n%s", dumpSpans(tr))
	enqueue, ok := tr.byID(persist.ParentID)
	require.True(t, ok, "the task's parent was exported by the api:\n%s", dumpSpans(tr))
	require.Equal(t, svcAPI, enqueue.Service)
	require.Equal(t, "enqueue prediction:persist", enqueue.Name)
	require.Equal(t, "SPAN_KIND_PRODUCER", enqueue.Kind)
	require.NotEmpty(t, tr.named(svcAPI, "inference"), "the inference span is in the trace:\n%s", dumpSpans(tr))
	// The worker's Postgres write is inside the task span (otelpgx).
	rcv.waitFor(t, traceWait, "a Postgres span under prediction:persist", func(spans []otlpSpan) bool {
		return len(spanSet(spans).childrenOf(persist.SpanID)) > 0
	})

	// The access-log line of the request carries its request id, trace id and span id.
	line, ok := logLine(t, s.fullLogs("api"), func(m map[string]any) bool {
		return m["msg"] == "http request" && m["request_id"] == "trace-persist"
	})
	require.True(t, ok, "no access-log line for trace-persist: %s", s.logs("api"))
	require.Equal(t, http1.TraceID, line["trace_id"])
	require.Equal(t, http1.SpanID, line["span_id"])

	// A low-confidence prediction (threshold 1: no answer is that sure): its alert task
	// continues its trace too.
	require.Less(t, s.predict(xs[1], 1, "trace-alert").Confidence, 1.0)
	var alert otlpSpan
	var http2 otlpSpan
	rcv.waitFor(t, traceWait, "alert:low_confidence span in the request's trace", func(spans []otlpSpan) bool {
		ss := spanSet(spans)
		for _, a := range ss.named(svcWorker, "alert:low_confidence") {
			for _, h := range ss.trace(a.TraceID).named(svcAPI, "POST /api/v1/predict") {
				alert, http2 = a, h
				return true
			}
		}
		return false
	})
	tr = spanSet(rcv.Spans()).trace(http2.TraceID)
	require.NotEqual(t, http1.TraceID, http2.TraceID)
	require.Equal(t, "critical", alert.Attrs["messaging.destination.name"])
	require.True(t, tr.descends(alert, http2.SpanID), "\n%s", dumpSpans(tr))
	// Its access-log line names that trace: it is the request whose id is trace-alert.
	line, ok = logLine(t, s.fullLogs("api"), func(m map[string]any) bool {
		return m["msg"] == "http request" && m["request_id"] == "trace-alert"
	})
	require.True(t, ok)
	require.Equal(t, http2.TraceID, line["trace_id"])
	// The worker's log line of the alert is in the trace as well.
	wline, ok := logLine(t, s.fullLogs("worker"), func(m map[string]any) bool {
		return m["request_id"] == "trace-alert" && m["trace_id"] != nil
	})
	require.True(t, ok, "no worker log line of the alert with a trace id: %s", s.logs("worker"))
	require.Equal(t, http2.TraceID, wline["trace_id"])
	rcv.waitFor(t, traceWait, "prediction:persist of the low-confidence request", func(spans []otlpSpan) bool {
		return len(spanSet(spans).trace(http2.TraceID).named(svcWorker, "prediction:persist")) > 0
	})

	// Probes are not traced.
	for _, sp := range rcv.Spans() {
		require.NotContains(t, sp.Name, "/health", sp.String())
		require.NotContains(t, sp.Name, "/metrics", sp.String())
	}
	require.Empty(t, rcv.Errors())
	t.Logf("traces received:\n%s", dumpSpans(rcv.Spans()))
}

// A job's trace: the api's POST /api/v1/jobs span, then the worker's job:run span and its
// job:chunk spans (enqueued inside job:run). The job has more chunks than wake the workers
// (job.WakeChunks), so they all run through the queue; its webhook's first attempt is made by
// the worker that finished it (no webhook:deliver task when it is delivered).
func TestTraceJobAcrossTheQueue(t *testing.T) {
	t.Parallel()
	rcv := newOTLPReceiver(t)
	var hooks atomic.Int32
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		hooks.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(recv.Close)
	s := startStack(t, stackOpts{env: map[string]string{
		"OTEL_EXPORTER_OTLP_ENDPOINT": rcv.Endpoint(),
		"JOB_CHUNK_SIZE":              "100",
	}})
	xs, _ := sonar(t)
	samples := make([]map[string]any, 450)
	for i := range samples {
		samples[i] = map[string]any{"features": xs[i%len(xs)]}
	}
	r := s.call("POST", "/api/v1/jobs", map[string]any{"samples": samples, "webhook_url": recv.URL + "/hook"}, nil)
	require.Equal(t, http.StatusAccepted, r.status, string(r.body))
	var j jobObject
	r.decode(t, &j)
	require.Equal(t, "succeeded", s.waitJob(j.ID, 60*time.Second).Status)

	submit := serverSpan(t, rcv, "POST /api/v1/jobs")
	var tr spanSet
	rcv.waitFor(t, traceWait, "job:run and 5 job:chunk spans in the request's trace", func(spans []otlpSpan) bool {
		tr = spanSet(spans).trace(submit.TraceID)
		return len(tr.named(svcWorker, "job:run")) == 1 && len(tr.named(svcWorker, "job:chunk")) == 5
	})
	run := tr.named(svcWorker, "job:run")[0]
	require.True(t, tr.descends(run, submit.SpanID), "\n%s", dumpSpans(tr))
	require.Equal(t, "batch", run.Attrs["messaging.destination.name"])
	var chunkIDs []string
	for _, c := range tr.named(svcWorker, "job:chunk") {
		require.Equal(t, run.SpanID, c.ParentID, "chunks are enqueued inside job:run:\n%s", dumpSpans(tr))
		chunkIDs = append(chunkIDs, c.SpanID)
	}
	require.Len(t, chunkIDs, 5)
	require.Eventually(t, func() bool { return hooks.Load() == 1 }, 10*time.Second, 10*time.Millisecond)

	// The worker's "job finished" line carries the same trace.
	line, ok := logLine(t, s.fullLogs("worker"), func(m map[string]any) bool {
		return m["msg"] == "job finished" && m["job_id"] == j.ID
	})
	require.True(t, ok, "no job finished line: %s", s.logs("worker"))
	require.Equal(t, submit.TraceID, line["trace_id"])
	require.Empty(t, rcv.Errors())
	t.Logf("job trace:\n%s", dumpSpans(tr))
}

// ---------------------------------------------------------------------------------------------
// Metrics

// catalogFamily is one line of deploy/testdata/exposed_metrics.txt.
type catalogFamily struct {
	name   string
	typ    string              // counter, gauge, histogram, summary
	labels map[string][]string // label → the values it takes (nil: not listed)
}

// readCatalog parses deploy/testdata/exposed_metrics.txt (its format is in its header: one
// family per line, `name type [label[=value|value...] ...]`; # comments).
func readCatalog(t *testing.T) []catalogFamily {
	t.Helper()
	b, err := os.ReadFile("../../deploy/testdata/exposed_metrics.txt")
	require.NoError(t, err)
	var out []catalogFamily
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		require.GreaterOrEqual(t, len(f), 2, line)
		fam := catalogFamily{name: f[0], typ: f[1], labels: map[string][]string{}}
		for _, l := range f[2:] {
			name, values, ok := strings.Cut(l, "=")
			fam.labels[name] = nil
			if ok {
				fam.labels[name] = strings.Split(values, "|")
			}
		}
		out = append(out, fam)
	}
	require.NotEmpty(t, out)
	return out
}

// tryScrape returns the text of a /metrics endpoint (for conditions of require.Eventually,
// which must not fail the test from their goroutine).
func tryScrape(url string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s answered %d", url, resp.StatusCode)
	}
	return string(b), err
}

// scrapeFamilies scrapes a /metrics endpoint and parses it.
func scrapeFamilies(t *testing.T, url string) (map[string]*dtoFamily, string) {
	t.Helper()
	text := scrape(t, url)
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	require.NoError(t, err, "scrape of %s does not parse", url)
	out := map[string]*dtoFamily{}
	for name, f := range fams {
		df := &dtoFamily{typ: strings.ToLower(f.GetType().String())}
		for _, m := range f.GetMetric() {
			ls := map[string]string{}
			for _, lp := range m.GetLabel() {
				ls[lp.GetName()] = lp.GetValue()
			}
			df.series = append(df.series, ls)
		}
		out[name] = df
	}
	return out, text
}

// dtoFamily is a scraped family: its type and the label sets of its series.
type dtoFamily struct {
	typ    string
	series []map[string]string
}

// sample returns the sum of the samples of name (name_count, name_sum or a plain family)
// whose labels include want.
func sample(text, name string, want map[string]string) float64 {
	total := 0.0
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		return -1
	}
	base, suffix := name, ""
	for _, sfx := range []string{"_count", "_sum"} {
		if b, ok := strings.CutSuffix(name, sfx); ok && fams[b] != nil && fams[name] == nil {
			base, suffix = b, sfx
		}
	}
	f := fams[base]
	if f == nil {
		return 0
	}
next:
	for _, m := range f.GetMetric() {
		ls := map[string]string{}
		for _, lp := range m.GetLabel() {
			ls[lp.GetName()] = lp.GetValue()
		}
		for k, v := range want {
			if ls[k] != v {
				continue next
			}
		}
		switch {
		case m.GetCounter() != nil:
			total += m.GetCounter().GetValue()
		case m.GetGauge() != nil:
			total += m.GetGauge().GetValue()
		case m.GetHistogram() != nil && suffix == "_sum":
			total += m.GetHistogram().GetSampleSum()
		case m.GetHistogram() != nil:
			total += float64(m.GetHistogram().GetSampleCount())
		case m.GetUntyped() != nil:
			total += m.GetUntyped().GetValue()
		}
	}
	return total
}

// After traffic of every kind, each family of exposed_metrics.txt is exposed by the api or
// the worker with the type and labels listed there, and the counters moved as the traffic
// says. The first stack persists through the queue (PERSIST_PATH=queue, the worker's persist
// series); a second one, on the default path with its Redis stopped, stores the prediction
// from the api and logs its alert.
func TestMetricsExposedAfterTraffic(t *testing.T) {
	t.Parallel()
	var alerts, hooks atomic.Int32
	alertRecv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		alerts.Add(1)
	}))
	t.Cleanup(alertRecv.Close)
	hookRecv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		hooks.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(hookRecv.Close)

	s := startStack(t, stackOpts{scheduler: true, env: map[string]string{
		"ALERT_WEBHOOK_URL": alertRecv.URL + "/alerts", "JOB_CHUNK_SIZE": "50", "PERSIST_PATH": "queue",
		"ADMISSION_CONTROL": "true", // its metrics are in the catalog
	}})
	apiURL := s.base + "/metrics"
	workerURL := "http://127.0.0.1:" + s.env["WORKER_METRICS_PORT"] + "/metrics"
	_, before := scrapeFamilies(t, apiURL)
	xs, _ := sonar(t)

	// Traffic: a miss then a hit of the same row, a low-confidence prediction (threshold 1:
	// no answer is that sure), a batch of 5, a 120-item job with a webhook, and 4xx answers.
	predictions := 0
	require.False(t, s.predict(xs[0], 0, "m-miss").Cached)
	require.True(t, s.predict(xs[0], 0, "m-hit").Cached)
	low := s.predict(xs[1], 1, "m-low")
	require.Less(t, low.Confidence, 1.0)
	predictions += 3
	batch := make([]map[string]any, 5)
	for i := range batch {
		batch[i] = map[string]any{"features": xs[10+i]}
	}
	r := s.call("POST", "/api/v1/predict/batch", map[string]any{"samples": batch}, nil)
	require.Equal(t, http.StatusOK, r.status, string(r.body))
	predictions += len(batch)
	stored := predictions - 1 // the confident cache hit is answered, not stored
	samples := make([]map[string]any, 120)
	for i := range samples {
		samples[i] = map[string]any{"features": xs[i%len(xs)]}
	}
	r = s.call("POST", "/api/v1/jobs", map[string]any{"samples": samples, "webhook_url": hookRecv.URL + "/hook"}, nil)
	require.Equal(t, http.StatusAccepted, r.status, string(r.body))
	var j jobObject
	r.decode(t, &j)
	r = s.call("POST", "/api/v1/predict", map[string]any{"features": []float64{1, 2}}, nil)
	require.Equal(t, http.StatusUnprocessableEntity, r.status, string(r.body))
	require.Equal(t, http.StatusUnauthorized, s.callAs("not-a-key-0123456789", "GET", "/api/v1/models").status)
	require.Equal(t, http.StatusNotFound, s.call("GET", "/nope", nil, nil).status)

	require.Equal(t, "succeeded", s.waitJob(j.ID, 60*time.Second).Status)
	// The worker's effects: the 7 records stored, the alert raised and its webhook called,
	// the job's webhook delivered.
	var worker string
	require.Eventually(t, func() bool {
		worker, _ = tryScrape(workerURL)
		return sample(worker, "ml_persist_records_total", map[string]string{"outcome": "inserted"}) >= float64(stored) &&
			sample(worker, "ml_alert_webhook_total", map[string]string{"outcome": "delivered"}) >= 1 &&
			sample(worker, "webhook_deliveries_total", map[string]string{"outcome": "delivered"}) >= 1
	}, 30*time.Second, 100*time.Millisecond, "worker metrics did not move:\n%s\nworker log: %s", worker, s.logs("worker"))
	require.EqualValues(t, 1, alerts.Load())
	require.EqualValues(t, 1, hooks.Load())

	// The second stack (PERSIST_PATH=postgres, the default): Redis is stopped, so the
	// prediction is written to Postgres by the api as always, and its low-confidence alert,
	// which cannot be enqueued, is only logged.
	down := startStack(t, stackOpts{noWorker: true})
	down.redis.Stop()
	failed := time.Now()
	out := down.predict(xs[2], 1, "m-fallback")
	downFams, downAPI := scrapeFamilies(t, down.base+"/metrics")
	// The breaker stays open for prediction.DefaultBreakerCooldown after the failed enqueue.
	if time.Since(failed) < prediction.DefaultBreakerCooldown {
		require.Equal(t, 1.0, sample(downAPI, "ml_persist_queue_circuit_open", nil), "the breaker is open after the failed alert enqueue")
	}
	require.Less(t, out.Confidence, 1.0)
	require.Equal(t, 1, countRows(t, down.dbURL, `SELECT count(*) FROM predictions WHERE request_id = 'm-fallback'`))

	apiFams, api := scrapeFamilies(t, apiURL)
	workerFams, worker := scrapeFamilies(t, workerURL)
	schedulerFams, _ := scrapeFamilies(t, "http://127.0.0.1:"+s.env["SCHEDULER_METRICS_PORT"]+"/metrics")
	procs := []struct {
		name string
		fams map[string]*dtoFamily
	}{{"api", apiFams}, {"worker", workerFams}, {"scheduler", schedulerFams}, {"api (Redis down)", downFams}}

	// Every listed family is exposed by some process, with its type and only its labels and
	// listed values.
	for _, fam := range readCatalog(t) {
		if fam.name == "up" {
			continue // Prometheus's own, per target
		}
		var where []string
		for _, p := range procs {
			got := p.fams[fam.name]
			if got == nil {
				continue
			}
			where = append(where, p.name)
			require.Equal(t, fam.typ, got.typ, "%s on the %s", fam.name, p.name)
			for _, ls := range got.series {
				names := make([]string, 0, len(ls))
				for k, v := range ls {
					names = append(names, k)
					allowed, listed := fam.labels[k]
					require.True(t, listed, "%s on the %s has label %s, which exposed_metrics.txt does not list", fam.name, p.name, k)
					if allowed != nil {
						require.Contains(t, allowed, v, "%s{%s} on the %s: value not listed", fam.name, k, p.name)
					}
				}
				require.Len(t, names, len(fam.labels), "%s on the %s: labels %v, listed %v", fam.name, p.name, names, fam.labels)
			}
		}
		require.NotEmpty(t, where, "%s is exposed by no process", fam.name)
		if strings.HasPrefix(fam.name, "asynq_") {
			require.Contains(t, where, "worker", "asynq's queue metrics are the worker's")
		}
		t.Logf("%-40s %s", fam.name, strings.Join(where, ", "))
	}

	// The values moved as the traffic says.
	delta := func(name string, labels map[string]string) float64 {
		return sample(api, name, labels) - sample(before, name, labels)
	}
	require.Equal(t, float64(predictions), delta("ml_predictions_total", nil))
	require.Equal(t, 1.0, delta("ml_predictions_total", map[string]string{"status": "low_confidence"}))
	require.Equal(t, float64(predictions), delta("ml_prediction_duration_seconds_count", nil))
	require.Equal(t, float64(predictions), delta("ml_model_confidence_count", nil))
	require.GreaterOrEqual(t, delta("ml_cache_requests_total", map[string]string{"result": "hit"}), 1.0)
	require.GreaterOrEqual(t, delta("ml_cache_requests_total", map[string]string{"result": "miss"}), 1.0)
	require.Equal(t, 1.0, delta("http_requests_total", map[string]string{"route": "/api/v1/predict", "status": "422"}))
	require.Equal(t, 1.0, delta("http_requests_total", map[string]string{"route": "/api/v1/models", "status": "401"}))
	require.Equal(t, 1.0, delta("http_requests_total", map[string]string{"route": "unmatched", "status": "404"}))
	require.Equal(t, 1.0, delta("http_requests_total", map[string]string{"route": "/api/v1/predict/batch", "status": "200"}))
	require.Equal(t, 1.0, delta("ml_jobs_submitted_total", nil))
	require.Equal(t, 120.0, delta("ml_job_items_total", map[string]string{"stage": "submitted"}))
	require.Zero(t, sample(api, "ml_persist_fallback_total", nil), "Redis was up")

	require.Equal(t, 1.0, sample(worker, "ml_jobs_finished_total", map[string]string{"status": "succeeded"}))
	require.Equal(t, 120.0, sample(worker, "ml_job_items_total", map[string]string{"stage": "processed"}))
	require.Equal(t, 1.0, sample(worker, "ml_job_duration_seconds_count", map[string]string{"status": "succeeded"}))
	require.Equal(t, 1.0, sample(worker, "webhook_deliveries_total", map[string]string{"outcome": "delivered"}))
	require.Equal(t, 1.0, sample(worker, "ml_low_confidence_total", nil))
	require.Equal(t, float64(stored), sample(worker, "ml_persist_records_total", map[string]string{"outcome": "inserted"}))
	require.GreaterOrEqual(t, sample(worker, "ml_persist_batch_records_count", nil), 1.0)
	require.Equal(t, 3.0, sample(worker, "worker_tasks_processed_total", map[string]string{"task_type": "job:chunk", "outcome": "success"}))
	require.Equal(t, 1.0, sample(worker, "worker_tasks_processed_total", map[string]string{"task_type": "job:run", "outcome": "success"}))
	for _, q := range []string{"critical", "default", "batch"} {
		require.Positive(t, sample(worker, "asynq_tasks_processed_total", map[string]string{"queue": q}), "queue %s", q)
	}

	require.Zero(t, sample(downAPI, "ml_persist_fallback_total", nil), "Postgres took the record first")
	require.Equal(t, 1.0, sample(downAPI, "ml_persist_direct_batch_records_sum", nil))
	require.Zero(t, sample(downAPI, "ml_persist_postgres_circuit_open", nil))
	require.Equal(t, 1.0, sample(downAPI, "ml_alert_fallback_total", nil))
	require.GreaterOrEqual(t, sample(downAPI, "ml_cache_requests_total", map[string]string{"result": "error"}), 1.0)
	require.Zero(t, sample(downAPI, "ml_persist_unavailable_total", nil), "Postgres took the record")
}

// A fresh api and worker, before any traffic, expose every series of the families whose
// labels all have known values (exposed_metrics.txt lists them) at 0, so that no panel of the
// dashboard and no alert rule reads "no data" on a fresh start. asynq_* is left out: its
// series come with the queues in Redis (see deploy/README.md).
func TestFreshProcessesExposeKnownSeriesAtZero(t *testing.T) {
	t.Parallel()
	s := startStack(t, stackOpts{env: map[string]string{"ADMISSION_CONTROL": "true"}})
	apiFams, api := scrapeFamilies(t, s.base+"/metrics")
	workerFams, worker := scrapeFamilies(t, "http://127.0.0.1:"+s.env["WORKER_METRICS_PORT"]+"/metrics")
	fams := map[string]map[string]*dtoFamily{"api": apiFams, "worker": workerFams}

	checked := 0
	for _, fam := range readCatalog(t) {
		if strings.HasPrefix(fam.name, "asynq_") || len(fam.labels) == 0 {
			continue
		}
		combos := []map[string]string{{}}
		fixed := true
		for label, values := range fam.labels {
			if values == nil {
				fixed = false
				break
			}
			var next []map[string]string
			for _, c := range combos {
				for _, v := range values {
					n := maps.Clone(c)
					n[label] = v
					next = append(next, n)
				}
			}
			combos = next
		}
		if !fixed {
			continue
		}
		name := fam.name
		if fam.typ == "histogram" {
			name += "_count"
		}
		for _, want := range combos {
			var where []string
			for proc, text := range map[string]string{"api": api, "worker": worker} {
				if hasSeries(fams[proc][fam.name], want) {
					where = append(where, proc)
					require.Zero(t, sample(text, name, want), "%s%v on the fresh %s", fam.name, want, proc)
				}
			}
			require.NotEmpty(t, where, "%s%v is exposed by neither the fresh api nor the worker", fam.name, want)
			checked++
		}
	}
	require.GreaterOrEqual(t, checked, 20, "the catalog's families with known label values")
}

// hasSeries reports whether f has a series with exactly the labels want.
func hasSeries(f *dtoFamily, want map[string]string) bool {
	if f == nil {
		return false
	}
	for _, ls := range f.series {
		if maps.Equal(ls, want) {
			return true
		}
	}
	return false
}

// ---------------------------------------------------------------------------------------------
// asynqmon

// The dashboard is served under /monitoring/ behind Basic auth; its JSON API lists the queues;
// without credentials configured the route does not exist.
func TestMonitoringDashboard(t *testing.T) {
	t.Parallel()
	const user, pass = "ops", "monitoring-secret-1"

	t.Run("behind basic auth", func(t *testing.T) {
		t.Parallel()
		// No worker: the tasks stay in their queues. The scheduler fills the low queue;
		// PERSIST_PATH=queue puts the prediction's persist task in the default queue.
		s := startStack(t, stackOpts{noWorker: true, scheduler: true, env: map[string]string{
			"MONITORING_USER": user, "MONITORING_PASSWORD": pass, "RECONCILE_INTERVAL": "1s", "PERSIST_PATH": "queue",
		}})
		get := func(path string, auth bool) response {
			t.Helper()
			req, err := http.NewRequest("GET", s.base+path, nil)
			require.NoError(t, err)
			if auth {
				req.SetBasicAuth(user, pass)
			}
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			require.NoError(t, err)
			return response{status: resp.StatusCode, header: resp.Header, body: b}
		}

		r := get("/monitoring/", false)
		require.Equal(t, http.StatusUnauthorized, r.status)
		require.True(t, strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Basic "), r.header.Get("WWW-Authenticate"))
		require.Equal(t, http.StatusUnauthorized, get("/monitoring/api/queues", false).status)
		req, _ := http.NewRequest("GET", s.base+"/monitoring/", nil)
		req.SetBasicAuth(user, "wrong-password-123")
		resp, err := http.DefaultClient.Do(req)
		require.NoError(t, err)
		resp.Body.Close()
		require.Equal(t, http.StatusUnauthorized, resp.StatusCode)

		r = get("/monitoring/", true)
		require.Equal(t, http.StatusOK, r.status)
		require.Contains(t, r.header.Get("Content-Type"), "text/html")
		require.Contains(t, strings.ToLower(string(r.body)), "<html")

		// Tasks in every queue: persist (default), alert (critical), job:run (batch), and the
		// scheduler's maintenance tasks (low).
		xs, _ := sonar(t)
		s.predict(xs[0], 1, "mon-1")
		r = s.call("POST", "/api/v1/jobs", map[string]any{"samples": []any{map[string]any{"features": xs[0]}}}, nil)
		require.Equal(t, http.StatusAccepted, r.status, string(r.body))
		var queues []string
		var last string
		require.Eventually(t, func() bool {
			req, err := http.NewRequest("GET", s.base+"/monitoring/api/queues", nil)
			if err != nil {
				return false
			}
			req.SetBasicAuth(user, pass)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			last = string(b)
			var body struct {
				Queues []struct {
					Queue string `json:"queue"`
					Size  int    `json:"size"`
				} `json:"queues"`
			}
			if resp.StatusCode != http.StatusOK || json.Unmarshal(b, &body) != nil {
				return false
			}
			queues = queues[:0]
			for _, q := range body.Queues {
				queues = append(queues, q.Queue)
			}
			slices.Sort(queues)
			return slices.Equal(queues, []string{"batch", "critical", "default", "low"})
		}, 20*time.Second, 100*time.Millisecond, "queues listed: %v (%s); scheduler: %s", queues, last, s.logs("scheduler"))
	})

	t.Run("off without credentials", func(t *testing.T) {
		t.Parallel()
		s := startStack(t, stackOpts{noWorker: true})
		for _, p := range []string{"/monitoring/", "/monitoring/api/queues", "/monitoring"} {
			req, _ := http.NewRequest("GET", s.base+p, nil)
			req.SetBasicAuth(user, pass)
			resp, err := http.DefaultClient.Do(req)
			require.NoError(t, err)
			resp.Body.Close()
			require.Equal(t, http.StatusNotFound, resp.StatusCode, p)
		}
	})
}
