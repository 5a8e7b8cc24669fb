package inference

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"gonum.org/v1/gonum/floats"
	"gonum.org/v1/gonum/mat"
	"gonum.org/v1/gonum/optimize"
)

// fitMLP fits a one-hidden-layer tanh MLP with a sigmoid output on the scaled rows x by
// full-batch L-BFGS (gonum/optimize), minimising
//
//	mean log loss + L2/(2n)·‖W1‖² + L2Output/(2n)·‖w2‖²,
//
// biases unpenalised. The two layers have their own penalties because the scale of the
// inputs (and so of W1) depends on the preprocessing while the hidden activations are always
// in [-1, 1]. Weights start Glorot-uniform from PCG(hp.Seed, stream), biases at 0;
// the optimiser stops after hp.MaxIterations iterations (early stopping) or at convergence.
func fitMLP(x *mat.Dense, y []float64, hp Hyperparams, stream uint64) (*MLPWeights, error) {
	_, d := x.Dims()
	h := hp.HiddenUnits
	obj := newMLPObjective(x, y, h, hp.L2, hp.L2Output)

	theta := make([]float64, obj.size())
	rng := newRand(hp.Seed, stream)
	a1 := math.Sqrt(6 / float64(d+h))
	for i := range h * d {
		theta[i] = rng.uniform(a1)
	}
	a2 := math.Sqrt(6 / float64(h+1))
	w2 := theta[h*d+h : h*d+2*h]
	for i := range w2 {
		w2[i] = rng.uniform(a2)
	}

	problem := optimize.Problem{
		Func: func(th []float64) float64 { return obj.eval(th, nil) },
		Grad: func(grad, th []float64) { obj.eval(th, grad) },
	}
	settings := &optimize.Settings{
		MajorIterations:   hp.MaxIterations,
		GradientThreshold: 1e-9,
		Converger:         &optimize.FunctionConverge{Absolute: 1e-12, Iterations: 50},
	}
	res, err := optimize.Minimize(problem, theta, settings, &optimize.LBFGS{Store: 10})
	if res == nil {
		return nil, fmt.Errorf("mlp: %w: %w", ErrInvalidData, err)
	}
	// A line search that cannot improve any more ends the run with an error but a usable
	// best location; anything else is a failure.
	if err != nil && !errors.Is(err, optimize.ErrLinesearcherFailure) && !errors.Is(err, optimize.ErrNoProgress) {
		return nil, fmt.Errorf("mlp: %w: %w", ErrInvalidData, err)
	}
	theta = res.X
	if !allFinite(theta...) || !finite(res.F) {
		return nil, fmt.Errorf("mlp: %w: weights diverged", ErrInvalidData)
	}

	w := &MLPWeights{
		Activation:    ActivationTanh,
		HiddenWeights: make([][]float64, h),
		HiddenBias:    slices.Clone(theta[h*d : h*d+h]),
		OutputWeights: slices.Clone(theta[h*d+h : h*d+2*h]),
		OutputBias:    theta[h*d+2*h],
	}
	for j := range h {
		w.HiddenWeights[j] = slices.Clone(theta[j*d : (j+1)*d])
	}
	return w, nil
}

// mlpObjective evaluates the MLP's penalised loss and gradient over the flat parameter
// vector θ = [W1 (h×d, row-major) | b1 (h) | w2 (h) | b2], reusing its buffers. It
// remembers the last evaluated θ, because gonum evaluates Func and Grad at the same point.
type mlpObjective struct {
	x         *mat.Dense
	y         []float64
	n, d      int
	h         int
	lambda    float64 // L2 / n, for W1
	lambdaOut float64 // L2Output / n, for w2

	act   *mat.Dense // n×h: tanh(X W1ᵀ + b1), then the hidden-layer deltas
	out   *mat.Dense // n×1: output logits, then output deltas
	lastX []float64
	lastF float64
	lastG []float64
	valid bool
}

func newMLPObjective(x *mat.Dense, y []float64, h int, l2, l2out float64) *mlpObjective {
	n, d := x.Dims()
	o := &mlpObjective{x: x, y: y, n: n, d: d, h: h, lambda: l2 / float64(n), lambdaOut: l2out / float64(n)}
	o.act = mat.NewDense(n, h, nil)
	o.out = mat.NewDense(n, 1, nil)
	o.lastX = make([]float64, o.size())
	o.lastG = make([]float64, o.size())
	return o
}

func (o *mlpObjective) size() int { return o.h*o.d + 2*o.h + 1 }

// eval returns the objective at theta and, when grad is not nil, writes its gradient.
func (o *mlpObjective) eval(theta, grad []float64) float64 {
	if o.valid && slices.Equal(theta, o.lastX) {
		if grad != nil {
			copy(grad, o.lastG)
		}
		return o.lastF
	}
	n, d, h := o.n, o.d, o.h
	w1 := mat.NewDense(h, d, theta[:h*d])
	b1 := theta[h*d : h*d+h]
	w2 := mat.NewDense(h, 1, theta[h*d+h:h*d+2*h])
	b2 := theta[h*d+2*h]

	// Forward: act = tanh(X W1ᵀ + b1), out = act w2 + b2.
	o.act.Mul(o.x, w1.T())
	ar := o.act.RawMatrix()
	for i := range n {
		row := ar.Data[i*ar.Stride : i*ar.Stride+h]
		for j, v := range row {
			row[j] = tanh(v + b1[j])
		}
	}
	o.out.Mul(o.act, w2)
	od := o.out.RawMatrix().Data
	nf := float64(n)
	var loss float64
	for i := range n {
		z := od[i] + b2
		loss += softplus(z) - o.y[i]*z
		od[i] = (sigmoid(z) - o.y[i]) / nf // output delta
	}
	f := loss/nf + o.lambda/2*floats.Dot(theta[:h*d], theta[:h*d]) + o.lambdaOut/2*floats.Dot(theta[h*d+h:h*d+2*h], theta[h*d+h:h*d+2*h])

	// Backward.
	g := o.lastG
	gw2 := mat.NewDense(h, 1, g[h*d+h:h*d+2*h])
	gw2.Mul(o.act.T(), o.out)
	g[h*d+2*h] = floats.Sum(od)
	w2d := theta[h*d+h : h*d+2*h]
	for i, di := range od {
		row := ar.Data[i*ar.Stride : i*ar.Stride+h]
		for j, a := range row {
			row[j] = di * w2d[j] * (1 - a*a) // hidden delta
		}
	}
	gw1 := mat.NewDense(h, d, g[:h*d])
	gw1.Mul(o.act.T(), o.x)
	gb1 := g[h*d : h*d+h]
	clear(gb1)
	for i := range n {
		floats.Add(gb1, ar.Data[i*ar.Stride:i*ar.Stride+h])
	}
	floats.AddScaled(g[:h*d], o.lambda, theta[:h*d])
	floats.AddScaled(g[h*d+h:h*d+2*h], o.lambdaOut, w2d)

	copy(o.lastX, theta)
	o.lastF = f
	o.valid = true
	if grad != nil {
		copy(grad, g)
	}
	return f
}
