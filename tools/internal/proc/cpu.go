package proc

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// ClockTick is the unit of utime and stime in /proc/<pid>/stat (USER_HZ, 100 on Linux).
const ClockTick = 10 * time.Millisecond

// CPU returns the CPU time (user + system) a process has used, 0 when it cannot be read.
func CPU(pid int) time.Duration {
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
	return time.Duration(ut+st) * ClockTick
}

// MachineCPU returns the machine's CPU time from /proc/stat, all cores: busy (user, nice,
// system, irq, softirq, steal) and idle (idle, iowait); zeros when it cannot be read.
func MachineCPU() (busy, idle time.Duration) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	return ParseCPULine(string(line))
}

// ParseCPULine reads the first line of /proc/stat ("cpu" and the machine's times in clock
// ticks): busy (user, nice, system, irq, softirq, steal) and idle (idle, iowait).
func ParseCPULine(line string) (busy, idle time.Duration) {
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0, 0
	}
	var v [8]int64
	for i := range v {
		v[i], _ = strconv.ParseInt(f[i+1], 10, 64)
	}
	// user nice system idle iowait irq softirq steal
	return time.Duration(v[0]+v[1]+v[2]+v[5]+v[6]+v[7]) * ClockTick, time.Duration(v[3]+v[4]) * ClockTick
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

// FindPIDs returns the pids of the processes whose command line starts with prefix and
// contains every one of parts.
func FindPIDs(prefix string, parts ...string) []int {
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
