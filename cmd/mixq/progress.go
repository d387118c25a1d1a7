package main

import (
	"io"
	"os"
	"strconv"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// newProgress returns a byte progress bar on stderr when stderr is a
// terminal, and nil (no output at all) when it is piped or redirected.
func newProgress(stderr io.Writer, total int64, what string) *progressbar.ProgressBar {
	f, ok := stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(stderr),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowBytes(true),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionShowElapsedTimeOnFinish(),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionFullWidth(),
		progressbar.OptionOnCompletion(func() { io.WriteString(stderr, "\n") }),
	)
}

// tensorProgress adapts a bar to the pipeline's callback, showing the
// tensor count in the description.
type tensorProgress struct {
	bar     *progressbar.ProgressBar
	label   string
	total   int
	done    int
	current string
}

func (p *tensorProgress) add(tensor string, delta int64) {
	if p == nil || p.bar == nil {
		return
	}
	if tensor != p.current {
		p.current = tensor
		p.done++
		p.bar.Describe(p.label + " " + strconv.Itoa(p.done) + "/" + strconv.Itoa(p.total) + " tensors")
	}
	p.bar.Add64(delta)
}

func (p *tensorProgress) finish() {
	if p != nil && p.bar != nil {
		p.bar.Finish()
	}
}
