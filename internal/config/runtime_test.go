package config

import (
	"os"
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

	raw, _ := os.ReadFile(cgroupMemoryMax)
	wantLimit := memoryLimitFor(string(raw)) // DefaultMemoryLimit outside a limited container
	g, l := TuneGC(env(nil))
	if g != DefaultGOGC || l != wantLimit {
		t.Errorf("unset: GOGC %d, limit %d; want %d, %d", g, l, DefaultGOGC, wantLimit)
	}

	// Set in the environment: the runtime applied them at start; TuneGC leaves them.
	debug.SetGCPercent(150)
	debug.SetMemoryLimit(1 << 30)
	g, l = TuneGC(env(map[string]string{"GOGC": "150", "GOMEMLIMIT": "1GiB"}))
	if g != 150 || l != 1<<30 {
		t.Errorf("set: GOGC %d, limit %d; want 150, %d", g, l, 1<<30)
	}
}

func TestMemoryLimitFollowsTheContainer(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]int64{
		"":             DefaultMemoryLimit,
		"max\n":        DefaultMemoryLimit,
		"536870912\n":  384 << 20,
		"garbage":      DefaultMemoryLimit,
		"1073741824\n": 768 << 20,
	} {
		if got := memoryLimitFor(in); got != want {
			t.Errorf("memory.max %q: limit %d, want %d", in, got, want)
		}
	}
}
