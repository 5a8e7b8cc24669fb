package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const dataPath = "../../data/sonar.csv"

// TestTrainingReproducesArtifacts retrains every model and checks that the result is
// byte-identical to the committed models/*.json. After an intended change to the training,
// regenerate them with `go run ./cmd/train` from the repository root.
func TestTrainingReproducesArtifacts(t *testing.T) {
	t.Parallel()

	out := t.TempDir()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"-data", dataPath, "-out", out}, &stdout, &stderr)
	require.NoError(t, err, "stderr: %s", stderr.String())
	t.Logf("metrics:\n%s", stdout.String())

	for _, name := range []string{"v1.0.0.json", "v2.0.0.json"} {
		got, err := os.ReadFile(filepath.Join(out, name))
		require.NoError(t, err)
		want, err := os.ReadFile(filepath.Join("../../models", name))
		require.NoError(t, err, "the committed artifact is missing: run go run ./cmd/train")
		if !bytes.Equal(want, got) {
			t.Errorf("%s differs from the committed artifact; first difference: %s", name, firstDiff(want, got))
		}
	}
	entries, err := os.ReadDir(out)
	require.NoError(t, err)
	require.Len(t, entries, 2, "no temporary files left behind")

	for _, s := range []string{"v1.0.0", "v2.0.0", "logistic_regression", "mlp", "standard", "minmax", "robust", "accuracy"} {
		require.Contains(t, stdout.String(), s)
	}
}

// firstDiff describes the first line where a and b differ.
func firstDiff(a, b []byte) string {
	la, lb := strings.Split(string(a), "\n"), strings.Split(string(b), "\n")
	for i := range min(len(la), len(lb)) {
		if la[i] != lb[i] {
			return fmt.Sprintf("line %d: want %q, got %q", i+1, la[i], lb[i])
		}
	}
	return fmt.Sprintf("line count: want %d, got %d", len(la), len(lb))
}

func TestRunErrors(t *testing.T) {
	t.Parallel()

	raw, err := os.ReadFile(dataPath)
	require.NoError(t, err)
	altered := bytes.Clone(raw)
	altered[2] = '1' // 0.0200 -> 0.0210
	alteredPath := filepath.Join(t.TempDir(), "sonar.csv")
	require.NoError(t, os.WriteFile(alteredPath, altered, 0o644))

	tests := []struct {
		name string
		args []string
		want string
	}{
		{"AlteredData", []string{"-data", alteredPath, "-out", t.TempDir()}, "sha256"},
		{"MissingData", []string{"-data", filepath.Join(t.TempDir(), "none.csv"), "-out", t.TempDir()}, "no such file"},
		{"UnknownFlag", []string{"-epochs", "3"}, "flag provided but not defined"},
		{"ExtraArgument", []string{"-data", dataPath, "now"}, "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), tt.args, &stdout, &stderr)
			require.ErrorContains(t, err, tt.want)
			require.Empty(t, stdout.String())
		})
	}
}

func TestParseSonar(t *testing.T) {
	t.Parallel()

	row := strings.Repeat("0.5,", 60)
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"BadLabel", row + "X\n", `label "X"`},
		{"ShortRow", "0.1,0.2,M\n", "wrong number of fields"},
		{"NotANumber", strings.Repeat("0.5,", 59) + "abc,R\n", "field 60"},
		{"Empty", "", "no rows"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, _, err := parseSonar([]byte(tt.in))
			require.ErrorContains(t, err, tt.want)
		})
	}

	t.Run("Sonar", func(t *testing.T) {
		t.Parallel()
		raw, err := os.ReadFile(dataPath)
		require.NoError(t, err)
		x, y, err := parseSonar(raw)
		require.NoError(t, err)
		n, d := x.Dims()
		require.Equal(t, 208, n)
		require.Equal(t, 60, d)
		var mines int
		for _, v := range y {
			mines += int(v)
		}
		require.Equal(t, 111, mines)
		require.Equal(t, 0.02, x.At(0, 0))
	})
}
