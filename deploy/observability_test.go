package deploy_test

// Checks of the observability files: the Prometheus alert rules
// (deploy/prometheus/rules/predq.yml), the Grafana dashboard
// (deploy/grafana/dashboards/predq.json) and the list of metrics the processes expose
// (deploy/testdata/exposed_metrics.txt).
//
//   - the rules load with Prometheus's own rulefmt (as `promtool check rules` would) and follow
//     our conventions (for, severity, summary, description);
//   - every dashboard query parses as PromQL once Grafana's variables are substituted, and the
//     dashboard is provisionable (uid, datasource variable, unique panel ids);
//   - every metric, label and label value a query uses is in exposed_metrics.txt, rate() and
//     increase() only see counters, histogram_quantile() keeps le, and `by`/`on` name labels
//     that exist;
//   - exposed_metrics.txt matches the metrics that internal/ and cmd/ define.
//
// Each checker takes bytes or a parsed value and returns the problems it found, so that the
// negative tests can feed it a broken variant of a real file. Helpers are prefixed obs: this
// package is shared with the other deploy tests.

import (
	"encoding/json"
	"errors"
	"fmt"
	"go/ast"
	goparser "go/parser"
	"go/token"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/stretchr/testify/require"
	"go.yaml.in/yaml/v3"
)

const (
	obsRulesFile     = "deploy/prometheus/rules/predq.yml"
	obsDashboardFile = "deploy/grafana/dashboards/predq.json"
	obsMetricsFile   = "deploy/testdata/exposed_metrics.txt"
	obsPromConfig    = "deploy/prometheus/prometheus.yml"
	obsDashboardUID  = "predq-overview"
)

// obsPromQL parses PromQL as Prometheus does by default (no experimental functions).
var obsPromQL = parser.NewParser(parser.Options{})

// obsPath is a repository path seen from this package's directory.
func obsPath(rel string) string { return filepath.Join("..", filepath.FromSlash(rel)) }

func obsRead(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile(obsPath(rel))
	require.NoError(t, err)
	return b
}

// obsReplace replaces the first occurrence of old, which must be there.
func obsReplace(t *testing.T, s, old, new string) string {
	t.Helper()
	require.Contains(t, s, old, "the negative case's anchor is gone from the real file")
	return strings.Replace(s, old, new, 1)
}

// obsRequireProblem requires that one of errs contains want.
func obsRequireProblem(t *testing.T, errs []error, want string) {
	t.Helper()
	for _, err := range errs {
		if strings.Contains(err.Error(), want) {
			return
		}
	}
	require.Failf(t, "problem not found", "want a problem containing %q; got %v", want, errs)
}

func obsRequireNoProblems(t *testing.T, errs []error) {
	t.Helper()
	if len(errs) > 0 {
		msgs := make([]string, len(errs))
		for i, err := range errs {
			msgs[i] = err.Error()
		}
		t.Fatalf("%d problems:\n%s", len(errs), strings.Join(msgs, "\n"))
	}
}

// ---------------------------------------------------------------------------------------------
// exposed_metrics.txt

// obsFamily is one metric family of exposed_metrics.txt.
type obsFamily struct {
	Name   string
	Type   string              // counter, gauge, histogram, summary
	Labels map[string][]string // label name → the values it takes (nil: not listed)
}

// obsCatalog is exposed_metrics.txt, by family name.
type obsCatalog map[string]*obsFamily

var (
	obsTypes      = []string{"counter", "gauge", "histogram", "summary"}
	obsNameRe     = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	obsLabelRe    = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
	obsTargetLbls = []string{"job", "instance"} // added by Prometheus to every scraped series
)

func obsParseCatalog(src string) (obsCatalog, []error) {
	cat := obsCatalog{}
	var errs []error
	for i, line := range strings.Split(src, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fail := func(format string, args ...any) {
			errs = append(errs, fmt.Errorf("exposed_metrics.txt:%d: "+format, append([]any{i + 1}, args...)...))
		}
		fields := strings.Fields(line)
		if len(fields) < 2 {
			fail("%q: want `name type [label...]`", line)
			continue
		}
		f := &obsFamily{Name: fields[0], Type: fields[1], Labels: map[string][]string{}}
		if !obsNameRe.MatchString(f.Name) {
			fail("%q is not a metric name", f.Name)
		}
		if !slices.Contains(obsTypes, f.Type) {
			fail("%s: type %q is none of %v", f.Name, f.Type, obsTypes)
		}
		if cat[f.Name] != nil {
			fail("%s listed twice", f.Name)
		}
		for _, l := range fields[2:] {
			name, values, hasValues := strings.Cut(l, "=")
			if !obsLabelRe.MatchString(name) || strings.HasPrefix(name, "__") || slices.Contains(obsTargetLbls, name) || name == "le" || name == "quantile" {
				fail("%s: label %q is not a label of the metric itself", f.Name, name)
			}
			if _, dup := f.Labels[name]; dup {
				fail("%s: label %q listed twice", f.Name, name)
			}
			f.Labels[name] = nil
			if hasValues {
				f.Labels[name] = strings.Split(values, "|")
			}
		}
		cat[f.Name] = f
	}
	return cat, errs
}

func obsLoadCatalog(t *testing.T) obsCatalog {
	t.Helper()
	cat, errs := obsParseCatalog(string(obsRead(t, obsMetricsFile)))
	obsRequireNoProblems(t, errs)
	return cat
}

// lookup resolves a series name: a family, or a histogram's _bucket/_sum/_count (a summary's
// _sum/_count). suffix is "" for the family itself.
func (c obsCatalog) lookup(name string) (f *obsFamily, suffix string, ok bool) {
	if f, ok := c[name]; ok {
		return f, "", true
	}
	for _, s := range []string{"_bucket", "_sum", "_count"} {
		base, found := strings.CutSuffix(name, s)
		if !found {
			continue
		}
		if f, ok := c[base]; ok {
			return f, s, true
		}
	}
	return nil, "", false
}

// seriesLabels are the labels that a series of name can carry (job and instance included).
func (c obsCatalog) seriesLabels(name string) map[string][]string {
	f, suffix, ok := c.lookup(name)
	if !ok {
		return nil
	}
	out := map[string][]string{}
	for l, v := range f.Labels {
		out[l] = v
	}
	for _, l := range obsTargetLbls {
		out[l] = nil
	}
	switch {
	case f.Type == "histogram" && suffix == "_bucket":
		out["le"] = nil
	case f.Type == "summary" && suffix == "":
		out["quantile"] = nil
	}
	return out
}

// ---------------------------------------------------------------------------------------------
// PromQL checks

// obsSelectorName is the metric name of a selector ("" when it has none).
func obsSelectorName(vs *parser.VectorSelector) string {
	if vs.Name != "" {
		return vs.Name
	}
	for _, m := range vs.LabelMatchers {
		if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
			return m.Value
		}
	}
	return ""
}

// obsFamilyName strips a histogram's series suffix; hist tells whether it had one.
func obsFamilyName(name string) (family string, hist bool) {
	for _, s := range []string{"_bucket", "_sum", "_count"} {
		if base, found := strings.CutSuffix(name, s); found {
			return base, true
		}
	}
	return name, false
}

// obsPlainAlternatives are the values of a regexp that is only literal alternatives
// ("a|b", "(a|b)"); ok is false for anything else (".*", "5..").
func obsPlainAlternatives(re string) (values []string, ok bool) {
	re = strings.TrimSuffix(strings.TrimPrefix(re, "("), ")")
	if !regexp.MustCompile(`^[A-Za-z0-9_:-]+(\|[A-Za-z0-9_:-]+)*$`).MatchString(re) {
		return nil, false
	}
	return strings.Split(re, "|"), true
}

// obsAnyLabel marks a label set that cannot be known (an unknown metric: reported already).
const obsAnyLabel = "*"

// obsAvailable is the set of labels that the series of e may carry.
func obsAvailable(e parser.Expr, cat obsCatalog) map[string]bool {
	out := map[string]bool{}
	add := func(m map[string]bool) {
		for l := range m {
			out[l] = true
		}
	}
	switch n := e.(type) {
	case *parser.VectorSelector:
		lbls := cat.seriesLabels(obsSelectorName(n))
		if lbls == nil {
			return map[string]bool{obsAnyLabel: true}
		}
		for l := range lbls {
			out[l] = true
		}
	case *parser.MatrixSelector:
		return obsAvailable(n.VectorSelector, cat)
	case *parser.SubqueryExpr:
		return obsAvailable(n.Expr, cat)
	case *parser.ParenExpr:
		return obsAvailable(n.Expr, cat)
	case *parser.UnaryExpr:
		return obsAvailable(n.Expr, cat)
	case *parser.StepInvariantExpr:
		return obsAvailable(n.Expr, cat)
	case *parser.AggregateExpr:
		inner := obsAvailable(n.Expr, cat)
		switch {
		case n.Op == parser.TOPK || n.Op == parser.BOTTOMK || n.Op == parser.LIMITK || n.Op == parser.LIMIT_RATIO:
			add(inner)
		case n.Without:
			add(inner)
			for _, l := range n.Grouping {
				delete(out, l)
			}
		default:
			for _, l := range n.Grouping {
				out[l] = true
			}
		}
		if n.Op == parser.COUNT_VALUES {
			if s, ok := n.Param.(*parser.StringLiteral); ok {
				out[s.Val] = true
			}
		}
	case *parser.Call:
		switch n.Func.Name {
		case "absent", "absent_over_time":
			// absent() keeps the labels of its selector's equality matchers.
			parser.Inspect(n.Args[0], func(node parser.Node, _ []parser.Node) error {
				if vs, ok := node.(*parser.VectorSelector); ok {
					for _, m := range vs.LabelMatchers {
						if m.Type == labels.MatchEqual && m.Name != model.MetricNameLabel {
							out[m.Name] = true
						}
					}
				}
				return nil
			})
		case "label_replace", "label_join":
			add(obsAvailable(n.Args[0], cat))
			if s, ok := n.Args[1].(*parser.StringLiteral); ok {
				out[s.Val] = true
			}
		default:
			for _, a := range n.Args {
				if a.Type() == parser.ValueTypeVector || a.Type() == parser.ValueTypeMatrix {
					add(obsAvailable(a, cat))
				}
			}
		}
	case *parser.BinaryExpr:
		add(obsAvailable(n.LHS, cat))
		add(obsAvailable(n.RHS, cat))
	}
	return out
}

// obsKeeps tells whether the result of e still carries label l (used for le under
// histogram_quantile).
func obsKeeps(e parser.Expr, l string, cat obsCatalog) bool {
	switch n := e.(type) {
	case *parser.VectorSelector, *parser.MatrixSelector:
		avail := obsAvailable(n, cat)
		return avail[l] || avail[obsAnyLabel]
	case *parser.SubqueryExpr:
		return obsKeeps(n.Expr, l, cat)
	case *parser.ParenExpr:
		return obsKeeps(n.Expr, l, cat)
	case *parser.UnaryExpr:
		return obsKeeps(n.Expr, l, cat)
	case *parser.StepInvariantExpr:
		return obsKeeps(n.Expr, l, cat)
	case *parser.AggregateExpr:
		switch {
		case n.Op == parser.TOPK || n.Op == parser.BOTTOMK || n.Op == parser.LIMITK || n.Op == parser.LIMIT_RATIO:
			return obsKeeps(n.Expr, l, cat)
		case n.Without:
			return !slices.Contains(n.Grouping, l) && obsKeeps(n.Expr, l, cat)
		default:
			return slices.Contains(n.Grouping, l)
		}
	case *parser.Call:
		for _, a := range n.Args {
			if a.Type() == parser.ValueTypeVector || a.Type() == parser.ValueTypeMatrix {
				return obsKeeps(a, l, cat)
			}
		}
		return false
	case *parser.BinaryExpr:
		lhsVec := n.LHS.Type() == parser.ValueTypeVector
		rhsVec := n.RHS.Type() == parser.ValueTypeVector
		switch {
		case lhsVec && rhsVec:
			if n.VectorMatching != nil && n.VectorMatching.Card == parser.CardOneToOne && !n.Op.IsSetOperator() {
				if n.VectorMatching.On {
					return slices.Contains(n.VectorMatching.MatchingLabels, l) && obsKeeps(n.LHS, l, cat)
				}
				if slices.Contains(n.VectorMatching.MatchingLabels, l) {
					return false
				}
			}
			return obsKeeps(n.LHS, l, cat)
		case lhsVec:
			return obsKeeps(n.LHS, l, cat)
		case rhsVec:
			return obsKeeps(n.RHS, l, cat)
		}
	}
	return false
}

// obsCheckExpr parses expr and checks it against the catalog: metric names, label names and
// values, the functions applied to each type, the grouping labels. jobs (nil: not checked) are
// the scrape job names that job matchers may name.
func obsCheckExpr(where, expr string, cat obsCatalog, jobs map[string]bool) []error {
	var errs []error
	fail := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: "+format, append([]any{where}, args...)...))
	}
	e, err := obsPromQL.ParseExpr(expr)
	if err != nil {
		fail("%q: %v", expr, err)
		return errs
	}
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		switch n := node.(type) {
		case *parser.VectorSelector:
			name := obsSelectorName(n)
			if name == "" {
				fail("selector %s names no metric", n)
				return nil
			}
			f, suffix, ok := cat.lookup(name)
			switch {
			case !ok:
				fail("unknown metric %q (not in %s)", name, obsMetricsFile)
				return nil
			case suffix == "" && (f.Type == "histogram"):
				fail("%s is a histogram: use %[2]s_bucket, %[2]s_sum or %[2]s_count", name, name)
			case suffix == "_bucket" && f.Type != "histogram",
				suffix != "" && f.Type != "histogram" && f.Type != "summary":
				fail("%s is a %s: it has no %s series", f.Name, f.Type, suffix)
				return nil
			}
			lbls := cat.seriesLabels(name)
			for _, m := range n.LabelMatchers {
				if m.Name == model.MetricNameLabel {
					continue
				}
				values, ok := lbls[m.Name]
				if !ok {
					fail("%s has no label %q", name, m.Name)
					continue
				}
				if m.Name == "job" && jobs != nil {
					values = slices.Sorted(func(yield func(string) bool) {
						for j := range jobs {
							if !yield(j) {
								return
							}
						}
					})
				}
				if values == nil {
					continue
				}
				var used []string
				switch m.Type {
				case labels.MatchEqual, labels.MatchNotEqual:
					used = []string{m.Value}
				case labels.MatchRegexp, labels.MatchNotRegexp:
					used, _ = obsPlainAlternatives(m.Value)
				}
				for _, v := range used {
					if !slices.Contains(values, v) {
						fail("%s{%s}: %q is not a value of %s (known: %s)", name, m, v, m.Name, strings.Join(values, ", "))
					}
				}
			}
		case *parser.Call:
			switch n.Func.Name {
			case "rate", "irate", "increase", "resets":
				obsEachSelector(n.Args[0], func(vs *parser.VectorSelector) {
					if f, suffix, ok := cat.lookup(obsSelectorName(vs)); ok && f.Type != "counter" && suffix == "" {
						fail("%s() of %s, a %s: use it on counters only (delta() or deriv() for gauges)", n.Func.Name, f.Name, f.Type)
					}
				})
			case "delta", "idelta", "deriv", "predict_linear":
				obsEachSelector(n.Args[0], func(vs *parser.VectorSelector) {
					if f, suffix, ok := cat.lookup(obsSelectorName(vs)); ok && (f.Type == "counter" || suffix != "") {
						fail("%s() of %s, a counter: use rate() or increase()", n.Func.Name, obsSelectorName(vs))
					}
				})
			case "histogram_quantile":
				arg := n.Args[1]
				obsEachSelector(arg, func(vs *parser.VectorSelector) {
					if f, suffix, ok := cat.lookup(obsSelectorName(vs)); ok && (f.Type != "histogram" || suffix != "_bucket") {
						fail("histogram_quantile() over %s: want a histogram's _bucket series", obsSelectorName(vs))
					}
				})
				if !obsKeeps(arg, "le", cat) {
					fail("histogram_quantile(%s): its argument drops the le label (aggregate `by (le, ...)`)", arg)
				}
			}
		case *parser.AggregateExpr:
			if !n.Without && n.Op != parser.COUNT_VALUES {
				avail := obsAvailable(n.Expr, cat)
				for _, l := range n.Grouping {
					if !avail[l] && !avail[obsAnyLabel] {
						fail("%s by (%s): no series of %s carries label %q", n.Op, strings.Join(n.Grouping, ", "), n.Expr, l)
					}
				}
			}
		case *parser.BinaryExpr:
			if vm := n.VectorMatching; vm != nil && vm.On {
				lhs, rhs := obsAvailable(n.LHS, cat), obsAvailable(n.RHS, cat)
				for _, l := range vm.MatchingLabels {
					if (!lhs[l] && !lhs[obsAnyLabel]) || (!rhs[l] && !rhs[obsAnyLabel]) {
						fail("on (%s): label %q is not on both sides of %s", strings.Join(vm.MatchingLabels, ", "), l, n.Op)
					}
				}
			}
		}
		return nil
	})
	return errs
}

// obsEachSelector calls f for every vector selector under e.
func obsEachSelector(e parser.Node, f func(*parser.VectorSelector)) {
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		if vs, ok := node.(*parser.VectorSelector); ok {
			f(vs)
		}
		return nil
	})
}

// ---------------------------------------------------------------------------------------------
// Alert rules

var (
	obsSeverities = []string{"critical", "warning", "info"}
	obsAlertName  = regexp.MustCompile(`^Predq[A-Z][A-Za-z0-9]+$`)
)

// obsQuery is one PromQL expression of the rules or the dashboard (variables substituted).
type obsQuery struct {
	Where string
	Alert string // the alert's name, for a rule
	Expr  string
}

// obsCheckRules loads a rules file with Prometheus's rulefmt (which parses every expr and
// template) and checks our conventions: only alerting rules, named PredqSomething, unique, each
// with a for, a severity, a summary and a description.
func obsCheckRules(src []byte) ([]obsQuery, []error) {
	rgs, errs := rulefmt.Parse(src, false, model.UTF8Validation, obsPromQL, slog.New(slog.DiscardHandler))
	if len(errs) > 0 {
		return nil, errs
	}
	if len(rgs.Groups) == 0 {
		return nil, []error{errors.New("no rule groups")}
	}
	var qs []obsQuery
	seen := map[string]bool{}
	for _, g := range rgs.Groups {
		for i, r := range g.Rules {
			where := fmt.Sprintf("group %s, rule %d", g.Name, i+1)
			fail := func(format string, args ...any) {
				errs = append(errs, fmt.Errorf("%s: "+format, append([]any{where}, args...)...))
			}
			if r.Alert == "" {
				fail("recording rule %s: only alerting rules are expected here", r.Record)
				continue
			}
			where = fmt.Sprintf("group %s, alert %s", g.Name, r.Alert)
			if !obsAlertName.MatchString(r.Alert) {
				fail("name: want Predq followed by CamelCase")
			}
			if seen[r.Alert] {
				fail("alert name used twice")
			}
			seen[r.Alert] = true
			if r.For <= 0 {
				fail("no `for`: the alert would fire on a single evaluation")
			}
			if !slices.Contains(obsSeverities, r.Labels["severity"]) {
				fail("labels.severity %q: want one of %v", r.Labels["severity"], obsSeverities)
			}
			for _, a := range []string{"summary", "description"} {
				if strings.TrimSpace(r.Annotations[a]) == "" {
					fail("no annotations.%s", a)
				}
			}
			qs = append(qs, obsQuery{Where: obsRulesFile + ": " + where, Alert: r.Alert, Expr: r.Expr})
		}
	}
	return qs, errs
}

// obsPromJobs are the scrape job names of prometheus.yml (nil when there is none).
func obsPromJobs(t *testing.T) map[string]bool {
	t.Helper()
	b, err := os.ReadFile(obsPath(obsPromConfig))
	if errors.Is(err, fs.ErrNotExist) {
		t.Logf("%s missing: job names not checked", obsPromConfig)
		return nil
	}
	require.NoError(t, err)
	var pc struct {
		ScrapeConfigs []struct {
			JobName string `yaml:"job_name"`
		} `yaml:"scrape_configs"`
	}
	require.NoError(t, yaml.Unmarshal(b, &pc))
	jobs := map[string]bool{}
	for _, sc := range pc.ScrapeConfigs {
		jobs[sc.JobName] = true
	}
	return jobs
}

func TestObsAlertRulesParse(t *testing.T) {
	t.Parallel()
	// As Prometheus loads it (promtool check rules does the same).
	rgs, errs := rulefmt.ParseFile(obsPath(obsRulesFile), false, model.UTF8Validation, obsPromQL, slog.New(slog.DiscardHandler))
	obsRequireNoProblems(t, errs)
	require.NotEmpty(t, rgs.Groups)

	src := obsRead(t, obsRulesFile)
	qs, errs := obsCheckRules(src)
	obsRequireNoProblems(t, errs)
	alerts := map[string]bool{}
	for _, q := range qs {
		_, err := obsPromQL.ParseExpr(q.Expr)
		require.NoError(t, err, q.Where)
		alerts[q.Alert] = true
	}
	// The alerts the observability issue asks for.
	for _, a := range []string{
		"PredqTargetDown", "PredqHighHTTP5xxRatio", "PredqHighPredictLatencyP99",
		"PredqCriticalQueueLatencyHigh", "PredqBatchQueueLatencyHigh", "PredqArchivedTasksGrowing",
		"PredqWebhookDeliveriesFailing", "PredqHighLowConfidenceRatio",
		"PredqPersistenceFallbackInUse", "PredqJobsFailing",
	} {
		require.True(t, alerts[a], "alert %s missing", a)
	}

	// Every job that up{job=...} names is scraped by prometheus.yml, and every scraped job of
	// ours has a down alert.
	if jobs := obsPromJobs(t); jobs != nil {
		cat := obsLoadCatalog(t)
		for _, q := range qs {
			obsRequireNoProblems(t, obsCheckExpr(q.Where, q.Expr, cat, jobs))
		}
		for _, j := range []string{"api", "worker", "scheduler"} {
			require.True(t, jobs[j], "prometheus.yml has no job %s", j)
			require.Contains(t, string(src), `absent(up{job="`+j+`"})`)
		}
	}
}

func TestObsAlertRulesProblems(t *testing.T) {
	t.Parallel()
	src := string(obsRead(t, obsRulesFile))
	for _, tc := range []struct{ name, old, new, want string }{
		{"broken expr", `expr: up{job=~"api|worker|scheduler"} == 0`, `expr: up{job=~"api|worker|scheduler"} ==`, "unexpected end of input"},
		{"unknown function", `expr: sum(increase(ml_persist_fallback_total[10m])) > 0`, `expr: sum(increas(ml_persist_fallback_total[10m])) > 0`, `unknown function with name "increas"`},
		{"unknown field", "        annotations:\n", "        anotations:\n", "field anotations not found"},
		{"broken template", "{{ $labels.job }} target", "{{ $labels.job target", "annotation \"summary\""},
		{"bad duration", "for: 2m", "for: 2 minutes", `unknown unit " minutes"`},
		{"no for", "        for: 2m\n", "", "no `for`"},
		{"no severity", "severity: critical", "team: ml", "labels.severity"},
		{"unknown severity", "severity: warning", "severity: page", `labels.severity "page"`},
		{"no description", "          description: >-\n            Prometheus has failed", "          runbook: >-\n            Prometheus has failed", "no annotations.description"},
		{"duplicate alert", "alert: PredqAPIAbsent", "alert: PredqTargetDown", "alert name used twice"},
		{"bad name", "alert: PredqAPIAbsent", "alert: api_absent", "want Predq"},
		{"recording rule", "groups:\n", "groups:\n  - name: recorded\n    rules:\n      - record: predq:up:sum\n        expr: sum(up)\n", "only alerting rules"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, errs := obsCheckRules([]byte(obsReplace(t, src, tc.old, tc.new)))
			obsRequireProblem(t, errs, tc.want)
		})
	}
}

// ---------------------------------------------------------------------------------------------
// Dashboard

type obsDatasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type obsPanel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *obsDatasource `json:"datasource"`
	GridPos    *struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource *obsDatasource `json:"datasource"`
	} `json:"targets"`
	Panels []obsPanel `json:"panels"` // a collapsed row's panels
}

type obsDashboard struct {
	UID           string `json:"uid"`
	Title         string `json:"title"`
	SchemaVersion int    `json:"schemaVersion"`
	Templating    struct {
		List []struct {
			Name       string         `json:"name"`
			Type       string         `json:"type"`
			Query      any            `json:"query"`
			Datasource *obsDatasource `json:"datasource"`
			Multi      bool           `json:"multi"`
			IncludeAll bool           `json:"includeAll"`
		} `json:"list"`
	} `json:"templating"`
	Panels []obsPanel `json:"panels"`
}

var (
	// obsVarRef is a Grafana variable reference: $name, ${name} or ${name:format}.
	obsVarRef = regexp.MustCompile(`\$(?:\{(\w+)(?::\w+)?\}|(\w+))`)
	// obsEqualVar is a variable used with = or != (a multi-value variable needs =~).
	obsEqualVar = regexp.MustCompile(`(?:^|[^=!~])!?=\s*"[^"]*\$\{?(\w+)`)
	// obsLabelValues is a query variable's label_values(selector, label).
	obsLabelValues = regexp.MustCompile(`^\s*label_values\((.+),\s*(\w+)\s*\)\s*$`)
	// obsDatasourceUIDs are the ways a panel may name the $datasource variable.
	obsDatasourceUIDs = []string{"${datasource}", "$datasource"}
)

// obsSubstitute replaces Grafana's variables the way they expand at query time: interval
// variables become 5m, the dashboard's own variables (multi-value regexps) become .*.
func obsSubstitute(expr string, vars map[string]bool) (string, error) {
	var unknown []string
	out := obsVarRef.ReplaceAllStringFunc(expr, func(ref string) string {
		m := obsVarRef.FindStringSubmatch(ref)
		switch name := m[1] + m[2]; {
		case name == "__rate_interval" || name == "__interval" || name == "__range":
			return "5m"
		case vars[name]:
			return ".*"
		default:
			unknown = append(unknown, ref)
			return ref
		}
	})
	if len(unknown) > 0 {
		return "", fmt.Errorf("undefined variables %v", unknown)
	}
	return out, nil
}

// obsCheckDashboard checks a dashboard's JSON and returns its queries, variables substituted.
// Queries that do not parse are reported here; obsCheckExpr checks the rest.
func obsCheckDashboard(src []byte) ([]obsQuery, []error) {
	var d obsDashboard
	if err := json.Unmarshal(src, &d); err != nil {
		return nil, []error{fmt.Errorf("dashboard JSON: %w", err)}
	}
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if d.UID != obsDashboardUID {
		fail("uid %q, want %q (links and provisioning use it)", d.UID, obsDashboardUID)
	}
	if d.SchemaVersion < 36 {
		fail("schemaVersion %d: want 36 or later (datasource references by uid)", d.SchemaVersion)
	}
	if d.Title == "" {
		fail("no title")
	}

	vars, multi := map[string]bool{}, map[string]bool{}
	var qs []obsQuery
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		multi[v.Name] = v.Multi || v.IncludeAll
		switch v.Type {
		case "datasource":
			if v.Query != "prometheus" {
				fail("variable %s: a datasource variable of type %v, want prometheus", v.Name, v.Query)
			}
		case "query":
			if v.Datasource == nil || !slices.Contains(obsDatasourceUIDs, v.Datasource.UID) {
				fail("variable %s: datasource %v, want the $datasource variable", v.Name, v.Datasource)
			}
			q, _ := v.Query.(string)
			if m, ok := v.Query.(map[string]any); ok {
				q, _ = m["query"].(string)
			}
			lv := obsLabelValues.FindStringSubmatch(q)
			if lv == nil {
				fail("variable %s: query %q: want label_values(selector, label)", v.Name, q)
				continue
			}
			// The label must exist on the selected series: check it as a grouping label.
			qs = append(qs, obsQuery{Where: "variable " + v.Name, Expr: fmt.Sprintf("count by (%s) (%s)", lv[2], lv[1])})
		}
	}
	if !vars["datasource"] {
		fail("no datasource variable: the dashboard would be tied to one Grafana's datasource uid")
	}
	if !vars["model_version"] {
		fail("no model_version variable")
	}

	ids := map[int]string{}
	var walk func(ps []obsPanel)
	walk = func(ps []obsPanel) {
		for _, p := range ps {
			where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
			if p.ID <= 0 {
				fail("%s: no id", where)
			} else if other, dup := ids[p.ID]; dup {
				fail("%s: id also used by %q", where, other)
			}
			ids[p.ID] = p.Title
			if p.GridPos == nil || p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X < 0 || p.GridPos.X+p.GridPos.W > 24 {
				fail("%s: gridPos %+v outside the 24-column grid", where, p.GridPos)
			}
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			if p.Datasource == nil || p.Datasource.Type != "prometheus" || !slices.Contains(obsDatasourceUIDs, p.Datasource.UID) {
				fail("%s: datasource %+v, want {prometheus ${datasource}}", where, p.Datasource)
			}
			if len(p.Targets) == 0 {
				fail("%s: no query", where)
			}
			for _, tg := range p.Targets {
				w := fmt.Sprintf("%s, target %s", where, tg.RefID)
				if tg.Datasource != nil && !slices.Contains(obsDatasourceUIDs, tg.Datasource.UID) {
					fail("%s: datasource %+v, want the $datasource variable", w, tg.Datasource)
				}
				if strings.TrimSpace(tg.Expr) == "" {
					fail("%s: empty expr", w)
					continue
				}
				for _, m := range obsEqualVar.FindAllStringSubmatch(tg.Expr, -1) {
					if multi[m[1]] {
						fail("%s: $%s takes several values: match it with =~, not =", w, m[1])
					}
				}
				expr, err := obsSubstitute(tg.Expr, vars)
				if err != nil {
					fail("%s: %v", w, err)
					continue
				}
				if _, err := obsPromQL.ParseExpr(expr); err != nil {
					fail("%s: %q: %v", w, expr, err)
					continue
				}
				qs = append(qs, obsQuery{Where: obsDashboardFile + ": " + w, Expr: expr})
			}
		}
	}
	walk(d.Panels)
	return qs, errs
}

func TestObsDashboardQueriesParse(t *testing.T) {
	t.Parallel()
	qs, errs := obsCheckDashboard(obsRead(t, obsDashboardFile))
	obsRequireNoProblems(t, errs)
	require.Greater(t, len(qs), 30)

	// Each part of the dashboard the observability issue asks for has a query.
	all := ""
	for _, q := range qs {
		all += q.Expr + "\n"
	}
	for _, want := range []string{
		"rate(http_requests_total", "http_request_duration_seconds_bucket", `status=~"5.."`, `status=~"4.."`,
		"ml_predictions_total", "ml_prediction_duration_seconds_bucket", "ml_model_confidence_bucket",
		"ml_cache_requests_total", "ml_persist_fallback_total", "ml_low_confidence_total",
		"asynq_tasks_enqueued_total", "asynq_queue_latency_seconds", "asynq_tasks_processed_total", "asynq_tasks_failed_total",
		"ml_jobs_submitted_total", "ml_jobs_finished_total", "ml_job_items_total", "ml_job_duration_seconds_bucket",
		"webhook_deliveries_total", "process_cpu_seconds_total", "process_resident_memory_bytes",
	} {
		require.Contains(t, all, want)
	}
}

func TestObsDashboardProblems(t *testing.T) {
	t.Parallel()
	src := string(obsRead(t, obsDashboardFile))
	for _, tc := range []struct{ name, old, new, want string }{
		{"not JSON", `"panels": [`, `"panels": [,`, "dashboard JSON"},
		{"broken expr", `"expr": "sum(http_requests_in_flight)"`, `"expr": "sum(http_requests_in_flight"`, "unclosed left parenthesis"},
		{"bad range", `[$__rate_interval]))`, `[$__rate_interval]])`, "target"},
		{"undefined variable", `model_version=~\"$model_version\"`, `model_version=~\"$modelversion\"`, "undefined variables [$modelversion]"},
		{"multi-value variable with =", `model_version=~\"$model_version\"`, `model_version=\"$model_version\"`, "match it with =~"},
		{"hard-coded datasource", `"uid": "${datasource}"`, `"uid": "P1809F7CD0C75ACF3"`, "UID:P1809F7CD0C75ACF3}, want {prometheus ${datasource}}"},
		{"hard-coded target datasource", `"refId": "A",`, `"refId": "A", "datasource": {"type": "prometheus", "uid": "P1809F7CD0C75ACF3"},`, "target A: datasource"},
		{"duplicate panel id", `"id": 3,`, `"id": 2,`, "id also used by"},
		{"uid", `"uid": "predq-overview"`, `"uid": "predq"`, `uid "predq"`},
		{"no model_version variable", `"name": "model_version"`, `"name": "model"`, "no model_version variable"},
		{"grid overflow", `"w": 8,`, `"w": 28,`, "outside the 24-column grid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, errs := obsCheckDashboard([]byte(obsReplace(t, src, tc.old, tc.new)))
			obsRequireProblem(t, errs, tc.want)
		})
	}
}

// ---------------------------------------------------------------------------------------------
// Metric names

// obsAllQueries are the queries of the rules and the dashboard (variables substituted).
func obsAllQueries(t *testing.T) []obsQuery {
	t.Helper()
	rq, errs := obsCheckRules(obsRead(t, obsRulesFile))
	obsRequireNoProblems(t, errs)
	dq, errs := obsCheckDashboard(obsRead(t, obsDashboardFile))
	obsRequireNoProblems(t, errs)
	return append(rq, dq...)
}

// obsMetricNames are the metric families that the rules and the dashboard use. A histogram's
// series (_bucket, _sum, _count) count as their family, whose value is then true.
func obsMetricNames(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	for _, q := range obsAllQueries(t) {
		e, err := obsPromQL.ParseExpr(q.Expr)
		require.NoError(t, err, q.Where)
		obsEachSelector(e, func(vs *parser.VectorSelector) {
			name := obsSelectorName(vs)
			require.NotEmpty(t, name, "%s: a selector with no metric name", q.Where)
			family, hist := obsFamilyName(name)
			names[family] = names[family] || hist
		})
	}
	return names
}

func TestObsMetricsAreKnown(t *testing.T) {
	t.Parallel()
	cat := obsLoadCatalog(t)
	names := obsMetricNames(t)
	for name, hist := range names {
		f, ok := cat[name]
		require.True(t, ok, "metric %s is used but not in %s", name, obsMetricsFile)
		if hist {
			require.Contains(t, []string{"histogram", "summary"}, f.Type, "%s is used as a histogram", name)
		}
	}
	for _, want := range []string{"http_request_duration_seconds", "ml_prediction_duration_seconds", "ml_model_confidence"} {
		require.True(t, names[want], "%s: want it used as a histogram", want)
	}

	// Labels, label values, functions and grouping, query by query.
	jobs := obsPromJobs(t)
	var errs []error
	for _, q := range obsAllQueries(t) {
		errs = append(errs, obsCheckExpr(q.Where, q.Expr, cat, jobs)...)
	}
	obsRequireNoProblems(t, errs)
}

func TestObsMetricsProblems(t *testing.T) {
	t.Parallel()
	cat := obsLoadCatalog(t)
	jobs := map[string]bool{"api": true, "worker": true, "scheduler": true}
	for _, tc := range []struct{ name, expr, want string }{
		{"parse error", `sum(rate(ml_predictions_total[5m])`, "unclosed left parenthesis"},
		{"unknown metric", `rate(ml_predictions_totl[5m])`, `unknown metric "ml_predictions_totl"`},
		{"unknown metric by __name__", `{__name__="ml_cache_hits_total"}`, `unknown metric "ml_cache_hits_total"`},
		{"unknown label", `asynq_queue_size{state="archived"}`, `asynq_queue_size has no label "state"`},
		{"unknown label value", `ml_predictions_total{status="failed"}`, `"failed" is not a value of status`},
		{"unknown label value in alternatives", `ml_cache_requests_total{result=~"hit|mis"}`, `"mis" is not a value of result`},
		{"unknown job", `up{job="apі"} == 0`, `"apі" is not a value of job`},
		{"unknown by label", `sum by (model) (rate(ml_predictions_total[5m]))`, `no series of`},
		{"on label missing", `ml_predictions_total / on (route) http_requests_total`, `label "route" is not on both sides`},
		{"rate of a gauge", `rate(asynq_tasks_enqueued_total[5m])`, "rate() of asynq_tasks_enqueued_total, a gauge"},
		{"delta of a counter", `delta(ml_predictions_total[5m])`, "delta() of ml_predictions_total, a counter"},
		{"histogram without suffix", `http_request_duration_seconds`, "is a histogram"},
		{"bucket of a counter", `ml_predictions_total_bucket`, "it has no _bucket series"},
		{"quantile drops le", `histogram_quantile(0.9, sum by (route) (rate(http_request_duration_seconds_bucket[5m])))`, "drops the le label"},
		{"quantile of a counter", `histogram_quantile(0.9, sum by (le) (rate(http_requests_total[5m])))`, "want a histogram's _bucket series"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			obsRequireProblem(t, obsCheckExpr("test", tc.expr, cat, jobs), tc.want)
		})
	}

	// The good forms of the same queries pass.
	for _, expr := range []string{
		`max by (queue) (asynq_tasks_enqueued_total{state="archived"})`,
		`ml_cache_requests_total{result=~"hit|miss"}`,
		`histogram_quantile(0.9, sum by (le, route) (rate(http_request_duration_seconds_bucket[5m])))`,
		`histogram_quantile(0.9, sum without (method, status, instance, job) (rate(http_request_duration_seconds_bucket[5m])))`,
		`max by (queue) (delta(asynq_tasks_enqueued_total{state="archived"}[15m])) > 0`,
		`absent(up{job="worker"})`,
		`sum by (model_version) (rate(ml_predictions_total[5m])) and on (model_version) sum by (model_version) (rate(ml_low_confidence_total[5m]))`,
	} {
		obsRequireNoProblems(t, obsCheckExpr("test", expr, cat, jobs))
	}

	// obsMetricNames strips histogram suffixes.
	f, hist := obsFamilyName("ml_model_confidence_bucket")
	require.Equal(t, "ml_model_confidence", f)
	require.True(t, hist)

	// The catalog's own format.
	for _, tc := range []struct{ src, want string }{
		{"ml_x_total", "want `name type"},
		{"ml_x_total counter\nml_x_total counter", "listed twice"},
		{"ml_x_total countr", `type "countr"`},
		{"ml_x_total counter job", `label "job" is not a label of the metric itself`},
		{"ml-x counter", "is not a metric name"},
	} {
		_, errs := obsParseCatalog(tc.src)
		obsRequireProblem(t, errs, tc.want)
	}
}

// ---------------------------------------------------------------------------------------------
// exposed_metrics.txt against the code

// obsConstructors are client_golang's constructors and the type of metric each makes.
var obsConstructors = map[string]string{
	"NewCounter": "counter", "NewCounterVec": "counter", "NewCounterFunc": "counter",
	"NewGauge": "gauge", "NewGaugeVec": "gauge", "NewGaugeFunc": "gauge",
	"NewHistogram": "histogram", "NewHistogramVec": "histogram",
	"NewSummary": "summary", "NewSummaryVec": "summary",
}

// obsExternal tells whether a catalog entry comes from outside our code (asynq's collector,
// client_golang's Go and process collectors, Prometheus's up).
func obsExternal(name string) bool {
	return name == "up" || strings.HasPrefix(name, "asynq_") || strings.HasPrefix(name, "go_") || strings.HasPrefix(name, "process_")
}

// obsCodeMetrics finds the metrics that files define with prometheus.New*(prometheus.XOpts{Name:
// "..."}, labels): name, type and label names (labels a []string literal, or a variable of the
// same file assigned one).
func obsCodeMetrics(fset *token.FileSet, files []*ast.File) (obsCatalog, []error) {
	out := obsCatalog{}
	var errs []error
	for _, file := range files {
		// []string literals assigned to a name in this file.
		lists := map[string][]*ast.CompositeLit{}
		ast.Inspect(file, func(n ast.Node) bool {
			switch n := n.(type) {
			case *ast.AssignStmt:
				for i, lhs := range n.Lhs {
					if id, ok := lhs.(*ast.Ident); ok && i < len(n.Rhs) {
						if cl, ok := n.Rhs[i].(*ast.CompositeLit); ok {
							lists[id.Name] = append(lists[id.Name], cl)
						}
					}
				}
			case *ast.ValueSpec:
				for i, id := range n.Names {
					if i < len(n.Values) {
						if cl, ok := n.Values[i].(*ast.CompositeLit); ok {
							lists[id.Name] = append(lists[id.Name], cl)
						}
					}
				}
			}
			return true
		})
		strs := func(cl *ast.CompositeLit) ([]string, bool) {
			var out []string
			for _, el := range cl.Elts {
				bl, ok := el.(*ast.BasicLit)
				if !ok || bl.Kind != token.STRING {
					return nil, false
				}
				s, _ := strconv.Unquote(bl.Value)
				out = append(out, s)
			}
			return out, true
		}
		ast.Inspect(file, func(n ast.Node) bool {
			call, ok := n.(*ast.CallExpr)
			if !ok {
				return true
			}
			sel, ok := call.Fun.(*ast.SelectorExpr)
			if !ok {
				return true
			}
			pkg, ok := sel.X.(*ast.Ident)
			typ, known := obsConstructors[sel.Sel.Name]
			if !ok || pkg.Name != "prometheus" || !known || len(call.Args) == 0 {
				return true
			}
			pos := fset.Position(call.Pos())
			fail := func(format string, args ...any) {
				errs = append(errs, fmt.Errorf("%s:%d: "+format, append([]any{filepath.ToSlash(pos.Filename), pos.Line}, args...)...))
			}
			opts, ok := call.Args[0].(*ast.CompositeLit)
			if !ok {
				fail("prometheus.%s: options are not a literal; cannot check the metric", sel.Sel.Name)
				return true
			}
			f := &obsFamily{Type: typ, Labels: map[string][]string{}}
			for _, el := range opts.Elts {
				kv, ok := el.(*ast.KeyValueExpr)
				if !ok {
					continue
				}
				key, _ := kv.Key.(*ast.Ident)
				switch {
				case key == nil:
				case key.Name == "Name":
					bl, ok := kv.Value.(*ast.BasicLit)
					if !ok || bl.Kind != token.STRING {
						fail("prometheus.%s: Name is not a string literal", sel.Sel.Name)
						return true
					}
					f.Name, _ = strconv.Unquote(bl.Value)
				case key.Name == "Namespace" || key.Name == "Subsystem":
					fail("prometheus.%s: %s is not handled by this check; spell the whole Name", sel.Sel.Name, key.Name)
					return true
				}
			}
			if f.Name == "" {
				fail("prometheus.%s: no Name", sel.Sel.Name)
				return true
			}
			if strings.HasSuffix(sel.Sel.Name, "Vec") {
				if len(call.Args) < 2 {
					fail("%s: no label names", f.Name)
					return true
				}
				var names []string
				ok := false
				switch a := call.Args[1].(type) {
				case *ast.CompositeLit:
					names, ok = strs(a)
				case *ast.Ident:
					if cls := lists[a.Name]; len(cls) == 1 {
						names, ok = strs(cls[0])
					}
				}
				if !ok {
					fail("%s: label names are neither a []string literal nor a variable assigned one in this file", f.Name)
					return true
				}
				for _, l := range names {
					f.Labels[l] = nil
				}
			}
			if prev, dup := out[f.Name]; dup && (prev.Type != f.Type || !slices.Equal(slices.Sorted(obsKeys(prev.Labels)), slices.Sorted(obsKeys(f.Labels)))) {
				fail("%s defined twice, differently", f.Name)
			}
			out[f.Name] = f
			return true
		})
	}
	return out, errs
}

func obsKeys(m map[string][]string) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// obsCompareCode compares the catalog with the metrics the code defines.
func obsCompareCode(code, cat obsCatalog) []error {
	var errs []error
	for _, name := range slices.Sorted(func(yield func(string) bool) {
		for n := range code {
			if !yield(n) {
				return
			}
		}
	}) {
		c := code[name]
		f, ok := cat[name]
		if !ok {
			errs = append(errs, fmt.Errorf("the code defines %s (%s), which %s does not list", name, c.Type, obsMetricsFile))
			continue
		}
		if f.Type != c.Type {
			errs = append(errs, fmt.Errorf("%s: a %s in the code, a %s in %s", name, c.Type, f.Type, obsMetricsFile))
		}
		if want, got := slices.Sorted(obsKeys(c.Labels)), slices.Sorted(obsKeys(f.Labels)); !slices.Equal(want, got) {
			errs = append(errs, fmt.Errorf("%s: labels %v in the code, %v in %s", name, want, got, obsMetricsFile))
		}
	}
	for name := range cat {
		if code[name] == nil && !obsExternal(name) {
			errs = append(errs, fmt.Errorf("%s lists %s, which no code defines", obsMetricsFile, name))
		}
	}
	return errs
}

func TestObsExposedMetricsMatchCode(t *testing.T) {
	t.Parallel()
	fset := token.NewFileSet()
	var files []*ast.File
	for _, dir := range []string{"internal", "cmd"} {
		err := filepath.WalkDir(obsPath(dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			f, err := goparser.ParseFile(fset, path, nil, goparser.SkipObjectResolution)
			if err != nil {
				return err
			}
			files = append(files, f)
			return nil
		})
		require.NoError(t, err)
	}
	code, errs := obsCodeMetrics(fset, files)
	obsRequireNoProblems(t, errs)
	require.Contains(t, code, "ml_predictions_total", "the walk found the prediction metrics")
	cat := obsLoadCatalog(t)
	obsRequireNoProblems(t, obsCompareCode(code, cat))

	// Negative cases: a metric added to the code, a label changed, an entry gone from the code.
	parse := func(src string) obsCatalog {
		fset := token.NewFileSet()
		f, err := goparser.ParseFile(fset, "x.go", src, 0)
		require.NoError(t, err)
		c, errs := obsCodeMetrics(fset, []*ast.File{f})
		obsRequireNoProblems(t, errs)
		return c
	}
	added := parse(`package x
var labels = []string{"model_version"}
var a = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ml_drift_total"}, labels)`)
	require.Equal(t, []string{"model_version"}, slices.Sorted(obsKeys(added["ml_drift_total"].Labels)))
	withCode := func(extra obsCatalog) obsCatalog {
		c := obsCatalog{}
		for k, v := range code {
			c[k] = v
		}
		for k, v := range extra {
			c[k] = v
		}
		return c
	}
	obsRequireProblem(t, obsCompareCode(withCode(added), cat), "the code defines ml_drift_total (counter)")
	relabelled := parse(`package x
var a = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ml_cache_requests_total"}, []string{"outcome"})`)
	obsRequireProblem(t, obsCompareCode(withCode(relabelled), cat), "ml_cache_requests_total: labels [outcome] in the code, [result]")
	retyped := parse(`package x
var a = prometheus.NewGauge(prometheus.GaugeOpts{Name: "ml_persist_fallback_total"})`)
	obsRequireProblem(t, obsCompareCode(withCode(retyped), cat), "ml_persist_fallback_total: a gauge in the code, a counter")
	gone := withCode(nil)
	delete(gone, "ml_low_confidence_total")
	obsRequireProblem(t, obsCompareCode(gone, cat), "lists ml_low_confidence_total, which no code defines")
	_, errs = obsCodeMetrics(fset, []*ast.File{func() *ast.File {
		f, err := goparser.ParseFile(fset, "y.go", `package x
var a = prometheus.NewCounter(prometheus.CounterOpts{Namespace: "ml", Name: "x_total"})`, 0)
		require.NoError(t, err)
		return f
	}()})
	obsRequireProblem(t, errs, "Namespace is not handled")
}
