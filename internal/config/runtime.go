package config

import (
	"runtime/debug"
)

// Garbage-collector defaults of the api and the worker, applied by TuneGC when the standard
// GOGC and GOMEMLIMIT variables are not set.
const (
	// DefaultGOGC collects when the heap has grown to 5× the live heap rather than Go's 2×:
	// the processes keep little live data, and at GOGC=100 the collector took a large share
	// of the api's CPU per prediction (see the README's Benchmarks).
	DefaultGOGC = 400
	// DefaultMemoryLimit bounds the heap the larger GOGC lets grow: past it the collector
	// runs as often as needed. Set GOMEMLIMIT to the container's limit minus some headroom.
	DefaultMemoryLimit = 256 << 20
)

// TuneGC applies DefaultGOGC and DefaultMemoryLimit where GOGC and GOMEMLIMIT are unset (the
// Go runtime has already applied them when they are set) and returns the values in force,
// for the start-up log line.
func TuneGC(getenv func(string) string) (gogc int, memoryLimit int64) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(DefaultGOGC)
	}
	if getenv("GOMEMLIMIT") == "" {
		debug.SetMemoryLimit(DefaultMemoryLimit)
	}
	gogc = debug.SetGCPercent(-1)
	debug.SetGCPercent(gogc)
	return gogc, debug.SetMemoryLimit(-1)
}
