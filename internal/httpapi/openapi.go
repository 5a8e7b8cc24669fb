package httpapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/predq/predq/internal/job"
	"github.com/predq/predq/internal/prediction"
)

// The OpenAPI 3.1 document of every route, built in Go so that it shares the limits the
// handlers enforce (MaxFeatures, MaxBatchSize, the defaults). To document a new route, add
// its operation to paths in openAPIDocument next to the route in routes.go; reuse the
// schemas and responses of components, or add new ones there. TestOpenAPICoversRoutes fails
// while a route and the document disagree; TestOpenAPIGolden shows the change (run
// `go test ./internal/httpapi -run TestOpenAPIGolden -update` to accept it).

type openAPIDoc struct {
	OpenAPI    string                          `json:"openapi"`
	Info       openAPIInfo                     `json:"info"`
	Servers    []openAPIServer                 `json:"servers"`
	Tags       []openAPITag                    `json:"tags"`
	Paths      map[string]map[string]operation `json:"paths"` // path → method (lower case) → operation
	Components components                      `json:"components"`
}

type openAPIInfo struct {
	Title       string         `json:"title"`
	Version     string         `json:"version"`
	Description string         `json:"description"`
	License     openAPILicense `json:"license"`
}

type openAPIServer struct {
	URL         string `json:"url"`
	Description string `json:"description"`
}

type openAPILicense struct {
	Name       string `json:"name"`
	Identifier string `json:"identifier"`
}

type openAPITag struct {
	Name        string `json:"name"`
	Description string `json:"description"`
}

type operation struct {
	OperationID string                `json:"operationId"`
	Summary     string                `json:"summary"`
	Description string                `json:"description,omitempty"`
	Tags        []string              `json:"tags"`
	Parameters  []parameter           `json:"parameters,omitempty"`
	RequestBody *requestBody          `json:"requestBody,omitempty"`
	Responses   map[string]response   `json:"responses"`
	Security    []map[string][]string `json:"security"` // empty: open
}

type parameter struct {
	Ref         string  `json:"$ref,omitempty"`
	Name        string  `json:"name,omitempty"`
	In          string  `json:"in,omitempty"`
	Description string  `json:"description,omitempty"`
	Required    bool    `json:"required,omitempty"`
	Schema      *schema `json:"schema,omitempty"`
}

type requestBody struct {
	Description string               `json:"description,omitempty"`
	Required    bool                 `json:"required"`
	Content     map[string]mediaType `json:"content"`
}

type response struct {
	Ref         string               `json:"$ref,omitempty"`
	Description string               `json:"description,omitempty"`
	Headers     map[string]header    `json:"headers,omitempty"`
	Content     map[string]mediaType `json:"content,omitempty"`
}

type header struct {
	Ref         string  `json:"$ref,omitempty"`
	Description string  `json:"description,omitempty"`
	Schema      *schema `json:"schema,omitempty"`
}

type mediaType struct {
	Schema  *schema `json:"schema"`
	Example any     `json:"example,omitempty"`
}

// schema is the subset of JSON Schema 2020-12 (OpenAPI 3.1) that the document uses.
type schema struct {
	Ref                  string             `json:"$ref,omitempty"`
	Type                 any                `json:"type,omitempty"` // a name, or a list of names
	Format               string             `json:"format,omitempty"`
	Description          string             `json:"description,omitempty"`
	Enum                 []any              `json:"enum,omitempty"`
	Default              any                `json:"default,omitempty"`
	Minimum              *float64           `json:"minimum,omitempty"`
	Maximum              *float64           `json:"maximum,omitempty"`
	ExclusiveMinimum     *float64           `json:"exclusiveMinimum,omitempty"`
	MinLength            *int               `json:"minLength,omitempty"`
	MaxLength            *int               `json:"maxLength,omitempty"`
	Pattern              string             `json:"pattern,omitempty"`
	Items                *schema            `json:"items,omitempty"`
	MinItems             *int               `json:"minItems,omitempty"`
	MaxItems             *int               `json:"maxItems,omitempty"`
	Properties           map[string]*schema `json:"properties,omitempty"`
	Required             []string           `json:"required,omitempty"`
	AdditionalProperties any                `json:"additionalProperties,omitempty"` // false or a schema
	MaxProperties        *int               `json:"maxProperties,omitempty"`
	PropertyNames        *schema            `json:"propertyNames,omitempty"`
	Const                any                `json:"const,omitempty"`
	If                   *schema            `json:"if,omitempty"`
	Then                 *schema            `json:"then,omitempty"`
	Examples             []any              `json:"examples,omitempty"`
}

type components struct {
	Schemas         map[string]*schema        `json:"schemas"`
	Responses       map[string]response       `json:"responses"`
	Parameters      map[string]parameter      `json:"parameters"`
	Headers         map[string]header         `json:"headers"`
	SecuritySchemes map[string]securityScheme `json:"securitySchemes"`
}

type securityScheme struct {
	Type         string `json:"type"`
	Description  string `json:"description,omitempty"`
	Scheme       string `json:"scheme,omitempty"`
	BearerFormat string `json:"bearerFormat,omitempty"`
	In           string `json:"in,omitempty"`
	Name         string `json:"name,omitempty"`
}

// renderOpenAPI encodes the document, indented so that its golden file diffs well.
func renderOpenAPI(doc *openAPIDoc) ([]byte, error) {
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

func ptr[T any](v T) *T { return &v }

func ref(name string) *schema { return &schema{Ref: "#/components/schemas/" + name} }

func respRef(name string) response { return response{Ref: "#/components/responses/" + name} }

func jsonContent(s *schema, example any) map[string]mediaType {
	return map[string]mediaType{"application/json": {Schema: s, Example: example}}
}

var (
	// apiKeySecurity is the security of /api/v1/*: either header form of an API key.
	apiKeySecurity = []map[string][]string{{"bearerAuth": {}}, {"apiKeyAuth": {}}}
	// openSecurity is the security of the routes that need no key.
	openSecurity = []map[string][]string{}
	// requestIDParam lets every operation take the client's X-Request-ID.
	requestIDParam = []parameter{{Ref: "#/components/parameters/RequestID"}}
	// idempotencyKeyParam is the Idempotency-Key header of job submission and predict.
	idempotencyKeyParam = parameter{Name: "Idempotency-Key", In: "header", Description: "The same key and body return the first answer " +
		"(with Idempotent-Replayed: true); another body is 422; while the first is in flight, 409. Kept 24 hours, per API key.",
		Schema: &schema{Type: "string", MaxLength: ptr(255)}}
	// requestIDHeader is on every response.
	requestIDHeader = map[string]header{"X-Request-ID": {Ref: "#/components/headers/X-Request-ID"}}
)

// okResponse is a 200 JSON response of s.
func okResponse(description string, s *schema, example any) response {
	return response{Description: description, Headers: requestIDHeader, Content: jsonContent(s, example)}
}

// exampleOutput is the example PredictionOutput.
func exampleOutput() map[string]any {
	return map[string]any{
		"prediction": 0.8731, "confidence": 0.8731, "model_version": "v1.1.0", "latency_ms": 0.42,
		"timestamp": time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC).Format(time.RFC3339Nano), "prediction_class": "positive",
		"cached": false, "request_id": "3f1e2d4c-5b6a-4789-8abc-def012345678",
	}
}

// exampleFeatures is row 1 of data/sonar.csv (60 features, a rock), so that the docs page's
// first "Try it out" gets a prediction from the shipped models rather than a 422; a test
// holds it to the data set.
var exampleFeatures = []float64{
	0.0200, 0.0371, 0.0428, 0.0207, 0.0954, 0.0986, 0.1539, 0.1601, 0.3109, 0.2111,
	0.1609, 0.1582, 0.2238, 0.0645, 0.0660, 0.2273, 0.3100, 0.2999, 0.5078, 0.4797,
	0.5783, 0.5071, 0.4328, 0.5550, 0.6711, 0.6415, 0.7104, 0.8080, 0.6791, 0.3857,
	0.1307, 0.2604, 0.5121, 0.7547, 0.8537, 0.8507, 0.6692, 0.6097, 0.4943, 0.2744,
	0.0510, 0.2834, 0.2825, 0.4256, 0.2641, 0.1386, 0.1051, 0.1343, 0.0383, 0.0324,
	0.0232, 0.0027, 0.0065, 0.0159, 0.0072, 0.0167, 0.0180, 0.0084, 0.0090, 0.0032,
}

func exampleInput() map[string]any {
	return map[string]any{
		"features":             exampleFeatures,
		"model_version":        "latest",
		"confidence_threshold": 0.5,
		"preprocessing":        "standard",
	}
}

// The schemas of the input rules that predict and jobs share, built from the constants the
// validators use, so that an input a schema validator accepts is one the server accepts
// (beyond what no schema can state: a version that is registered, a row as long as its
// model's input size).

// featuresSchema is a feature vector: 1 to MaxFeatures numbers, each within ±MaxAbsFeature.
func featuresSchema(description string) *schema {
	return &schema{Type: "array", MinItems: ptr(1), MaxItems: ptr(prediction.MaxFeatures), Description: description,
		Items: &schema{Type: "number", Minimum: ptr(-prediction.MaxAbsFeature), Maximum: ptr(prediction.MaxAbsFeature)}}
}

// modelVersionPattern is "latest" or vMAJOR.MINOR.PATCH, with the spaces the server trims.
var modelVersionPattern = `^\s*(latest|` + prediction.VersionPattern + `)\s*$`

func modelVersionSchema(t any) *schema {
	return &schema{Type: t, Default: prediction.LatestAlias, Pattern: modelVersionPattern,
		Description: `"latest" or vMAJOR.MINOR.PATCH of a registered version.`, Examples: []any{"latest", "v1.0.0"}}
}

func preprocessingSchema(nullable bool) *schema {
	var enum []any
	for _, p := range prediction.Preprocessings() {
		enum = append(enum, p)
	}
	t := any("string")
	if nullable {
		t, enum = []string{"string", "null"}, append(enum, nil)
	}
	return &schema{Type: t, Enum: enum, Default: prediction.DefaultPreprocessing,
		Description: "Case-sensitive. `robust` is only available with `model_version` \"latest\"."}
}

func thresholdSchema(t any, description string) *schema {
	return &schema{Type: t, ExclusiveMinimum: ptr(0.0), Maximum: ptr(1.0), Default: prediction.DefaultThreshold,
		Description: description}
}

// robustNeedsLatest states the rule "robust only with latest" on an object with
// preprocessing and model_version members (as JSON Schema's if/then).
func robustNeedsLatest(s *schema) *schema {
	s.If = &schema{Required: []string{"preprocessing"},
		Properties: map[string]*schema{"preprocessing": {Const: "robust"}}}
	s.Then = &schema{Properties: map[string]*schema{
		"model_version": {Type: []string{"string", "null"}, Pattern: `^\s*latest\s*$`}}}
	return s
}

// limitParam is the limit query parameter of a listing, as queryLimit enforces it.
func limitParam(def, maxLimit int) parameter {
	return parameter{Name: "limit", In: "query", Description: "Page size, 1 to " + strconv.Itoa(maxLimit) + ".",
		Schema: &schema{Type: "integer", Minimum: ptr(1.0), Maximum: ptr(float64(maxLimit)), Default: def}}
}

// openAPIDocument describes every route of routes().
func (s *Server) openAPIDocument() *openAPIDoc {
	predictErrors := map[string]response{
		"400": respRef("BadRequest"),
		"401": respRef("Unauthorized"),
		"403": respRef("Forbidden"), // needs the predict scope
		"404": respRef("ModelNotFound"),
		"413": respRef("PayloadTooLarge"),
		"415": respRef("UnsupportedMediaType"),
		"422": respRef("UnprocessableEntity"),
		"429": respRef("TooManyRequests"),
		"409": respRef("Conflict"),
		"500": respRef("InternalError"),
		"503": respRef("NoModelsOrOverloaded"),
	}
	withErrors := func(r map[string]response, codes map[string]response) map[string]response {
		for k, v := range codes {
			r[k] = v
		}
		return r
	}
	protectedReadErrors := map[string]response{
		"401": respRef("Unauthorized"),
		"429": respRef("TooManyRequests"),
		"500": respRef("InternalError"),
	}

	paths := map[string]map[string]operation{
		"/": {"get": {
			OperationID: "getServiceStatus", Summary: "Service name, version and status", Tags: []string{"service"},
			Parameters: requestIDParam, Security: openSecurity,
			Responses: map[string]response{"200": okResponse("The service answers.", ref("ServiceStatus"),
				map[string]any{"service": serviceName, "version": s.cfg.Version, "status": "ok", "docs": "/api/docs"})},
		}},
		"/health": {"get": {
			OperationID: "getHealth", Summary: "Liveness (same as /health/live)", Tags: []string{"health"},
			Parameters: requestIDParam, Security: openSecurity,
			Responses: map[string]response{"200": okResponse("The process answers.", ref("Liveness"), map[string]any{"status": "ok"})},
		}},
		"/health/live": {"get": {
			OperationID: "getLiveness", Summary: "Liveness: the process answers", Tags: []string{"health"},
			Parameters: requestIDParam, Security: openSecurity,
			Responses: map[string]response{"200": okResponse("The process answers.", ref("Liveness"), map[string]any{"status": "ok"})},
		}},
		"/health/ready": {"get": {
			OperationID: "getReadiness", Summary: "Readiness: dependencies checked and reported",
			Description: "Postgres, Redis and the models are checked. 503 only when the process cannot do its main work; " +
				"a degraded dependency is reported with 200.",
			Tags: []string{"health"}, Parameters: requestIDParam, Security: openSecurity,
			Responses: map[string]response{
				"200": okResponse("The process can serve predictions.", ref("HealthReport"), nil),
				"503": {Description: "The process cannot do its main work.", Headers: requestIDHeader,
					Content: jsonContent(ref("HealthReport"), nil)},
			},
		}},
		"/api/openapi.json": {"get": {
			OperationID: "getOpenAPI", Summary: "This OpenAPI document", Tags: []string{"docs"},
			Parameters: requestIDParam, Security: openSecurity,
			Responses: map[string]response{"200": okResponse("The OpenAPI 3.1 document.", &schema{Type: "object"}, nil)},
		}},
		"/api/docs": {"get": {
			OperationID: "getDocs", Summary: "Interactive API docs (Swagger UI)", Tags: []string{"docs"},
			Parameters: requestIDParam, Security: openSecurity,
			Responses: map[string]response{"200": {Description: "The docs page.", Headers: requestIDHeader,
				Content: map[string]mediaType{"text/html": {Schema: &schema{Type: "string"}}}}},
		}},
		"/api/docs/{asset}": {"get": {
			OperationID: "getDocsAsset", Summary: "A file of the docs page (vendored Swagger UI and its licence)",
			Tags: []string{"docs"}, Security: openSecurity,
			Parameters: append([]parameter{{Name: "asset", In: "path", Required: true,
				Schema: &schema{Type: "string", Enum: docsAssetNames()}}}, requestIDParam...),
			Responses: map[string]response{
				"200": {Description: "The file.", Headers: requestIDHeader, Content: map[string]mediaType{
					"text/javascript": {Schema: &schema{Type: "string"}},
					"text/css":        {Schema: &schema{Type: "string"}},
					"text/plain":      {Schema: &schema{Type: "string"}},
					faviconType:       {Schema: &schema{Type: "string"}},
				}},
				"404": respRef("NotFound"),
			},
		}},
		"/favicon.ico": {"get": {
			OperationID: "getFavicon", Summary: "The service's icon (an SVG), which browsers ask for beside the docs page",
			Tags: []string{"docs"}, Parameters: requestIDParam, Security: openSecurity,
			Responses: map[string]response{"200": {Description: "The icon.", Headers: requestIDHeader,
				Content: map[string]mediaType{faviconType: {Schema: &schema{Type: "string"}}}}},
		}},
		"/api/v1/predict": {"post": {
			OperationID: "predict", Summary: "One prediction",
			Description: "Answers from the cache or by inline inference. JSON decoding is strict: unknown, duplicate " +
				"or case-variant members, numbers that overflow float64, trailing data and invalid UTF-8 are refused " +
				"with 400; well-formed input that breaks a rule is refused with 422 naming each field.",
			Tags: []string{"predict"}, Parameters: append([]parameter{idempotencyKeyParam}, requestIDParam...), Security: apiKeySecurity,
			RequestBody: &requestBody{Required: true, Content: jsonContent(ref("PredictionInput"), exampleInput())},
			Responses: withErrors(map[string]response{
				"200": okResponse("The prediction.", ref("PredictionOutput"), exampleOutput()),
			}, predictErrors),
		}},
		"/api/v1/predict/batch": {"post": {
			OperationID: "predictBatch", Summary: "Up to " + strconv.Itoa(s.cfg.MaxBatchSize) + " predictions answered inline",
			Description: "Samples are answered in order. Field errors name the sample: samples[2].features[0].",
			Tags:        []string{"predict"}, Parameters: append([]parameter{idempotencyKeyParam}, requestIDParam...), Security: apiKeySecurity,
			RequestBody: &requestBody{Required: true, Content: jsonContent(ref("BatchRequest"),
				map[string]any{"samples": []any{exampleInput()}, "parallel": true})},
			Responses: withErrors(map[string]response{
				"200": okResponse("The predictions, in the order of the samples.", ref("BatchResponse"),
					map[string]any{"predictions": []any{exampleOutput()}, "total": 1, "parallel": true}),
			}, predictErrors),
		}},
		"/api/v1/models": {"get": {
			OperationID: "listModels", Summary: "Registered model versions", Tags: []string{"models"},
			Parameters: requestIDParam, Security: apiKeySecurity,
			Responses: withErrors(map[string]response{
				"200": okResponse("Every registered version with its aliases and metrics.", ref("ModelList"), nil),
			}, protectedReadErrors),
		}},
		"/api/v1/models/{version}": {"get": {
			OperationID: "getModel", Summary: "One model version (or alias)", Tags: []string{"models"},
			Parameters: append([]parameter{{Name: "version", In: "path", Required: true,
				Description: "A version (v1.0.0) or an alias (latest).",
				Schema:      &schema{Type: "string", MaxLength: ptr(maxVersionParamLen), Examples: []any{"latest", "v1.0.0"}}}},
				requestIDParam...),
			Security: apiKeySecurity,
			Responses: withErrors(map[string]response{
				"200": okResponse("The version.", ref("ModelInfo"), nil),
				"404": respRef("ModelNotFound"),
			}, protectedReadErrors),
		}},
	}
	if s.deps.Promoter != nil {
		paths["/api/v1/models/{version}/promote"] = map[string]operation{"post": {
			OperationID: "promoteModel", Summary: "Point an alias (default latest) at a version",
			Description: "Needs an API key with the admin scope. Recorded in Postgres and announced to every api and " +
				"worker process, which switch within seconds without a restart; a request in flight finishes on the model " +
				"it started with.",
			Tags: []string{"models"},
			Parameters: append([]parameter{
				{Name: "version", In: "path", Required: true, Schema: &schema{Type: "string", Examples: []any{"v1.0.0"}}},
				{Name: "alias", In: "query", Description: "The alias to move.", Schema: &schema{Type: "string", Default: "latest", Pattern: "^[a-z][a-z0-9_-]{0,62}$"}},
			}, requestIDParam...),
			Security: apiKeySecurity,
			Responses: withErrors(map[string]response{
				"200": okResponse("The version with its aliases.", ref("ModelInfo"), nil),
				"403": respRef("Forbidden"),
				"404": respRef("ModelNotFound"),
				"422": respRef("UnprocessableEntity"),
			}, protectedReadErrors),
		}}
	}
	if s.deps.Predictions != nil {
		q := func(name, desc string, sc *schema) parameter {
			return parameter{Name: name, In: "query", Description: desc, Schema: sc}
		}
		paths["/api/v1/predictions"] = map[string]operation{"get": {
			OperationID: "listPredictions", Summary: "The API key's persisted predictions, newest first", Tags: []string{"predict"},
			Parameters: append([]parameter{
				q("request_id", "Only the predictions sent with this X-Request-ID (a client may send one with several).", &schema{Type: "string"}),
				q("model_version", "Only this version.", &schema{Type: "string"}),
				q("from", "created_at at or after (RFC 3339).", &schema{Type: "string", Format: "date-time"}),
				q("to", "created_at before (RFC 3339).", &schema{Type: "string", Format: "date-time"}),
				limitParam(prediction.DefaultListLimit, prediction.MaxListLimit),
				q("cursor", "next_cursor of the previous page.", &schema{Type: "string"}),
			}, requestIDParam...),
			Security: apiKeySecurity,
			Responses: withErrors(map[string]response{
				"200": okResponse("A page of predictions.", ref("PredictionList"), nil),
				"403": respRef("Forbidden"),
				"422": respRef("UnprocessableEntity"),
			}, protectedReadErrors),
		}}
		paths["/api/v1/predictions/{id}"] = map[string]operation{"get": {
			OperationID: "getPrediction", Summary: "One persisted prediction, by id or request id", Tags: []string{"predict"},
			Description: "`id` is the prediction's id (the `id` of its predict answer, a UUID made by the server) or a " +
				"request id (the X-Request-ID it was sent with, the answer's `request_id`), among the API key's own " +
				"predictions. An id is matched first. A client may send the same X-Request-ID with several predictions: " +
				"each is stored under an id of its own, a request id finds the newest of them, and " +
				"GET /api/v1/predictions?request_id=… lists them all. Answers from the cache (cached: true) " +
				"are not stored unless they are below their confidence threshold or the service runs with " +
				"PERSIST_CACHE_HITS=true (their answer then carries no `id`): the prediction they repeat is stored. " +
				"A computed prediction is found as soon as its answer is read (PERSIST_PATH=postgres, the default); " +
				"while Postgres is down, or with PERSIST_PATH=queue, a worker stores it moments after the answer.",
			Parameters: append([]parameter{{Name: "id", In: "path", Required: true, Schema: &schema{Type: "string"}}}, requestIDParam...),
			Security:   apiKeySecurity,
			Responses: withErrors(map[string]response{
				"200": okResponse("The prediction.", ref("StoredPrediction"), nil),
				"403": respRef("Forbidden"),
				"404": respRef("NotFound"),
			}, protectedReadErrors),
		}}
	}
	for p, ops := range s.jobPaths() {
		paths[p] = ops
	}
	for p, ops := range s.replayPaths() {
		paths[p] = ops
	}
	for p, ops := range s.oipPaths() {
		paths[p] = ops
	}
	if s.cfg.MetricsHandler != nil {
		paths["/metrics"] = map[string]operation{"get": {
			OperationID: "getMetrics", Summary: "Prometheus metrics", Tags: []string{"service"},
			Parameters: requestIDParam, Security: openSecurity,
			Responses: map[string]response{"200": {Description: "Metrics in the Prometheus text format.",
				Content: map[string]mediaType{"text/plain": {Schema: &schema{Type: "string"}}}}},
		}}
	}

	return &openAPIDoc{
		OpenAPI: "3.1.0",
		Info: openAPIInfo{
			Title:   "predq API",
			Version: s.cfg.Version,
			Description: "Predictions of versioned ML models, synchronous and as batch jobs. `/api/v1/*` needs an API " +
				"key (`Authorization: Bearer <key>` or `X-API-Key: <key>`). Errors are RFC 9457 " +
				"`application/problem+json` documents that name each offending field. Every response carries " +
				"`X-Request-ID`.",
			License: openAPILicense{Name: "Apache-2.0", Identifier: "Apache-2.0"},
		},
		Servers: []openAPIServer{{URL: "/", Description: "The server that serves this document."}},
		Tags: []openAPITag{
			{Name: "predict", Description: "Synchronous predictions."},
			{Name: "jobs", Description: "Asynchronous batch jobs."},
			{Name: "models", Description: "Registered model versions."},
			{Name: "health", Description: "Liveness and readiness."},
			{Name: "service", Description: "Service status and metrics."},
			{Name: "docs", Description: "This document and its interactive page."},
			{Name: "oip", Description: "The Open Inference Protocol v2 (KServe V2) REST binding; errors are {\"error\": \"...\"}."},
		},
		Paths:      paths,
		Components: s.openAPIComponents(),
	}
}

func docsAssetNames() []any {
	names := make([]any, len(docsAssets))
	for i, a := range docsAssets {
		names[i] = a.name
	}
	return names
}

// problemResponse is a problem+json response with an example.
// quotaResponse is the 429 of a job submission: the key's rate limit, or one of its quotas,
// named with its limit and current figure.
func quotaResponse(retryAfterHeader map[string]header) response {
	r := problemResponse("The API key's rate limit, or one of its job quotas (pending_rows, queued_jobs), is exceeded; "+
		"Retry-After estimates when enough frees.",
		http.StatusTooManyRequests, slugQuotaExceeded, "Quota exceeded",
		"The API key has 20000000 rows pending across its active jobs (its limit is 20000000); this job adds 5000.", nil, retryAfterHeader)
	ex := r.Content["application/problem+json"].Example.(map[string]any)
	ex["instance"] = "/api/v1/jobs"
	ex["quota"], ex["limit"], ex["current"], ex["requested"] = job.QuotaPendingRows, 20000000, 20000000, 5000
	return r
}

func problemResponse(description string, status int, slug, title, detail string, fields []map[string]string,
	headers map[string]header) response {
	h := map[string]header{"X-Request-ID": {Ref: "#/components/headers/X-Request-ID"}}
	for k, v := range headers {
		h[k] = v
	}
	ex := map[string]any{
		"type": problemTypeBase + slug, "title": title, "status": status, "detail": detail,
		"instance": "/api/v1/predict", "request_id": "3f1e2d4c-5b6a-4789-8abc-def012345678",
	}
	if fields != nil {
		ex["errors"] = fields
	}
	return response{Description: description, Headers: h,
		Content: map[string]mediaType{"application/problem+json": {Schema: ref("Problem"), Example: ex}}}
}

func (s *Server) openAPIComponents() components {
	num := func(f float64) *float64 { return &f }
	nullable := func(t string) any { return []string{t, "null"} }
	retryAfterHeader := map[string]header{"Retry-After": {Description: "Seconds to wait before retrying.",
		Schema: &schema{Type: "integer", Minimum: num(1)}}}
	metrics := &schema{Type: "object", Required: []string{"accuracy", "accuracy_std", "roc_auc", "log_loss", "folds", "repeats"},
		Properties: map[string]*schema{
			"accuracy":     {Type: "number"},
			"accuracy_std": {Type: "number"},
			"roc_auc":      {Type: "number"},
			"log_loss":     {Type: "number"},
			"folds":        {Type: "integer"},
			"repeats":      {Type: "integer"},
		}}
	c := components{
		Schemas: map[string]*schema{
			"PredictionInput": robustNeedsLatest(&schema{
				Type: "object", Required: []string{"features"}, AdditionalProperties: false,
				Description: "One prediction request. Strings are trimmed; null means absent; unknown members are refused.",
				Properties: map[string]*schema{
					"features":      featuresSchema("Finite numbers, as many as the resolved model version's input size."),
					"model_version": modelVersionSchema(nullable("string")),
					"confidence_threshold": thresholdSchema(nullable("number"),
						"Predictions less confident than this raise a low-confidence alert."),
					"preprocessing": preprocessingSchema(true),
				},
			}),
			"PredictionOutput": {
				Type: "object",
				Description: "One answered prediction. `id` is the server's id of the stored prediction; `request_id` the " +
					"X-Request-ID of the request (a batch sample's with -<index>), which the client may reuse and is no key.",
				Required: []string{"prediction", "confidence", "model_version", "latency_ms", "timestamp",
					"prediction_class", "cached", "request_id"},
				Properties: map[string]*schema{
					"prediction": {Type: "number", Minimum: num(0), Maximum: num(1),
						Description: "Probability of the positive class."},
					"confidence":       {Type: "number", Minimum: num(0.5), Maximum: num(1), Description: "max(p, 1-p)."},
					"model_version":    {Type: "string", Description: `The concrete version that answered, never "latest".`},
					"latency_ms":       {Type: "number", Minimum: num(0)},
					"timestamp":        {Type: "string", Format: "date-time", Description: "RFC 3339, UTC."},
					"prediction_class": {Type: "string", Enum: []any{prediction.ClassPositive, prediction.ClassNegative}},
					"cached":           {Type: "boolean"},
					"id": {Type: "string", Format: "uuid", Description: "The prediction's id, under which it is stored " +
						"(GET /api/v1/predictions/{id}): a UUIDv7 made by the server. Absent when the answer is not stored " +
						"(a cache hit at or above its threshold, unless PERSIST_CACHE_HITS=true)."},
					"request_id": {Type: "string", Description: "The request's X-Request-ID (the client's, or one the " +
						"server made); a batch sample's ends with -<index>. A correlation field, not unique."},
				},
			},
			"BatchRequest": {
				Type: "object", Required: []string{"samples"}, AdditionalProperties: false,
				Properties: map[string]*schema{
					"samples": {Type: "array", MinItems: ptr(1), MaxItems: ptr(s.cfg.MaxBatchSize), Items: ref("PredictionInput"),
						Description: "At most MAX_BATCH_SIZE samples: " + strconv.Itoa(s.cfg.MaxBatchSize) + " on this server " +
							"(the default is " + strconv.Itoa(DefaultMaxBatchSize) + "; the operator may configure another)."},
					"parallel": {Type: nullable("boolean"), Default: true,
						Description: "A hint to answer the samples in parallel."},
				},
			},
			"BatchResponse": {
				Type: "object", Required: []string{"predictions", "total", "parallel"},
				Properties: map[string]*schema{
					"predictions": {Type: "array", Items: ref("PredictionOutput")},
					"total":       {Type: "integer", Minimum: num(0)},
					"parallel":    {Type: "boolean"},
				},
			},
			"ModelMetrics": metrics,
			"ModelInfo": {
				Type: "object",
				Required: []string{"version", "kind", "input_size", "preprocessings", "aliases", "metrics",
					"dataset_sha256", "checksum", "loaded"},
				Properties: map[string]*schema{
					"version":        {Type: "string", Examples: []any{"v1.0.0"}},
					"kind":           {Type: "string", Examples: []any{"logistic_regression"}},
					"input_size":     {Type: "integer", Minimum: num(1)},
					"preprocessings": {Type: "array", Items: &schema{Type: "string"}},
					"aliases":        {Type: nullable("array"), Items: &schema{Type: "string"}},
					"metrics": {Type: nullable("object"), AdditionalProperties: ref("ModelMetrics"),
						Description: "Held-out metrics per preprocessing."},
					"dataset_sha256": {Type: "string"},
					"checksum":       {Type: "string"},
					"loaded":         {Type: "boolean"},
				},
			},
			"ModelList": {
				Type: "object", Required: []string{"models"},
				Properties: map[string]*schema{"models": {Type: "array", Items: ref("ModelInfo")}},
			},
			"FieldError": {
				Type: "object", Required: []string{"field", "message"},
				Properties: map[string]*schema{
					"field":   {Type: "string", Description: "A JSON path as the client wrote it.", Examples: []any{"features[3]", "samples[2].model_version"}},
					"message": {Type: "string"},
				},
			},
			"Problem": {
				Type: "object", Required: []string{"type", "title", "status"},
				Description: "RFC 9457 problem details (application/problem+json).",
				Properties: map[string]*schema{
					"type":       {Type: "string", Format: "uri", Examples: []any{problemTypeBase + slugValidation}},
					"title":      {Type: "string"},
					"status":     {Type: "integer"},
					"detail":     {Type: "string"},
					"instance":   {Type: "string", Description: "The request path."},
					"request_id": {Type: "string"},
					"errors":     {Type: "array", Items: ref("FieldError")},
					"quota": {Type: "string", Enum: []any{job.QuotaPendingRows, job.QuotaQueuedJobs},
						Description: "A job submission refused by a quota of the API key (429): which one."},
					"limit":     {Type: "integer", Description: "With quota: the key's limit."},
					"current":   {Type: "integer", Description: "With quota: the key's figure without this submission."},
					"requested": {Type: "integer", Description: "With quota: what this submission adds (rows, or 1 job); 0 when refused before its body was read."},
				},
			},
			"CheckResult": {
				Type: "object", Required: []string{"status", "latency_ms"},
				Properties: map[string]*schema{
					"status":     {Type: "string", Enum: []any{"ok", "down"}},
					"latency_ms": {Type: "number"},
					"error":      {Type: "string"},
					"detail":     {Description: "Check-specific detail."},
				},
			},
			"HealthReport": {
				Type: "object", Required: []string{"status", "checks", "checked_at"},
				Properties: map[string]*schema{
					"status":     {Type: "string", Enum: []any{"ready", "degraded", "unavailable"}},
					"checks":     {Type: "object", AdditionalProperties: ref("CheckResult")},
					"checked_at": {Type: "string", Format: "date-time"},
				},
			},
			"Liveness": {
				Type: "object", Required: []string{"status"},
				Properties: map[string]*schema{"status": {Type: "string", Enum: []any{"ok"}}},
			},
			"ServiceStatus": {
				Type: "object", Required: []string{"service", "version", "status", "docs"},
				Properties: map[string]*schema{
					"service": {Type: "string"},
					"version": {Type: "string"},
					"status":  {Type: "string"},
					"docs":    {Type: "string"},
				},
			},
		},
		Responses: map[string]response{
			"BadRequest": problemResponse("The body is not valid JSON, or has members that must not be there.",
				http.StatusBadRequest, slugMalformed, "Malformed request",
				"The request body has a member that is not part of the API (names are case-sensitive).",
				[]map[string]string{{"field": "Features", "message": "is not a known member"}}, nil),
			"Unauthorized": problemResponse("The API key is missing, unknown or revoked.",
				http.StatusUnauthorized, slugUnauthorized, "Unauthorized",
				"A valid API key is required: Authorization: Bearer <key> or X-API-Key: <key>.", nil,
				map[string]header{"WWW-Authenticate": {Schema: &schema{Type: "string"}}}),
			"Forbidden": problemResponse("The API key lacks the scope the route needs: predict (predict, batch "+
				"predict, predictions), jobs (every job route) or admin (promote); the detail names it.",
				http.StatusForbidden, slugForbidden, "Forbidden",
				"The API key lacks the scope this route needs: jobs.", nil, nil),
			"NotFound": problemResponse("No resource at this path.",
				http.StatusNotFound, slugNotFound, "Not found", "No resource at this path.", nil, nil),
			"ModelNotFound": problemResponse("The model version or alias is not registered.",
				http.StatusNotFound, slugModelNotFound, "Model version not found",
				"The requested model version or alias is not registered.",
				[]map[string]string{{"field": "model_version", "message": "is not a registered version or alias"}}, nil),
			"PayloadTooLarge": problemResponse("The body is larger than the server accepts.",
				http.StatusRequestEntityTooLarge, slugTooLarge, "Payload too large",
				"The request body is larger than the server accepts.", nil, nil),
			"UnsupportedMediaType": problemResponse("The body is not declared as JSON.",
				http.StatusUnsupportedMediaType, slugMediaType, "Unsupported media type",
				"The request body must be JSON: Content-Type: application/json.", nil, nil),
			"UnprocessableEntity": problemResponse("Well-formed input that breaks a rule; each field is named.",
				http.StatusUnprocessableEntity, slugValidation, "Invalid input",
				"The request is well-formed but breaks the input rules; see errors.",
				[]map[string]string{{"field": "features[3]", "message": "must be within [-1000, 1000], got 1234"}}, nil),
			"TooManyRequests": problemResponse("The API key's rate limit is exceeded.",
				http.StatusTooManyRequests, slugRateLimited, "Too many requests",
				"The API key's request rate limit is exceeded; retry after the Retry-After delay.", nil, retryAfterHeader),
			"QuotaExceeded": quotaResponse(retryAfterHeader),
			"InternalError": problemResponse("The server failed; the body carries no internals.",
				http.StatusInternalServerError, slugInternal, "Internal server error",
				"The server failed to answer; the request id identifies it in the logs.", nil, nil),
			"NoModelsOrOverloaded": problemResponse("Overloaded (type …/problems/overloaded): admission control turned the "+
				"request away before it ran, because the server is at its adaptive concurrency limit and its queue has no room "+
				"or the wait would be too long (bulk keys are shed before interactive ones); retry after Retry-After, computed "+
				"from the rate at which requests drain. Or no model is loaded yet (…/problems/service-unavailable).",
				http.StatusServiceUnavailable, slugOverloaded, "Overloaded",
				"Not processed: the server is at its concurrency limit and its queue has no room for this priority class (class interactive). "+
					"Retry after the Retry-After delay, computed from the current drain rate of 850 requests/s.", nil, retryAfterHeader),
			"NoModels": problemResponse("No model is loaded yet.",
				http.StatusServiceUnavailable, slugUnavailable, "No model loaded",
				"No model is loaded yet; retry shortly.", nil, retryAfterHeader),
		},
		Parameters: map[string]parameter{
			"RequestID": {Name: "X-Request-ID", In: "header",
				Description: "Kept when it is 1-128 characters of [A-Za-z0-9._:-]; else the server makes a UUIDv7 (time-ordered).",
				Schema:      &schema{Type: "string", MinLength: ptr(1), MaxLength: ptr(128), Pattern: "^[A-Za-z0-9._:-]+$"}},
		},
		Headers: map[string]header{
			"X-Request-ID": {Description: "The request's id: the client's when sane, else a new UUIDv7.",
				Schema: &schema{Type: "string"}},
		},
		SecuritySchemes: map[string]securityScheme{
			"bearerAuth": {Type: "http", Scheme: "bearer", Description: "Authorization: Bearer <API key>"},
			"apiKeyAuth": {Type: "apiKey", In: "header", Name: "X-API-Key", Description: "X-API-Key: <API key>"},
		},
	}
	for k, v := range jobSchemas(s.cfg.MaxJobSamples) {
		c.Schemas[k] = v
	}
	for k, v := range jobResponses() {
		c.Responses[k] = v
	}
	if s.deps.Replays != nil {
		for k, v := range replaySchemas() {
			c.Schemas[k] = v
		}
		for k, v := range replayResponses() {
			c.Responses[k] = v
		}
	}
	if s.deps.OIP != nil {
		for k, v := range oipSchemas() {
			c.Schemas[k] = v
		}
	}
	return c
}
