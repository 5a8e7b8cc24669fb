package httpapi

import (
	"net/http"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/hibiken/asynqmon"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/redistest"
)

const (
	monUser = "ops"
	monPass = "monitoring-password-123"
)

// setupMonitoring serves the real asynqmon dashboard over a throwaway Redis holding one
// task in the queue "default".
func setupMonitoring(t *testing.T, cfgFn ...func(*Config)) *Server {
	t.Helper()
	rs := redistest.New(t)
	opt := asynq.RedisClientOpt{Addr: rs.Addr}
	client := asynq.NewClient(opt)
	t.Cleanup(func() { client.Close() })
	_, err := client.Enqueue(asynq.NewTask("test:noop", nil), asynq.Queue("default"))
	require.NoError(t, err)
	mon := asynqmon.New(asynqmon.Options{RootPath: "/monitoring", RedisConnOpt: opt})
	t.Cleanup(func() { mon.Close() })
	s, _ := setup(t, append([]func(*Config){func(c *Config) {
		c.Monitoring, c.MonitoringUser, c.MonitoringPassword = mon, monUser, monPass
	}}, cfgFn...)...)
	return s
}

func monRequest(method, path string, header map[string]string) *http.Request {
	req := newRequest(method, path, "")
	req.Header.Del("Authorization")
	req.SetBasicAuth(monUser, monPass)
	for k, v := range header {
		req.Header.Set(k, v)
	}
	return req
}

func TestMonitoringRefusesCrossSiteChanges(t *testing.T) {
	t.Parallel()
	s := setupMonitoring(t)
	pause := "/monitoring/api/queues/default:pause"
	resume := "/monitoring/api/queues/default:resume"

	for name, h := range map[string]map[string]string{
		"a form posted from another site":          {"Origin": "https://evil.example"},
		"a fetch from another site":                {"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
		"a fetch from a sibling subdomain":         {"Sec-Fetch-Site": "same-site"},
		"an opaque origin":                         {"Origin": "null"},
		"another port of the same host, by Origin": {"Origin": "http://example.com:9999"},
	} {
		t.Run(name+" is refused", func(t *testing.T) {
			rec := serve(s, monRequest(http.MethodPost, pause, h))
			require.Equal(t, http.StatusForbidden, rec.Code, rec.Body.String())
			require.Equal(t, problemTypeBase+slugForbidden, readProblem(t, rec).Type)
		})
	}
	queuePaused := func() bool {
		rec := serve(s, monRequest(http.MethodGet, "/monitoring/api/queues/default", nil))
		require.Equal(t, http.StatusOK, rec.Code, rec.Body.String())
		return strings.Contains(rec.Body.String(), `"paused":true`)
	}
	require.False(t, queuePaused(), "no refused request reached asynqmon")

	for name, h := range map[string]map[string]string{
		"the dashboard's own fetch":        {"Sec-Fetch-Site": "same-origin", "Origin": "http://example.com"},
		"an Origin of this host":           {"Origin": "http://example.com"},
		"a client without browser headers": nil,
		"a request the user typed (none)":  {"Sec-Fetch-Site": "none"},
	} {
		t.Run(name+" passes", func(t *testing.T) {
			rec := serve(s, monRequest(http.MethodPost, pause, h))
			require.Equal(t, http.StatusNoContent, rec.Code, rec.Body.String())
			require.True(t, queuePaused())
			rec = serve(s, monRequest(http.MethodPost, resume, h))
			require.Equal(t, http.StatusNoContent, rec.Code, rec.Body.String())
		})
	}

	t.Run("reads from anywhere still need the credentials", func(t *testing.T) {
		req := monRequest(http.MethodGet, "/monitoring/api/queues", map[string]string{"Sec-Fetch-Site": "cross-site"})
		require.Equal(t, http.StatusOK, serve(s, req).Code)
		req.SetBasicAuth(monUser, "wrong")
		require.Equal(t, http.StatusUnauthorized, serve(s, req).Code)
	})
}

func TestMonitoringPageLoadsNoThirdPartyFonts(t *testing.T) {
	t.Parallel()
	s := setupMonitoring(t)
	for _, path := range []string{"/monitoring/", "/monitoring/queues/default"} {
		rec := serve(s, monRequest(http.MethodGet, path, nil))
		require.Equal(t, http.StatusOK, rec.Code)
		require.Contains(t, rec.Header().Get("Content-Type"), "text/html")
		body := rec.Body.String()
		require.Contains(t, body, `<div id="root">`, "the page itself is served")
		require.NotContains(t, body, "fonts.googleapis")
		require.NotContains(t, body, "fonts.gstatic")
		require.Equal(t, len(body), int(rec.Result().ContentLength))
	}
}

func TestFailedAuthenticationsAreLimitedPerAddress(t *testing.T) {
	t.Parallel()
	s := setupMonitoring(t, func(c *Config) { c.AuthFailRate = 0.01; c.AuthFailBurst = 3 })
	from := func(req *http.Request, addr string) *http.Request {
		req.RemoteAddr = addr + ":40000"
		return req
	}
	badKey := func(addr string) int {
		req := newRequest(http.MethodGet, "/api/v1/models", "")
		req.Header.Set("Authorization", "Bearer not-a-known-key-0000")
		return serve(s, from(req, addr)).Code
	}
	for range 3 {
		require.Equal(t, http.StatusUnauthorized, badKey("192.0.2.1"))
	}
	rec := serve(s, from(newRequest(http.MethodGet, "/api/v1/models", ""), "192.0.2.1"))
	require.Equal(t, http.StatusTooManyRequests, rec.Code, "past the burst even a good key waits: the address is refused before its key is checked")
	require.Equal(t, problemTypeBase+slugRateLimited, readProblem(t, rec).Type)
	require.NotEmpty(t, rec.Header().Get("Retry-After"))

	bad := monRequest(http.MethodGet, "/monitoring/", nil)
	bad.SetBasicAuth(monUser, "wrong")
	require.Equal(t, http.StatusTooManyRequests, serve(s, from(bad, "192.0.2.1")).Code, "the dashboard shares the limit")

	require.Equal(t, http.StatusUnauthorized, badKey("192.0.2.2"), "other addresses are not affected")
	require.Equal(t, http.StatusOK, serve(s, from(newRequest(http.MethodGet, "/api/v1/models", ""), "192.0.2.2")).Code,
		"successful authentications cost nothing")
	for range 10 {
		require.Equal(t, http.StatusOK, serve(s, from(newRequest(http.MethodGet, "/api/v1/models", ""), "192.0.2.3")).Code)
	}
}
