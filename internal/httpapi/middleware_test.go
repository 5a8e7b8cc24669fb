package httpapi

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/auth"
)

func TestRequestID(t *testing.T) {
	t.Parallel()

	t.Run("a sane id is echoed and reaches the predictor", func(t *testing.T) {
		t.Parallel()
		s, b := setup(t)
		for _, id := range []string{"a", "req-123", "2f1c:9a.b_c-d", strings.Repeat("x", 128)} {
			rec := do(t, s, request{method: http.MethodPost, path: "/api/v1/predict", body: `{"features":[1]}`,
				header: map[string]string{"X-Request-ID": id}})
			require.Equal(t, http.StatusOK, rec.Code)
			require.Equal(t, id, rec.Header().Get("X-Request-ID"))
			require.Equal(t, id, b.predictor.lastMeta(t).RequestID)
		}
	})

	t.Run("an insane id is replaced by a UUIDv7", func(t *testing.T) {
		t.Parallel()
		s, b := setup(t)
		for _, id := range []string{"has space", strings.Repeat("x", 129), "naïve", "a/b", "<script>", "a\tb", "id;drop"} {
			rec := do(t, s, request{method: http.MethodPost, path: "/api/v1/predict", body: `{"features":[1]}`,
				header: map[string]string{"X-Request-ID": id}})
			got := rec.Header().Get("X-Request-ID")
			require.NotEqual(t, id, got)
			u, err := uuid.Parse(got)
			require.NoError(t, err, got)
			require.Equal(t, uuid.Version(7), u.Version())
			require.Equal(t, got, b.predictor.lastMeta(t).RequestID)
		}
	})

	t.Run("every response carries one, errors and open routes too", func(t *testing.T) {
		t.Parallel()
		s, _ := setup(t)
		for _, r := range []request{
			{path: "/"}, {path: "/health/live"}, {path: "/nope"}, {path: "/api/v1/models", noAuth: true},
			{method: http.MethodPost, path: "/api/v1/predict", body: `{`},
		} {
			rec := do(t, s, r)
			_, err := uuid.Parse(rec.Header().Get("X-Request-ID"))
			require.NoError(t, err, r.path)
		}
	})
}

func TestAuth(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name       string
		header     map[string]string
		wantStatus int
		wantUser   string
	}{
		{name: "bearer key", header: map[string]string{"Authorization": "Bearer " + testKey}, wantStatus: 200, wantUser: "k-tester"},
		{name: "bearer scheme is case-insensitive", header: map[string]string{"Authorization": "bearer " + otherTestKey},
			wantStatus: 200, wantUser: "k-other"},
		{name: "X-API-Key", header: map[string]string{"X-API-Key": otherTestKey}, wantStatus: 200, wantUser: "k-other"},
		{name: "no key", header: nil, wantStatus: 401},
		{name: "wrong bearer key", header: map[string]string{"Authorization": "Bearer nope-0123456789abcdef"}, wantStatus: 401},
		{name: "wrong X-API-Key", header: map[string]string{"X-API-Key": "nope"}, wantStatus: 401},
		{name: "empty bearer", header: map[string]string{"Authorization": "Bearer "}, wantStatus: 401},
		{name: "basic scheme", header: map[string]string{"Authorization": "Basic " + testKey}, wantStatus: 401},
		{name: "key without scheme", header: map[string]string{"Authorization": testKey}, wantStatus: 401},
		{name: "huge key", header: map[string]string{"X-API-Key": strings.Repeat("k", 10_000)}, wantStatus: 401},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s, b := setup(t)

			rec := do(t, s, request{method: http.MethodPost, path: "/api/v1/predict", body: `{"features":[1]}`,
				noAuth: true, header: tt.header})

			require.Equal(t, tt.wantStatus, rec.Code, rec.Body.String())
			if tt.wantStatus == http.StatusUnauthorized {
				require.Equal(t, `Bearer realm="predq"`, rec.Header().Get("WWW-Authenticate"))
				require.Equal(t, problemTypeBase+slugUnauthorized, readProblem(t, rec).Type)
				require.Zero(t, b.predictor.calls())
				return
			}
			require.Equal(t, tt.wantUser, b.predictor.lastMeta(t).UserID)
		})
	}
}

// TestAPIRoutesRequireKey walks every registered /api/v1 route: without a key each is 401.
// It fails for a route added to routes.go without the key middleware.
func TestAPIRoutesRequireKey(t *testing.T) {
	t.Parallel()
	s, _ := setup(t)
	n := 0
	for _, r := range s.e.Routes() {
		if r.Method == echo.RouteNotFound || !strings.HasPrefix(r.Path, "/api/v1/") {
			continue
		}
		n++
		path := strings.NewReplacer(":version", "v1.0.0", ":id", "00000000-0000-0000-0000-000000000000").Replace(r.Path)
		rec := do(t, s, request{method: r.Method, path: path, body: `{}`, noAuth: true})
		require.Equal(t, http.StatusUnauthorized, rec.Code, "%s %s", r.Method, r.Path)
	}
	require.NotZero(t, n)
}

func TestOpenRoutesNeedNoKey(t *testing.T) {
	t.Parallel()
	s, _ := setup(t, func(c *Config) {
		c.MetricsHandler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("m 1\n")) })
	})
	for _, path := range []string{"/", "/health", "/health/live", "/health/ready", "/metrics", "/api/openapi.json",
		"/api/docs", "/api/docs/swagger-ui.css"} {
		rec := do(t, s, request{path: path, noAuth: true})
		require.Equal(t, http.StatusOK, rec.Code, path)
	}
}

func TestCORS(t *testing.T) {
	t.Parallel()

	withOrigins := func(origins ...string) func(*Config) {
		return func(c *Config) { c.AllowedOrigins = origins }
	}

	t.Run("allowed origin gets the CORS headers, errors too", func(t *testing.T) {
		t.Parallel()
		s, _ := setup(t, withOrigins("https://app.example.com", "http://localhost:3000"))
		for _, r := range []request{
			{method: http.MethodPost, path: "/api/v1/predict", body: `{"features":[1]}`},
			{method: http.MethodPost, path: "/api/v1/predict", body: `{"features":[1]}`, noAuth: true},
		} {
			r.header = map[string]string{"Origin": "https://app.example.com"}
			rec := do(t, s, r)
			require.Equal(t, "https://app.example.com", rec.Header().Get("Access-Control-Allow-Origin"))
			require.Empty(t, rec.Header().Get("Access-Control-Allow-Credentials"))
			require.Contains(t, rec.Header().Get("Access-Control-Expose-Headers"), "X-Request-ID")
			require.Contains(t, rec.Header().Values("Vary"), "Origin")
		}
	})

	t.Run("preflight of an allowed origin allows the key headers", func(t *testing.T) {
		t.Parallel()
		s, b := setup(t, withOrigins("https://app.example.com"))

		rec := do(t, s, request{method: http.MethodOptions, path: "/api/v1/predict", noAuth: true, header: map[string]string{
			"Origin": "https://app.example.com", "Access-Control-Request-Method": "POST",
			"Access-Control-Request-Headers": "authorization,content-type"}})

		require.Equal(t, http.StatusNoContent, rec.Code)
		require.Equal(t, "https://app.example.com", rec.Header().Get("Access-Control-Allow-Origin"))
		require.Contains(t, rec.Header().Get("Access-Control-Allow-Methods"), "POST")
		allowHeaders := rec.Header().Get("Access-Control-Allow-Headers")
		for _, h := range []string{"Authorization", "X-API-Key", "Content-Type"} {
			require.Contains(t, allowHeaders, h)
		}
		require.Zero(t, b.predictor.calls())
	})

	t.Run("denied origin gets no CORS headers", func(t *testing.T) {
		t.Parallel()
		s, _ := setup(t, withOrigins("https://app.example.com"))
		for _, origin := range []string{"https://evil.example.com", "https://app.example.com.evil.io", "http://app.example.com", "null"} {
			rec := do(t, s, request{path: "/api/v1/models", header: map[string]string{"Origin": origin}})
			require.Equal(t, http.StatusOK, rec.Code)
			require.Empty(t, rec.Header().Get("Access-Control-Allow-Origin"), origin)

			rec = do(t, s, request{method: http.MethodOptions, path: "/api/v1/predict", noAuth: true,
				header: map[string]string{"Origin": origin, "Access-Control-Request-Method": "POST"}})
			require.Empty(t, rec.Header().Get("Access-Control-Allow-Origin"), origin)
		}
	})

	t.Run("no origins configured means no CORS at all", func(t *testing.T) {
		t.Parallel()
		s, _ := setup(t)
		rec := do(t, s, request{path: "/api/v1/models", header: map[string]string{"Origin": "https://app.example.com"}})
		require.Equal(t, http.StatusOK, rec.Code)
		require.Empty(t, rec.Header().Get("Access-Control-Allow-Origin"))
	})

	t.Run("star allows any origin, never with credentials", func(t *testing.T) {
		t.Parallel()
		s, _ := setup(t, withOrigins("*"))
		rec := do(t, s, request{path: "/api/v1/models", header: map[string]string{"Origin": "https://any.example"}})
		require.Equal(t, "https://any.example", rec.Header().Get("Access-Control-Allow-Origin"))
		require.Empty(t, rec.Header().Get("Access-Control-Allow-Credentials"))
	})

	t.Run("configured origins are normalized", func(t *testing.T) {
		t.Parallel()
		s, _ := setup(t, withOrigins("HTTPS://App.Example.com/"))
		rec := do(t, s, request{path: "/api/v1/models", header: map[string]string{"Origin": "https://app.example.com"}})
		require.Equal(t, "https://app.example.com", rec.Header().Get("Access-Control-Allow-Origin"))
	})
}

func TestRateLimit(t *testing.T) {
	t.Parallel()

	t.Run("past the burst a key gets 429 with Retry-After; other keys do not", func(t *testing.T) {
		t.Parallel()
		s, b := setup(t, func(c *Config) { c.RateLimit = 0.01; c.RateBurst = 2 }) // a token per 100 s
		body := `{"features":[1]}`

		require.Equal(t, http.StatusOK, predict(t, s, body).Code)
		require.Equal(t, http.StatusOK, predict(t, s, body).Code)
		rec := predict(t, s, body)

		require.Equal(t, http.StatusTooManyRequests, rec.Code)
		require.Equal(t, problemTypeBase+slugRateLimited, readProblem(t, rec).Type)
		secs, err := strconv.Atoi(rec.Header().Get("Retry-After"))
		require.NoError(t, err)
		require.Greater(t, secs, 90)
		require.LessOrEqual(t, secs, 100)
		require.Equal(t, 2, b.predictor.calls())

		other := do(t, s, request{method: http.MethodPost, path: "/api/v1/predict", body: body, noAuth: true,
			header: map[string]string{"X-API-Key": otherTestKey}})
		require.Equal(t, http.StatusOK, other.Code)

		// Open routes are never limited.
		require.Equal(t, http.StatusOK, do(t, s, request{path: "/health"}).Code)
	})

	t.Run("off by default", func(t *testing.T) {
		t.Parallel()
		s, _ := setup(t)
		for range 50 {
			require.Equal(t, http.StatusOK, do(t, s, request{path: "/api/v1/models"}).Code)
		}
	})
}

func TestKeyLimiter(t *testing.T) {
	t.Parallel()

	t.Run("refills over time", func(t *testing.T) {
		t.Parallel()
		now := time.Unix(1000, 0)
		l := newKeyLimiter(1, 1, 10, func() time.Time { return now })

		ok, _ := l.allow("a")
		require.True(t, ok)
		ok, wait := l.allow("a")
		require.False(t, ok)
		require.Equal(t, time.Second, wait)

		now = now.Add(time.Second)
		ok, _ = l.allow("a")
		require.True(t, ok)
	})

	t.Run("a refused request takes no token", func(t *testing.T) {
		t.Parallel()
		now := time.Unix(1000, 0)
		l := newKeyLimiter(1, 1, 10, func() time.Time { return now })
		l.allow("a")
		for range 5 {
			ok, _ := l.allow("a")
			require.False(t, ok)
		}
		now = now.Add(time.Second)
		ok, _ := l.allow("a")
		require.True(t, ok, "refusals must not push the next token further away")
	})

	t.Run("the map stays bounded", func(t *testing.T) {
		t.Parallel()
		now := time.Unix(1000, 0)
		l := newKeyLimiter(1, 1, 3, func() time.Time { return now })
		for i := range 100 {
			now = now.Add(time.Millisecond)
			ok, _ := l.allow("key-" + strconv.Itoa(i))
			require.True(t, ok)
			require.LessOrEqual(t, l.size(), 3)
		}
	})

	t.Run("idle buckets are dropped first", func(t *testing.T) {
		t.Parallel()
		now := time.Unix(1000, 0)
		l := newKeyLimiter(1, 1, 2, func() time.Time { return now })
		l.allow("idle")
		now = now.Add(5 * time.Second)
		l.allow("busy")
		l.allow("new") // full: "idle" has refilled and goes
		_, ok := l.buckets["busy"]
		require.True(t, ok)
		_, ok = l.buckets["idle"]
		require.False(t, ok)
	})
}

func TestAccessLog(t *testing.T) {
	t.Parallel()
	s, b := setup(t)

	rec := do(t, s, request{method: http.MethodPost, path: "/api/v1/predict?api_key=" + otherTestKey, body: `{"features":[1]}`,
		header: map[string]string{"X-Request-ID": "log-req-1"}})
	require.Equal(t, http.StatusOK, rec.Code)

	var line map[string]any
	sc := bufio.NewScanner(strings.NewReader(b.logs.String()))
	for sc.Scan() {
		var m map[string]any
		require.NoError(t, json.Unmarshal(sc.Bytes(), &m), sc.Text())
		if m["msg"] == "http request" && m["request_id"] == "log-req-1" {
			require.Nil(t, line, "one access-log line per request")
			line = m
		}
	}
	require.NotNil(t, line)
	for _, k := range []string{"method", "path", "route", "status", "latency_ms", "bytes", "request_id", "remote_ip"} {
		require.Contains(t, line, k)
	}
	require.Equal(t, "POST", line["method"])
	require.Equal(t, "/api/v1/predict", line["path"])
	require.Equal(t, "/api/v1/predict", line["route"])
	require.EqualValues(t, 200, line["status"])
	require.EqualValues(t, rec.Body.Len(), line["bytes"])
	require.Equal(t, "192.0.2.1", line["remote_ip"])
	require.NotContains(t, b.logs.String(), testKey)
	require.NotContains(t, b.logs.String(), otherTestKey)
}

func TestRemoteIPIgnoresForwardedHeaders(t *testing.T) {
	t.Parallel()
	s, b := setup(t)
	do(t, s, request{path: "/health", header: map[string]string{"X-Forwarded-For": "203.0.113.9", "X-Real-IP": "203.0.113.8",
		"X-Request-ID": "ip-req"}})
	require.Contains(t, b.logs.String(), `"remote_ip":"192.0.2.1"`)
	require.NotContains(t, b.logs.String(), "203.0.113")
}

func TestHTTPMetrics(t *testing.T) {
	t.Parallel()
	s, b := setup(t)

	predict(t, s, `{"features":[1]}`)
	predict(t, s, `{"features":[]}`)
	do(t, s, request{path: "/api/v1/models/v9.9.9"})
	do(t, s, request{path: "/no/such/path/" + strconv.Itoa(1)})

	require.Equal(t, 1.0, counterValue(t, s.metrics.requests.WithLabelValues("POST", "/api/v1/predict", "200")))
	require.Equal(t, 1.0, counterValue(t, s.metrics.requests.WithLabelValues("POST", "/api/v1/predict", "422")))
	require.Equal(t, 1.0, counterValue(t, s.metrics.requests.WithLabelValues("GET", "/api/v1/models/:version", "404")))
	require.Equal(t, 1.0, counterValue(t, s.metrics.requests.WithLabelValues("GET", "unmatched", "404")))

	families, err := b.reg.Gather()
	require.NoError(t, err)
	series := map[string]int{}
	for _, f := range families {
		series[f.GetName()] = len(f.GetMetric())
	}
	require.Equal(t, map[string]int{"http_requests_total": 4, "http_request_duration_seconds": 4, "http_requests_in_flight": 1,
		"predq_ratelimit_fallbacks_total": 1, "predq_ratelimit_fallback_active": 1}, series, "the rate-limit metrics exist at 0 even when rate limiting is off")

	t.Run("two servers may share a registry", func(t *testing.T) {
		t.Parallel()
		_, err := New(Config{Registerer: b.reg}, Deps{Predictor: b.predictor, Models: b.models, Auth: fakeAuth{}, Readiness: b.ready, Jobs: &fakeJobs{}})
		require.NoError(t, err)
	})
}

func TestGzip(t *testing.T) {
	t.Parallel()
	s, _ := setup(t)

	t.Run("large responses are compressed", func(t *testing.T) {
		t.Parallel()
		rec := do(t, s, request{path: "/api/openapi.json", header: map[string]string{"Accept-Encoding": "gzip"}})
		require.Equal(t, http.StatusOK, rec.Code)
		require.Equal(t, "gzip", rec.Header().Get("Content-Encoding"))
	})

	t.Run("small responses are not", func(t *testing.T) {
		t.Parallel()
		rec := do(t, s, request{path: "/health", header: map[string]string{"Accept-Encoding": "gzip"}})
		require.Empty(t, rec.Header().Get("Content-Encoding"))
		require.JSONEq(t, `{"status":"ok"}`, rec.Body.String())
	})

	t.Run("streams are skipped", func(t *testing.T) {
		t.Parallel()
		e := echo.New()
		skip := skipCompression
		for _, tt := range []struct {
			path, accept string
			want         bool
		}{
			{"/api/v1/jobs/123/events", "", true},
			{"/api/v1/jobs/123/results", "application/x-ndjson", true},
			{"/api/v1/anything", "text/event-stream", true},
			{"/metrics", "", true},
			{"/api/v1/jobs/123/results", "application/json", false},
			{"/api/openapi.json", "", false},
		} {
			req := httptest.NewRequest(http.MethodGet, tt.path, nil)
			req.Header.Set("Accept", tt.accept)
			require.Equal(t, tt.want, skip(e.NewContext(req, httptest.NewRecorder())), tt.path)
		}
	})
}

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	require.NoError(t, c.Write(&m))
	return m.GetCounter().GetValue()
}

// TestScopedRoutes walks every registered /api/v1 route: a key with every scope but the
// route's own gets 403 problem+json naming it, a key with only that scope gets past the
// check, and the OpenAPI document lists the 403. The routes that any valid key may use
// answer a key without scopes.
func TestScopedRoutes(t *testing.T) {
	t.Parallel()
	s, _ := setup(t)
	_, doc := fetchOpenAPI(t, s)
	want := map[string]auth.Scope{
		"POST /api/v1/predict":                  auth.ScopePredict,
		"POST /api/v1/predict/batch":            auth.ScopePredict,
		"GET /api/v1/predictions":               auth.ScopePredict,
		"GET /api/v1/predictions/{id}":          auth.ScopePredict,
		"GET /api/v1/models":                    "",
		"GET /api/v1/models/{version}":          "",
		"POST /api/v1/models/{version}/promote": auth.ScopeAdmin,
		"POST /api/v1/jobs":                     auth.ScopeJobs,
		"GET /api/v1/jobs":                      auth.ScopeJobs,
		"GET /api/v1/jobs/{id}":                 auth.ScopeJobs,
		"GET /api/v1/jobs/{id}/results":         auth.ScopeJobs,
		"GET /api/v1/jobs/{id}/events":          auth.ScopeJobs,
		"POST /api/v1/jobs/{id}/cancel":         auth.ScopeJobs,
		"POST /api/v1/jobs/{id}/replay":         auth.ScopeJobs,
		"GET /api/v1/jobs/{id}/comparison":      auth.ScopeJobs,
	}
	allBut := func(not auth.Scope) []auth.Scope {
		var out []auth.Scope
		for _, sc := range auth.AllScopes() {
			if sc != not {
				out = append(out, sc)
			}
		}
		return out
	}
	seen := 0
	for _, r := range s.e.Routes() {
		if r.Method == echo.RouteNotFound || !strings.HasPrefix(r.Path, "/api/v1/") {
			continue
		}
		route := r.Method + " " + echoParam.ReplaceAllString(r.Path, "{$1}")
		scope, ok := want[route]
		require.True(t, ok, "%s: which scope does it need? add it here and to the README", route)
		seen++
		path := strings.NewReplacer(":version", "v1.0.0", ":id", "00000000-0000-0000-0000-000000000000").Replace(r.Path)
		send := func(key string) *httptest.ResponseRecorder {
			return do(t, s, request{method: r.Method, path: path, body: `{"features":[1]}`,
				header: map[string]string{"Authorization": "Bearer " + key}})
		}
		op := doc["paths"].(map[string]any)[echoParam.ReplaceAllString(r.Path, "{$1}")].(map[string]any)[strings.ToLower(r.Method)].(map[string]any)
		if scope == "" {
			rec := send(scopedKey())
			require.NotEqual(t, http.StatusForbidden, rec.Code, "%s: any valid key: %s", route, rec.Body)
			require.NotContains(t, op["responses"], "403", route)
			continue
		}
		rec := send(scopedKey(allBut(scope)...))
		require.Equal(t, http.StatusForbidden, rec.Code, "%s: %s", route, rec.Body)
		require.Equal(t, "application/problem+json", rec.Header().Get(echo.HeaderContentType), route)
		p := readProblem(t, rec)
		require.Equal(t, problemTypeBase+slugForbidden, p.Type, route)
		require.Equal(t, "The API key lacks the scope this route needs: "+string(scope)+".", p.Detail, route)
		rec = send(scopedKey(scope))
		require.NotEqual(t, http.StatusForbidden, rec.Code, "%s: the %s scope suffices: %s", route, scope, rec.Body)
		require.Contains(t, op["responses"], "403", "%s: the OpenAPI document lists its 403", route)
	}
	require.Equal(t, len(want), seen, "every route of the table is registered")
}

// A key that the authenticator returns without a tenant is refused: nothing it made could
// be told apart from another key's.
func TestKeyWithoutTenantIsRefused(t *testing.T) {
	t.Parallel()
	s, _ := setup(t)
	s.deps.Auth = noTenantAuth{}
	rec := do(t, s, request{method: http.MethodPost, path: "/api/v1/predict", body: `{"features":[1]}`})
	require.Equal(t, http.StatusUnauthorized, rec.Code, rec.Body.String())
}

type noTenantAuth struct{}

func (noTenantAuth) Authenticate(context.Context, string) (auth.Principal, error) {
	return auth.Principal{Name: "static", Scopes: auth.AllScopes()}, nil
}
