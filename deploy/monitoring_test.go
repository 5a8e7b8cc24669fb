package deploy_test

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

type promConfig struct {
	RuleFiles     []string `yaml:"rule_files"`
	ScrapeConfigs []struct {
		JobName      string `yaml:"job_name"`
		MetricsPath  string `yaml:"metrics_path"`
		DNSSDConfigs []struct {
			Names []string `yaml:"names"`
			Type  string   `yaml:"type"`
			Port  int      `yaml:"port"`
		} `yaml:"dns_sd_configs"`
		StaticConfigs []struct {
			Targets []string `yaml:"targets"`
		} `yaml:"static_configs"`
	} `yaml:"scrape_configs"`
}

// hostPath maps a path inside a compose service's container to the repository through its
// bind mounts ("" when no mount covers it).
func hostPath(s composeService, ctr string) string {
	best := ""
	for c := range bindMounts(s) {
		if (ctr == c || strings.HasPrefix(ctr, c+"/")) && len(c) > len(best) {
			best = c
		}
	}
	if best == "" {
		return ""
	}
	return path.Join(bindMounts(s)[best], strings.TrimPrefix(ctr, best))
}

// checkPrometheus checks that prometheus.yml scrapes /metrics of every replica of our
// long-running compose services on their ports, and that its rule files are mounted.
func checkPrometheus(src string, apps map[string]composeApp, prom composeService) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf("prometheus.yml: "+format, args...)) }
	var pc promConfig
	if err := yaml.Unmarshal([]byte(src), &pc); err != nil {
		return []error{fmt.Errorf("prometheus.yml: %w", err)}
	}
	scraped := map[string]bool{} // host:port
	for _, sc := range pc.ScrapeConfigs {
		if sc.MetricsPath != "" && sc.MetricsPath != "/metrics" {
			fail("job %s scrapes %s; our processes serve /metrics", sc.JobName, sc.MetricsPath)
		}
		for _, d := range sc.DNSSDConfigs {
			if d.Type != "A" {
				fail("job %s: dns_sd type %q: Docker's DNS answers A records", sc.JobName, d.Type)
			}
			for _, n := range d.Names {
				scraped[n+":"+strconv.Itoa(d.Port)] = true
			}
		}
		for _, s := range sc.StaticConfigs {
			for _, t := range s.Targets {
				scraped[t] = true
			}
		}
	}
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range apps {
			if !yield(n) {
				return
			}
		}
	}) {
		a := apps[name]
		if a.role == roleMigrate {
			continue
		}
		if target := fmt.Sprintf("%s:%d", a.name, a.port); !scraped[target] {
			fail("no scrape job for %s (%s)", target, a.role)
		}
	}
	if len(pc.RuleFiles) == 0 {
		fail("no rule_files")
	}
	for _, rf := range pc.RuleFiles {
		if hostPath(prom, path.Dir(rf)) == "" {
			fail("rule_files %s: the prometheus service mounts nothing at %s", rf, path.Dir(rf))
		}
	}
	return errs
}

func TestPrometheus(t *testing.T) {
	t.Parallel()
	apps, cf := composeApps(t, dockerImage(t))
	prom := cf.Services["prometheus"]
	requireNoProblems(t, checkPrometheus(readFile(t, "deploy/prometheus/prometheus.yml"), apps, prom))

	// The service reads this file, and the rules from deploy/prometheus/rules.
	require.Contains(t, prom.Command, "--config.file=/etc/prometheus/prometheus.yml")
	require.Equal(t, "deploy/prometheus/prometheus.yml", path.Clean(hostPath(prom, "/etc/prometheus/prometheus.yml")))
	require.Equal(t, "deploy/prometheus/rules", path.Clean(hostPath(prom, "/etc/prometheus/rules")))
}

func TestPrometheusProblems(t *testing.T) {
	t.Parallel()
	apps, cf := composeApps(t, dockerImage(t))
	src := readFile(t, "deploy/prometheus/prometheus.yml")
	for _, tc := range []struct{ name, old, new, want string }{
		{"worker port", "port: 9091", "port: 9100", "no scrape job for worker:9091"},
		{"scheduler missing", "names: [scheduler]", "names: [schedulr]", "no scrape job for scheduler:9092"},
		{"path", "  - job_name: api\n    metrics_path: /metrics", "  - job_name: api\n    metrics_path: /prometheus", "scrapes /prometheus"},
		{"SRV records", "type: A", "type: SRV", `dns_sd type "SRV"`},
		{"rules elsewhere", "/etc/prometheus/rules/*.yml", "/rules/*.yml", "mounts nothing at /rules"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			requireProblem(t, checkPrometheus(mustReplace(t, src, tc.old, tc.new), apps, cf.Services["prometheus"]), tc.want)
		})
	}
}

func TestGrafanaProvisioning(t *testing.T) {
	t.Parallel()
	_, cf := composeApps(t, dockerImage(t))
	grafana := cf.Services["grafana"]
	require.Equal(t, "deploy/grafana/provisioning", path.Clean(hostPath(grafana, "/etc/grafana/provisioning")))

	var ds struct {
		Datasources []struct {
			Name, Type, URL, UID string
		} `yaml:"datasources"`
	}
	require.NoError(t, yaml.Unmarshal([]byte(readFile(t, "deploy/grafana/provisioning/datasources/prometheus.yml")), &ds))
	require.Len(t, ds.Datasources, 1)
	u, err := url.Parse(ds.Datasources[0].URL)
	require.NoError(t, err)
	require.Equal(t, "prometheus", ds.Datasources[0].Type)
	require.Contains(t, cf.Services, u.Hostname(), "the datasource points at a compose service")
	port, err := strconv.Atoi(u.Port())
	require.NoError(t, err)
	require.Contains(t, containerPorts(cf.Services[u.Hostname()]), port)

	var dp struct {
		Providers []struct {
			Type    string `yaml:"type"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	require.NoError(t, yaml.Unmarshal([]byte(readFile(t, "deploy/grafana/provisioning/dashboards/predq.yml")), &dp))
	require.Len(t, dp.Providers, 1)
	require.Equal(t, "file", dp.Providers[0].Type)
	dir := hostPath(grafana, dp.Providers[0].Options.Path)
	require.Equal(t, "deploy/grafana/dashboards", path.Clean(dir), "the provider reads the mounted dashboards")

	// Grafana skips a broken dashboard file with no more than a log line.
	files, err := filepath.Glob(filepath.Join(root, dir, "*.json"))
	require.NoError(t, err)
	for _, f := range files {
		b, err := os.ReadFile(f)
		require.NoError(t, err)
		var v map[string]any
		require.NoError(t, json.Unmarshal(b, &v), "%s is not a JSON object", f)
	}
}
