package oip

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/predq/predq/internal/inference"
	"github.com/predq/predq/internal/modelreg"
	"github.com/predq/predq/internal/prediction"
	"github.com/predq/predq/internal/validate"
)

// Predictor answers predictions: *prediction.Service.
type Predictor interface {
	Predict(ctx context.Context, in prediction.Input, meta prediction.Meta) (prediction.Output, error)
	PredictBatch(ctx context.Context, ins []prediction.Input, parallel bool, meta prediction.Meta) ([]prediction.Output, error)
}

// Models resolves versions and aliases to loaded models and lists the loaded versions:
// *modelreg.Registry.
type Models interface {
	Resolve(name string) (*inference.Model, error)
	Versions() []string
}

var _ Models = (*modelreg.Registry)(nil)

// Defaults of Config.
const (
	DefaultServerName = "predq"
	DefaultMaxRows    = 1000
	// MaxIDLength bounds a request's id (it is echoed, and stored with an asynchronous job).
	MaxIDLength = 256
	// maxShapeDims bounds the rank of an input's shape.
	maxShapeDims = 8
)

// Config holds the Service's collaborators and limits.
type Config struct {
	Predictor Predictor // required
	Models    Models    // required
	// ServerName and ServerVersion are the server metadata's name (default
	// DefaultServerName) and version (default "dev").
	ServerName    string
	ServerVersion string
	// Extensions are the protocol extensions the server metadata lists (default none).
	Extensions []string
	// MaxRows is the largest N of a synchronous inference (default DefaultMaxRows, the
	// MAX_BATCH_SIZE of /api/v1/predict/batch).
	MaxRows int
	// Ready reports whether the server is ready for inferencing (nil: when at least one
	// model is loaded).
	Ready func(ctx context.Context) bool
}

// Service is the protocol over the predict feature.
type Service struct {
	cfg Config
}

// NewService builds a Service.
func NewService(cfg Config) (*Service, error) {
	if cfg.Predictor == nil || cfg.Models == nil {
		return nil, errors.New("oip: Predictor and Models are required")
	}
	if cfg.MaxRows < 0 {
		return nil, fmt.Errorf("oip: MaxRows must not be negative, got %d", cfg.MaxRows)
	}
	cfg.ServerName = cmp.Or(cfg.ServerName, DefaultServerName)
	cfg.ServerVersion = cmp.Or(cfg.ServerVersion, "dev")
	cfg.MaxRows = cmp.Or(cfg.MaxRows, DefaultMaxRows)
	cfg.Extensions = slices.Clone(cfg.Extensions)
	if cfg.Extensions == nil {
		cfg.Extensions = []string{}
	}
	return &Service{cfg: cfg}, nil
}

// MaxRows is the largest N of a synchronous inference.
func (s *Service) MaxRows() int { return s.cfg.MaxRows }

// ServerMetadata answers the server metadata call.
func (s *Service) ServerMetadata() ServerMetadata {
	return ServerMetadata{Name: s.cfg.ServerName, Version: s.cfg.ServerVersion, Extensions: slices.Clone(s.cfg.Extensions)}
}

// ServerLive reports whether the server is live: it answers, so it is.
func (s *Service) ServerLive() bool { return true }

// ServerReady reports whether the server is ready for inferencing.
func (s *Service) ServerReady(ctx context.Context) bool {
	if s.cfg.Ready != nil {
		return s.cfg.Ready(ctx)
	}
	return len(s.cfg.Models.Versions()) > 0
}

// versionRE is the form of a concrete version (prediction.VersionPattern).
var versionRE = regexp.MustCompile(`^` + prediction.VersionPattern + `$`)

// resolve finds the model of name at version ("" means the latest alias, or when that
// alias is another model's, the highest version of name). modelVersion is what the
// prediction input names: "latest" for the alias, else the concrete version. Errors:
// KindNotFound for an unknown name or version, KindUnavailable when no model is loaded.
func (s *Service) resolve(name, version string) (m *inference.Model, modelVersion string, err error) {
	// The common case first, without listing the versions.
	switch {
	case version == "" || version == prediction.LatestAlias:
		if m, err := s.cfg.Models.Resolve(prediction.LatestAlias); err == nil && m.Name == name {
			return m, prediction.LatestAlias, nil
		}
	case versionRE.MatchString(version):
		if m, err := s.cfg.Models.Resolve(version); err == nil && m.Name == name {
			return m, m.Version, nil
		}
	}
	versions := s.cfg.Models.Versions()
	if len(versions) == 0 {
		return nil, "", Unavailable(prediction.ErrNoModels, "no model is loaded")
	}
	named := s.versionsOf(name, versions)
	if len(named) == 0 {
		return nil, "", NotFound("unknown model %q", truncate(name, 64))
	}
	switch {
	case version == "" || version == prediction.LatestAlias:
		if m, err := s.cfg.Models.Resolve(prediction.LatestAlias); err == nil && m.Name == name {
			return m, prediction.LatestAlias, nil
		}
		if version == prediction.LatestAlias {
			return nil, "", NotFound("model %q has no version %q", name, version)
		}
		v := named[len(named)-1]
		m, err := s.cfg.Models.Resolve(v)
		if err != nil {
			return nil, "", NotFound("model %q has no version %q", name, v)
		}
		return m, m.Version, nil
	case !versionRE.MatchString(version):
		return nil, "", NotFound("model %q has no version %q (versions are vMAJOR.MINOR.PATCH)", name, truncate(version, 64))
	}
	m, err = s.cfg.Models.Resolve(version)
	if err != nil || m.Name != name {
		return nil, "", NotFound("model %q has no version %q", name, version)
	}
	return m, m.Version, nil
}

// versionsOf returns the loaded versions of the model name, lowest first.
func (s *Service) versionsOf(name string, versions []string) []string {
	var out []string
	for _, v := range versions {
		if m, err := s.cfg.Models.Resolve(v); err == nil && m.Name == name {
			out = append(out, v)
		}
	}
	slices.SortFunc(out, modelreg.CompareVersions)
	return out
}

// ModelMetadata answers the model metadata call for name at version ("" for the latest
// alias). Errors: KindNotFound, KindUnavailable.
func (s *Service) ModelMetadata(_ context.Context, name, version string) (ModelMetadata, error) {
	m, _, err := s.resolve(name, version)
	if err != nil {
		return ModelMetadata{}, err
	}
	var outputs []TensorMetadata
	for _, o := range Outputs() {
		dt := FP64
		if o == OutputClass {
			dt = BYTES
		}
		outputs = append(outputs, TensorMetadata{Name: o, Datatype: dt, Shape: []int64{-1}})
	}
	return ModelMetadata{
		Name:     m.Name,
		Versions: s.versionsOf(name, s.cfg.Models.Versions()),
		Platform: "predq_" + m.Kind,
		Inputs:   []TensorMetadata{{Name: InputFeatures, Datatype: FP64, Shape: []int64{-1, int64(m.InputSize)}}},
		Outputs:  outputs,
	}, nil
}

// ModelReady answers the model readiness call: a model resolves only when it is loaded, so
// a known version is ready. Errors: KindNotFound for an unknown model or version,
// KindUnavailable when no model is loaded.
func (s *Service) ModelReady(_ context.Context, name, version string) (bool, error) {
	if _, _, err := s.resolve(name, version); err != nil {
		return false, err
	}
	return true, nil
}

// Plan is a checked inference request: the prediction inputs of its rows and how to answer.
type Plan struct {
	Model   *inference.Model // the model resolved when the request was checked
	Inputs  []prediction.Input
	ID      string
	Outputs []string // the output tensors to answer, in response order
	// Rows is N; Unbatched is true when the input's shape was [input size] (no batch
	// dimension).
	Rows      int
	Unbatched bool
}

// Check resolves the model and checks the request's structure (one input tensor named
// InputFeatures, datatype FP32 or FP64, shape [N, size] or [size] matching its data, known
// parameters and outputs) and returns its rows as prediction inputs. It does not bound N:
// Infer bounds it by MaxRows, an asynchronous job by its own limit. The rules on values
// (finite, within ±1000, threshold, preprocessing) are the prediction feature's, checked
// when the inputs are predicted. Errors: KindInvalid, KindNotFound, KindUnavailable.
func (s *Service) Check(name, version string, req *InferRequest) (Plan, error) {
	m, modelVersion, err := s.resolve(name, version)
	if err != nil {
		return Plan{}, err
	}
	if len(req.ID) > MaxIDLength {
		return Plan{}, Invalid("id must be at most %d bytes, got %d", MaxIDLength, len(req.ID))
	}
	prep, threshold, err := parameters(req.Parameters)
	if err != nil {
		return Plan{}, err
	}
	outputs, err := requestedOutputs(req.Outputs)
	if err != nil {
		return Plan{}, err
	}
	switch len(req.Inputs) {
	case 0:
		return Plan{}, Invalid("inputs: model %q takes one input tensor, %q; got none", m.Name, InputFeatures)
	case 1:
	default:
		return Plan{}, Invalid("inputs: model %q takes one input tensor, %q; got %d", m.Name, InputFeatures, len(req.Inputs))
	}
	in := &req.Inputs[0]
	if in.Name != InputFeatures {
		return Plan{}, Invalid("inputs[0].name: model %q has no input %q; its input is %q", m.Name, truncate(in.Name, 64), InputFeatures)
	}
	if err := CheckInputDatatype(in.Datatype); err != nil {
		return Plan{}, err
	}
	if len(in.Parameters) > 0 {
		for k := range in.Parameters {
			return Plan{}, Invalid("inputs[0].parameters: unknown parameter %q (the input takes none)", truncate(k, 64))
		}
	}
	rows, unbatched, err := checkShape(in.Shape, len(in.Data), m.InputSize)
	if err != nil {
		return Plan{}, err
	}
	if in.Datatype == FP32 {
		for i, x := range in.Data {
			if f := float32(x); !math.IsInf(float64(f), 0) || math.IsInf(x, 0) {
				in.Data[i] = float64(f)
			} else {
				return Plan{}, Invalid("inputs[0].data[%d]: %g is out of the range of FP32", i, x)
			}
		}
	}
	ins := make([]prediction.Input, rows)
	size := m.InputSize
	for i := range ins {
		ins[i] = prediction.Input{
			Features:            in.Data[i*size : (i+1)*size : (i+1)*size],
			ModelVersion:        modelVersion,
			ConfidenceThreshold: threshold,
			Preprocessing:       prep,
		}
	}
	return Plan{Model: m, Inputs: ins, ID: req.ID, Outputs: outputs, Rows: rows, Unbatched: unbatched}, nil
}

// CheckInputDatatype returns a KindInvalid error unless dt is a datatype the model's input
// takes (FP32 or FP64). An edge calls it before decoding data whose form depends on it.
func CheckInputDatatype(dt string) error {
	switch dt {
	case FP32, FP64:
		return nil
	case "":
		return Invalid("inputs[0].datatype is required (FP32 or FP64)")
	}
	if slices.Contains(Datatypes(), dt) {
		return Invalid("inputs[0].datatype: the input takes FP32 or FP64, not %s", dt)
	}
	return Invalid("inputs[0].datatype: unknown datatype %q (the input takes FP32 or FP64)", truncate(dt, 32))
}

// checkShape checks shape against the number of elements and the model's input size.
func checkShape(shape []int64, elements, size int) (rows int, unbatched bool, err error) {
	if len(shape) == 0 {
		return 0, false, Invalid("inputs[0].shape is required: [N, %d] or [%d]", size, size)
	}
	if len(shape) > maxShapeDims {
		return 0, false, Invalid("inputs[0].shape: rank %d; the input's shape is [N, %d] or [%d]", len(shape), size, size)
	}
	for i, d := range shape {
		if d < 0 {
			return 0, false, Invalid("inputs[0].shape[%d]: %d is negative", i, d)
		}
	}
	switch {
	case len(shape) == 1 && shape[0] == int64(size):
		rows, unbatched = 1, true
	case len(shape) == 2 && shape[1] == int64(size):
		if shape[0] == 0 {
			return 0, false, Invalid("inputs[0].shape: [0, %d] holds no row", size)
		}
		if shape[0] > int64(math.MaxInt32) {
			return 0, false, Invalid("inputs[0].shape: %d rows for %d elements of data", shape[0], elements)
		}
		rows = int(shape[0])
	default:
		return 0, false, Invalid("inputs[0].shape: %s; the input's shape is [N, %d] or [%d]", shapeString(shape), size, size)
	}
	if rows*size != elements {
		return 0, false, Invalid("inputs[0].data: shape %s takes %d elements, got %d", shapeString(shape), rows*size, elements)
	}
	return rows, unbatched, nil
}

func shapeString(shape []int64) string {
	parts := make([]string, len(shape))
	for i, d := range shape {
		parts[i] = strconv.FormatInt(d, 10)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// parameters reads the request parameters: preprocessing and confidence_threshold, with the
// prediction feature's defaults.
func parameters(p Parameters) (prep string, threshold float64, err error) {
	threshold = prediction.DefaultThreshold
	for k, v := range p {
		switch k {
		case ParamPreprocessing:
			sv, ok := v.(string)
			if !ok {
				return "", 0, Invalid("parameters.%s must be a string (standard, minmax or robust)", k)
			}
			prep = sv
		case ParamConfidenceThreshold:
			switch n := v.(type) {
			case float64:
				threshold = n
			case int64:
				threshold = float64(n)
			default:
				return "", 0, Invalid("parameters.%s must be a number in (0, 1]", k)
			}
		case paramBinaryDataOutput:
			if v != false {
				return "", 0, Invalid("parameters.%s: binary tensor data is not supported; only false is accepted", k)
			}
		default:
			return "", 0, Invalid("parameters: unknown parameter %q (known: %s, %s)", truncate(k, 64), ParamPreprocessing, ParamConfidenceThreshold)
		}
	}
	return prep, threshold, nil
}

// requestedOutputs returns the names of the outputs to answer, in response order (all of
// them when the request names none).
func requestedOutputs(ros []RequestedOutput) ([]string, error) {
	if len(ros) == 0 {
		return Outputs(), nil
	}
	want := map[string]bool{}
	for i, ro := range ros {
		if !slices.Contains(Outputs(), ro.Name) {
			return nil, Invalid("outputs[%d].name: unknown output %q (outputs: %s)", i, truncate(ro.Name, 64), strings.Join(Outputs(), ", "))
		}
		if want[ro.Name] {
			return nil, Invalid("outputs[%d].name: %q is requested twice", i, ro.Name)
		}
		for k, v := range ro.Parameters {
			if k == paramBinaryData && v == false {
				continue
			}
			if k == paramBinaryData {
				return nil, Invalid("outputs[%d].parameters.%s: binary tensor data is not supported; only false is accepted", i, k)
			}
			return nil, Invalid("outputs[%d].parameters: unknown parameter %q (outputs take only %s: false)", i, truncate(k, 64), paramBinaryData)
		}
		want[ro.Name] = true
	}
	var out []string
	for _, o := range Outputs() {
		if want[o] {
			out = append(out, o)
		}
	}
	return out, nil
}

// Infer answers an inference request for name at version ("" for the latest alias) through
// the predict feature: one Predict call for one row, one PredictBatch call (one vectorised
// inference) for more. meta carries the request id, the tenant and the protocol, as
// prediction.Meta does for /api/v1. Errors: KindInvalid (also for more than MaxRows rows),
// KindNotFound, KindUnavailable, KindInternal.
func (s *Service) Infer(ctx context.Context, meta prediction.Meta, name, version string, req *InferRequest) (InferResponse, error) {
	plan, err := s.Check(name, version, req)
	if err != nil {
		return InferResponse{}, err
	}
	if plan.Rows > s.cfg.MaxRows {
		return InferResponse{}, Invalid("inputs[0]: %d rows exceed the synchronous limit of %d; ask for an asynchronous inference (REST: header \"Prefer: respond-async\")", plan.Rows, s.cfg.MaxRows)
	}
	var outs []prediction.Output
	if plan.Rows == 1 {
		var o prediction.Output
		o, err = s.cfg.Predictor.Predict(ctx, plan.Inputs[0], meta)
		outs = []prediction.Output{o}
	} else {
		outs, err = s.cfg.Predictor.PredictBatch(ctx, plan.Inputs, true, meta)
	}
	if err != nil {
		return InferResponse{}, FromPrediction(err)
	}
	rows := make([]Row, len(outs))
	for i, o := range outs {
		rows[i] = Row{Probability: o.Prediction, Class: o.PredictionClass, Confidence: o.Confidence}
	}
	return Response(plan.Model.Name, outs[0].ModelVersion, plan.ID, plan.Outputs, rows), nil
}

// Row is the answer of one row.
type Row struct {
	Probability float64
	Class       string
	Confidence  float64
}

// Response builds the inference response of rows: the outputs named, in response order,
// each of shape [len(rows)].
func Response(model, version, id string, outputs []string, rows []Row) InferResponse {
	resp := InferResponse{ModelName: model, ModelVersion: version, ID: id}
	n := int64(len(rows))
	for _, name := range outputs {
		t := OutputTensor{Name: name, Shape: []int64{n}}
		switch name {
		case OutputProbability, OutputConfidence:
			t.Datatype = FP64
			t.FP64 = make([]float64, len(rows))
			for i, r := range rows {
				if name == OutputProbability {
					t.FP64[i] = r.Probability
				} else {
					t.FP64[i] = r.Confidence
				}
			}
		case OutputClass:
			t.Datatype = BYTES
			t.Bytes = make([]string, len(rows))
			for i, r := range rows {
				t.Bytes[i] = r.Class
			}
		}
		resp.Outputs = append(resp.Outputs, t)
	}
	return resp
}

// FromPrediction maps an error of the predict feature (or of the job feature's checks of
// the same rules) to the protocol's: a *validate.Error is KindInvalid with the problems in
// the protocol's words, ErrModelNotFound KindNotFound, ErrNoModels and ErrUnavailable
// KindUnavailable; anything else KindInternal.
func FromPrediction(err error) error {
	if v, ok := errors.AsType[*validate.Error](err); ok {
		return &Error{Kind: KindInvalid, Message: validationMessage(v), Err: err}
	}
	switch {
	case errors.Is(err, prediction.ErrModelNotFound):
		return &Error{Kind: KindNotFound, Message: "model version not found (it was unloaded meanwhile)", Err: err}
	case errors.Is(err, prediction.ErrNoModels):
		return Unavailable(err, "no model is loaded")
	case errors.Is(err, prediction.ErrUnavailable):
		return Unavailable(err, "the prediction could not be recorded; retry later")
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return Unavailable(err, "the request was cancelled or timed out")
	}
	return &Error{Kind: KindInternal, Message: "inference failed", Err: err}
}

// CheckValues checks the rows and options of a plan with the predict feature's own rules
// (prediction.Input.Check: finite features within ±1000, threshold, preprocessing), without
// predicting: what an asynchronous job checks before it is stored. Errors: KindInvalid.
func CheckValues(plan Plan) error {
	all := &validate.Error{}
	for i := range plan.Inputs {
		in := plan.Inputs[i] // Check normalizes its copy
		if err := in.Check(); err != nil {
			if v, ok := errors.AsType[*validate.Error](err); ok {
				all.Merge("samples["+strconv.Itoa(i)+"].", v)
			}
			if all.Len() > 4*maxProblems {
				break
			}
		}
	}
	if plan.Model != nil && len(plan.Inputs) > 0 && !plan.Model.Supports(cmp.Or(strings.TrimSpace(plan.Inputs[0].Preprocessing), prediction.DefaultPreprocessing)) {
		all.Add("preprocessing", "model %s supports %v, not %q", plan.Model.Version, plan.Model.Preprocessings(), plan.Inputs[0].Preprocessing)
	}
	if all.Len() > 0 {
		return FromPrediction(all)
	}
	return nil
}

// The parameters of Triton's binary tensor extension, accepted when false (what its clients
// send with binary_data=False), refused otherwise.
const (
	paramBinaryDataOutput = "binary_data_output"
	paramBinaryData       = "binary_data"
)

// maxProblems is how many field problems an invalid-argument message names.
const maxProblems = 5

var sampleRE = regexp.MustCompile(`^samples\[(\d+)\]\.`)
var featureRE = regexp.MustCompile(`^features\[(\d+)\]$`)

// validationMessage turns the predict feature's field problems into the protocol's words:
// samples[i].features[j] is row i, column j of the input; the options are parameters.
func validationMessage(v *validate.Error) string {
	parts := make([]string, 0, maxProblems)
	seen := map[string]bool{}
	more := 0
	for _, fe := range v.Errors {
		field, row := fe.Field, ""
		if m := sampleRE.FindStringSubmatch(field); m != nil {
			row, field = m[1], field[len(m[0]):]
		}
		switch {
		case featureRE.MatchString(field):
			col := featureRE.FindStringSubmatch(field)[1]
			if row == "" {
				row = "0"
			}
			field = "inputs[0] row " + row + ", column " + col
		case field == "features":
			field = "inputs[0]"
			if row != "" {
				field += " row " + row
			}
		case field == "preprocessing" || field == "confidence_threshold":
			field = "parameters." + field
		case field == "model_version":
			field = "model version"
		}
		p := field + ": " + fe.Message
		switch {
		case seen[p]: // an option's problem, repeated for every row
		case len(parts) == maxProblems:
			more++
		default:
			parts = append(parts, p)
		}
		seen[p] = true
	}
	if more > 0 {
		parts = append(parts, fmt.Sprintf("and %d more", more))
	}
	return strings.Join(parts, "; ")
}

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}
