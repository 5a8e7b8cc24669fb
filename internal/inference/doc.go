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
// as (x - Center) · (1/Scale) everywhere:
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
// # Probabilities
//
// Models output P(positive class) for the artifact's PositiveClass ("M", mine, for the
// sonar models). PredictOne and PredictBatch agree within 1e-12. In fact they compute every
// dot product with the same gonum kernel in the same order, so for models of up to 64
// inputs (gonum's block size; the sonar models have 60) they are bit-identical, which the
// tests check.
package inference
