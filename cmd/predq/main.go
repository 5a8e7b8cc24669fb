// Command predq is the command-line client of a predq server: predictions, batch jobs (a file
// in, a progress bar while it runs, a results file out), models and health, with exit codes a
// script can trust. It talks to the server over HTTP only (internal/client).
//
//	predq login                              store the server URL and an API key
//	predq predict --features 0.02,0.03,...   one prediction
//	predq jobs submit rows.csv --wait --out results.csv
//	predq jobs list|get|wait|cancel|results
//	predq models list|get|promote
//	predq predictions get ID
//	predq health
//	predq completion bash|zsh|fish
//
// Exit codes: 0 ok, 1 the request or the job failed, 2 usage, 3 the server is unreachable,
// 4 authentication or authorization, 130 interrupted.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/predq/predq/internal/client"
)

// version is set by the build (-ldflags -X main.version=...).
var version = "dev"

// The exit codes.
const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 2
	exitUnreachable = 3
	exitAuth        = 4
	exitInterrupted = 130
)

func main() {
	err := run(context.Background(), os.Args[1:], os.Getenv, os.Stdin, os.Stdout, os.Stderr)
	os.Exit(report(err, os.Stderr))
}

// run runs one predq command. SIGINT and SIGTERM are handled inside (a job being waited for
// asks whether to cancel it).
func run(ctx context.Context, args []string, getenv func(string) string, stdin io.Reader, stdout, stderr io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	a := &app{getenv: getenv, stdin: stdin, stdout: stdout, stderr: stderr}
	// A signal goes to the handler of the moment (an upload, a wait, the cancel prompt), else
	// it cancels the command.
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer func() {
		signal.Stop(sig)
		close(sig)
	}()
	go func() {
		for range sig {
			if h := a.signalHandler(); h != nil {
				h()
			} else {
				cancel()
			}
		}
	}()
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err != nil && !a.ran {
		// cobra's own errors (unknown command, bad flag, wrong number of arguments) come before
		// any command runs.
		var ue *usageError
		if !errors.As(err, &ue) {
			err = &usageError{err: err}
		}
	}
	return err
}

// usageError is a command line that cannot be run (exit 2).
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

func usagef(format string, a ...any) error {
	return &usageError{err: fmt.Errorf(format, a...)}
}

// jobError is a job that ended without succeeding (exit 1).
type jobError struct{ job client.Job }

func (e *jobError) Error() string {
	msg := fmt.Sprintf("job %s %s", e.job.ID, e.job.Status)
	if e.job.Error != nil && *e.job.Error != "" {
		msg += ": " + *e.job.Error
	}
	return msg
}

// errInterrupted is a command stopped by Ctrl-C (exit 130).
var errInterrupted = errors.New("interrupted")

// report prints err (a problem as its title and each field error on a line) and returns the
// exit code.
func report(err error, stderr io.Writer) int {
	if err == nil {
		return exitOK
	}
	code := exitCode(err)
	if code == exitInterrupted {
		fmt.Fprintln(stderr, "predq: interrupted")
		return code
	}
	var p *client.Problem
	if errors.As(err, &p) {
		fmt.Fprintf(stderr, "predq: %s (%d)\n", p.Title, p.Status)
		if p.Detail != "" {
			fmt.Fprintln(stderr, "  "+p.Detail)
		}
		for _, fe := range p.Errors {
			fmt.Fprintf(stderr, "  %s: %s\n", fe.Field, fe.Message)
		}
		if code == exitAuth {
			fmt.Fprintln(stderr, "  check the API key (--api-key, PREDQ_API_KEY or predq login)")
		}
		return code
	}
	fmt.Fprintln(stderr, "predq:", err)
	if code == exitUsage {
		fmt.Fprintln(stderr, "Run 'predq help' (or add --help to the command) for usage.")
	}
	return code
}

func exitCode(err error) int {
	var (
		ue *usageError
		p  *client.Problem
		je *jobError
	)
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, errInterrupted), errors.Is(err, context.Canceled):
		return exitInterrupted
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &p) && p.Auth():
		return exitAuth
	case errors.Is(err, client.ErrUnreachable):
		return exitUnreachable
	case errors.As(err, &je):
		return exitFailure
	}
	return exitFailure
}
