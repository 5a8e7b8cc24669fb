package main

import (
	"bufio"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/predq/predq/internal/client"
)

const defaultURL = "http://127.0.0.1:8080"

// app is one invocation of predq: its streams, environment and global flags.
type app struct {
	getenv func(string) string
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer

	mu    sync.Mutex
	onSig func() // the handler of SIGINT and SIGTERM; nil: they cancel the command

	// ran is set once a command's own code starts: errors before it are usage errors.
	ran bool

	url    string
	apiKey string
	output string
}

func (a *app) signalHandler() func() {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.onSig
}

// handleSignals makes h the handler of SIGINT and SIGTERM (nil: they cancel the command).
func (a *app) handleSignals(h func()) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.onSig = h
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "predq",
		Short: "The command-line client of a predq server",
		Long: `predq talks to a predq server over HTTP: predictions, batch jobs, models and health.

The server and key come from --url and --api-key, else PREDQ_URL and PREDQ_API_KEY, else
the profile that 'predq login' stores, else ` + defaultURL + ` without a key.

Exit codes: 0 ok, 1 the request or the job failed, 2 usage, 3 the server is unreachable,
4 authentication or authorization, 130 interrupted.`,
		Example: `  predq login --url https://predq.example.com
  predq jobs submit rows.csv --wait --out results.csv
  predq jobs list --output json | jq -r '.[].id'`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       version,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			a.ran = true
			switch a.output {
			case "", "table", "json", "ndjson":
			default:
				return usagef("--output must be table, json or ndjson, got %q", a.output)
			}
			return nil
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &usageError{err: err} })
	pf := root.PersistentFlags()
	pf.StringVar(&a.url, "url", "", "server URL (env PREDQ_URL; default "+defaultURL+")")
	pf.StringVar(&a.apiKey, "api-key", "", "API key (env PREDQ_API_KEY, or the profile of 'predq login')")
	pf.StringVarP(&a.output, "output", "o", "", "output format of read commands: table, json or ndjson (default table on a terminal, json otherwise)")

	root.AddCommand(a.loginCmd(), a.predictCmd(), a.jobsCmd(), a.modelsCmd(), a.predictionsCmd(), a.healthCmd(), a.oipCheckCmd())
	root.InitDefaultCompletionCmd()
	for _, c := range root.Commands() {
		if c.Name() == "completion" {
			c.Example = `  source <(predq completion bash)                     # this shell
  predq completion zsh > "${fpath[1]}/_predq"          # every zsh
  predq completion fish > ~/.config/fish/completions/predq.fish`
			for _, sh := range c.Commands() {
				sh.Example = "  predq completion " + sh.Name() + " > predq-completion." + sh.Name() + "\n  (see predq completion " + sh.Name() + " --help for where it goes)"
			}
		}
	}
	return root
}

// exactArgs is cobra.ExactArgs whose error is a usage error.
func exactArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.ExactArgs(n)(cmd, args); err != nil {
			return &usageError{err: err}
		}
		return nil
	}
}

func maxArgs(n int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if err := cobra.MaximumNArgs(n)(cmd, args); err != nil {
			return &usageError{err: err}
		}
		return nil
	}
}

// endpoint resolves the server URL (override, when set, before --url, PREDQ_URL, the profile
// and the default) and the API key for it (--api-key, PREDQ_API_KEY, or the profile's key when
// the URL is the profile's server).
func (a *app) endpoint(override string) (u, key string, err error) {
	p, err := a.loadProfile()
	if err != nil {
		return "", "", err
	}
	u = cmp.Or(override, a.url, a.getenv("PREDQ_URL"), p.URL, defaultURL)
	key = cmp.Or(a.apiKey, a.getenv("PREDQ_API_KEY"))
	if key == "" && (p.URL == "" || p.URL == u) {
		key = p.APIKey // the profile's key goes only to the profile's server
	}
	return u, key, nil
}

// profile is what 'predq login' stores.
type profile struct {
	URL    string `json:"url"`
	APIKey string `json:"api_key"`
}

// profilePath is the profile file: $XDG_CONFIG_HOME/predq/profile.json on Linux (the user's
// configuration directory elsewhere).
func (a *app) profilePath() (string, error) {
	dir := a.getenv("XDG_CONFIG_HOME")
	if dir == "" || runtime.GOOS != "linux" {
		d, err := os.UserConfigDir()
		if err != nil {
			return "", fmt.Errorf("no configuration directory for the profile: %w", err)
		}
		dir = d
	}
	return filepath.Join(dir, "predq", "profile.json"), nil
}

func (a *app) loadProfile() (profile, error) {
	var p profile
	path, err := a.profilePath()
	if err != nil {
		return p, nil //nolint:nilerr // no configuration directory: no profile
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return p, nil
	}
	if err != nil {
		return p, fmt.Errorf("read the profile: %w", err)
	}
	if err := json.Unmarshal(b, &p); err != nil {
		return p, fmt.Errorf("the profile %s is not valid JSON (run predq login again): %w", path, err)
	}
	return p, nil
}

// client is the API client of the flags, the environment and the profile, in that order.
func (a *app) client() (*client.Client, error) {
	u, key, err := a.endpoint("")
	if err != nil {
		return nil, err
	}
	c, err := client.New(client.Config{BaseURL: u, APIKey: key, UserAgent: "predq/" + version})
	if err != nil {
		return nil, usagef("%w", err)
	}
	return c, nil
}

func (a *app) loginCmd() *cobra.Command {
	var key string
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Store the server URL and an API key in the profile",
		Long: `login checks the key against the server and stores the URL and key in the profile
(<config dir>/predq/profile.json, mode 0600). The key is read from --api-key, PREDQ_API_KEY,
a hidden prompt on a terminal, or the first line of stdin; it is never printed.`,
		Example: `  predq login --url https://predq.example.com        # prompts for the key
  echo "$KEY" | predq login --url http://127.0.0.1:8080`,
		Args: exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			key = cmp.Or(a.apiKey, a.getenv("PREDQ_API_KEY"))
			if key == "" {
				k, err := a.readSecret("API key: ")
				if err != nil {
					return err
				}
				key = k
			}
			if key == "" {
				return usagef("no API key given")
			}
			u := cmp.Or(a.url, a.getenv("PREDQ_URL"), defaultURL)
			c, err := client.New(client.Config{BaseURL: u, APIKey: key, UserAgent: "predq/" + version})
			if err != nil {
				return usagef("%w", err)
			}
			if _, err := c.ListModels(cmd.Context()); err != nil { // any valid key may list models
				return err
			}
			path, err := a.profilePath()
			if err != nil {
				return err
			}
			if err := writeProfile(path, profile{URL: u, APIKey: key}); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Logged in to %s; profile saved in %s\n", u, path)
			return nil
		},
	}
	return cmd
}

// writeProfile writes the profile with mode 0600 (its directory 0700), replacing any.
func writeProfile(path string, p profile) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("create the profile directory: %w", err)
	}
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".profile-*")
	if err != nil {
		return fmt.Errorf("write the profile: %w", err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return fmt.Errorf("write the profile: %w", err)
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write the profile: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write the profile: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write the profile: %w", err)
	}
	return nil
}

// readSecret reads a line: with a hidden prompt on a terminal, else from stdin.
func (a *app) readSecret(prompt string) (string, error) {
	if f, ok := a.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(a.stderr, prompt)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(a.stderr)
		if err != nil {
			return "", fmt.Errorf("read the key: %w", err)
		}
		return strings.TrimSpace(string(b)), nil
	}
	line, err := bufio.NewReader(a.stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", fmt.Errorf("read the key: %w", err)
	}
	return strings.TrimSpace(line), nil
}

// isTerminal reports whether w or r is a terminal.
func isTerminal(v any) bool {
	f, ok := v.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// format is the output format of a read command.
func (a *app) format() string {
	if a.output != "" {
		return a.output
	}
	if isTerminal(a.stdout) {
		return "table"
	}
	return "json"
}

// printOne prints one object: JSON (indented), NDJSON (one line) or a two-column table.
func (a *app) printOne(v any, rows [][2]string) error {
	switch a.format() {
	case "json":
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "ndjson":
		return json.NewEncoder(a.stdout).Encode(v)
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\n", r[0], r[1])
	}
	return tw.Flush()
}

// printList prints a list: a JSON array, one JSON object per line, or a table.
func printList[T any](a *app, items []T, header []string, row func(T) []string) error {
	switch a.format() {
	case "json":
		if items == nil {
			items = []T{}
		}
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(items)
	case "ndjson":
		enc := json.NewEncoder(a.stdout)
		for _, it := range items {
			if err := enc.Encode(it); err != nil {
				return err
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, it := range items {
		fmt.Fprintln(tw, strings.Join(row(it), "\t"))
	}
	return tw.Flush()
}
