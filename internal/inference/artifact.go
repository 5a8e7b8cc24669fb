package inference

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
)

// Model kinds, the Kind of an Artifact and a Model.
const (
	// KindLogistic is L2-regularised logistic regression: p = sigmoid(w·x + b).
	KindLogistic = "logistic_regression"
	// KindMLP is a multilayer perceptron with one tanh hidden layer and a sigmoid output:
	// p = sigmoid(w2·tanh(W1 x + b1) + b2).
	KindMLP = "mlp"
)

// ActivationTanh is the only hidden-layer activation of KindMLP models.
const ActivationTanh = "tanh"

// NamePattern is the form of Artifact.Name: lowercase letters, digits, '-' and '_', starting
// with a letter, at most 64 characters (a URL path segment that needs no escaping).
const NamePattern = `[a-z][a-z0-9_-]{0,63}`

// UnnamedModel is the name of a model whose artifact carries none.
const UnnamedModel = "model"

var nameRE = regexp.MustCompile(`^` + NamePattern + `$`)

// checksumPrefix starts every Artifact.Checksum.
const checksumPrefix = "sha256:"

// versionRE is the form of Artifact.Version: vMAJOR.MINOR.PATCH.
var versionRE = regexp.MustCompile(`^v(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$`)

// Artifact is the serialised form of a trained model: one version of one kind, with one
// Variant per preprocessing. EncodeArtifact and DecodeArtifact convert it to and from
// JSON; NewModel turns it into a Model that predicts.
//
// Checksum is "sha256:" and the lowercase hex sha256 of the artifact's encoding with the
// Checksum field empty ("checksum": ""). Checksum is the last field of the encoding, so
// the hashed bytes are the file's bytes with the checksum's hex digits and prefix removed.
type Artifact struct {
	// Name is the model family the version belongs to ("sonar"): the model name of the Open
	// Inference Protocol. Optional in the format (an artifact without one is served as
	// UnnamedModel); when set, it matches NamePattern.
	Name          string   `json:"name,omitempty"`
	Kind          string   `json:"kind"`           // KindLogistic or KindMLP
	Version       string   `json:"version"`        // vMAJOR.MINOR.PATCH
	InputSize     int      `json:"input_size"`     // number of features
	FeatureNames  []string `json:"feature_names"`  // InputSize names, in input order
	PositiveClass string   `json:"positive_class"` // the class whose probability is predicted
	NegativeClass string   `json:"negative_class"` // the other class
	DatasetSHA256 string   `json:"dataset_sha256"` // lowercase hex sha256 of the training file
	// CreatedBy records how the artifact was made (command, seeds, protocol); it holds no
	// timestamp, so that training reproduces the same bytes.
	CreatedBy string    `json:"created_by"`
	Variants  []Variant `json:"variants"` // one per preprocessing, no duplicates
	Checksum  string    `json:"checksum"` // set by EncodeArtifact; must stay the last field
}

// Variant is a model trained with one preprocessing: the fitted scaler, the weights, the
// hyperparameters they were trained with and their cross-validated metrics. Exactly one
// of Logistic and MLP is set, matching the artifact's Kind.
type Variant struct {
	Preprocessing Preprocessing    `json:"preprocessing"`
	Scaler        Scaler           `json:"scaler"`
	Hyperparams   Hyperparams      `json:"hyperparams"`
	Metrics       Metrics          `json:"metrics"`
	Logistic      *LogisticWeights `json:"logistic,omitempty"`
	MLP           *MLPWeights      `json:"mlp,omitempty"`
}

// LogisticWeights are a logistic regression's parameters: p = sigmoid(Weights·x + Bias).
type LogisticWeights struct {
	Weights []float64 `json:"weights"`
	Bias    float64   `json:"bias"`
}

// MLPWeights are a one-hidden-layer MLP's parameters. HiddenWeights has one row of
// InputSize weights per hidden unit: h = tanh(HiddenWeights x + HiddenBias),
// p = sigmoid(OutputWeights·h + OutputBias).
type MLPWeights struct {
	Activation    string      `json:"activation"` // ActivationTanh
	HiddenWeights [][]float64 `json:"hidden_weights"`
	HiddenBias    []float64   `json:"hidden_bias"`
	OutputWeights []float64   `json:"output_weights"`
	OutputBias    float64     `json:"output_bias"`
}

// Metrics are a variant's cross-validated (held-out) metrics: Repeats repetitions of
// stratified Folds-fold cross-validation. Accuracy (threshold 0.5), ROCAUC and LogLoss
// are means over the Folds×Repeats held-out folds; AccuracyStd is the population standard
// deviation of the per-fold accuracies.
type Metrics struct {
	Accuracy    float64 `json:"accuracy"`
	AccuracyStd float64 `json:"accuracy_std"`
	ROCAUC      float64 `json:"roc_auc"`
	LogLoss     float64 `json:"log_loss"`
	Folds       int     `json:"folds"`
	Repeats     int     `json:"repeats"`
}

// EncodeArtifact validates a, sets a.Checksum and returns its JSON encoding: indented by two
// spaces, with a trailing newline. The bytes depend only on a's contents (struct fields in
// declaration order, shortest round-trip floats), so equal artifacts encode identically.
// It returns an error wrapping ErrInvalidArtifact when a is not a valid artifact.
func EncodeArtifact(a *Artifact) ([]byte, error) {
	if a == nil {
		return nil, fmt.Errorf("encode artifact: %w: nil", ErrInvalidArtifact)
	}
	if err := a.validate(); err != nil {
		return nil, fmt.Errorf("encode artifact: %w", err)
	}
	unsummed := *a
	unsummed.Checksum = ""
	b, err := marshalArtifact(&unsummed)
	if err != nil {
		return nil, fmt.Errorf("encode artifact: %w", err)
	}
	sum := sha256.Sum256(b)
	a.Checksum = checksumPrefix + hex.EncodeToString(sum[:])
	b, err = marshalArtifact(a)
	if err != nil {
		return nil, fmt.Errorf("encode artifact: %w", err)
	}
	return b, nil
}

func marshalArtifact(a *Artifact) ([]byte, error) {
	b, err := json.MarshalIndent(a, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// ParseArtifact verifies b's checksum and decodes it, without building a Model. It returns
// an error wrapping ErrInvalidArtifact when b is not a complete JSON artifact (truncated,
// malformed, unknown fields, missing checksum, invalid contents) and one wrapping
// ErrChecksum when b's bytes do not hash to the recorded checksum.
func ParseArtifact(b []byte) (*Artifact, error) {
	if !json.Valid(b) {
		return nil, fmt.Errorf("decode artifact: %w: not a complete JSON document", ErrInvalidArtifact)
	}
	recorded, err := verifyChecksum(b)
	if err != nil {
		return nil, fmt.Errorf("decode artifact: %w", err)
	}
	var a Artifact
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&a); err != nil {
		return nil, fmt.Errorf("decode artifact: %w: %w", ErrInvalidArtifact, err)
	}
	if a.Checksum != recorded {
		return nil, fmt.Errorf("decode artifact: %w: checksum field is not the last one", ErrInvalidArtifact)
	}
	if err := a.validate(); err != nil {
		return nil, fmt.Errorf("decode artifact: %w", err)
	}
	return &a, nil
}

// DecodeArtifact verifies b's checksum, decodes the artifact and builds its Model. Errors
// wrap ErrChecksum (the bytes were altered) or ErrInvalidArtifact (truncated, malformed or
// invalid contents); see ParseArtifact.
func DecodeArtifact(b []byte) (*Model, error) {
	a, err := ParseArtifact(b)
	if err != nil {
		return nil, err
	}
	return NewModel(a)
}

// verifyChecksum finds the last "checksum" field of b, hashes b with that field's value
// emptied and compares. It returns the recorded value.
func verifyChecksum(b []byte) (string, error) {
	key := []byte(`"checksum": "`)
	i := bytes.LastIndex(b, key)
	if i < 0 {
		return "", fmt.Errorf("%w: no checksum field", ErrInvalidArtifact)
	}
	start := i + len(key)
	n := bytes.IndexByte(b[start:], '"')
	if n < 0 {
		return "", fmt.Errorf("%w: unterminated checksum", ErrInvalidArtifact)
	}
	end := start + n
	recorded := string(b[start:end])
	h := sha256.New()
	h.Write(b[:start])
	h.Write(b[end:])
	want := checksumPrefix + hex.EncodeToString(h.Sum(nil))
	if recorded != want {
		return "", fmt.Errorf("%w: recorded %q, content hashes to %q", ErrChecksum, truncateString(recorded, 80), want)
	}
	return recorded, nil
}

func truncateString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// validate checks the artifact's structure; errors wrap ErrInvalidArtifact.
func (a *Artifact) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if a.Name != "" && !nameRE.MatchString(a.Name) {
		bad("name %q does not match %s", a.Name, NamePattern)
	}
	if a.Kind != KindLogistic && a.Kind != KindMLP {
		bad("kind %q is not %q or %q", a.Kind, KindLogistic, KindMLP)
	}
	if !versionRE.MatchString(a.Version) {
		bad("version %q is not vMAJOR.MINOR.PATCH", a.Version)
	}
	if a.InputSize <= 0 {
		bad("input_size %d is not positive", a.InputSize)
	}
	if len(a.FeatureNames) != a.InputSize {
		bad("%d feature_names for input_size %d", len(a.FeatureNames), a.InputSize)
	}
	if a.PositiveClass == "" || a.NegativeClass == "" || a.PositiveClass == a.NegativeClass {
		bad("positive_class %q and negative_class %q must be distinct and non-empty", a.PositiveClass, a.NegativeClass)
	}
	if len(a.Variants) == 0 {
		bad("no variants")
	}
	seen := make(map[Preprocessing]bool, len(a.Variants))
	for i := range a.Variants {
		v := &a.Variants[i]
		if err := v.validate(a.Kind, a.InputSize); err != nil {
			bad("variants[%d] (%s): %w", i, v.Preprocessing, err)
		}
		if seen[v.Preprocessing] {
			bad("variants[%d]: duplicate preprocessing %q", i, v.Preprocessing)
		}
		seen[v.Preprocessing] = true
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalidArtifact, errors.Join(errs...))
	}
	return nil
}

func (v *Variant) validate(kind string, d int) error {
	if !v.Preprocessing.Valid() {
		return fmt.Errorf("unknown preprocessing %q", v.Preprocessing)
	}
	if d <= 0 {
		return nil // reported by the artifact
	}
	if err := v.Scaler.validate(d); err != nil {
		return err
	}
	if !allFinite(v.Metrics.Accuracy, v.Metrics.AccuracyStd, v.Metrics.ROCAUC, v.Metrics.LogLoss) {
		return errors.New("metrics are not finite")
	}
	switch kind {
	case KindLogistic:
		if v.Logistic == nil || v.MLP != nil {
			return errors.New("a logistic_regression variant needs logistic weights and no mlp weights")
		}
		if len(v.Logistic.Weights) != d {
			return fmt.Errorf("%d logistic weights, want %d", len(v.Logistic.Weights), d)
		}
		if !allFinite(v.Logistic.Weights...) || !finite(v.Logistic.Bias) {
			return errors.New("logistic weights are not finite")
		}
	case KindMLP:
		w := v.MLP
		if w == nil || v.Logistic != nil {
			return errors.New("an mlp variant needs mlp weights and no logistic weights")
		}
		if w.Activation != ActivationTanh {
			return fmt.Errorf("activation %q is not %q", w.Activation, ActivationTanh)
		}
		h := len(w.HiddenWeights)
		if h == 0 || len(w.HiddenBias) != h || len(w.OutputWeights) != h {
			return fmt.Errorf("%d hidden weight rows, %d hidden biases, %d output weights: want equal and > 0",
				h, len(w.HiddenBias), len(w.OutputWeights))
		}
		for j, row := range w.HiddenWeights {
			if len(row) != d {
				return fmt.Errorf("hidden_weights[%d] has %d weights, want %d", j, len(row), d)
			}
			if !allFinite(row...) {
				return fmt.Errorf("hidden_weights[%d] are not finite", j)
			}
		}
		if !allFinite(w.HiddenBias...) || !allFinite(w.OutputWeights...) || !finite(w.OutputBias) {
			return errors.New("mlp weights are not finite")
		}
	}
	return nil
}

func allFinite(xs ...float64) bool {
	for _, x := range xs {
		if !finite(x) {
			return false
		}
	}
	return true
}
