package httpapi

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
)

// FuzzPredictDecode sends arbitrary bodies through the real predict and batch handlers (and
// all their middleware) with a fake Predictor that checks inputs with the prediction rules.
// Properties: never a panic, never a 5xx, only the documented statuses, and every refusal a
// well-formed problem.
//
// The seeds below run in plain `go test`; fuzz with
//
//	go test ./internal/httpapi -run '^$' -fuzz FuzzPredictDecode -fuzztime 60s
func FuzzPredictDecode(f *testing.F) {
	seeds := []string{
		`{"features":[1,2,3]}`,
		`{"features":[0.02,0.0371,0.0428],"model_version":"v1.0.0","confidence_threshold":0.7,"preprocessing":"minmax"}`,
		`{"features":[1],"model_version":" latest ","preprocessing":"ROBUST"}`,
		`{"features":[1],"model_version":"v1.0.0","preprocessing":"robust"}`,
		`{"features":[1e400]}`,
		`{"features":[-1e-400, 1000, -1000]}`,
		`{"features":[1,null,"x",true,[],{}]}`,
		`{"features":[],"confidence_threshold":0}`,
		`{"features":[1],"features":[2]}`,
		`{"Features":[1]}`,
		`{"features":[1]} trailing`,
		"{\"features\":[1],\"model_version\":\"\xff\xfe\"}",
		``,
		`null`,
		`[]`,
		`{"features":[1],"confidence_threshold":null,"model_version":null,"preprocessing":null}`,
		`{"samples":[{"features":[1]},{"features":[2],"model_version":"v1.0.0"}],"parallel":false}`,
		`{"samples":[{"features":[1e999]}]}`,
		`{"samples":[{"Features":[1]}],"parallel":"yes"}`,
		`{"samples":[],"parallel":true}`,
		`{"samples":null}`,
		`{"features":[` + string(bytes.Repeat([]byte("1,"), 100)) + `1]}`,
		`{"a":{"b":{"c":{"d":[[[[[[[[[[1]]]]]]]]]]}}}}`,
		`{"features":[1],"model_version":"v999999.999999.999999"}`,
		`{"features":[1],"model_version":"v1000000.0.0"}`,
		`{"features":[1.7976931348623157e308, 4.9e-324]}`,
	}
	for _, s := range seeds {
		f.Add([]byte(s), false)
		f.Add([]byte(s), true)
	}

	s, b := setup(f, func(c *Config) { c.Logger = nil; c.MaxBatchSize = 50; c.BodyLimit = 64 << 10 })
	_ = b

	allowed := map[int]bool{
		http.StatusOK: true, http.StatusBadRequest: true, http.StatusRequestEntityTooLarge: true,
		http.StatusUnprocessableEntity: true,
	}
	f.Fuzz(func(t *testing.T, body []byte, batch bool) {
		path := "/api/v1/predict"
		if batch {
			path = "/api/v1/predict/batch"
		}
		req := httptest.NewRequest(http.MethodPost, path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-API-Key", testKey)
		rec := httptest.NewRecorder()

		s.Handler().ServeHTTP(rec, req)

		if rec.Code >= 500 || !allowed[rec.Code] {
			t.Fatalf("status %d for body %q: %s", rec.Code, body, rec.Body)
		}
		if rec.Code == http.StatusOK {
			return
		}
		if ct := rec.Header().Get("Content-Type"); ct != "application/problem+json" {
			t.Fatalf("content type %q for status %d", ct, rec.Code)
		}
		var p Problem
		if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
			t.Fatalf("problem body does not decode: %v: %s", err, rec.Body)
		}
		if p.Status != rec.Code || p.Type == "" || p.Title == "" {
			t.Fatalf("malformed problem: %+v", p)
		}
		if rec.Code == http.StatusUnprocessableEntity && len(p.Errors) == 0 && p.Detail == "" {
			t.Fatalf("422 names no field and gives no detail: %s", rec.Body)
		}
	})
}
