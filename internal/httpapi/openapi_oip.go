package httpapi

import (
	"github.com/predq/predq/internal/oip"
)

// oipPaths documents the /v2 routes (the Open Inference Protocol's REST binding).
func (s *Server) oipPaths() map[string]map[string]operation {
	if s.deps.OIP == nil {
		return nil
	}
	tags := []string{"oip"}
	errResp := func(desc string) response {
		return response{Description: desc, Headers: requestIDHeader, Content: jsonContent(ref("OIPError"),
			map[string]any{"error": "unknown model \"iris\""})}
	}
	keyedErrors := map[string]response{
		"401": errResp("No valid API key."),
		"403": errResp("The API key lacks the predict scope."),
		"429": errResp("The API key's rate limit is exceeded (Retry-After)."),
		"500": errResp("The server failed; the body carries no internals."),
		"503": errResp("No model is loaded, or a store the request needs is down (Retry-After)."),
	}
	with := func(r map[string]response) map[string]response {
		for k, v := range keyedErrors {
			if _, ok := r[k]; !ok {
				r[k] = v
			}
		}
		return r
	}
	nameParam := parameter{Name: "name", In: "path", Required: true, Description: "The model's name (sonar).",
		Schema: &schema{Type: "string", Examples: []any{"sonar"}}}
	versionParam := parameter{Name: "version", In: "path", Required: true, Description: "A registered version; without it, the latest alias.",
		Schema: &schema{Type: "string", Examples: []any{"v1.0.0"}}}
	preferParam := parameter{Name: "Prefer", In: "header", Description: "respond-async (RFC 7240): answer 202 at once and " +
		"run the inference as a job; its result is GET /v2/jobs/{id}/result. Without it, more than MAX_BATCH_SIZE rows is a 400.",
		Schema: &schema{Type: "string", Examples: []any{"respond-async"}}}
	paths := map[string]map[string]operation{
		"/v2/health/live": {"get": {
			OperationID: "oipServerLive", Summary: "OIP server live", Tags: tags, Parameters: requestIDParam, Security: openSecurity,
			Responses: map[string]response{"200": okResponse("The server is live.", ref("OIPLive"), map[string]any{"live": true})},
		}},
		"/v2/health/ready": {"get": {
			OperationID: "oipServerReady", Summary: "OIP server ready", Tags: tags, Parameters: requestIDParam, Security: openSecurity,
			Description: "Ready when the process can serve predictions (as GET /health/ready says).",
			Responses: map[string]response{
				"200": okResponse("Ready.", ref("OIPReady"), map[string]any{"live": true, "ready": true}),
				"503": {Description: "Not ready.", Headers: requestIDHeader, Content: jsonContent(ref("OIPReady"), nil)},
			},
		}},
	}
	serverMeta := operation{
		OperationID: "oipServerMetadata", Summary: "OIP server metadata", Tags: tags, Parameters: requestIDParam, Security: apiKeySecurity,
		Responses: with(map[string]response{"200": okResponse("The server.", ref("OIPServerMetadata"),
			map[string]any{"name": oip.DefaultServerName, "version": s.cfg.Version, "extensions": []string{}})}),
	}
	paths["/v2"] = map[string]operation{"get": serverMeta}
	slash := serverMeta
	slash.OperationID = "oipServerMetadataSlash"
	slash.Summary = "OIP server metadata (the protocol's file writes /v2/)"
	paths["/v2/"] = map[string]operation{"get": slash}
	for _, versioned := range []bool{false, true} {
		base, params, suffix := "/v2/models/{name}", []parameter{nameParam}, ""
		if versioned {
			base, params, suffix = base+"/versions/{version}", []parameter{nameParam, versionParam}, "Version"
		}
		params = append(params, requestIDParam...)
		notFound := errResp("No such model or version.")
		paths[base] = map[string]operation{"get": {
			OperationID: "oipModelMetadata" + suffix, Summary: "OIP model metadata", Tags: tags, Parameters: params, Security: apiKeySecurity,
			Responses: with(map[string]response{"200": okResponse("The model: inputs, outputs, versions.", ref("OIPModelMetadata"), nil),
				"404": notFound}),
		}}
		paths[base+"/ready"] = map[string]operation{"get": {
			OperationID: "oipModelReady" + suffix, Summary: "OIP model ready", Tags: tags, Parameters: params, Security: apiKeySecurity,
			Responses: with(map[string]response{"200": okResponse("Loaded and ready.", ref("OIPModelReady"), map[string]any{"name": "sonar", "ready": true}),
				"404": notFound}),
		}}
		paths[base+"/infer"] = map[string]operation{"post": {
			OperationID: "oipInfer" + suffix, Summary: "OIP inference", Tags: tags,
			Description: "One input tensor, features (FP32 or FP64), shape [N, 60] or [60], data flat or nested (row-major). " +
				"Parameters preprocessing and confidence_threshold as on /api/v1/predict. Outputs probability (FP64), class " +
				"(BYTES) and confidence (FP64), shape [N]; outputs selects some. The same predict feature as /api/v1 " +
				"(validation, cache, recording, alerts), one vectorised inference per request. Idempotency-Key as on /api/v1.",
			Parameters: append([]parameter{preferParam, idempotencyKeyParam}, params...), Security: apiKeySecurity,
			RequestBody: &requestBody{Required: true, Content: jsonContent(ref("OIPInferenceRequest"), map[string]any{
				"id": "42", "inputs": []any{map[string]any{"name": "features", "datatype": "FP32", "shape": []int{1, 60},
					"data": exampleInput()["features"]}}})},
			Responses: with(map[string]response{
				"200": okResponse("The inference.", ref("OIPInferenceResponse"), nil),
				"202": {Description: "Prefer: respond-async: the inference is a job (Preference-Applied: respond-async).",
					Headers: map[string]header{
						"Location":           {Description: "The job: /v2/jobs/{id}.", Schema: &schema{Type: "string"}},
						"Preference-Applied": {Description: "respond-async", Schema: &schema{Type: "string"}},
						"X-Request-ID":       {Ref: "#/components/headers/X-Request-ID"},
					}, Content: jsonContent(ref("OIPJob"), nil)},
				"400": errResp("The request breaks a rule of the protocol or of the input."),
				"403": errResp("The API key lacks the predict scope (and, for respond-async, the jobs scope)."),
				"404": notFound,
				"409": errResp("An Idempotency-Key request is still in flight."),
				"413": errResp("The body is larger than the server accepts."),
				"415": errResp("The body is not application/json."),
			}),
		}}
	}
	jobID := parameter{Name: "id", In: "path", Required: true, Schema: &schema{Type: "string", Format: "uuid"}}
	jobErrors := func(r map[string]response) map[string]response {
		r = with(r)
		r["403"] = errResp("The API key lacks the jobs scope.")
		r["404"] = errResp("No asynchronous inference with this id belongs to the API key.")
		return r
	}
	paths["/v2/jobs/{id}"] = map[string]operation{"get": {
		OperationID: "oipGetJob", Summary: "An asynchronous inference's state", Tags: tags,
		Parameters: append([]parameter{jobID}, requestIDParam...), Security: apiKeySecurity,
		Responses: jobErrors(map[string]response{"200": okResponse("The job.", ref("OIPJob"), nil)}),
	}}
	paths["/v2/jobs/{id}/result"] = map[string]operation{"get": {
		OperationID: "oipGetJobResult", Summary: "An asynchronous inference's $inference_response", Tags: tags,
		Parameters: append([]parameter{jobID}, requestIDParam...), Security: apiKeySecurity,
		Responses: jobErrors(map[string]response{
			"200": okResponse("The inference response the synchronous call would have returned.", ref("OIPInferenceResponse"), nil),
			"409": errResp("The job has not succeeded (yet): queued or running (Retry-After), failed or cancelled."),
		}),
	}}
	return paths
}

// oipSchemas are the /v2 schemas, after the protocol's own (open_inference_rest.yaml).
func oipSchemas() map[string]*schema {
	params := &schema{Type: "object", Description: "Name → string, number or boolean. Known: preprocessing, confidence_threshold.",
		AdditionalProperties: &schema{Type: []string{"string", "number", "boolean"}}}
	tensorData := &schema{Type: "array", Description: "Elements, flat or nested, row-major."}
	shape := &schema{Type: "array", Items: &schema{Type: "integer"}}
	tensorMeta := &schema{Type: "object", Required: []string{"name", "datatype", "shape"}, Properties: map[string]*schema{
		"name": {Type: "string"}, "datatype": {Type: "string"}, "shape": shape}}
	return map[string]*schema{
		"OIPError": {Type: "object", Required: []string{"error"}, Properties: map[string]*schema{"error": {Type: "string"}}},
		"OIPLive":  {Type: "object", Required: []string{"live"}, Properties: map[string]*schema{"live": {Type: "boolean"}}},
		"OIPReady": {Type: "object", Required: []string{"live", "ready"}, Properties: map[string]*schema{
			"live": {Type: "boolean"}, "ready": {Type: "boolean"}}},
		"OIPModelReady": {Type: "object", Required: []string{"name", "ready"}, Properties: map[string]*schema{
			"name": {Type: "string"}, "ready": {Type: "boolean"}}},
		"OIPServerMetadata": {Type: "object", Required: []string{"name", "version", "extensions"}, Properties: map[string]*schema{
			"name": {Type: "string"}, "version": {Type: "string"}, "extensions": {Type: "array", Items: &schema{Type: "string"}}}},
		"OIPModelMetadata": {Type: "object", Required: []string{"name", "platform", "inputs", "outputs"}, Properties: map[string]*schema{
			"name": {Type: "string"}, "versions": {Type: "array", Items: &schema{Type: "string"}}, "platform": {Type: "string"},
			"inputs": {Type: "array", Items: tensorMeta}, "outputs": {Type: "array", Items: tensorMeta}}},
		"OIPInferenceRequest": {Type: "object", Required: []string{"inputs"}, AdditionalProperties: false, Properties: map[string]*schema{
			"id":         {Type: "string", MaxLength: ptr(oip.MaxIDLength)},
			"parameters": params,
			"inputs": {Type: "array", Items: &schema{Type: "object", Required: []string{"name", "shape", "datatype", "data"},
				AdditionalProperties: false, Properties: map[string]*schema{
					"name": {Type: "string", Const: oip.InputFeatures}, "shape": shape,
					"datatype":   {Type: "string", Enum: []any{oip.FP32, oip.FP64}},
					"parameters": params, "data": tensorData}}},
			"outputs": {Type: "array", Items: &schema{Type: "object", Required: []string{"name"}, AdditionalProperties: false,
				Properties: map[string]*schema{"name": {Type: "string", Enum: []any{oip.OutputProbability, oip.OutputClass, oip.OutputConfidence}},
					"parameters": params}}},
		}},
		"OIPInferenceResponse": {Type: "object", Required: []string{"model_name", "outputs"}, Properties: map[string]*schema{
			"model_name": {Type: "string"}, "model_version": {Type: "string"}, "id": {Type: "string"}, "parameters": params,
			"outputs": {Type: "array", Items: &schema{Type: "object", Required: []string{"name", "shape", "datatype", "data"},
				Properties: map[string]*schema{"name": {Type: "string"}, "shape": shape, "datatype": {Type: "string"},
					"parameters": params, "data": tensorData}}},
		}},
		"OIPJob": {Type: "object", Required: []string{"id", "status", "model_name", "model_version", "total", "processed", "failed", "progress", "created_at", "result"},
			Properties: map[string]*schema{
				"id": {Type: "string", Format: "uuid"}, "status": {Type: "string", Enum: []any{"queued", "running", "succeeded", "failed", "cancelled"}},
				"model_name": {Type: "string"}, "model_version": {Type: "string"}, "request_id": {Type: "string", Description: "The inference request's id."},
				"total": {Type: "integer"}, "processed": {Type: "integer"}, "failed": {Type: "integer"}, "progress": {Type: "number"},
				"created_at": {Type: "string", Format: "date-time"}, "finished_at": {Type: []string{"string", "null"}, Format: "date-time"},
				"error": {Type: []string{"string", "null"}}, "result": {Type: "string", Description: "The URL of the result."},
			}},
	}
}
