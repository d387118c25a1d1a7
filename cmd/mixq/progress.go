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
	if !isTerminal(stderr) {
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

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// counter is a progress bar of items (tokens) with their rate and ETA on
// stderr when it is a terminal; on a pipe it prints nothing. Its methods
// are safe on the zero value.
type counter struct{ bar *progressbar.ProgressBar }

func newCounter(stderr io.Writer, total int64, what, unit string) counter {
	if !isTerminal(stderr) || total <= 0 {
		return counter{}
	}
	bar := progressbar.NewOptions64(total,
		progressbar.OptionSetWriter(stderr),
		progressbar.OptionSetDescription(what),
		progressbar.OptionShowCount(),
		progressbar.OptionShowIts(),
		progressbar.OptionSetItsString(unit),
		progressbar.OptionSetPredictTime(true),
		progressbar.OptionShowElapsedTimeOnFinish(),
		progressbar.OptionThrottle(100*time.Millisecond),
		progressbar.OptionFullWidth(),
		progressbar.OptionSetRenderBlankState(true),
		progressbar.OptionOnCompletion(func() { io.WriteString(stderr, "\n") }),
	)
	// Start the rate's clock now: the first update may come seconds later
	// with many items, which would otherwise count as done in no time.
	bar.Add64(0)
	return counter{bar}
}

func (c counter) add(n int) {
	if c.bar != nil {
		c.bar.Add64(int64(n))
	}
}

// stepBar is a counter for a callback progress(done, total) whose total
// is known only from its first call: the bar starts then, and each call
// counts one step.
type stepBar struct {
	counter
	w          io.Writer
	what, unit string
}

func (b *stepBar) step(done, total int) {
	if done == 1 {
		b.counter = newCounter(b.w, int64(total), b.what, b.unit)
	}
	b.add(1)
}

// describe replaces the bar's description (a no-op without a bar).
func (c counter) describe(s string) {
	if c.bar != nil {
		c.bar.Describe(s)
	}
}

// end completes the bar after success, and after a failure leaves it where
// it stopped, ending its line so the error is printed on its own.
func (c counter) end(err error) {
	switch {
	case c.bar == nil:
	case err == nil:
		c.bar.Finish()
	default:
		c.bar.Exit()
	}
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

// end is finish after success; after a failure it leaves the bar where it
// stopped and ends its line.
func (p *tensorProgress) end(err error) {
	if err == nil {
		p.finish()
	} else if p != nil && p.bar != nil {
		p.bar.Exit()
	}
}
