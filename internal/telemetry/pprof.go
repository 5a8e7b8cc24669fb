package telemetry

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"
)

// StartPprof serves net/http/pprof on addr (PPROF_ADDR) until the returned stop is called;
// with an empty addr it serves nothing. It has its own listener and mux, so the profiles
// never reach the public API.
func StartPprof(addr string, logger *slog.Logger) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("PPROF_ADDR: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && logger != nil {
			logger.Error("pprof server", "error", err)
		}
	}()
	if logger != nil {
		logger.Info("pprof listening", "addr", ln.Addr().String())
	}
	return func() {
		err := srv.Close() // closes the listener: the port refuses connections once this returns
		if logger != nil {
			logger.Info("pprof stopped", "addr", ln.Addr().String(), "error", err)
		}
	}, nil
}
