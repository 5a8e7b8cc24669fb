package httpapi

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/predq/predq/internal/health"
)

// serviceName is the name GET / answers with.
const serviceName = "predq"

// rootResponse is the answer of GET /.
type rootResponse struct {
	Service string `json:"service"`
	Version string `json:"version"`
	Status  string `json:"status"`
	Docs    string `json:"docs"`
}

// handleRoot answers GET /: service name, version and status.
func (s *Server) handleRoot() echo.HandlerFunc {
	body := rootResponse{Service: serviceName, Version: s.cfg.Version, Status: health.StatusOK, Docs: "/api/docs"}
	return func(c echo.Context) error {
		return c.JSON(http.StatusOK, body)
	}
}

// liveResponse is the answer of GET /health and GET /health/live.
type liveResponse struct {
	Status string `json:"status"`
}

// handleLive answers liveness: the process answers.
func handleLive() echo.HandlerFunc {
	body := liveResponse{Status: health.StatusOK}
	return func(c echo.Context) error {
		c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
		return c.JSON(http.StatusOK, body)
	}
}

// handleReady answers GET /health/ready with the readiness report: 200 when the process can
// do its main work, else 503.
func handleReady(r ReadinessChecker) echo.HandlerFunc {
	return func(c echo.Context) error {
		rep := r.Ready(c.Request().Context())
		status := http.StatusOK
		if !rep.Ready {
			status = http.StatusServiceUnavailable
		}
		rep.CheckedAt = rep.CheckedAt.UTC()
		c.Response().Header().Set(echo.HeaderCacheControl, "no-store")
		return c.JSON(status, rep)
	}
}
