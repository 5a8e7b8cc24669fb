package httpapi

import (
	"net/http"
)

// replayPaths documents the replay routes (none when Deps.Replays is nil).
func (s *Server) replayPaths() map[string]map[string]operation {
	if s.deps.Replays == nil {
		return nil
	}
	jobIDParam := parameter{Name: "id", In: "path", Required: true, Description: "The job id.",
		Schema: &schema{Type: "string", Format: "uuid"}}
	errs := map[string]response{
		"401": respRef("Unauthorized"),
		"403": respRef("Forbidden"),
		"404": respRef("JobNotFound"),
		"409": respRef("ReplayConflict"),
		"429": respRef("TooManyRequests"),
		"500": respRef("InternalError"),
		"503": respRef("Unavailable"),
	}
	with := func(extra map[string]response) map[string]response {
		out := map[string]response{}
		for k, v := range errs {
			out[k] = v
		}
		for k, v := range extra {
			out[k] = v
		}
		return out
	}
	return map[string]map[string]operation{
		"/api/v1/jobs/{id}/replay": {"post": {
			OperationID: "replayJob", Summary: "Run a finished job's stored inputs again on another model version",
			Description: "Makes a new job (202, Location its URL) over the inputs the finished job stored: no upload. " +
				"Options left out take the original's (preprocessing, confidence_threshold, priority). The new job has " +
				"`replay_of` and is queued like a submission (quotas, fair share). 409 while the original is queued or " +
				"running, or when its inputs are gone; 404 for another key's job.",
			Tags: []string{"jobs"}, Parameters: append([]parameter{jobIDParam}, requestIDParam...), Security: apiKeySecurity,
			RequestBody: &requestBody{Required: true, Content: jsonContent(ref("ReplayRequest"), map[string]any{"model_version": "v1.0.0"})},
			Responses: with(map[string]response{
				"202": okResponse("The replay job.", ref("Job"), nil),
				"400": respRef("BadRequest"),
				"415": respRef("UnsupportedMediaType"),
				"422": respRef("UnprocessableEntity"),
			}),
		}},
		"/api/v1/jobs/{id}/comparison": {"get": {
			OperationID: "compareJob", Summary: "A replay compared with the job it replays",
			Description: "Over the items both jobs answered: the agreement rate (same class, p > 0.5), and the " +
				"distribution of |Δp| (mean, p50, p90, p99, max, a histogram). `complete` is true once both jobs are " +
				"finished. 409 for a job that is not a replay.",
			Tags: []string{"jobs"}, Parameters: append([]parameter{jobIDParam}, requestIDParam...), Security: apiKeySecurity,
			Responses: with(map[string]response{"200": okResponse("The comparison.", ref("JobComparison"), nil)}),
		}},
	}
}

// replaySchemas are the replay routes' schemas.
func replaySchemas() map[string]*schema {
	num := &schema{Type: "number"}
	compared := &schema{Type: "object", Required: []string{"id", "model_version", "status", "total", "answered"},
		Properties: map[string]*schema{
			"id": {Type: "string", Format: "uuid"}, "model_version": {Type: "string"},
			"status": {Type: "string"}, "total": {Type: "integer"},
			"answered": {Type: "integer", Description: "Items with a prediction."},
		}}
	return map[string]*schema{
		"ReplayRequest": {Type: "object", Required: []string{"model_version"}, AdditionalProperties: false,
			Properties: map[string]*schema{
				"model_version":        modelVersionSchema("string"),
				"preprocessing":        preprocessingSchema(true),
				"confidence_threshold": thresholdSchema("number", "Items less confident than this are flagged (default: the original's)."),
				"webhook_url":          {Type: "string", Format: "uri"},
				"priority":             priorityEnum(),
				"metadata": {Type: "object", MaxProperties: ptr(maxJobMetadata),
					AdditionalProperties: &schema{Type: "string", MaxLength: ptr(512)}},
			}},
		"JobComparison": {Type: "object",
			Required: []string{"job_id", "replay_of", "original", "replay", "complete", "compared", "agreed", "agreement_rate", "abs_diff"},
			Properties: map[string]*schema{
				"job_id":         {Type: "string", Format: "uuid", Description: "The replay."},
				"replay_of":      {Type: "string", Format: "uuid", Description: "The job it replays."},
				"original":       compared,
				"replay":         compared,
				"complete":       {Type: "boolean", Description: "Both jobs are finished: the figures are final."},
				"compared":       {Type: "integer", Description: "Items both jobs answered."},
				"agreed":         {Type: "integer", Description: "Of them, items of the same class."},
				"agreement_rate": num,
				"abs_diff": {Type: "object", Required: []string{"mean", "p50", "p90", "p99", "max", "histogram"},
					Properties: map[string]*schema{
						"mean": num, "p50": num, "p90": num, "p99": num, "max": num,
						"histogram": {Type: "array", Items: &schema{Type: "object", Required: []string{"from", "to", "count"},
							Properties: map[string]*schema{"from": num, "to": num, "count": {Type: "integer"}}}},
					}},
			}},
	}
}

// replayResponses are the problem responses of the replay routes.
func replayResponses() map[string]response {
	return map[string]response{
		"ReplayConflict": problemResponse("The job cannot be replayed (not finished, or its inputs are gone), or is not a replay.",
			http.StatusConflict, slugConflict, "Job not finished",
			"Only a finished job can be replayed; this one is running. Retry once it ends.", nil, nil),
	}
}
