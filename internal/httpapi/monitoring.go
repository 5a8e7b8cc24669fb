package httpapi

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"

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
			addr := c.RealIP()
			if err := s.authAllowed(addr); err != nil {
				return err
			}
			user, pass, _ := c.Request().BasicAuth()
			u := sha256.Sum256([]byte(user))
			p := sha256.Sum256([]byte(pass))
			// Both compared, then combined: no early exit tells which one was wrong.
			if subtle.ConstantTimeCompare(u[:], wantUser[:])&subtle.ConstantTimeCompare(p[:], wantPass[:]) != 1 {
				return &problemError{status: http.StatusUnauthorized, slug: slugUnauthorized, title: "Unauthorized",
					detail: "The monitoring dashboard needs its HTTP Basic credentials.",
					header: http.Header{"Www-Authenticate": {`Basic realm="predq monitoring", charset="UTF-8"`}}}
			}
			s.authSucceeded(addr)
			return next(c)
		}
	}
}

// monitoringSameOrigin refuses, with 403, a mutating request (any method but GET, HEAD and
// OPTIONS) that a browser sent from another site: a page elsewhere could otherwise drive the
// dashboard with the Basic credentials the browser keeps. A browser says where a request
// comes from in Sec-Fetch-Site (same-origin or none pass) or else in Origin (its host must be
// the request's own; the scheme is not compared, since a TLS-terminating proxy hides it). A
// request with neither header is not a browser's cross-site request (browsers send Origin
// with every cross-origin POST): a command-line client with the credentials passes.
func monitoringSameOrigin(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		switch req.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			return next(c)
		}
		if !sameOrigin(req) {
			return &problemError{status: http.StatusForbidden, slug: slugForbidden, title: "Forbidden",
				detail: "The monitoring dashboard takes changes only from its own pages (Sec-Fetch-Site or Origin must be this site)."}
		}
		return next(c)
	}
}

// sameOrigin reports whether req came from the server's own origin, or from no browser page.
func sameOrigin(req *http.Request) bool {
	switch req.Header.Get("Sec-Fetch-Site") {
	case "same-origin", "none":
		return true
	case "":
	default: // same-site, cross-site
		return false
	}
	origin := req.Header.Get("Origin")
	if origin == "" {
		return true
	}
	u, err := url.Parse(origin)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != "" && strings.EqualFold(u.Host, req.Host)
}

// thirdPartyFonts matches the stylesheet links to Google Fonts in asynqmon's page.
var thirdPartyFonts = regexp.MustCompile(`<link[^>]+href="https://fonts\.(googleapis|gstatic)\.com[^"]*"[^>]*>`)

// withoutThirdPartyFonts serves h with the Google Fonts links removed from its HTML pages, so
// that opening the dashboard tells no third party about it; the page falls back to the
// browser's sans-serif font, and its icons are SVG.
func withoutThirdPartyFonts(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fw := &fontStripper{ResponseWriter: w}
		h.ServeHTTP(fw, r)
		fw.flush()
	})
}

// fontStripper holds an HTML response back to rewrite it; any other passes straight through.
type fontStripper struct {
	http.ResponseWriter
	decided, html bool
	status        int
	body          bytes.Buffer
}

func (w *fontStripper) WriteHeader(status int) {
	if w.decided {
		return
	}
	w.decided = true
	w.html = strings.HasPrefix(w.Header().Get("Content-Type"), "text/html")
	if !w.html {
		w.ResponseWriter.WriteHeader(status)
		return
	}
	w.status = status
}

func (w *fontStripper) Write(p []byte) (int, error) {
	if !w.decided {
		if w.Header().Get("Content-Type") == "" {
			w.Header().Set("Content-Type", http.DetectContentType(p))
		}
		w.WriteHeader(http.StatusOK)
	}
	if w.html {
		return w.body.Write(p)
	}
	return w.ResponseWriter.Write(p)
}

func (w *fontStripper) flush() {
	if !w.html {
		return
	}
	out := thirdPartyFonts.ReplaceAll(w.body.Bytes(), nil)
	w.Header().Set("Content-Length", strconv.Itoa(len(out)))
	w.ResponseWriter.WriteHeader(w.status)
	_, _ = w.ResponseWriter.Write(out)
}

func (w *fontStripper) Unwrap() http.ResponseWriter { return w.ResponseWriter }
