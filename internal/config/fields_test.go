package config

import (
	"fmt"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestREADMETableMatchesVars holds README's configuration table to Config's tags: every
// variable has a row with its default, and no row names a variable that Config lacks. A row
// may name several variables ("`A` / `B`" or "`A`, `B`") with as many defaults, separated
// alike.
func TestREADMETableMatchesVars(t *testing.T) {
	t.Parallel()
	readme, err := os.ReadFile("../../README.md")
	require.NoError(t, err)
	_, section, ok := strings.Cut(string(readme), "\n## Configuration\n")
	require.True(t, ok, "README.md has a Configuration section")
	section, _, _ = strings.Cut(section, "\n## ")

	name := regexp.MustCompile("`([A-Z][A-Z0-9_]*)`")
	documented := map[string]string{} // variable → its default in the table
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(strings.Trim(strings.TrimSpace(line), "|"), "|")
		if !strings.HasPrefix(line, "|") || len(cells) < 3 || strings.HasPrefix(cells[0], "---") || strings.TrimSpace(cells[0]) == "variable" {
			continue
		}
		var names []string
		for _, m := range name.FindAllStringSubmatch(cells[0], -1) {
			names = append(names, m[1])
		}
		require.NotEmpty(t, names, "row %q names no variable", line)
		sep := ", "
		if strings.Contains(cells[0], " / ") {
			sep = " / "
		}
		defaults := make([]string, len(names))
		if d := strings.TrimSpace(cells[1]); d != "" {
			defaults = strings.Split(d, sep)
		}
		require.Len(t, defaults, len(names), "row %q: one default per variable, separated by %q", line, sep)
		for i, n := range names {
			_, dup := documented[n]
			require.False(t, dup, "README.md documents %s twice", n)
			documented[n] = strings.TrimSpace(defaults[i])
		}
	}
	for _, v := range Vars {
		d, ok := documented[v.Name]
		if !ok {
			t.Errorf("README.md's configuration table has no row for %s", v.Name)
			continue
		}
		if d != v.Default {
			t.Errorf("README.md gives %s the default %q; Config's tag says %q", v.Name, d, v.Default)
		}
	}
	for n := range documented {
		if !Known(n) {
			t.Errorf("README.md's configuration table names %s, which Config does not read", n)
		}
	}
}

func TestVarsAreUniqueAndDocumented(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for _, v := range Vars {
		require.False(t, seen[v.Name], "%s is read by two fields", v.Name)
		seen[v.Name] = true
		require.NotEmpty(t, v.Doc, v.Name)
	}
}

// TestRedactedNamesEveryVariable: the start-up line shows every variable that is not omitted.
func TestRedactedNamesEveryVariable(t *testing.T) {
	t.Parallel()
	c, err := Load(env(nil))
	require.NoError(t, err)
	kv := c.Redacted()
	keys := map[string]bool{}
	for i := 0; i < len(kv); i += 2 {
		keys[kv[i].(string)] = true
	}
	for _, f := range fields {
		require.Equal(t, f.redact != "omit", keys[strings.ToLower(f.key)], f.key)
	}
	require.Contains(t, fmt.Sprint(kv...), "redis_ttl1h0m0s", "durations as text")
}

func TestRedactedShowsSetSecretsAsMasks(t *testing.T) {
	t.Parallel()
	c, err := Load(env(map[string]string{
		"API_KEYS":            "a:0123456789abcdefg,b:0123456789abcdefgh",
		"MONITORING_USER":     "ops",
		"MONITORING_PASSWORD": "correct-horse-battery",
		"REDIS_URL":           "redis://:pw-of-redis@r:6379/0",
	}))
	require.NoError(t, err)
	got := map[string]any{}
	kv := c.Redacted()
	for i := 0; i < len(kv); i += 2 {
		got[kv[i].(string)] = kv[i+1]
	}
	require.Equal(t, 2, got["api_keys"], "a list of secrets shows its length")
	require.Equal(t, "***", got["monitoring_password"])
	require.Equal(t, "***", got["monitoring_user"])
	require.Equal(t, "", got["secret_key"], "unset stays visibly unset")
	require.Equal(t, "redis://:xxxxx@r:6379/0", got["redis_url"])
	require.Equal(t, "redis://:xxxxx@r:6379/0", got["cache_redis_url"], "defaults to REDIS_URL")
}

func TestGCDefaultsMatchTheirVariables(t *testing.T) {
	t.Parallel()
	var gogc, limit string
	for _, v := range Vars {
		switch v.Name {
		case "GOGC":
			gogc = v.Default
		case "GOMEMLIMIT":
			limit = v.Default
		}
	}
	require.Equal(t, strconv.Itoa(DefaultGOGC), gogc)
	mib, ok := strings.CutSuffix(limit, "MiB")
	require.True(t, ok, "GOMEMLIMIT's default in MiB")
	n, err := strconv.Atoi(mib)
	require.NoError(t, err)
	require.EqualValues(t, DefaultMemoryLimit, n<<20)
}

func TestSecondsAndListsAreRead(t *testing.T) {
	t.Parallel()
	c, err := Load(env(map[string]string{"REDIS_TTL": " 120 ", "ALLOWED_ORIGINS": " https://a.example , ,*", "LOG_LEVEL": "DEBUG"}))
	require.NoError(t, err)
	require.Equal(t, "2m0s", c.RedisTTL.String())
	require.Equal(t, []string{"https://a.example", "*"}, c.AllowedOrigins)
	require.Equal(t, "debug", c.LogLevel)

	_, err = Load(env(map[string]string{"REDIS_TTL": "2m"}))
	require.EqualError(t, err, `REDIS_TTL: must be a whole number, got "2m"`, "seconds, and one problem per variable")
}

// TestOnlyCommandsImportConfig keeps the rule that packages below cmd take plain values: no
// package outside cmd (and the deployment files' tests, which check the variables) imports
// this one.
func TestOnlyCommandsImportConfig(t *testing.T) {
	t.Parallel()
	const self = "github.com/predq/predq/internal/config"
	root := "../.."
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() {
			switch rel {
			case ".git", "cmd", "deploy", "internal/config", "node_modules":
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") {
			return nil
		}
		f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.ImportsOnly)
		if err != nil {
			return err
		}
		for _, imp := range f.Imports {
			if p, _ := strconv.Unquote(imp.Path.Value); p == self {
				t.Errorf("%s imports internal/config: hand it plain values from cmd instead", rel)
			}
		}
		return nil
	})
	require.NoError(t, err)
}
