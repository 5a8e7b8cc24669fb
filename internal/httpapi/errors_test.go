package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/labstack/echo/v4"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/auth"
	"github.com/predq/predq/internal/idempotency"
	"github.com/predq/predq/internal/modelreg"
	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/validate"
)

func TestProblemFor(t *testing.T) {
	t.Parallel()

	internal := Problem{Type: problemTypeBase + slugInternal, Title: "Internal server error", Status: 500,
		Detail: "The server failed to answer; the request id identifies it in the logs."}
	tests := []struct {
		name      string
		err       error
		want      Problem
		wantHdr   http.Header
		wantFault bool
	}{
		{
			name: "validation error is 422 with its fields",
			err:  fmt.Errorf("predict: %w", validate.Field("features[3]", "must be finite")),
			want: Problem{Type: problemTypeBase + slugValidation, Title: "Invalid input", Status: 422,
				Detail: "The request is well-formed but breaks the input rules; see errors.",
				Errors: []validate.FieldError{{Field: "features[3]", Message: "must be finite"}}},
		},
		{
			name: "unknown model is 404 naming model_version",
			err:  fmt.Errorf("resolve: %w", prediction.ErrModelNotFound),
			want: Problem{Type: problemTypeBase + slugModelNotFound, Title: "Model version not found", Status: 404,
				Detail: "The requested model version or alias is not registered.",
				Errors: []validate.FieldError{{Field: "model_version", Message: "is not a registered version or alias"}}},
		},
		{
			name: "registry not found is 404",
			err:  modelreg.ErrNotFound,
			want: Problem{Type: problemTypeBase + slugModelNotFound, Title: "Model version not found", Status: 404,
				Detail: "The requested model version or alias is not registered.",
				Errors: []validate.FieldError{{Field: "model_version", Message: "is not a registered version or alias"}}},
		},
		{
			name: "no models is 503 with Retry-After",
			err:  fmt.Errorf("predict: %w", prediction.ErrNoModels),
			want: Problem{Type: problemTypeBase + slugUnavailable, Title: "No model loaded", Status: 503,
				Detail: "No model is loaded yet; retry shortly."},
			wantHdr: http.Header{"Retry-After": {"5"}},
		},
		{
			name: "unauthorized is 401 with WWW-Authenticate",
			err:  fmt.Errorf("authenticate: %w", auth.ErrUnauthorized),
			want: Problem{Type: problemTypeBase + slugUnauthorized, Title: "Unauthorized", Status: 401,
				Detail: "A valid API key is required: Authorization: Bearer <key> or X-API-Key: <key>."},
			wantHdr: http.Header{"Www-Authenticate": {`Bearer realm="predq"`}},
		},
		{
			name: "body too large is 413",
			err:  &http.MaxBytesError{Limit: 10},
			want: tooLarge(),
		},
		{
			name: "echo body limit is 413",
			err:  echo.ErrStatusRequestEntityTooLarge,
			want: tooLarge(),
		},
		{
			name: "echo 404",
			err:  echo.ErrNotFound,
			want: Problem{Type: problemTypeBase + slugNotFound, Title: "Not found", Status: 404, Detail: "No resource at this path."},
		},
		{
			name: "echo 405",
			err:  echo.ErrMethodNotAllowed,
			want: Problem{Type: problemTypeBase + slugMethodNotAllowed, Title: "Method not allowed", Status: 405,
				Detail: "This path does not support the method; see the Allow header."},
		},
		{
			name: "echo 415",
			err:  echo.ErrUnsupportedMediaType,
			want: unsupportedMediaType(),
		},
		{
			name: "other echo 4xx keeps its status, not its message",
			err:  echo.NewHTTPError(http.StatusConflict, "internal detail"),
			want: Problem{Type: "about:blank", Title: "Conflict", Status: 409},
		},
		{
			name: "rate limit problem keeps its header",
			err: &problemError{status: 429, slug: slugRateLimited, title: "Too many requests", detail: "slow down",
				header: retryAfter(1500 * time.Millisecond)},
			want:    Problem{Type: problemTypeBase + slugRateLimited, Title: "Too many requests", Status: 429, Detail: "slow down"},
			wantHdr: http.Header{"Retry-After": {"2"}},
		},
		{
			name: "a broken Postgres connection is 503 with Retry-After",
			err:  fmt.Errorf("predictions: get: %w", &pgconn.PgError{Code: "57P01", Message: "terminating connection due to administrator command"}),
			want: Problem{Type: problemTypeBase + slugUnavailable, Title: "Service unavailable", Status: 503,
				Detail: "A store the request needs cannot be reached; nothing was recorded. Retry shortly."},
			wantHdr: http.Header{"Retry-After": {"5"}},
		},
		{
			name: "a claim taken over is 409, whatever the handler then failed with",
			err:  fmt.Errorf("%w: %w", idempotency.ErrLeaseLost, validate.Field("samples", "is required")),
			want: Problem{Type: problemTypeBase + slugConflict, Title: "Request taken over", Status: 409,
				Detail: "This request's Idempotency-Key claim lapsed and another request with the key took it over; that request answers."},
			wantHdr: http.Header{"Retry-After": {"1"}},
		},
		{
			name:      "echo 5xx is a generic 500",
			err:       echo.NewHTTPError(http.StatusBadGateway, "upstream 10.0.0.3 refused"),
			want:      internal,
			wantFault: true,
		},
		{
			name:      "deadline is a generic 500",
			err:       fmt.Errorf("redis GET: %w", context.DeadlineExceeded),
			want:      internal,
			wantFault: true,
		},
		{
			name:      "anything else is a generic 500",
			err:       errors.New("pq: password authentication failed for user admin"),
			want:      internal,
			wantFault: true,
		},
		{
			name:      "an empty validation error is a bug, not a 422",
			err:       &validate.Error{},
			want:      internal,
			wantFault: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, hdr, fault := problemFor(tt.err)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("problem (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantHdr, hdr); diff != "" {
				t.Errorf("header (-want +got):\n%s", diff)
			}
			require.Equal(t, tt.wantFault, fault)
		})
	}
}

// TestErrorResponses checks errors end to end: status, problem body, headers, logging.
func TestErrorResponses(t *testing.T) {
	t.Parallel()

	t.Run("predictor failure is a 500 without internals, logged once with the request id", func(t *testing.T) {
		t.Parallel()
		s, b := setup(t)
		b.predictor.err = errors.New("dial tcp 10.1.2.3:6379: secret-dsn-password")

		rec := do(t, s, request{method: http.MethodPost, path: "/api/v1/predict", body: `{"features":[1]}`,
			header: map[string]string{"X-Request-ID": "req-500"}})

		require.Equal(t, http.StatusInternalServerError, rec.Code)
		p := readProblem(t, rec)
		require.Equal(t, problemTypeBase+slugInternal, p.Type)
		require.NotContains(t, rec.Body.String(), "secret-dsn-password")
		require.NotContains(t, rec.Body.String(), "10.1.2.3")
		logs := b.logs.String()
		require.Equal(t, 1, strings.Count(logs, "secret-dsn-password"), logs)
		require.Contains(t, logs, `"msg":"request failed"`)
		require.Contains(t, logs, `"request_id":"req-500"`)
	})

	t.Run("no models is 503 with Retry-After", func(t *testing.T) {
		t.Parallel()
		s, b := setup(t)
		b.predictor.err = fmt.Errorf("predict: %w", prediction.ErrNoModels)

		rec := predict(t, s, `{"features":[1]}`)

		require.Equal(t, http.StatusServiceUnavailable, rec.Code)
		require.Equal(t, "5", rec.Header().Get("Retry-After"))
		readProblem(t, rec)
	})

	t.Run("unknown model version is 404 naming model_version", func(t *testing.T) {
		t.Parallel()
		s, b := setup(t)
		b.predictor.err = fmt.Errorf("resolve v9.9.9: %w", prediction.ErrModelNotFound)

		rec := predict(t, s, `{"features":[1],"model_version":"v9.9.9"}`)

		require.Equal(t, http.StatusNotFound, rec.Code)
		require.Equal(t, []string{"model_version"}, fieldsOf(readProblem(t, rec)))
	})

	t.Run("panic is recovered as a 500 and logged with its stack", func(t *testing.T) {
		t.Parallel()
		s, b := setup(t)
		b.predictor.panic = "boom: index out of range"

		rec := predict(t, s, `{"features":[1]}`)

		require.Equal(t, http.StatusInternalServerError, rec.Code)
		p := readProblem(t, rec)
		require.NotContains(t, p.Detail, "boom")
		logs := b.logs.String()
		require.Contains(t, logs, "panic: boom: index out of range")
		require.Contains(t, logs, `"stack":"goroutine`)

		// The server still answers.
		b.predictor.panic = nil
		require.Equal(t, http.StatusOK, predict(t, s, `{"features":[1]}`).Code)
	})

	t.Run("unknown path is a 404 problem", func(t *testing.T) {
		t.Parallel()
		s, _ := setup(t)
		for _, path := range []string{"/nope", "/api/v1/nope", "/api/v1/predict/", "/api/docs/other.js"} {
			rec := do(t, s, request{path: path})
			require.Equal(t, http.StatusNotFound, rec.Code, path)
			p := readProblem(t, rec)
			require.Equal(t, path, p.Instance)
		}
	})

	t.Run("wrong method is a 405 problem with Allow", func(t *testing.T) {
		t.Parallel()
		s, _ := setup(t)
		tests := []struct{ method, path, allow string }{
			{http.MethodGet, "/api/v1/predict", "POST"},
			{http.MethodPut, "/api/v1/predict/batch", "POST"},
			{http.MethodPost, "/health", "GET"},
			{http.MethodDelete, "/api/v1/models/v1.0.0", "GET"},
		}
		for _, tt := range tests {
			rec := do(t, s, request{method: tt.method, path: tt.path})
			require.Equal(t, http.StatusMethodNotAllowed, rec.Code, tt.path)
			require.Contains(t, rec.Header().Get("Allow"), tt.allow)
			require.Equal(t, problemTypeBase+slugMethodNotAllowed, readProblem(t, rec).Type)
		}
	})

	t.Run("body over the limit is 413, by Content-Length or by reading", func(t *testing.T) {
		t.Parallel()
		s, b := setup(t, func(c *Config) { c.BodyLimit = 1024 })
		big := `{"features":` + features(300, "1.5") + `}` // > 1 KiB

		rec := predict(t, s, big)
		require.Equal(t, http.StatusRequestEntityTooLarge, rec.Code)
		readProblem(t, rec)

		// Without Content-Length (chunked), the limit is found while reading.
		req := newRequest(http.MethodPost, "/api/v1/predict", big)
		req.ContentLength = -1
		rec = serve(s, req)
		require.Equal(t, http.StatusRequestEntityTooLarge, rec.Code)
		readProblem(t, rec)
		require.Zero(t, b.predictor.calls())

		// Just under the limit is fine.
		require.Equal(t, http.StatusOK, predict(t, s, `{"features":`+features(10, "1")+`}`).Code)
	})

	t.Run("default body limit is 2 MiB", func(t *testing.T) {
		t.Parallel()
		s, _ := setup(t)
		big := `{"features":[1],"pad":"` + strings.Repeat("x", 2<<20) + `"}`
		rec := predict(t, s, big)
		require.Equal(t, http.StatusRequestEntityTooLarge, rec.Code)
	})
}
