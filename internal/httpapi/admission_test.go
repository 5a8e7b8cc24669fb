package httpapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/admission"
	"github.com/predq/predq/internal/prediction"
)

// gatedPredictor answers like fakePredictor, but each call first waits for the gate: the
// test decides when the slow path ends.
type gatedPredictor struct {
	fakePredictor
	gate    chan struct{}
	mu      sync.Mutex
	running int
}

func (g *gatedPredictor) wait(ctx context.Context) error {
	g.mu.Lock()
	g.running++
	g.mu.Unlock()
	defer func() { g.mu.Lock(); g.running--; g.mu.Unlock() }()
	select {
	case <-g.gate:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (g *gatedPredictor) inside() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.running
}

func (g *gatedPredictor) Predict(ctx context.Context, in prediction.Input, meta prediction.Meta) (prediction.Output, error) {
	if err := g.wait(ctx); err != nil {
		return prediction.Output{}, err
	}
	return g.fakePredictor.Predict(ctx, in, meta)
}

func (g *gatedPredictor) PredictBatch(ctx context.Context, ins []prediction.Input, parallel bool, meta prediction.Meta) ([]prediction.Output, error) {
	if err := g.wait(ctx); err != nil {
		return nil, err
	}
	return g.fakePredictor.PredictBatch(ctx, ins, parallel, meta)
}

// admissionServer is a Server on a gated predictor with a fixed admission limit.
func admissionServer(t *testing.T, limit, queue int, maxWait time.Duration) (*Server, *gatedPredictor, *admission.Controller) {
	t.Helper()
	reg := prometheus.NewRegistry()
	ac, err := admission.New(admission.Config{MinLimit: limit, MaxLimit: limit, InitialLimit: limit, QueueSize: queue, MaxWait: maxWait, Registerer: reg})
	require.NoError(t, err)
	g := &gatedPredictor{gate: make(chan struct{})}
	s, err := New(Config{Version: "test", Registerer: reg, MetricsHandler: promhttp.HandlerFor(reg, promhttp.HandlerOpts{}), Admission: ac},
		Deps{Predictor: g, Models: &fakeCatalog{}, Auth: fakeAuth{}, Readiness: &fakeReadiness{}, Jobs: &fakeJobs{}, Promoter: fakePromoter{}, Predictions: fakePredictions{}})
	require.NoError(t, err)
	return s, g, ac
}

const onePredict = `{"features":[0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1.0]}`

// send posts to path as key in the background.
func send(s *Server, path, key, body string) <-chan *httptest.ResponseRecorder {
	ch := make(chan *httptest.ResponseRecorder, 1)
	go func() {
		req := newRequest(http.MethodPost, path, body)
		req.Header.Set("Authorization", "Bearer "+key)
		ch <- serve(s, req)
	}()
	return ch
}

// At the limit, predict and batch predict wait in the queue, interactive keys first, and
// past it answer 503 problem+json (overloaded) with a Retry-After; health, metrics, the docs
// and the job routes answer meanwhile, never shed.
func TestAdmissionShedsSyncRoutesOnly(t *testing.T) {
	t.Parallel()
	s, g, ac := admissionServer(t, 2, 2, 10*time.Second)
	const bulk, inter = "class-key:bulk", "class-key:interactive"

	running := []<-chan *httptest.ResponseRecorder{
		send(s, "/api/v1/predict", inter, onePredict),
		send(s, "/api/v1/predict/batch", bulk, `{"samples":[`+onePredict+`]}`),
	}
	require.Eventually(t, func() bool { return g.inside() == 2 }, 5*time.Second, time.Millisecond)
	queuedBulk := send(s, "/api/v1/predict", bulk, onePredict)
	require.Eventually(t, func() bool { return ac.Queued() == 1 }, 5*time.Second, time.Millisecond)

	// Bulk has half the queue (1): the next bulk request is refused at once.
	rec := <-send(s, "/api/v1/predict/batch", bulk, `{"samples":[`+onePredict+`]}`)
	require.Equal(t, http.StatusServiceUnavailable, rec.Code, rec.Body.String())
	p := readProblem(t, rec)
	require.Equal(t, problemTypeBase+slugOverloaded, p.Type)
	require.Contains(t, p.Detail, "class bulk")
	ra, err := strconv.Atoi(rec.Header().Get("Retry-After"))
	require.NoError(t, err, "Retry-After is whole seconds")
	require.GreaterOrEqual(t, ra, 1)

	queuedInter := send(s, "/api/v1/predict", inter, onePredict)
	require.Eventually(t, func() bool { return ac.Queued() == 2 }, 5*time.Second, time.Millisecond)
	// The queue is full: an interactive request takes the bulk one's place.
	queuedInter2 := send(s, "/api/v1/predict", inter, onePredict)
	rec = <-queuedBulk
	require.Equal(t, http.StatusServiceUnavailable, rec.Code)
	require.Contains(t, readProblem(t, rec).Detail, "gave its place")
	require.NotEmpty(t, rec.Header().Get("Retry-After"))
	require.Eventually(t, func() bool { return ac.Queued() == 2 }, 5*time.Second, time.Millisecond)

	// Never shed while the sync routes are saturated.
	for _, r := range []request{
		{path: "/health/live"}, {path: "/health/ready"}, {path: "/metrics"}, {path: "/api/openapi.json"},
		{path: "/api/docs"}, {path: "/api/v1/models"}, {path: "/api/v1/jobs"},
		{method: http.MethodPost, path: "/api/v1/jobs", body: `{"samples":[` + onePredict + `]}`},
	} {
		rec := do(t, s, r)
		require.Less(t, rec.Code, 300, "%s %s: %d %s", r.method, r.path, rec.Code, rec.Body)
	}
	body := do(t, s, request{path: "/metrics"}).Body.String()
	require.Contains(t, body, `predq_admission_rejected_total{class="bulk",reason="queue_full"} 1`)
	require.Contains(t, body, `predq_admission_rejected_total{class="bulk",reason="shed"} 1`)
	require.Contains(t, body, "predq_admission_limit 2")
	require.Contains(t, body, "predq_admission_in_flight 2")
	require.Contains(t, body, `predq_admission_queued{class="interactive"} 2`)

	close(g.gate) // the slow path ends: everything admitted is answered
	for _, ch := range append(running, queuedInter, queuedInter2) {
		rec := <-ch
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
	}
	require.Equal(t, 0, ac.InFlight())
	require.Equal(t, 0, ac.Queued())
}

// The key's own rate limit answers 429 before admission is asked: a key over its quota does
// not take a slot or a place in the queue.
func TestRateLimitComesBeforeAdmission(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	ac, err := admission.New(admission.Config{MinLimit: 1, MaxLimit: 1, InitialLimit: 1, QueueSize: 1, MaxWait: time.Second, Registerer: reg})
	require.NoError(t, err)
	s, _ := setup(t, func(c *Config) { c.Admission = ac; c.RateLimit = 0.001; c.RateBurst = 1 })
	require.Equal(t, http.StatusOK, predict(t, s, onePredict).Code)
	rec := predict(t, s, onePredict)
	require.Equal(t, http.StatusTooManyRequests, rec.Code)
	require.Equal(t, problemTypeBase+slugRateLimited, readProblem(t, rec).Type)
	require.NotEmpty(t, rec.Header().Get("Retry-After"))
	require.Equal(t, 1.0, admitted(t, reg), "the refused request never reached admission")
}

// admitted sums predq_admission_admitted_total over its classes.
func admitted(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	require.NoError(t, err)
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() == "predq_admission_admitted_total" {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}
