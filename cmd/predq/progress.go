package main

import (
	"fmt"
	"io"
	"time"

	"github.com/schollz/progressbar/v3"

	"github.com/predq/predq/internal/client"
)

// jobProgress shows a job's progress: a bar on a terminal, else a line per 10%.
type jobProgress struct {
	w       io.Writer
	bar     *progressbar.ProgressBar
	id      string
	total   int
	tenths  int // the last 10% step printed without a terminal
	started time.Time
	startN  int
	ended   bool
}

func newJobProgress(w io.Writer, tty bool, j client.Job) *jobProgress {
	p := &jobProgress{w: w, id: j.ID, total: j.Total, tenths: -1, started: time.Now(), startN: j.Done()}
	if tty {
		p.bar = progressbar.NewOptions(max(j.Total, 1),
			progressbar.OptionSetWriter(w),
			progressbar.OptionSetDescription(describe(j)),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("rows"),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionFullWidth(),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionSetRenderBlankState(true),
			progressbar.OptionOnCompletion(func() { fmt.Fprintln(w) }),
		)
	}
	p.update(j)
	return p
}

func describe(j client.Job) string {
	d := "job " + shortID(j.ID) + " " + j.Status
	if j.Failed > 0 {
		d += fmt.Sprintf(" (%d failed)", j.Failed)
	}
	return d
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// update shows j's counts.
func (p *jobProgress) update(j client.Job) {
	done := j.Done()
	if p.bar != nil {
		p.bar.Describe(describe(j))
		if j.Total > 0 && done < j.Total {
			_ = p.bar.Set(done)
		}
		return
	}
	if j.Total <= 0 {
		return
	}
	t := done * 10 / j.Total
	if t == p.tenths || done >= j.Total {
		return
	}
	p.tenths = t
	fmt.Fprintf(p.w, "job %s %s: %d%% (%d/%d rows, %d failed%s)\n", j.ID, j.Status, t*10, done, j.Total, j.Failed, p.rate(done))
}

func (p *jobProgress) rate(done int) string {
	el := time.Since(p.started).Seconds()
	if el < 0.5 || done <= p.startN {
		return ""
	}
	r := float64(done-p.startN) / el
	s := fmt.Sprintf(", %.0f rows/s", r)
	if left := p.total - done; left > 0 && r > 0 {
		s += ", ETA " + (time.Duration(float64(left)/r) * time.Second).Round(time.Second).String()
	}
	return s
}

// finish shows the terminal job.
func (p *jobProgress) finish(j client.Job) {
	if p.ended {
		return
	}
	p.ended = true
	if p.bar != nil {
		p.bar.Describe(describe(j))
		if j.Status == client.StatusSucceeded {
			_ = p.bar.Set(max(j.Total, 1)) // completes, printing the newline
		} else {
			_ = p.bar.Exit()
			fmt.Fprintln(p.w)
		}
	}
	fmt.Fprintf(p.w, "job %s %s: %d rows, %d processed, %d failed, %d low confidence\n",
		j.ID, j.Status, j.Total, j.Processed, j.Failed, j.LowConfidence)
}

// pause takes the bar off the line (before a prompt).
func (p *jobProgress) pause() {
	if p.bar != nil && !p.ended {
		p.ended = true
		_ = p.bar.Exit()
		fmt.Fprintln(p.w)
	}
}

// uploadBar is the upload's byte bar on a terminal (size -1: unknown, a spinner).
func uploadBar(w io.Writer, size int64) *progressbar.ProgressBar {
	return progressbar.NewOptions64(size,
		progressbar.OptionSetWriter(w),
		progressbar.OptionSetDescription("upload"),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionFullWidth(),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionSetRenderBlankState(true),
		progressbar.OptionClearOnFinish(),
	)
}
