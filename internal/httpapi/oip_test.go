package httpapi

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/auth"
)

// readOIPError asserts the protocol's error body, {"error": "..."} as application/json.
func readOIPError(t *testing.T, rec *httptest.ResponseRecorder) string {
	t.Helper()
	require.Equal(t, "application/json", strings.Split(rec.Header().Get(echo.HeaderContentType), ";")[0], rec.Body.String())
	var e map[string]any
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &e), rec.Body.String())
	msg, ok := e["error"].(string)
	require.True(t, ok && msg != "" && len(e) == 1, "the protocol's error object: %s", rec.Body)
	return msg
}

func oipRow(v string) string {
	return "[" + strings.TrimSuffix(strings.Repeat(v+",", 60), ",") + "]"
}

// Every /v2 route but health needs a key (401 in the protocol's shape), and its scope (403
// in the protocol's shape); health is open.
func TestOIPRoutesRequireKeyAndScope(t *testing.T) {
	t.Parallel()
	s, _ := setup(t)
	want := map[string]auth.Scope{
		"GET /v2": auth.ScopePredict, "GET /v2/": auth.ScopePredict,
		"GET /v2/models/{name}": auth.ScopePredict, "GET /v2/models/{name}/versions/{version}": auth.ScopePredict,
		"GET /v2/models/{name}/ready": auth.ScopePredict, "GET /v2/models/{name}/versions/{version}/ready": auth.ScopePredict,
		"POST /v2/models/{name}/infer": auth.ScopePredict, "POST /v2/models/{name}/versions/{version}/infer": auth.ScopePredict,
		"GET /v2/jobs/{id}": auth.ScopeJobs, "GET /v2/jobs/{id}/result": auth.ScopeJobs,
		"GET /v2/health/live": "", "GET /v2/health/ready": "",
	}
	seen := 0
	for _, r := range s.e.Routes() {
		if r.Method == echo.RouteNotFound || !isOIPPath(r.Path) {
			continue
		}
		route := r.Method + " " + echoParam.ReplaceAllString(r.Path, "{$1}")
		scope, ok := want[route]
		require.True(t, ok, "%s: which scope does it need?", route)
		seen++
		path := strings.NewReplacer(":name", "sonar", ":version", "v1.0.0", ":id", "00000000-0000-0000-0000-000000000000").Replace(r.Path)
		body := `{"inputs":[{"name":"features","datatype":"FP64","shape":[60],"data":` + oipRow("0.1") + `}]}`
		if scope == "" {
			rec := do(t, s, request{method: r.Method, path: path, noAuth: true})
			require.Equal(t, http.StatusOK, rec.Code, route)
			continue
		}
		rec := do(t, s, request{method: r.Method, path: path, body: body, noAuth: true})
		require.Equal(t, http.StatusUnauthorized, rec.Code, route)
		require.Contains(t, readOIPError(t, rec), "API key", route)
		rec = do(t, s, request{method: r.Method, path: path, body: body, header: map[string]string{"Authorization": "Bearer " + scopedKey(auth.ScopeReview)}})
		require.Equal(t, http.StatusForbidden, rec.Code, route)
		require.Contains(t, readOIPError(t, rec), string(scope), route)
		rec = do(t, s, request{method: r.Method, path: path, body: body, header: map[string]string{"Authorization": "Bearer " + scopedKey(scope)}})
		require.NotEqual(t, http.StatusForbidden, rec.Code, "%s: %s", route, rec.Body)
	}
	require.Equal(t, len(want), seen)
}

// What the edge refuses before the protocol's service sees the request is in the protocol's
// error shape too: unknown paths, methods, bodies too large, not JSON, rate limits.
func TestOIPEdgeErrorsInTheProtocolShape(t *testing.T) {
	t.Parallel()
	s, _ := setup(t, func(c *Config) { c.BodyLimit = 4096; c.RateLimit = 1; c.RateBurst = 3 })
	cases := []struct {
		name string
		r    request
		want int
	}{
		{"unknown path", request{path: "/v2/nothing"}, 404},
		{"wrong method", request{method: http.MethodDelete, path: "/v2/models/sonar"}, 405},
		{"too large", request{method: http.MethodPost, path: "/v2/models/sonar/infer", body: `{"inputs":[` + strings.Repeat(" ", 5000) + `]}`}, 413},
		{"not JSON", request{method: http.MethodPost, path: "/v2/models/sonar/infer", body: `x`, header: map[string]string{"Content-Type": "text/plain"}}, 415},
	}
	for _, tc := range cases {
		rec := do(t, s, tc.r)
		require.Equal(t, tc.want, rec.Code, "%s: %s", tc.name, rec.Body)
		readOIPError(t, rec)
	}
	// The burst of 3 is spent above (the unknown path is not limited); the next is 429.
	codes := map[int]int{}
	for range 3 {
		rec := do(t, s, request{path: "/v2/models/sonar"})
		codes[rec.Code]++
		if rec.Code == http.StatusTooManyRequests {
			readOIPError(t, rec)
			require.NotEmpty(t, rec.Header().Get("Retry-After"))
		}
	}
	require.NotZero(t, codes[http.StatusTooManyRequests], "%v", codes)
}

// Nested and flat data decode to the same rows; the rows reach the predict feature.
func TestOIPInferDecodesFlatAndNested(t *testing.T) {
	t.Parallel()
	s, b := setup(t)
	flat := `{"id":"x","inputs":[{"name":"features","datatype":"FP64","shape":[2,60],"data":` +
		strings.TrimSuffix(oipRow("0.25"), "]") + "," + strings.TrimPrefix(oipRow("0.5"), "[") + `}]}`
	nested := `{"id":"x","inputs":[{"name":"features","datatype":"FP64","shape":[2,60],"data":[` + oipRow("0.25") + "," + oipRow("0.5") + `]}]}`
	var answers []string
	for _, body := range []string{flat, nested} {
		rec := do(t, s, request{method: http.MethodPost, path: "/v2/models/sonar/infer", body: body})
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		answers = append(answers, rec.Body.String())
		in := b.predictor.lastInput(t)
		require.Equal(t, 0.5, in.Features[59])
		require.Equal(t, "oip_rest", b.predictor.lastMeta(t).Protocol)
	}
	require.Equal(t, answers[0], answers[1])
	require.JSONEq(t, `{"model_name":"sonar","model_version":"v1.1.0","id":"x","outputs":[
		{"name":"probability","shape":[2],"datatype":"FP64","data":[0.75,0.75]},
		{"name":"class","shape":[2],"datatype":"BYTES","data":["positive","positive"]},
		{"name":"confidence","shape":[2],"datatype":"FP64","data":[0.75,0.75]}]}`, answers[0])

	for _, tc := range []struct{ body, want string }{
		{`{"inputs":[{"name":"features","datatype":"FP64","shape":[1,60],"data":[[1,2],[3]]}]}`, "holds 2 elements"},
		{`{"inputs":[{"name":"features","datatype":"FP64","shape":[1,60],"data":[[[1]]]}]}`, "nested deeper"},
		{`{"inputs":[{"name":"features","datatype":"FP64","shape":[60],"data":[[1]]}]}`, "flat array"},
		{`{"inputs":[{"name":"features","datatype":"FP64","shape":[1,60],"data":[1e999]}]}`, "overflows"},
		{`{"inputs":[{"name":"features","datatype":"FP64","shape":[1,60],"data":"abc"}]}`, "array of numbers"},
		{`{"inputs":[{"name":"features","datatype":"FP64","shape":[1,60],"data":[[true]]}]}`, "must be a number"},
		{`{"inputs":[{"name":"features","datatype":"FP64","shape":[1,60],"data":[1],"parameters":{"a":[1]}}]}`, "string, a number or a boolean"},
		{`{"inputs":[{"name":"features","datatype":"FP64","shape":"1","data":[1]}]}`, "shape"},
		{`{"inputs":[{"name":"features","datatype":"FP64","shape":[1,60],"data":[1]}],"id":7}`, "id"},
		{`{"inputs":null}`, "inputs is required"},
		{`{"inputs":[{"name":"features","datatype":"FP64","shape":[2,1],"data":[1,[2]]}]}`, "nested 2 levels"},
		{`{"inputs":[{"name":"features","datatype":"FP64","shape":[1,1,60],"data":[[1]]}]}`, "nested 3 levels"},
		{`{"inputs":[{"name":"features","datatype":"FP64","shape":[1,60],"data":[[[[[[[[[[1]]]]]]]]]]}]}`, "nested deeper"},
	} {
		rec := do(t, s, request{method: http.MethodPost, path: "/v2/models/sonar/infer", body: tc.body})
		require.Equal(t, http.StatusBadRequest, rec.Code, "%s: %s", tc.body, rec.Body)
		require.Contains(t, readOIPError(t, rec), tc.want, tc.body)
	}
}

func TestPrefersAsync(t *testing.T) {
	t.Parallel()
	for v, want := range map[string]bool{
		"respond-async": true, "Respond-Async": true, "wait=10, respond-async": true, "respond-async; x=1": true,
		"return=minimal": false, "": false, "respond-asyncx": false,
	} {
		h := http.Header{}
		if v != "" {
			h.Set("Prefer", v)
		}
		require.Equal(t, want, prefersAsync(h), v)
	}
}

// With Prefer: respond-async an infer is a job: 202, Location, Preference-Applied; it needs
// the jobs scope besides predict; more rows than the synchronous limit are fine.
func TestOIPInferAsyncSubmitsAJob(t *testing.T) {
	t.Parallel()
	s, _ := setup(t, func(c *Config) { c.MaxBatchSize = 2 })
	rows := []string{oipRow("0.1"), oipRow("0.2"), oipRow("0.3")}
	body := `{"id":"a","inputs":[{"name":"features","datatype":"FP32","shape":[3,60],"data":[` + strings.Join(rows, ",") + `]}]}`
	rec := do(t, s, request{method: http.MethodPost, path: "/v2/models/sonar/infer", body: body,
		header: map[string]string{"Prefer": "respond-async"}})
	require.Equal(t, http.StatusAccepted, rec.Code, rec.Body.String())
	require.Equal(t, "respond-async", rec.Header().Get("Preference-Applied"))
	var j oipJob
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &j))
	require.Equal(t, "/v2/jobs/"+j.ID.String(), rec.Header().Get("Location"))
	require.Equal(t, 3, j.Total)

	rec = do(t, s, request{method: http.MethodPost, path: "/v2/models/sonar/infer", body: body,
		header: map[string]string{"Prefer": "respond-async", "Authorization": "Bearer " + scopedKey(auth.ScopePredict)}})
	require.Equal(t, http.StatusForbidden, rec.Code)
	require.Contains(t, readOIPError(t, rec), "jobs")

	bad := strings.Replace(body, "0.3", "3000", 1)
	rec = do(t, s, request{method: http.MethodPost, path: "/v2/models/sonar/infer", body: bad,
		header: map[string]string{"Prefer": "respond-async"}})
	require.Equal(t, http.StatusBadRequest, rec.Code)
	require.Contains(t, readOIPError(t, rec), "inputs[0] row 2, column 0")
}
