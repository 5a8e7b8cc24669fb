package main

import (
	"cmp"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"

	"gonum.org/v1/gonum/mat"

	"github.com/predq/predq/internal/inference"
)

// batchRows is the batch size of the batched inference measurements.
const batchRows = 1000

// inferResult is the inference measurement of one model, in nanoseconds per row.
type inferResult struct {
	Version string `json:"version"`
	Kind    string `json:"kind"`
	Hidden  int    `json:"hidden,omitempty"`

	OneNS         float64 `json:"one_ns"`          // Model.PredictOne (checks, scaling, layers, activations)
	OneKernelNS   float64 `json:"one_kernel_ns"`   // gonum MulVec of the layer weights alone
	OneLoopNS     float64 `json:"one_loop_ns"`     // the same products as plain Go loops
	BatchNS       float64 `json:"batch_ns"`        // Model.PredictBatch of batchRows rows, per row
	BatchKernelNS float64 `json:"batch_kernel_ns"` // gonum Mul/MulVec of the layer weights alone, per row
	BatchLoopNS   float64 `json:"batch_loop_ns"`   // the same products as plain Go loops, per row
}

// sink keeps the compiler from dropping the measured work.
var sink float64

// nsPerOp measures fs round-robin, rounds times: each run of f(n) grows n until it takes at
// least d. It returns the best time per operation of each, in nanoseconds (the least disturbed
// by other work on the machine). Interleaved, a slow spell of this shared machine touches the
// measures of one round alike, so their ratios hold; measured one after the other, a kernel
// and the PredictBatch compared with it could fall in different spells (one run gave the
// logistic regression's batch 1.45× its kernel, the next 0.96×).
func nsPerOp(d time.Duration, rounds int, fs ...func(n int)) []float64 {
	best := make([]float64, len(fs))
	start := make([]int, len(fs)) // the n of each f's last run: the next starts there
	for range rounds {
		for i, f := range fs {
			n := max(start[i], 1)
			for {
				t := time.Now()
				f(n)
				el := time.Since(t)
				if el >= d || n >= 1<<30 {
					per := float64(el.Nanoseconds()) / float64(n)
					if best[i] == 0 || per < best[i] {
						best[i] = per
					}
					start[i] = n
					break
				}
				// Aim at 1.2·d, growing at most 100× at a time.
				next := int(float64(n) * 1.2 * float64(d) / float64(max(el, time.Microsecond)))
				n = min(max(next, n+1), 100*n)
			}
		}
	}
	return best
}

// measures gathers the measurements of one model, to run them interleaved (nsPerOp).
type measures struct {
	dst   []*float64
	perOp []float64 // rows per operation of f: the result is ns per row
	fs    []func(n int)
}

// add registers f, whose operations each handle rows rows, to be written into dst.
func (m *measures) add(dst *float64, rows float64, f func(n int)) {
	m.dst, m.perOp, m.fs = append(m.dst, dst), append(m.perOp, rows), append(m.fs, f)
}

// run measures them all, rounds times round-robin.
func (m *measures) run(d time.Duration, rounds int) {
	for i, ns := range nsPerOp(d, rounds, m.fs...) {
		*m.dst[i] = ns / m.perOp[i]
	}
}

// newestOfKind loads the newest artifact of each kind in dir.
func newestOfKind(dir string) (map[string]*inference.Artifact, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	out := map[string]*inference.Artifact{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		a, err := inference.ParseArtifact(b)
		if err != nil {
			continue // not an artifact, or one the api would refuse too
		}
		if cur, ok := out[a.Kind]; !ok || versionLess(cur.Version, a.Version) {
			out[a.Kind] = a
		}
	}
	if out[inference.KindLogistic] == nil || out[inference.KindMLP] == nil {
		return nil, fmt.Errorf("inference: %s holds no logistic regression or no MLP artifact", dir)
	}
	return out, nil
}

// versionLess compares vMAJOR.MINOR.PATCH versions.
func versionLess(a, b string) bool {
	var x, y [3]int
	fmt.Sscanf(a, "v%d.%d.%d", &x[0], &x[1], &x[2])
	fmt.Sscanf(b, "v%d.%d.%d", &y[0], &y[1], &y[2])
	return slices.Compare(x[:], y[:]) < 0
}

// benchInference measures both models on the sonar rows, each measurement lasting about d,
// best of rounds.
func benchInference(modelDir string, rows [][]float64, d time.Duration, rounds int) ([]inferResult, error) {
	arts, err := newestOfKind(modelDir)
	if err != nil {
		return nil, err
	}
	var out []inferResult
	for _, kind := range []string{inference.KindLogistic, inference.KindMLP} {
		r, err := benchModel(arts[kind], rows, d, rounds)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	runtime.KeepAlive(sink)
	return out, nil
}

func benchModel(a *inference.Artifact, rows [][]float64, d time.Duration, rounds int) (inferResult, error) {
	m, err := inference.NewModel(a)
	if err != nil {
		return inferResult{}, err
	}
	const prep = "standard"
	v := a.Variants[slices.IndexFunc(a.Variants, func(v inference.Variant) bool { return v.Preprocessing == prep })]
	dim := a.InputSize
	res := inferResult{Version: a.Version, Kind: a.Kind}

	// The batch: batchRows sonar rows as a real caller hands them over, and scaled (what the
	// kernels multiply; their values do not change the work). A job chunk is decoded into
	// one flat buffer (internal/job's decodeChunk), so the batch is batchRows rows backed by
	// one flat slice too, each row sliced with its capacity running on over the next rows,
	// which is how PredictBatch recognises them as one matrix: it computes them with one
	// matrix-vector product, as the raw kernel does. (Rows of separate allocations, as the
	// HTTP batch endpoint decodes them, are copied together 16 at a time first;
	// BenchmarkPredictBatch1000 in internal/inference measures both.)
	flat := make([]float64, batchRows*dim)
	batch := make([][]float64, batchRows)
	scaled := mat.NewDense(batchRows, dim, nil)
	for i := range batch {
		batch[i] = flat[i*dim : (i+1)*dim]
		copy(batch[i], rows[i%len(rows)])
		v.Scaler.Transform(scaled.RawRowView(i), batch[i])
	}
	probs := make([]float64, batchRows)

	var predictErr error
	var ms measures
	ms.add(&res.OneNS, 1, func(n int) {
		for i := range n {
			p, err := m.PredictOne(batch[i%batchRows], prep)
			if err != nil {
				predictErr = err
			}
			sink += p
		}
	})
	ms.add(&res.BatchNS, batchRows, func(n int) {
		for range n {
			if err := m.PredictBatch(batch, prep, probs); err != nil {
				predictErr = err
			}
		}
		sink += probs[0]
	})

	xs := make([]*mat.VecDense, batchRows)
	for i := range xs {
		xs[i] = mat.NewVecDense(dim, scaled.RawRowView(i))
	}
	switch a.Kind {
	case inference.KindLogistic:
		wv := v.Logistic.Weights
		w := mat.NewDense(1, dim, slices.Clone(wv))
		wvec := mat.NewVecDense(dim, slices.Clone(wv))
		one := mat.NewVecDense(1, nil)
		ms.add(&res.OneKernelNS, 1, func(n int) {
			for i := range n {
				one.MulVec(w, xs[i%batchRows])
			}
			sink += one.AtVec(0)
		})
		out := mat.NewVecDense(batchRows, nil)
		ms.add(&res.BatchKernelNS, batchRows, func(n int) {
			for range n {
				out.MulVec(scaled, wvec)
			}
			sink += out.AtVec(0)
		})
		wd := wvec.RawVector().Data
		xd := scaled.RawMatrix().Data
		ms.add(&res.OneLoopNS, 1, func(n int) {
			for i := range n {
				x := xd[(i%batchRows)*dim : (i%batchRows+1)*dim]
				var z float64
				for j, xj := range x {
					z += xj * wd[j]
				}
				sink += z
			}
		})
		ms.add(&res.BatchLoopNS, batchRows, func(n int) {
			for range n {
				for i := range batchRows {
					x := xd[i*dim : (i+1)*dim]
					var z float64
					for j, xj := range x {
						z += xj * wd[j]
					}
					probs[i] = z
				}
			}
			sink += probs[0]
		})

	case inference.KindMLP:
		mw := v.MLP
		h := len(mw.HiddenWeights)
		res.Hidden = h
		w1 := mat.NewDense(h, dim, nil)
		for j, row := range mw.HiddenWeights {
			w1.SetRow(j, row)
		}
		w2 := mat.NewDense(1, h, slices.Clone(mw.OutputWeights))
		w2vec := mat.NewVecDense(h, slices.Clone(mw.OutputWeights))
		hid := mat.NewVecDense(h, nil)
		one := mat.NewVecDense(1, nil)
		ms.add(&res.OneKernelNS, 1, func(n int) {
			for i := range n {
				hid.MulVec(w1, xs[i%batchRows])
				one.MulVec(w2, hid)
			}
			sink += one.AtVec(0)
		})
		act := mat.NewDense(batchRows, h, nil)
		out := mat.NewVecDense(batchRows, nil)
		ms.add(&res.BatchKernelNS, batchRows, func(n int) {
			for range n {
				act.Mul(scaled, w1.T())
				out.MulVec(act, w2vec)
			}
			sink += out.AtVec(0)
		})
		w1d := w1.RawMatrix().Data
		w2d := w2vec.RawVector().Data
		xd := scaled.RawMatrix().Data
		hbuf := make([]float64, h)
		loopRow := func(x []float64) float64 {
			for j := range h {
				wr := w1d[j*dim : (j+1)*dim]
				var a float64
				for k, xk := range x {
					a += xk * wr[k]
				}
				hbuf[j] = a
			}
			var z float64
			for j, a := range hbuf {
				z += a * w2d[j]
			}
			return z
		}
		ms.add(&res.OneLoopNS, 1, func(n int) {
			for i := range n {
				sink += loopRow(xd[(i%batchRows)*dim : (i%batchRows+1)*dim])
			}
		})
		ms.add(&res.BatchLoopNS, batchRows, func(n int) {
			for range n {
				for i := range batchRows {
					probs[i] = loopRow(xd[i*dim : (i+1)*dim])
				}
			}
			sink += probs[0]
		})
	}
	ms.run(d, rounds)
	if predictErr != nil {
		return inferResult{}, predictErr
	}
	return res, nil
}

// kindName is a model kind as the table names it.
func kindName(r inferResult) string {
	return cmp.Or(map[string]string{
		inference.KindLogistic: fmt.Sprintf("logistic regression %s", r.Version),
		inference.KindMLP:      fmt.Sprintf("MLP %s (%d hidden)", r.Version, r.Hidden),
	}[r.Kind], r.Kind)
}
