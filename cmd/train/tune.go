package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"math"
	"slices"
	"text/tabwriter"

	"gonum.org/v1/gonum/mat"

	"github.com/predq/predq/internal/inference"
)

// The protocol of the hyperparameter search (-tune). It shuffles with another seed than the
// shipped protocol, and repeats more, so that the choice does not ride on the noise of the
// folds whose metrics the artifacts report.
const (
	tuneRepeats = 5
	tuneSeed    = 99
)

// tuneGrid returns the candidate hyperparameters of a kind.
func tuneGrid(kind string) []inference.Hyperparams {
	var grid []inference.Hyperparams
	switch kind {
	case inference.KindLogistic:
		for _, l2 := range []float64{1, 3, 10, 30, 100, 300} {
			grid = append(grid, inference.Hyperparams{L2: l2, MaxIterations: 100})
		}
	case inference.KindMLP:
		for _, h := range []int{16, 32} {
			for _, l2 := range []float64{0.3, 1, 3, 10} {
				for _, l2o := range []float64{0.03, 0.1, 0.3, 1} {
					for _, it := range []int{100, 300, 600} {
						grid = append(grid, inference.Hyperparams{
							L2: l2, L2Output: l2o, HiddenUnits: h, MaxIterations: it, Seed: mlpSeed,
						})
					}
				}
			}
		}
	}
	return grid
}

// tune cross-validates every candidate of tuneGrid for every variant of the shipped specs,
// prints the best candidates and the selection: the highest mean accuracy (to 4 decimals,
// as printed), ties broken by the lower log loss. The shipped specs hold what it selected.
func tune(ctx context.Context, x *mat.Dense, y []float64, specs []inference.TrainSpec, stdout io.Writer) error {
	tuneCV := inference.CVConfig{Folds: cvFolds, Repeats: tuneRepeats, Seed: tuneSeed}
	type result struct {
		hp inference.Hyperparams
		m  inference.Metrics
	}
	for _, spec := range specs {
		for _, vs := range spec.Variants {
			var results []result
			for _, hp := range tuneGrid(spec.Kind) {
				m, err := inference.CrossValidate(ctx, spec.Kind, x, y,
					inference.VariantSpec{Preprocessing: vs.Preprocessing, Hyperparams: hp}, tuneCV, 0)
				if err != nil {
					return fmt.Errorf("tune %s %s: %w", spec.Kind, vs.Preprocessing, err)
				}
				results = append(results, result{hp, m})
			}
			slices.SortStableFunc(results, func(a, b result) int {
				return cmp.Or(cmp.Compare(round4(b.m.Accuracy), round4(a.m.Accuracy)), cmp.Compare(a.m.LogLoss, b.m.LogLoss))
			})
			fmt.Fprintf(stdout, "%s %s (%s): %d candidates, best first\n", spec.Version, spec.Kind, vs.Preprocessing, len(results))
			tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
			fmt.Fprintln(tw, "l2\tl2_output\thidden\titerations\taccuracy\tstd\troc_auc\tlog_loss\t")
			for _, r := range results[:min(5, len(results))] {
				fmt.Fprintf(tw, "%g\t%g\t%d\t%d\t%.4f\t%.4f\t%.4f\t%.4f\t\n", r.hp.L2, r.hp.L2Output,
					r.hp.HiddenUnits, r.hp.MaxIterations, r.m.Accuracy, r.m.AccuracyStd, r.m.ROCAUC, r.m.LogLoss)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			shipped := "(shipped)"
			if results[0].hp != vs.Hyperparams {
				shipped = fmt.Sprintf("(differs from the shipped %+v)", vs.Hyperparams)
			}
			fmt.Fprintf(stdout, "selected: %+v %s\n\n", results[0].hp, shipped)
		}
	}
	return nil
}

// round4 rounds to 4 decimals: accuracies closer than that tie.
func round4(x float64) float64 { return math.Round(x*1e4) / 1e4 }
