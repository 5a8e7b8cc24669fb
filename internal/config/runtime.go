package config

import (
	"os"
	"runtime/debug"
	"strconv"
	"strings"
)

// Garbage-collector defaults of the api and the worker, applied by TuneGC when the standard
// GOGC and GOMEMLIMIT variables are not set.
const (
	// DefaultGOGC collects when the heap has grown to 5× the live heap rather than Go's 2×:
	// the processes keep little live data, and at GOGC=100 the collector took a large share
	// of the api's CPU per prediction (see the README's Benchmarks).
	DefaultGOGC = 400
	// DefaultMemoryLimit bounds the heap the larger GOGC lets grow, outside a container with
	// a memory limit: past it the collector runs as often as needed, so that a burst of
	// requests leaves the process's RSS within about 150 MB.
	DefaultMemoryLimit = 100 << 20
	// cgroupShare is the part of a container's memory limit given to the Go heap; the rest
	// is for stacks, the runtime and what the collector has not returned yet.
	cgroupShare = 0.75
)

// cgroupMemoryMax is the cgroup v2 memory limit of the process's container.
const cgroupMemoryMax = "/sys/fs/cgroup/memory.max"

// TuneGC applies DefaultGOGC and a memory limit where GOGC and GOMEMLIMIT are unset (the Go
// runtime has already applied them when they are set) and returns the values in force, for
// the start-up log line. The limit is three quarters of the container's memory limit
// (cgroup v2 memory.max) when there is one, else DefaultMemoryLimit.
func TuneGC(getenv func(string) string) (gogc int, memoryLimit int64) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(DefaultGOGC)
	}
	if getenv("GOMEMLIMIT") == "" {
		raw, _ := os.ReadFile(cgroupMemoryMax) // absent outside a cgroup v2 container
		debug.SetMemoryLimit(memoryLimitFor(string(raw)))
	}
	gogc = debug.SetGCPercent(-1)
	debug.SetGCPercent(gogc)
	return gogc, debug.SetMemoryLimit(-1)
}

// memoryLimitFor returns the heap limit for a cgroup memory.max content: cgroupShare of a
// byte count, DefaultMemoryLimit for "max", an empty file or anything else.
func memoryLimitFor(memoryMax string) int64 {
	n, err := strconv.ParseInt(strings.TrimSpace(memoryMax), 10, 64)
	if err != nil || n <= 0 {
		return DefaultMemoryLimit
	}
	return int64(float64(n) * cgroupShare)
}
