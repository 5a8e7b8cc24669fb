package httpapi

import (
	"embed"
	"net/http"

	"github.com/labstack/echo/v4"
)

// staticFS holds the docs page and the vendored Swagger UI (see static/swagger-ui/README.md).
//
//go:embed static/docs/swagger-initializer.js static/docs/favicon.svg
//go:embed static/swagger-ui/swagger-ui-bundle.js static/swagger-ui/swagger-ui.css
//go:embed static/swagger-ui/LICENSE static/swagger-ui/NOTICE static/swagger-ui/swagger-ui-bundle.js.LICENSE.txt
var staticFS embed.FS

// docsAsset is one file served under /api/docs/.
type docsAsset struct {
	name        string // the :asset path parameter
	file        string // path in staticFS
	contentType string
}

// docsAssets are the files served at /api/docs/:asset; anything else is 404.
var docsAssets = []docsAsset{
	{"swagger-ui-bundle.js", "static/swagger-ui/swagger-ui-bundle.js", "text/javascript; charset=utf-8"},
	{"swagger-ui.css", "static/swagger-ui/swagger-ui.css", "text/css; charset=utf-8"},
	{"swagger-initializer.js", "static/docs/swagger-initializer.js", "text/javascript; charset=utf-8"},
	{"favicon.svg", "static/docs/favicon.svg", faviconType},
	{"LICENSE", "static/swagger-ui/LICENSE", "text/plain; charset=utf-8"},
	{"NOTICE", "static/swagger-ui/NOTICE", "text/plain; charset=utf-8"},
	{"swagger-ui-bundle.js.LICENSE.txt", "static/swagger-ui/swagger-ui-bundle.js.LICENSE.txt", "text/plain; charset=utf-8"},
}

// faviconType is the media type of the service's icon (an SVG, which browsers take by type
// whatever its path).
const faviconType = "image/svg+xml"

func findDocsAsset(name string) (docsAsset, bool) {
	for _, a := range docsAssets {
		if a.name == name {
			return a, true
		}
	}
	return docsAsset{}, false
}

// docsCSP keeps the docs page to this origin: scripts, styles and API calls. Swagger UI sets
// inline styles and shows data: images.
const docsCSP = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; " +
	"img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

// handleOpenAPI answers GET /api/openapi.json with the document rendered at start.
func (s *Server) handleOpenAPI() echo.HandlerFunc {
	return func(c echo.Context) error {
		c.Response().Header().Set(echo.HeaderCacheControl, "no-cache")
		return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, s.openapi)
	}
}

// docsPage is the Swagger UI page served at GET /api/docs.
//
//go:embed static/docs/index.html
var docsPage []byte

// handleDocs answers GET /api/docs with the Swagger UI page.
func (s *Server) handleDocs() echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		h.Set("Content-Security-Policy", docsCSP)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set(echo.HeaderCacheControl, "no-cache")
		return c.HTMLBlob(http.StatusOK, docsPage)
	}
}

// handleDocsAsset answers GET /api/docs/:asset with a vendored Swagger UI file.
func handleDocsAsset() echo.HandlerFunc {
	return func(c echo.Context) error {
		a, ok := findDocsAsset(c.Param("asset"))
		if !ok {
			return echo.ErrNotFound
		}
		b, err := staticFS.ReadFile(a.file)
		if err != nil {
			return err
		}
		h := c.Response().Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set(echo.HeaderCacheControl, "public, max-age=3600")
		return c.Blob(http.StatusOK, a.contentType, b)
	}
}

// handleFavicon answers GET /favicon.ico, which browsers ask for beside any page they show
// (the docs page among them), with the docs page's icon instead of a 404.
func handleFavicon() echo.HandlerFunc {
	return func(c echo.Context) error {
		b, err := staticFS.ReadFile("static/docs/favicon.svg")
		if err != nil {
			return err
		}
		h := c.Response().Header()
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set(echo.HeaderCacheControl, "public, max-age=86400")
		return c.Blob(http.StatusOK, faviconType, b)
	}
}
