// Package modelreg is the model registry: it loads the artifacts under MODEL_PATH, verifies
// them, registers the versions and their aliases in Postgres, and resolves a version or an
// alias ("latest") to a loaded model.
package modelreg

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"golang.org/x/sync/errgroup"

	"github.com/predq/predq/internal/inference"
	"github.com/predq/predq/internal/postgres"
)

// Latest is the alias that follows the highest registered version unless an operator pins it.
const Latest = "latest"

var versionRE = regexp.MustCompile(`^v(\d+)\.(\d+)\.(\d+)$`)

// snapshot is an immutable view of the loaded models; a reload swaps it whole, so a request
// that resolved a model keeps using it while the registry moves on.
type snapshot struct {
	models   map[string]*inference.Model // by version
	files    map[string]string           // version → artifact file name
	aliases  map[string]string           // alias → version
	failures []LoadFailure
}

// Registry holds the loaded models. It is safe for concurrent use.
type Registry struct {
	dir    string
	pool   *pgxpool.Pool // nil: aliases are computed locally, nothing is registered
	logger *slog.Logger

	mu   sync.Mutex // serialises Load and Promote
	snap atomic.Pointer[snapshot]
}

// New returns an empty registry for the artifacts in dir. pool may be nil (no Postgres).
func New(dir string, pool *pgxpool.Pool, logger *slog.Logger) *Registry {
	r := &Registry{dir: dir, pool: pool, logger: logger}
	r.snap.Store(&snapshot{models: map[string]*inference.Model{}, aliases: map[string]string{}})
	return r
}

// Load reads every *.json artifact of the directory concurrently, verifying each checksum. A
// corrupt or unreadable artifact is logged and recorded as a failure; the others load. The
// loaded versions are then registered in Postgres and the aliases read back. When Postgres
// cannot be reached the aliases are computed locally ("latest" = highest version) and the
// error is returned after the models are in place, so that the caller may go on serving.
func (r *Registry) Load(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	models, files, failures, err := loadDir(ctx, r.dir)
	if err != nil {
		return err
	}
	known := map[string]bool{}
	for _, f := range r.snap.Load().failures {
		known[f.File+f.Error] = true
	}
	for _, f := range failures {
		if !known[f.File+f.Error] { // logged once, not at every refresh
			r.logger.ErrorContext(ctx, "model artifact refused", "file", f.File, "error", f.Error)
		}
	}
	next := &snapshot{models: models, files: files, failures: failures, aliases: localAliases(models)}
	var syncErr error
	if r.pool != nil {
		aliases, err := r.register(ctx, next)
		if err != nil {
			syncErr = fmt.Errorf("model registry: %w", err)
		} else {
			next.aliases = aliases
		}
	}
	prev := r.snap.Swap(next)
	level := slog.LevelDebug
	if fmt.Sprint(prev.aliases, sortedKeys(prev.models), len(prev.failures)) != fmt.Sprint(next.aliases, sortedKeys(models), len(failures)) {
		level = slog.LevelInfo
	}
	r.logger.Log(ctx, level, "models loaded", "versions", sortedKeys(models), "aliases", next.aliases, "failures", len(failures))
	return syncErr
}

func loadDir(ctx context.Context, dir string) (map[string]*inference.Model, map[string]string, []LoadFailure, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, nil, nil, fmt.Errorf("model registry: %w", err)
	}
	if _, err := os.Stat(dir); err != nil {
		return nil, nil, nil, fmt.Errorf("model registry: MODEL_PATH: %w", err)
	}
	sort.Strings(paths)
	loaded := make([]*inference.Model, len(paths))
	errs := make([]error, len(paths))
	g, _ := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, p := range paths {
		g.Go(func() error {
			b, err := os.ReadFile(p)
			if err == nil {
				loaded[i], err = inference.DecodeArtifact(b)
			}
			errs[i] = err
			return nil
		})
	}
	_ = g.Wait()
	models := map[string]*inference.Model{}
	files := map[string]string{}
	var failures []LoadFailure
	for i, p := range paths {
		name := filepath.Base(p)
		switch m := loaded[i]; {
		case errs[i] != nil:
			failures = append(failures, LoadFailure{File: name, Error: errs[i].Error()})
		case !versionRE.MatchString(m.Version):
			failures = append(failures, LoadFailure{File: name, Error: fmt.Sprintf("version %q is not vMAJOR.MINOR.PATCH", m.Version)})
		case models[m.Version] != nil:
			failures = append(failures, LoadFailure{File: name, Error: fmt.Sprintf("version %s already loaded from %s", m.Version, files[m.Version])})
		default:
			models[m.Version] = m
			files[m.Version] = name
		}
	}
	return models, files, failures, nil
}

// register upserts every loaded version, points an unpinned "latest" at the highest
// registered version, and returns the aliases stored in Postgres.
func (r *Registry) register(ctx context.Context, s *snapshot) (map[string]string, error) {
	var aliases map[string]string
	err := postgres.WithTx(ctx, r.pool, func(tx pgx.Tx) error {
		b := &pgx.Batch{}
		for _, v := range sortedKeys(s.models) {
			m := s.models[v]
			b.Queue(`INSERT INTO model_versions (version, kind, input_size, preprocessings, metrics, dataset_sha256, checksum, artifact_file)
				VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
				ON CONFLICT (version) DO UPDATE SET kind = EXCLUDED.kind, input_size = EXCLUDED.input_size,
					preprocessings = EXCLUDED.preprocessings, metrics = EXCLUDED.metrics,
					dataset_sha256 = EXCLUDED.dataset_sha256, checksum = EXCLUDED.checksum,
					artifact_file = EXCLUDED.artifact_file, updated_at = now()
				WHERE model_versions.checksum IS DISTINCT FROM EXCLUDED.checksum`,
				m.Version, m.Kind, m.InputSize, m.Preprocessings(), metricsOf(m), m.DatasetSHA256, m.Checksum, s.files[v])
		}
		if err := tx.SendBatch(ctx, b).Close(); err != nil {
			return fmt.Errorf("upsert versions: %w", err)
		}
		if _, err := tx.Exec(ctx, `
			INSERT INTO model_aliases (alias, version, pinned)
			SELECT 'latest', version, false FROM model_versions
			ORDER BY string_to_array(ltrim(version, 'v'), '.')::int[] DESC LIMIT 1
			ON CONFLICT (alias) DO UPDATE SET version = EXCLUDED.version, updated_at = now()
			WHERE NOT model_aliases.pinned AND model_aliases.version <> EXCLUDED.version`); err != nil {
			return fmt.Errorf("move latest: %w", err)
		}
		var err error
		aliases, err = readAliases(ctx, tx)
		return err
	})
	return aliases, err
}

func readAliases(ctx context.Context, db postgres.DBTX) (map[string]string, error) {
	rows, err := db.Query(ctx, `SELECT alias, version FROM model_aliases`)
	if err != nil {
		return nil, fmt.Errorf("read aliases: %w", err)
	}
	aliases := map[string]string{}
	var alias, version string
	_, err = pgx.ForEachRow(rows, []any{&alias, &version}, func() error {
		aliases[alias] = version
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read aliases: %w", err)
	}
	return aliases, nil
}

func metricsOf(m *inference.Model) map[string]Metrics {
	out := map[string]Metrics{}
	for _, p := range m.Preprocessings() {
		if mt, ok := m.Metrics(p); ok {
			out[p] = Metrics(mt)
		}
	}
	return out
}

// localAliases is "latest" → the highest loaded version.
func localAliases(models map[string]*inference.Model) map[string]string {
	if v := highest(sortedKeys(models)); v != "" {
		return map[string]string{Latest: v}
	}
	return map[string]string{}
}

func highest(versions []string) string {
	best := ""
	for _, v := range versions {
		if best == "" || CompareVersions(v, best) > 0 {
			best = v
		}
	}
	return best
}

// CompareVersions orders vMAJOR.MINOR.PATCH strings numerically (-1, 0, +1).
func CompareVersions(a, b string) int {
	pa, pb := versionParts(a), versionParts(b)
	for i := range pa {
		if pa[i] != pb[i] {
			if pa[i] < pb[i] {
				return -1
			}
			return 1
		}
	}
	return strings.Compare(a, b)
}

func versionParts(v string) [3]int {
	var out [3]int
	m := versionRE.FindStringSubmatch(v)
	if m == nil {
		return out
	}
	for i := range 3 {
		out[i], _ = strconv.Atoi(m[i+1])
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, CompareVersions)
	return keys
}

// Resolve returns the loaded model for a version or an alias. An alias whose target is not
// loaded in this process (its artifact is missing here) is an error wrapping ErrNotFound.
func (r *Registry) Resolve(name string) (*inference.Model, error) {
	s := r.snap.Load()
	version := name
	if !versionRE.MatchString(name) {
		v, ok := s.aliases[name]
		if !ok {
			return nil, fmt.Errorf("%w: alias %q", ErrNotFound, name)
		}
		version = v
	}
	m, ok := s.models[version]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, version)
	}
	return m, nil
}

// Loaded reports how many versions are loaded.
func (r *Registry) Loaded() int { return len(r.snap.Load().models) }

// Failures lists the artifacts that could not be loaded at the last Load.
func (r *Registry) Failures() []LoadFailure { return slices.Clone(r.snap.Load().failures) }

// Versions lists the loaded versions, lowest first.
func (r *Registry) Versions() []string { return sortedKeys(r.snap.Load().models) }

// List describes every loaded version, lowest first.
func (r *Registry) List(ctx context.Context) ([]Info, error) {
	s := r.snap.Load()
	out := make([]Info, 0, len(s.models))
	for _, v := range sortedKeys(s.models) {
		out = append(out, infoOf(s, s.models[v]))
	}
	return out, nil
}

// Get describes one version (or the version an alias points at). It returns an error
// wrapping ErrNotFound for an unknown version.
func (r *Registry) Get(ctx context.Context, version string) (Info, error) {
	m, err := r.Resolve(version)
	if err != nil {
		return Info{}, err
	}
	return infoOf(r.snap.Load(), m), nil
}

func infoOf(s *snapshot, m *inference.Model) Info {
	aliases := []string{}
	for a, v := range s.aliases {
		if v == m.Version {
			aliases = append(aliases, a)
		}
	}
	sort.Strings(aliases)
	return Info{
		Version: m.Version, Kind: m.Kind, InputSize: m.InputSize, Preprocessings: m.Preprocessings(),
		Aliases: aliases, Metrics: metricsOf(m), DatasetSHA256: m.DatasetSHA256, Checksum: m.Checksum,
		Loaded: true,
	}
}

// ErrNoPostgres is returned by operations that need the Postgres registry when the registry
// was built without a pool.
var ErrNoPostgres = errors.New("model registry has no database")
