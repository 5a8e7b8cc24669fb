package httpapi

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	"github.com/labstack/echo/v4"

	"github.com/predq/predq/internal/oip"
	"github.com/predq/predq/internal/prediction"
)

// The Open Inference Protocol's REST binding on /v2 (internal/oip is the protocol; this
// file is its wire form). Every error on /v2 is the protocol's {"error": "..."} body (see
// writeOIPError), never problem+json.

// oipPrefix starts every path of the protocol.
const oipPrefix = "/v2"

// isOIPPath reports whether path belongs to the protocol's REST binding.
func isOIPPath(path string) bool {
	return path == oipPrefix || strings.HasPrefix(path, oipPrefix+"/")
}

// oipError is the protocol's error body.
type oipError struct {
	Error string `json:"error"`
}

// oipStatus maps an error kind to its HTTP status.
func oipStatus(k oip.Kind) int {
	switch k {
	case oip.KindInvalid:
		return http.StatusBadRequest
	case oip.KindNotFound:
		return http.StatusNotFound
	case oip.KindUnavailable:
		return http.StatusServiceUnavailable
	case oip.KindUnauthenticated:
		return http.StatusUnauthorized
	}
	return http.StatusInternalServerError
}

// oipErrorFor maps any error of a /v2 request to its status, message, extra headers and
// whether it is a server fault: *oip.Error by its kind; anything else (bad JSON, a body too
// large, no API key, a rate limit, an Idempotency-Key conflict) as problemFor classifies
// it, its detail and field problems becoming the message, and 422 becoming the protocol's 400.
func oipErrorFor(err error) (status int, msg string, header http.Header, serverFault bool) {
	if oe, ok := errors.AsType[*oip.Error](err); ok {
		status = oipStatus(oe.Kind)
		if oe.Kind == oip.KindUnavailable {
			header = retryAfter(retryAfterUnavailable)
		}
		return status, oip.MessageOf(err), header, status >= 500 && oe.Kind != oip.KindUnavailable
	}
	p, header, serverFault := problemFor(err)
	status = p.Status
	if status == http.StatusUnprocessableEntity {
		status = http.StatusBadRequest
	}
	msg = p.Detail
	if msg == "" {
		msg = p.Title
	}
	for i, f := range p.Errors {
		if i == maxProblems {
			msg += fmt.Sprintf(" (and %d more)", len(p.Errors)-maxProblems)
			break
		}
		msg += " " + f.Field + ": " + f.Message + "."
	}
	return status, msg, header, serverFault
}

// maxProblems is how many field problems a /v2 error message names.
const maxProblems = 5

// writeOIPError writes err as the protocol's error body.
func (s *Server) writeOIPError(err error, c echo.Context) {
	req := c.Request()
	ctx := req.Context()
	status, msg, header, serverFault := oipErrorFor(err)
	if status == http.StatusRequestEntityTooLarge && strings.HasSuffix(req.URL.Path, "/infer") && !prefersAsync(req.Header) {
		msg += " More rows than a synchronous inference takes can be sent with the header \"Prefer: respond-async\"."
	}
	if serverFault {
		s.log.ErrorContext(ctx, "request failed", "error", err.Error(), "status", status, "method", req.Method,
			"path", req.URL.Path, "request_id", requestIDFrom(ctx))
	}
	if c.Response().Committed {
		return
	}
	for k, vs := range header {
		c.Response().Header()[k] = vs
	}
	if wErr := c.JSON(status, oipError{Error: msg}); wErr != nil {
		s.log.DebugContext(ctx, "write error", "error", wErr.Error(), "request_id", requestIDFrom(ctx))
	}
}

// handleOIPLive answers GET /v2/health/live.
func handleOIPLive(svc *oip.Service) echo.HandlerFunc {
	return func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]bool{"live": svc.ServerLive()})
	}
}

// handleOIPReady answers GET /v2/health/ready: 200 when ready, else 503, with the body
// {"live": true, "ready": bool} (the protocol's text names the member "live" for this call
// too; both are there).
func handleOIPReady(svc *oip.Service) echo.HandlerFunc {
	return func(c echo.Context) error {
		ready := svc.ServerReady(c.Request().Context())
		status := http.StatusOK
		if !ready {
			status = http.StatusServiceUnavailable
		}
		return c.JSON(status, map[string]bool{"live": svc.ServerLive(), "ready": ready})
	}
}

// handleOIPServerMetadata answers GET /v2.
func handleOIPServerMetadata(svc *oip.Service) echo.HandlerFunc {
	return func(c echo.Context) error {
		return c.JSON(http.StatusOK, svc.ServerMetadata())
	}
}

// handleOIPModelMetadata answers GET /v2/models/{name}[/versions/{version}].
func handleOIPModelMetadata(svc *oip.Service) echo.HandlerFunc {
	return func(c echo.Context) error {
		md, err := svc.ModelMetadata(c.Request().Context(), c.Param("name"), c.Param("version"))
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, md)
	}
}

// oipModelReady is the model ready body.
type oipModelReady struct {
	Name  string `json:"name"`
	Ready bool   `json:"ready"`
}

// handleOIPModelReady answers GET /v2/models/{name}[/versions/{version}]/ready.
func handleOIPModelReady(svc *oip.Service) echo.HandlerFunc {
	return func(c echo.Context) error {
		name := c.Param("name")
		ready, err := svc.ModelReady(c.Request().Context(), name, c.Param("version"))
		if err != nil {
			return err
		}
		status := http.StatusOK
		if !ready {
			status = http.StatusServiceUnavailable
		}
		return c.JSON(status, oipModelReady{Name: name, Ready: ready})
	}
}

// oipInferRequest is the wire form of $inference_request; data and parameter values are
// decoded once the datatype is known.
type oipInferRequest struct {
	ID         *string                   `json:"id"`
	Parameters map[string]jsontext.Value `json:"parameters"`
	Inputs     []oipInput                `json:"inputs"`
	Outputs    []oipRequestedOutput      `json:"outputs"`
}

type oipInput struct {
	Name       string                    `json:"name"`
	Shape      []int64                   `json:"shape"`
	Datatype   string                    `json:"datatype"`
	Parameters map[string]jsontext.Value `json:"parameters"`
	Data       oipData                   `json:"data"`
}

type oipRequestedOutput struct {
	Name       string                    `json:"name"`
	Parameters map[string]jsontext.Value `json:"parameters"`
}

// decodeOIPInfer reads and decodes an inference request body into the protocol's form.
func decodeOIPInfer(c echo.Context) (*oip.InferRequest, error) {
	var w oipInferRequest
	if err := decodeJSONBody(c, &w); err != nil {
		return nil, err
	}
	if w.Inputs == nil {
		return nil, oip.Invalid("inputs is required")
	}
	req := &oip.InferRequest{Inputs: make([]oip.InputTensor, len(w.Inputs))}
	if w.ID != nil {
		req.ID = *w.ID
	}
	var err error
	if req.Parameters, err = decodeOIPParameters("parameters", w.Parameters); err != nil {
		return nil, err
	}
	for i, in := range w.Inputs {
		field := "inputs[" + strconv.Itoa(i) + "]"
		t := oip.InputTensor{Name: in.Name, Datatype: in.Datatype, Shape: in.Shape}
		if in.Shape == nil {
			return nil, oip.Invalid("%s.shape is required", field)
		}
		if !in.Data.present {
			return nil, oip.Invalid("%s.data is required", field)
		}
		if t.Parameters, err = decodeOIPParameters(field+".parameters", in.Parameters); err != nil {
			return nil, err
		}
		// The data's form depends on the datatype: refuse one the model does not take
		// before reading the elements.
		if i == 0 {
			if err := oip.CheckInputDatatype(in.Datatype); err != nil {
				return nil, err
			}
			if t.Data, err = in.Data.numbers(field, in.Shape); err != nil {
				return nil, err
			}
		}
		req.Inputs[i] = t
	}
	for i, o := range w.Outputs {
		p, err := decodeOIPParameters("outputs["+strconv.Itoa(i)+"].parameters", o.Parameters)
		if err != nil {
			return nil, err
		}
		req.Outputs = append(req.Outputs, oip.RequestedOutput{Name: o.Name, Parameters: p})
	}
	return req, nil
}

// decodeOIPParameters decodes a $parameters object: each value a string, number or boolean.
func decodeOIPParameters(field string, raw map[string]jsontext.Value) (oip.Parameters, error) {
	if raw == nil {
		return nil, nil
	}
	p := make(oip.Parameters, len(raw))
	for k, v := range raw {
		switch v.Kind() {
		case '"':
			var s string
			if err := json.Unmarshal(v, &s); err != nil {
				return nil, oip.Invalid("%s.%s: %v", field, k, err)
			}
			p[k] = s
		case '0':
			f, err := strconv.ParseFloat(string(v), 64)
			if err != nil || math.IsInf(f, 0) {
				return nil, oip.Invalid("%s.%s: the number overflows a 64-bit float", field, truncateRunes(k, maxFieldNameLen))
			}
			p[k] = f
		case 't', 'f':
			p[k] = v.Kind() == 't'
		default:
			return nil, oip.Invalid("%s.%s must be a string, a number or a boolean", field, truncateRunes(k, maxFieldNameLen))
		}
	}
	return p, nil
}

// maxDataDepth bounds the nesting of tensor data while it is decoded (the input's shape has
// at most 8 dimensions, so 9 levels is already too deep).
const maxDataDepth = 9

// oipData is tensor data decoded in one pass: the numbers in document (row-major) order and
// the length and depth of every array, checked against the shape once the whole request is
// read (the shape may follow the data). A non-number element or too deep a nesting is kept
// as problem, reported only if the datatype is one the model takes.
type oipData struct {
	present  bool
	values   []float64
	arrays   []dataArray // in the order they close
	maxDepth int
	// leafDepths are the depths numbers were found at (a bit per depth).
	leafDepths uint32
	problem    string // the first element that is not a number, e.g. "[3] must be a number"
}

type dataArray struct{ depth, n int }

// UnmarshalJSONFrom implements json.UnmarshalerFrom.
func (d *oipData) UnmarshalJSONFrom(dec *jsontext.Decoder) error {
	d.present = true
	if dec.PeekKind() != '[' {
		d.problem = " must be an array of numbers"
		return dec.SkipValue()
	}
	var counts []int // elements so far of each open array
	var path []byte  // "[i][j]" of the open arrays, for the first problem
	var marks []int  // len(path) before each open array's index
	for {
		switch dec.PeekKind() {
		case '[':
			if len(counts) > 0 {
				marks = append(marks, len(path))
				path = strconv.AppendInt(append(path, '['), int64(counts[len(counts)-1]), 10)
				path = append(path, ']')
				counts[len(counts)-1]++
			}
			if len(counts) == maxDataDepth {
				if d.problem == "" {
					d.problem = string(path) + ": nested deeper than the shape"
				}
				if err := dec.SkipValue(); err != nil {
					return err
				}
				path, marks = path[:marks[len(marks)-1]], marks[:len(marks)-1]
				continue
			}
			if _, err := dec.ReadToken(); err != nil {
				return err
			}
			counts = append(counts, 0)
			d.maxDepth = max(d.maxDepth, len(counts))
		case ']':
			if _, err := dec.ReadToken(); err != nil {
				return err
			}
			d.arrays = append(d.arrays, dataArray{depth: len(counts), n: counts[len(counts)-1]})
			counts = counts[:len(counts)-1]
			if len(counts) == 0 {
				return nil
			}
			path, marks = path[:marks[len(marks)-1]], marks[:len(marks)-1]
		case '0':
			v, err := dec.ReadValue()
			if err != nil {
				return err
			}
			f, err := strconv.ParseFloat(string(v), 64)
			if err != nil && d.problem == "" { // the grammar is checked: only a range error is left
				d.problem = string(path) + "[" + strconv.Itoa(counts[len(counts)-1]) + "]: the number overflows a 64-bit float"
			}
			d.leafDepths |= 1 << len(counts)
			d.values = append(d.values, f)
			counts[len(counts)-1]++
		default:
			if d.problem == "" {
				d.problem = string(path) + "[" + strconv.Itoa(counts[len(counts)-1]) + "] must be a number"
			}
			if err := dec.SkipValue(); err != nil {
				return err
			}
			counts[len(counts)-1]++
		}
	}
}

// numbers returns the elements of data after checking its nesting against shape: flat, or
// nested as the shape says at every level.
func (d *oipData) numbers(field string, shape []int64) ([]float64, error) {
	if d.problem != "" {
		return nil, oip.Invalid("%s.data%s", field, d.problem)
	}
	if d.maxDepth <= 1 {
		return d.values, nil
	}
	if len(shape) < 2 {
		return nil, oip.Invalid("%s.data must be a flat array of numbers for the shape %v", field, shape)
	}
	if d.maxDepth > len(shape) {
		return nil, oip.Invalid("%s.data: nested deeper than the shape %v", field, shape)
	}
	if d.maxDepth < len(shape) || d.leafDepths&^(1<<d.maxDepth) != 0 {
		return nil, oip.Invalid("%s.data must be flat, or nested %d levels as the shape %v at every element", field, len(shape), shape)
	}
	for _, a := range d.arrays {
		if int64(a.n) != shape[a.depth-1] {
			return nil, oip.Invalid("%s.data: an array at depth %d holds %d elements; dimension %d of the shape is %d",
				field, a.depth-1, a.n, a.depth-1, shape[a.depth-1])
		}
	}
	return d.values, nil
}

// oipOutput is the wire form of $response_output.
type oipOutput struct {
	Name       string         `json:"name"`
	Shape      []int64        `json:"shape"`
	Datatype   string         `json:"datatype"`
	Parameters oip.Parameters `json:"parameters,omitempty"`
	Data       any            `json:"data"`
}

// oipResponse is the wire form of $inference_response.
type oipResponse struct {
	ModelName    string         `json:"model_name"`
	ModelVersion string         `json:"model_version,omitempty"`
	ID           string         `json:"id,omitempty"`
	Parameters   oip.Parameters `json:"parameters,omitempty"`
	Outputs      []oipOutput    `json:"outputs"`
}

func oipResponseOf(r oip.InferResponse) oipResponse {
	w := oipResponse{ModelName: r.ModelName, ModelVersion: r.ModelVersion, ID: r.ID, Parameters: r.Parameters,
		Outputs: make([]oipOutput, len(r.Outputs))}
	for i, o := range r.Outputs {
		var data any = o.FP64
		if o.Datatype == oip.BYTES {
			data = o.Bytes
		}
		w.Outputs[i] = oipOutput{Name: o.Name, Shape: o.Shape, Datatype: o.Datatype, Parameters: o.Parameters, Data: data}
	}
	return w
}

// oipMeta is the prediction meta of a /v2 request.
func oipMeta(c echo.Context) prediction.Meta {
	m := meta(c)
	m.Protocol = prediction.ProtocolOIPREST
	return m
}

// handleOIPInfer answers POST /v2/models/{name}[/versions/{version}]/infer: synchronously,
// or with Prefer: respond-async as a job (oip_async.go).
func (s *Server) handleOIPInfer() echo.HandlerFunc {
	svc := s.deps.OIP
	return func(c echo.Context) error {
		req, err := decodeOIPInfer(c)
		if err != nil {
			return err
		}
		name, version := c.Param("name"), c.Param("version")
		if prefersAsync(c.Request().Header) {
			return s.submitOIPJob(c, name, version, req)
		}
		resp, err := svc.Infer(c.Request().Context(), oipMeta(c), name, version, req)
		if err != nil {
			return err
		}
		return c.JSON(http.StatusOK, oipResponseOf(resp))
	}
}
