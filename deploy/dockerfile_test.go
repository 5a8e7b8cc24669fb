package deploy_test

import (
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// dockerInstr is one instruction of a Dockerfile, continuation lines joined.
type dockerInstr struct {
	cmd  string // upper case: FROM, RUN, COPY, ...
	args string
	line int
}

// dockerStage is one FROM and what follows it.
type dockerStage struct {
	from, name string
	instrs     []dockerInstr
}

// parseDockerfile splits a Dockerfile into stages of instructions. It knows comments, parser
// directives, continuation lines (also with comment lines inside) and heredoc-free RUNs.
func parseDockerfile(src string) ([]dockerStage, error) {
	var stages []dockerStage
	var cur strings.Builder
	start := 0
	flush := func() error {
		text := strings.TrimSpace(cur.String())
		cur.Reset()
		if text == "" {
			return nil
		}
		cmd, args, _ := strings.Cut(text, " ")
		cmd = strings.ToUpper(cmd)
		args = strings.TrimSpace(args)
		if cmd == "FROM" {
			f := strings.Fields(args)
			var st dockerStage
			for i := 0; i < len(f); i++ {
				switch {
				case strings.HasPrefix(f[i], "--"):
				case strings.EqualFold(f[i], "AS") && i+1 < len(f):
					st.name = f[i+1]
					i++
				case st.from == "":
					st.from = f[i]
				}
			}
			stages = append(stages, st)
			return nil
		}
		if len(stages) == 0 {
			if cmd == "ARG" {
				return nil
			}
			return fmt.Errorf("line %d: %s before the first FROM", start, cmd)
		}
		st := &stages[len(stages)-1]
		st.instrs = append(st.instrs, dockerInstr{cmd: cmd, args: args, line: start})
		return nil
	}
	continuing := false
	for i, line := range strings.Split(src, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "#") || (trimmed == "" && !continuing) {
			continue
		}
		if !continuing {
			start = i + 1
		}
		if strings.HasSuffix(trimmed, `\`) {
			cur.WriteString(strings.TrimSuffix(trimmed, `\`) + " ")
			continuing = true
			continue
		}
		cur.WriteString(trimmed)
		continuing = false
		if err := flush(); err != nil {
			return nil, err
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	if len(stages) == 0 {
		return nil, fmt.Errorf("no FROM")
	}
	return stages, nil
}

// parseEnv reads ENV arguments: `K=V K2="V 2"` or the old `K V`.
func parseEnv(args string, into map[string]string) {
	if !strings.Contains(strings.Fields(args)[0], "=") {
		k, v, _ := strings.Cut(args, " ")
		into[k] = strings.TrimSpace(v)
		return
	}
	for _, m := range regexp.MustCompile(`(\w+)=("[^"]*"|'[^']*'|\S*)`).FindAllStringSubmatch(args, -1) {
		into[m[1]] = strings.Trim(m[2], `"'`)
	}
}

// execForm reads a JSON array argument (CMD ["a", "b"]); shell form is refused: distroless
// has no shell.
func execForm(args string) ([]string, error) {
	var argv []string
	if err := json.Unmarshal([]byte(args), &argv); err != nil {
		return nil, fmt.Errorf("%q is not the exec form [\"bin\", \"arg\"] (the runtime image has no shell)", args)
	}
	return argv, nil
}

// dockerFacts is what checkDockerfile found, for the other checkers.
type dockerFacts struct {
	img      image
	built    []string // the cmd/ directories the builder compiles
	exposed  []int
	userSpec string
}

// checkDockerfile checks the Dockerfile against go.mod's Go version and the main packages
// under cmd/ (less devOnlyCommands).
func checkDockerfile(src, goVersion string, mains []string) (dockerFacts, []error) {
	var facts dockerFacts
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf("Dockerfile: "+format, args...)) }
	stages, err := parseDockerfile(src)
	if err != nil {
		return facts, []error{fmt.Errorf("Dockerfile: %w", err)}
	}
	if len(stages) < 2 {
		fail("want a multi-stage build (builder, then runtime), got %d stage", len(stages))
		return facts, errs
	}

	// The builder: the stage that runs `go build`.
	var builder *dockerStage
	var build dockerInstr
	builderIndex := -1
	for i := range stages {
		for _, in := range stages[i].instrs {
			if in.cmd == "RUN" && strings.Contains(in.args, "go build") {
				builder, build, builderIndex = &stages[i], in, i
			}
		}
	}
	if builder == nil {
		fail("no RUN go build")
		return facts, errs
	}
	if m := regexp.MustCompile(`^golang:(\d+\.\d+(?:\.\d+)?)(-.*)?$`).FindStringSubmatch(builder.from); m == nil {
		fail("builder image %q is not golang:<version>[-variant]", builder.from)
	} else if m[1] != goVersion {
		fail("builder image %s has Go %s, go.mod says go %s", builder.from, m[1], goVersion)
	}
	env := map[string]string{}
	args := map[string]bool{}
	sawModCopy, sawDownload := false, false
	for _, in := range builder.instrs {
		switch in.cmd {
		case "ENV":
			parseEnv(in.args, env)
		case "ARG":
			name, _, _ := strings.Cut(in.args, "=")
			args[name] = true
		case "COPY":
			f := strings.Fields(in.args)
			switch {
			case slices.Contains(f, "go.mod") && slices.Contains(f, "go.sum") && !sawDownload:
				sawModCopy = true
			case len(f) >= 2 && f[0] == "." && !sawDownload:
				fail("line %d: COPY . before `go mod download`: every source change would download the modules again", in.line)
			}
		case "RUN":
			if strings.Contains(in.args, "go mod download") && sawModCopy {
				sawDownload = true
			}
		}
	}
	if !sawModCopy || !sawDownload {
		fail("want COPY go.mod go.sum, then RUN go mod download, before the sources (a cached module layer)")
	}
	if env["CGO_ENABLED"] != "0" && !strings.Contains(build.args, "CGO_ENABLED=0") {
		fail("go build without CGO_ENABLED=0: the binaries must be static for distroless/static")
	}
	for _, flag := range []string{"-trimpath", "-s -w", "-X main.version=${VERSION}"} {
		if !strings.Contains(build.args, flag) {
			fail("go build lacks %s", flag)
		}
	}
	if !args["VERSION"] {
		fail("the builder stage declares no ARG VERSION")
	}
	outDir := ""
	if m := regexp.MustCompile(`-o\s+(\S+)`).FindStringSubmatch(build.args); m != nil {
		outDir = path.Clean(m[1])
	} else {
		fail("go build has no -o output directory")
	}
	for _, m := range regexp.MustCompile(`\./cmd/([\w-]+)`).FindAllStringSubmatch(build.args, -1) {
		facts.built = append(facts.built, m[1])
	}
	if strings.Contains(build.args, "./cmd/...") {
		fail("go build ./cmd/... would also build %v; name the commands", devOnlyCommands)
	}
	slices.Sort(facts.built)
	wantBuilt := slices.Sorted(slices.Values(mains))
	if !slices.Equal(facts.built, wantBuilt) {
		fail("go build compiles %v, but the main packages under cmd/ (less %v) are %v", facts.built, devOnlyCommands, wantBuilt)
	}

	// The runtime: the last stage.
	rt := stages[len(stages)-1]
	if !strings.HasPrefix(rt.from, "gcr.io/distroless/static") {
		fail("runtime image %q: want gcr.io/distroless/static-*", rt.from)
	}
	facts.img.env = map[string]string{}
	copies := map[string]string{} // source (cleaned) -> destination
	workdir := ""
	for _, in := range rt.instrs {
		switch in.cmd {
		case "ENV":
			parseEnv(in.args, facts.img.env)
		case "USER":
			facts.userSpec = in.args
		case "WORKDIR":
			workdir = in.args
		case "COPY":
			f := strings.Fields(in.args)
			from := ""
			var rest []string
			for _, x := range f {
				if v, ok := strings.CutPrefix(x, "--from="); ok {
					from = v
				} else if !strings.HasPrefix(x, "--") {
					rest = append(rest, x)
				}
			}
			if len(rest) < 2 {
				fail("line %d: COPY needs a source and a destination", in.line)
				continue
			}
			dst := path.Clean(rest[len(rest)-1])
			for _, s := range rest[:len(rest)-1] {
				if from != "" {
					if (from == builder.name || from == strconv.Itoa(builderIndex)) && path.Clean(s) == outDir {
						facts.img.binDir = dst
					}
					continue
				}
				copies[path.Clean(s)] = dst
			}
		case "HEALTHCHECK":
			_, cmd, ok := strings.Cut(in.args, "CMD ")
			if !ok {
				fail("HEALTHCHECK without CMD")
				continue
			}
			argv, err := execForm(strings.TrimSpace(cmd))
			if err != nil {
				fail("HEALTHCHECK: %v", err)
			}
			facts.img.healthcheck = argv
		case "CMD":
			argv, err := execForm(in.args)
			if err != nil {
				fail("CMD: %v", err)
			}
			facts.img.cmd = argv
		case "ENTRYPOINT":
			fail("line %d: ENTRYPOINT: the services choose the binary with their command; an entrypoint would prefix it", in.line)
		case "EXPOSE":
			for _, p := range strings.Fields(in.args) {
				n, err := strconv.Atoi(strings.TrimSuffix(p, "/tcp"))
				if err != nil {
					fail("EXPOSE %q is not a port", p)
				}
				facts.exposed = append(facts.exposed, n)
			}
		}
	}
	if facts.img.binDir == "" {
		fail("the runtime stage does not COPY --from=%s %s (the binaries)", builder.name, outDir)
	}
	facts.img.binOnPath = slices.Contains(strings.Split(facts.img.env["PATH"], ":"), facts.img.binDir)
	if workdir == "" || workdir == "/" {
		fail("no WORKDIR in the runtime stage (the processes read an optional ./.env there)")
	}

	// USER: not root, numeric or distroless' nonroot.
	user, _, _ := strings.Cut(facts.userSpec, ":")
	switch {
	case facts.userSpec == "":
		fail("no USER in the runtime stage: the processes would run as root")
	case user == "root" || user == "0":
		fail("USER %s is root", facts.userSpec)
	case user != "nonroot":
		if _, err := strconv.Atoi(user); err != nil {
			fail("USER %s: use a numeric uid (65532) so that Kubernetes can verify runAsNonRoot", facts.userSpec)
		}
	}

	// Data next to the binaries: the models at MODEL_PATH, the migrations.
	if dst, ok := copies["models"]; !ok {
		fail("the runtime stage does not COPY models/")
	} else if facts.img.env["MODEL_PATH"] != dst {
		fail("MODEL_PATH=%q, but the models are copied to %s", facts.img.env["MODEL_PATH"], dst)
	}
	if _, ok := copies["migrations"]; !ok {
		fail("the runtime stage does not COPY migrations/")
	}

	// HEALTHCHECK: `api healthcheck`, which needs no shell.
	hc := facts.img.healthcheck
	if len(hc) < 2 || hc[0] != path.Join(facts.img.binDir, "api") || hc[1] != "healthcheck" {
		fail("HEALTHCHECK CMD %q: want [%q, \"healthcheck\"]", hc, path.Join(facts.img.binDir, "api"))
	}
	if r, err := commandRole(facts.img.cmd, facts.img); err != nil {
		fail("CMD: %v", err)
	} else if r != roleAPI {
		fail("CMD runs %s: want the api by default", r)
	}
	for r := range portVar {
		p, _ := rolePort(r, nil)
		if !slices.Contains(facts.exposed, p) {
			fail("EXPOSE lacks %d (%s)", p, r)
		}
	}
	if p, _ := strconv.Atoi(varDefault("GRPC_PORT")); !slices.Contains(facts.exposed, p) {
		fail("EXPOSE lacks %d (the api's gRPC)", p)
	}
	return facts, errs
}

// dockerImage checks the Dockerfile and returns what it tells about our image.
func dockerImage(t *testing.T) image {
	t.Helper()
	facts, errs := checkDockerfile(readFile(t, "Dockerfile"), goVersion(t), mainCommands(t))
	requireNoProblems(t, errs)
	return facts.img
}

func TestDockerfile(t *testing.T) {
	t.Parallel()
	facts, errs := checkDockerfile(readFile(t, "Dockerfile"), goVersion(t), mainCommands(t))
	requireNoProblems(t, errs)
	require.Equal(t, "/app", facts.img.binDir)
	require.ElementsMatch(t, []string{"api", "worker", "scheduler", "train", "predq"}, facts.built)
}

func TestDockerfileProblems(t *testing.T) {
	t.Parallel()
	src, gov, mains := readFile(t, "Dockerfile"), goVersion(t), mainCommands(t)
	for _, tc := range []struct {
		name, old, new, want string
		mains                []string
		gov                  string
	}{
		{name: "older Go in the builder", old: "golang:" + gov, new: "golang:1.21.0", want: "go.mod says go " + gov},
		{name: "root user", old: "USER 65532:65532", new: "USER root", want: "is root"},
		{name: "no user", old: "USER 65532:65532", new: "", want: "no USER"},
		{name: "named user", old: "USER 65532:65532", new: "USER app", want: "numeric uid"},
		{name: "a command not built", old: " ./cmd/train", new: "", want: "main packages under cmd/"},
		{name: "an extra command", mains: []string{"api", "worker", "scheduler", "train", "loadgen"}, want: "main packages under cmd/"},
		{name: "healthcheck in shell form", old: `CMD ["/app/api", "healthcheck"]`, new: `CMD curl -f http://localhost:8080/health/live`, want: "HEALTHCHECK"},
		{name: "healthcheck of another binary", old: `CMD ["/app/api", "healthcheck"]`, new: `CMD ["/app/worker", "healthcheck"]`, want: "HEALTHCHECK CMD"},
		{name: "cgo", old: "ENV CGO_ENABLED=0", new: "ENV CGO_ENABLED=1", want: "CGO_ENABLED=0"},
		{name: "no trimpath", old: "-trimpath ", new: "", want: "-trimpath"},
		{name: "sources before modules", old: "COPY go.mod go.sum ./", new: "COPY . .", want: "COPY . before"},
		{name: "model path elsewhere", old: "MODEL_PATH=/app/models", new: "MODEL_PATH=/models", want: "MODEL_PATH"},
		{name: "entrypoint", old: `CMD ["/app/api", "serve"]`, new: `ENTRYPOINT ["/app/api"]`, want: "ENTRYPOINT"},
		{name: "default command not a service", old: `CMD ["/app/api", "serve"]`, new: `CMD ["/app/train"]`, want: "CMD"},
		{name: "port not exposed", old: "EXPOSE 8080 8081 9091 9092", new: "EXPOSE 8080 8081 9091", want: "EXPOSE lacks 9092"},
		{name: "gRPC port not exposed", old: "EXPOSE 8080 8081 9091 9092", new: "EXPOSE 8080 9091 9092", want: "EXPOSE lacks 8081"},
		{name: "binaries elsewhere", old: "COPY --from=build /out/ /app/", new: "COPY --from=build /out/ /usr/local/bin/", want: "HEALTHCHECK CMD"},
		{name: "binaries not copied", old: "COPY --from=build /out/ /app/", new: "", want: "does not COPY --from=build /out"},
		{name: "no workdir", old: "WORKDIR /app\n", new: "", want: "WORKDIR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			bad := src
			if tc.old != "" {
				bad = mustReplace(t, src, tc.old, tc.new)
			}
			m := mains
			if tc.mains != nil {
				m = tc.mains
			}
			_, errs := checkDockerfile(bad, gov, m)
			requireProblem(t, errs, tc.want)
		})
	}
}

func TestDockerignore(t *testing.T) {
	t.Parallel()
	var patterns []string
	for _, l := range strings.Split(readFile(t, ".dockerignore"), "\n") {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			patterns = append(patterns, strings.TrimSuffix(strings.TrimPrefix(l, "/"), "/"))
		}
	}
	for _, p := range []string{".git", ".env", "bin", "tmp"} {
		require.Contains(t, patterns, p, ".dockerignore must exclude %s", p)
	}
	// What the build needs must stay in the context.
	for _, need := range []string{"go.mod", "go.sum", "cmd", "internal", "migrations", "models", "data"} {
		for _, p := range patterns {
			ok, err := path.Match(p, need)
			require.NoError(t, err)
			require.False(t, ok, ".dockerignore pattern %q excludes %s, which the build needs", p, need)
		}
	}
}
