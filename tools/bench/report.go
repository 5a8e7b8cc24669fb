package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// machine describes where the bench ran.
type machine struct {
	CPU       string `json:"cpu"`
	NProc     int    `json:"nproc"`
	MemoryGiB string `json:"memory_gib,omitempty"`
	OS        string `json:"os"`
	Go        string `json:"go"`
	Date      string `json:"date"`
}

// describeMachine reads the CPU model from /proc/cpuinfo and the memory from /proc/meminfo.
func describeMachine() machine {
	m := machine{CPU: "unknown", NProc: runtime.NumCPU(), OS: runtime.GOOS + "/" + runtime.GOARCH,
		Go: runtime.Version(), Date: time.Now().UTC().Format(time.RFC3339)}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if name, val, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(name) == "model name" {
				m.CPU = strings.TrimSpace(val)
				break
			}
		}
		f.Close()
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && f[0] == "MemTotal:" {
				if kb, err := strconv.ParseFloat(f[1], 64); err == nil {
					m.MemoryGiB = strconv.FormatFloat(kb/(1<<20), 'f', 1, 64)
				}
			}
		}
	}
	return m
}

// row is one line of the table. Value and Ceiling are in Unit; Ratio is Value/Ceiling.
type row struct {
	Group       string   `json:"group"` // http, inference, queue, job, overload, memory (inference: a line naming its go test -bench)
	Measure     string   `json:"measure"`
	Value       float64  `json:"value"`
	Unit        string   `json:"unit"`
	P50MS       *float64 `json:"p50_ms,omitempty"`
	P99MS       *float64 `json:"p99_ms,omitempty"`
	Note        string   `json:"note,omitempty"`
	Ceiling     *float64 `json:"ceiling,omitempty"`
	CeilingName string   `json:"ceiling_name,omitempty"`
	Ratio       *float64 `json:"ratio,omitempty"`
	Target      string   `json:"target,omitempty"`
	Met         *bool    `json:"met,omitempty"`
}

// report is everything a run measured: the table's rows and the raw measurements.
type report struct {
	Machine machine      `json:"machine"`
	Mode    string       `json:"mode"` // full or smoke
	Pinned  bool         `json:"pinned"`
	Pinning string       `json:"pinning"`
	Command string       `json:"command"`
	Seconds float64      `json:"seconds"`
	Rows    []row        `json:"rows"`
	HTTP    []httpPoint  `json:"http"`
	Queue   *queueResult `json:"queue,omitempty"`
	Job     *jobResult   `json:"job,omitempty"`
	GRPC    *grpcResult  `json:"grpc,omitempty"`
	Memory  *memResult   `json:"memory,omitempty"`
	// Overload is the overload phase (admission control).
	Overload *overloadResult `json:"overload,omitempty"`
	// SmallJob is the 10-row jobs' latency (issue 21).
	SmallJob *smallJobResult `json:"small_job,omitempty"`
	Notes    []string        `json:"notes,omitempty"`
}

func ptr[T any](v T) *T { return &v }

// withCeiling sets the row's ceiling and ratio.
func (r row) withCeiling(name string, c float64) row {
	r.CeilingName, r.Ceiling = name, ptr(c)
	if c > 0 {
		r.Ratio = ptr(r.Value / c)
	}
	return r
}

// atLeast sets the target "ratio ≥ t" (and any extra condition already decided by ok).
func (r row) atLeast(t float64, extra string, ok bool) row {
	r.Target = "≥ " + strconv.FormatFloat(t, 'f', -1, 64) + "×"
	if extra != "" {
		r.Target += ", " + extra
	}
	if r.Ratio != nil {
		r.Met = ptr(*r.Ratio >= t && ok)
	}
	return r
}

// formatValue formats a value with its unit.
func formatValue(v float64, unit string) string {
	switch unit {
	case "ns/row":
		return strconv.FormatFloat(v, 'f', 1, 64) + " ns/row"
	case "MB":
		return strconv.FormatFloat(v, 'f', 1, 64) + " MB"
	case "s":
		return strconv.FormatFloat(v, 'f', 2, 64) + " s"
	case "ms":
		return strconv.FormatFloat(v, 'f', 2, 64) + " ms"
	}
	return itoa(int64(v+0.5)) + " " + unit
}

func formatRatio(r row) string {
	if r.Ratio == nil {
		return ""
	}
	return strconv.FormatFloat(*r.Ratio, 'f', 2, 64) + "×"
}

// writeMarkdown prints the header line and the table.
func writeMarkdown(w io.Writer, rep report) {
	m := rep.Machine
	fmt.Fprintf(w, "Machine: %s, nproc %d", m.CPU, m.NProc)
	if m.MemoryGiB != "" {
		fmt.Fprintf(w, ", %s GiB RAM", m.MemoryGiB)
	}
	fmt.Fprintf(w, ", %s, %s; %s; %s run (`%s`) took %.0f s.\n", m.OS, m.Go, m.Date, rep.Mode, rep.Command, rep.Seconds)
	fmt.Fprintf(w, "Pinning: %s.\n\n", rep.Pinning)
	fmt.Fprintln(w, "| measure | value | ceiling | ratio | target | met |")
	fmt.Fprintln(w, "|---|---|---|---|---|---|")
	for _, r := range rep.Rows {
		if r.Unit == "" { // a measurement made elsewhere: its note says where
			fmt.Fprintf(w, "| %s | %s | | | | |\n", r.Measure, r.Note)
			continue
		}
		val := formatValue(r.Value, r.Unit)
		if r.P50MS != nil && r.P99MS != nil {
			val += fmt.Sprintf(", p50 %.2f ms, p99 %.2f ms", *r.P50MS, *r.P99MS)
		}
		if r.Note != "" {
			val += " (" + r.Note + ")"
		}
		ceil := ""
		if r.Ceiling != nil {
			ceil = formatValue(*r.Ceiling, r.Unit)
			if r.CeilingName != "" {
				ceil += " (" + r.CeilingName + ")"
			}
		}
		met := ""
		if r.Met != nil {
			met = "no"
			if *r.Met {
				met = "yes"
			}
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", r.Measure, val, ceil, formatRatio(r), r.Target, met)
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "\n%s\n", n)
	}
}

// writeJSON prints the report as indented JSON.
func writeJSON(w io.Writer, rep report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}
