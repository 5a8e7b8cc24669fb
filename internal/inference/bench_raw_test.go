package inference_test

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
	"gonum.org/v1/gonum/floats"
	"gonum.org/v1/gonum/mat"

	"github.com/predq/predq/internal/inference"
)

// The raw kernels of the shipped models' arithmetic: the matrix products alone, on
// preallocated operands, with no checks, no scaling, no activations and no allocation. They
// are the ceilings that BenchmarkPredictOne and BenchmarkPredictBatch1000 are compared with
// (PredictBatch's target: at most 1.5× the kernel's ns/row); `make bench` runs them side by
// side:
//
//	go test -run '^$' -bench 'RawKernel|PredictOne|PredictBatch1000' ./internal/inference/
//
// The "loop" variants are the same products as plain Go loops, to show what the kernel
// gains.
// The "as-model" variants use the product forms PredictBatch uses where they differ from
// the kernel's (one goroutine), to tell the cost of the kernel choice from the cost of the
// work around it: for the logistic regression on rows that are separate slices, the rows
// copied 16 at a time into a block that one GEMV takes (rows that lie in one buffer go
// through the kernel's own GEMV), and for comparison a floats.Dot per row (the form before
// the GEMV); for the MLP, a GEMV of the hidden weights and floats.Dot per row. Run with
// -cpu 1 to compare on one core (a batch of 1000 rows goes through gonum's Dgemm on every
// CPU, and PredictBatch splits it between up to GOMAXPROCS goroutines).

// rawModel is the weights of a shipped model's standard variant.
type rawModel struct {
	kind string
	d    int
	w    []float64   // logistic regression
	w1   [][]float64 // MLP hidden layer, one row per unit
	w2   []float64   // MLP output
}

func loadRawModels(b *testing.B) []rawModel {
	b.Helper()
	files, err := filepath.Glob("../../models/*.json")
	if err != nil || len(files) == 0 {
		b.Skip("no shipped models")
	}
	var out []rawModel
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			b.Fatal(err)
		}
		a, err := inference.ParseArtifact(raw)
		if err != nil {
			b.Fatalf("%s: %v", f, err)
		}
		for _, v := range a.Variants {
			if v.Preprocessing != inference.Standard {
				continue
			}
			m := rawModel{kind: a.Kind, d: a.InputSize}
			if v.Logistic != nil {
				m.w = v.Logistic.Weights
			}
			if v.MLP != nil {
				m.w1, m.w2 = v.MLP.HiddenWeights, v.MLP.OutputWeights
			}
			out = append(out, m)
		}
	}
	return out
}

// rawRows is n rows of d values in [0, 1), deterministic.
func rawRows(n, d int) *mat.Dense {
	x := mat.NewDense(n, d, nil)
	raw := x.RawMatrix().Data
	s := uint64(42)
	for i := range raw {
		s = s*6364136223846793005 + 1442695040888963407
		raw[i] = float64(s>>11) / (1 << 53)
	}
	return x
}

// rowSlices copies the rows of x into separate slices, as PredictBatch receives them.
func rowSlices(x *mat.Dense) [][]float64 {
	n, _ := x.Dims()
	rows := make([][]float64, n)
	for i := range rows {
		rows[i] = slices.Clone(x.RawRowView(i))
	}
	return rows
}

func reportPerRow(b *testing.B, rows int) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*rows), "ns/row")
}

func BenchmarkRawKernel(b *testing.B) {
	const n = 1000
	for _, m := range loadRawModels(b) {
		x := rawRows(n, m.d)
		x0 := mat.NewVecDense(m.d, x.RawRowView(0))
		switch m.kind {
		case inference.KindLogistic:
			w := mat.NewDense(1, m.d, m.w)
			wv := mat.NewVecDense(m.d, m.w)
			one := mat.NewVecDense(1, nil)
			out := mat.NewVecDense(n, nil)
			rows := rowSlices(x)
			outV := make([]float64, n)
			b.Run(m.kind+"/one/MulVec", func(b *testing.B) {
				for b.Loop() {
					one.MulVec(w, x0)
				}
				reportPerRow(b, 1)
			})
			b.Run(m.kind+"/batch1000/MulVec", func(b *testing.B) {
				for b.Loop() {
					out.MulVec(x, wv)
				}
				reportPerRow(b, n)
			})
			b.Run(m.kind+"/batch1000/as-model-gather16+Gemv", func(b *testing.B) {
				blk := make([]float64, 16*m.d)
				for b.Loop() {
					for lo := 0; lo < n; lo += 16 {
						hi := min(lo+16, n)
						for i, r := range rows[lo:hi] {
							copy(blk[i*m.d:(i+1)*m.d], r)
						}
						gonum.Implementation{}.Dgemv(blas.NoTrans, hi-lo, m.d, 1, blk, m.d, m.w, 1, 0, outV[lo:hi], 1)
					}
				}
				reportPerRow(b, n)
			})
			xd := x.RawMatrix().Data
			dot := func(r []float64) float64 {
				var z float64
				for j, rj := range r {
					z += rj * m.w[j]
				}
				return z
			}
			b.Run(m.kind+"/one/loop", func(b *testing.B) {
				var i int
				for b.Loop() {
					outV[0] = dot(xd[(i%n)*m.d : (i%n+1)*m.d])
					i++
				}
				reportPerRow(b, 1)
			})
			b.Run(m.kind+"/batch1000/loop", func(b *testing.B) {
				for b.Loop() {
					for i := range n {
						outV[i] = dot(xd[i*m.d : (i+1)*m.d])
					}
				}
				reportPerRow(b, n)
			})
			b.Run(m.kind+"/batch1000/Dot", func(b *testing.B) {
				for b.Loop() {
					for i, r := range rows {
						outV[i] = floats.Dot(r, m.w)
					}
				}
				reportPerRow(b, n)
			})
		case inference.KindMLP:
			h := len(m.w1)
			w1 := mat.NewDense(h, m.d, nil)
			for j, r := range m.w1 {
				w1.SetRow(j, r)
			}
			w2 := mat.NewDense(1, h, m.w2)
			w2v := mat.NewVecDense(h, m.w2)
			hid := mat.NewVecDense(h, nil)
			one := mat.NewVecDense(1, nil)
			act := mat.NewDense(n, h, nil)
			out := mat.NewVecDense(n, nil)
			rows := rowSlices(x)
			outV := make([]float64, n)
			b.Run(m.kind+"/one/MulVec", func(b *testing.B) {
				for b.Loop() {
					hid.MulVec(w1, x0)
					one.MulVec(w2, hid)
				}
				reportPerRow(b, 1)
			})
			b.Run(m.kind+"/batch1000/Mul+MulVec", func(b *testing.B) {
				for b.Loop() {
					act.Mul(x, w1.T())
					out.MulVec(act, w2v)
				}
				reportPerRow(b, n)
			})
			xd, w1d := x.RawMatrix().Data, w1.RawMatrix().Data
			hbuf := make([]float64, h)
			loopRow := func(r []float64) float64 {
				for j := range h {
					wr := w1d[j*m.d : (j+1)*m.d]
					var a float64
					for k, rk := range r {
						a += rk * wr[k]
					}
					hbuf[j] = a
				}
				var z float64
				for j, a := range hbuf {
					z += a * m.w2[j]
				}
				return z
			}
			b.Run(m.kind+"/one/loop", func(b *testing.B) {
				var i int
				for b.Loop() {
					outV[0] = loopRow(xd[(i%n)*m.d : (i%n+1)*m.d])
					i++
				}
				reportPerRow(b, 1)
			})
			b.Run(m.kind+"/batch1000/loop", func(b *testing.B) {
				for b.Loop() {
					for i := range n {
						outV[i] = loopRow(xd[i*m.d : (i+1)*m.d])
					}
				}
				reportPerRow(b, n)
			})
			b.Run(m.kind+"/batch1000/as-model-Gemv+Dot", func(b *testing.B) {
				w1d := w1.RawMatrix().Data
				a := make([]float64, h)
				for b.Loop() {
					for i, r := range rows {
						gonum.Implementation{}.Dgemv(blas.NoTrans, h, m.d, 1, w1d, m.d, r, 1, 0, a, 1)
						outV[i] = floats.Dot(a, m.w2)
					}
				}
				reportPerRow(b, n)
			})
		}
	}
}
