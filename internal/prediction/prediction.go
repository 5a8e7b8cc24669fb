// Package prediction is the synchronous predict feature: its input and output, the seed's
// validation rules, the cache in front of inference, and the service that ties them together.
package prediction

import (
	"errors"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/predq/predq/internal/validate"
)

// Limits and defaults of a prediction input (the seed's rules).
const (
	MaxFeatures          = 100
	MaxAbsFeature        = 1000.0
	DefaultThreshold     = 0.5
	DefaultPreprocessing = "standard"
	LatestAlias          = "latest"
)

// Preprocessing names accepted by the API.
var preprocessings = []string{"standard", "minmax", "robust"}

// VersionPattern is the form of a concrete model_version: vMAJOR.MINOR.PATCH, no leading
// zeros, each part at most six digits. The OpenAPI document states it too.
const VersionPattern = `v(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})\.(0|[1-9][0-9]{0,5})`

// Preprocessings are the preprocessing names accepted by the API, case-sensitive.
func Preprocessings() []string { return slices.Clone(preprocessings) }

var versionRE = regexp.MustCompile(`^` + VersionPattern + `$`)

// Sentinel errors of the feature.
var (
	// ErrModelNotFound: the requested version or alias is not registered or not loaded.
	ErrModelNotFound = errors.New("model version not found")
	// ErrNoModels: no model is loaded at all; the process cannot predict.
	ErrNoModels = errors.New("no model loaded")
)

// Input is one prediction request. Empty ModelVersion and Preprocessing mean "use the
// default" and Normalize fills them. ConfidenceThreshold has no zero default (0 is out of
// range): the decoder sets DefaultThreshold when the client left it out.
type Input struct {
	Features            []float64 `json:"features"`
	ModelVersion        string    `json:"model_version,omitempty"`
	ConfidenceThreshold float64   `json:"confidence_threshold,omitempty"`
	Preprocessing       string    `json:"preprocessing,omitempty"`
}

// Normalize trims the strings and fills defaults. It does not change their case: names are
// case-sensitive, as the seed's literals are, so "ROBUST" is refused like any unknown name.
func (in *Input) Normalize() {
	in.ModelVersion, in.Preprocessing = NormalizeOptions(in.ModelVersion, in.Preprocessing)
}

// NormalizeOptions returns a model version and a preprocessing as the rules read them:
// trimmed (never case-folded), with the defaults (LatestAlias, DefaultPreprocessing) for empty ones.
func NormalizeOptions(modelVersion, preprocessing string) (string, string) {
	modelVersion = strings.TrimSpace(modelVersion)
	preprocessing = strings.TrimSpace(preprocessing)
	if modelVersion == "" {
		modelVersion = LatestAlias
	}
	if preprocessing == "" {
		preprocessing = DefaultPreprocessing
	}
	return modelVersion, preprocessing
}

// Validate checks the seed's model-independent rules on a normalized input. The
// model-dependent rules (input size, preprocessing supported by the version) are checked by
// the Service once the version is resolved.
func (in *Input) Validate() *validate.Error {
	v := &validate.Error{}
	ValidateFeatures(v, "features", in.Features)
	ValidateOptions(v, in.ModelVersion, in.ConfidenceThreshold, in.Preprocessing)
	return v
}

// ValidateOptions checks the model-independent rules of the settings that every prediction
// carries besides its features, on normalized values (NormalizeOptions), and records problems
// in v under model_version, confidence_threshold and preprocessing. Batch jobs share these
// rules for their options.
func ValidateOptions(v *validate.Error, modelVersion string, threshold float64, preprocessing string) {
	if modelVersion != LatestAlias && !versionRE.MatchString(modelVersion) {
		v.Add("model_version", `must be "latest" or vMAJOR.MINOR.PATCH, got %q`, truncate(modelVersion, 40))
	}
	if !(threshold > 0 && threshold <= 1) {
		v.Add("confidence_threshold", "must be in (0, 1], got %g", threshold)
	}
	if !validPreprocessing(preprocessing) {
		v.Add("preprocessing", "must be one of standard, minmax, robust; got %q", truncate(preprocessing, 40))
	} else if preprocessing == "robust" && modelVersion != LatestAlias {
		v.Add("preprocessing", `robust is only available with model_version "latest"`)
	}
}

// Check normalizes in and checks the model-independent rules: nil, or a *validate.Error
// naming each field. It is the one place an input is validated (the Service calls it; the
// HTTP edge only decodes).
func (in *Input) Check() error {
	in.Normalize()
	if in.Valid() {
		return nil
	}
	return in.Validate().Err()
}

// CheckBatch is Check for every input of a batch, with the fields named samples[i].…; it
// reports every sample's problems at once.
func CheckBatch(ins []Input) error {
	var all *validate.Error
	for i := range ins {
		ins[i].Normalize()
		if ins[i].Valid() {
			continue
		}
		if all == nil {
			all = &validate.Error{}
		}
		all.Merge("samples["+strconv.Itoa(i)+"].", ins[i].Validate())
	}
	if all == nil {
		return nil
	}
	return all.Err()
}

// ValidateFeatures checks the seed's rules on a feature vector (1 to 100 finite numbers, each
// within ±1000) and records problems under field.
func ValidateFeatures(v *validate.Error, field string, features []float64) {
	switch n := len(features); {
	case features == nil:
		v.Add(field, "is required")
	case n == 0:
		v.Add(field, "must hold at least 1 number")
	case n > MaxFeatures:
		v.Add(field, "must hold at most %d numbers, got %d", MaxFeatures, n)
	default:
		for i, x := range features {
			switch {
			case math.IsNaN(x) || math.IsInf(x, 0):
				v.Add(fieldIndex(field, i), "must be a finite number")
			case math.Abs(x) > MaxAbsFeature:
				v.Add(fieldIndex(field, i), "must be within [-%g, %g], got %g", MaxAbsFeature, MaxAbsFeature, x)
			}
		}
	}
}

// Valid reports whether Validate finds nothing wrong, without building an error: the path of
// every well-formed request (Validate allocates its error even when it stays empty).
func (in *Input) Valid() bool {
	return FeaturesValid(in.Features) &&
		(in.ModelVersion == LatestAlias || versionRE.MatchString(in.ModelVersion)) &&
		in.ConfidenceThreshold > 0 && in.ConfidenceThreshold <= 1 &&
		validPreprocessing(in.Preprocessing) &&
		(in.Preprocessing != "robust" || in.ModelVersion == LatestAlias)
}

// FeaturesValid reports whether ValidateFeatures finds nothing wrong with features, without
// building an error: the fast path of callers that check millions of rows.
func FeaturesValid(features []float64) bool {
	if len(features) == 0 || len(features) > MaxFeatures {
		return false
	}
	for _, x := range features {
		if !(math.Abs(x) <= MaxAbsFeature) { // NaN and ±Inf fail too
			return false
		}
	}
	return true
}

func validPreprocessing(p string) bool {
	for _, q := range preprocessings {
		if p == q {
			return true
		}
	}
	return false
}

func fieldIndex(name string, i int) string {
	return name + "[" + strconv.Itoa(i) + "]"
}

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n]) + "…"
}

// Output is one answered prediction (DESIGN section 3).
type Output struct {
	Prediction      float64   `json:"prediction"`
	Confidence      float64   `json:"confidence"`
	ModelVersion    string    `json:"model_version"`
	LatencyMS       float64   `json:"latency_ms"`
	Timestamp       time.Time `json:"timestamp"`
	PredictionClass string    `json:"prediction_class"`
	Cached          bool      `json:"cached"`
	RequestID       string    `json:"request_id"`
}

// Class names of PredictionClass.
const (
	ClassPositive = "positive"
	ClassNegative = "negative"
)

// Meta describes who asked, for persistence and logs.
type Meta struct {
	RequestID string // unique per prediction; a batch derives one per sample
	UserID    string // the tenant: the API key's KeyID, never its name
	// Protocol is the front door that asked, the protocol label of the metrics: ProtocolV1
	// (the default when empty), ProtocolOIPREST or ProtocolOIPGRPC.
	Protocol string
}
