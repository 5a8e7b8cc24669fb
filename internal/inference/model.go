package inference

import (
	"fmt"
	"math"
	"slices"

	"gonum.org/v1/gonum/mat"
)

// Model is a loaded, verified artifact ready to predict: one version of one kind, with one
// variant per preprocessing. A Model is immutable and safe for concurrent use; callers must
// not modify FeatureNames.
type Model struct {
	Version       string   // vMAJOR.MINOR.PATCH
	Kind          string   // KindLogistic or KindMLP
	InputSize     int      // number of features every input must have
	FeatureNames  []string // InputSize names, in input order
	PositiveClass string   // the class whose probability the model predicts
	NegativeClass string   // the other class
	DatasetSHA256 string   // sha256 of the training data file
	CreatedBy     string   // how the artifact was made
	Checksum      string   // the artifact's checksum, "sha256:<hex>"

	variants []*variant // in artifact order
}

// variant is a Variant prepared for prediction. The weights are stored input-major (w is
// d×1, w1t is d×h) so that PredictBatch's matrix products (gonum's Dgemm, no transpose)
// accumulate every dot product in input order, exactly like PredictOne's loops.
type variant struct {
	prep    Preprocessing
	scaler  Scaler
	metrics Metrics

	// KindLogistic: p = sigmoid(w·x + b).
	w *mat.Dense // d×1
	b float64

	// KindMLP: p = sigmoid(w2·tanh(W1 x + b1) + b2).
	w1t *mat.Dense // d×h, W1ᵀ
	b1  []float64
	w2  *mat.Dense // h×1
	b2  float64
}

// NewModel validates a and builds its Model; the Model copies what it keeps, so a may be
// reused. Checksum is copied as is (DecodeArtifact is the function that verifies it). It
// returns an error wrapping ErrInvalidArtifact when a is structurally invalid.
func NewModel(a *Artifact) (*Model, error) {
	if a == nil {
		return nil, fmt.Errorf("new model: %w: nil artifact", ErrInvalidArtifact)
	}
	if err := a.validate(); err != nil {
		return nil, fmt.Errorf("new model: %w", err)
	}
	m := &Model{
		Version:       a.Version,
		Kind:          a.Kind,
		InputSize:     a.InputSize,
		FeatureNames:  slices.Clone(a.FeatureNames),
		PositiveClass: a.PositiveClass,
		NegativeClass: a.NegativeClass,
		DatasetSHA256: a.DatasetSHA256,
		CreatedBy:     a.CreatedBy,
		Checksum:      a.Checksum,
	}
	for _, av := range a.Variants {
		m.variants = append(m.variants, newVariant(a.Kind, a.InputSize, av))
	}
	return m, nil
}

// newVariant prepares a validated Variant of the given kind and input size for prediction,
// copying its slices.
func newVariant(kind string, d int, av Variant) *variant {
	v := &variant{
		prep:    av.Preprocessing,
		scaler:  Scaler{Center: slices.Clone(av.Scaler.Center), Scale: slices.Clone(av.Scaler.Scale)},
		metrics: av.Metrics,
	}
	switch kind {
	case KindLogistic:
		v.w = mat.NewDense(d, 1, slices.Clone(av.Logistic.Weights))
		v.b = av.Logistic.Bias
	case KindMLP:
		h := len(av.MLP.HiddenWeights)
		v.w1t = mat.NewDense(d, h, nil)
		for j, row := range av.MLP.HiddenWeights {
			v.w1t.SetCol(j, row)
		}
		v.b1 = slices.Clone(av.MLP.HiddenBias)
		v.w2 = mat.NewDense(h, 1, slices.Clone(av.MLP.OutputWeights))
		v.b2 = av.MLP.OutputBias
	}
	return v
}

// Preprocessings returns the names of the model's preprocessings, in artifact order.
func (m *Model) Preprocessings() []string {
	out := make([]string, len(m.variants))
	for i, v := range m.variants {
		out[i] = string(v.prep)
	}
	return out
}

// Supports reports whether the model has a variant for the preprocessing prep.
func (m *Model) Supports(prep string) bool {
	return m.variant(prep) != nil
}

// Metrics returns the cross-validated metrics of the variant for prep, and whether the
// model has that variant.
func (m *Model) Metrics(prep string) (Metrics, bool) {
	v := m.variant(prep)
	if v == nil {
		return Metrics{}, false
	}
	return v.metrics, true
}

func (m *Model) variant(prep string) *variant {
	for _, v := range m.variants {
		if string(v.prep) == prep {
			return v
		}
	}
	return nil
}

func (m *Model) lookup(prep string) (*variant, error) {
	v := m.variant(prep)
	if v == nil {
		return nil, fmt.Errorf("model %s: %w: %q (have %v)", m.Version, ErrUnsupportedPreprocessing, prep, m.Preprocessings())
	}
	return v, nil
}

// maxStackHidden is the widest hidden layer PredictOne keeps on the stack.
const maxStackHidden = 64

// PredictOne returns the probability of the positive class for one feature vector, scaled
// with the variant for prep. It allocates nothing (for hidden layers up to 64 units).
// Errors wrap ErrInputSize (len(features) != InputSize), ErrInvalidInput (a NaN or infinite
// feature) or ErrUnsupportedPreprocessing.
func (m *Model) PredictOne(features []float64, prep string) (float64, error) {
	v, err := m.lookup(prep)
	if err != nil {
		return 0, err
	}
	if err := m.checkRow(features); err != nil {
		return 0, err
	}
	center, scale := v.scaler.Center, v.scaler.Scale
	var z float64
	switch m.Kind {
	case KindLogistic:
		w := v.w.RawMatrix().Data
		for i, x := range features {
			z += (x - center[i]) / scale[i] * w[i]
		}
		z += v.b
	case KindMLP:
		w1t := v.w1t.RawMatrix()
		h := w1t.Cols
		var buf [maxStackHidden]float64
		var acc []float64
		if h <= maxStackHidden {
			acc = buf[:h]
		} else {
			acc = make([]float64, h)
		}
		for i, x := range features {
			xs := (x - center[i]) / scale[i]
			row := w1t.Data[i*w1t.Stride : i*w1t.Stride+h]
			for j, w := range row {
				acc[j] += xs * w
			}
		}
		w2 := v.w2.RawMatrix().Data
		for j, a := range acc {
			z += math.Tanh(a+v.b1[j]) * w2[j]
		}
		z += v.b2
	}
	return sigmoid(z), nil
}

// PredictBatch writes into out[i] the probability of the positive class for rows[i], scaled
// with the variant for prep; out must have len(rows). The whole batch goes through one
// matrix multiplication per layer. Errors wrap ErrInputSize or ErrInvalidInput (naming the
// first bad row) or ErrUnsupportedPreprocessing; on error out is left unspecified.
func (m *Model) PredictBatch(rows [][]float64, prep string, out []float64) error {
	v, err := m.lookup(prep)
	if err != nil {
		return err
	}
	if len(out) != len(rows) {
		return fmt.Errorf("model %s: %w: %d outputs for %d rows", m.Version, ErrInvalidInput, len(out), len(rows))
	}
	if len(rows) == 0 {
		return nil
	}
	for i, r := range rows {
		if err := m.checkRow(r); err != nil {
			return fmt.Errorf("row %d: %w", i, err)
		}
	}
	n, d := len(rows), m.InputSize
	x := mat.NewDense(n, d, nil)
	xd := x.RawMatrix().Data
	for i, r := range rows {
		v.scaler.Transform(xd[i*d:(i+1)*d], r)
	}
	v.forward(m.Kind, x, out)
	return nil
}

// forward computes the positive-class probabilities of the scaled rows of x into out,
// with one matrix product per layer.
func (v *variant) forward(kind string, x *mat.Dense, out []float64) {
	n, _ := x.Dims()
	o := mat.NewDense(n, 1, out)
	switch kind {
	case KindLogistic:
		o.Mul(x, v.w)
		for i := range out {
			out[i] = sigmoid(out[i] + v.b)
		}
	case KindMLP:
		var hid mat.Dense
		hid.Mul(x, v.w1t)
		hr := hid.RawMatrix()
		for i := range hr.Rows {
			row := hr.Data[i*hr.Stride : i*hr.Stride+hr.Cols]
			for j, a := range row {
				row[j] = math.Tanh(a + v.b1[j])
			}
		}
		o.Mul(&hid, v.w2)
		for i := range out {
			out[i] = sigmoid(out[i] + v.b2)
		}
	}
}

func (m *Model) checkRow(r []float64) error {
	if len(r) != m.InputSize {
		return fmt.Errorf("model %s: %w: got %d, want %d", m.Version, ErrInputSize, len(r), m.InputSize)
	}
	for i, x := range r {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return fmt.Errorf("model %s: %w: feature %d is %v", m.Version, ErrInvalidInput, i, x)
		}
	}
	return nil
}

// sigmoid is the logistic function 1/(1+e^-z); it saturates to exactly 0 or 1 for large |z|.
func sigmoid(z float64) float64 {
	return 1 / (1 + math.Exp(-z))
}
