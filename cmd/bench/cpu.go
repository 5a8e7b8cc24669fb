package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// clockTick is the unit of utime and stime in /proc/<pid>/stat (USER_HZ, 100 on Linux).
const clockTick = 10 * time.Millisecond

// procCPU returns the CPU time (user + system) a process has used, 0 when it cannot be read.
func procCPU(pid int) time.Duration {
	if pid <= 0 {
		return 0
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// The command name, field 2, is in parentheses and may hold spaces: count from its end.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64) // field 14
	st, _ := strconv.ParseInt(f[12], 10, 64) // field 15
	return time.Duration(ut+st) * clockTick
}

// machineCPU returns the machine's CPU time from /proc/stat, all cores: busy (user, nice,
// system, irq, softirq, steal) and idle (idle, iowait); zeros when it cannot be read.
func machineCPU() (busy, idle time.Duration) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	return parseCPULine(string(line))
}

// parseCPULine reads the first line of /proc/stat ("cpu" and the machine's times in clock
// ticks): busy (user, nice, system, irq, softirq, steal) and idle (idle, iowait).
func parseCPULine(line string) (busy, idle time.Duration) {
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0
	}
	var v [8]int64
	for i := range v {
		v[i], _ = strconv.ParseInt(f[i+1], 10, 64)
	}
	// user nice system idle iowait irq softirq steal
	return time.Duration(v[0]+v[1]+v[2]+v[5]+v[6]+v[7]) * clockTick, time.Duration(v[3]+v[4]) * clockTick
}

// cmdline returns a process's command line as one string, its arguments separated by
// spaces (a process may also have rewritten it into one string, as Redis and Postgres do).
func cmdline(pid string) string {
	b, err := os.ReadFile(filepath.Join("/proc", pid, "cmdline"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

// findPIDs returns the pids of the processes whose command line starts with prefix and
// contains every one of parts.
func findPIDs(prefix string, parts ...string) []int {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var pids []int
next:
	for _, d := range dirs {
		pid := filepath.Base(d)
		c := cmdline(pid)
		if c == "" || (!strings.HasPrefix(c, prefix) && !strings.HasPrefix(filepath.Base(strings.Fields(c)[0]), prefix)) {
			continue
		}
		for _, p := range parts {
			if !strings.Contains(c, p) {
				continue next
			}
		}
		n, _ := strconv.Atoi(pid)
		pids = append(pids, n)
	}
	return pids
}

// cpuMeter reads the CPU time of named sets of processes; each set is found again at every
// sample (Postgres backends come and go).
type cpuMeter map[string]func() []int

// sample returns every set's CPU time now. A process that ended between two samples drops
// out of its set, so a set's CPU is a lower bound.
func (m cpuMeter) sample() map[string]time.Duration {
	s := make(map[string]time.Duration, len(m))
	for name, pids := range m {
		for _, pid := range pids() {
			s[name] += procCPU(pid)
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
