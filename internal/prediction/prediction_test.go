package prediction

import (
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/predq/predq/internal/validate"
)

func features(n int, v float64) []float64 {
	x := make([]float64, n)
	for i := range x {
		x[i] = v
	}
	return x
}

func TestInputValidate(t *testing.T) {
	t.Parallel()
	ok := func() Input {
		return Input{Features: features(60, 0.5), ConfidenceThreshold: DefaultThreshold}
	}
	tests := map[string]struct {
		mutate func(*Input)
		want   []validate.FieldError
	}{
		"valid defaults":         {func(*Input) {}, nil},
		"features missing":       {func(in *Input) { in.Features = nil }, []validate.FieldError{{Field: "features", Message: "is required"}}},
		"features empty":         {func(in *Input) { in.Features = []float64{} }, []validate.FieldError{{Field: "features", Message: "must hold at least 1 number"}}},
		"101 features":           {func(in *Input) { in.Features = features(101, 0) }, []validate.FieldError{{Field: "features", Message: "must hold at most 100 numbers, got 101"}}},
		"100 features":           {func(in *Input) { in.Features = features(100, 0) }, nil},
		"NaN":                    {func(in *Input) { in.Features[3] = math.NaN() }, []validate.FieldError{{Field: "features[3]", Message: "must be a finite number"}}},
		"+Inf":                   {func(in *Input) { in.Features[0] = math.Inf(1) }, []validate.FieldError{{Field: "features[0]", Message: "must be a finite number"}}},
		"above 1000":             {func(in *Input) { in.Features[59] = 1000.5 }, []validate.FieldError{{Field: "features[59]", Message: "must be within [-1000, 1000], got 1000.5"}}},
		"exactly -1000":          {func(in *Input) { in.Features[1] = -1000 }, nil},
		"version format":         {func(in *Input) { in.ModelVersion = "1.0" }, []validate.FieldError{{Field: "model_version", Message: `must be "latest" or vMAJOR.MINOR.PATCH, got "1.0"`}}},
		"version leading 0":      {func(in *Input) { in.ModelVersion = "v01.0.0" }, []validate.FieldError{{Field: "model_version", Message: `must be "latest" or vMAJOR.MINOR.PATCH, got "v01.0.0"`}}},
		"concrete version":       {func(in *Input) { in.ModelVersion = "v1.0.0" }, nil},
		"threshold 0":            {func(in *Input) { in.ConfidenceThreshold = 0 }, []validate.FieldError{{Field: "confidence_threshold", Message: "must be in (0, 1], got 0"}}},
		"threshold 1":            {func(in *Input) { in.ConfidenceThreshold = 1 }, nil},
		"threshold above 1":      {func(in *Input) { in.ConfidenceThreshold = 1.01 }, []validate.FieldError{{Field: "confidence_threshold", Message: "must be in (0, 1], got 1.01"}}},
		"threshold negative":     {func(in *Input) { in.ConfidenceThreshold = -0.2 }, []validate.FieldError{{Field: "confidence_threshold", Message: "must be in (0, 1], got -0.2"}}},
		"unknown prep":           {func(in *Input) { in.Preprocessing = "zscore" }, []validate.FieldError{{Field: "preprocessing", Message: `must be one of standard, minmax, robust; got "zscore"`}}},
		"robust with latest":     {func(in *Input) { in.Preprocessing = "robust" }, nil},
		"robust with v1":         {func(in *Input) { in.Preprocessing = "robust"; in.ModelVersion = "v2.0.0" }, []validate.FieldError{{Field: "preprocessing", Message: `robust is only available with model_version "latest"`}}},
		"strings are trimmed":    {func(in *Input) { in.Preprocessing = "  minmax "; in.ModelVersion = " v1.0.0\t" }, nil},
		"prep is case-sensitive": {func(in *Input) { in.Preprocessing = " ROBUST " }, []validate.FieldError{{Field: "preprocessing", Message: `must be one of standard, minmax, robust; got "ROBUST"`}}},
		"prep mixed case":        {func(in *Input) { in.Preprocessing = "MinMax" }, []validate.FieldError{{Field: "preprocessing", Message: `must be one of standard, minmax, robust; got "MinMax"`}}},
		"several problems": {func(in *Input) { in.Features = nil; in.ConfidenceThreshold = 2 }, []validate.FieldError{
			{Field: "features", Message: "is required"}, {Field: "confidence_threshold", Message: "must be in (0, 1], got 2"}}},
		"long value truncated": {func(in *Input) { in.ModelVersion = strings.Repeat("x", 100) }, []validate.FieldError{
			{Field: "model_version", Message: `must be "latest" or vMAJOR.MINOR.PATCH, got "` + strings.Repeat("x", 40) + `…"`}}},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			in := ok()
			tt.mutate(&in)
			in.Normalize()
			got := in.Validate().Errors
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

func TestNormalizeFillsDefaults(t *testing.T) {
	t.Parallel()
	in := Input{Features: []float64{1}, ModelVersion: "  ", Preprocessing: "  "}
	in.Normalize()
	if in.ModelVersion != LatestAlias || in.Preprocessing != DefaultPreprocessing {
		t.Fatalf("got %+v", in)
	}
	in = Input{Features: []float64{1}, Preprocessing: " STANDARD "}
	in.Normalize()
	if in.Preprocessing != "STANDARD" {
		t.Fatalf("Normalize changed the case of preprocessing: got %q", in.Preprocessing)
	}
}

// FeaturesValid agrees with ValidateFeatures on every rule.
func TestFeaturesValidAgreesWithValidateFeatures(t *testing.T) {
	t.Parallel()
	cases := map[string][]float64{
		"nil": nil, "empty": {}, "one": {0}, "limits": {-MaxAbsFeature, MaxAbsFeature},
		"over": {MaxAbsFeature * (1 + 1e-15)}, "under": {-MaxAbsFeature * 1.5}, "nan": {1, math.NaN()},
		"+inf": {math.Inf(1)}, "-inf": {0, math.Inf(-1)}, "max": features(MaxFeatures, 0.5),
		"too many": features(MaxFeatures+1, 0.5), "negative zero": {math.Copysign(0, -1)},
	}
	for name, x := range cases {
		v := &validate.Error{}
		ValidateFeatures(v, "features", x)
		if got, want := FeaturesValid(x), v.Len() == 0; got != want {
			t.Errorf("%s: FeaturesValid %v, ValidateFeatures finds %d problems", name, got, v.Len())
		}
	}
}

// Valid agrees with Validate on every combination of good and bad fields.
func TestValidAgreesWithValidate(t *testing.T) {
	t.Parallel()
	featureSets := [][]float64{nil, {}, {0.5}, {math.NaN()}, {MaxAbsFeature * 2}, features(MaxFeatures+1, 0.5)}
	versions := []string{LatestAlias, "v1.0.0", "v2.10.3", "", "1.0.0", "v01.0.0", "latest "}
	thresholds := []float64{0.5, 1, 1e-9, 0, -0.1, 1.0000001, math.NaN()}
	preps := []string{"standard", "minmax", "robust", "", "Standard"}
	n := 0
	for _, fs := range featureSets {
		for _, mv := range versions {
			for _, th := range thresholds {
				for _, p := range preps {
					in := Input{Features: fs, ModelVersion: mv, ConfidenceThreshold: th, Preprocessing: p}
					v := in.Validate()
					if got, want := in.Valid(), v.Len() == 0; got != want {
						t.Errorf("%+v: Valid %v, Validate finds %v", in, got, v.Errors)
					}
					if v.Len() == 0 {
						n++
					}
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no input was valid: the cases do not reach the valid path")
	}
}

// The option rules are those of an input's, without features: a batch job checks its
// options with them and gets the same field errors.
func TestValidateOptionsMatchesInputRules(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		version, prep string
		threshold     float64
	}{
		{"", "", 0.5}, {" v1.0.0 ", "MinMax", 1}, {"x", "zz", 0}, {"v1.0.0", "robust", 0.5}, {"latest", "robust", 1.5},
	} {
		in := Input{Features: []float64{1}, ModelVersion: tc.version, Preprocessing: tc.prep, ConfidenceThreshold: tc.threshold}
		in.Normalize()
		version, prep := NormalizeOptions(tc.version, tc.prep)
		if version != in.ModelVersion || prep != in.Preprocessing {
			t.Fatalf("NormalizeOptions(%q, %q) = %q, %q; Normalize gives %q, %q", tc.version, tc.prep, version, prep, in.ModelVersion, in.Preprocessing)
		}
		v := &validate.Error{}
		ValidateOptions(v, version, tc.threshold, prep)
		if diff := cmp.Diff(in.Validate().Errors, v.Errors); diff != "" {
			t.Errorf("%+v (-input +options):\n%s", tc, diff)
		}
	}
}
