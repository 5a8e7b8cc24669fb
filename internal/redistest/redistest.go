// Package redistest starts a throwaway redis-server for one test (it starts quickly), so that tests
// never share keys, may flush or stop their server, and run in parallel.
package redistest

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/predq/predq/internal/localsvc"
)

// Server is a running throwaway Redis.
type Server struct {
	URL  string // redis://127.0.0.1:PORT/0
	Addr string // 127.0.0.1:PORT
	srv  *localsvc.Server
}

// New starts a redis-server that is stopped at the end of the test.
func New(t testing.TB) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	srv, err := localsvc.StartRedis(ctx)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	u, _ := redis.ParseURL(srv.URL)
	return &Server{URL: srv.URL, Addr: u.Addr, srv: srv}
}

// Stop stops the server now (fault tests); a second Stop is a no-op.
func (s *Server) Stop() { _ = s.srv.Stop() }

// Restart stops the server and starts an empty one on the same port, as a Redis without
// persistence comes back after a crash: clients reconnect to the same URL and find no data.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	_ = s.srv.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var err error
	for {
		// The port is free once the old server exited; a client's connection attempt can
		// hold it for a moment, so try again until the deadline.
		var srv *localsvc.Server
		if srv, err = localsvc.StartRedisOnPort(ctx, s.srv.Port); err == nil {
			s.srv = srv
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("redistest: restart on port %d: %v", s.srv.Port, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Client returns a client of the server, closed at the end of the test.
func (s *Server) Client(t testing.TB) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(s.URL)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { _ = c.Close() })
	return c
}
