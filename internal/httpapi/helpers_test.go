package httpapi

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/auth"
	"github.com/predq/predq/internal/health"
	"github.com/predq/predq/internal/modelreg"
	"github.com/predq/predq/internal/oip"
	"github.com/predq/predq/internal/prediction"
)

// Keys known to fakeAuth.
const (
	testKey      = "test-key-0123456789abcdef"
	otherTestKey = "other-key-0123456789abcdef"
)

// fakePredictor answers every valid input with a fixed prediction and records what it was
// given, normalized. It checks inputs with the prediction feature's own rules
// (prediction.Input.Check, prediction.CheckBatch), as the real service does, since the
// handler only decodes: the 422 bodies the tests assert come from that code.
type fakePredictor struct {
	mu       sync.Mutex
	n        int             // calls
	answered int             // calls that passed the checks and were answered
	ctx      context.Context // of the last call
	last     prediction.Input
	meta     prediction.Meta
	batches  int
	lastPar  bool

	err   error            // returned by every call when set
	panic any              // panicked with by every call when set
	now   func() time.Time // default: a fixed time in a non-UTC zone
}

func (f *fakePredictor) answer(in prediction.Input, meta prediction.Meta) prediction.Output {
	version := in.ModelVersion
	if version == prediction.LatestAlias {
		version = "v1.1.0"
	}
	now := time.Date(2025, 1, 2, 4, 4, 5, 123_000_000, time.FixedZone("CET", 3600))
	if f.now != nil {
		now = f.now()
	}
	return prediction.Output{
		Prediction: 0.75, Confidence: 0.75, ModelVersion: version, LatencyMS: 0.5, Timestamp: now,
		PredictionClass: prediction.ClassPositive, RequestID: meta.RequestID,
	}
}

func (f *fakePredictor) Predict(ctx context.Context, in prediction.Input, meta prediction.Meta) (prediction.Output, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	f.ctx = ctx
	if f.panic != nil {
		panic(f.panic)
	}
	if f.err != nil {
		return prediction.Output{}, f.err
	}
	if err := in.Check(); err != nil {
		return prediction.Output{}, err
	}
	f.answered++
	f.last, f.meta = in, meta
	return f.answer(in, meta), nil
}

func (f *fakePredictor) PredictBatch(_ context.Context, ins []prediction.Input, parallel bool, meta prediction.Meta) ([]prediction.Output, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.n++
	f.batches++
	f.lastPar = parallel
	f.meta = meta
	if f.panic != nil {
		panic(f.panic)
	}
	if f.err != nil {
		return nil, f.err
	}
	if err := prediction.CheckBatch(ins); err != nil {
		return nil, err
	}
	f.answered++
	if len(ins) > 0 {
		f.last = ins[len(ins)-1]
	}
	outs := make([]prediction.Output, len(ins))
	for i, in := range ins {
		outs[i] = f.answer(in, meta)
	}
	return outs, nil
}

func (f *fakePredictor) lastInput(t *testing.T) prediction.Input {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	require.NotZero(t, f.n, "the predictor was not called")
	return f.last
}

func (f *fakePredictor) lastMeta(t *testing.T) prediction.Meta {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	require.NotZero(t, f.n, "the predictor was not called")
	return f.meta
}

func (f *fakePredictor) calls() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.n
}

// answers counts the calls whose input passed the prediction rules.
func (f *fakePredictor) answers() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.answered
}

// fakeCatalog holds two versions.
type fakeCatalog struct {
	err error
}

func testModels() []modelreg.Info {
	return []modelreg.Info{
		{Version: "v1.0.0", Kind: "logistic_regression", InputSize: 60, Preprocessings: []string{"standard", "minmax"},
			Aliases: []string{}, Metrics: map[string]modelreg.Metrics{"standard": {Accuracy: 0.77, ROCAUC: 0.84, Folds: 5, Repeats: 3}},
			DatasetSHA256: "abc", Checksum: "def", Loaded: true},
		{Version: "v1.1.0", Kind: "mlp", InputSize: 60, Preprocessings: []string{"standard", "minmax", "robust"},
			Aliases: []string{"latest"}, Metrics: map[string]modelreg.Metrics{"robust": {Accuracy: 0.81}},
			DatasetSHA256: "abc", Checksum: "123", Loaded: true},
	}
}

func (f *fakeCatalog) List(context.Context) ([]modelreg.Info, error) {
	if f.err != nil {
		return nil, f.err
	}
	return testModels(), nil
}

func (f *fakeCatalog) Get(_ context.Context, version string) (modelreg.Info, error) {
	if f.err != nil {
		return modelreg.Info{}, f.err
	}
	for _, m := range testModels() {
		if m.Version == version || (version == "latest" && m.Version == "v1.1.0") {
			return m, nil
		}
	}
	return modelreg.Info{}, modelreg.ErrNotFound
}

// fakeAuth knows testKey (principal "tester", tenant "k-tester") and otherTestKey ("other",
// "k-other"), both with every scope, and scopedKey's keys, with the scopes they name.
type fakeAuth struct{}

func (fakeAuth) Authenticate(_ context.Context, key string) (auth.Principal, error) {
	switch key {
	case testKey:
		return auth.Principal{Name: "tester", KeyID: "k-tester", Scopes: auth.AllScopes()}, nil
	case otherTestKey:
		return auth.Principal{Name: "other", KeyID: "k-other", Scopes: auth.AllScopes()}, nil
	}
	if class, ok := strings.CutPrefix(key, "class-key:"); ok {
		return auth.Principal{Name: key, KeyID: "k-" + key, Scopes: auth.AllScopes(), Class: class, Weight: 1}, nil
	}
	if list, ok := strings.CutPrefix(key, "scoped-key:"); ok {
		p := auth.Principal{Name: key, KeyID: "k-" + key}
		for _, s := range strings.Split(list, "+") {
			if s != "" {
				p.Scopes = append(p.Scopes, auth.Scope(s))
			}
		}
		return p, nil
	}
	return auth.Principal{}, auth.ErrUnauthorized
}

// scopedKey is a key that fakeAuth gives exactly scopes.
func scopedKey(scopes ...auth.Scope) string {
	names := make([]string, len(scopes))
	for i, s := range scopes {
		names[i] = string(s)
	}
	return "scoped-key:" + strings.Join(names, "+")
}

// fakeReadiness reports ready unless told otherwise.
type fakeReadiness struct {
	notReady bool
}

func (f *fakeReadiness) Ready(context.Context) health.Report {
	rep := health.Report{
		Status:    health.StatusReady,
		Ready:     true,
		Checks:    map[string]health.CheckResult{"postgres": {Status: health.StatusOK, LatencyMS: 1.5}},
		CheckedAt: time.Date(2025, 1, 2, 4, 4, 5, 0, time.FixedZone("CET", 3600)),
	}
	if f.notReady {
		rep.Status, rep.Ready = health.StatusUnavailable, false
		rep.Checks["postgres"] = health.CheckResult{Status: health.StatusDown, Error: "connection refused"}
	}
	return rep
}

// syncBuffer is a bytes.Buffer safe for concurrent writers (the access log).
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testBundle holds the server's collaborators.
type testBundle struct {
	predictor *fakePredictor
	models    *fakeCatalog
	ready     *fakeReadiness
	logs      *syncBuffer
	reg       *prometheus.Registry
}

// setup builds a Server on fakes. cfgFn may change the config before New.
func setup(t testing.TB, cfgFn ...func(*Config)) (*Server, *testBundle) {
	t.Helper()
	b := &testBundle{
		predictor: &fakePredictor{},
		models:    &fakeCatalog{},
		ready:     &fakeReadiness{},
		logs:      &syncBuffer{},
		reg:       prometheus.NewRegistry(),
	}
	var logOut io.Writer = b.logs
	if tt, ok := t.(*testing.T); ok {
		logOut = io.MultiWriter(b.logs, tt.Output())
	}
	cfg := Config{
		Version:    "test",
		Logger:     slog.New(slog.NewJSONHandler(logOut, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer: b.reg,
	}
	for _, fn := range cfgFn {
		fn(&cfg)
	}
	oipSvc, err := oip.NewService(oip.Config{Predictor: b.predictor, Models: shippedModels(t)})
	require.NoError(t, err)
	s, err := New(cfg, Deps{Predictor: b.predictor, Models: b.models, Auth: fakeAuth{}, Readiness: b.ready, Jobs: &fakeJobs{}, Replays: &fakeJobs{}, Promoter: fakePromoter{}, Predictions: fakePredictions{}, OIP: oipSvc})
	require.NoError(t, err)
	return s, b
}

var shipped struct {
	once sync.Once
	reg  *modelreg.Registry
	err  error
}

// shippedModels is a registry of the shipped models (no Postgres), loaded once.
func shippedModels(t testing.TB) *modelreg.Registry {
	shipped.once.Do(func() {
		shipped.reg = modelreg.New("../../models", nil, slog.New(slog.DiscardHandler))
		shipped.err = shipped.reg.Load(context.Background())
	})
	require.NoError(t, shipped.err)
	return shipped.reg
}

// request describes one call.
type request struct {
	method string
	path   string
	body   string
	header map[string]string // added to the defaults
	noAuth bool              // leave out the API key
	noCT   bool              // leave out Content-Type
}

// do sends r to s and returns the recorded response. POSTs get Content-Type:
// application/json and every request the test key unless told otherwise.
func do(t testing.TB, s *Server, r request) *httptest.ResponseRecorder {
	t.Helper()
	req := newRequest(cmp.Or(r.method, http.MethodGet), r.path, r.body)
	if r.noCT {
		req.Header.Del("Content-Type")
	}
	if r.noAuth {
		req.Header.Del("Authorization")
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	return serve(s, req)
}

// newRequest is a request with the test key and, for a POST, Content-Type: application/json.
func newRequest(method, path, body string) *http.Request {
	var rd io.Reader = http.NoBody
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, rd)
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+testKey)
	return req
}

// serve runs req through s.
func serve(s *Server, req *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	return rec
}

// predict posts body to /api/v1/predict.
func predict(t testing.TB, s *Server, body string) *httptest.ResponseRecorder {
	t.Helper()
	return do(t, s, request{method: http.MethodPost, path: "/api/v1/predict", body: body})
}

// readProblem checks the problem+json shape of rec and returns it: content type, status in
// the body equal to the response's, instance and request id filled.
func readProblem(t testing.TB, rec *httptest.ResponseRecorder) Problem {
	t.Helper()
	require.Equal(t, "application/problem+json", rec.Header().Get("Content-Type"), "body: %s", rec.Body)
	var p Problem
	dec := json.NewDecoder(bytes.NewReader(rec.Body.Bytes()))
	dec.DisallowUnknownFields()
	require.NoError(t, dec.Decode(&p), "body: %s", rec.Body)
	require.Equal(t, rec.Code, p.Status)
	require.NotEmpty(t, p.Title)
	require.NotEmpty(t, p.Type)
	require.NotEmpty(t, p.Instance)
	require.Equal(t, rec.Header().Get("X-Request-ID"), p.RequestID)
	return p
}

// fieldsOf returns the field names of p's errors.
func fieldsOf(p Problem) []string {
	fields := []string{}
	for _, e := range p.Errors {
		fields = append(fields, e.Field)
	}
	return fields
}

// features returns n copies of x as a JSON array.
func features(n int, x string) string {
	return "[" + strings.TrimSuffix(strings.Repeat(x+",", n), ",") + "]"
}
