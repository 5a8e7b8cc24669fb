package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"text/tabwriter"

	"gonum.org/v1/gonum/mat"

	"github.com/predq/predq/internal/inference"
)

// datasetSHA256 is the sha256 of UCI's sonar.all-data, which data/sonar.csv must be.
const datasetSHA256 = "e90434cdbf00fcf93ffa911fe447ae25606979658e60f1d32e155c3b5240234d"

// The sonar data: 60 features and a label, M (mine, positive) or R (rock).
const (
	numFeatures   = 60
	positiveClass = "M"
	negativeClass = "R"
)

// The evaluation protocol shared by every variant, so that all variants are scored on the
// same folds: stratified 10-fold cross-validation, repeated twice (20 held-out folds per
// variant; more repeats would push the -race run of TestTrainingReproducesArtifacts well
// past half a minute on two cores).
const (
	cvFolds   = 10
	cvRepeats = 2
	cvSeed    = 20240611
)

// modelName is the family name the artifacts carry: the Open Inference Protocol's model name.
const modelName = "sonar"

// mlpSeed seeds the MLPs' initial weights.
const mlpSeed = 7

// specs returns the artifacts to train. Their hyperparameters are what `train -tune`
// selects (see tune.go): the best mean accuracy in a grid search under a separate
// cross-validation protocol.
func specs(featureNames []string) []inference.TrainSpec {
	cv := inference.CVConfig{Folds: cvFolds, Repeats: cvRepeats, Seed: cvSeed}
	createdBy := fmt.Sprintf("go run ./cmd/train (predq); cv: stratified %d-fold x %d repeats, seed %d",
		cv.Folds, cv.Repeats, cv.Seed)
	base := inference.TrainSpec{
		Name:          modelName,
		FeatureNames:  featureNames,
		PositiveClass: positiveClass,
		NegativeClass: negativeClass,
		DatasetSHA256: datasetSHA256,
		CreatedBy:     createdBy,
		CV:            cv,
	}
	lr := base
	lr.Kind, lr.Version = inference.KindLogistic, "v1.0.0"
	lr.Variants = []inference.VariantSpec{
		{Preprocessing: inference.Standard, Hyperparams: inference.Hyperparams{L2: 30, MaxIterations: 100}},
		{Preprocessing: inference.MinMax, Hyperparams: inference.Hyperparams{L2: 3, MaxIterations: 100}},
	}
	mlp := base
	mlp.Kind, mlp.Version = inference.KindMLP, "v2.0.0"
	mlp.Variants = []inference.VariantSpec{
		{Preprocessing: inference.Standard, Hyperparams: inference.Hyperparams{
			L2: 1, L2Output: 0.1, HiddenUnits: 32, MaxIterations: 300, Seed: mlpSeed}},
		{Preprocessing: inference.MinMax, Hyperparams: inference.Hyperparams{
			L2: 0.3, L2Output: 0.3, HiddenUnits: 16, MaxIterations: 600, Seed: mlpSeed}},
		{Preprocessing: inference.Robust, Hyperparams: inference.Hyperparams{
			L2: 0.3, L2Output: 0.03, HiddenUnits: 32, MaxIterations: 600, Seed: mlpSeed}},
	}
	return []inference.TrainSpec{lr, mlp}
}

// run is the whole program: main only calls it.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()

	fs := flag.NewFlagSet("train", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataPath := fs.String("data", "data/sonar.csv", "the sonar data set (UCI sonar.all-data)")
	outDir := fs.String("out", "models", "directory to write the model artifacts into")
	tuneOnly := fs.Bool("tune", false, "search the hyperparameter grid and print the selection; write nothing")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %q", fs.Args())
	}

	raw, err := os.ReadFile(*dataPath)
	if err != nil {
		return fmt.Errorf("read data: %w", err)
	}
	if sum := sha256.Sum256(raw); hex.EncodeToString(sum[:]) != datasetSHA256 {
		return fmt.Errorf("data %s: sha256 %x, want %s (UCI sonar.all-data)", *dataPath, sum, datasetSHA256)
	}
	x, y, err := parseSonar(raw)
	if err != nil {
		return fmt.Errorf("data %s: %w", *dataPath, err)
	}
	names := make([]string, numFeatures)
	for i := range names {
		names[i] = fmt.Sprintf("band_%02d", i)
	}
	if *tuneOnly {
		return tune(ctx, x, y, specs(names), stdout)
	}

	if err := os.MkdirAll(*outDir, 0o755); err != nil {
		return fmt.Errorf("create output directory: %w", err)
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "version\tkind\tpreprocessing\taccuracy\tstd\troc_auc\tlog_loss\t")
	for _, spec := range specs(names) {
		a, err := inference.Train(ctx, x, y, spec)
		if err != nil {
			return err
		}
		b, err := inference.EncodeArtifact(a)
		if err != nil {
			return err
		}
		path := filepath.Join(*outDir, a.Version+".json")
		if err := writeFileAtomic(path, b); err != nil {
			return err
		}
		for _, v := range a.Variants {
			m := v.Metrics
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.4f\t%.4f\t%.4f\t%.4f\t\n",
				a.Version, a.Kind, v.Preprocessing, m.Accuracy, m.AccuracyStd, m.ROCAUC, m.LogLoss)
		}
		fmt.Fprintf(stderr, "wrote %s (%s)\n", path, a.Checksum)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "metrics: means over %d repeats of stratified %d-fold cross-validation (seed %d)\n",
		cvRepeats, cvFolds, cvSeed)
	return err
}

// parseSonar reads the headerless sonar CSV: 60 features in [0, 1] and a label M or R per
// row. The label is 1 for M (mine, the positive class) and 0 for R.
func parseSonar(raw []byte) (*mat.Dense, []float64, error) {
	r := csv.NewReader(bytes.NewReader(raw))
	r.FieldsPerRecord = numFeatures + 1
	r.ReuseRecord = true
	var data, y []float64
	for line := 1; ; line++ {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, err
		}
		for j, s := range rec[:numFeatures] {
			v, err := strconv.ParseFloat(s, 64)
			if err != nil {
				return nil, nil, fmt.Errorf("line %d, field %d: %w", line, j+1, err)
			}
			data = append(data, v)
		}
		switch rec[numFeatures] {
		case positiveClass:
			y = append(y, 1)
		case negativeClass:
			y = append(y, 0)
		default:
			return nil, nil, fmt.Errorf("line %d: label %q is not %s or %s", line, rec[numFeatures], positiveClass, negativeClass)
		}
	}
	if len(y) == 0 {
		return nil, nil, errors.New("no rows")
	}
	return mat.NewDense(len(y), numFeatures, data), y, nil
}

// writeFileAtomic writes b to path through a temporary file in the same directory, so a
// reader never sees a partial artifact.
func writeFileAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), ".tmp-"+filepath.Base(path)+"-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(f.Name()) // no-op after the rename
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Chmod(0o644); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(f.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
