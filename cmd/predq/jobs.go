package main

import (
	"bufio"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/predq/predq/internal/client"
)

func (a *app) jobsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "jobs",
		Short: "Submit, follow and read batch jobs",
		Example: `  predq jobs submit rows.csv --wait --out results.csv
  predq jobs list --status running`,
		Args: exactArgs(0),
	}
	cmd.AddCommand(a.submitCmd(), a.jobsListCmd(), a.jobsGetCmd(), a.jobsWaitCmd(), a.jobsCancelCmd(), a.jobsResultsCmd())
	return cmd
}

type submitFlags struct {
	format, model, preprocessing, webhook, idemKey, out string
	threshold                                           float64
	metadata                                            []string
	wait, join                                          bool
}

func (a *app) submitCmd() *cobra.Command {
	var f submitFlags
	cmd := &cobra.Command{
		Use:   "submit FILE",
		Short: "Upload a file of rows as a batch job",
		Long: `submit streams FILE (CSV with or without a header, NDJSON or JSON, by its extension or
--format; gzip-compressed when it ends in .gz; - for stdin, NDJSON unless --format says
otherwise) to the server as a batch job and prints the job's id.

The upload is streamed: memory stays constant whatever the file's size. Unless
--idempotency-key is given, the key is derived from the file's bytes and the options, so the
same command run again returns the first job instead of submitting twice (stdin has no
default key).

--wait follows the job's events with a progress bar (a line per 10% without a terminal) and
exits 1 when the job fails or is cancelled; Ctrl-C asks whether to cancel the job or leave it
running. --out downloads the results when the job is done: CSV or NDJSON by the file's
extension, in input order, with the input's columns appended by --join.`,
		Example: `  predq jobs submit rows.csv --wait --out results.csv
  predq jobs submit rows.ndjson.gz --model v1.0.0 --metadata team=risk --wait --out results.ndjson --join
  generate-rows | predq jobs submit - --idempotency-key nightly-2026-12-07`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.submit(cmd, args[0], f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.format, "format", "", "csv, ndjson or json (default: by the file's extension)")
	fl.StringVar(&f.model, "model", "", "model version or alias (default: the server's latest)")
	fl.StringVar(&f.preprocessing, "preprocessing", "", "preprocessing (standard, minmax, none; default: the model's)")
	fl.Float64Var(&f.threshold, "threshold", 0, "confidence threshold in (0, 1] (default: the server's)")
	fl.StringVar(&f.webhook, "webhook-url", "", "URL told when the job ends (Standard Webhooks)")
	fl.StringArrayVar(&f.metadata, "metadata", nil, "key=value kept with the job (repeatable)")
	fl.StringVar(&f.idemKey, "idempotency-key", "", "Idempotency-Key of the upload (default: derived from the file and options)")
	fl.BoolVar(&f.wait, "wait", false, "follow the job until it ends")
	fl.StringVar(&f.out, "out", "", "download the results into this file (.csv or .ndjson) when the job succeeds; implies --wait")
	fl.BoolVar(&f.join, "join", false, "with --out: append each input row's features to its result")
	return cmd
}

func (a *app) submit(cmd *cobra.Command, path string, f submitFlags) error {
	ctx := cmd.Context()
	format, err := formatOf(path, f.format)
	if err != nil {
		return err
	}
	o := client.SubmitOptions{ModelVersion: f.model, Preprocessing: f.preprocessing, WebhookURL: f.webhook, IdempotencyKey: f.idemKey}
	if cmd.Flags().Changed("threshold") {
		o.ConfidenceThreshold = &f.threshold
	}
	for _, kv := range f.metadata {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return usagef("--metadata must be key=value, got %q", kv)
		}
		if o.Metadata == nil {
			o.Metadata = map[string]string{}
		}
		o.Metadata[k] = v
	}
	if format == client.FormatJSON && len(o.Query()) > 0 {
		return usagef("a JSON file carries its options in its body (model_version, preprocessing, confidence_threshold, webhook_url, metadata): use them there, or submit CSV or NDJSON")
	}
	var outFormat string
	if f.out != "" {
		if outFormat, err = resultsFormatOf(f.out); err != nil {
			return err
		}
		f.wait = true
	}
	if f.join && f.out == "" {
		return usagef("--join needs --out")
	}
	if f.join && path == "-" {
		return usagef("--join reads the input again: it needs a file, not stdin")
	}
	c, err := a.client()
	if err != nil {
		return err
	}
	if o.IdempotencyKey == "" && path != "-" {
		if o.IdempotencyKey, err = defaultIdempotencyKey(ctx, path, format, o); err != nil {
			return err
		}
	}

	in, err := openInput(path, a.stdin)
	if err != nil {
		return err
	}
	defer in.Close()
	upCtx, stop, interrupted := a.interruptible(ctx)
	tty := isTerminal(a.stderr)
	if tty {
		bar := uploadBar(a.stderr, in.size)
		in.raw.onRead = func(n int) { _ = bar.Add(n) }
		defer func() { _ = bar.Finish() }()
	}
	start := time.Now()
	sub, err := c.SubmitJob(upCtx, format, in.body, o)
	stop()
	if interrupted() {
		return errInterrupted
	}
	if err != nil {
		return err
	}
	if tty {
		fmt.Fprintln(a.stderr)
	}
	j := sub.Job
	if sub.Replayed {
		fmt.Fprintf(a.stderr, "already submitted (the same Idempotency-Key and body): job %s, %s\n", j.ID, j.Status)
	} else {
		fmt.Fprintf(a.stderr, "submitted job %s: %d rows, %s in %s\n", j.ID, j.Total, humanBytes(in.raw.n.Load()), time.Since(start).Round(time.Millisecond))
	}
	if a.output == "json" || a.output == "ndjson" {
		if err := json.NewEncoder(a.stdout).Encode(j); err != nil {
			return err
		}
	} else {
		fmt.Fprintln(a.stdout, j.ID)
	}
	if !f.wait {
		return nil
	}
	j, err = a.wait(ctx, c, j)
	if err != nil {
		return err
	}
	if f.out == "" {
		return nil
	}
	var joinIn string
	if f.join {
		joinIn = path
	}
	return a.download(ctx, c, j, f.out, outFormat, joinIn, format)
}

// interruptible returns a context cancelled by Ctrl-C (or SIGTERM), a function that stops
// watching (signals cancel the command again), and one that reports whether the signal came.
func (a *app) interruptible(ctx context.Context) (context.Context, func(), func() bool) {
	ctx, cancel := context.WithCancel(ctx)
	var hit atomic.Bool
	a.handleSignals(func() {
		hit.Store(true)
		cancel()
	})
	return ctx, func() { a.handleSignals(nil) }, hit.Load
}

// wait follows j until it ends. A job that does not succeed is a *jobError. Ctrl-C asks
// whether to cancel the job (on a terminal) or leaves it running.
func (a *app) wait(ctx context.Context, c *client.Client, j client.Job) (client.Job, error) {
	p := newJobProgress(a.stderr, isTerminal(a.stderr), j)
	if !client.Terminal(j.Status) {
		fctx, stop, interrupted := a.interruptible(ctx)
		var err error
		last, err := c.FollowJob(fctx, j.ID, client.FollowOptions{
			OnReconnect: func(n int, err error) {
				if !isTerminal(a.stderr) {
					fmt.Fprintf(a.stderr, "job %s: the event stream dropped (%v); reconnecting (%d)\n", j.ID, err, n)
				}
			},
		}, func(ev client.Event) { p.update(ev.Job) })
		stop()
		if interrupted() {
			p.pause()
			return j, a.onInterrupt(ctx, c, j.ID)
		}
		if err != nil {
			return j, err
		}
		j = last
	}
	p.finish(j)
	if j.Status != client.StatusSucceeded {
		return j, &jobError{job: j}
	}
	return j, nil
}

// onInterrupt asks (on a terminal) whether to cancel the job, and returns errInterrupted.
func (a *app) onInterrupt(ctx context.Context, c *client.Client, id string) error {
	if !isTerminal(a.stdin) {
		fmt.Fprintf(a.stderr, "job %s left running (follow it with: predq jobs wait %s)\n", id, id)
		return errInterrupted
	}
	fmt.Fprintf(a.stderr, "Cancel job %s? [y/N] ", id)
	again := make(chan struct{}, 1)
	a.handleSignals(func() {
		select {
		case again <- struct{}{}:
		default:
		}
	})
	defer a.handleSignals(nil)
	answer := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(a.stdin).ReadString('\n')
		answer <- strings.ToLower(strings.TrimSpace(line))
	}()
	var ans string
	select {
	case ans = <-answer:
	case <-again:
		fmt.Fprintln(a.stderr)
	}
	if ans != "y" && ans != "yes" {
		fmt.Fprintf(a.stderr, "job %s left running (follow it with: predq jobs wait %s)\n", id, id)
		return errInterrupted
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	j, err := c.CancelJob(cctx, id)
	if err != nil {
		return fmt.Errorf("cancel job %s: %w", id, err)
	}
	fmt.Fprintf(a.stderr, "job %s %s: %d of %d rows done\n", j.ID, j.Status, j.Done(), j.Total)
	return errInterrupted
}

// resultsFormatOf is the results format of an --out file, by its extension.
func resultsFormatOf(path string) (string, error) {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".csv":
		return client.FormatCSV, nil
	case ".ndjson", ".jsonl":
		return client.FormatNDJSON, nil
	}
	return "", usagef("--out %s: the results file ends in .csv, .ndjson or .jsonl", path)
}

// download writes the job's results into path (through a temporary file renamed at the
// end, so a failed download leaves nothing half-written). With joinIn, each result is
// followed by its input row's features, read again from that file.
func (a *app) download(ctx context.Context, c *client.Client, j client.Job, path, format, joinIn, inFormat string) error {
	dctx, stop, interrupted := a.interruptible(ctx)
	defer stop()
	const attempts = 5
	var err error
	for i := range attempts {
		if i > 0 {
			fmt.Fprintf(a.stderr, "download of job %s failed (%v); again in %s\n", j.ID, err, time.Second<<(i-1))
			select {
			case <-dctx.Done():
			case <-time.After(time.Second << (i - 1)):
			}
		}
		var n int
		n, err = a.downloadOnce(dctx, c, j, path, format, joinIn, inFormat)
		if interrupted() {
			return errInterrupted
		}
		if err == nil {
			fmt.Fprintf(a.stderr, "wrote %d results to %s\n", n, path)
			return nil
		}
		var p *client.Problem
		var le *localError
		if errors.As(err, &p) || errors.As(err, &le) || dctx.Err() != nil {
			break // the server's answer, or this machine's problem: another try would not help
		}
	}
	return fmt.Errorf("download the results of job %s: %w", j.ID, err)
}

// localError is a problem of this machine (the output file, the input of --join).
type localError struct{ err error }

func (e *localError) Error() string { return e.err.Error() }
func (e *localError) Unwrap() error { return e.err }

// downloadOnce downloads the results into a temporary file and renames it to path once
// every row has arrived.
func (a *app) downloadOnce(ctx context.Context, c *client.Client, j client.Job, path, format, joinIn, inFormat string) (int, error) {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return 0, &localError{fmt.Errorf("--out: %w", err)}
	}
	defer os.Remove(tmp.Name())
	w := bufio.NewWriterSize(tmp, 256<<10)
	var n int
	if joinIn == "" {
		n, err = copyResults(ctx, c, j.ID, format, w)
	} else {
		n, err = joinResults(ctx, c, j.ID, format, w, joinIn, inFormat)
	}
	if err == nil {
		if err = w.Flush(); err != nil {
			err = &localError{fmt.Errorf("--out: %w", err)}
		}
	}
	if cerr := tmp.Close(); err == nil && cerr != nil {
		err = &localError{fmt.Errorf("--out: %w", cerr)}
	}
	if err != nil {
		return n, err
	}
	if n != j.Total {
		return n, fmt.Errorf("%d results of %d rows: the stream was cut short", n, j.Total)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return n, &localError{fmt.Errorf("--out: %w", err)}
	}
	return n, nil
}

// copyResults writes the server's results stream as it is, counting its rows.
func copyResults(ctx context.Context, c *client.Client, id, format string, w io.Writer) (int, error) {
	body, err := c.Results(ctx, id, format)
	if err != nil {
		return 0, err
	}
	defer body.Close()
	tee := io.TeeReader(body, w)
	n := 0
	if format == client.FormatCSV {
		cr := csv.NewReader(tee)
		cr.ReuseRecord = true
		for {
			_, err := cr.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return n, err
			}
			n++
		}
		return max(n-1, 0), nil // the header
	}
	br := bufio.NewReaderSize(tee, 256<<10)
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			n++
		}
		if errors.Is(err, io.EOF) {
			return n, nil
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return n, err
		}
	}
}

// joinedResult is an NDJSON result joined to its input row.
type joinedResult struct {
	client.Result
	Features json.RawMessage `json:"features"`
}

// joinResults reads the results as NDJSON and writes each joined to its input row.
func joinResults(ctx context.Context, c *client.Client, id, format string, w io.Writer, inPath, inFormat string) (int, error) {
	in, err := openInput(inPath, nil)
	if err != nil {
		return 0, &localError{err}
	}
	defer in.Close()
	rows, err := newRowReader(inFormat, in.body)
	if err != nil {
		return 0, err
	}
	body, err := c.Results(ctx, id, client.FormatNDJSON)
	if err != nil {
		return 0, err
	}
	defer body.Close()
	dec := json.NewDecoder(bufio.NewReaderSize(body, 256<<10))
	var cw *csv.Writer
	next := 0 // the index of the next input row
	var row []string
	n := 0
	for {
		var r client.Result
		if err := dec.Decode(&r); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return n, err
		}
		for next <= r.Index {
			if row, err = rows.Next(); err != nil {
				return n, &localError{fmt.Errorf("--join: input row %d of result %d: %w", next, r.Index, err)}
			}
			next++
		}
		if format == client.FormatNDJSON {
			b, err := json.Marshal(joinedResult{Result: r, Features: json.RawMessage("[" + strings.Join(row, ",") + "]")})
			if err != nil {
				return n, err
			}
			if _, err := w.Write(append(b, '\n')); err != nil {
				return n, err
			}
		} else {
			if cw == nil {
				cw = csv.NewWriter(w)
				header := []string{"index", "prediction", "confidence", "prediction_class", "low_confidence", "model_version", "error"}
				if h := rows.Header(); h != nil {
					header = append(header, h...)
				} else {
					for i := range row {
						header = append(header, "f"+strconv.Itoa(i+1))
					}
				}
				if err := cw.Write(header); err != nil {
					return n, err
				}
			}
			rec := append([]string{strconv.Itoa(r.Index), optFloat(r.Prediction), optFloat(r.Confidence), r.PredictionClass,
				strconv.FormatBool(r.LowConfidence), r.ModelVersion, r.Error}, row...)
			if err := cw.Write(rec); err != nil {
				return n, err
			}
		}
		n++
	}
	if cw != nil {
		cw.Flush()
		return n, cw.Error()
	}
	return n, nil
}

func optFloat(f *float64) string {
	if f == nil {
		return ""
	}
	return strconv.FormatFloat(*f, 'g', -1, 64)
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func (a *app) jobsListCmd() *cobra.Command {
	var f client.ListFilter
	var all bool
	cmd := &cobra.Command{
		Use:     "list",
		Short:   "List your jobs, newest first",
		Example: "  predq jobs list --status running\n  predq jobs list --all --output ndjson | jq -r .id",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			var jobs []client.Job
			for {
				page, next, err := c.ListJobs(cmd.Context(), f)
				if err != nil {
					return err
				}
				jobs = append(jobs, page...)
				if !all || next == "" {
					if next != "" && a.format() == "table" {
						defer fmt.Fprintf(a.stderr, "more: --cursor %s (or --all)\n", next)
					}
					break
				}
				f.Cursor = next
			}
			return printList(a, jobs, []string{"ID", "STATUS", "MODEL", "TOTAL", "DONE", "FAILED", "CREATED"}, func(j client.Job) []string {
				return []string{j.ID, j.Status, j.ModelVersion, strconv.Itoa(j.Total), strconv.Itoa(j.Done()), strconv.Itoa(j.Failed), j.CreatedAt.Format(time.RFC3339)}
			})
		},
	}
	cmd.Flags().StringVar(&f.Status, "status", "", "only jobs in this status (queued, running, succeeded, failed, cancelled)")
	cmd.Flags().IntVar(&f.Limit, "limit", 0, "jobs per page (server default 20, at most 100)")
	cmd.Flags().StringVar(&f.Cursor, "cursor", "", "the next_cursor of an earlier page")
	cmd.Flags().BoolVar(&all, "all", false, "every page")
	return cmd
}

func jobRows(j client.Job) [][2]string {
	rows := [][2]string{
		{"ID", j.ID}, {"Status", j.Status}, {"Model", j.ModelVersion}, {"Preprocessing", j.Preprocessing},
		{"Threshold", strconv.FormatFloat(j.ConfidenceThreshold, 'g', -1, 64)},
		{"Rows", fmt.Sprintf("%d total, %d processed, %d failed, %d low confidence", j.Total, j.Processed, j.Failed, j.LowConfidence)},
		{"Created", j.CreatedAt.Format(time.RFC3339)},
	}
	if j.FinishedAt != nil {
		rows = append(rows, [2]string{"Finished", j.FinishedAt.Format(time.RFC3339)})
	}
	if j.Error != nil {
		rows = append(rows, [2]string{"Error", *j.Error})
	}
	if j.Webhook != nil {
		rows = append(rows, [2]string{"Webhook", fmt.Sprintf("%s (%s, %d attempts)", j.Webhook.URL, j.Webhook.Status, j.Webhook.Attempts)})
	}
	for k, v := range j.Metadata {
		rows = append(rows, [2]string{"Metadata " + k, v})
	}
	return rows
}

func (a *app) jobsGetCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "get ID",
		Short:   "Show a job",
		Example: "  predq jobs get 0193a5c4-...\n  predq jobs get \"$ID\" --output json | jq .progress",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			j, err := c.GetJob(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.printOne(j, jobRows(j))
		},
	}
}

func (a *app) jobsWaitCmd() *cobra.Command {
	var out string
	var join string
	cmd := &cobra.Command{
		Use:   "wait ID",
		Short: "Follow a job until it ends (exit 1 when it fails or is cancelled)",
		Example: `  predq jobs wait "$ID" && echo done
  predq jobs wait "$ID" --out results.csv`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var format string
			if out != "" {
				var err error
				if format, err = resultsFormatOf(out); err != nil {
					return err
				}
			}
			var inFormat string
			if join != "" {
				if out == "" {
					return usagef("--join needs --out")
				}
				var err error
				if inFormat, err = formatOf(join, ""); err != nil {
					return err
				}
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			j, err := c.GetJob(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if j, err = a.wait(cmd.Context(), c, j); err != nil {
				return err
			}
			if out != "" {
				return a.download(cmd.Context(), c, j, out, format, join, inFormat)
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "download the results into this file (.csv or .ndjson) when the job succeeds")
	cmd.Flags().StringVar(&join, "join", "", "with --out: the input file, whose rows are appended to the results")
	return cmd
}

func (a *app) jobsCancelCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "cancel ID",
		Short:   "Cancel a queued or running job",
		Example: `  predq jobs cancel "$ID"`,
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			j, err := c.CancelJob(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.printOne(j, jobRows(j))
		},
	}
}

func (a *app) jobsResultsCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "results ID",
		Short: "Print or download a job's results, in input order",
		Example: `  predq jobs results "$ID" --out results.csv
  predq jobs results "$ID" --output ndjson | jq -c 'select(.error != null)'`,
		Args: exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if out != "" {
				format, err := resultsFormatOf(out)
				if err != nil {
					return err
				}
				j, err := c.GetJob(cmd.Context(), args[0])
				if err != nil {
					return err
				}
				j.Total = j.Done() // a cancelled job has results for its finished rows only
				return a.download(cmd.Context(), c, j, out, format, "", "")
			}
			return a.printResults(cmd.Context(), c, args[0])
		},
	}
	cmd.Flags().StringVar(&out, "out", "", "write into this file (.csv or .ndjson) instead of stdout")
	return cmd
}

// printResults streams the results to stdout in the output format.
func (a *app) printResults(ctx context.Context, c *client.Client, id string) error {
	body, err := c.Results(ctx, id, client.FormatNDJSON)
	if err != nil {
		return err
	}
	defer body.Close()
	format := a.format()
	if format == "ndjson" {
		_, err := io.Copy(a.stdout, body)
		return err
	}
	dec := json.NewDecoder(bufio.NewReaderSize(body, 256<<10))
	// A bufio.Writer keeps its first error: the Flush at the end reports it.
	w := bufio.NewWriter(a.stdout)
	if format == "json" {
		_, _ = w.WriteString("[")
	} else {
		fmt.Fprintf(w, "%-8s %-12s %-12s %-9s %-5s %-8s %s\n", "INDEX", "PREDICTION", "CONFIDENCE", "CLASS", "LOW", "MODEL", "ERROR")
	}
	for i := 0; ; i++ {
		var raw json.RawMessage
		if err := dec.Decode(&raw); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			return err
		}
		if format == "json" {
			if i > 0 {
				_, _ = w.WriteString(",")
			}
			_, _ = w.WriteString("\n  ")
			_, _ = w.Write(raw)
			continue
		}
		var r client.Result
		if err := json.Unmarshal(raw, &r); err != nil {
			return err
		}
		fmt.Fprintf(w, "%-8d %-12s %-12s %-9s %-5t %-8s %s\n", r.Index, optFloat(r.Prediction), optFloat(r.Confidence), r.PredictionClass, r.LowConfidence, r.ModelVersion, r.Error)
	}
	if format == "json" {
		_, _ = w.WriteString("\n]\n")
	}
	return w.Flush()
}
