package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/modelreg"
)

func TestNew(t *testing.T) {
	t.Parallel()

	t.Run("names every missing dependency and bad setting", func(t *testing.T) {
		t.Parallel()
		_, err := New(Config{BodyLimit: -1, MaxBatchSize: -2, RateLimit: -1, RateBurst: -1,
			AllowedOrigins: []string{"app.example.com"}}, Deps{})
		require.Error(t, err)
		for _, want := range []string{"Predictor", "Models", "Auth", "Readiness", "BodyLimit", "MaxBatchSize",
			"RateLimit", "RateBurst", "AllowedOrigins"} {
			require.ErrorContains(t, err, want)
		}
	})

	t.Run("refuses origins that are not origins", func(t *testing.T) {
		t.Parallel()
		b := &testBundle{predictor: &fakePredictor{}, models: &fakeCatalog{}, ready: &fakeReadiness{}}
		deps := Deps{Predictor: b.predictor, Models: b.models, Auth: fakeAuth{}, Readiness: b.ready, Jobs: &fakeJobs{}}
		for _, o := range []string{"ftp://x.example", "https://x.example/path", "https://", "https://x.example?q=1", "*.example.com"} {
			_, err := New(Config{AllowedOrigins: []string{o}}, deps)
			require.Error(t, err, o)
		}
		_, err := New(Config{AllowedOrigins: []string{"https://x.example", " http://localhost:3000 ", "*", ""}}, deps)
		require.NoError(t, err)
	})

	t.Run("fills defaults", func(t *testing.T) {
		t.Parallel()
		s, _ := setup(t, func(c *Config) { c.RateLimit = 2.5; c.Version = "" })
		require.Equal(t, DefaultBodyLimit, s.cfg.BodyLimit)
		require.Equal(t, DefaultMaxBatchSize, s.cfg.MaxBatchSize)
		require.Equal(t, 3, s.cfg.RateBurst)
		require.Equal(t, "dev", s.cfg.Version)
	})
}

func TestNewHTTPServer(t *testing.T) {
	t.Parallel()
	h := http.NotFoundHandler()
	srv := NewHTTPServer(":8080", h)
	require.Equal(t, ":8080", srv.Addr)
	require.Equal(t, 5*time.Second, srv.ReadHeaderTimeout)
	require.Equal(t, 30*time.Second, srv.ReadTimeout)
	require.Equal(t, 60*time.Second, srv.WriteTimeout)
	require.Equal(t, 120*time.Second, srv.IdleTimeout)
	require.Equal(t, 64<<10, srv.MaxHeaderBytes)
	require.NotNil(t, srv.Handler)
}

func TestServiceAndHealthRoutes(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name       string
		path       string
		notReady   bool
		wantStatus int
		wantBody   string
	}{
		{name: "root names the service and version", path: "/", wantStatus: 200,
			wantBody: `{"service":"predq","version":"test","status":"ok","docs":"/api/docs"}`},
		{name: "health", path: "/health", wantStatus: 200, wantBody: `{"status":"ok"}`},
		{name: "liveness", path: "/health/live", wantStatus: 200, wantBody: `{"status":"ok"}`},
		{name: "liveness while not ready", path: "/health/live", notReady: true, wantStatus: 200, wantBody: `{"status":"ok"}`},
		{name: "ready", path: "/health/ready", wantStatus: 200,
			wantBody: `{"status":"ready","checks":{"postgres":{"status":"ok","latency_ms":1.5}},"checked_at":"2025-01-02T03:04:05Z"}`},
		{name: "not ready is 503 with the report", path: "/health/ready", notReady: true, wantStatus: 503,
			wantBody: `{"status":"unavailable","checks":{"postgres":{"status":"down","latency_ms":0,"error":"connection refused"}},"checked_at":"2025-01-02T03:04:05Z"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, b := setup(t)
			b.ready.notReady = tt.notReady

			rec := do(t, s, request{path: tt.path, noAuth: true})

			require.Equal(t, tt.wantStatus, rec.Code)
			require.Equal(t, "application/json", rec.Header().Get("Content-Type"))
			require.JSONEq(t, tt.wantBody, rec.Body.String())
		})
	}
}

func TestMetricsHook(t *testing.T) {
	t.Parallel()
	s, _ := setup(t, func(c *Config) {
		c.MetricsHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain; version=0.0.4")
			_, _ = w.Write([]byte("up 1\n"))
		})
	})
	rec := do(t, s, request{path: "/metrics", noAuth: true, header: map[string]string{"Accept-Encoding": "gzip"}})
	require.Equal(t, http.StatusOK, rec.Code)
	require.Equal(t, "up 1\n", rec.Body.String())

	s, _ = setup(t)
	require.Equal(t, http.StatusNotFound, do(t, s, request{path: "/metrics"}).Code)
}

func TestModels(t *testing.T) {
	t.Parallel()

	t.Run("lists every version", func(t *testing.T) {
		t.Parallel()
		s, _ := setup(t)
		rec := do(t, s, request{path: "/api/v1/models"})
		require.Equal(t, http.StatusOK, rec.Code)
		var got modelList
		require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &got))
		if diff := cmp.Diff(testModels(), got.Models); diff != "" {
			t.Errorf("models (-want +got):\n%s", diff)
		}
	})

	t.Run("gets a version or an alias", func(t *testing.T) {
		t.Parallel()
		s, _ := setup(t)
		for path, want := range map[string]string{"/api/v1/models/v1.0.0": "v1.0.0", "/api/v1/models/latest": "v1.1.0"} {
			rec := do(t, s, request{path: path})
			require.Equal(t, http.StatusOK, rec.Code)
			var got modelreg.Info
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &got))
			require.Equal(t, want, got.Version)
		}
	})

	t.Run("unknown version is a 404 problem naming model_version", func(t *testing.T) {
		t.Parallel()
		s, _ := setup(t)
		for _, v := range []string{"v9.9.9", "nope", strings.Repeat("v", 200)} {
			rec := do(t, s, request{path: "/api/v1/models/" + v})
			require.Equal(t, http.StatusNotFound, rec.Code)
			p := readProblem(t, rec)
			require.Equal(t, problemTypeBase+slugModelNotFound, p.Type)
			require.Equal(t, []string{"model_version"}, fieldsOf(p))
		}
	})

	t.Run("catalog failure is a 500", func(t *testing.T) {
		t.Parallel()
		s, b := setup(t)
		b.models.err = errors.New("postgres down")
		rec := do(t, s, request{path: "/api/v1/models"})
		require.Equal(t, http.StatusInternalServerError, rec.Code)
		require.NotContains(t, rec.Body.String(), "postgres")
	})
}

func TestDocs(t *testing.T) {
	t.Parallel()
	s, _ := setup(t)

	t.Run("page is HTML that loads only this origin's files", func(t *testing.T) {
		t.Parallel()
		rec := do(t, s, request{path: "/api/docs", noAuth: true})
		require.Equal(t, http.StatusOK, rec.Code)
		require.Equal(t, "text/html; charset=UTF-8", rec.Header().Get("Content-Type"))
		require.Contains(t, rec.Header().Get("Content-Security-Policy"), "default-src 'self'")
		body := rec.Body.String()
		require.Contains(t, body, `src="/api/docs/swagger-ui-bundle.js"`)
		require.Contains(t, body, `href="/api/docs/swagger-ui.css"`)
		require.Contains(t, body, `src="/api/docs/swagger-initializer.js"`)
		require.NotContains(t, body, "http://")
		require.NotContains(t, body, "https://")
	})

	t.Run("initializer points at this document", func(t *testing.T) {
		t.Parallel()
		rec := do(t, s, request{path: "/api/docs/swagger-initializer.js", noAuth: true})
		require.Equal(t, http.StatusOK, rec.Code)
		require.Contains(t, rec.Body.String(), `url: "/api/openapi.json"`)
		require.Contains(t, rec.Body.String(), `validatorUrl: null`)
	})

	t.Run("serves the vendored bundle, stylesheet and licence", func(t *testing.T) {
		t.Parallel()
		for _, a := range docsAssets {
			want, err := staticFS.ReadFile(a.file)
			require.NoError(t, err)
			rec := do(t, s, request{path: "/api/docs/" + a.name, noAuth: true})
			require.Equal(t, http.StatusOK, rec.Code, a.name)
			require.Equal(t, a.contentType, rec.Header().Get("Content-Type"))
			require.Equal(t, len(want), rec.Body.Len(), a.name)
		}
		rec := do(t, s, request{path: "/api/docs/swagger-ui-bundle.js"})
		require.Contains(t, rec.Body.String(), "SwaggerUIBundle")
		require.Greater(t, rec.Body.Len(), 500_000)
		rec = do(t, s, request{path: "/api/docs/LICENSE"})
		require.Contains(t, rec.Body.String(), "Apache License")
	})

	t.Run("the page names its icon, and /favicon.ico is that icon, not a 404", func(t *testing.T) {
		t.Parallel()
		page := do(t, s, request{path: "/api/docs", noAuth: true})
		require.Contains(t, page.Body.String(), `<link rel="icon" type="image/svg+xml" href="/api/docs/favicon.svg">`)
		want, err := staticFS.ReadFile("static/docs/favicon.svg")
		require.NoError(t, err)
		require.Contains(t, string(want), "<svg")
		for _, path := range []string{"/favicon.ico", "/api/docs/favicon.svg"} {
			rec := do(t, s, request{path: path, noAuth: true})
			require.Equal(t, http.StatusOK, rec.Code, path)
			require.Equal(t, "image/svg+xml", rec.Header().Get("Content-Type"), path)
			require.Equal(t, string(want), rec.Body.String(), path)
		}
	})

	t.Run("nothing else is served from the embedded files", func(t *testing.T) {
		t.Parallel()
		for _, name := range []string{"README.md", "..%2Fhttpapi.go", "index.html", "swagger-ui.js"} {
			rec := do(t, s, request{path: "/api/docs/" + name, noAuth: true})
			require.Equal(t, http.StatusNotFound, rec.Code, name)
		}
	})
}
