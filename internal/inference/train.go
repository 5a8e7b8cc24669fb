package inference

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"

	"gonum.org/v1/gonum/mat"
)

// Hyperparams are the training settings of one variant; the artifact records them.
type Hyperparams struct {
	// L2 is the penalty strength λ on the weights of the input layer: training minimises
	// the mean log loss plus λ/(2n)·Σw² (n training rows; biases are not penalised). For
	// KindLogistic it is scikit-learn's 1/C; for KindMLP it penalises the hidden layer's
	// weights W1.
	L2 float64 `json:"l2"`
	// L2Output is the same penalty on the MLP's output weights w2 (KindMLP only).
	L2Output float64 `json:"l2_output,omitempty"`
	// HiddenUnits is the width of the MLP's hidden layer (KindMLP only).
	HiddenUnits int `json:"hidden_units,omitempty"`
	// MaxIterations bounds the optimiser: damped Newton iterations for KindLogistic (which
	// converges long before), L-BFGS iterations for KindMLP (where stopping at a fixed
	// count acts as early stopping).
	MaxIterations int `json:"max_iterations"`
	// Seed seeds the MLP's initial weights (KindMLP only). The final fit uses PCG stream 0,
	// cross-validation fit i (repeat r, fold k: i = r·Folds + k) stream i+1.
	Seed uint64 `json:"seed,omitempty"`
}

// CVConfig is the cross-validation protocol: Repeats repetitions of stratified Folds-fold
// cross-validation, the repetitions shuffled by PCG(Seed, repetition).
type CVConfig struct {
	Folds   int
	Repeats int
	Seed    uint64
}

// VariantSpec says how to train one variant of an artifact.
type VariantSpec struct {
	Preprocessing Preprocessing
	Hyperparams   Hyperparams
}

// TrainSpec describes an artifact to train: its identity (copied into the Artifact), the
// variants and the cross-validation protocol that measures them.
type TrainSpec struct {
	Name          string // the model family, Artifact.Name (optional)
	Kind          string // KindLogistic or KindMLP
	Version       string
	FeatureNames  []string
	PositiveClass string
	NegativeClass string
	DatasetSHA256 string
	CreatedBy     string
	Variants      []VariantSpec
	CV            CVConfig
	// Workers is the number of fits run in parallel; 0 means runtime.GOMAXPROCS(0). The
	// result does not depend on it.
	Workers int
}

// Train cross-validates every variant of spec on (x, y), then fits it on all rows, and
// returns the artifact (without checksum: EncodeArtifact sets it). x holds one sample per
// row; y holds 1 for the positive class and 0 for the negative one. Errors wrap
// ErrInvalidData (bad data or spec), ErrInvalidArtifact (bad identity fields) or the
// context's error.
func Train(ctx context.Context, x *mat.Dense, y []float64, spec TrainSpec) (*Artifact, error) {
	if x == nil {
		return nil, fmt.Errorf("train %s: %w: nil matrix", spec.Version, ErrInvalidData)
	}
	if !versionRE.MatchString(spec.Version) {
		return nil, fmt.Errorf("train: %w: version %q is not vMAJOR.MINOR.PATCH", ErrInvalidArtifact, spec.Version)
	}
	_, d := x.Dims()
	a := &Artifact{
		Name:          spec.Name,
		Kind:          spec.Kind,
		Version:       spec.Version,
		InputSize:     d,
		FeatureNames:  spec.FeatureNames,
		PositiveClass: spec.PositiveClass,
		NegativeClass: spec.NegativeClass,
		DatasetSHA256: spec.DatasetSHA256,
		CreatedBy:     spec.CreatedBy,
	}
	metrics, fitted, err := evaluate(ctx, spec.Kind, x, y, spec.Variants, spec.CV, spec.Workers, true)
	if err != nil {
		return nil, fmt.Errorf("train %s: %w", spec.Version, err)
	}
	for i := range fitted {
		fitted[i].Metrics = metrics[i]
	}
	a.Variants = fitted
	if err := a.validate(); err != nil {
		return nil, fmt.Errorf("train %s: %w", spec.Version, err)
	}
	return a, nil
}

// FitVariant fits the preprocessing of vs on the rows of x, then the model of the given
// kind on the scaled rows, with MLP weights initialised from PCG(vs.Hyperparams.Seed,
// stream). The returned Variant has zero Metrics. Errors wrap ErrInvalidData.
func FitVariant(kind string, x *mat.Dense, y []float64, vs VariantSpec, stream uint64) (Variant, error) {
	if err := checkData(kind, x, y, vs.Hyperparams); err != nil {
		return Variant{}, err
	}
	scaler, err := FitScaler(vs.Preprocessing, x)
	if err != nil {
		return Variant{}, err
	}
	xs := mat.DenseCopyOf(x)
	scaler.prepare().applyDense(xs)
	v := Variant{Preprocessing: vs.Preprocessing, Scaler: scaler, Hyperparams: vs.Hyperparams}
	switch kind {
	case KindLogistic:
		w, err := fitLogistic(xs, y, vs.Hyperparams)
		if err != nil {
			return Variant{}, err
		}
		v.Logistic = w
	case KindMLP:
		w, err := fitMLP(xs, y, vs.Hyperparams, stream)
		if err != nil {
			return Variant{}, err
		}
		v.MLP = w
	}
	return v, nil
}

// CrossValidate measures the variant vs of the given kind by cv.Repeats repetitions of
// stratified cv.Folds-fold cross-validation on (x, y): in each fold the preprocessing and the
// model are fitted on the training part only, and scored on the held-out part. Up to
// workers fits run in parallel (0: runtime.GOMAXPROCS(0)); the result does not depend on
// it. Errors wrap ErrInvalidData or the context's error.
func CrossValidate(ctx context.Context, kind string, x *mat.Dense, y []float64, vs VariantSpec, cv CVConfig, workers int) (Metrics, error) {
	metrics, _, err := evaluate(ctx, kind, x, y, []VariantSpec{vs}, cv, workers, false)
	if err != nil {
		return Metrics{}, err
	}
	return metrics[0], nil
}

// evaluate cross-validates every variant and, when final is set, also fits it on all rows.
// All the fits share one pool of workers, the biggest (final) ones first, so that both
// cores stay busy to the end; each fit's seed depends only on its place in the protocol,
// so the results do not depend on the scheduling.
func evaluate(ctx context.Context, kind string, x *mat.Dense, y []float64, variants []VariantSpec, cv CVConfig, workers int, final bool) ([]Metrics, []Variant, error) {
	for _, vs := range variants {
		if err := checkData(kind, x, y, vs.Hyperparams); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", vs.Preprocessing, err)
		}
	}
	if cv.Folds < 2 || cv.Repeats < 1 {
		return nil, nil, fmt.Errorf("cross-validate: %w: %d folds, %d repeats", ErrInvalidData, cv.Folds, cv.Repeats)
	}
	folds := make([][]int, 0, cv.Folds*cv.Repeats) // test rows of each fit
	for r := range cv.Repeats {
		f, err := StratifiedKFold(y, cv.Folds, cv.Seed, uint64(r))
		if err != nil {
			return nil, nil, err
		}
		folds = append(folds, f...)
	}

	type job struct{ variant, fold int } // fold -1: the final fit on all rows
	var jobs []job
	if final {
		for v := range variants {
			jobs = append(jobs, job{v, -1})
		}
	}
	for v := range variants {
		for i := range folds {
			jobs = append(jobs, job{v, i})
		}
	}
	type score struct{ acc, auc, logLoss float64 }
	scores := make([][]score, len(variants))
	for v := range scores {
		scores[v] = make([]score, len(folds))
	}
	fitted := make([]Variant, len(variants))
	errs := make([]error, len(jobs))
	run := func(j job) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		vs := variants[j.variant]
		if j.fold < 0 {
			v, err := FitVariant(kind, x, y, vs, 0)
			fitted[j.variant] = v
			return err
		}
		yTest, p, err := fitFold(kind, x, y, vs, folds[j.fold], uint64(j.fold)+1)
		if err != nil {
			return err
		}
		auc, err := ROCAUC(yTest, p)
		if err != nil {
			return err
		}
		scores[j.variant][j.fold] = score{acc: Accuracy(yTest, p), auc: auc, logLoss: LogLoss(yTest, p)}
		return nil
	}

	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(workers, len(jobs)) {
		wg.Go(func() {
			for i := range next {
				errs[i] = run(jobs[i])
			}
		})
	}
	for i := range jobs {
		next <- i
	}
	close(next)
	wg.Wait()
	for i, err := range errs {
		if err == nil {
			continue
		}
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, nil, ctxErr
		}
		j := jobs[i]
		if j.fold < 0 {
			return nil, nil, fmt.Errorf("%s: final fit: %w", variants[j.variant].Preprocessing, err)
		}
		return nil, nil, fmt.Errorf("%s: cross-validation fit %d: %w", variants[j.variant].Preprocessing, j.fold, err)
	}

	metrics := make([]Metrics, len(variants))
	for v, sc := range scores {
		m := Metrics{Folds: cv.Folds, Repeats: cv.Repeats}
		nf := float64(len(sc))
		for _, s := range sc {
			m.Accuracy += s.acc
			m.ROCAUC += s.auc
			m.LogLoss += s.logLoss
		}
		m.Accuracy /= nf
		m.ROCAUC /= nf
		m.LogLoss /= nf
		for _, s := range sc {
			d := s.acc - m.Accuracy
			m.AccuracyStd += d * d
		}
		m.AccuracyStd = math.Sqrt(m.AccuracyStd / nf)
		metrics[v] = m
	}
	return metrics, fitted, nil
}

// fitFold fits on every row not in test and returns the test labels and predictions.
func fitFold(kind string, x *mat.Dense, y []float64, vs VariantSpec, test []int, stream uint64) (yTest, p []float64, err error) {
	n, d := x.Dims()
	inTest := make([]bool, n)
	for _, i := range test {
		inTest[i] = true
	}
	xTrain := mat.NewDense(n-len(test), d, nil)
	xTest := mat.NewDense(len(test), d, nil)
	yTrain := make([]float64, 0, n-len(test))
	yTest = make([]float64, 0, len(test))
	for i := range n {
		if inTest[i] {
			xTest.SetRow(len(yTest), x.RawRowView(i))
			yTest = append(yTest, y[i])
		} else {
			xTrain.SetRow(len(yTrain), x.RawRowView(i))
			yTrain = append(yTrain, y[i])
		}
	}
	av, err := FitVariant(kind, xTrain, yTrain, vs, stream)
	if err != nil {
		return nil, nil, err
	}
	av.Scaler.TransformDense(xTest)
	p = make([]float64, len(test))
	forwardScaled(kind, av, xTest, p)
	return yTest, p, nil
}

// forwardScaled computes into out the positive-class probabilities of the scaled rows of
// x, with one matrix product per layer. Cross-validation scores its held-out rows with it:
// it is the arithmetic the committed artifacts' metrics were computed with, kept as is so
// that training reproduces them bit for bit. Model predicts the same function with the
// scaler folded into the first layer, which differs only by rounding (a few 1e-15 on the
// shipped models' probabilities; see TestFoldedModelMatchesScaled).
func forwardScaled(kind string, av Variant, x *mat.Dense, out []float64) {
	n, d := x.Dims()
	o := mat.NewDense(n, 1, out)
	switch kind {
	case KindLogistic:
		w := mat.NewDense(1, d, slices.Clone(av.Logistic.Weights))
		o.Mul(x, w.T())
		for i := range out {
			out[i] = sigmoid(out[i] + av.Logistic.Bias)
		}
	case KindMLP:
		mw := av.MLP
		h := len(mw.HiddenWeights)
		w1 := mat.NewDense(h, d, nil)
		for j, row := range mw.HiddenWeights {
			w1.SetRow(j, row)
		}
		act := mat.NewDense(n, h, nil)
		act.Mul(x, w1.T())
		hr := act.RawMatrix()
		for i := range hr.Rows {
			row := hr.Data[i*hr.Stride : i*hr.Stride+hr.Cols]
			for j, a := range row {
				row[j] = tanh(a + mw.HiddenBias[j])
			}
		}
		o.Mul(act, mat.NewDense(1, h, slices.Clone(mw.OutputWeights)).T())
		for i := range out {
			out[i] = sigmoid(out[i] + mw.OutputBias)
		}
	}
}

// StratifiedKFold splits the rows of labels y (1 or 0) into k folds of test rows with the
// class proportions of y: each class's rows are shuffled by PCG(seed, stream) and dealt
// round-robin, the second class continuing where the first stopped, so fold sizes differ by
// at most one. Each fold lists its rows in ascending order. Errors wrap ErrInvalidData when
// a class has fewer than k rows.
func StratifiedKFold(y []float64, k int, seed, stream uint64) ([][]int, error) {
	if k < 2 {
		return nil, fmt.Errorf("stratified k-fold: %w: k = %d", ErrInvalidData, k)
	}
	var pos, neg []int
	for i, v := range y {
		if v == 1 {
			pos = append(pos, i)
		} else {
			neg = append(neg, i)
		}
	}
	if len(pos) < k || len(neg) < k {
		return nil, fmt.Errorf("stratified k-fold: %w: %d positive and %d negative rows for %d folds", ErrInvalidData, len(pos), len(neg), k)
	}
	rng := newRand(seed, stream)
	rng.shuffle(pos)
	rng.shuffle(neg)
	folds := make([][]int, k)
	next := 0
	for _, class := range [][]int{pos, neg} {
		for _, i := range class {
			folds[next] = append(folds[next], i)
			next = (next + 1) % k
		}
	}
	for _, f := range folds {
		slices.Sort(f)
	}
	return folds, nil
}

func checkData(kind string, x *mat.Dense, y []float64, hp Hyperparams) error {
	if x == nil {
		return fmt.Errorf("%w: nil matrix", ErrInvalidData)
	}
	n, d := x.Dims()
	if n != len(y) {
		return fmt.Errorf("%w: %d rows, %d labels", ErrInvalidData, n, len(y))
	}
	if n == 0 || d == 0 {
		return fmt.Errorf("%w: empty matrix", ErrInvalidData)
	}
	for i, v := range y {
		if v != 0 && v != 1 {
			return fmt.Errorf("%w: label %d is %v, want 0 or 1", ErrInvalidData, i, v)
		}
	}
	if !(hp.L2 >= 0) || math.IsInf(hp.L2, 0) || !(hp.L2Output >= 0) || math.IsInf(hp.L2Output, 0) {
		return fmt.Errorf("%w: l2 %v and l2_output %v must be finite and >= 0", ErrInvalidData, hp.L2, hp.L2Output)
	}
	if hp.MaxIterations < 1 {
		return fmt.Errorf("%w: max_iterations %d must be >= 1", ErrInvalidData, hp.MaxIterations)
	}
	switch kind {
	case KindLogistic:
	case KindMLP:
		if hp.HiddenUnits < 1 {
			return fmt.Errorf("%w: mlp needs hidden_units >= 1", ErrInvalidData)
		}
	default:
		return fmt.Errorf("%w: unknown kind %q", ErrInvalidData, kind)
	}
	return nil
}
