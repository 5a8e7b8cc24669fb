package inference

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/stretchr/testify/require"
)

func TestEncodeArtifact(t *testing.T) {
	t.Parallel()

	for _, kind := range []string{KindLogistic, KindMLP} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()

			a := testArtifact(kind)
			b, err := EncodeArtifact(a)
			require.NoError(t, err)

			t.Run("Deterministic", func(t *testing.T) {
				again, err := EncodeArtifact(testArtifact(kind))
				require.NoError(t, err)
				require.Equal(t, string(b), string(again))
			})
			t.Run("Format", func(t *testing.T) {
				require.True(t, bytes.HasPrefix(b, []byte("{\n  \"kind\": ")), "two-space indent")
				require.True(t, bytes.HasSuffix(b, []byte("\"\n}\n")), "checksum last, trailing newline")
			})
			t.Run("ChecksumCoversEncodingWithEmptyChecksum", func(t *testing.T) {
				require.Regexp(t, `^sha256:[0-9a-f]{64}$`, a.Checksum)
				empty := bytes.Replace(b, []byte(a.Checksum), nil, 1)
				require.Contains(t, string(empty), `"checksum": ""`)
				sum := sha256.Sum256(empty)
				require.Equal(t, "sha256:"+hex.EncodeToString(sum[:]), a.Checksum)
			})
			t.Run("RoundTrip", func(t *testing.T) {
				got, err := ParseArtifact(b)
				require.NoError(t, err)
				if diff := cmp.Diff(a, got); diff != "" {
					t.Errorf("ParseArtifact(EncodeArtifact(a)) mismatch (-want +got):\n%s", diff)
				}
				m, err := DecodeArtifact(b)
				require.NoError(t, err)
				require.Equal(t, a.Checksum, m.Checksum)
				require.Equal(t, []string{"standard", "minmax"}, m.Preprocessings())
			})
		})
	}
}

func TestDecodeArtifactCorrupt(t *testing.T) {
	t.Parallel()

	b := encodeTestArtifact(t, KindMLP)

	tests := []struct {
		name    string
		corrupt func([]byte) []byte
		want    error
	}{
		{
			name: "FlippedWeightDigit",
			corrupt: func(b []byte) []byte {
				i := bytes.Index(b, []byte(`"output_bias": 0.05`)) + len(`"output_bias": 0.0`)
				b[i] ^= 0x01 // '5' -> '4'
				return b
			},
			want: ErrChecksum,
		},
		{
			name: "FlippedChecksumDigit",
			corrupt: func(b []byte) []byte {
				i := bytes.Index(b, []byte(`sha256:`)) + len(`sha256:`)
				if b[i] == '0' {
					b[i] = '1'
				} else {
					b[i] = '0'
				}
				return b
			},
			want: ErrChecksum,
		},
		{
			name: "ChangedWhitespace",
			corrupt: func(b []byte) []byte {
				return bytes.Replace(b, []byte("\n  \"version\""), []byte("\n   \"version\""), 1)
			},
			want: ErrChecksum,
		},
		{
			name:    "MissingTrailingNewline",
			corrupt: func(b []byte) []byte { return b[:len(b)-1] },
			want:    ErrChecksum,
		},
		{
			name:    "Empty",
			corrupt: func([]byte) []byte { return nil },
			want:    ErrInvalidArtifact,
		},
		{
			name:    "TruncatedHalf",
			corrupt: func(b []byte) []byte { return b[:len(b)/2] },
			want:    ErrInvalidArtifact,
		},
		{
			name:    "TruncatedBeforeClosingBrace",
			corrupt: func(b []byte) []byte { return b[:len(b)-3] },
			want:    ErrInvalidArtifact,
		},
		{
			name:    "NoChecksum",
			corrupt: func(b []byte) []byte { return checksumRE.ReplaceAll(b, []byte(`"checksum_": ""`)) },
			want:    ErrInvalidArtifact,
		},
		{
			name: "UnknownFieldResealed",
			corrupt: func(b []byte) []byte {
				return reseal(bytes.Replace(b, []byte(`"kind": "mlp",`), []byte(`"kind": "mlp", "extra": 1,`), 1))
			},
			want: ErrInvalidArtifact,
		},
		{
			name: "UnknownKindResealed",
			corrupt: func(b []byte) []byte {
				return reseal(bytes.Replace(b, []byte(`"kind": "mlp"`), []byte(`"kind": "svm"`), 1))
			},
			want: ErrInvalidArtifact,
		},
		{
			name: "WrongWeightCountResealed",
			corrupt: func(b []byte) []byte {
				return reseal(bytes.Replace(b, []byte("\"input_size\": 3"), []byte("\"input_size\": 4"), 1))
			},
			want: ErrInvalidArtifact,
		},
		{
			name: "DuplicatePreprocessingResealed",
			corrupt: func(b []byte) []byte {
				return reseal(bytes.Replace(b, []byte(`"preprocessing": "minmax"`), []byte(`"preprocessing": "standard"`), 1))
			},
			want: ErrInvalidArtifact,
		},
		{
			name: "ZeroScaleResealed",
			corrupt: func(b []byte) []byte {
				return reseal(bytes.Replace(b, []byte("\"scale\": [\n          2,"), []byte("\"scale\": [\n          0,"), 1))
			},
			want: ErrInvalidArtifact,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			corrupted := tt.corrupt(bytes.Clone(b))
			require.NotEqual(t, b, corrupted, "the corruption changed nothing")
			_, err := DecodeArtifact(corrupted)
			require.ErrorIs(t, err, tt.want)
		})
	}
}

// TestDecodeArtifactEveryByteFlipped flips each byte of an encoded artifact in turn: every
// corruption must be detected, as ErrChecksum or ErrInvalidArtifact.
func TestDecodeArtifactEveryByteFlipped(t *testing.T) {
	t.Parallel()

	b := encodeTestArtifact(t, KindLogistic)
	for i := range b {
		corrupted := bytes.Clone(b)
		corrupted[i] ^= 0x01
		_, err := DecodeArtifact(corrupted)
		if err == nil || (!errors.Is(err, ErrChecksum) && !errors.Is(err, ErrInvalidArtifact)) {
			t.Fatalf("byte %d (%q) flipped: err = %v, want ErrChecksum or ErrInvalidArtifact", i, b[i], err)
		}
	}
}

func TestEncodeArtifactInvalid(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name   string
		mutate func(*Artifact)
		want   string
	}{
		{"BadVersion", func(a *Artifact) { a.Version = "1.0" }, "version"},
		{"BadName", func(a *Artifact) { a.Name = "Sonar Model" }, "name"},
		{"NoVariants", func(a *Artifact) { a.Variants = nil }, "no variants"},
		{"FeatureNames", func(a *Artifact) { a.FeatureNames = a.FeatureNames[:2] }, "feature_names"},
		{"SameClasses", func(a *Artifact) { a.NegativeClass = "M" }, "distinct"},
		{"UnknownPreprocessing", func(a *Artifact) { a.Variants[0].Preprocessing = "log" }, "unknown preprocessing"},
		{"WrongKindWeights", func(a *Artifact) { a.Variants[0].MLP = &MLPWeights{} }, "no mlp weights"},
		{"NonFiniteWeight", func(a *Artifact) { a.Variants[1].Logistic.Weights[2] = math.Inf(1) }, "not finite"},
		{"NegativeScale", func(a *Artifact) { a.Variants[1].Scaler.Scale[0] = -1 }, "scale[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a := testArtifact(KindLogistic)
			tt.mutate(a)
			_, err := EncodeArtifact(a)
			require.ErrorIs(t, err, ErrInvalidArtifact)
			require.True(t, strings.Contains(err.Error(), tt.want), "error %q does not mention %q", err, tt.want)
			_, err = NewModel(a)
			require.ErrorIs(t, err, ErrInvalidArtifact)
		})
	}
}
