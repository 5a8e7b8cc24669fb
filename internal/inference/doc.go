// Package inference is the numerical core of predq: feature preprocessing, the two model
// kinds (L2-regularised logistic regression and a one-hidden-layer MLP), their training and
// cross-validation, and the artifact format that carries a trained model between cmd/train
// and the services that load it.
//
// The package does no I/O: artifacts go in and out as []byte (EncodeArtifact,
// DecodeArtifact), data sets as gonum matrices. All randomness comes from math/rand/v2 PCG
// generators with fixed seeds, so training is reproducible bit for bit on a given platform
// (same GOARCH, same gonum version).
//
// # Preprocessing
//
// Every preprocessing is an affine map fitted on training rows only and stored in the
// artifact as Center and Scale vectors; a feature x becomes (x - Center) / Scale, computed
// as (x - Center) · (1/Scale) in training and by Scaler.Transform:
//
//   - Standard: Center is the mean, Scale the population standard deviation (divide by n,
//     like scikit-learn's StandardScaler).
//   - MinMax: Center is the minimum, Scale is max - min (features map onto [0, 1]).
//   - Robust: Center is the median, Scale the interquartile range Q3 - Q1, both computed
//     with Quantile (linear interpolation, numpy's default "linear" method).
//
// A spread below MinSpread (a constant feature) would divide by ~0: its Scale is stored
// as 1, so the feature is only centred.
//
// A Model folds the map into its first layer when it loads (weights w/Scale, bias
// b - Σ (w/Scale)·Center), so that predictions multiply the features as they come. The two
// forms differ only by rounding: below 1e-14 on the shipped models' probabilities.
//
// # Probabilities
//
// Models output P(positive class) for the artifact's PositiveClass ("M", mine, for the
// sonar models). PredictOne and PredictBatch agree within 1e-12. In fact they are
// bit-identical, which the tests check: the MLP computes every row with the same functions
// (a gonum GEMV per row, then the activations), and the logistic regression computes the
// rows of a batch that lie back to back in one buffer as one gonum GEMV, whose result for
// a row does not depend on the rows computed with it (see products); other rows are copied
// together for it. The activations use a table-driven exponential within about half an
// ulp, in a tight loop over a slice (see sigmoidInPlace), written in AVX2 assembly for
// amd64 CPUs that have it and bit-identical to the Go loop that runs elsewhere; training
// keeps math.Exp. A NaN or infinite feature is detected on the first layer's
// pre-activations, which it always makes non-finite, and only then looked for feature by
// feature to name it.
package inference
