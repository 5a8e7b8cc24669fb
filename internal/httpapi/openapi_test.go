package httpapi

import (
	"encoding/csv"
	"encoding/json"
	"flag"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/labstack/echo/v4"
	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// withMetrics mounts a /metrics handler, so that every optional route is registered.
func withMetrics(c *Config) {
	c.MetricsHandler = http.NotFoundHandler()
}

// fetchOpenAPI returns the served document, decoded.
func fetchOpenAPI(t *testing.T, s *Server) (raw []byte, doc map[string]any) {
	t.Helper()
	rec := do(t, s, request{path: "/api/openapi.json", noAuth: true})
	require.Equal(t, http.StatusOK, rec.Code)
	require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &doc))
	return rec.Body.Bytes(), doc
}

var echoParam = regexp.MustCompile(`:([A-Za-z0-9_]+)`)

// TestOpenAPICoversRoutes fails when a registered route is missing from the document, or
// the document names a route that is not registered.
func TestOpenAPICoversRoutes(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		name  string
		cfgFn func(*Config)
	}{
		{name: "with metrics", cfgFn: withMetrics},
		{name: "without metrics", cfgFn: func(*Config) {}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, _ := setup(t, tc.cfgFn)

			var registered []string
			for _, r := range s.e.Routes() {
				if r.Method == echo.RouteNotFound || strings.HasPrefix(r.Path, "/monitoring") {
					continue // the asynqmon dashboard is a UI of its own, outside the API
				}
				registered = append(registered, r.Method+" "+echoParam.ReplaceAllString(r.Path, "{$1}"))
			}
			_, doc := fetchOpenAPI(t, s)
			var documented []string
			for path, item := range doc["paths"].(map[string]any) {
				for method := range item.(map[string]any) {
					documented = append(documented, strings.ToUpper(method)+" "+path)
				}
			}
			slices.Sort(registered)
			slices.Sort(documented)
			if diff := cmp.Diff(registered, documented); diff != "" {
				t.Errorf("routes (-registered +documented):\n%s", diff)
			}
		})
	}
}

// TestOpenAPIGolden compares the document with testdata/openapi.golden.json. Run with
// -update to accept a change.
func TestOpenAPIGolden(t *testing.T) {
	t.Parallel()
	s, _ := setup(t, withMetrics)
	got, _ := fetchOpenAPI(t, s)

	golden := filepath.Join("testdata", "openapi.golden.json")
	if *update {
		require.NoError(t, os.WriteFile(golden, got, 0o644))
	}
	want, err := os.ReadFile(golden)
	require.NoError(t, err, "run with -update to create it")
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("OpenAPI document differs from %s (-want +got); run with -update to accept:\n%s", golden, diff)
	}
}

// TestOpenAPIDocument checks what a client relies on: version, every $ref resolves, every
// /api/v1 operation is secured and every open one is not, error responses are problems.
func TestOpenAPIDocument(t *testing.T) {
	t.Parallel()
	s, _ := setup(t, withMetrics, func(c *Config) { c.Version = "1.2.3"; c.MaxBatchSize = 250 })
	raw, doc := fetchOpenAPI(t, s)

	require.Equal(t, "3.1.0", doc["openapi"])
	require.Equal(t, "1.2.3", doc["info"].(map[string]any)["version"])

	// Every $ref points at something.
	for _, m := range regexp.MustCompile(`"\$ref": ?"#/([^"]+)"`).FindAllStringSubmatch(string(raw), -1) {
		var node any = doc
		for _, part := range strings.Split(m[1], "/") {
			obj, ok := node.(map[string]any)
			require.True(t, ok, "$ref %s", m[1])
			node, ok = obj[part]
			require.True(t, ok, "$ref %s does not resolve", m[1])
		}
	}

	// The batch limit is the configured one.
	batch := doc["components"].(map[string]any)["schemas"].(map[string]any)["BatchRequest"].(map[string]any)
	require.EqualValues(t, 250, batch["properties"].(map[string]any)["samples"].(map[string]any)["maxItems"])

	for path, item := range doc["paths"].(map[string]any) {
		for method, op := range item.(map[string]any) {
			op := op.(map[string]any)
			security := op["security"].([]any)
			if strings.HasPrefix(path, "/api/v1/") || isOIPPath(path) && !strings.HasPrefix(path, "/v2/health/") {
				require.Len(t, security, 2, "%s %s must take either key header", method, path)
				require.Contains(t, op["responses"], "401", "%s %s", method, path)
			} else {
				require.Empty(t, security, "%s %s is open", method, path)
			}
			require.NotEmpty(t, op["operationId"])
			responses := op["responses"].(map[string]any)
			_, ok200 := responses["200"]
			_, ok202 := responses["202"]
			require.True(t, ok200 || ok202, "%s %s documents its success answer", method, path)
		}
	}
}

// TestOpenAPIExamplesAreASonarRow holds the predict and batch examples to row 1 of the
// shipped data set: 60 features that the shipped models answer (cmd/api's contract test
// posts them to a running api).
func TestOpenAPIExamplesAreASonarRow(t *testing.T) {
	t.Parallel()
	f, err := os.Open(filepath.Join("..", "..", "data", "sonar.csv"))
	require.NoError(t, err)
	defer f.Close()
	row, err := csv.NewReader(f).Read()
	require.NoError(t, err)
	require.Len(t, row, 61)
	want := make([]any, 60)
	for i := range want {
		want[i], err = strconv.ParseFloat(row[i], 64)
		require.NoError(t, err)
	}

	s, _ := setup(t, withMetrics)
	_, doc := fetchOpenAPI(t, s)
	example := func(path string) map[string]any {
		op := doc["paths"].(map[string]any)[path].(map[string]any)["post"].(map[string]any)
		return op["requestBody"].(map[string]any)["content"].(map[string]any)["application/json"].(map[string]any)["example"].(map[string]any)
	}
	require.Equal(t, want, example("/api/v1/predict")["features"])
	require.Equal(t, want, example("/api/v1/predict/batch")["samples"].([]any)[0].(map[string]any)["features"])
	require.Equal(t, want, example("/api/v1/jobs")["samples"].([]any)[0].(map[string]any)["features"])
}
