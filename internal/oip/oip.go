// Package oip is the Open Inference Protocol v2 ("KServe V2") over the predict feature, free
// of any transport: the protocol's messages as Go types, its errors with their kinds, and a
// Service whose methods are the protocol's calls (server and model metadata, liveness and
// readiness, infer). The REST edge (internal/httpapi, /v2) and the gRPC edge map these types
// and error kinds to their wire forms; neither re-implements a rule.
//
// Infer is the predict feature: it turns the request's tensor into the rows of one
// prediction.Service call (Predict for one row, PredictBatch for more), so that validation,
// the cache, the recording of every computed answer, the low-confidence alerts and the
// metrics are the ones /api/v1/predict uses, and an answer agrees with /api/v1's to the bit.
//
// The model: the artifacts' name (inference.Model.Name, "sonar") is the model name; the
// registered versions are its versions; a request without a version means the "latest"
// alias. It takes one input tensor, "features", FP32 or FP64, shape [N, input size] or
// [input size]; it answers three output tensors of shape [N]: "probability" (FP64, the
// positive class's probability), "class" (BYTES, "positive" or "negative") and "confidence"
// (FP64, max(p, 1-p)). Request parameters: "preprocessing" (string) and
// "confidence_threshold" (number), as on /api/v1.
package oip

import (
	"errors"
	"fmt"
)

// Datatypes of the protocol's tensors.
const (
	BOOL   = "BOOL"
	UINT8  = "UINT8"
	UINT16 = "UINT16"
	UINT32 = "UINT32"
	UINT64 = "UINT64"
	INT8   = "INT8"
	INT16  = "INT16"
	INT32  = "INT32"
	INT64  = "INT64"
	FP16   = "FP16"
	FP32   = "FP32"
	FP64   = "FP64"
	BYTES  = "BYTES"
)

// Datatypes lists every datatype the protocol defines.
func Datatypes() []string {
	return []string{BOOL, UINT8, UINT16, UINT32, UINT64, INT8, INT16, INT32, INT64, FP16, FP32, FP64, BYTES}
}

// Names of the model's tensors and of the request parameters it reads.
const (
	InputFeatures     = "features"
	OutputProbability = "probability"
	OutputClass       = "class"
	OutputConfidence  = "confidence"

	ParamPreprocessing       = "preprocessing"
	ParamConfidenceThreshold = "confidence_threshold"
)

// Outputs lists the model's output tensors in the order a response carries them.
func Outputs() []string { return []string{OutputProbability, OutputClass, OutputConfidence} }

// ServerMetadata is the server metadata response ($metadata_server_response).
type ServerMetadata struct {
	Name       string   `json:"name"`
	Version    string   `json:"version"`
	Extensions []string `json:"extensions"`
}

// TensorMetadata describes one input or output of a model ($metadata_tensor). -1 in Shape is
// a dimension of any size (the batch).
type TensorMetadata struct {
	Name     string  `json:"name"`
	Datatype string  `json:"datatype"`
	Shape    []int64 `json:"shape"`
}

// ModelMetadata is the model metadata response ($metadata_model_response).
type ModelMetadata struct {
	Name     string           `json:"name"`
	Versions []string         `json:"versions,omitempty"`
	Platform string           `json:"platform"`
	Inputs   []TensorMetadata `json:"inputs"`
	Outputs  []TensorMetadata `json:"outputs"`
}

// Parameters are the protocol's parameters: values are bool, int64, float64 or string (the
// REST edge decodes JSON numbers as float64; the gRPC edge has int64, uint64 and double
// parameters and passes uint64 as int64 when it fits).
type Parameters map[string]any

// InferRequest is an inference request ($inference_request), its data decoded by the edge.
type InferRequest struct {
	ID         string
	Parameters Parameters
	Inputs     []InputTensor
	Outputs    []RequestedOutput
}

// InputTensor is one input tensor. Data holds its elements flattened in row-major order as
// float64: the REST edge flattens nested JSON arrays; the gRPC edge widens fp32_contents or
// the raw little-endian bytes. Infer rounds the elements of an FP32 tensor to float32 (a
// JSON number given for an FP32 tensor is read as the float32 nearest to it).
type InputTensor struct {
	Name       string
	Datatype   string
	Shape      []int64
	Parameters Parameters
	Data       []float64
}

// RequestedOutput names one output the client wants ($request_output).
type RequestedOutput struct {
	Name       string
	Parameters Parameters
}

// InferResponse is an inference response ($inference_response).
type InferResponse struct {
	ModelName    string
	ModelVersion string
	ID           string
	Parameters   Parameters
	Outputs      []OutputTensor
}

// OutputTensor is one output tensor: FP64 holds the elements of an FP64 tensor, Bytes those
// of a BYTES tensor (each a UTF-8 string).
type OutputTensor struct {
	Name       string
	Datatype   string
	Shape      []int64
	Parameters Parameters
	FP64       []float64
	Bytes      []string
}

// Kind classifies an Error; each edge maps it to its status (REST / gRPC).
type Kind int

// Error kinds.
const (
	KindInternal        Kind = iota // 500 / INTERNAL: a defect or a failed dependency
	KindInvalid                     // 400 / INVALID_ARGUMENT: the request breaks a rule
	KindNotFound                    // 404 / NOT_FOUND: no such model or version (or job)
	KindUnavailable                 // 503 / UNAVAILABLE: the server cannot answer now
	KindUnauthenticated             // 401 / UNAUTHENTICATED: no valid API key
)

// String names the kind.
func (k Kind) String() string {
	switch k {
	case KindInvalid:
		return "invalid argument"
	case KindNotFound:
		return "not found"
	case KindUnavailable:
		return "unavailable"
	case KindUnauthenticated:
		return "unauthenticated"
	default:
		return "internal"
	}
}

// Error is an error of the protocol: its kind and the message the client reads (the "error"
// of a REST body, the message of a gRPC status). Err, when set, is the cause (for logs; an
// internal cause never reaches the client).
type Error struct {
	Kind    Kind
	Message string
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil && e.Kind == KindInternal {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// KindOf returns the kind of err: that of the *Error it wraps, else KindInternal.
func KindOf(err error) Kind {
	if e, ok := errors.AsType[*Error](err); ok {
		return e.Kind
	}
	return KindInternal
}

// MessageOf returns what a client may read of err: the message of the *Error it wraps, or a
// generic message for anything else (an internal error's detail stays in the logs).
func MessageOf(err error) string {
	if e, ok := errors.AsType[*Error](err); ok && e.Kind != KindInternal {
		return e.Message
	}
	return "internal error"
}

// Invalid returns a KindInvalid error.
func Invalid(format string, args ...any) *Error {
	return &Error{Kind: KindInvalid, Message: fmt.Sprintf(format, args...)}
}

// NotFound returns a KindNotFound error.
func NotFound(format string, args ...any) *Error {
	return &Error{Kind: KindNotFound, Message: fmt.Sprintf(format, args...)}
}

// Unavailable returns a KindUnavailable error wrapping cause (which may be nil).
func Unavailable(cause error, format string, args ...any) *Error {
	return &Error{Kind: KindUnavailable, Message: fmt.Sprintf(format, args...), Err: cause}
}

// Unauthenticated returns a KindUnauthenticated error.
func Unauthenticated(format string, args ...any) *Error {
	return &Error{Kind: KindUnauthenticated, Message: fmt.Sprintf(format, args...)}
}
