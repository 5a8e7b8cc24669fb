package inference

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/floats"
	"gonum.org/v1/gonum/mat"
)

// fitLogistic fits an L2-regularised logistic regression on the scaled rows x by damped
// Newton's method (iteratively reweighted least squares with a backtracking line search):
// it minimises mean log loss + λ/(2n)·‖w‖², the bias unpenalised. The objective is convex
// (strictly for λ > 0), so the result does not depend on a starting point: it starts at 0
// and stops when the Newton decrement is negligible or after hp.MaxIterations.
func fitLogistic(x *mat.Dense, y []float64, hp Hyperparams) (*LogisticWeights, error) {
	n, d := x.Dims()
	nf := float64(n)
	lambda := hp.L2 / nf

	// Design matrix with a trailing column of ones for the bias.
	xa := mat.NewDense(n, d+1, nil)
	for i := range n {
		row := xa.RawRowView(i)
		copy(row, x.RawRowView(i))
		row[d] = 1
	}
	theta := make([]float64, d+1)
	z := mat.NewVecDense(n, nil)
	r := mat.NewVecDense(n, nil) // residuals p - y, then scratch
	g := mat.NewVecDense(d+1, nil)
	step := mat.NewVecDense(d+1, nil)
	xs := mat.NewDense(n, d+1, nil) // rows scaled by sqrt(p(1-p)/n)
	h := mat.NewSymDense(d+1, nil)
	var chol mat.Cholesky
	trial := make([]float64, d+1)

	objective := func(th []float64) float64 {
		z.MulVec(xa, mat.NewVecDense(d+1, th))
		var f float64
		for i, zi := range z.RawVector().Data {
			f += softplus(zi) - y[i]*zi
		}
		w := th[:d]
		return f/nf + lambda/2*floats.Dot(w, w)
	}

	f := objective(theta)
	for range hp.MaxIterations {
		// z holds X·theta from the last objective call at theta.
		zd, rd := z.RawVector().Data, r.RawVector().Data
		for i, zi := range zd {
			p := sigmoid(zi)
			rd[i] = (p - y[i]) / nf
			s := math.Sqrt(p * (1 - p) / nf)
			src, dst := xa.RawRowView(i), xs.RawRowView(i)
			for j, v := range src {
				dst[j] = v * s
			}
		}
		g.MulVec(xa.T(), r)
		gd := g.RawVector().Data
		for j := range d {
			gd[j] += lambda * theta[j]
		}
		h.SymOuterK(1, xs.T())
		for j := range d {
			h.SetSym(j, j, h.At(j, j)+lambda)
		}
		h.SetSym(d, d, h.At(d, d)+1e-12) // keeps the bias row positive definite
		if ok := chol.Factorize(h); !ok {
			return nil, fmt.Errorf("logistic regression: %w: Hessian not positive definite (try l2 > 0)", ErrInvalidData)
		}
		if err := chol.SolveVecTo(step, g); err != nil {
			return nil, fmt.Errorf("logistic regression: %w: %w", ErrInvalidData, err)
		}
		decrement := mat.Dot(g, step) // gᵀH⁻¹g >= 0
		if decrement/2 < 1e-20 {
			break
		}
		// Backtracking line search (Armijo).
		sd := step.RawVector().Data
		t := 1.0
		var fTrial float64
		for {
			for j := range theta {
				trial[j] = theta[j] - t*sd[j]
			}
			fTrial = objective(trial)
			if fTrial <= f-1e-4*t*decrement || t < 1e-10 {
				break
			}
			t /= 2
		}
		copy(theta, trial)
		f = fTrial
	}
	if !allFinite(theta...) {
		return nil, fmt.Errorf("logistic regression: %w: weights diverged", ErrInvalidData)
	}
	return &LogisticWeights{Weights: theta[:d:d], Bias: theta[d]}, nil
}

// softplus is ln(1+e^z), computed without overflow.
func softplus(z float64) float64 {
	return max(z, 0) + math.Log1p(math.Exp(-math.Abs(z)))
}
