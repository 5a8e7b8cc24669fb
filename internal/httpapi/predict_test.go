package httpapi

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/validate"
)

// TestPredictValidation covers each of the seed's input rules through the real handler:
// the status, the fields named, and (for accepted input) what the predictor was given.
func TestPredictValidation(t *testing.T) {
	t.Parallel()

	f60 := features(60, "0.5")
	type tc struct {
		name       string
		body       string
		wantStatus int
		wantFields []string          // for 4xx
		wantInput  *prediction.Input // for 200: the normalized input handed to the predictor
	}
	in := func(feats []float64, version string, threshold float64, pre string) *prediction.Input {
		return &prediction.Input{Features: feats, ModelVersion: version, ConfidenceThreshold: threshold, Preprocessing: pre}
	}
	tests := []tc{
		// features
		{name: "features missing", body: `{}`, wantStatus: 422, wantFields: []string{"features"}},
		{name: "features null", body: `{"features":null}`, wantStatus: 422, wantFields: []string{"features"}},
		{name: "features empty", body: `{"features":[]}`, wantStatus: 422, wantFields: []string{"features"}},
		{name: "101 features", body: `{"features":` + features(101, "1") + `}`, wantStatus: 422, wantFields: []string{"features"}},
		{name: "100 features accepted", body: `{"features":` + features(100, "1") + `}`, wantStatus: 200},
		{name: "one feature accepted", body: `{"features":[0.25]}`, wantStatus: 200,
			wantInput: in([]float64{0.25}, "latest", 0.5, "standard")},
		{name: "feature above 1000", body: `{"features":[1, 1000.5]}`, wantStatus: 422, wantFields: []string{"features[1]"}},
		{name: "feature below -1000", body: `{"features":[-1000.001]}`, wantStatus: 422, wantFields: []string{"features[0]"}},
		{name: "features at the bounds accepted", body: `{"features":[-1000, 1000, 0, -0]}`, wantStatus: 200},
		{name: "each bad feature named", body: `{"features":[1, 2000, 3, -5000]}`, wantStatus: 422,
			wantFields: []string{"features[1]", "features[3]"}},
		{name: "string in features", body: `{"features":[1, 2, "3"]}`, wantStatus: 422, wantFields: []string{"features[2]"}},
		{name: "NaN as a string", body: `{"features":["NaN"]}`, wantStatus: 422, wantFields: []string{"features[0]"}},
		{name: "null in features", body: `{"features":[1, null]}`, wantStatus: 422, wantFields: []string{"features[1]"}},
		{name: "bool in features", body: `{"features":[true]}`, wantStatus: 422, wantFields: []string{"features[0]"}},
		{name: "nested array in features", body: `{"features":[[1]]}`, wantStatus: 422, wantFields: []string{"features[0]"}},
		{name: "features a string", body: `{"features":"1,2,3"}`, wantStatus: 422, wantFields: []string{"features"}},
		{name: "features an object", body: `{"features":{"a":1}}`, wantStatus: 422, wantFields: []string{"features"}},
		// Non-finite numbers cannot be written in JSON; the only way to one is an overflow,
		// which the strict decoder refuses as malformed.
		{name: "feature overflowing float64", body: `{"features":[1e400]}`, wantStatus: 400, wantFields: []string{"features[0]"}},
		{name: "negative overflow", body: `{"features":[1, -1e309]}`, wantStatus: 400, wantFields: []string{"features[1]"}},
		{name: "underflow is zero", body: `{"features":[1e-400]}`, wantStatus: 200, wantInput: in([]float64{0}, "latest", 0.5, "standard")},

		// model_version
		{name: "model_version latest", body: `{"features":[1],"model_version":"latest"}`, wantStatus: 200,
			wantInput: in([]float64{1}, "latest", 0.5, "standard")},
		{name: "model_version semver", body: `{"features":[1],"model_version":"v1.0.0"}`, wantStatus: 200,
			wantInput: in([]float64{1}, "v1.0.0", 0.5, "standard")},
		{name: "model_version trimmed", body: `{"features":[1],"model_version":"  v1.0.0\t"}`, wantStatus: 200,
			wantInput: in([]float64{1}, "v1.0.0", 0.5, "standard")},
		{name: "model_version null is latest", body: `{"features":[1],"model_version":null}`, wantStatus: 200,
			wantInput: in([]float64{1}, "latest", 0.5, "standard")},
		{name: "model_version empty is latest", body: `{"features":[1],"model_version":""}`, wantStatus: 200,
			wantInput: in([]float64{1}, "latest", 0.5, "standard")},
		{name: "model_version without patch", body: `{"features":[1],"model_version":"v1.0"}`, wantStatus: 422,
			wantFields: []string{"model_version"}},
		{name: "model_version without v", body: `{"features":[1],"model_version":"1.0.0"}`, wantStatus: 422,
			wantFields: []string{"model_version"}},
		{name: "model_version leading zero", body: `{"features":[1],"model_version":"v01.0.0"}`, wantStatus: 422,
			wantFields: []string{"model_version"}},
		{name: "model_version other alias", body: `{"features":[1],"model_version":"stable"}`, wantStatus: 422,
			wantFields: []string{"model_version"}},
		{name: "model_version a number", body: `{"features":[1],"model_version":1}`, wantStatus: 422,
			wantFields: []string{"model_version"}},

		// confidence_threshold
		{name: "threshold absent is 0.5", body: `{"features":[1]}`, wantStatus: 200,
			wantInput: in([]float64{1}, "latest", 0.5, "standard")},
		{name: "threshold null is 0.5", body: `{"features":[1],"confidence_threshold":null}`, wantStatus: 200,
			wantInput: in([]float64{1}, "latest", 0.5, "standard")},
		{name: "threshold 1 accepted", body: `{"features":[1],"confidence_threshold":1}`, wantStatus: 200,
			wantInput: in([]float64{1}, "latest", 1, "standard")},
		{name: "threshold small accepted", body: `{"features":[1],"confidence_threshold":0.001}`, wantStatus: 200,
			wantInput: in([]float64{1}, "latest", 0.001, "standard")},
		{name: "threshold 0 refused", body: `{"features":[1],"confidence_threshold":0}`, wantStatus: 422,
			wantFields: []string{"confidence_threshold"}},
		{name: "threshold above 1", body: `{"features":[1],"confidence_threshold":1.01}`, wantStatus: 422,
			wantFields: []string{"confidence_threshold"}},
		{name: "threshold negative", body: `{"features":[1],"confidence_threshold":-0.5}`, wantStatus: 422,
			wantFields: []string{"confidence_threshold"}},
		{name: "threshold a string", body: `{"features":[1],"confidence_threshold":"0.5"}`, wantStatus: 422,
			wantFields: []string{"confidence_threshold"}},
		{name: "threshold overflowing", body: `{"features":[1],"confidence_threshold":2e308}`, wantStatus: 400,
			wantFields: []string{"confidence_threshold"}},

		// preprocessing
		{name: "preprocessing minmax", body: `{"features":[1],"preprocessing":"minmax"}`, wantStatus: 200,
			wantInput: in([]float64{1}, "latest", 0.5, "minmax")},
		{name: "preprocessing trimmed", body: `{"features":[1],"preprocessing":" minmax "}`, wantStatus: 200,
			wantInput: in([]float64{1}, "latest", 0.5, "minmax")},
		{name: "preprocessing is case-sensitive", body: `{"features":[1],"preprocessing":"ROBUST"}`, wantStatus: 422,
			wantFields: []string{"preprocessing"}},
		{name: "preprocessing mixed case", body: `{"features":[1],"preprocessing":" MinMax "}`, wantStatus: 422,
			wantFields: []string{"preprocessing"}},
		{name: "preprocessing null is standard", body: `{"features":[1],"preprocessing":null}`, wantStatus: 200,
			wantInput: in([]float64{1}, "latest", 0.5, "standard")},
		{name: "robust with latest", body: `{"features":[1],"preprocessing":"robust","model_version":"latest"}`, wantStatus: 200,
			wantInput: in([]float64{1}, "latest", 0.5, "robust")},
		{name: "robust with default version", body: `{"features":[1],"preprocessing":"robust"}`, wantStatus: 200,
			wantInput: in([]float64{1}, "latest", 0.5, "robust")},
		{name: "robust with a fixed version", body: `{"features":[1],"preprocessing":"robust","model_version":"v1.0.0"}`,
			wantStatus: 422, wantFields: []string{"preprocessing"}},
		{name: "unknown preprocessing", body: `{"features":[1],"preprocessing":"zscore"}`, wantStatus: 422,
			wantFields: []string{"preprocessing"}},

		// unknown members and several problems at once
		{name: "unknown member", body: `{"features":[1],"extra":true}`, wantStatus: 400, wantFields: []string{"extra"}},
		{name: "case-variant member", body: `{"Features":[1]}`, wantStatus: 400, wantFields: []string{"Features"}},
		{name: "case-variant optional member", body: `{"features":[1],"Model_Version":"v1.0.0"}`, wantStatus: 400,
			wantFields: []string{"Model_Version"}},
		{name: "every rule broken", body: `{"features":[5000],"model_version":"x","confidence_threshold":0,"preprocessing":"zz"}`,
			wantStatus: 422, wantFields: []string{"features[0]", "model_version", "confidence_threshold", "preprocessing"}},
		{name: "sixty features accepted", body: `{"features":` + f60 + `}`, wantStatus: 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, b := setup(t)

			rec := predict(t, s, tt.body)

			require.Equal(t, tt.wantStatus, rec.Code, "body: %s", rec.Body)
			if tt.wantStatus != http.StatusOK {
				p := readProblem(t, rec)
				if diff := cmp.Diff(tt.wantFields, fieldsOf(p)); diff != "" {
					t.Errorf("fields (-want +got):\n%s", diff)
				}
				for _, e := range p.Errors {
					require.NotEmpty(t, e.Message, "field %s", e.Field)
				}
				require.Zero(t, b.predictor.answers(), "refused input gets no prediction")
				return
			}
			if tt.wantInput != nil {
				if diff := cmp.Diff(*tt.wantInput, b.predictor.lastInput(t)); diff != "" {
					t.Errorf("input (-want +got):\n%s", diff)
				}
			}
		})
	}
}

// TestPredictStrictDecoding checks that JSON the strict decoder refuses is a 400 problem and
// that the content type is enforced.
func TestPredictStrictDecoding(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name        string
		body        string
		contentType string // "" means application/json
		noCT        bool
		wantStatus  int
		wantFields  []string
	}{
		{name: "not JSON", body: `features=1`, wantStatus: 400},
		{name: "truncated", body: `{"features":[1,`, wantStatus: 400},
		{name: "single quotes", body: `{'features':[1]}`, wantStatus: 400},
		{name: "trailing comma", body: `{"features":[1],}`, wantStatus: 400},
		{name: "comment", body: `{"features":[1] /* x */}`, wantStatus: 400},
		{name: "leading zero", body: `{"features":[01]}`, wantStatus: 400, wantFields: []string{"features"}},
		{name: "NaN literal", body: `{"features":[NaN]}`, wantStatus: 400, wantFields: []string{"features[0]"}},
		{name: "duplicate member", body: `{"features":[1],"features":[2]}`, wantStatus: 400, wantFields: []string{"features"}},
		{name: "duplicate optional member", body: `{"features":[1],"model_version":"latest","model_version":"v1.0.0"}`,
			wantStatus: 400, wantFields: []string{"model_version"}},
		{name: "trailing data", body: `{"features":[1]} x`, wantStatus: 400},
		{name: "second value", body: `{"features":[1]}{"features":[2]}`, wantStatus: 400},
		{name: "invalid UTF-8 in a string", body: "{\"features\":[1],\"model_version\":\"v\xff\"}", wantStatus: 400,
			wantFields: []string{"model_version"}},
		{name: "invalid UTF-8 in a name", body: "{\"features\":[1],\"\xfe\":1}", wantStatus: 400},
		{name: "byte order mark", body: "\ufeff{\"features\":[1]}", wantStatus: 400},
		{name: "empty body", body: ``, wantStatus: 400},
		{name: "only whitespace", body: " \n\t ", wantStatus: 400},
		{name: "unknown member", body: `{"features":[1],"features2":[1]}`, wantStatus: 400, wantFields: []string{"features2"}},
		{name: "top-level array", body: `[1,2,3]`, wantStatus: 422},
		{name: "top-level null", body: `null`, wantStatus: 422, wantFields: []string{"features"}},
		{name: "top-level string", body: `"features"`, wantStatus: 422},
		{name: "trailing whitespace accepted", body: "{\"features\":[1]}\n\n", wantStatus: 200},
		{name: "charset utf-8 accepted", body: `{"features":[1]}`, contentType: "application/json; charset=UTF-8", wantStatus: 200},
		{name: "content type text/plain", body: `{"features":[1]}`, contentType: "text/plain", wantStatus: 415},
		{name: "content type form", body: `features=1`, contentType: "application/x-www-form-urlencoded", wantStatus: 415},
		{name: "content type json-ish", body: `{"features":[1]}`, contentType: "application/json-patch+json", wantStatus: 415},
		{name: "content type charset latin1", body: `{"features":[1]}`, contentType: "application/json; charset=latin1", wantStatus: 415},
		{name: "content type missing", body: `{"features":[1]}`, noCT: true, wantStatus: 415},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, b := setup(t)
			r := request{method: http.MethodPost, path: "/api/v1/predict", body: tt.body, noCT: tt.noCT}
			if tt.contentType != "" {
				r.header = map[string]string{"Content-Type": tt.contentType}
			}

			rec := do(t, s, r)

			require.Equal(t, tt.wantStatus, rec.Code, "body: %s", rec.Body)
			if tt.wantStatus == http.StatusOK {
				return
			}
			p := readProblem(t, rec)
			if tt.wantFields != nil {
				if diff := cmp.Diff(tt.wantFields, fieldsOf(p)); diff != "" {
					t.Errorf("fields (-want +got):\n%s", diff)
				}
			}
			require.NotContains(t, p.Detail, "httpapi.", "details must not name Go types")
			if tt.wantStatus == http.StatusUnprocessableEntity {
				// Decoded, then refused by the prediction rules, which the service applies.
				require.Zero(t, b.predictor.answers())
			} else {
				require.Zero(t, b.predictor.calls(), "refused by the decoder")
			}
		})
	}
}

func TestPredictAnswer(t *testing.T) {
	t.Parallel()

	t.Run("returns the output with a UTC timestamp and the request id", func(t *testing.T) {
		t.Parallel()
		s, b := setup(t)

		rec := do(t, s, request{method: http.MethodPost, path: "/api/v1/predict", body: `{"features":[1,2,3]}`,
			header: map[string]string{"X-Request-ID": "client-req-1"}})

		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
		var got map[string]any
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &got))
		want := map[string]any{
			"prediction": 0.75, "confidence": 0.75, "model_version": "v1.1.0", "latency_ms": 0.5,
			"timestamp": "2025-01-02T03:04:05.123Z", "prediction_class": "positive", "cached": false,
			"request_id": "client-req-1",
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("body (-want +got):\n%s", diff)
		}
		// The bytes too: members in Output's field order, encoding/json's numbers, a newline.
		require.Equal(t, `{"prediction":0.75,"confidence":0.75,"model_version":"v1.1.0","latency_ms":0.5,`+
			`"timestamp":"2025-01-02T03:04:05.123Z","prediction_class":"positive","cached":false,"request_id":"client-req-1"}`+"\n",
			rec.Body.String())
		require.Equal(t, prediction.Meta{RequestID: "client-req-1", UserID: "k-tester"}, b.predictor.lastMeta(t))
	})

	t.Run("?pretty indents the answer", func(t *testing.T) {
		t.Parallel()
		s, _ := setup(t)

		rec := do(t, s, request{method: http.MethodPost, path: "/api/v1/predict?pretty", body: `{"features":[1,2,3]}`})

		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		require.True(t, strings.HasPrefix(rec.Body.String(), "{\n  \"prediction\": 0.75,\n  \"confidence\": 0.75,\n"), rec.Body.String())
	})

	t.Run("feature errors from the predictor are 422", func(t *testing.T) {
		t.Parallel()
		s, b := setup(t)
		b.predictor.err = validate.Field("features", "must hold 60 numbers for v1.1.0, got 3")

		rec := predict(t, s, `{"features":[1,2,3]}`)

		require.Equal(t, http.StatusUnprocessableEntity, rec.Code)
		require.Equal(t, []string{"features"}, fieldsOf(readProblem(t, rec)))
	})
}

func TestPredictBatch(t *testing.T) {
	t.Parallel()

	small := func(c *Config) { c.MaxBatchSize = 3 }
	tests := []struct {
		name         string
		body         string
		wantStatus   int
		wantFields   []string
		wantParallel bool
		wantTotal    int
	}{
		{name: "answers in order, parallel by default", body: `{"samples":[{"features":[1]},{"features":[2],"model_version":"v1.0.0"}]}`,
			wantStatus: 200, wantParallel: true, wantTotal: 2},
		{name: "parallel false echoed", body: `{"samples":[{"features":[1]}],"parallel":false}`,
			wantStatus: 200, wantParallel: false, wantTotal: 1},
		{name: "parallel null is true", body: `{"samples":[{"features":[1]}],"parallel":null}`,
			wantStatus: 200, wantParallel: true, wantTotal: 1},
		{name: "max samples accepted", body: `{"samples":[{"features":[1]},{"features":[1]},{"features":[1]}]}`,
			wantStatus: 200, wantParallel: true, wantTotal: 3},
		{name: "too many samples", body: `{"samples":[{"features":[1]},{"features":[1]},{"features":[1]},{"features":[1]}]}`,
			wantStatus: 422, wantFields: []string{"samples"}},
		{name: "samples missing", body: `{"parallel":true}`, wantStatus: 422, wantFields: []string{"samples"}},
		{name: "samples empty", body: `{"samples":[]}`, wantStatus: 422, wantFields: []string{"samples"}},
		{name: "samples not an array", body: `{"samples":{"features":[1]}}`, wantStatus: 422, wantFields: []string{"samples"}},
		{name: "sample rules named by index", body: `{"samples":[{"features":[1]},{"features":[1,5000],"confidence_threshold":0}]}`,
			wantStatus: 422, wantFields: []string{"samples[1].features[1]", "samples[1].confidence_threshold"}},
		{name: "sample wrong type named by index", body: `{"samples":[{"features":[1]},{"features":[1,2,"x"]}]}`,
			wantStatus: 422, wantFields: []string{"samples[1].features[2]"}},
		{name: "sample unknown member", body: `{"samples":[{"Features":[1]}]}`, wantStatus: 400,
			wantFields: []string{"samples[0].Features"}},
		{name: "batch unknown member", body: `{"samples":[{"features":[1]}],"Parallel":true}`, wantStatus: 400,
			wantFields: []string{"Parallel"}},
		{name: "sample overflow", body: `{"samples":[{"features":[1]},{"features":[1e999]}]}`, wantStatus: 400,
			wantFields: []string{"samples[1].features[0]"}},
		{name: "parallel a string", body: `{"samples":[{"features":[1]}],"parallel":"yes"}`, wantStatus: 422,
			wantFields: []string{"parallel"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, b := setup(t, small)

			rec := do(t, s, request{method: http.MethodPost, path: "/api/v1/predict/batch", body: tt.body})

			require.Equal(t, tt.wantStatus, rec.Code, "body: %s", rec.Body)
			if tt.wantStatus != http.StatusOK {
				p := readProblem(t, rec)
				if diff := cmp.Diff(tt.wantFields, fieldsOf(p)); diff != "" {
					t.Errorf("fields (-want +got):\n%s", diff)
				}
				require.Zero(t, b.predictor.answers(), "refused input gets no prediction")
				return
			}
			var got batchResponse
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &got))
			require.Equal(t, tt.wantTotal, got.Total)
			require.Len(t, got.Predictions, tt.wantTotal)
			require.Equal(t, tt.wantParallel, got.Parallel)
			require.Equal(t, 1, b.predictor.batches)
			require.Equal(t, tt.wantParallel, b.predictor.lastPar)
			for _, out := range got.Predictions {
				require.Equal(t, "UTC", out.Timestamp.Location().String())
			}
			require.True(t, strings.Contains(rec.Body.String(), `"timestamp":"2025-01-02T03:04:05.123Z"`), rec.Body.String())
		})
	}

	t.Run("default limit is 1000 samples", func(t *testing.T) {
		t.Parallel()
		s, _ := setup(t)
		sample := `{"features":[1]}`
		body := func(n int) string {
			return `{"samples":[` + strings.TrimSuffix(strings.Repeat(sample+",", n), ",") + `]}`
		}

		require.Equal(t, http.StatusOK, do(t, s, request{method: http.MethodPost, path: "/api/v1/predict/batch", body: body(1000)}).Code)
		rec := do(t, s, request{method: http.MethodPost, path: "/api/v1/predict/batch", body: body(1001)})
		require.Equal(t, http.StatusUnprocessableEntity, rec.Code)
		p := readProblem(t, rec)
		require.Equal(t, []string{"samples"}, fieldsOf(p))
		require.Contains(t, p.Errors[0].Message, "1000")
	})

	t.Run("caps the field errors of one problem", func(t *testing.T) {
		t.Parallel()
		s, _ := setup(t)
		sample := `{"features":` + features(100, "5000") + `}`
		body := `{"samples":[` + strings.TrimSuffix(strings.Repeat(sample+",", 5), ",") + `]}`

		rec := do(t, s, request{method: http.MethodPost, path: "/api/v1/predict/batch", body: body})

		require.Equal(t, http.StatusUnprocessableEntity, rec.Code)
		p := readProblem(t, rec)
		require.Len(t, p.Errors, maxProblemErrors)
		require.Contains(t, p.Detail, "first 100 of 500")
	})
}
