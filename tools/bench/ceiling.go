package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/go-json-experiment/json"
	"github.com/labstack/echo/v4"

	"github.com/predq/predq/internal/strictjson"
)

// ceilingRequest has the shape of the api's predict request, so that the ceiling decodes
// what the api decodes.
type ceilingRequest struct {
	Features            []float64 `json:"features"`
	ModelVersion        *string   `json:"model_version"`
	ConfidenceThreshold *float64  `json:"confidence_threshold"`
	Preprocessing       *string   `json:"preprocessing"`
}

// ceilingAnswer is the constant answer of the ceiling server: a predict answer's shape.
var ceilingAnswer = []byte(`{"prediction":0.5,"confidence":0.5,"model_version":"v0.0.0","latency_ms":0,` +
	`"timestamp":"2026-01-01T00:00:00Z","prediction_class":"negative","cached":false,` +
	`"id":"019b6b2e-6c00-7000-8000-000000000000","request_id":"ceiling"}` + "\n")

// newCeilingHandler is the bare Echo server of the HTTP ceiling: POST /api/v1/predict reads
// the body, decodes it with the api's own strict options (internal/strictjson) into the
// api's request shape, and writes a constant answer. No middleware, no validation, no cache, no queue.
func newCeilingHandler() http.Handler {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.POST("/api/v1/predict", func(c echo.Context) error {
		body, err := io.ReadAll(c.Request().Body)
		if err != nil {
			return echo.NewHTTPError(http.StatusBadRequest, "unreadable body")
		}
		var req ceilingRequest
		if err := json.Unmarshal(body, &req, strictjson.Options); err != nil {
			return echo.NewHTTPError(http.StatusBadRequest, "invalid JSON")
		}
		if len(req.Features) == 0 {
			return echo.NewHTTPError(http.StatusUnprocessableEntity, "no features")
		}
		return c.JSONBlob(http.StatusOK, ceilingAnswer)
	})
	e.GET("/health/live", func(c echo.Context) error { return c.String(http.StatusOK, "ok") })
	return e
}

// serveCeilingCommand is `bench serve-ceiling -addr 127.0.0.1:PORT`: the ceiling server as
// its own process (like the api), with the api's server timeouts, until SIGINT or SIGTERM.
func serveCeilingCommand(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve-ceiling", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:0", "listen address (loopback)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("serve-ceiling: %w", err)
	}
	// The api's server settings (internal/httpapi's NewHTTPServer).
	srv := &http.Server{Handler: newCeilingHandler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: 60 * time.Second, IdleTimeout: 120 * time.Second, MaxHeaderBytes: 64 << 10}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return err
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
