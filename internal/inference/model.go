package inference

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"unsafe"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
	"gonum.org/v1/gonum/floats"
)

// Model is a loaded, verified artifact ready to predict: one version of one kind, with one
// variant per preprocessing. A Model is immutable and safe for concurrent use; callers must
// not modify FeatureNames, and must use the *Model that NewModel or DecodeArtifact returns
// rather than a copy (it holds a sync.Pool of scratch buffers).
type Model struct {
	Name          string   // the model family (Artifact.Name, or UnnamedModel)
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

	// scratch recycles the buffers gonum's kernels read or write (see variant.scratchLen),
	// one *[]float64 per call in flight (the kernels are assembly, which would make a stack
	// buffer escape).
	scratch sync.Pool
}

// getScratch returns a buffer of n values from the pool; putScratch gives it back.
func (m *Model) getScratch(n int) *[]float64 {
	b, _ := m.scratch.Get().(*[]float64)
	if b == nil || cap(*b) < n {
		s := make([]float64, n)
		b = &s
	}
	*b = (*b)[:n]
	return b
}

func (m *Model) putScratch(b *[]float64) { m.scratch.Put(b) }

// variant is a Variant prepared for prediction on unscaled inputs: the scaler is folded into
// the first layer (see foldScaler), so that a row goes through the model's products as it
// comes, with no scaling pass and no copy. PredictOne and PredictBatch share products (the
// logistic regression), mlpProducts (the MLP) and sigmoidInPlace, whose result for a row
// does not depend on the rows computed with it: they are bit-identical (see products).
type variant struct {
	prep    Preprocessing
	metrics Metrics
	d       int // input size

	// KindLogistic: p = sigmoid(w·x + b).
	w []float64 // d
	b float64

	// KindMLP: p = sigmoid(w2·tanh(W1 x + b1) + b2).
	h    int       // hidden units
	w1   []float64 // h×d, row-major: one row of weights per hidden unit
	b1x2 []float64 // h: 2·b1 (see mlpProducts)
	w2   []float64 // h
	b2   float64
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
		Name:          cmp.Or(a.Name, UnnamedModel),
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
		v.b1x2 = make([]float64, v.h)
		for j, row := range av.MLP.HiddenWeights {
			v.b1x2[j] = 2 * foldScaler(v.w1[j*d:(j+1)*d], row, av.MLP.HiddenBias[j], av.Scaler)
		}
		if !allFinite(v.w1...) || !allFinite(v.b1x2...) {
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
	var z [1]float64 // the logit less its bias; sigmoidInPlace does not make it escape
	var ok bool
	if v.h == 0 {
		buf := m.getScratch(v.scratchLen())
		rows := [1][]float64{features}
		v.products(rows[:], features, nil, (*buf)[:1])
		z[0] = (*buf)[0]
		m.putScratch(buf)
		ok = sigmoidInPlace(z[:], v.b)
	} else {
		hid := m.getScratch(v.scratchLen())
		z[0], ok = v.mlpProducts(features, *hid)
		m.putScratch(hid)
		sigmoidInPlace(z[:], v.b2)
	}
	if !ok {
		if err := m.checkRow(features); err != nil {
			return 0, err
		}
	}
	return z[0], nil
}

// PredictBatch writes into out[i] the probability of the positive class for rows[i], scaled
// with the variant for prep; out must have len(rows). Batches of more than a few thousand
// multiply-adds are split between up to GOMAXPROCS goroutines. Errors wrap ErrInputSize or
// ErrInvalidInput (naming the first bad row) or ErrUnsupportedPreprocessing; on error out
// is left unspecified. Each result is bit-identical to PredictOne's for the same row.
//
// The logistic regression is fastest on rows that are consecutive slices of one buffer,
// rows[i] = buf[i*InputSize : (i+1)*InputSize] (capacity running on to the end of buf):
// they are one matrix-vector product. Rows allocated separately, or sliced with their
// capacity cut at their end, are first copied together, 16 at a time (see products).
func (m *Model) PredictBatch(rows [][]float64, prep string, out []float64) error {
	v, err := m.lookup(prep)
	if err != nil {
		return err
	}
	if len(out) != len(rows) {
		return fmt.Errorf("model %s: %w: %d outputs for %d rows", m.Version, ErrInvalidInput, len(out), len(rows))
	}
	flat, err := m.checkLengths(rows)
	if err != nil {
		return err
	}
	workers := min(runtime.GOMAXPROCS(0), len(rows)*v.rowWork()/minParallelWork)
	return m.predictBatch(v, rows, flat, out, workers, max(8, blockWork/v.rowWork()))
}

// checkLengths returns the error of the first of rows that is of the wrong length (or an
// earlier row with a NaN or infinite feature), prefixed with its index. Otherwise it
// returns the rows as one flat slice when they lie back to back within the first row's
// capacity (rows[i] is rows[0][i*d:(i+1)*d]; see products), or nil. One pass does both,
// comparing each row's address with where it would be in the first row's buffer, as plain
// numbers (never turned back into pointers): walking the rows twice, or indexing the
// buffer with its bounds checks, cost a twentieth of the logistic regression's time.
func (m *Model) checkLengths(rows [][]float64) ([]float64, error) {
	if len(rows) == 0 {
		return nil, nil
	}
	d := m.InputSize
	at := uintptr(unsafe.Pointer(unsafe.SliceData(rows[0])))
	step := uintptr(d) * 8
	one := cap(rows[0]) >= len(rows)*d
	for i, r := range rows {
		if len(r) != d {
			// The first bad row may be an earlier one with a NaN or infinite feature.
			return nil, m.checkRows(rows[:i+1])
		}
		if uintptr(unsafe.Pointer(unsafe.SliceData(r))) != at {
			one = false
		}
		at += step
	}
	if !one {
		return nil, nil
	}
	return rows[0][:len(rows)*d], nil
}

// predictBatch is PredictBatch on rows of the right length (flat: as checkLengths returns
// them), shared by workers goroutines (the calling goroutine is one of them) that take
// blocks of size rows in turn: the caller starts at once and keeps taking blocks while the
// others wake up, where fixed halves would wait for the latest to start.
func (m *Model) predictBatch(v *variant, rows [][]float64, flat, out []float64, workers, size int) error {
	n, d := len(rows), v.d
	if workers = min(workers, n); workers <= 1 {
		if b := m.predictRange(v, rows, flat, out); b >= 0 {
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
			var f []float64
			if flat != nil {
				f = flat[lo*d : hi*d]
			}
			bad[b] = m.predictRange(v, rows[lo:hi], f, out[lo:hi])
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
// batch take in turn: small, so that the goroutines share a batch evenly.
const blockWork = 10_000

// minParallelWork is the least work, in multiply-adds (see rowWork), that PredictBatch
// gives a goroutine of its own: enough to pay for waking and joining one on a busy machine.
// It was measured on two cores (README Benchmarks, "Inference").
const minParallelWork = 400_000

// rowWork estimates the work of one row in multiply-adds, counting an activation (one
// exponential and one division) as 25: sigmoidInPlace's Go loop takes about as long per
// value as gonum's GEMV takes for 25 multiply-adds. Its AVX2 assembly, which amd64 CPUs
// that have AVX2 run, takes about 10 (1.5 ns per value against 3.9); minParallelWork was
// measured with the count of 25, and the two would change together.
func (v *variant) rowWork() int {
	return v.d*max(v.h, 1) + 25*(v.h+1)
}

// predictRange writes the probabilities of rows (of the right length; flat: the rows as one
// slice, or nil) into out. It stops at the first row that has a NaN or infinite feature and
// returns its index, or returns -1. The logits come first, then the sigmoids in one tight
// loop, whose independent exponentials overlap where one after each row would wait for it.
func (m *Model) predictRange(v *variant, rows [][]float64, flat, out []float64) int {
	if v.h == 0 {
		var gather []float64
		if flat == nil {
			g := m.getScratch(v.scratchLen())
			defer m.putScratch(g)
			gather = *g
		}
		v.products(rows, flat, gather, out)
		if !sigmoidInPlace(out, v.b) {
			// A logit was NaN or infinite: the first row with a bad feature, if any, is the
			// first bad row (every bad row has a non-finite logit).
			for i, r := range rows {
				if m.checkRow(r) != nil {
					return i
				}
			}
		}
		return -1
	}
	hid := m.getScratch(v.scratchLen())
	defer m.putScratch(hid)
	for i, r := range rows {
		z, ok := v.mlpProducts(r, *hid)
		if !ok && m.checkRow(r) != nil {
			return i
		}
		out[i] = z
	}
	sigmoidInPlace(out, v.b2)
	return -1
}

// A row's result is checked on the first layer's pre-activations rather than feature by
// feature: every first-layer unit is a dot product over all features, and NaN or ±Inf
// times any weight is NaN or ±Inf (0·±Inf is NaN), which no finite sum undoes, so a NaN or
// infinite feature always makes them non-finite. A first layer can also overflow on huge
// finite features: callers tell both cases apart with checkRow, so that a row is checked
// feature by feature only when something is wrong. products, mlpProducts and
// sigmoidInPlace are the only arithmetic of PredictOne and PredictBatch, which are
// therefore bit-identical.

// products writes into out the logistic regression's products w·x of rows (each of length
// d), its logits less the bias; a product is NaN or infinite when a feature of its row is.
//
// Rows that lie back to back in one buffer, as a batch decoded into one buffer has them
// (rows[i] is buf[i*d:(i+1)*d], sliced so that its capacity runs on over the next rows),
// are one matrix: gonum's GEMV goes over them at once, four rows at a time, about twice as
// fast as a dot product per row. flat, when not nil, is all the rows as one slice (rows[i]
// is flat[i*d:(i+1)*d]), as checkLengths finds them. Otherwise products finds the runs of
// such rows (contiguousRows): runs of gatherRows rows or more go through the GEMV where
// they lie, and the rows of shorter runs (separate allocations, rows whose capacity ends
// with them) are copied into gather (gatherRows·d values), gatherRows at a time, and go
// through it there: the copy costs less than a GEMV of one row (which is latency-bound).
// Adjacent addresses alone do not make a run: the allocator places separately made rows
// of the same size back to back, and one slice over two allocations is invalid (the race
// detector's checkptr rejects it); a run is taken only as far as the first row's capacity
// reaches, which proves that it is one buffer.
//
// The result of a row does not depend on where the GEMV finds it. gonum's amd64 kernel sums
// a row's even and odd columns in two lanes, column by column, and then adds the two lanes,
// in the same order whether it computes the row in a block of four, of two or alone; only
// an odd last column is added in a different place (in the blocks, after the lanes are
// added; alone, into the even lane first). So the GEMV goes over an even number of
// columns, and an odd last column is added here, to every row in the same way. (gonum's
// pure Go kernel, on other platforms, takes one plain dot product per row.)
// TestGemvRowIndependence checks the kernel, TestProductsIndependentOfRuns products.
func (v *variant) products(rows [][]float64, flat, gather, out []float64) {
	d, w := v.d, v.w
	even := d &^ 1
	gemv := func(a, y []float64) {
		gonum.Implementation{}.Dgemv(blas.NoTrans, len(y), even, 1, a, d, w, 1, 0, y, 1)
	}
	switch {
	case even == 0:
		clear(out)
	case flat != nil:
		gemv(flat, out)
	default:
		g := 0 // rows copied into gather, the last of them rows[i-1]
		for i := 0; i < len(rows); i++ {
			r := rows[i]
			// Only a row whose capacity holds gatherRows rows can start a long run.
			if cap(r) >= gatherRows*d {
				if n := contiguousRows(rows[i:], d); n >= gatherRows {
					if g > 0 {
						gemv(gather, out[i-g:i])
						g = 0
					}
					gemv(r[:n*d], out[i:i+n])
					i += n - 1
					continue
				}
			}
			copy(gather[g*d:(g+1)*d], r)
			if g++; g == gatherRows {
				gemv(gather, out[i+1-g:i+1])
				g = 0
			}
		}
		if g > 0 {
			gemv(gather, out[len(rows)-g:])
		}
	}
	if even < d {
		last := w[d-1]
		for i, r := range rows {
			out[i] += float64(r[d-1] * last)
		}
	}
}

// gatherRows is the number of rows products copies together for one GEMV, and the least
// number of back-to-back rows it takes where they lie: 16 rows of 60 values fill 7.5 KiB.
const gatherRows = 16

// scratchLen is the length of v's scratch buffers (see Model.scratch): the hidden
// activations of an MLP, the rows products gathers for a logistic regression (PredictOne
// takes one value of it), so that the buffers in the pool all fit.
func (v *variant) scratchLen() int {
	if v.h > 0 {
		return v.h
	}
	return gatherRows * v.d
}

// contiguousRows returns how many of rows, from the first (at least one), lie back to back
// within the first row's capacity: rows[k] is rows[0][k*d:(k+1)*d] for each of them. Every
// row has length d > 0. Like checkLengths, it compares addresses as numbers.
func contiguousRows(rows [][]float64, d int) int {
	n := min(len(rows), cap(rows[0])/d)
	at := uintptr(unsafe.Pointer(unsafe.SliceData(rows[0])))
	step := uintptr(d) * 8
	k := 1
	for ; k < n; k++ {
		at += step
		if uintptr(unsafe.Pointer(unsafe.SliceData(rows[k]))) != at {
			break
		}
	}
	return k
}

// mlpProducts returns the MLP's logit less its bias, w2·tanh(W1 x + b1), for x of length d,
// using hid (h values) as scratch, and whether its first hidden pre-activation is finite
// (false when a feature of x is NaN or infinite).
func (v *variant) mlpProducts(x, hid []float64) (z float64, ok bool) {
	// hid = 2·(W1·x + b1), the doubled pre-activations that tanhOfDoubledInPlace takes: the
	// GEMV adds 2·(W1·x) to hid = 2·b1, which is exactly twice W1·x + b1 (doubling is
	// exact). gonum's GEMV kernel computes four hidden units at a time, each over all of x,
	// in an order that depends only on the sizes.
	copy(hid, v.b1x2)
	gonum.Implementation{}.Dgemv(blas.NoTrans, v.h, v.d, 2, v.w1, v.d, x, 1, 1, hid, 1)
	ok = finite(hid[0])
	tanhOfDoubledInPlace(hid)
	return floats.Dot(hid, v.w2), ok
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
