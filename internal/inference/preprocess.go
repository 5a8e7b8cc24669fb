package inference

import (
	"fmt"
	"math"
	"slices"

	"gonum.org/v1/gonum/mat"
)

// Preprocessing names a feature-scaling method. Its values are the names the API accepts.
type Preprocessing string

// The preprocessings a model variant can be trained with.
const (
	// Standard centres on the mean and divides by the population standard deviation.
	Standard Preprocessing = "standard"
	// MinMax subtracts the minimum and divides by max - min.
	MinMax Preprocessing = "minmax"
	// Robust centres on the median and divides by the interquartile range.
	Robust Preprocessing = "robust"
)

// MinSpread is the smallest spread (standard deviation, range or IQR) used as a divisor.
// A feature whose fitted spread is below it gets Scale 1: it is centred, not scaled.
const MinSpread = 1e-12

// Valid reports whether p is one of Standard, MinMax and Robust.
func (p Preprocessing) Valid() bool {
	switch p {
	case Standard, MinMax, Robust:
		return true
	}
	return false
}

// Scaler is a fitted preprocessing: feature i becomes (x[i] - Center[i]) / Scale[i],
// computed as (x[i] - Center[i]) · (1/Scale[i]). Every Scale is finite and positive (see
// MinSpread).
type Scaler struct {
	Center []float64 `json:"center"`
	Scale  []float64 `json:"scale"`
}

// FitScaler fits the preprocessing kind on the rows of x (one row per sample). It returns
// an error wrapping ErrInvalidData for an empty matrix or a non-finite value, and for an
// unknown kind one wrapping both ErrInvalidData and ErrUnsupportedPreprocessing.
func FitScaler(kind Preprocessing, x mat.Matrix) (Scaler, error) {
	n, d := x.Dims()
	if n == 0 || d == 0 {
		return Scaler{}, fmt.Errorf("fit %s scaler: %w: empty matrix", kind, ErrInvalidData)
	}
	s := Scaler{Center: make([]float64, d), Scale: make([]float64, d)}
	col := make([]float64, n)
	for j := range d {
		for i := range n {
			v := x.At(i, j)
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return Scaler{}, fmt.Errorf("fit %s scaler: %w: non-finite value at row %d, column %d", kind, ErrInvalidData, i, j)
			}
			col[i] = v
		}
		var center, spread float64
		switch kind {
		case Standard:
			center, spread = meanStd(col)
		case MinMax:
			lo, hi := slices.Min(col), slices.Max(col)
			center, spread = lo, hi-lo
		case Robust:
			slices.Sort(col)
			center = Quantile(col, 0.5)
			spread = Quantile(col, 0.75) - Quantile(col, 0.25)
		default:
			return Scaler{}, fmt.Errorf("fit scaler: %w: %w: %q", ErrInvalidData, ErrUnsupportedPreprocessing, kind)
		}
		if !(spread >= MinSpread) || math.IsInf(spread, 0) {
			spread = 1
		}
		s.Center[j], s.Scale[j] = center, spread
	}
	return s, nil
}

// Transform writes the scaled x into dst; both have the scaler's length. It computes
// (x[i] - Center[i]) · (1/Scale[i]), multiplying by the reciprocal as training does, so the
// results are identical. It allocates the reciprocals on every call. (A Model does not
// scale: it folds the scaler into its first layer; see the package documentation.)
func (s Scaler) Transform(dst, x []float64) {
	s.prepare().apply(dst, x)
}

// TransformDense scales every row of x in place, like Transform.
func (s Scaler) TransformDense(x *mat.Dense) {
	s.prepare().applyDense(x)
}

// affine is a Scaler prepared for repeated use: x' = (x - center) · inv, inv[i] = 1/Scale[i]
// (a multiplication is several times cheaper than a division).
type affine struct{ center, inv []float64 }

func (s Scaler) prepare() affine {
	inv := make([]float64, len(s.Scale))
	for i, v := range s.Scale {
		inv[i] = 1 / v
	}
	return affine{center: slices.Clone(s.Center), inv: inv}
}

// apply writes the scaled x into dst; both have the scaler's length.
func (a affine) apply(dst, x []float64) {
	c, inv := a.center[:len(x)], a.inv[:len(x)]
	dst = dst[:len(x)]
	for i, v := range x {
		dst[i] = (v - c[i]) * inv[i]
	}
}

// applyDense scales every row of x in place.
func (a affine) applyDense(x *mat.Dense) {
	raw := x.RawMatrix()
	for i := range raw.Rows {
		row := raw.Data[i*raw.Stride : i*raw.Stride+raw.Cols]
		a.apply(row, row)
	}
}

func (s Scaler) validate(d int) error {
	if len(s.Center) != d || len(s.Scale) != d {
		return fmt.Errorf("scaler has %d centres and %d scales, want %d", len(s.Center), len(s.Scale), d)
	}
	for i := range d {
		if !finite(s.Center[i]) {
			return fmt.Errorf("scaler center[%d] is not finite", i)
		}
		if !finite(s.Scale[i]) || s.Scale[i] <= 0 {
			return fmt.Errorf("scaler scale[%d] = %v, want finite and > 0", i, s.Scale[i])
		}
	}
	return nil
}

// Quantile returns the q-quantile (0 <= q <= 1) of sorted, an ascending slice, by linear
// interpolation between the closest ranks: h = (n-1)q, Q = x[floor h] + (h - floor h) *
// (x[floor h + 1] - x[floor h]). This is numpy's default ("linear") method, type 7 of
// Hyndman and Fan. It returns NaN for an empty slice or q outside [0, 1].
func Quantile(sorted []float64, q float64) float64 {
	n := len(sorted)
	if n == 0 || !(q >= 0 && q <= 1) {
		return math.NaN()
	}
	h := float64(n-1) * q
	lo := int(math.Floor(h))
	if lo >= n-1 {
		return sorted[n-1]
	}
	frac := h - float64(lo)
	return sorted[lo] + frac*(sorted[lo+1]-sorted[lo])
}

// meanStd returns the mean and the population standard deviation (divide by n) of x.
func meanStd(x []float64) (mean, std float64) {
	for _, v := range x {
		mean += v
	}
	mean /= float64(len(x))
	var ss float64
	for _, v := range x {
		d := v - mean
		ss += d * d
	}
	return mean, math.Sqrt(ss / float64(len(x)))
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }
