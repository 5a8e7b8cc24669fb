// Package deploy_test checks the deployment files against the code they deploy: the
// Dockerfile, docker-compose.yml, the nginx, Prometheus and Grafana configuration, and the
// Kubernetes manifests (rendered with kustomize in-process, as `kubectl apply -k` would).
//
// What is checked, everywhere one of our processes runs: its command is one of our binaries and
// subcommands; every environment variable it gets (directly, or from a ConfigMap or Secret) is
// one of internal/config Vars; it listens where probes, proxies and scrapers look for it; its
// probes hit paths the code serves. Each checker takes bytes or parsed objects and returns the
// problems it found, so that the negative tests can feed it a broken variant of a real file.
//
// The tests read only files and run in about a second; no Docker engine or cluster is needed.
package deploy_test

import (
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/config"
	"github.com/predq/predq/internal/redisdb"
)

// root is the repository, seen from this package's directory (where go test runs).
const root = ".."

// devOnlyCommands are main packages under cmd/ that the image leaves out on purpose: cmd/dev
// starts local Postgres and Redis servers for `make run`, which has no place in a container.
// (The bench is in the tools module, outside cmd/.)
var devOnlyCommands = []string{"dev"}

// role is what a process started from our image does; it decides the port it must listen on
// and the probes it must answer.
type role string

const (
	roleAPI       role = "api"       // api, api serve
	roleMigrate   role = "migrate"   // api migrate (one-shot)
	roleWorker    role = "worker"    // worker
	roleScheduler role = "scheduler" // scheduler
)

// portVar is the variable that sets the port each long-running role listens on (its default
// comes from config.Vars).
var portVar = map[role]string{
	roleAPI:       "PORT",
	roleWorker:    "WORKER_METRICS_PORT",
	roleScheduler: "SCHEDULER_METRICS_PORT",
}

// healthPaths are the paths that the api and the ops servers of worker and scheduler answer
// for probes; TestHealthPathsAreServed ties them to the code.
var healthPaths = []string{"/health", "/health/live", "/health/ready"}

// image is what the Dockerfile tells about the image our services run.
type image struct {
	binDir      string   // where the binaries are, e.g. /app
	binOnPath   bool     // whether binDir is on the image's PATH (bare names then work)
	cmd         []string // CMD, exec form
	healthcheck []string // HEALTHCHECK CMD, exec form
	env         map[string]string
}

// commandRole tells what argv runs (argv empty: the image's CMD), or why it is none of our
// services.
func commandRole(argv []string, img image) (role, error) {
	if len(argv) == 0 {
		argv = img.cmd
	}
	if len(argv) == 0 {
		return "", errors.New("no command, and the image has no CMD")
	}
	dir, bin := path.Split(argv[0])
	switch {
	case dir == "" && !img.binOnPath:
		return "", fmt.Errorf("command %q: %s is not on the image's PATH; use %s", argv[0], img.binDir, path.Join(img.binDir, bin))
	case dir != "" && path.Clean(dir) != img.binDir:
		return "", fmt.Errorf("command %q: the image's binaries are in %s", argv[0], img.binDir)
	}
	rest := argv[1:]
	switch bin {
	case "api":
		if len(rest) == 0 || rest[0] == "serve" && len(rest) == 1 {
			return roleAPI, nil
		}
		if rest[0] == "migrate" && len(rest) == 1 {
			return roleMigrate, nil
		}
		return "", fmt.Errorf("command %q: api runs as a service with serve (or nothing) or migrate", strings.Join(argv, " "))
	case "worker", "scheduler":
		if len(rest) > 0 {
			return "", fmt.Errorf("command %q: %s takes no arguments", strings.Join(argv, " "), bin)
		}
		return role(bin), nil
	}
	return "", fmt.Errorf("command %q: %q is not one of our services (api, api migrate, worker, scheduler)", strings.Join(argv, " "), bin)
}

// varDefault returns the default of a variable of config.Vars.
func varDefault(name string) string {
	for _, v := range config.Vars {
		if v.Name == name {
			return v.Default
		}
	}
	panic("deploy_test: not in config.Vars: " + name)
}

// rolePort is the port a role listens on given its environment (nil: defaults); 0 for a
// one-shot role.
func rolePort(r role, env map[string]string) (int, error) {
	name, ok := portVar[r]
	if !ok {
		return 0, nil
	}
	v := env[name]
	if v == "" {
		v = varDefault(name)
	}
	p, err := strconv.Atoi(v)
	if err != nil {
		return 0, fmt.Errorf("%s=%q is not a port", name, v)
	}
	return p, nil
}

// checkEnvNames reports the names that are not variables of config.Vars.
func checkEnvNames(where string, names []string) []error {
	var errs []error
	for _, n := range names {
		if !config.Known(n) {
			errs = append(errs, fmt.Errorf("%s: environment variable %s is not in internal/config Vars", where, n))
		}
	}
	return errs
}

// loadProblems runs config.Load on env, as the processes do at start, and returns its
// problems, one per variable.
func loadProblems(env map[string]string) []error {
	_, err := config.Load(func(k string) string { return env[k] })
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

// redisURLProblems parses the Redis URLs of env as the processes do (internal/redisdb), which
// checks more than config.Load (hosts, database, the Sentinel master).
func redisURLProblems(env map[string]string) []error {
	var errs []error
	for _, name := range []string{"REDIS_URL", "CACHE_REDIS_URL"} {
		if v := env[name]; v != "" {
			if _, err := redisdb.ParseURL(v); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
			}
		}
	}
	return errs
}

// problemVar is the variable a problem of config.Load names ("NAME: message").
func problemVar(err error) string {
	name, _, _ := strings.Cut(err.Error(), ":")
	return name
}

// goVersion is go.mod's go line.
func goVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "go.mod"))
	require.NoError(t, err)
	m := regexp.MustCompile(`(?m)^go (\S+)\s*$`).FindSubmatch(b)
	require.NotNil(t, m, "go.mod has no go line")
	return string(m[1])
}

// mainCommands lists the directories under cmd/ whose package is main, less devOnlyCommands.
func mainCommands(t *testing.T) []string {
	t.Helper()
	dirs, err := os.ReadDir(filepath.Join(root, "cmd"))
	require.NoError(t, err)
	var mains []string
	for _, d := range dirs {
		if !d.IsDir() || slices.Contains(devOnlyCommands, d.Name()) {
			continue
		}
		files, err := filepath.Glob(filepath.Join(root, "cmd", d.Name(), "*.go"))
		require.NoError(t, err)
		for _, f := range files {
			if strings.HasSuffix(f, "_test.go") {
				continue
			}
			af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.PackageClauseOnly)
			require.NoError(t, err)
			if af.Name.Name == "main" {
				mains = append(mains, d.Name())
				break
			}
		}
	}
	require.NotEmpty(t, mains)
	return mains
}

// queueNames reads the asynq queue names from the constants Queue* of internal/tasks.
func queueNames(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(root, "internal", "tasks", "*.go"))
	require.NoError(t, err)
	var queues []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.SkipObjectResolution)
		require.NoError(t, err)
		for _, decl := range af.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				for i, name := range vs.Names {
					if !strings.HasPrefix(name.Name, "Queue") || i >= len(vs.Values) {
						continue
					}
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						q, err := strconv.Unquote(lit.Value)
						require.NoError(t, err)
						queues = append(queues, q)
					}
				}
			}
		}
	}
	require.NotEmpty(t, queues, "no Queue* string constants in internal/tasks")
	slices.Sort(queues)
	return queues
}

// requireProblem asserts that errs holds a problem whose text contains want.
func requireProblem(t *testing.T, errs []error, want string) {
	t.Helper()
	for _, err := range errs {
		if strings.Contains(err.Error(), want) {
			return
		}
	}
	require.Failf(t, "problem not reported", "want a problem containing %q, got:\n%v", want, errors.Join(errs...))
}

// requireNoProblems fails the test with every problem listed.
func requireNoProblems(t *testing.T, errs []error) {
	t.Helper()
	if len(errs) > 0 {
		t.Fatalf("%d problems:\n%v", len(errs), errors.Join(errs...))
	}
}

// mustReplace replaces old by new in s, failing when old is absent (so that a negative test
// whose mutation no longer applies fails rather than passing vacuously).
func mustReplace(t *testing.T, s, old, new string) string {
	t.Helper()
	if !strings.Contains(s, old) {
		t.Fatalf("the mutation no longer applies (%q is gone): update the negative test", old)
	}
	return strings.Replace(s, old, new, 1)
}

func readFile(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, rel))
	require.NoError(t, err)
	return string(b)
}

func TestHealthPathsAreServed(t *testing.T) {
	t.Parallel()
	// The api's routes and the ops server of worker and scheduler.
	for _, dir := range []string{"internal/httpapi", "internal/telemetry"} {
		files, err := filepath.Glob(filepath.Join(root, dir, "*.go"))
		require.NoError(t, err)
		var src strings.Builder
		for _, f := range files {
			if !strings.HasSuffix(f, "_test.go") {
				b, err := os.ReadFile(f)
				require.NoError(t, err)
				src.Write(b)
			}
		}
		for _, p := range healthPaths {
			require.Regexp(t, `"(GET )?`+regexp.QuoteMeta(p)+`"`, src.String(), "%s does not serve %s", dir, p)
		}
	}
}

func TestCommandRole(t *testing.T) {
	t.Parallel()
	img := image{binDir: "/app", binOnPath: true, cmd: []string{"/app/api", "serve"}}
	for _, tc := range []struct {
		argv []string
		want role
		err  string
	}{
		{nil, roleAPI, ""},
		{[]string{"/app/api"}, roleAPI, ""},
		{[]string{"api", "serve"}, roleAPI, ""},
		{[]string{"/app/api", "migrate"}, roleMigrate, ""},
		{[]string{"/app/worker"}, roleWorker, ""},
		{[]string{"scheduler"}, roleScheduler, ""},
		{[]string{"/usr/bin/worker"}, "", "binaries are in /app"},
		{[]string{"/app/api", "keys", "create"}, "", "serve (or nothing) or migrate"},
		{[]string{"/app/api", "migrate", "--force"}, "", "serve (or nothing) or migrate"},
		{[]string{"/app/worker", "--queues=low"}, "", "takes no arguments"},
		{[]string{"/app/train"}, "", "not one of our services"},
		{[]string{"/app/apiserver"}, "", "not one of our services"},
	} {
		got, err := commandRole(tc.argv, img)
		if tc.err != "" {
			require.ErrorContains(t, err, tc.err, "argv %q", tc.argv)
			continue
		}
		require.NoError(t, err, "argv %q", tc.argv)
		require.Equal(t, tc.want, got, "argv %q", tc.argv)
	}
	_, err := commandRole([]string{"worker"}, image{binDir: "/app"})
	require.ErrorContains(t, err, "not on the image's PATH")
}

func TestCheckEnvNames(t *testing.T) {
	t.Parallel()
	require.Empty(t, checkEnvNames("x", []string{"DATABASE_URL", "PORT"}))
	requireProblem(t, checkEnvNames("x", []string{"PORT", "GOMAXPROCS"}), "GOMAXPROCS is not in internal/config Vars")
}
