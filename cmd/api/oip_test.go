package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/jackc/pgx/v5"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/oip/spec"
	"github.com/predq/predq/internal/pgtest"
	"github.com/predq/predq/internal/redistest"
)

// oipSpec is the protocol's own OpenAPI file (vendored), with the unversioned forms of its
// model paths added (the protocol's text gives the version as optional; its file writes only
// the versioned paths) and /v2 beside its /v2/.
type oipSpec struct {
	doc    *openapi3.T
	router routers.Router
}

func loadOIPSpec(t *testing.T) *oipSpec {
	t.Helper()
	doc, err := openapi3.NewLoader().LoadFromData(spec.REST)
	require.NoError(t, err)
	for _, p := range []string{"", "/ready", "/infer"} {
		item := doc.Paths.Value("/v2/models/{MODEL_NAME}/versions/{MODEL_VERSION}" + p)
		require.NotNil(t, item, "the protocol's file has the versioned path %q", p)
		doc.Paths.Set("/v2/models/{MODEL_NAME}"+p, clonePath(item, "-unversioned", openapi3.Parameters{item.Parameters[0]}))
	}
	doc.Paths.Set("/v2", clonePath(doc.Paths.Value("/v2/"), "-noslash", nil))
	require.NoError(t, doc.Validate(context.Background()))
	router, err := legacy.NewRouter(doc)
	require.NoError(t, err)
	return &oipSpec{doc: doc, router: router}
}

// clonePath copies a path item with operation ids of their own (suffixed) and, when not
// nil, other path parameters.
func clonePath(item *openapi3.PathItem, suffix string, params openapi3.Parameters) *openapi3.PathItem {
	clone := *item
	if params != nil {
		clone.Parameters = params
	}
	for method, op := range item.Operations() {
		o := *op
		o.OperationID += suffix
		clone.SetOperation(method, &o)
	}
	return &clone
}

// oipCall is one request to /v2 and its answer.
type oipCall struct {
	status int
	header http.Header
	body   []byte
}

func (c oipCall) String() string { return fmt.Sprintf("%d %s", c.status, c.body) }

// call sends a request to the api and validates the request and the answer against the
// protocol's file with kin-openapi: the request when valid says it is one (a bad-input case
// is a request the file may refuse), the answer always. An answer whose status the file
// does not list must be the protocol's error object, {"error": string}.
func (s *oipSpec) call(t *testing.T, a *api, key, method, path string, body string, hdr map[string]string, validRequest bool) oipCall {
	t.Helper()
	mk := func() *http.Request {
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, err := http.NewRequest(method, a.base+path, rd)
		require.NoError(t, err)
		if key != "" {
			req.Header.Set("Authorization", "Bearer "+key)
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		return req
	}
	req := mk()
	route, params, err := s.router.FindRoute(req)
	require.NoError(t, err, "the protocol has the route of %s %s", method, path)
	in := &openapi3filter.RequestValidationInput{Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc}}
	if validRequest {
		require.NoError(t, openapi3filter.ValidateRequest(context.Background(), in), "%s %s", method, path)
	}
	resp, err := http.DefaultClient.Do(mk())
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	out := oipCall{status: resp.StatusCode, header: resp.Header, body: b}
	require.Less(t, out.status, 500, "%s %s: %s", method, path, out) // no 5xx in these tests
	require.Equal(t, "application/json", strings.Split(resp.Header.Get("Content-Type"), ";")[0], "%s %s", method, path)
	err = openapi3filter.ValidateResponse(context.Background(), &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: resp.StatusCode, Header: resp.Header, Body: io.NopCloser(bytes.NewReader(b)),
		Options: &openapi3filter.Options{IncludeResponseStatus: false},
	})
	require.NoError(t, err, "%s %s: %s", method, path, out)
	if route.Operation.Responses.Status(resp.StatusCode) == nil || resp.StatusCode >= 400 {
		if resp.StatusCode >= 300 {
			var e map[string]any
			require.NoError(t, json.Unmarshal(b, &e), "%s %s: %s", method, path, out)
			msg, ok := e["error"].(string)
			require.True(t, ok && msg != "" && len(e) == 1, "%s %s: the protocol's error object: %s", method, path, out)
			require.NoError(t, s.doc.Components.Schemas["inference_error_response"].Value.VisitJSON(e))
		}
	}
	return out
}

// tensorBody is an inference request of rows as FP32 or FP64, flat or nested.
func tensorBody(t *testing.T, id, datatype string, rows [][]float64, nested bool, extra map[string]any) string {
	t.Helper()
	var data any
	if nested {
		data = rows
	} else {
		var flat []float64
		for _, r := range rows {
			flat = append(flat, r...)
		}
		data = flat
	}
	req := map[string]any{"inputs": []any{map[string]any{"name": "features", "datatype": datatype,
		"shape": []int{len(rows), len(rows[0])}, "data": data}}}
	if id != "" {
		req["id"] = id
	}
	for k, v := range extra {
		req[k] = v
	}
	b, err := json.Marshal(req)
	require.NoError(t, err)
	return string(b)
}

type oipResponseBody struct {
	ModelName    string `json:"model_name"`
	ModelVersion string `json:"model_version"`
	ID           string `json:"id"`
	Outputs      []struct {
		Name     string          `json:"name"`
		Datatype string          `json:"datatype"`
		Shape    []int           `json:"shape"`
		Data     json.RawMessage `json:"data"`
	} `json:"outputs"`
}

// answers decodes an inference response into its rows, by output name.
func answers(t *testing.T, b []byte) (probs, confs []float64, classes []string, r oipResponseBody) {
	t.Helper()
	require.NoError(t, json.Unmarshal(b, &r), string(b))
	for _, o := range r.Outputs {
		switch o.Name {
		case "probability":
			require.NoError(t, json.Unmarshal(o.Data, &probs))
		case "confidence":
			require.NoError(t, json.Unmarshal(o.Data, &confs))
		case "class":
			require.NoError(t, json.Unmarshal(o.Data, &classes))
		}
	}
	return probs, confs, classes, r
}

// Every path of the protocol answers as its own OpenAPI file says, with its error object on
// every failure (unknown model and version, no key, bad input), never problem+json.
func TestOIPRESTConformsToTheProtocol(t *testing.T) {
	t.Parallel()
	a := startAPI(t, nil)
	s := loadOIPSpec(t)
	xs, _ := sonar(t)

	c := s.call(t, a, "", "GET", "/v2/health/live", "", nil, true)
	require.Equal(t, 200, c.status)
	require.JSONEq(t, `{"live":true}`, string(c.body))
	c = s.call(t, a, "", "GET", "/v2/health/ready", "", nil, true)
	require.Equal(t, 200, c.status, c.String())
	require.JSONEq(t, `{"live":true,"ready":true}`, string(c.body))
	for _, p := range []string{"/v2", "/v2/"} {
		c = s.call(t, a, testKey, "GET", p, "", nil, true)
		require.Equal(t, 200, c.status, c.String())
		require.Contains(t, string(c.body), `"name":"predq"`)
	}
	for _, p := range []string{"/v2/models/sonar", "/v2/models/sonar/versions/v1.0.0", "/v2/models/sonar/versions/v2.0.0"} {
		c = s.call(t, a, testKey, "GET", p, "", nil, true)
		require.Equal(t, 200, c.status, c.String())
		require.JSONEq(t, `{"name":"sonar","versions":["v1.0.0","v2.0.0"],"platform":"`+map[bool]string{true: "predq_logistic_regression", false: "predq_mlp"}[strings.HasSuffix(p, "v1.0.0")]+`",
			"inputs":[{"name":"features","datatype":"FP64","shape":[-1,60]}],
			"outputs":[{"name":"probability","datatype":"FP64","shape":[-1]},{"name":"class","datatype":"BYTES","shape":[-1]},{"name":"confidence","datatype":"FP64","shape":[-1]}]}`, string(c.body))
		c = s.call(t, a, testKey, "GET", p+"/ready", "", nil, true)
		require.Equal(t, 200, c.status, c.String())
		require.JSONEq(t, `{"name":"sonar","ready":true}`, string(c.body))
	}
	for _, p := range []string{"/v2/models/iris", "/v2/models/sonar/versions/v9.9.9", "/v2/models/sonar/versions/latest2",
		"/v2/models/iris/ready", "/v2/models/sonar/versions/v9.9.9/ready"} {
		c = s.call(t, a, testKey, "GET", p, "", nil, true)
		require.Equal(t, 404, c.status, "%s: %s", p, c)
	}

	// Infer: flat and nested, FP32 and FP64, versioned or not, id echoed, outputs selected.
	for _, tc := range []struct {
		path, datatype string
		nested         bool
		version        string
	}{
		{"/v2/models/sonar/infer", "FP64", false, "v2.0.0"},
		{"/v2/models/sonar/infer", "FP32", true, "v2.0.0"},
		{"/v2/models/sonar/versions/v1.0.0/infer", "FP64", true, "v1.0.0"},
		{"/v2/models/sonar/versions/v1.0.0/infer", "FP32", false, "v1.0.0"},
	} {
		c = s.call(t, a, testKey, "POST", tc.path, tensorBody(t, "req-7", tc.datatype, xs[:3], tc.nested, nil), nil, true)
		require.Equal(t, 200, c.status, c.String())
		probs, confs, classes, r := answers(t, c.body)
		require.Equal(t, "req-7", r.ID, "id echoed")
		require.Equal(t, "sonar", r.ModelName)
		require.Equal(t, tc.version, r.ModelVersion)
		require.Len(t, probs, 3)
		require.Len(t, confs, 3)
		require.Len(t, classes, 3)
	}
	c = s.call(t, a, testKey, "POST", "/v2/models/sonar/infer", tensorBody(t, "", "FP64", xs[:2], false,
		map[string]any{"outputs": []any{map[string]any{"name": "class"}}}), nil, true)
	require.Equal(t, 200, c.status, c.String())
	_, _, classes, r := answers(t, c.body)
	require.Len(t, r.Outputs, 1)
	require.Len(t, classes, 2)
	require.Empty(t, r.ID)
	one, err := json.Marshal(map[string]any{"inputs": []any{map[string]any{"name": "features", "datatype": "FP64", "shape": []int{60}, "data": xs[0]}},
		"parameters": map[string]any{"preprocessing": "robust", "confidence_threshold": 0.7}})
	require.NoError(t, err)
	c = s.call(t, a, testKey, "POST", "/v2/models/sonar/infer", string(one), nil, true)
	require.Equal(t, 200, c.status, c.String())
	// What Triton's client sends with binary_data=False.
	c = s.call(t, a, testKey, "POST", "/v2/models/sonar/infer", tensorBody(t, "", "FP32", xs[:2], false, map[string]any{
		"parameters": map[string]any{"binary_data_output": false},
		"outputs":    []any{map[string]any{"name": "probability", "parameters": map[string]any{"binary_data": false}}}}), nil, true)
	require.Equal(t, 200, c.status, c.String())

	// Failures: the protocol's error object, with the protocol's statuses.
	badInput := func(mutate func(in map[string]any)) string {
		in := map[string]any{"name": "features", "datatype": "FP64", "shape": []int{1, 60}, "data": xs[0]}
		mutate(in)
		b, err := json.Marshal(map[string]any{"inputs": []any{in}})
		require.NoError(t, err)
		return string(b)
	}
	nested3 := [][][]float64{{xs[0][:30], xs[0][30:]}}
	corpus := []struct {
		name, body string
		valid      bool // the request is valid by the protocol's file
		want       string
	}{
		{"wrong datatype", badInput(func(in map[string]any) { in["datatype"] = "INT64" }), true, "INT64"},
		{"unknown datatype", badInput(func(in map[string]any) { in["datatype"] = "FLOAT" }), true, "unknown datatype"},
		{"BOOL data", badInput(func(in map[string]any) { in["datatype"] = "BOOL"; in["data"] = []bool{true} }), true, "BOOL"},
		{"wrong shape", badInput(func(in map[string]any) { in["shape"] = []int{2, 30} }), true, "[2, 30]"},
		{"short data", badInput(func(in map[string]any) { in["data"] = xs[0][:59] }), true, "got 59"},
		{"long data", badInput(func(in map[string]any) { in["data"] = append(append([]float64{}, xs[0]...), 1) }), true, "got 61"},
		{"string in data", badInput(func(in map[string]any) { d := []any{"x"}; in["data"] = append(d, anys(xs[0][1:])...) }), true, "data[0] must be a number"},
		{"nested too deep", badInput(func(in map[string]any) { in["data"] = nested3 }), true, "nested deeper"},
		{"nested wrong length", badInput(func(in map[string]any) { in["data"] = [][]float64{xs[0][:59]} }), true, "holds 59 elements"},
		{"huge N", badInput(func(in map[string]any) { in["shape"] = []int64{1 << 40, 60} }), true, "rows for 60 elements"},
		{"negative shape", badInput(func(in map[string]any) { in["shape"] = []int{-1, 60} }), true, "negative"},
		{"wrong input name", badInput(func(in map[string]any) { in["name"] = "x" }), true, `no input "x"`},
		{"out of range", badInput(func(in map[string]any) { d := append([]float64{}, xs[0]...); d[4] = 5000; in["data"] = d }), true, "column 4"},
		{"missing inputs", `{"id":"1"}`, false, "inputs is required"},
		{"missing data", `{"inputs":[{"name":"features","datatype":"FP64","shape":[1,60]}]}`, false, "data is required"},
		{"empty inputs", `{"inputs":[]}`, true, "got none"},
		{"not JSON", `{"inputs":`, false, "not valid JSON"},
		{"unknown member", `{"inputs":[],"extra":1}`, true, "extra"},
		{"unknown parameter", tensorBody(t, "", "FP64", xs[:1], false, map[string]any{"parameters": map[string]any{"priority": 1}}), true, "unknown parameter"},
		{"binary outputs", tensorBody(t, "", "FP64", xs[:1], false, map[string]any{"parameters": map[string]any{"binary_data_output": true}}), true, "binary tensor data is not supported"},
		{"bad threshold", tensorBody(t, "", "FP64", xs[:1], false, map[string]any{"parameters": map[string]any{"confidence_threshold": 3}}), true, "confidence_threshold"},
		{"unknown output", tensorBody(t, "", "FP64", xs[:1], false, map[string]any{"outputs": []any{map[string]any{"name": "logits"}}}), true, "logits"},
		{"over the sync limit", tensorBody(t, "", "FP64", repeatRows(xs, 1001), false, nil), true, "Prefer: respond-async"},
	}
	for _, tc := range corpus {
		c = s.call(t, a, testKey, "POST", "/v2/models/sonar/infer", tc.body, nil, tc.valid)
		require.Equal(t, 400, c.status, "%s: %s", tc.name, c)
		var e struct{ Error string }
		require.NoError(t, json.Unmarshal(c.body, &e))
		require.Contains(t, e.Error, tc.want, tc.name)
	}
	c = s.call(t, a, testKey, "POST", "/v2/models/iris/infer", tensorBody(t, "", "FP64", xs[:1], false, nil), nil, true)
	require.Equal(t, 404, c.status, c.String())
	c = s.call(t, a, testKey, "POST", "/v2/models/sonar/versions/v7.0.0/infer", tensorBody(t, "", "FP64", xs[:1], false, nil), nil, true)
	require.Equal(t, 404, c.status, c.String())
	c = s.call(t, a, "", "POST", "/v2/models/sonar/infer", tensorBody(t, "", "FP64", xs[:1], false, nil), nil, true)
	require.Equal(t, 401, c.status, c.String())
	require.NotEmpty(t, c.header.Get("WWW-Authenticate"))
	c = s.call(t, a, "wrong-key-0123456789abcdef", "GET", "/v2/models/sonar", "", nil, true)
	require.Equal(t, 401, c.status, c.String())
}

func anys(xs []float64) []any {
	out := make([]any, len(xs))
	for i, x := range xs {
		out[i] = x
	}
	return out
}

// repeatRows returns n rows cycling through xs.
func repeatRows(xs [][]float64, n int) [][]float64 {
	out := make([][]float64, n)
	for i := range out {
		out[i] = xs[i%len(xs)]
	}
	return out
}

// The 208 sonar rows through /v2 (FP64 and FP32) answer exactly what /api/v1/predict/batch
// answers for the same features, and every computed answer is stored once.
func TestOIPRESTEqualsAPIv1(t *testing.T) {
	t.Parallel()
	dbURL := pgtest.NewURL(t)
	a := startAPI(t, map[string]string{"DATABASE_URL": dbURL, "REDIS_URL": redistest.New(t).URL})
	s := loadOIPSpec(t)
	xs, _ := sonar(t)
	require.Len(t, xs, 208)
	f32 := make([][]float64, len(xs))
	for i, x := range xs {
		f32[i] = make([]float64, len(x))
		for j, v := range x {
			f32[i][j] = float64(float32(v))
		}
	}
	for _, tc := range []struct {
		datatype string
		rows     [][]float64
		nested   bool
	}{{"FP64", xs, false}, {"FP32", xs, true}} {
		t.Run(tc.datatype, func(t *testing.T) {
			rid := "oip-" + tc.datatype
			// /v2 first, so that it computes every answer (nothing is cached yet).
			c := s.call(t, a, testKey, "POST", "/v2/models/sonar/infer", tensorBody(t, "eq", tc.datatype, tc.rows, tc.nested, nil),
				map[string]string{"X-Request-ID": rid}, true)
			require.Equal(t, 200, c.status, c.String())
			probs, confs, classes, r := answers(t, c.body)
			require.Equal(t, "v2.0.0", r.ModelVersion)

			// /api/v1 with the features the tensor holds: FP32 elements are float32.
			same := xs
			if tc.datatype == "FP32" {
				same = f32
			}
			samples := make([]any, len(same))
			for i, x := range same {
				samples[i] = map[string]any{"features": x}
			}
			var batch struct {
				Predictions []output `json:"predictions"`
			}
			require.Equal(t, 200, a.do("POST", "/api/v1/predict/batch", map[string]any{"samples": samples}, &batch))
			require.Len(t, batch.Predictions, 208)
			for i, p := range batch.Predictions {
				require.True(t, p.Cached, "row %d: /api/v1 answers from what /v2 computed", i)
				require.Equal(t, p.Prediction, probs[i], "row %d", i)
				require.Equal(t, p.Confidence, confs[i], "row %d", i)
				require.Equal(t, p.PredictionClass, classes[i], "row %d", i)
				require.Equal(t, p.ModelVersion, r.ModelVersion)
			}

			// Each computed answer stored once, under the request's id and its row.
			ctx := context.Background()
			conn, err := pgx.Connect(ctx, dbURL)
			require.NoError(t, err)
			defer conn.Close(ctx)
			var n, distinct int
			require.Eventually(t, func() bool {
				err := conn.QueryRow(ctx, `SELECT count(*), count(DISTINCT request_id) FROM predictions WHERE request_id LIKE $1`, rid+"-%").Scan(&n, &distinct)
				return err == nil && n >= 208
			}, 10*time.Second, 20*time.Millisecond, "stored: %d", n)
			require.Equal(t, 208, n)
			require.Equal(t, 208, distinct)
		})
	}
}
