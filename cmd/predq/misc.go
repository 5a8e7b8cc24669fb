package main

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/predq/predq/internal/client"
)

func (a *app) predictCmd() *cobra.Command {
	var (
		features             string
		model, preprocessing string
		threshold            float64
	)
	cmd := &cobra.Command{
		Use:   "predict [JSON]",
		Short: "Predict one sample",
		Long: `predict sends one sample: its features from --features (comma-separated numbers), a JSON
argument (an array of numbers or a predict body {"features":[…],…}), or stdin (the same JSON,
or with - as the argument).`,
		Example: `  predq predict --features "$(head -1 data/sonar.csv | cut -d, -f1-60)"
  predq predict '[0.02,0.0371,0.0428,...]' --model v1.0.0
  echo '{"features":[...]}' | predq predict --output json`,
		Args: maxArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var req client.PredictRequest
			switch {
			case features != "" && len(args) > 0:
				return usagef("give the features once: --features or a JSON argument")
			case features != "":
				for i, s := range strings.Split(features, ",") {
					f, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
					if err != nil {
						return usagef("--features: value %d (%q) is not a number", i+1, s)
					}
					req.Features = append(req.Features, f)
				}
			default:
				var b []byte
				if len(args) == 1 && args[0] != "-" {
					b = []byte(args[0])
				} else {
					var err error
					if b, err = io.ReadAll(io.LimitReader(a.stdin, 16<<20)); err != nil {
						return fmt.Errorf("read stdin: %w", err)
					}
				}
				if err := parsePredictJSON(b, &req); err != nil {
					return err
				}
			}
			if cmd.Flags().Changed("model") {
				req.ModelVersion = &model
			}
			if cmd.Flags().Changed("preprocessing") {
				req.Preprocessing = &preprocessing
			}
			if cmd.Flags().Changed("threshold") {
				req.ConfidenceThreshold = &threshold
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			p, err := c.Predict(cmd.Context(), req)
			if err != nil {
				return err
			}
			return a.printOne(p, [][2]string{
				{"Prediction", strconv.FormatFloat(p.Prediction, 'g', -1, 64)},
				{"Class", p.PredictionClass},
				{"Confidence", strconv.FormatFloat(p.Confidence, 'g', -1, 64)},
				{"Model", p.ModelVersion},
				{"Cached", strconv.FormatBool(p.Cached)},
				{"Latency", fmt.Sprintf("%.2f ms", p.LatencyMS)},
				{"Request ID", p.RequestID},
			})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&features, "features", "", "the features, comma-separated")
	fl.StringVar(&model, "model", "", "model version or alias")
	fl.StringVar(&preprocessing, "preprocessing", "", "preprocessing (standard, minmax, none)")
	fl.Float64Var(&threshold, "threshold", 0, "confidence threshold in (0, 1]")
	return cmd
}

// parsePredictJSON reads an array of numbers or a predict body.
func parsePredictJSON(b []byte, req *client.PredictRequest) error {
	s := strings.TrimSpace(string(b))
	if s == "" {
		return usagef("no features: give --features, a JSON argument or JSON on stdin")
	}
	if strings.HasPrefix(s, "[") {
		if err := json.Unmarshal([]byte(s), &req.Features); err != nil {
			return usagef("the features are not a JSON array of numbers: %v", err)
		}
		return nil
	}
	if err := json.Unmarshal([]byte(s), req); err != nil {
		return usagef("the sample is not a JSON object {\"features\":[...]}: %v", err)
	}
	return nil
}

func (a *app) modelsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "models",
		Short:   "List, show and promote models",
		Example: "  predq models list\n  predq models promote v1.0.0 --alias latest",
		Args:    exactArgs(0),
	}
	list := &cobra.Command{
		Use:     "list",
		Short:   "List the registered models",
		Example: "  predq models list --output json | jq -r '.[].version'",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			ms, err := c.ListModels(cmd.Context())
			if err != nil {
				return err
			}
			return printList(a, ms, []string{"VERSION", "KIND", "INPUTS", "ALIASES", "PREPROCESSINGS", "LOADED"}, func(m client.Model) []string {
				return []string{m.Version, m.Kind, strconv.Itoa(m.InputSize), strings.Join(m.Aliases, ","), strings.Join(m.Preprocessings, ","), strconv.FormatBool(m.Loaded)}
			})
		},
	}
	get := &cobra.Command{
		Use:     "get VERSION",
		Short:   "Show a model (a version or an alias)",
		Example: "  predq models get latest",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			m, err := c.GetModel(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			rows := [][2]string{{"Version", m.Version}, {"Kind", m.Kind}, {"Inputs", strconv.Itoa(m.InputSize)},
				{"Aliases", strings.Join(m.Aliases, ", ")}, {"Preprocessings", strings.Join(m.Preprocessings, ", ")},
				{"Loaded", strconv.FormatBool(m.Loaded)}, {"Checksum", m.Checksum}}
			keys := make([]string, 0, len(m.Metrics))
			for k := range m.Metrics {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, k := range keys {
				rows = append(rows, [2]string{"Metrics " + k, string(m.Metrics[k])})
			}
			return a.printOne(m, rows)
		},
	}
	var alias string
	promote := &cobra.Command{
		Use:     "promote VERSION",
		Short:   "Point an alias (default latest) at a version, in every server process (admin scope)",
		Example: "  predq models promote v1.0.0\n  predq models promote v2.0.0 --alias canary",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			m, err := c.Promote(cmd.Context(), args[0], alias)
			if err != nil {
				return err
			}
			rows := [][2]string{}
			for k, v := range m {
				rows = append(rows, [2]string{k, fmt.Sprint(v)})
			}
			sort.Slice(rows, func(i, j int) bool { return rows[i][0] < rows[j][0] })
			return a.printOne(m, rows)
		},
	}
	promote.Flags().StringVar(&alias, "alias", "", "the alias to move (default latest)")
	cmd.AddCommand(list, get, promote)
	return cmd
}

func (a *app) predictionsCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:     "predictions",
		Short:   "Read stored predictions",
		Example: "  predq predictions get 7f0c…",
		Args:    exactArgs(0),
	}
	cmd.AddCommand(&cobra.Command{
		Use:     "get ID",
		Short:   "Show a stored prediction by its request id",
		Example: "  predq predictions get \"$(predq predict --features ... -o json | jq -r .request_id)\"",
		Args:    exactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			m, err := c.GetPrediction(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			return a.printOne(m, mapRows(m))
		},
	})
	return cmd
}

// mapRows is a table of a JSON object's members, sorted, long arrays shortened.
func mapRows(m map[string]any) [][2]string {
	rows := make([][2]string, 0, len(m))
	for k, v := range m {
		s := fmt.Sprint(v)
		if b, err := json.Marshal(v); err == nil && (strings.HasPrefix(string(b), "[") || strings.HasPrefix(string(b), "{")) {
			s = string(b)
		}
		if len(s) > 80 {
			s = s[:77] + "..."
		}
		rows = append(rows, [2]string{k, s})
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i][0] < rows[j][0] })
	return rows
}

func (a *app) healthCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "health",
		Short:   "Show whether the server is ready (exit 1 when it is not, 3 when it does not answer)",
		Example: "  predq health && predq jobs submit rows.csv",
		Args:    exactArgs(0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			start := time.Now()
			m, ready, err := c.Health(cmd.Context())
			if err != nil {
				return err
			}
			rows := append([][2]string{{"server", c.BaseURL()}, {"answered in", time.Since(start).Round(time.Millisecond).String()}}, mapRows(m)...)
			if err := a.printOne(m, rows); err != nil {
				return err
			}
			if !ready {
				return fmt.Errorf("%s is not ready", c.BaseURL())
			}
			return nil
		},
	}
}
