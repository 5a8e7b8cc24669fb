package config

import (
	"runtime/debug"
	"testing"
)

// Not parallel: the collector's settings are the process's.
func TestTuneGCAppliesDefaultsOnlyWhereUnset(t *testing.T) {
	gogc := debug.SetGCPercent(100)
	limit := debug.SetMemoryLimit(-1)
	t.Cleanup(func() {
		debug.SetGCPercent(gogc)
		debug.SetMemoryLimit(limit)
	})

	g, l := TuneGC(env(nil))
	if g != DefaultGOGC || l != DefaultMemoryLimit {
		t.Errorf("unset: GOGC %d, limit %d; want %d, %d", g, l, DefaultGOGC, DefaultMemoryLimit)
	}

	// Set in the environment: the runtime applied them at start; TuneGC leaves them.
	debug.SetGCPercent(150)
	debug.SetMemoryLimit(1 << 30)
	g, l = TuneGC(env(map[string]string{"GOGC": "150", "GOMEMLIMIT": "1GiB"}))
	if g != 150 || l != 1<<30 {
		t.Errorf("set: GOGC %d, limit %d; want 150, %d", g, l, 1<<30)
	}
}
