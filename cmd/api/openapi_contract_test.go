package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"
	"github.com/stretchr/testify/require"
)

// contractCase is one request of the contract corpus. valid says whether the document
// allows it; gap marks the requests the document allows but the server refuses because
// of a rule no OpenAPI document can state (it is asserted, so the list of gaps is exact).
type contractCase struct {
	name        string
	method      string
	path        string // with its query string
	contentType string
	body        string
	valid       bool
	gap         string // why the server refuses a request the document allows
}

// loadServedDocument fetches /api/openapi.json from a and loads it with kin-openapi, an
// outside OpenAPI 3.1 implementation, as a client's tooling would.
func loadServedDocument(t *testing.T, a *api) *openapi3.T {
	t.Helper()
	resp, err := http.Get(a.base + "/api/openapi.json")
	require.NoError(t, err)
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	require.Equal(t, http.StatusOK, resp.StatusCode)
	doc, err := openapi3.NewLoader().LoadFromData(raw)
	require.NoError(t, err)
	require.NoError(t, doc.Validate(context.Background()), "the served document is a valid OpenAPI 3.1 document")
	return doc
}

// sonarRow is row i of data/sonar.csv as a JSON array of its 60 features.
func sonarRow(t *testing.T, i int) string {
	t.Helper()
	xs, _ := sonar(t)
	b, err := json.Marshal(xs[i])
	require.NoError(t, err)
	return string(b)
}

// rowWith returns a 60-feature JSON array of row 0 with feature i set to v (a JSON number).
func rowWith(t *testing.T, i int, v string) string {
	t.Helper()
	xs, _ := sonar(t)
	parts := make([]string, len(xs[0]))
	for j, x := range xs[0] {
		parts[j] = fmt.Sprint(x)
	}
	parts[i] = v
	return "[" + strings.Join(parts, ",") + "]"
}

// features returns a JSON array of n copies of 0.5.
func features(n int) string {
	return "[" + strings.TrimSuffix(strings.Repeat("0.5,", n), ",") + "]"
}

// metadataJSON is a metadata object of n pairs, each key keyLen bytes and value valueLen.
func metadataJSON(n, keyLen, valueLen int) string {
	pairs := make([]string, n)
	for i := range pairs {
		key := fmt.Sprintf("k%0*d", max(keyLen-1, 1), i)[:keyLen]
		if keyLen == 0 {
			key = ""
		}
		pairs[i] = fmt.Sprintf("%q:%q", key, strings.Repeat("v", valueLen))
	}
	return "{" + strings.Join(pairs, ",") + "}"
}

// TestOpenAPIContract loads the served document with kin-openapi and checks a corpus of
// requests against it and against the running api (real Postgres and Redis): every request
// the validator accepts is one the server accepts, and every boundary the server enforces the
// validator enforces too, apart from the listed gaps that no OpenAPI document can state.
func TestOpenAPIContract(t *testing.T) {
	t.Parallel()
	a := startAPI(t, map[string]string{"MAX_BATCH_SIZE": "3", "MAX_JOB_SAMPLES": "3"})
	doc := loadServedDocument(t, a)
	// The document's server is "/", relative to the document's own URL: resolved here as a
	// client resolves it, since kin-openapi's router matches absolute server URLs.
	require.Equal(t, "/", doc.Servers[0].URL)
	doc.Servers[0].URL = a.base
	router, err := legacy.NewRouter(doc)
	require.NoError(t, err)
	// kin-openapi knows no NDJSON decoder; the document declares the body a string.
	openapi3filter.RegisterBodyDecoder("application/x-ndjson", openapi3filter.PlainBodyDecoder)

	// A job whose id the job routes' cases use.
	var submitted struct {
		ID string `json:"id"`
	}
	require.Equal(t, http.StatusAccepted, a.do("POST", "/api/v1/jobs",
		map[string]any{"samples": []any{map[string]any{"features": json.RawMessage(sonarRow(t, 0))}}}, &submitted))
	jobPath := "/api/v1/jobs/" + submitted.ID

	r0, r1 := sonarRow(t, 0), sonarRow(t, 150)
	predict := func(name, body string, valid bool) contractCase {
		return contractCase{name: "predict " + name, method: "POST", path: "/api/v1/predict", contentType: "application/json", body: body, valid: valid}
	}
	batch := func(name string, n int, valid bool) contractCase {
		samples := make([]string, n)
		for i := range samples {
			samples[i] = `{"features":` + r0 + `}`
		}
		return contractCase{name: "batch " + name, method: "POST", path: "/api/v1/predict/batch", contentType: "application/json",
			body: `{"samples":[` + strings.Join(samples, ",") + `]}`, valid: valid}
	}
	jobJSON := func(name, body string, valid bool) contractCase {
		return contractCase{name: "job json " + name, method: "POST", path: "/api/v1/jobs", contentType: "application/json", body: body, valid: valid}
	}
	jobNDJSON := func(name, query string, valid bool) contractCase {
		return contractCase{name: "job ndjson " + name, method: "POST", path: "/api/v1/jobs?" + query, contentType: "application/x-ndjson",
			body: r0 + "\n" + r1 + "\n", valid: valid}
	}
	get := func(name, path string, valid bool) contractCase {
		return contractCase{name: name, method: "GET", path: path, valid: valid}
	}
	gap := func(c contractCase, why string) contractCase {
		c.valid, c.gap = true, why
		return c
	}

	corpus := []contractCase{
		predict("a sonar row", `{"features":`+r0+`}`, true),
		predict("every member", `{"features":`+r0+`,"model_version":"v1.0.0","confidence_threshold":0.7,"preprocessing":"minmax"}`, true),
		predict("robust with latest", `{"features":`+r0+`,"model_version":" latest ","preprocessing":"robust"}`, true),
		predict("robust with the default version", `{"features":`+r0+`,"preprocessing":"robust"}`, true),
		predict("nulls are absent", `{"features":`+r0+`,"model_version":null,"confidence_threshold":null,"preprocessing":null}`, true),
		predict("threshold 1", `{"features":`+r0+`,"confidence_threshold":1}`, true),
		predict("threshold just above 0", `{"features":`+r0+`,"confidence_threshold":1e-9}`, true),
		predict("feature +1000", `{"features":`+rowWith(t, 59, "1000")+`}`, true),
		predict("feature -1000", `{"features":`+rowWith(t, 0, "-1000")+`}`, true),
		predict("threshold 0", `{"features":`+r0+`,"confidence_threshold":0}`, false),
		predict("threshold above 1", `{"features":`+r0+`,"confidence_threshold":1.0000001}`, false),
		predict("threshold negative", `{"features":`+r0+`,"confidence_threshold":-0.5}`, false),
		predict("threshold a string", `{"features":`+r0+`,"confidence_threshold":"0.5"}`, false),
		predict("feature above 1000", `{"features":`+rowWith(t, 3, "1000.0001")+`}`, false),
		predict("feature below -1000", `{"features":`+rowWith(t, 3, "-1000.5")+`}`, false),
		predict("feature a string", `{"features":`+rowWith(t, 3, `"1"`)+`}`, false),
		predict("no features", `{"features":[]}`, false),
		predict("101 features", `{"features":`+features(101)+`}`, false),
		predict("features missing", `{"model_version":"latest"}`, false),
		predict("preprocessing upper case", `{"features":`+r0+`,"preprocessing":"ROBUST"}`, false),
		predict("preprocessing mixed case", `{"features":`+r0+`,"preprocessing":"MinMax"}`, false),
		predict("preprocessing unknown", `{"features":`+r0+`,"preprocessing":"zscore"}`, false),
		predict("robust with a fixed version", `{"features":`+r0+`,"model_version":"v1.0.0","preprocessing":"robust"}`, false),
		predict("version without v", `{"features":`+r0+`,"model_version":"1.0.0"}`, false),
		predict("version with a leading zero", `{"features":`+r0+`,"model_version":"v01.0.0"}`, false),
		predict("unknown member", `{"features":`+r0+`,"extra":true}`, false),
		predict("case-variant member", `{"Features":`+r0+`}`, false),
		gap(predict("fewer features than the model's input", `{"features":`+features(59)+`}`, true),
			"the input size is the resolved model's"),
		gap(predict("a version that is not registered", `{"features":`+r0+`,"model_version":"v9.9.9"}`, true),
			"which versions are registered is the registry's state"),
		gap(predict("a duplicate member", `{"features":`+r0+`,"features":`+r0+`}`, true),
			"duplicate members are a matter of parsing, not of the decoded instance a schema sees"),

		batch("of one", 1, true),
		batch("of MAX_BATCH_SIZE", 3, true),
		batch("of MAX_BATCH_SIZE+1", 4, false),
		batch("of none", 0, false),

		jobJSON("of one", `{"samples":[{"features":`+r0+`}]}`, true),
		jobJSON("with every option", `{"samples":[{"features":`+r0+`},{"features":`+r1+`}],"model_version":"v2.0.0",`+
			`"preprocessing":"robust","confidence_threshold":1,"metadata":`+metadataJSON(16, 64, 512)+`}`, false),
		jobJSON("with every option and latest", `{"samples":[{"features":`+r0+`},{"features":`+r1+`}],"model_version":"latest",`+
			`"preprocessing":"robust","confidence_threshold":1,"metadata":`+metadataJSON(16, 64, 512)+`}`, true),
		jobJSON("of MAX_JOB_SAMPLES", `{"samples":[{"features":`+r0+`},{"features":`+r0+`},{"features":`+r1+`}]}`, true),
		jobJSON("of MAX_JOB_SAMPLES+1", `{"samples":[{"features":`+r0+`},{"features":`+r0+`},{"features":`+r1+`},{"features":`+r1+`}]}`, false),
		jobJSON("of no samples", `{"samples":[]}`, false),
		jobJSON("without samples", `{"model_version":"latest"}`, false),
		jobJSON("threshold 0", `{"samples":[{"features":`+r0+`}],"confidence_threshold":0}`, false),
		jobJSON("threshold 1.5", `{"samples":[{"features":`+r0+`}],"confidence_threshold":1.5}`, false),
		jobJSON("feature above 1000", `{"samples":[{"features":`+rowWith(t, 7, "1000.5")+`}]}`, false),
		jobJSON("feature below -1000", `{"samples":[{"features":`+rowWith(t, 7, "-1001")+`}]}`, false),
		jobJSON("101 features", `{"samples":[{"features":`+features(101)+`}]}`, false),
		jobJSON("empty features", `{"samples":[{"features":[]}]}`, false),
		jobJSON("preprocessing upper case", `{"samples":[{"features":`+r0+`}],"preprocessing":"ROBUST"}`, false),
		jobJSON("robust with a fixed version", `{"samples":[{"features":`+r0+`}],"preprocessing":"robust","model_version":"v1.0.0"}`, false),
		jobJSON("version malformed", `{"samples":[{"features":`+r0+`}],"model_version":"2"}`, false),
		jobJSON("17 metadata pairs", `{"samples":[{"features":`+r0+`}],"metadata":`+metadataJSON(17, 4, 1)+`}`, false),
		jobJSON("an empty metadata key", `{"samples":[{"features":`+r0+`}],"metadata":`+metadataJSON(1, 0, 1)+`}`, false),
		jobJSON("a metadata key of 65", `{"samples":[{"features":`+r0+`}],"metadata":`+metadataJSON(1, 65, 1)+`}`, false),
		jobJSON("a metadata value of 513", `{"samples":[{"features":`+r0+`}],"metadata":`+metadataJSON(1, 4, 513)+`}`, false),
		jobJSON("a sample's unknown member", `{"samples":[{"features":`+r0+`,"x":1}]}`, false),
		jobJSON("unknown member", `{"samples":[{"features":`+r0+`}],"extra":1}`, false),
		gap(jobJSON("rows of different lengths", `{"samples":[{"features":`+features(60)+`},{"features":`+features(59)+`}]}`, true),
			"the input size is the resolved model's"),

		jobNDJSON("with no option", "", true),
		jobNDJSON("with every option", "model_version=v1.0.0&preprocessing=minmax&confidence_threshold=1&metadata=a%3D1&metadata=b%3D", true),
		jobNDJSON("threshold 0", "confidence_threshold=0", false),
		jobNDJSON("threshold above 1", "confidence_threshold=1.01", false),
		jobNDJSON("threshold not a number", "confidence_threshold=high", false),
		jobNDJSON("preprocessing mixed case", "preprocessing=Robust", false),
		jobNDJSON("version malformed", "model_version=x", false),
		jobNDJSON("metadata without =", "metadata=novalue", false),
		jobNDJSON("metadata with an empty key", "metadata=%3Dv", false),
		gap(jobNDJSON("robust with a fixed version", "preprocessing=robust&model_version=v1.0.0", true),
			"a rule across two query parameters: JSON Schema's if/then applies to one value"),
		gap(jobNDJSON("an unknown query parameter", "colour=blue", true),
			"OpenAPI cannot close a query string to parameters it does not list"),

		get("list jobs, limit 1", "/api/v1/jobs?limit=1", true),
		get("list jobs, limit 100", "/api/v1/jobs?limit=100&status=queued", true),
		get("list jobs, limit 0", "/api/v1/jobs?limit=0", false),
		get("list jobs, limit 101", "/api/v1/jobs?limit=101", false),
		get("list jobs, limit a word", "/api/v1/jobs?limit=ten", false),
		get("list jobs, limit a fraction", "/api/v1/jobs?limit=2.5", false),
		get("list jobs, an unknown status", "/api/v1/jobs?status=done", false),
		get("results, limit 1", jobPath+"/results?limit=1", true),
		get("results, limit 10000", jobPath+"/results?limit=10000", true),
		get("results, limit 0", jobPath+"/results?limit=0", false),
		get("results, limit 10001", jobPath+"/results?limit=10001", false),
		get("predictions, limit 1000", "/api/v1/predictions?limit=1000&from=2026-01-01T00:00:00Z", true),
		get("predictions, limit 1001", "/api/v1/predictions?limit=1001", false),
		get("predictions, limit 0", "/api/v1/predictions?limit=0", false),
		get("predictions, from not a time", "/api/v1/predictions?from=yesterday", false),
	}

	for _, c := range corpus {
		t.Run(c.name, func(t *testing.T) {
			verr := validateRequest(t, router, a.base, c)
			if c.valid {
				require.NoError(t, verr, "the document refuses a request it should allow")
			} else {
				require.Error(t, verr, "the document allows a request the server refuses")
			}
			status, body := send(t, a, c)
			switch {
			case c.gap != "":
				require.True(t, status == http.StatusUnprocessableEntity || status == http.StatusNotFound || status == http.StatusBadRequest,
					"a known gap (%s): the server refuses it, got %d %s", c.gap, status, body)
			case c.valid:
				require.True(t, status == http.StatusOK || status == http.StatusAccepted,
					"the validator accepts it, so must the server: got %d %s", status, body)
			default:
				require.True(t, status == http.StatusBadRequest || status == http.StatusRequestEntityTooLarge || status == http.StatusUnprocessableEntity,
					"the validator refuses it (%v), so must the server: got %d %s", verr, status, body)
			}
		})
	}

	// The document's own examples are what a newcomer's first "Try it out" sends.
	t.Run("the document's examples succeed", func(t *testing.T) {
		for _, ex := range []struct {
			path string
			want int
		}{{"/api/v1/predict", http.StatusOK}, {"/api/v1/predict/batch", http.StatusOK}, {"/api/v1/jobs", http.StatusAccepted}} {
			body, err := json.Marshal(doc.Paths.Find(ex.path).Post.RequestBody.Value.Content.Get("application/json").Example)
			require.NoError(t, err)
			c := contractCase{method: "POST", path: ex.path, contentType: "application/json", body: string(body)}
			require.NoError(t, validateRequest(t, router, a.base, c), ex.path)
			status, answer := send(t, a, c)
			require.Equal(t, ex.want, status, "%s: %s", ex.path, answer)
		}
	})
}

// validateRequest checks c against the document with kin-openapi's request validator, as a
// client's or a gateway's tooling would.
func validateRequest(t *testing.T, router routers.Router, base string, c contractCase) error {
	t.Helper()
	req, err := http.NewRequest(c.method, base+c.path, strings.NewReader(c.body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+testKey)
	if c.contentType != "" {
		req.Header.Set("Content-Type", c.contentType)
	}
	route, params, err := router.FindRoute(req)
	require.NoError(t, err, "the document has the route of %s %s", c.method, c.path)
	return openapi3filter.ValidateRequest(context.Background(), &openapi3filter.RequestValidationInput{
		Request: req, PathParams: params, Route: route,
		Options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
	})
}

// send makes c's request to the running api with the test key.
func send(t *testing.T, a *api, c contractCase) (int, string) {
	t.Helper()
	req, err := http.NewRequest(c.method, a.base+c.path, strings.NewReader(c.body))
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer "+testKey)
	if c.contentType != "" {
		req.Header.Set("Content-Type", c.contentType)
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}
