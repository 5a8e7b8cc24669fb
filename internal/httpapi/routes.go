package httpapi

import (
	"net/http"

	"github.com/labstack/echo/v4"
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
	e.Use(s.requestID)
	if tr := s.trace(); tr != nil {
		e.Use(tr)
	}
	e.Use(
		s.observe,
		s.recoverPanics,
		bodyLimit(s.cfg.BodyLimit, isJobUpload),
	)
	if cors := s.cors(); cors != nil {
		e.Use(cors)
	}
	e.Use(gzip())

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
	if s.monitoringOn() {
		// asynqmon serves its UI and its JSON API under its RootPath (/monitoring).
		guard := s.monitoringAuth()
		e.GET("/monitoring", func(c echo.Context) error {
			return c.Redirect(http.StatusMovedPermanently, "/monitoring/")
		}, guard)
		e.Any("/monitoring/*", echo.WrapHandler(s.cfg.Monitoring), guard)
	}

	// /api/v1: an API key, then the per-key rate limit, on every route. (They are route
	// middleware rather than group middleware because Echo v4 gives a group with middleware
	// a catch-all route, which turns every 405 of the group into a 404.)
	// TestAPIRoutesRequireKey fails for a route added here without them.
	key := []echo.MiddlewareFunc{s.authenticate, s.rateLimit}
	v1 := e.Group("/api/v1")
	v1.POST("/predict", handlePredict(s.deps.Predictor), append(key, s.idempotent)...)
	v1.POST("/predict/batch", handlePredictBatch(s.deps.Predictor, s.cfg.MaxBatchSize), append(key, s.idempotent)...)
	v1.GET("/models", handleListModels(s.deps.Models), key...)
	v1.GET("/models/:version", handleGetModel(s.deps.Models), key...)
	if s.deps.Promoter != nil {
		v1.POST("/models/:version/promote", handlePromoteModel(s.deps.Promoter, s.deps.Models), key...)
	}
	if s.deps.Predictions != nil {
		v1.GET("/predictions", s.handleListPredictions(), key...)
		v1.GET("/predictions/:id", s.handleGetPrediction(), key...)
	}
	v1.POST("/jobs", s.handleSubmitJob(), key...)
	v1.GET("/jobs", s.handleListJobs(), key...)
	v1.GET("/jobs/:id", s.handleGetJob(), key...)
	v1.GET("/jobs/:id/results", s.handleJobResults(), key...)
	v1.GET("/jobs/:id/events", s.handleJobEvents(), key...)
	v1.POST("/jobs/:id/cancel", s.handleCancelJob(), key...)
}

// isJobUpload names the one route whose body is streamed rather than read whole: it has its
// own limit (Config.JobBodyLimit) and bounds its rows by count.
func isJobUpload(c echo.Context) bool {
	return c.Request().Method == http.MethodPost && c.Path() == "/api/v1/jobs"
}
