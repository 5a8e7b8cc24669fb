package httpapi

import (
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/predq/predq/internal/auth"
)

// routes installs the middleware and every route of the api process. It is the one list of
// what the process serves: a new route is added here, with its operation in
// openAPIDocument (openapi.go); TestOpenAPICoversRoutes fails until both agree.
//
// Middleware order, outermost first: request id (so that every later line carries it),
// trace (the OpenTelemetry server span, when a TracerProvider is configured, so that the
// access log carries its trace id), observe (access log, metrics, and the one call of the
// error handler), recover, body limit, CORS (when origins are configured), gzip (skipped for
// event streams).
func (s *Server) routes() {
	e := s.e
	chain := []echo.MiddlewareFunc{s.requestID}
	if tr := s.trace(); tr != nil {
		chain = append(chain, tr)
	}
	chain = append(chain, s.observe, s.recoverPanics, bodyLimit(s.cfg.BodyLimit, func(c echo.Context) bool {
		return isJobUpload(c) || isOIPAsyncInfer(c)
	}))
	if cors := s.cors(); cors != nil {
		chain = append(chain, cors)
	}
	chain = append(chain, gzip())
	// Echo v4 applies the middleware of e.Use to the matched handler again on every request,
	// a closure each. The chain is composed here once instead, around the handler that
	// routing put in the context (the route's, or the 404 or 405 handler), and e.Use gets a
	// middleware that returns it as it is.
	h := wrap(func(c echo.Context) error { return c.Handler()(c) }, chain...)
	e.Use(func(echo.HandlerFunc) echo.HandlerFunc { return h })

	// Open: service status, health, metrics, the API's description.
	e.GET("/", s.handleRoot())
	e.GET("/health", handleLive())
	e.GET("/health/live", handleLive())
	e.GET("/health/ready", handleReady(s.deps.Readiness))
	if s.cfg.MetricsHandler != nil {
		e.GET("/metrics", echo.WrapHandler(s.cfg.MetricsHandler))
	}
	e.GET("/api/openapi.json", s.handleOpenAPI())
	e.GET("/api/docs", s.handleDocs())
	e.GET("/api/docs/:asset", handleDocsAsset())
	e.GET("/favicon.ico", handleFavicon())
	if s.monitoringOn() {
		// asynqmon serves its UI and its JSON API under its RootPath (/monitoring): behind Basic
		// auth, changes only from its own pages, its HTML without third-party fonts.
		guard := s.monitoringAuth()
		e.GET("/monitoring", func(c echo.Context) error {
			return c.Redirect(http.StatusMovedPermanently, "/monitoring/")
		}, guard)
		e.Any("/monitoring/*", echo.WrapHandler(withoutThirdPartyFonts(s.cfg.Monitoring)), guard, monitoringSameOrigin)
	}

	// /api/v1: an API key, then the per-key rate limit, then the route's scope (none: any
	// valid key), on every route. (They wrap each handler rather than being group middleware
	// because Echo v4 gives a group with middleware a catch-all route, which turns every 405
	// of the group into a 404; and they wrap it here, once, because Echo v4 applies a route's
	// middleware to its handler again on every request, a closure each.)
	// TestAPIRoutesRequireKey fails for a route added here without them, and
	// TestScopedRoutes for a route without its scope.
	keyed := func(scope auth.Scope, h echo.HandlerFunc, more ...echo.MiddlewareFunc) echo.HandlerFunc {
		mw := []echo.MiddlewareFunc{s.authenticate, s.rateLimit}
		if scope != "" {
			mw = append(mw, requireScope(scope))
		}
		return wrap(h, append(mw, more...)...)
	}
	const anyKey auth.Scope = ""
	v1 := e.Group("/api/v1")
	// The synchronous routes run under admission control (s.admit: adaptive concurrency
	// limit, priority queue, 503 past it), after the key, its rate limit and its scope. A new
	// synchronous route (the OIP /v2/.../infer routes) takes s.admit the same way, after its
	// own authentication; nothing else does, so health, metrics, docs and jobs are never shed.
	v1.POST("/predict", keyed(auth.ScopePredict, handlePredict(s.deps.Predictor), s.admit, s.idempotent))
	v1.POST("/predict/batch", keyed(auth.ScopePredict, handlePredictBatch(s.deps.Predictor, s.cfg.MaxBatchSize), s.admit, s.idempotent))
	v1.GET("/models", keyed(anyKey, handleListModels(s.deps.Models)))
	v1.GET("/models/:version", keyed(anyKey, handleGetModel(s.deps.Models)))
	if s.deps.Promoter != nil {
		v1.POST("/models/:version/promote", keyed(auth.ScopeAdmin, handlePromoteModel(s.deps.Promoter, s.deps.Models)))
	}
	if s.deps.Predictions != nil {
		v1.GET("/predictions", keyed(auth.ScopePredict, s.handleListPredictions()))
		v1.GET("/predictions/:id", keyed(auth.ScopePredict, s.handleGetPrediction()))
	}
	v1.POST("/jobs", keyed(auth.ScopeJobs, s.handleSubmitJob(), s.jobUpload, s.idempotent))
	v1.GET("/jobs", keyed(auth.ScopeJobs, s.handleListJobs()))
	v1.GET("/jobs/:id", keyed(auth.ScopeJobs, s.handleGetJob()))
	v1.GET("/jobs/:id/results", keyed(auth.ScopeJobs, s.handleJobResults()))
	v1.GET("/jobs/:id/events", keyed(auth.ScopeJobs, s.handleJobEvents()))
	v1.POST("/jobs/:id/cancel", keyed(auth.ScopeJobs, s.handleCancelJob()))
	if s.deps.Replays != nil {
		v1.POST("/jobs/:id/replay", keyed(auth.ScopeJobs, handleReplayJob(s.deps.Replays)))
		v1.GET("/jobs/:id/comparison", keyed(auth.ScopeJobs, handleCompareJob(s.deps.Replays)))
	}

	// /v2: the Open Inference Protocol's REST binding (oip.go), its errors in the protocol's
	// {"error"} shape. Health is open; the rest needs a key with the predict scope, and the
	// asynchronous jobs the jobs scope.
	if svc := s.deps.OIP; svc != nil {
		e.GET("/v2/health/live", handleOIPLive(svc))
		e.GET("/v2/health/ready", handleOIPReady(svc))
		e.GET("/v2", keyed(auth.ScopePredict, handleOIPServerMetadata(svc)))
		e.GET("/v2/", keyed(auth.ScopePredict, handleOIPServerMetadata(svc)))
		for _, base := range []string{"/v2/models/:name", "/v2/models/:name/versions/:version"} {
			e.GET(base, keyed(auth.ScopePredict, handleOIPModelMetadata(svc)))
			e.GET(base+"/ready", keyed(auth.ScopePredict, handleOIPModelReady(svc)))
			e.POST(base+"/infer", keyed(auth.ScopePredict, s.handleOIPInfer(), s.admitSync, s.oipAsyncUpload, s.idempotent))
		}
		e.GET("/v2/jobs/:id", keyed(auth.ScopeJobs, s.handleOIPGetJob()))
		e.GET("/v2/jobs/:id/result", keyed(auth.ScopeJobs, s.handleOIPJobResult()))
	}
}

// isOIPAsyncInfer names an asynchronous /v2 infer (Prefer: respond-async): its body may hold
// up to a job's rows, so it has its own limit (Config.OIPAsyncBodyLimit, oipAsyncUpload).
func isOIPAsyncInfer(c echo.Context) bool {
	return c.Request().Method == http.MethodPost && strings.HasPrefix(c.Path(), "/v2/models/") &&
		strings.HasSuffix(c.Path(), "/infer") && prefersAsync(c.Request().Header)
}

// wrap returns h inside mw, the first outermost: what Echo does for a route's middleware on
// each request, done once.
func wrap(h echo.HandlerFunc, mw ...echo.MiddlewareFunc) echo.HandlerFunc {
	for i := len(mw) - 1; i >= 0; i-- {
		h = mw[i](h)
	}
	return h
}

// isJobUpload names the one route whose body is streamed rather than read whole: it has its
// own limit (Config.JobBodyLimit) and bounds its rows by count.
func isJobUpload(c echo.Context) bool {
	return c.Request().Method == http.MethodPost && c.Path() == "/api/v1/jobs"
}
