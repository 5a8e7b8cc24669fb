package inference

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"testing"

	"github.com/stretchr/testify/require"
)

// testArtifact returns a small hand-made artifact of the given kind with three inputs.
func testArtifact(kind string) *Artifact {
	a := &Artifact{
		Kind:          kind,
		Version:       "v0.1.0",
		InputSize:     3,
		FeatureNames:  []string{"a", "b", "c"},
		PositiveClass: "M",
		NegativeClass: "R",
		DatasetSHA256: "00",
		CreatedBy:     "test",
	}
	metrics := Metrics{Accuracy: 0.75, AccuracyStd: 0.1, ROCAUC: 0.8, LogLoss: 0.5, Folds: 10, Repeats: 3}
	for i, prep := range []Preprocessing{Standard, MinMax} {
		v := Variant{
			Preprocessing: prep,
			Scaler:        Scaler{Center: []float64{0.5, 0, -1}, Scale: []float64{2, 1, 0.25 * float64(i+1)}},
			Hyperparams:   Hyperparams{L2: 1, MaxIterations: 10},
			Metrics:       metrics,
		}
		switch kind {
		case KindLogistic:
			v.Logistic = &LogisticWeights{Weights: []float64{1, -2, 0.125}, Bias: 0.25}
		case KindMLP:
			v.Hyperparams.HiddenUnits = 2
			v.MLP = &MLPWeights{
				Activation:    ActivationTanh,
				HiddenWeights: [][]float64{{1, -1, 0.5}, {-0.25, 2, 0}},
				HiddenBias:    []float64{0.1, -0.2},
				OutputWeights: []float64{1.5, -0.75},
				OutputBias:    0.05,
			}
		}
		a.Variants = append(a.Variants, v)
	}
	return a
}

func encodeTestArtifact(t *testing.T, kind string) []byte {
	t.Helper()
	b, err := EncodeArtifact(testArtifact(kind))
	require.NoError(t, err)
	return b
}

var checksumRE = regexp.MustCompile(`"checksum": "[^"]*"`)

// reseal recomputes the checksum of artifact bytes b, so that tests can reach the
// structural checks behind the checksum.
func reseal(b []byte) []byte {
	empty := checksumRE.ReplaceAll(b, []byte(`"checksum": ""`))
	sum := sha256.Sum256(empty)
	return checksumRE.ReplaceAll(b, []byte(`"checksum": "sha256:`+hex.EncodeToString(sum[:])+`"`))
}
