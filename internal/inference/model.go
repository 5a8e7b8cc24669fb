package inference

import (
	"fmt"
	"math"
	"slices"
	"sync"

	"gonum.org/v1/gonum/floats"
	"gonum.org/v1/gonum/mat"
)

// Model is a loaded, verified artifact ready to predict: one version of one kind, with one
// variant per preprocessing. A Model is immutable and safe for concurrent use; callers must
// not modify FeatureNames, and must use the *Model that NewModel or DecodeArtifact returns
// rather than a copy (it holds a sync.Pool of scratch buffers).
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

	// scratch recycles *scratch buffers for PredictOne (gonum's dot product is assembly,
	// which would make a stack buffer escape) and PredictBatch.
	scratch sync.Pool
}

// scratch is the working memory of a prediction: the scaled inputs and the hidden
// activations, one row per sample.
type scratch struct{ x, h []float64 }

// getScratch returns a scratch whose x and h hold at least nx and nh values.
func (m *Model) getScratch(nx, nh int) *scratch {
	s, _ := m.scratch.Get().(*scratch)
	if s == nil {
		s = &scratch{}
	}
	if cap(s.x) < nx {
		s.x = make([]float64, nx)
	}
	if cap(s.h) < nh {
		s.h = make([]float64, nh)
	}
	s.x, s.h = s.x[:nx], s.h[:nh]
	return s
}

// variant is a Variant prepared for prediction. Every layer's weights are stored one row
// per output unit, so that each output is one gonum dot product (f64.DotUnitary) of an
// input row and a weight row: PredictBatch's matrix products (X·Wᵀ) and PredictOne's
// floats.Dot calls then perform the same operations in the same order.
type variant struct {
	prep    Preprocessing
	scaler  affine
	metrics Metrics

	// KindLogistic: p = sigmoid(w·x + b).
	w *mat.Dense // 1×d
	b float64

	// KindMLP: p = sigmoid(w2·tanh(W1 x + b1) + b2).
	w1 *mat.Dense // h×d
	b1 []float64
	w2 *mat.Dense // 1×h
	b2 float64
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
		scaler:  av.Scaler.prepare(),
		metrics: av.Metrics,
	}
	switch kind {
	case KindLogistic:
		v.w = mat.NewDense(1, d, slices.Clone(av.Logistic.Weights))
		v.b = av.Logistic.Bias
	case KindMLP:
		h := len(av.MLP.HiddenWeights)
		v.w1 = mat.NewDense(h, d, nil)
		for j, row := range av.MLP.HiddenWeights {
			v.w1.SetRow(j, row)
		}
		v.b1 = slices.Clone(av.MLP.HiddenBias)
		v.w2 = mat.NewDense(1, h, slices.Clone(av.MLP.OutputWeights))
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

// PredictOne returns the probability of the positive class for one feature vector, scaled
// with the variant for prep. It allocates nothing in the steady state (its buffers are
// recycled). Errors wrap ErrInputSize (len(features) != InputSize), ErrInvalidInput (a NaN
// or infinite feature) or ErrUnsupportedPreprocessing.
func (m *Model) PredictOne(features []float64, prep string) (float64, error) {
	v, err := m.lookup(prep)
	if err != nil {
		return 0, err
	}
	if err := m.checkRow(features); err != nil {
		return 0, err
	}
	s := m.getScratch(m.InputSize, v.hidden())
	defer m.scratch.Put(s)
	x := s.x
	v.scaler.apply(x, features)

	var z float64
	switch m.Kind {
	case KindLogistic:
		z = floats.Dot(x, v.w.RawMatrix().Data) + v.b
	case KindMLP:
		w1 := v.w1.RawMatrix()
		hid := s.h
		for j := range hid {
			hid[j] = tanh(floats.Dot(x, w1.Data[j*w1.Stride:j*w1.Stride+w1.Cols]) + v.b1[j])
		}
		z = floats.Dot(hid, v.w2.RawMatrix().Data) + v.b2
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
	s := m.getScratch(n*d, n*v.hidden())
	defer m.scratch.Put(s)
	x := mat.NewDense(n, d, s.x)
	for i, r := range rows {
		v.scaler.apply(s.x[i*d:(i+1)*d], r)
	}
	v.forward(m.Kind, x, out, s.h)
	return nil
}

// hidden returns the width of the MLP's hidden layer, 0 for logistic regression.
func (v *variant) hidden() int {
	if v.w1 == nil {
		return 0
	}
	return v.w1.RawMatrix().Rows
}

// forward computes the positive-class probabilities of the scaled rows of x into out,
// with one matrix product per layer. hid, if not nil, is scratch space for the hidden
// activations (n·hidden values).
func (v *variant) forward(kind string, x *mat.Dense, out, hid []float64) {
	n, _ := x.Dims()
	o := mat.NewDense(n, 1, out)
	switch kind {
	case KindLogistic:
		o.Mul(x, v.w.T())
		for i := range out {
			out[i] = sigmoid(out[i] + v.b)
		}
	case KindMLP:
		if hid == nil {
			hid = make([]float64, n*v.hidden())
		}
		act := mat.NewDense(n, v.hidden(), hid)
		act.Mul(x, v.w1.T())
		hr := act.RawMatrix()
		for i := range hr.Rows {
			row := hr.Data[i*hr.Stride : i*hr.Stride+hr.Cols]
			for j, a := range row {
				row[j] = tanh(a + v.b1[j])
			}
		}
		o.Mul(act, v.w2.T())
		for i := range out {
			out[i] = sigmoid(out[i] + v.b2)
		}
	}
}

func (m *Model) checkRow(r []float64) error {
	if len(r) != m.InputSize {
		return fmt.Errorf("model %s: %w: got %d, want %d", m.Version, ErrInputSize, len(r), m.InputSize)
	}
	var acc float64
	for _, x := range r {
		acc += x - x // 0 for finite x, NaN for NaN or ±Inf
	}
	if acc == 0 {
		return nil
	}
	for i, x := range r {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return fmt.Errorf("model %s: %w: feature %d is %v", m.Version, ErrInvalidInput, i, x)
		}
	}
	return nil
}

// tanh is the MLP's hidden activation, (e^2x - 1)/(e^2x + 1). It differs from math.Tanh by
// less than 1e-15 (the relative error grows as |x| shrinks, the absolute one does not) and
// costs one exponential, which inlines: training evaluates it millions of times, and under
// the race detector math.Tanh's table lookups dominated the training time. Above 20, where
// the result rounds to exactly 1 as math.Tanh's does, x is clamped so that e^2x cannot
// overflow; below -20, e^2x vanishes and the result is exactly -1.
func tanh(x float64) float64 {
	e := math.Exp(2 * min(x, 20))
	return (e - 1) / (e + 1)
}

// sigmoid is the logistic function 1/(1+e^-z); it saturates to exactly 0 or 1 for large |z|.
func sigmoid(z float64) float64 {
	return 1 / (1 + math.Exp(-z))
}
