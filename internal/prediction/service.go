package prediction

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"

	"github.com/predq/predq/internal/inference"
	"github.com/predq/predq/internal/validate"
)

// Models resolves a version or alias to a loaded model. The registry implements it.
type Models interface {
	Resolve(name string) (*inference.Model, error)
}

// Recorder takes the records of answered predictions for persistence (and alerts). A
// prediction is answered only after Record returned nil for it, so that no answered
// prediction is lost; an error wrapping ErrUnavailable makes the request a 503. Which
// predictions are recorded is the Service's choice (see ServiceConfig.PersistCacheHits).
type Recorder interface {
	Record(ctx context.Context, recs []Record) error
}

// ErrUnavailable: the prediction could be computed but could not be recorded anywhere.
var ErrUnavailable = errors.New("prediction store unavailable")

// Record is one answered prediction as persisted.
type Record struct {
	RequestID           string    `json:"request_id"`
	UserID              string    `json:"user_id,omitempty"`
	Features            []float64 `json:"features"`
	Prediction          float64   `json:"prediction"`
	Confidence          float64   `json:"confidence"`
	PredictionClass     string    `json:"prediction_class"`
	ModelVersion        string    `json:"model_version"`
	Preprocessing       string    `json:"preprocessing"`
	ConfidenceThreshold float64   `json:"confidence_threshold"`
	Cached              bool      `json:"cached"`
	LatencyMS           float64   `json:"latency_ms"`
	CreatedAt           time.Time `json:"created_at"`
}

// LowConfidence reports whether the record is below its threshold.
func (r Record) LowConfidence() bool { return r.Confidence < r.ConfidenceThreshold }

// Service answers predictions: validation, cache, inline inference, recording.
type Service struct {
	models   Models
	cache    *Cache // nil: no cache
	recorder Recorder
	allHits  bool // record every cache hit, not only the low-confidence ones
	metrics  *Metrics
	tracer   trace.Tracer
	logger   *slog.Logger
	now      func() time.Time
}

// ServiceConfig holds the Service's collaborators; only Models is required.
type ServiceConfig struct {
	Models   Models
	Cache    *Cache
	Recorder Recorder
	// PersistCacheHits records the predictions answered from the cache too. Without it a
	// cache hit is recorded only when it is below its confidence threshold (its alert then
	// refers to a stored prediction): the cached answer is a stored prediction's, computed
	// for the same features, version and preprocessing (DESIGN section 2: hit → answer).
	// Recording every hit costs as much as a miss's persistence: at 64 connections it halved
	// the hits' throughput (README, Benchmarks).
	PersistCacheHits bool
	Registerer       prometheus.Registerer
	Tracer           trace.Tracer
	Logger           *slog.Logger
}

// NewService builds a Service.
func NewService(cfg ServiceConfig) (*Service, error) {
	if cfg.Models == nil {
		return nil, errors.New("prediction: Models is required")
	}
	s := &Service{
		models:   cfg.Models,
		cache:    cfg.Cache,
		recorder: cfg.Recorder,
		allHits:  cfg.PersistCacheHits,
		metrics:  NewMetrics(cfg.Registerer),
		tracer:   cfg.Tracer,
		logger:   cfg.Logger,
		now:      time.Now,
	}
	if s.tracer == nil {
		s.tracer = noop.NewTracerProvider().Tracer("prediction")
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

// resolved is a validated input with its model.
type resolved struct {
	in    Input
	model *inference.Model
	key   string
}

// prepare resolves the model of a checked input (Input.Check) and applies the rules that
// depend on it (input size, preprocessing supported by the version).
func (s *Service) prepare(in Input) (resolved, *validate.Error, error) {
	m, err := s.models.Resolve(in.ModelVersion)
	if err != nil {
		return resolved{}, nil, fmt.Errorf("%w: %q", ErrModelNotFound, in.ModelVersion)
	}
	v := &validate.Error{}
	if len(in.Features) != m.InputSize {
		v.Add("features", "model %s takes %d features, got %d", m.Version, m.InputSize, len(in.Features))
	}
	if !m.Supports(in.Preprocessing) {
		v.Add("preprocessing", "model %s supports %v, not %q", m.Version, m.Preprocessings(), in.Preprocessing)
	}
	if v.Len() > 0 {
		return resolved{}, v, nil
	}
	return resolved{in: in, model: m, key: CacheKey(m, in.Preprocessing, in.Features)}, nil, nil
}

// Predict answers one prediction. Errors: *validate.Error (a rule is broken),
// ErrModelNotFound, ErrUnavailable (it could not be recorded).
func (s *Service) Predict(ctx context.Context, in Input, meta Meta) (Output, error) {
	start := time.Now()
	if err := in.Check(); err != nil {
		return Output{}, err
	}
	r, verr, err := s.prepare(in)
	if err != nil {
		return Output{}, err
	}
	if verr != nil {
		return Output{}, verr
	}
	p, cached, cacheWritten, err := s.lookupOrInfer(ctx, []resolved{r})
	if err != nil {
		return Output{}, err
	}
	outs, err := s.finish(ctx, []resolved{r}, p, cached, meta, start, false)
	cacheWritten()
	if err != nil {
		return Output{}, err
	}
	return outs[0], nil
}

// PredictBatch answers up to the configured batch size of inputs, results in input order.
// Inputs that share a model and preprocessing go through one matrix operation; the cache is
// read with one MGET and written with one pipeline. Each sample gets the request id
// meta.RequestID + "-" + its index. Field errors name samples[i].
func (s *Service) PredictBatch(ctx context.Context, ins []Input, parallel bool, meta Meta) ([]Output, error) {
	start := time.Now()
	ins = slices.Clone(ins) // Check normalizes in place
	if err := CheckBatch(ins); err != nil {
		return nil, err
	}
	rs := make([]resolved, len(ins))
	all := &validate.Error{}
	for i, in := range ins {
		r, verr, err := s.prepare(in)
		if err != nil {
			return nil, err
		}
		all.Merge("samples["+strconv.Itoa(i)+"].", verr)
		rs[i] = r
	}
	if all.Len() > 0 {
		return nil, all
	}
	p, cached, cacheWritten, err := s.lookupOrInfer(ctx, rs)
	if err != nil {
		return nil, err
	}
	defer cacheWritten()
	return s.finish(ctx, rs, p, cached, meta, start, true)
}

// lookupOrInfer reads the cache for every input, infers the misses grouped by model and
// preprocessing, and starts writing them back: cacheWritten waits for that write, so that the
// caller records the prediction meanwhile and still answers only once the cache holds it.
func (s *Service) lookupOrInfer(ctx context.Context, rs []resolved) (probs []float64, cached []bool, cacheWritten func(), err error) {
	probs = make([]float64, len(rs))
	cached = make([]bool, len(rs))
	keys := make([]string, len(rs))
	for i, r := range rs {
		keys[i] = r.key
	}
	if s.cache != nil {
		hits := s.cache.GetMany(ctx, keys)
		for i, h := range hits {
			if h.OK {
				probs[i], cached[i] = h.Value, true
			}
		}
	}
	type group struct {
		model *inference.Model
		prep  string
		idx   []int
	}
	var order []*group
	if len(rs) == 1 {
		// One input (POST /predict): no grouping to do.
		if !cached[0] {
			order = []*group{{model: rs[0].model, prep: rs[0].in.Preprocessing, idx: []int{0}}}
		}
	} else {
		groups := map[string]*group{}
		for i, r := range rs {
			if cached[i] {
				continue
			}
			gk := r.model.Version + "\x00" + r.in.Preprocessing
			g, ok := groups[gk]
			if !ok {
				g = &group{model: r.model, prep: r.in.Preprocessing}
				groups[gk] = g
				order = append(order, g)
			}
			g.idx = append(g.idx, i)
		}
	}
	var missKeys []string
	var missVals []float64
	for _, g := range order {
		// A span per inference when the request's span records (sampled), none otherwise:
		// a span that nobody records would cost CPU for nothing.
		var span trace.Span
		if trace.SpanFromContext(ctx).IsRecording() {
			_, span = s.tracer.Start(ctx, "inference", trace.WithAttributes(
				attribute.String("model.version", g.model.Version), attribute.String("model.preprocessing", g.prep),
				attribute.Int("batch.size", len(g.idx))))
		}
		var err error
		if len(g.idx) == 1 {
			i := g.idx[0]
			probs[i], err = g.model.PredictOne(rs[i].in.Features, g.prep)
		} else {
			rows := make([][]float64, len(g.idx))
			for j, i := range g.idx {
				rows[j] = rs[i].in.Features
			}
			out := make([]float64, len(rows))
			err = g.model.PredictBatch(rows, g.prep, out)
			for j, i := range g.idx {
				probs[i] = out[j]
			}
		}
		if span != nil {
			span.End()
		}
		if err != nil {
			// Validation ran before: an error here is a defect, not the client's input.
			return nil, nil, nil, fmt.Errorf("inference %s/%s: %w", g.model.Version, g.prep, err)
		}
		for _, i := range g.idx {
			missKeys = append(missKeys, keys[i])
			missVals = append(missVals, probs[i])
		}
	}
	cacheWritten = func() {}
	if s.cache != nil {
		cacheWritten = s.cache.startSet(ctx, missKeys, missVals)
	}
	return probs, cached, cacheWritten, nil
}

// finish builds the outputs, records them and counts them.
func (s *Service) finish(ctx context.Context, rs []resolved, probs []float64, cached []bool, meta Meta, start time.Time, batch bool) ([]Output, error) {
	now := s.now().UTC()
	latency := float64(time.Since(start).Microseconds()) / 1000
	outs := make([]Output, len(rs))
	recs := make([]Record, 0, len(rs))
	for i, r := range rs {
		p := probs[i]
		conf := max(p, 1-p)
		class := ClassNegative
		if p > 0.5 {
			class = ClassPositive
		}
		id := meta.RequestID
		if batch {
			id = meta.RequestID + "-" + strconv.Itoa(i)
		}
		outs[i] = Output{
			Prediction: p, Confidence: conf, ModelVersion: r.model.Version, LatencyMS: latency,
			Timestamp: now, PredictionClass: class, Cached: cached[i], RequestID: id,
		}
		rec := Record{
			RequestID: id, UserID: meta.UserID, Features: r.in.Features, Prediction: p, Confidence: conf,
			PredictionClass: class, ModelVersion: r.model.Version, Preprocessing: r.in.Preprocessing,
			ConfidenceThreshold: r.in.ConfidenceThreshold, Cached: cached[i], LatencyMS: latency, CreatedAt: now,
		}
		if rec.Cached && !s.allHits && !rec.LowConfidence() {
			continue // answered from the cache: the prediction it repeats is stored
		}
		recs = append(recs, rec)
	}
	if s.recorder != nil && len(recs) > 0 {
		if err := s.recorder.Record(ctx, recs); err != nil {
			for _, r := range rs {
				s.metrics.predictions.WithLabelValues(r.model.Version, "error", protocolOf(meta.Protocol)).Inc()
			}
			return nil, err
		}
	}
	for i, o := range outs {
		s.metrics.observe(o, meta.Protocol, rs[i].in.ConfidenceThreshold, time.Since(start))
	}
	return outs, nil
}
