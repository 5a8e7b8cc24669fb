package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/predq/predq/tools/internal/proc"
)

// cpuMeter reads the CPU time of named sets of processes; each set is found again at every
// sample (Postgres backends come and go).
type cpuMeter map[string]func() []int

// sample returns every set's CPU time now. A process that ended between two samples drops
// out of its set, so a set's CPU is a lower bound.
func (m cpuMeter) sample() map[string]time.Duration {
	s := make(map[string]time.Duration, len(m))
	for name, pids := range m {
		for _, pid := range pids() {
			s[name] += proc.CPU(pid)
		}
	}
	return s
}

// pids returns a set of one fixed process.
func pids(pid int) func() []int { return func() []int { return []int{pid} } }

// perRequestUS returns, for each process, the CPU microseconds it spent per request between
// two samples.
func perRequestUS(before, after map[string]time.Duration, requests int64) map[string]float64 {
	out := map[string]float64{}
	if requests <= 0 {
		return out
	}
	for name, a := range after {
		out[name] = float64(max(a-before[name], 0).Microseconds()) / float64(requests)
	}
	return out
}

// cpuSeconds returns the CPU seconds each process spent between two samples.
func cpuSeconds(before, after map[string]time.Duration) map[string]float64 {
	out := map[string]float64{}
	for name, a := range after {
		out[name] = max(a-before[name], 0).Seconds()
	}
	return out
}

// formatCPU formats the CPU seconds of the processes of the bench, in a fixed order.
func formatCPU(s map[string]float64) string {
	var parts []string
	for _, name := range []string{"api", "worker", "redis", "postgres"} {
		parts = append(parts, fmt.Sprintf("%s %.1f", name, s[name]))
	}
	return strings.Join(parts, ", ")
}
