package inference

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
	"gonum.org/v1/gonum/floats"
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

	// hidden recycles the MLP's hidden activations, one *[]float64 of the hidden width per
	// row in flight (gonum's kernels are assembly, which would make a stack buffer escape).
	hidden sync.Pool
}

// getHidden returns a buffer of h values from the pool; putHidden gives it back.
func (m *Model) getHidden(h int) *[]float64 {
	b, _ := m.hidden.Get().(*[]float64)
	if b == nil || cap(*b) < h {
		s := make([]float64, h)
		b = &s
	}
	*b = (*b)[:h]
	return b
}

func (m *Model) putHidden(b *[]float64) { m.hidden.Put(b) }

// variant is a Variant prepared for prediction on unscaled inputs: the scaler is folded into
// the first layer (see foldScaler), so that a row goes through the model's products as it
// comes, with no scaling pass and no copy. Each row is computed on its own by predictRow,
// which PredictOne and PredictBatch share: they are bit-identical by construction.
type variant struct {
	prep    Preprocessing
	metrics Metrics
	d       int // input size

	// KindLogistic: p = sigmoid(w·x + b).
	w []float64 // d
	b float64

	// KindMLP: p = sigmoid(w2·tanh(W1 x + b1) + b2).
	h  int       // hidden units
	w1 []float64 // h×d, row-major: one row of weights per hidden unit
	b1 []float64 // h
	w2 []float64 // h
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
		v, err := newVariant(a.Kind, a.InputSize, av)
		if err != nil {
			return nil, fmt.Errorf("new model: %w: variant %s: %w", ErrInvalidArtifact, av.Preprocessing, err)
		}
		m.variants = append(m.variants, v)
	}
	return m, nil
}

// newVariant prepares a validated Variant of the given kind and input size for prediction,
// folding its scaler into new slices. It fails when a folded weight or bias is not finite
// (weights so large, or scales so small, that w/s overflows).
func newVariant(kind string, d int, av Variant) (*variant, error) {
	v := &variant{prep: av.Preprocessing, metrics: av.Metrics, d: d}
	switch kind {
	case KindLogistic:
		v.w = make([]float64, d)
		v.b = foldScaler(v.w, av.Logistic.Weights, av.Logistic.Bias, av.Scaler)
		if !allFinite(v.w...) || !finite(v.b) {
			return nil, errors.New("logistic weights overflow once folded with the scaler")
		}
	case KindMLP:
		v.h = len(av.MLP.HiddenWeights)
		v.w1 = make([]float64, v.h*d)
		v.b1 = make([]float64, v.h)
		for j, row := range av.MLP.HiddenWeights {
			v.b1[j] = foldScaler(v.w1[j*d:(j+1)*d], row, av.MLP.HiddenBias[j], av.Scaler)
		}
		if !allFinite(v.w1...) || !allFinite(v.b1...) {
			return nil, errors.New("hidden weights overflow once folded with the scaler")
		}
		v.w2 = slices.Clone(av.MLP.OutputWeights)
		v.b2 = av.MLP.OutputBias
	}
	return v, nil
}

// foldScaler writes into dst the weights w of a unit that reads scaled inputs
// (x - Center)/Scale, rewritten for unscaled inputs x, and returns the unit's bias b
// rewritten likewise:
//
//	w·((x - c)/s) + b = Σ (w_i/s_i)·x_i + (b - Σ (w_i/s_i)·c_i)
//
// The two forms differ only by rounding: a few 1e-14 on the logits of the shipped models,
// a few 1e-15 on their probabilities (TestFoldedModelMatchesScaled checks the bound).
func foldScaler(dst, w []float64, b float64, s Scaler) float64 {
	for i, wi := range w {
		dst[i] = wi / s.Scale[i]
		b -= dst[i] * s.Center[i]
	}
	return b
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
// or infinite feature) or ErrUnsupportedPreprocessing. Its result is bit-identical to
// PredictBatch's for the same row.
func (m *Model) PredictOne(features []float64, prep string) (float64, error) {
	v, err := m.lookup(prep)
	if err != nil {
		return 0, err
	}
	if len(features) != m.InputSize {
		return 0, m.checkRow(features)
	}
	var p float64
	var ok bool
	if v.h == 0 {
		z := v.logit(features)
		p, ok = sigmoid(z), finite(z)
	} else {
		hid := m.getHidden(v.h)
		p, ok = v.mlp(features, *hid)
		m.putHidden(hid)
	}
	if !ok {
		if err := m.checkRow(features); err != nil {
			return 0, err
		}
	}
	return p, nil
}

// PredictBatch writes into out[i] the probability of the positive class for rows[i], scaled
// with the variant for prep; out must have len(rows). Batches of more than a few thousand
// multiply-adds are split between up to GOMAXPROCS goroutines. Errors wrap ErrInputSize or
// ErrInvalidInput (naming the first bad row) or ErrUnsupportedPreprocessing; on error out
// is left unspecified. Each result is bit-identical to PredictOne's for the same row.
func (m *Model) PredictBatch(rows [][]float64, prep string, out []float64) error {
	v, err := m.lookup(prep)
	if err != nil {
		return err
	}
	if len(out) != len(rows) {
		return fmt.Errorf("model %s: %w: %d outputs for %d rows", m.Version, ErrInvalidInput, len(out), len(rows))
	}
	for i, r := range rows {
		if len(r) != m.InputSize {
			// The first bad row may be an earlier one with a NaN or infinite feature.
			return m.checkRows(rows[:i+1])
		}
	}
	workers := min(runtime.GOMAXPROCS(0), len(rows)*v.rowWork()/minParallelWork)
	return m.predictBatch(v, rows, out, workers, max(8, blockWork/v.rowWork()))
}

// predictBatch is PredictBatch on rows of the right length, shared by workers goroutines
// (the calling goroutine is one of them) that take blocks of size rows in turn: the caller
// starts at once and keeps taking blocks while the others wake up, where fixed halves would
// wait for the latest to start.
func (m *Model) predictBatch(v *variant, rows [][]float64, out []float64, workers, size int) error {
	n := len(rows)
	if workers = min(workers, n); workers <= 1 {
		if b := m.predictRange(v, rows, out); b >= 0 {
			return fmt.Errorf("row %d: %w", b, m.checkRow(rows[b]))
		}
		return nil
	}
	blocks := (n + size - 1) / size
	bad := make([]int, blocks) // the first row of each block with a bad feature, or -1
	var next atomic.Int64
	run := func() {
		for {
			b := int(next.Add(1) - 1)
			if b >= blocks {
				return
			}
			lo, hi := b*size, min((b+1)*size, n)
			bad[b] = m.predictRange(v, rows[lo:hi], out[lo:hi])
			if bad[b] >= 0 {
				bad[b] += lo
			}
		}
	}
	var wg sync.WaitGroup
	for range workers - 1 {
		wg.Go(run)
	}
	run()
	wg.Wait()
	for _, b := range bad { // in row order: the first bad row wins
		if b >= 0 {
			return fmt.Errorf("row %d: %w", b, m.checkRow(rows[b]))
		}
	}
	return nil
}

// blockWork is the work, in multiply-adds, of the blocks of rows the goroutines of a split
// batch take in turn: a few µs each.
const blockWork = 10_000

// minParallelWork is the least work, in multiply-adds (see rowWork), that PredictBatch
// gives a goroutine of its own: some 50 µs, against the µs it takes to wake and join one
// (a 1,000-row logistic regression batch, some 16 µs, ran slower on two goroutines).
const minParallelWork = 200_000

// rowWork estimates the work of one row in multiply-adds, counting an activation (one
// exponential and one division) as 25.
func (v *variant) rowWork() int {
	return v.d*max(v.h, 1) + 25*(v.h+1)
}

// predictRange writes the probabilities of rows (of the right length) into out. It stops
// at the first row that has a NaN or infinite feature and returns its index, or returns -1.
func (m *Model) predictRange(v *variant, rows [][]float64, out []float64) int {
	if v.h == 0 {
		// The logits first, then the sigmoids: a tight loop of independent exponentials
		// overlaps them, where one after each dot product would wait for it.
		for i, r := range rows {
			out[i] = v.logit(r)
		}
		for i, z := range out {
			if !finite(z) && m.checkRow(rows[i]) != nil {
				return i
			}
			out[i] = sigmoid(z)
		}
		return -1
	}
	hid := m.getHidden(v.h)
	defer m.putHidden(hid)
	for i, r := range rows {
		p, ok := v.mlp(r, *hid)
		if !ok && m.checkRow(r) != nil {
			return i
		}
		out[i] = p
	}
	return -1
}

// A row's result is checked on the first layer's pre-activations rather than feature by
// feature: every first-layer unit is a dot product over all features, and NaN or ±Inf
// times any weight is NaN or ±Inf (0·±Inf is NaN), which no finite sum undoes, so a NaN or
// infinite feature always makes them non-finite. A first layer can also overflow on huge
// finite features: callers tell both cases apart with checkRow, so that a row is checked
// feature by feature only when something is wrong. logit and mlp are the only arithmetic
// of PredictOne and PredictBatch, which are therefore bit-identical.

// logit returns the logistic regression's logit w·x + b for x of length d; it is NaN or
// infinite when a feature of x is.
func (v *variant) logit(x []float64) float64 {
	return floats.Dot(x, v.w) + v.b
}

// mlp returns the MLP's probability of the positive class for x of length d, using hid (h
// values) as scratch, and whether its first hidden pre-activation is finite (false when a
// feature of x is NaN or infinite).
func (v *variant) mlp(x, hid []float64) (p float64, ok bool) {
	// hid = W1·x: gonum's GEMV kernel computes four hidden units at a time, each over all
	// of x, in an order that depends only on the sizes.
	gonum.Implementation{}.Dgemv(blas.NoTrans, v.h, v.d, 1, v.w1, v.d, x, 1, 0, hid, 1)
	ok = finite(hid[0])
	for j, a := range hid {
		hid[j] = tanh(a + v.b1[j])
	}
	return sigmoid(floats.Dot(hid, v.w2) + v.b2), ok
}

// checkRows returns the error of the first of rows that is of the wrong length or has a
// NaN or infinite feature, prefixed with its index, or nil.
func (m *Model) checkRows(rows [][]float64) error {
	for i, r := range rows {
		if err := m.checkRow(r); err != nil {
			return fmt.Errorf("row %d: %w", i, err)
		}
	}
	return nil
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
