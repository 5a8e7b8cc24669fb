package health

import (
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/predq/predq/internal/modelreg"
)

func TestReadiness(t *testing.T) {
	t.Parallel()
	up := func(context.Context) error { return nil }
	down := func(context.Context) error { return errors.New("connection refused") }
	models := func() ([]string, []modelreg.LoadFailure) { return []string{"v1.0.0"}, nil }
	none := func() ([]string, []modelreg.LoadFailure) {
		return nil, []modelreg.LoadFailure{{File: "x.json", Error: "checksum"}}
	}
	partial := func() ([]string, []modelreg.LoadFailure) {
		return []string{"v1.0.0"}, []modelreg.LoadFailure{{File: "x.json", Error: "checksum"}}
	}
	tests := map[string]struct {
		c          Checker
		wantStatus string
		wantReady  bool
	}{
		"all up":           {Checker{Postgres: up, Redis: up, Models: models}, StatusReady, true},
		"redis down":       {Checker{Postgres: up, Redis: down, Models: models}, StatusDegraded, true},
		"postgres down":    {Checker{Postgres: down, Redis: up, Models: models}, StatusDegraded, true},
		"both stores down": {Checker{Postgres: down, Redis: down, Models: models}, StatusUnavailable, false},
		"no model":         {Checker{Postgres: up, Redis: up, Models: none}, StatusUnavailable, false},
		"one artifact bad": {Checker{Postgres: up, Redis: up, Models: partial}, StatusDegraded, true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			rep := tt.c.Ready(context.Background())
			require.Equal(t, tt.wantStatus, rep.Status)
			require.Equal(t, tt.wantReady, rep.Ready)
			require.Len(t, rep.Checks, 3)
		})
	}
}
