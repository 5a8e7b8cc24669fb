package httpapi

import (
	"crypto/sha256"
	"crypto/subtle"
	"net/http"

	"github.com/labstack/echo/v4"
)

// monitoringOn reports whether the dashboard is mounted: it needs the handler and both
// credentials.
func (s *Server) monitoringOn() bool {
	return s.cfg.Monitoring != nil && s.cfg.MonitoringUser != "" && s.cfg.MonitoringPassword != ""
}

// monitoringAuth is HTTP Basic auth that a browser can use, comparing hashes in constant
// time (the lengths of the secrets do not leak either). A refusal is a 401 problem whose
// WWW-Authenticate asks for Basic credentials, so that a browser prompts for them.
func (s *Server) monitoringAuth() echo.MiddlewareFunc {
	wantUser := sha256.Sum256([]byte(s.cfg.MonitoringUser))
	wantPass := sha256.Sum256([]byte(s.cfg.MonitoringPassword))
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			user, pass, _ := c.Request().BasicAuth()
			u := sha256.Sum256([]byte(user))
			p := sha256.Sum256([]byte(pass))
			if subtle.ConstantTimeCompare(u[:], wantUser[:])&subtle.ConstantTimeCompare(p[:], wantPass[:]) != 1 {
				return &problemError{status: http.StatusUnauthorized, slug: slugUnauthorized, title: "Unauthorized",
					detail: "The monitoring dashboard needs its HTTP Basic credentials.",
					header: http.Header{"Www-Authenticate": {`Basic realm="predq monitoring", charset="UTF-8"`}}}
			}
			return next(c)
		}
	}
}
