package telemetry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// OpsServer is the small HTTP server of the worker and scheduler processes: /health,
// /health/live, /health/ready and /metrics.
type OpsServer struct {
	srv  *http.Server
	ln   net.Listener
	errc chan error
}

// StartOps listens on port (0: a free port) and serves the ops endpoints. ready reports
// whether the process can do its work (nil: always ready).
func StartOps(port int, reg *prometheus.Registry, ready func(context.Context) error, logger *slog.Logger) (*OpsServer, error) {
	ln, err := net.Listen("tcp", net.JoinHostPort("", strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("ops listen: %w", err)
	}
	mux := http.NewServeMux()
	live := func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}`))
	}
	mux.HandleFunc("GET /health", live)
	mux.HandleFunc("GET /health/live", live)
	mux.HandleFunc("GET /health/ready", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		if ready != nil {
			ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
			defer cancel()
			if err := ready(ctx); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				_ = json.NewEncoder(w).Encode(map[string]string{"status": "unavailable", "error": err.Error()})
				return
			}
		}
		_, _ = w.Write([]byte(`{"status":"ready"}`))
	})
	mux.Handle("GET /metrics", MetricsHandler(reg))
	s := &OpsServer{
		srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
			WriteTimeout: 30 * time.Second, IdleTimeout: 60 * time.Second},
		ln:   ln,
		errc: make(chan error, 1),
	}
	go func() {
		err := s.srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		s.errc <- err
	}()
	if logger != nil {
		logger.Info("ops endpoints listening", "addr", ln.Addr().String())
	}
	return s, nil
}

// Err delivers the error that stopped the server, if it stops by itself.
func (s *OpsServer) Err() <-chan error { return s.errc }

// Shutdown stops the server gracefully.
func (s *OpsServer) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }
