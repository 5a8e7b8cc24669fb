package deploy_test

import (
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

// composeService is the part of a compose service that the checks read. Command,
// environment, depends_on, ports and expose each have a short and a long syntax, hence any.
type composeService struct {
	Image         string         `yaml:"image"`
	Build         any            `yaml:"build"`
	Command       any            `yaml:"command"`
	Entrypoint    any            `yaml:"entrypoint"`
	Environment   any            `yaml:"environment"`
	EnvFile       any            `yaml:"env_file"`
	DependsOn     any            `yaml:"depends_on"`
	Ports         []any          `yaml:"ports"`
	Expose        []any          `yaml:"expose"`
	Volumes       []any          `yaml:"volumes"`
	Restart       string         `yaml:"restart"`
	StopGrace     string         `yaml:"stop_grace_period"`
	Healthcheck   *composeHealth `yaml:"healthcheck"`
	ContainerName string         `yaml:"container_name"`
	Deploy        struct {
		Replicas *int `yaml:"replicas"`
	} `yaml:"deploy"`
}

type composeHealth struct {
	Test    any  `yaml:"test"`
	Disable bool `yaml:"disable"`
}

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
}

// composeApp is one of our services in the compose file, as the checks see it.
type composeApp struct {
	name     string
	role     role
	env      map[string]string
	port     int
	grpcPort int // the api's GRPC_PORT; 0 for the other roles
}

// stringList reads a compose value that is a string (split on spaces) or a list of strings.
func stringList(v any) ([]string, error) {
	switch v := v.(type) {
	case nil:
		return nil, nil
	case string:
		return strings.Fields(v), nil
	case []any:
		out := make([]string, 0, len(v))
		for _, x := range v {
			out = append(out, fmt.Sprint(x))
		}
		return out, nil
	}
	return nil, fmt.Errorf("%v is neither a string nor a list", v)
}

// composeEnv reads environment: in map or KEY=VALUE list form.
func composeEnv(v any) (map[string]string, error) {
	env := map[string]string{}
	switch v := v.(type) {
	case nil:
	case map[string]any:
		for k, x := range v {
			if x == nil {
				env[k] = ""
			} else {
				env[k] = fmt.Sprint(x)
			}
		}
	case []any:
		for _, x := range v {
			k, val, _ := strings.Cut(fmt.Sprint(x), "=")
			env[k] = val
		}
	default:
		return nil, fmt.Errorf("environment %v is neither a map nor a list", v)
	}
	return env, nil
}

// composeDeps reads depends_on: a list (condition service_started) or a map with conditions.
func composeDeps(v any) (map[string]string, error) {
	deps := map[string]string{}
	switch v := v.(type) {
	case nil:
	case []any:
		for _, x := range v {
			deps[fmt.Sprint(x)] = "service_started"
		}
	case map[string]any:
		for name, x := range v {
			m, _ := x.(map[string]any)
			c, _ := m["condition"].(string)
			deps[name] = c
		}
	default:
		return nil, fmt.Errorf("depends_on %v is neither a list nor a map", v)
	}
	return deps, nil
}

// containerPorts lists the container side of ports: and expose: entries.
func containerPorts(s composeService) []int {
	var out []int
	for _, p := range slices.Concat(s.Ports, s.Expose) {
		var spec string
		switch p := p.(type) {
		case map[string]any:
			spec = fmt.Sprint(p["target"])
		default:
			spec = fmt.Sprint(p)
		}
		spec, _, _ = strings.Cut(spec, "/")
		parts := strings.Split(spec, ":")
		if n, err := strconv.Atoi(parts[len(parts)-1]); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// bindMounts maps the container path of each bind mount of s to its host path (relative to
// the compose file); named volumes are left out.
func bindMounts(s composeService) map[string]string {
	m := map[string]string{}
	for _, v := range s.Volumes {
		switch v := v.(type) {
		case string:
			parts := strings.Split(v, ":")
			if len(parts) >= 2 && (strings.HasPrefix(parts[0], ".") || strings.HasPrefix(parts[0], "/")) {
				m[path.Clean(parts[1])] = parts[0]
			}
		case map[string]any:
			if v["type"] == "bind" {
				m[path.Clean(fmt.Sprint(v["target"]))] = fmt.Sprint(v["source"])
			}
		}
	}
	return m
}

// healthcheckURLPort reads the port of `api healthcheck --url URL` (the PORT default when no
// --url: the api's check).
func healthcheckPort(argv []string, img image, env map[string]string) (int, error) {
	if len(argv) < 2 || path.Base(argv[0]) != "api" || argv[1] != "healthcheck" {
		return 0, fmt.Errorf("health check %q: want `%s healthcheck [--url URL]` (the image has no shell or curl)", argv, path.Join(img.binDir, "api"))
	}
	for i, a := range argv {
		raw, ok := strings.CutPrefix(a, "--url=")
		if !ok && a == "--url" && i+1 < len(argv) {
			raw, ok = argv[i+1], true
		}
		if ok {
			u, err := url.Parse(raw)
			if err != nil || u.Port() == "" {
				return 0, fmt.Errorf("health check URL %q has no port", raw)
			}
			if !slices.Contains(healthPaths, u.Path) {
				return 0, fmt.Errorf("health check URL %q: path not one of %v", raw, healthPaths)
			}
			return strconv.Atoi(u.Port())
		}
	}
	return rolePort(roleAPI, env)
}

// healthTest reads a healthcheck test: ["CMD", argv...] (or CMD-SHELL, or NONE).
func healthTest(h *composeHealth) (kind string, argv []string, err error) {
	t, err := stringList(h.Test)
	if err != nil || len(t) == 0 {
		return "", nil, fmt.Errorf("healthcheck test %v: %w", h.Test, err)
	}
	if _, isString := h.Test.(string); isString {
		return "CMD-SHELL", t, nil
	}
	return t[0], t[1:], nil
}

// checkCompose checks docker-compose.yml: our services (those built from the Dockerfile, or
// running the image that one of them builds) run our binaries with known variables, listen
// where they should, wait for what they need; bind mounts exist; URLs name compose services.
func checkCompose(src string, img image, repo string) (map[string]composeApp, composeFile, []error) {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("docker-compose.yml: "+format, args...))
	}
	var cf composeFile
	if err := yaml.Unmarshal([]byte(src), &cf); err != nil {
		return nil, cf, []error{fmt.Errorf("docker-compose.yml: %w", err)}
	}
	ourImages := map[string]bool{}
	for _, s := range cf.Services {
		if s.Build != nil && s.Image != "" {
			ourImages[s.Image] = true
		}
	}
	apps := map[string]composeApp{}
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range cf.Services {
			if !yield(n) {
				return
			}
		}
	}) {
		s := cf.Services[name]
		where := "service " + name

		// Every service: dependencies exist and their conditions can be met.
		deps, err := composeDeps(s.DependsOn)
		if err != nil {
			fail("%s: %v", where, err)
		}
		for dep, cond := range deps {
			target, ok := cf.Services[dep]
			if !ok {
				fail("%s depends on %s, which is not a service", where, dep)
				continue
			}
			switch cond {
			case "service_started":
			case "service_healthy":
				ours := target.Build != nil || ourImages[target.Image]
				if target.Healthcheck == nil && !ours || target.Healthcheck != nil && target.Healthcheck.Disable {
					fail("%s waits for %s to be healthy, but %s has no health check", where, dep, dep)
				}
			case "service_completed_successfully":
				if target.Restart != "no" && target.Restart != "" && target.Restart != "on-failure" {
					fail("%s waits for %s to complete, but %s restarts %s", where, dep, dep, target.Restart)
				}
			default:
				fail("%s depends on %s with condition %q", where, dep, cond)
			}
		}
		// Every service: bind-mounted files exist.
		for ctr, host := range bindMounts(s) {
			if strings.HasPrefix(host, ".") {
				if _, err := os.Stat(filepath.Join(repo, host)); err != nil {
					fail("%s mounts %s at %s, which does not exist", where, host, ctr)
				}
			}
		}

		if s.Build == nil && !ourImages[s.Image] {
			continue // postgres, redis, nginx, ...: their images' own variables
		}
		// Our services.
		if s.Entrypoint != nil {
			fail("%s sets an entrypoint; set command instead", where)
		}
		if s.EnvFile != nil {
			fail("%s uses env_file, which these checks cannot see; use environment", where)
		}
		argv, err := stringList(s.Command)
		if err != nil {
			fail("%s: command: %v", where, err)
			continue
		}
		r, err := commandRole(argv, img)
		if err != nil {
			fail("%s: %v", where, err)
			continue
		}
		env, err := composeEnv(s.Environment)
		if err != nil {
			fail("%s: %v", where, err)
		}
		names := slices.Sorted(func(yield func(string) bool) {
			for k := range env {
				if !yield(k) {
					return
				}
			}
		})
		errs = append(errs, checkEnvNames("docker-compose.yml: "+where, names)...)
		for _, err := range slices.Concat(loadProblems(env), redisURLProblems(env)) {
			fail("%s: the process would refuse its environment: %v", where, err)
		}
		port, err := rolePort(r, env)
		if err != nil {
			fail("%s: %v", where, err)
		}
		app := composeApp{name: name, role: r, env: env, port: port}
		if r == roleAPI {
			if app.grpcPort, err = strconv.Atoi(cmpOr(env["GRPC_PORT"], varDefault("GRPC_PORT"))); err != nil {
				fail("%s: GRPC_PORT=%q is not a port", where, env["GRPC_PORT"])
			}
		}
		apps[name] = app

		// URLs in the environment name services of this file.
		for _, k := range names {
			v := env[k]
			if !strings.Contains(v, "://") {
				continue
			}
			u, err := url.Parse(v)
			if err != nil {
				fail("%s: %s=%q is not a URL", where, k, v)
				continue
			}
			for _, host := range strings.Split(u.Host, ",") {
				h := host
				if i := strings.LastIndex(h, "@"); i >= 0 {
					h = h[i+1:]
				}
				if hn, _, err := splitHostPort(h); err == nil {
					h = hn
				}
				if _, ok := cf.Services[h]; !ok {
					fail("%s: %s points at %q, which is not a service of this file", where, k, h)
				}
			}
		}

		// Ports, health checks, start order by role.
		if r == roleMigrate {
			if s.Restart != "no" {
				fail("%s runs api migrate once: set restart: \"no\"", where)
			}
			continue
		}
		if !slices.Contains(containerPorts(s), port) {
			fail("%s (%s) listens on %d, which it neither exposes nor publishes", where, r, port)
		}
		var hc []string
		switch {
		case s.Healthcheck == nil:
			hc = img.healthcheck
		case s.Healthcheck.Disable:
			fail("%s disables its health check", where)
		default:
			kind, argv, err := healthTest(s.Healthcheck)
			if err != nil {
				fail("%s: %v", where, err)
			} else if kind != "CMD" {
				fail("%s: health check %s: the image has no shell; use [\"CMD\", ...]", where, kind)
			}
			hc = argv
		}
		if hc != nil {
			hp, err := healthcheckPort(hc, img, env)
			switch {
			case err != nil:
				fail("%s: %v", where, err)
			case hp != port:
				fail("%s (%s) listens on %d, but its health check asks port %d", where, r, port, hp)
			}
		}
		if r == roleAPI {
			// Its gRPC server is exposed and checked too: `api healthcheck --grpc HOST:PORT`.
			if !slices.Contains(containerPorts(s), app.grpcPort) {
				fail("%s (%s) serves gRPC on %d, which it neither exposes nor publishes", where, r, app.grpcPort)
			}
			gp := ""
			for i, a := range hc {
				if v, ok := strings.CutPrefix(a, "--grpc="); ok {
					gp = v
				} else if a == "--grpc" && i+1 < len(hc) {
					gp = hc[i+1]
				}
			}
			if _, p, _ := splitHostPort(gp); p != strconv.Itoa(app.grpcPort) {
				fail("%s (%s) serves gRPC on %d, but its health check asks %q: want --grpc 127.0.0.1:%d", where, r, app.grpcPort, gp, app.grpcPort)
			}
		}
		if r == roleAPI || r == roleWorker {
			migrated := false
			for dep, cond := range deps {
				if t, ok := cf.Services[dep]; ok && cond == "service_completed_successfully" {
					if argv, _ := stringList(t.Command); len(argv) > 0 {
						if r, err := commandRole(argv, img); err == nil && r == roleMigrate {
							migrated = true
						}
					}
				}
			}
			if !migrated {
				fail("%s (%s) must wait for the migrations: depends_on the migrate service with condition service_completed_successfully", where, r)
			}
		}
		if r == roleAPI {
			if s.Deploy.Replicas == nil || *s.Deploy.Replicas < 2 {
				fail("%s: want deploy.replicas >= 2 behind nginx", where)
			}
			if len(s.Ports) > 0 || s.ContainerName != "" {
				fail("%s has several replicas: it may neither publish host ports nor set container_name", where)
			}
		}
		if r == roleWorker {
			grace := 10 * time.Second // compose's default
			if s.StopGrace != "" {
				if grace, err = time.ParseDuration(s.StopGrace); err != nil {
					fail("%s: stop_grace_period %q: %v", where, s.StopGrace, err)
				}
			}
			shutdown, err := time.ParseDuration(cmpOr(env["WORKER_SHUTDOWN_TIMEOUT"], varDefault("WORKER_SHUTDOWN_TIMEOUT")))
			if err != nil {
				fail("%s: WORKER_SHUTDOWN_TIMEOUT: %v", where, err)
			} else if grace <= shutdown {
				fail("%s: stop_grace_period %s must exceed WORKER_SHUTDOWN_TIMEOUT %s, or running tasks are killed", where, grace, shutdown)
			}
		}
	}
	for _, want := range []role{roleAPI, roleMigrate, roleWorker, roleScheduler} {
		if !slices.ContainsFunc(slices.Collect(mapValues(apps)), func(a composeApp) bool { return a.role == want }) {
			fail("no service runs %s", want)
		}
	}
	return apps, cf, errs
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

func mapValues[K comparable, V any](m map[K]V) func(func(V) bool) {
	return func(yield func(V) bool) {
		for _, v := range m {
			if !yield(v) {
				return
			}
		}
	}
}

// splitHostPort is net.SplitHostPort that accepts a host without port.
func splitHostPort(hp string) (string, string, error) {
	i := strings.LastIndex(hp, ":")
	if i < 0 {
		return hp, "", nil
	}
	return hp[:i], hp[i+1:], nil
}

func composeApps(t *testing.T, img image) (map[string]composeApp, composeFile) {
	t.Helper()
	apps, cf, errs := checkCompose(readFile(t, "docker-compose.yml"), img, root)
	requireNoProblems(t, errs)
	return apps, cf
}

func TestCompose(t *testing.T) {
	t.Parallel()
	img := dockerImage(t)
	apps, cf := composeApps(t, img)
	byRole := map[role][]string{}
	for _, a := range apps {
		byRole[a.role] = append(byRole[a.role], a.name)
	}
	require.Equal(t, map[role][]string{roleAPI: {"api"}, roleMigrate: {"migrate"}, roleWorker: {"worker"}, roleScheduler: {"scheduler"}}, byRole)
	for _, name := range []string{"api", "worker", "scheduler"} {
		require.Equal(t, "http://jaeger:4318", apps[name].env["OTEL_EXPORTER_OTLP_ENDPOINT"], "%s exports traces to jaeger", name)
	}

	// Redis keeps the queue: append-only, no eviction (asynq's tasks are keys like any other).
	redis, err := stringList(cf.Services["redis"].Command)
	require.NoError(t, err)
	require.Subset(t, redis, []string{"--appendonly", "yes", "--maxmemory-policy", "noeviction"})
	_, ok := cf.Services["postgres"]
	require.True(t, ok)
	for _, s := range []string{"nginx", "prometheus", "grafana", "jaeger"} {
		require.Contains(t, cf.Services, s)
	}
}

func TestComposeProblems(t *testing.T) {
	t.Parallel()
	img := dockerImage(t)
	src := readFile(t, "docker-compose.yml")
	for _, tc := range []struct{ name, old, new, want string }{
		{"unknown binary", `command: ["/app/worker"]`, `command: ["/app/wrker"]`, "not one of our services"},
		{"gRPC not exposed", "      - \"8081\"   # gRPC", "      # gRPC", "serves gRPC on 8081, which it neither exposes"},
		{"gRPC not health-checked", `, "--grpc", "127.0.0.1:8081"]`, `]`, "want --grpc 127.0.0.1:8081"},
		{"subcommand", `command: ["/app/api", "migrate"]`, `command: ["/app/api", "migrations"]`, "serve (or nothing) or migrate"},
		{"unknown variable", "  WORKER_CONCURRENCY: \"16\"", "  WORKER_CONCURENCY: \"16\"", "WORKER_CONCURENCY is not in internal/config Vars"},
		{"unknown shared variable", "  LOG_LEVEL: info", "  LOGLEVEL: info", "LOGLEVEL is not in internal/config Vars"},
		{"port moved", `WORKER_METRICS_PORT: "9091"`, `WORKER_METRICS_PORT: "9191"`, "listens on 9191"},
		{"health check on another port", `"http://127.0.0.1:9092/health/live"`, `"http://127.0.0.1:8080/health/live"`, "asks port 8080"},
		{"health check with curl", `test: ["CMD", "/app/api", "healthcheck", "--url", "http://127.0.0.1:9091/health/live"]`, `test: ["CMD", "curl", "-f", "http://127.0.0.1:9091/health/live"]`, "api healthcheck"},
		{"no migrate wait", "      migrate:\n        condition: service_completed_successfully\n      postgres:\n        condition: service_healthy\n      redis:\n        condition: service_healthy\n      jaeger:\n        condition: service_started\n\n  worker:", "      postgres:\n        condition: service_healthy\n      redis:\n        condition: service_healthy\n      jaeger:\n        condition: service_started\n\n  worker:", "service api (api) must wait for the migrations"},
		{"healthy without health check", "      prometheus:\n        condition: service_started", "      prometheus:\n        condition: service_healthy", "no health check"},
		{"unknown dependency", "      prometheus:\n        condition: service_started", "      promethevs:\n        condition: service_started", "promethevs, which is not a service"},
		{"bad condition", "      prometheus:\n        condition: service_started", "      prometheus:\n        condition: started", `condition "started"`},
		{"one api", "      replicas: 2", "      replicas: 1", "deploy.replicas >= 2"},
		{"URL to nowhere", "OTEL_EXPORTER_OTLP_ENDPOINT: http://jaeger:4318", "OTEL_EXPORTER_OTLP_ENDPOINT: http://otel:4318", `"otel", which is not a service`},
		{"missing mount", "./deploy/nginx/nginx.conf:", "./deploy/nginx/missing.conf:", "does not exist"},
		{"invalid value", "SECRET_KEY: local-only-secret-key-not-for-production-0123456789", "SECRET_KEY: too-short", "SECRET_KEY: must be at least 32 characters"},
		{"sentinel without master", "REDIS_URL: redis://redis:6379/0", "REDIS_URL: redis-sentinel://redis:26379/0", "needs ?master=NAME"},
		{"invalid port", `SCHEDULER_METRICS_PORT: "9092"`, `SCHEDULER_METRICS_PORT: "http"`, "SCHEDULER_METRICS_PORT: must be a whole number"},
		{"short worker grace", "stop_grace_period: 60s", "stop_grace_period: 5s", "must exceed WORKER_SHUTDOWN_TIMEOUT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, errs := checkCompose(mustReplace(t, src, tc.old, tc.new), img, root)
			requireProblem(t, errs, tc.want)
		})
	}
}
