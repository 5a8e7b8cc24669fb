package httpapi

import (
	"net/http"
	"strconv"

	"github.com/predq/predq/internal/job"
	"github.com/predq/predq/internal/prediction"
)

// jobPaths documents the /api/v1/jobs routes.
func (s *Server) jobPaths() map[string]map[string]operation {
	jobIDParam := parameter{Name: "id", In: "path", Required: true, Description: "The job id.",
		Schema: &schema{Type: "string", Format: "uuid"}}
	reads := map[string]response{
		"401": respRef("Unauthorized"),
		"403": respRef("Forbidden"), // every job route needs the jobs scope
		"404": respRef("JobNotFound"),
		"429": respRef("TooManyRequests"),
		"500": respRef("InternalError"),
		"503": respRef("Unavailable"),
	}
	with := func(r map[string]response, extra map[string]response) map[string]response {
		out := map[string]response{}
		for k, v := range extra {
			out[k] = v
		}
		for k, v := range r {
			out[k] = v
		}
		return out
	}
	q := func(name, desc string, sc *schema) parameter {
		return parameter{Name: name, In: "query", Description: desc, Schema: sc}
	}
	optionParams := []parameter{
		q("model_version", `NDJSON and CSV bodies: "latest" or vMAJOR.MINOR.PATCH.`, modelVersionSchema("string")),
		q("preprocessing", "NDJSON and CSV bodies: standard, minmax or robust (robust needs latest).", preprocessingSchema(false)),
		q("confidence_threshold", "NDJSON and CSV bodies: items less confident than this are flagged.",
			thresholdSchema("number", "In (0, 1].")),
		q("webhook_url", "NDJSON and CSV bodies: receives the signed job.* event when the job ends.", &schema{Type: "string", Format: "uri"}),
		q("metadata", "NDJSON and CSV bodies: key=value, repeatable (at most 16; a key of 1 to 64 bytes, a value of at most 512).",
			&schema{Type: "array", MaxItems: ptr(maxJobMetadata),
				Items: &schema{Type: "string", Pattern: `^[^=]{1,64}=[\s\S]{0,512}$`}}),
		q("priority", "NDJSON and CSV bodies: high, normal (default) or low. Orders this API key's own jobs; "+
			"across keys batch capacity is shared by the keys' weights.", priorityEnum()),
		idempotencyKeyParam,
	}
	return map[string]map[string]operation{
		"/api/v1/jobs": {
			"post": {
				OperationID: "submitJob", Summary: "Submit a batch job",
				Description: "The body is streamed into the job store: application/json ({\"samples\": [...]} with the options), " +
					"application/x-ndjson (one {\"features\": [...]} or bare array per line) or text/csv (one sample per row, " +
					"optional header), with the options as query parameters. Every row is validated like a predict; a bad row " +
					"refuses the whole submission (422 naming the first bad rows) and nothing is stored. Answers 202 at once.",
				Tags: []string{"jobs"}, Parameters: append(optionParams, requestIDParam...), Security: apiKeySecurity,
				RequestBody: &requestBody{Required: true, Content: map[string]mediaType{
					"application/json":     {Schema: ref("JobRequest"), Example: map[string]any{"samples": []any{map[string]any{"features": exampleInput()["features"]}}, "model_version": "latest"}},
					"application/x-ndjson": {Schema: &schema{Type: "string", Description: "One sample per line."}},
					"text/csv":             {Schema: &schema{Type: "string", Description: "One sample per row."}},
				}},
				Responses: with(map[string]response{
					"202": {Description: "The job was stored and queued.", Headers: map[string]header{
						"Location":     {Description: "The job's URL.", Schema: &schema{Type: "string"}},
						"X-Request-ID": {Ref: "#/components/headers/X-Request-ID"},
					}, Content: jsonContent(ref("Job"), nil)},
					"400": respRef("BadRequest"),
					"404": respRef("ModelNotFound"),
					"409": respRef("Conflict"),
					"413": respRef("PayloadTooLarge"),
					"415": respRef("UnsupportedMediaType"),
					"422": respRef("UnprocessableEntity"),
					"429": respRef("QuotaExceeded"),
				}, reads),
			},
			"get": {
				OperationID: "listJobs", Summary: "The API key's jobs, newest first", Tags: []string{"jobs"},
				Parameters: append([]parameter{
					q("status", "Only jobs in this status.", &schema{Type: "string", Enum: []any{"queued", "running", "succeeded", "failed", "cancelled"}}),
					limitParam(defaultJobsPage, maxJobsPage),
					q("cursor", "next_cursor of the previous page.", &schema{Type: "string"}),
				}, requestIDParam...),
				Security: apiKeySecurity,
				Responses: with(map[string]response{
					"200": okResponse("A page of jobs.", ref("JobList"), nil),
					"422": respRef("UnprocessableEntity"),
					"429": respRef("QuotaExceeded"),
				}, reads),
			},
		},
		"/api/v1/jobs/{id}": {"get": {
			OperationID: "getJob", Summary: "A job: status, counts, progress, timings, webhook state", Tags: []string{"jobs"},
			Parameters: append([]parameter{jobIDParam}, requestIDParam...), Security: apiKeySecurity,
			Responses: with(map[string]response{"200": okResponse("The job.", ref("Job"), nil)}, reads),
		}},
		"/api/v1/jobs/{id}/results": {"get": {
			OperationID: "getJobResults", Summary: "A job's results in item order",
			Description: "A page of results (JSON), or with Accept: application/x-ndjson or text/csv every result streamed. " +
				"Results of a running or cancelled job are those finished so far.",
			Tags: []string{"jobs"},
			Parameters: append([]parameter{jobIDParam,
				limitParam(defaultResultsPage, maxResultsPage),
				q("cursor", "next_cursor of the previous page.", &schema{Type: "string"}),
			}, requestIDParam...),
			Security: apiKeySecurity,
			Responses: with(map[string]response{
				"200": {Description: "Results.", Headers: requestIDHeader, Content: map[string]mediaType{
					"application/json":     {Schema: ref("ResultPage")},
					"application/x-ndjson": {Schema: &schema{Type: "string", Description: "One JobResult per line."}},
					"text/csv":             {Schema: &schema{Type: "string"}},
				}},
				"422": respRef("UnprocessableEntity"),
			}, reads),
		}},
		"/api/v1/jobs/{id}/events": {"get": {
			OperationID: "streamJobEvents", Summary: "Server-Sent Events: progress, then the final status",
			Description: "`event: progress` whenever the counts or status change, with `id:` the number of items done " +
				"(Last-Event-ID resumes); a final `event: status` at a terminal state, then the stream ends.",
			Tags: []string{"jobs"}, Parameters: append([]parameter{jobIDParam,
				{Name: "Last-Event-ID", In: "header", Description: "Resume after this event id.", Schema: &schema{Type: "string"}},
			}, requestIDParam...), Security: apiKeySecurity,
			Responses: with(map[string]response{"200": {Description: "The event stream.", Headers: requestIDHeader,
				Content: map[string]mediaType{"text/event-stream": {Schema: &schema{Type: "string"}}}}}, reads),
		}},
		"/api/v1/jobs/{id}/cancel": {"post": {
			OperationID: "cancelJob", Summary: "Cancel a queued or running job",
			Description: "Chunks not yet started do nothing; finished results stay readable. A terminal job is a 409.",
			Tags:        []string{"jobs"}, Parameters: append([]parameter{jobIDParam}, requestIDParam...), Security: apiKeySecurity,
			Responses: with(map[string]response{
				"200": okResponse("The cancelled job.", ref("Job"), nil),
				"409": respRef("Conflict"),
			}, reads),
		}},
	}
}

// maxJobMetadata is the most metadata pairs a job carries (the job feature's rule).
const maxJobMetadata = 16

// priorityEnum is the schema of a job's priority.
func priorityEnum() *schema {
	return &schema{Type: "string", Enum: []any{job.PriorityHigh, job.PriorityNormal, job.PriorityLow}, Default: job.PriorityNormal,
		Description: "Orders the API key's own jobs (high first); across keys capacity is shared by weight."}
}

// jobSchemas are the job route schemas; maxSamples bounds a JSON body's samples.
func jobSchemas(maxSamples int) map[string]*schema {
	nullable := func(t string) any { return []string{t, "null"} }
	return map[string]*schema{
		"JobRequest": robustNeedsLatest(&schema{
			Type: "object", Required: []string{"samples"}, AdditionalProperties: false,
			Properties: map[string]*schema{
				"samples": {Type: "array", MinItems: ptr(1), MaxItems: ptr(maxSamples),
					Description: "At most MAX_JOB_SAMPLES samples: " + strconv.Itoa(maxSamples) + " on this server (the default is " +
						strconv.Itoa(job.DefaultMaxSamples) + "; the operator may configure another). Larger jobs go as NDJSON or CSV.",
					Items: &schema{Type: "object", Required: []string{"features"}, AdditionalProperties: false,
						Properties: map[string]*schema{"features": featuresSchema("As many as the model's input size, the same in every sample.")}}},
				"model_version":        modelVersionSchema(nullable("string")),
				"preprocessing":        preprocessingSchema(true),
				"confidence_threshold": thresholdSchema(nullable("number"), "Items less confident than this are flagged."),
				"webhook_url":          {Type: nullable("string"), Format: "uri"},
				"priority":             priorityEnum(),
				"metadata": {Type: nullable("object"), MaxProperties: ptr(maxJobMetadata),
					Description:          "At most 16 pairs; a key of 1 to 64 bytes, a value of at most 512 bytes (UTF-8).",
					PropertyNames:        &schema{MinLength: ptr(1), MaxLength: ptr(64)},
					AdditionalProperties: &schema{Type: "string", MaxLength: ptr(512)}},
			},
		}),
		"Job": {
			Type: "object",
			Required: []string{"id", "status", "model_version", "total", "processed", "failed", "progress",
				"created_at", "started_at", "finished_at", "error", "webhook", "metadata"},
			Properties: map[string]*schema{
				"id":                   {Type: "string", Format: "uuid"},
				"status":               {Type: "string", Enum: []any{"queued", "running", "succeeded", "failed", "cancelled"}},
				"priority":             priorityEnum(),
				"model_version":        {Type: "string"},
				"preprocessing":        {Type: "string"},
				"confidence_threshold": {Type: "number"},
				"total":                {Type: "integer"},
				"processed":            {Type: "integer"},
				"failed":               {Type: "integer"},
				"low_confidence":       {Type: "integer"},
				"progress":             {Type: "number", Description: "(processed + failed) / total."},
				"chunks_total":         {Type: "integer"},
				"chunks_done":          {Type: "integer"},
				"input_format":         {Type: "string", Enum: []any{"json", "ndjson", "csv"}},
				"created_at":           {Type: "string", Format: "date-time"},
				"started_at":           {Type: nullable("string"), Format: "date-time"},
				"finished_at":          {Type: nullable("string"), Format: "date-time"},
				"deadline_at":          {Type: "string", Format: "date-time"},
				"error":                {Type: nullable("string")},
				"webhook": {Type: nullable("object"), Properties: map[string]*schema{
					"url":          {Type: "string"},
					"status":       {Type: "string", Enum: []any{"none", "pending", "delivered", "failed"}},
					"attempts":     {Type: "integer"},
					"last_status":  {Type: "integer"},
					"last_error":   {Type: "string"},
					"delivered_at": {Type: "string", Format: "date-time"},
				}},
				"metadata": {Type: "object", AdditionalProperties: &schema{Type: "string"}},
				"replay_of": {Type: "string", Format: "uuid",
					Description: "The job whose stored inputs this job replays (POST /api/v1/jobs/{id}/replay)."},
			},
		},
		"StoredPrediction": {Type: "object", Required: []string{"id", "request_id", "prediction", "model_version", "created_at"},
			Properties: map[string]*schema{
				"id":                   {Type: "string", Format: "uuid", Description: "The server's id of the prediction (a UUIDv7), the id of its predict answer."},
				"request_id":           {Type: "string", Description: "The X-Request-ID it was sent with; not unique (a client may reuse one)."},
				"user_id":              {Type: "string"},
				"input_features":       {Type: "array", Items: &schema{Type: "number"}},
				"prediction":           {Type: "number"},
				"confidence":           {Type: "number"},
				"prediction_class":     {Type: "string"},
				"model_version":        {Type: "string"},
				"preprocessing":        {Type: "string"},
				"confidence_threshold": {Type: "number"},
				"cached":               {Type: "boolean"},
				"latency_ms":           {Type: "number"},
				"status":               {Type: "string"},
				"created_at":           {Type: "string", Format: "date-time"},
				"updated_at":           {Type: "string", Format: "date-time"},
			}},
		"PredictionList": {Type: "object", Required: []string{"predictions"}, Properties: map[string]*schema{
			"predictions": {Type: "array", Items: ref("StoredPrediction")}, "next_cursor": {Type: "string"},
		}},
		"JobList": {Type: "object", Required: []string{"jobs"}, Properties: map[string]*schema{
			"jobs": {Type: "array", Items: ref("Job")}, "next_cursor": {Type: "string"},
		}},
		"JobResult": {Type: "object", Required: []string{"index", "prediction", "confidence", "low_confidence", "model_version"},
			Properties: map[string]*schema{
				"index":            {Type: "integer"},
				"prediction":       {Type: nullable("number")},
				"confidence":       {Type: nullable("number")},
				"prediction_class": {Type: "string", Enum: []any{prediction.ClassPositive, prediction.ClassNegative}},
				"low_confidence":   {Type: "boolean"},
				"model_version":    {Type: "string"},
				"error":            {Type: "string"},
			}},
		"ResultPage": {Type: "object", Required: []string{"results"}, Properties: map[string]*schema{
			"results": {Type: "array", Items: ref("JobResult")}, "next_cursor": {Type: "string"},
		}},
	}
}

// jobResponses are the problem responses only the job routes have.
func jobResponses() map[string]response {
	return map[string]response{
		"JobNotFound": problemResponse("No job with this id belongs to the API key.", http.StatusNotFound, slugJobNotFound,
			"Job not found", "No job with this id belongs to the API key.", nil, nil),
		"Conflict": problemResponse("The job's state, or an Idempotency-Key in flight, does not allow the request.",
			http.StatusConflict, slugConflict, "Conflict", "The job is already finished: job is succeeded.", nil, nil),
		"Unavailable": problemResponse("A store the request needs cannot be reached; nothing was recorded.",
			http.StatusServiceUnavailable, slugUnavailable, "Service unavailable",
			"A store the request needs cannot be reached; nothing was recorded. Retry shortly.", nil,
			map[string]header{"Retry-After": {Description: "Seconds to wait before retrying.", Schema: &schema{Type: "integer"}}}),
	}
}
