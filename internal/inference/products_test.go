package inference

import (
	"fmt"
	"math"
	"slices"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/require"
	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// TestGemvRowIndependence checks the property of gonum's GEMV that products relies on: with
// an even number of columns, a row's result has the same bits whether the row is computed
// alone (m = 1) or in a call over many rows, in any position (the blocks of four, the m%4
// tail of two and one). With an odd number of columns it does not hold, which is why products
// adds an odd last column itself; the count of differing rows is logged.
func TestGemvRowIndependence(t *testing.T) {
	t.Parallel()
	rng := newRand(21, 22)
	for _, n := range []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 16, 30, 59, 60, 61, 64} {
		diff, total := 0, 0
		for range 300 {
			m := 1 + rng.intn(13)
			a := make([]float64, m*n)
			for i := range a {
				// Magnitudes spread over many binades, so that the order of the sums shows.
				a[i] = rng.uniform(1) * math.Exp(rng.uniform(12))
			}
			w := make([]float64, n)
			for i := range w {
				w[i] = rng.uniform(2)
			}
			y := make([]float64, m)
			for i := range y {
				y[i] = rng.uniform(1) // the bias, added with beta = 1 as products does
			}
			all := slices.Clone(y)
			gonum.Implementation{}.Dgemv(blas.NoTrans, m, n, 1, a, n, w, 1, 1, all, 1)
			for i := range m {
				one := []float64{y[i]}
				gonum.Implementation{}.Dgemv(blas.NoTrans, 1, n, 1, a[i*n:(i+1)*n], n, w, 1, 1, one, 1)
				total++
				if math.Float64bits(one[0]) != math.Float64bits(all[i]) {
					diff++
					if n%2 == 0 {
						t.Fatalf("n = %d, m = %d, row %d: %v alone, %v among %d rows", n, m, i, one[0], all[i], m)
					}
				}
			}
		}
		t.Logf("%2d columns: %3d of %d rows differ between m = 1 and m > 1", n, diff, total)
	}
}

// logisticArtifactD is a logistic regression artifact of d features with two variants and
// pseudo-random weights and scalers.
func logisticArtifactD(d int, seed uint64) *Artifact {
	rng := newRand(seed, 7)
	a := testArtifact(KindLogistic)
	a.InputSize = d
	a.FeatureNames = nil
	for j := range d {
		a.FeatureNames = append(a.FeatureNames, fmt.Sprintf("f%d", j))
	}
	for i := range a.Variants {
		v := &a.Variants[i]
		v.Scaler = Scaler{Center: make([]float64, d), Scale: make([]float64, d)}
		v.Logistic = &LogisticWeights{Weights: make([]float64, d), Bias: rng.uniform(1)}
		for j := range d {
			v.Scaler.Center[j] = rng.uniform(2)
			v.Scaler.Scale[j] = 0.1 + rng.float64()
			v.Logistic.Weights[j] = rng.uniform(3)
		}
	}
	return a
}

// batchLayout is a batch of rows laid out in memory one way, and the runs of it that
// contiguousRows must find.
type batchLayout struct {
	name string
	rows [][]float64
	runs []int
}

// layouts lays the values of src (rows of d) out in memory in several ways.
func layouts(src [][]float64, d int, seed uint64) []batchLayout {
	n := len(src)
	var out []batchLayout

	// One flat buffer, each row's capacity running on to its end: one run.
	flat := make([]float64, n*d)
	rows := make([][]float64, n)
	for i := range rows {
		rows[i] = flat[i*d : (i+1)*d]
		copy(rows[i], src[i])
	}
	out = append(out, batchLayout{"flat", rows, []int{n}})
	// The same rows from the fourth on: a run that starts inside its buffer.
	if n > 3 {
		out = append(out, batchLayout{"flat-from-3", rows[3:], []int{n - 3}})
	}

	// One flat buffer, each row's capacity cut at its end (three-index slices): adjacent in
	// memory, but not provably one buffer, so every row is a run of its own.
	flat = make([]float64, n*d)
	capped := make([][]float64, n)
	ones := make([]int, n)
	for i := range capped {
		capped[i] = flat[i*d : (i+1)*d : (i+1)*d]
		copy(capped[i], src[i])
		ones[i] = 1
	}
	out = append(out, batchLayout{"capped", capped, ones})

	// Separate allocations, which the allocator often places back to back.
	sep := make([][]float64, n)
	for i := range sep {
		sep[i] = slices.Clone(src[i])
	}
	out = append(out, batchLayout{"separate", sep, ones})

	// Runs of 1 to 9 rows and of about gatherRows rows or more, each in a buffer of its own
	// with room for one more row, some with a gap (a row of the buffer skipped) and some
	// followed by their last row again (the same slice), so that runs start and end in
	// every position and products both gathers rows and takes them where they lie.
	rng := newRand(seed, 8)
	var mixed [][]float64
	var runs []int
	for i := 0; i < n; {
		l := 1 + rng.intn(9)
		if rng.intn(4) == 0 {
			l = gatherRows - 2 + rng.intn(30) // runs about as long as gatherRows, and longer
		}
		l = min(l, n-i)
		buf := make([]float64, (l+1)*d)
		gapAt := -1
		if l > 1 && rng.intn(4) == 0 {
			gapAt = 1 + rng.intn(l-1)
		}
		off, k := 0, 0
		for j := range l {
			if j == gapAt {
				runs = append(runs, k)
				off, k = d, 0
			}
			r := buf[off+j*d : off+(j+1)*d]
			copy(r, src[i+j])
			mixed = append(mixed, r)
			k++
		}
		runs = append(runs, k)
		i += l
		if rng.intn(3) == 0 {
			mixed = append(mixed, mixed[len(mixed)-1])
			runs = append(runs, 1)
		}
	}
	out = append(out, batchLayout{"mixed", mixed, runs})
	return out
}

// flatOf returns checkLengths' flat view of rows (of the right length), or nil.
func flatOf(t testing.TB, m *Model, rows [][]float64) []float64 {
	t.Helper()
	flat, err := m.checkLengths(rows)
	require.NoError(t, err)
	return flat
}

// requireRuns checks that contiguousRows splits rows into runs of the given lengths.
func requireRuns(t *testing.T, rows [][]float64, d int, runs []int, name string) {
	t.Helper()
	var got []int
	for i := 0; i < len(rows); {
		k := contiguousRows(rows[i:], d)
		got = append(got, k)
		i += k
	}
	require.Equal(t, runs, got, name)
}

// TestContiguousRows checks what products takes as one matrix: rows back to back within the
// first row's capacity, and nothing else, in particular not rows that are merely adjacent
// in memory.
func TestContiguousRows(t *testing.T) {
	t.Parallel()
	const d = 5
	src := randomRows(40, d, 23)
	for _, l := range layouts(src, d, 24) {
		requireRuns(t, l.rows, d, l.runs, l.name)
	}

	// Separate allocations are never a run, however the allocator placed them (it usually
	// puts rows of one size back to back).
	sep := make([][]float64, 64)
	for i := range sep {
		sep[i] = make([]float64, 60)
	}
	adjacent := 0
	for i := range sep {
		if i > 0 && uintptr(unsafe.Pointer(&sep[i][0])) == uintptr(unsafe.Pointer(&sep[i-1][0]))+60*8 {
			adjacent++
		}
		require.Equal(t, 1, contiguousRows(sep[i:], 60), "row %d", i)
	}
	t.Logf("%d of %d separately allocated 60-value rows lie right after the previous one", adjacent, len(sep)-1)

	// A run stops where the first row's capacity does, even when the next row continues
	// the buffer.
	buf := make([]float64, 10*d)
	rows := make([][]float64, 10)
	for i := range rows {
		rows[i] = buf[i*d : (i+1)*d]
	}
	rows[0] = buf[0 : d : 4*d]
	require.Equal(t, 4, contiguousRows(rows, d))
	require.Equal(t, 6, contiguousRows(rows[4:], d))
	rows[6] = slices.Clone(rows[6])
	require.Equal(t, 2, contiguousRows(rows[4:], d))
}

// TestProductsIndependentOfRuns checks that a row's probability has the same bits whatever
// the layout of its batch (one matrix, runs ending in every position, rows one at a time),
// however the batch is split between goroutines, and as PredictOne's, for logistic
// regressions of even and odd input sizes and the shipped one.
func TestProductsIndependentOfRuns(t *testing.T) {
	t.Parallel()
	var models []*Model
	for i, d := range []int{1, 2, 3, 4, 5, 7, 8, 60, 61} {
		m, err := NewModel(logisticArtifactD(d, uint64(30+i)))
		require.NoError(t, err)
		models = append(models, m)
	}
	for _, sm := range loadShippedModels(t) {
		if sm.model.Kind == KindLogistic {
			models = append(models, sm.model)
		}
	}
	for _, m := range models {
		d := m.InputSize
		rng := newRand(uint64(d), 9)
		src := make([][]float64, 203)
		for i := range src {
			src[i] = make([]float64, d)
			for j := range src[i] {
				src[i][j] = rng.uniform(3) * math.Exp(rng.uniform(6))
			}
		}
		for _, prep := range m.Preprocessings() {
			name := fmt.Sprintf("d=%d %s %s", d, m.Version, prep)
			for _, l := range layouts(src, d, uint64(d)) {
				requireRuns(t, l.rows, d, l.runs, name+" "+l.name)
				// checkLengths finds the batches that are one run whole.
				flat := flatOf(t, m, l.rows)
				require.Equal(t, len(l.runs) == 1, flat != nil, name+" "+l.name)
				if flat != nil {
					require.Equal(t, unsafe.SliceData(l.rows[0]), unsafe.SliceData(flat))
					require.Len(t, flat, len(l.rows)*d)
				}
				got := make([]float64, len(l.rows))
				require.NoError(t, m.PredictBatch(l.rows, prep, got))
				for i, r := range l.rows {
					want, err := m.PredictOne(r, prep)
					require.NoError(t, err)
					if math.Float64bits(got[i]) != math.Float64bits(want) {
						t.Fatalf("%s, %s layout, row %d: batch %v, PredictOne %v", name, l.name, i, got[i], want)
					}
				}
				// Split between goroutines, and with the runs found by products itself.
				v := m.variant(prep)
				for _, f := range [][]float64{flat, nil} {
					for _, workers := range []int{1, 2, 3} {
						for _, size := range []int{1, 5, 8, 100} {
							split := make([]float64, len(l.rows))
							require.NoError(t, m.predictBatch(v, l.rows, f, split, workers, size))
							require.Equal(t, got, split, "%s, %s layout, flat %t, %d workers, blocks of %d", name, l.name, f != nil, workers, size)
						}
					}
				}
			}
		}
	}
}

// TestPredictBatchFlatBadRows repeats TestPredictNonFiniteFeature's and
// TestPredictHugeFiniteFeatures' checks on rows that are one matrix.
func TestPredictBatchFlatBadRows(t *testing.T) {
	t.Parallel()
	var m *Model
	for _, sm := range loadShippedModels(t) {
		if sm.model.Kind == KindLogistic {
			m = sm.model
		}
	}
	require.NotNil(t, m)
	d := m.InputSize
	for _, bad := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		src := randomRows(40, d, 25)
		src[29][7], src[35][3] = bad, bad
		rows := layouts(src, d, 1)[0].rows // flat
		flat := flatOf(t, m, rows)
		require.NotNil(t, flat)
		want := fmt.Sprintf("row 29: model %s: %s: feature 7 is %v", m.Version, ErrInvalidInput, bad)
		v := m.variant("standard")
		for _, f := range [][]float64{flat, nil} {
			for _, workers := range []int{1, 2, 3} {
				for _, size := range []int{1, 5, 8, 40} {
					err := m.predictBatch(v, rows, f, make([]float64, len(rows)), workers, size)
					require.EqualError(t, err, want, "%d workers, blocks of %d", workers, size)
				}
			}
		}
		require.EqualError(t, m.PredictBatch(rows, "standard", make([]float64, len(rows))), want)
	}

	// A row of a flat batch at the right address but of the wrong length (running on into
	// the next row) is reported as in any batch.
	rows := layouts(randomRows(10, d, 26), d, 1)[0].rows
	rows[4] = rows[4][:d+1]
	err := m.PredictBatch(rows, "standard", make([]float64, len(rows)))
	require.ErrorIs(t, err, ErrInputSize)
	require.EqualError(t, err, fmt.Sprintf("row 4: model %s: %s: got %d, want %d", m.Version, ErrInputSize, d+1, d))

	// Huge finite features overflow the logits to ±Inf or NaN: not an input error, and the
	// batch agrees with PredictOne.
	src := [][]float64{make([]float64, d), make([]float64, d), make([]float64, d), make([]float64, d)}
	for j := range d {
		src[0][j] = 1e308 * float64(1-2*(j%2))
		src[1][j] = 1e308
		src[2][j] = -1e308
		src[3][j] = 0.5
	}
	rows = layouts(src, d, 1)[0].rows
	got := make([]float64, len(rows))
	require.NoError(t, m.PredictBatch(rows, "standard", got))
	for i, r := range rows {
		one, err := m.PredictOne(r, "standard")
		require.NoError(t, err)
		require.Equal(t, math.Float64bits(one), math.Float64bits(got[i]), "row %d", i)
	}
}
