package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/client"
)

func runArgs(t *testing.T, env map[string]string, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), args, func(k string) string { return env[k] }, strings.NewReader(""), &out, &errb)
	code := report(err, &errb)
	return out.String(), errb.String(), code
}

// Every command's help page shows an example.
func TestEveryCommandHasAnExample(t *testing.T) {
	a := &app{getenv: func(string) string { return "" }}
	var walk func(c *cobra.Command)
	walk = func(c *cobra.Command) {
		if c.Name() != "help" && !c.Hidden {
			require.NotEmpty(t, c.Example, "predq %s has no example", c.CommandPath())
		}
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(a.rootCmd())
	out, _, code := runArgs(t, nil, "help", "jobs", "submit")
	require.Equal(t, 0, code)
	require.Contains(t, out, "Examples:")
	require.Contains(t, out, "predq jobs submit rows.csv --wait --out results.csv")
}

func TestUsageErrorsExit2(t *testing.T) {
	for _, args := range [][]string{
		{"nope"}, {"jobs", "submit"}, {"jobs", "get"}, {"jobs", "list", "--limit", "x"},
		{"jobs", "submit", "rows.txt"}, {"jobs", "submit", "rows.csv", "--out", "results.xlsx"},
		{"jobs", "submit", "-", "--join", "--out", "r.csv"}, {"jobs", "submit", "rows.json", "--model", "v1.0.0"},
		{"jobs", "submit", "rows.csv", "--metadata", "novalue"}, {"predict", "--features", "1,x"},
		{"health", "--output", "yaml"}, {"health", "--url", "localhost:8080"},
	} {
		_, stderr, code := runArgs(t, nil, args...)
		require.Equal(t, exitUsage, code, "%v: %s", args, stderr)
		require.Contains(t, stderr, "predq: ", "%v", args)
	}
}

func TestExitCodes(t *testing.T) {
	failed := "the model file is gone"
	for _, tc := range []struct {
		err  error
		want int
	}{
		{nil, exitOK},
		{&client.Problem{Status: 422, Title: "Invalid input"}, exitFailure},
		{&client.Problem{Status: 401, Title: "Unauthorized"}, exitAuth},
		{fmt.Errorf("list: %w", &client.Problem{Status: 403, Title: "Forbidden"}), exitAuth},
		{fmt.Errorf("GET /x: %w: %w", client.ErrUnreachable, errors.New("connection refused")), exitUnreachable},
		{&jobError{job: client.Job{ID: "j", Status: "failed", Error: &failed}}, exitFailure},
		{usagef("bad"), exitUsage},
		{errInterrupted, exitInterrupted},
		{context.Canceled, exitInterrupted},
		{errors.New("disk full"), exitFailure},
	} {
		require.Equal(t, tc.want, exitCode(tc.err), "%v", tc.err)
	}
	var b bytes.Buffer
	require.Equal(t, exitFailure, report(&client.Problem{Status: 422, Title: "Invalid input", Errors: []client.FieldError{
		{Field: "rows[11].features", Message: "must have 60 values, got 3"}, {Field: "rows[501].features[0]", Message: "is out of range"}}}, &b))
	require.Equal(t, "predq: Invalid input (422)\n  rows[11].features: must have 60 values, got 3\n  rows[501].features[0]: is out of range\n", b.String())
	b.Reset()
	report(&jobError{job: client.Job{ID: "j", Status: "failed", Error: &failed}}, &b)
	require.Equal(t, "predq: job j failed: the model file is gone\n", b.String())
}

func TestFormats(t *testing.T) {
	for _, tc := range []struct{ path, flag, want string }{
		{"a.csv", "", client.FormatCSV}, {"a.CSV.gz", "", client.FormatCSV}, {"a.ndjson", "", client.FormatNDJSON},
		{"a.jsonl.gz", "", client.FormatNDJSON}, {"a.json", "", client.FormatJSON}, {"-", "", client.FormatNDJSON},
		{"-", "csv", client.FormatCSV}, {"a.txt", "json", client.FormatJSON},
	} {
		got, err := formatOf(tc.path, tc.flag)
		require.NoError(t, err, tc.path)
		require.Equal(t, tc.want, got, tc.path)
	}
}

// The default Idempotency-Key changes with the file's bytes and with the options, and only
// then.
func TestDefaultIdempotencyKey(t *testing.T) {
	dir := t.TempDir()
	p1, p2 := filepath.Join(dir, "a.csv"), filepath.Join(dir, "b.csv")
	require.NoError(t, os.WriteFile(p1, []byte("1,2\n"), 0o600))
	require.NoError(t, os.WriteFile(p2, []byte("1,3\n"), 0o600))
	k1, err := defaultIdempotencyKey(context.Background(), p1, client.FormatCSV, client.SubmitOptions{})
	require.NoError(t, err)
	again, _ := defaultIdempotencyKey(context.Background(), p1, client.FormatCSV, client.SubmitOptions{})
	other, _ := defaultIdempotencyKey(context.Background(), p2, client.FormatCSV, client.SubmitOptions{})
	model, _ := defaultIdempotencyKey(context.Background(), p1, client.FormatCSV, client.SubmitOptions{ModelVersion: "v1.0.0"})
	require.Equal(t, k1, again)
	require.NotEqual(t, k1, other)
	require.NotEqual(t, k1, model)
}

// login stores the key with mode 0600, and the profile's key goes only to its URL.
func TestProfile(t *testing.T) {
	dir := t.TempDir()
	a := &app{getenv: func(k string) string {
		return map[string]string{"XDG_CONFIG_HOME": dir}[k]
	}}
	path, err := a.profilePath()
	require.NoError(t, err)
	require.Equal(t, filepath.Join(dir, "predq", "profile.json"), path)
	require.NoError(t, writeProfile(path, profile{URL: "http://10.0.0.1:8080", APIKey: "secret"}))
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	p, err := a.loadProfile()
	require.NoError(t, err)
	require.Equal(t, profile{URL: "http://10.0.0.1:8080", APIKey: "secret"}, p)
}

// --join reads the input again as the server counts its rows.
func TestRowReaders(t *testing.T) {
	for _, tc := range []struct {
		format, body string
		header       []string
	}{
		{client.FormatCSV, "a,b\n1,2\n\n3, 4e-1\n", []string{"a", "b"}},
		{client.FormatCSV, "1,2\n3,4e-1\n", nil},
		{client.FormatNDJSON, "[1,2]\n\n{\"features\":[3,4e-1]}\n", nil},
		{client.FormatNDJSON, "[1,2]\n{\"features\":[3,4e-1]}", nil},
		{client.FormatJSON, `{"model_version":"v1.0.0","metadata":{"a":"b"},"samples":[{"features":[1,2]},{"features":[3,4e-1]}],"preprocessing":"minmax"}`, nil},
	} {
		rr, err := newRowReader(tc.format, strings.NewReader(tc.body))
		require.NoError(t, err)
		var rows [][]string
		for {
			row, err := rr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			require.NoError(t, err, tc.body)
			rows = append(rows, append([]string(nil), row...))
		}
		require.Equal(t, [][]string{{"1", "2"}, {"3", "4e-1"}}, rows, "%s %q", tc.format, tc.body)
		require.Equal(t, tc.header, rr.Header())
	}
}
