package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
)

// benchLine is a result line of `go test -bench`.
var benchLine = regexp.MustCompile(`(?m)^Benchmark\S+\s+\d+\s`)

// goBenchCommand is `bench gobench [-root DIR] [-benchtime T] [-count N]`: it runs each of
// goBenchmarks in the repository, printing its output, and fails when one fails or runs no
// benchmark (a renamed Benchmark function would otherwise drop its figures silently).
func goBenchCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("gobench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	root := fs.String("root", "", "the repository root (default . or .., whichever it is)")
	benchtime := fs.String("benchtime", "", "go test -benchtime (1x: each benchmark once, to check it runs)")
	count := fs.Int("count", 1, "go test -count")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dir, err := findRoot(*root)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, "\nIn-process measurements (go test -bench, from the repository root):")
	var errs []error
	for _, g := range goBenchmarks {
		argv := []string{"test", "-run", "^$", "-bench", g.Bench, "-count", fmt.Sprint(*count)}
		if *benchtime != "" {
			argv = append(argv, "-benchtime", *benchtime)
		}
		argv = append(argv, g.Pkg)
		fmt.Fprintf(stdout, "\n$ %s\n", g.Command())
		var out bytes.Buffer
		cmd := exec.CommandContext(ctx, "go", argv...)
		cmd.Dir, cmd.Stdout, cmd.Stderr = dir, io.MultiWriter(stdout, &out), io.MultiWriter(stdout, &out)
		cmd.Env = append(os.Environ(), "GOFLAGS=")
		if err := cmd.Run(); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", g.Command(), err))
		} else if !benchLine.Match(out.Bytes()) {
			errs = append(errs, fmt.Errorf("%s: no benchmark ran", g.Command()))
		}
	}
	return errors.Join(errs...)
}

// findRoot returns dir made absolute, or when dir is empty the first of . and .. that is the
// repository root.
func findRoot(dir string) (string, error) {
	if dir == "" {
		dir = "."
		if isRoot(".") != nil && isRoot("..") == nil {
			dir = ".."
		}
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	if err := isRoot(abs); err != nil {
		return "", fmt.Errorf("-root %s is not the repository root: %w", abs, err)
	}
	return abs, nil
}
