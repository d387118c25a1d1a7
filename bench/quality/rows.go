package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mixq/mixq/checkpoint"
	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/eval"
	"github.com/mixq/mixq/importance"
	"github.com/mixq/mixq/model"
)

// spec is one row: its name in the table and the flags after `mixq
// quantize IN -o OUT --backend cpu`.
type spec struct {
	id, name string
	kind     string // uniform, static, dynamic, budget, preset, llama
	flags    []string
	// calib adds the model's calibration flags.
	calib bool
	// A budget row at a size fixed by another row (sizeOf, a row id) or by
	// llama.cpp (bytes): its --target-bpw is computed when it runs.
	sizeOf string
	bytes  int64
	llama  *llamaVariant
}

// rowSpecs is the table of rows, in the order they run and are printed.
// A row that needs a CLI feature this build lacks fails and is reported
// as such; the rest still run.
func rowSpecs(presets []preset, llama []llamaVariant) []spec {
	int4 := func(round string, g int) spec {
		s := spec{
			id: fmt.Sprintf("int4-%s-g%d", round, g), kind: "uniform",
			name:  fmt.Sprintf("uniform INT4 g%d, %s", g, roundingName[round]),
			flags: []string{"--rule", ".=int4", "--group-size", fmt.Sprint(g), "--rounding", round},
		}
		s.calib = round == "gptq"
		return s
	}
	specs := []spec{
		{id: "int8", kind: "uniform", name: "uniform INT8 g128, " + roundingName["rtn"],
			flags: []string{"--rule", ".=int8", "--group-size", "128", "--rounding", "rtn"}},
		int4("rtn", 128), int4("rtn", 32),
		int4("search", 128), int4("search", 32),
		int4("gptq", 128), int4("gptq", 32),
		{id: "static", kind: "static", name: "static (built-in rules), " + roundingName["rtn"],
			flags: []string{"--policy", "static", "--rounding", "rtn"}},
		{id: "static-gptq", kind: "static", name: "static (built-in rules), GPTQ", calib: true,
			flags: []string{"--policy", "static", "--rounding", "gptq"}},
		{id: "dynamic", kind: "dynamic", name: "dynamic (importance ranks, 20/40/40)", calib: true,
			flags: []string{"--policy", "dynamic"}},
		{id: "budget-6x", kind: "budget", name: "budget at 6×", calib: true,
			flags: []string{"--policy", "budget", "--target-ratio", "6"}},
		{id: "budget-4.5bpw", kind: "budget", name: "budget at 4.5 bits per weight", calib: true,
			flags: []string{"--policy", "budget", "--target-bpw", "4.5"}},
		{id: "budget-at-int8", kind: "budget", name: "budget at the uniform INT8 size", calib: true, sizeOf: "int8"},
		{id: "budget-at-dynamic", kind: "budget", name: "budget at the dynamic size", calib: true, sizeOf: "dynamic"},
	}
	for _, p := range presets {
		specs = append(specs, spec{id: "preset-" + p.name, kind: "preset", name: "preset " + p.name, calib: true,
			flags: []string{"--preset", p.name}})
	}
	for i := range llama {
		v := &llama[i]
		if v.baseline() || v.size() <= 0 {
			continue
		}
		specs = append(specs, spec{id: "llama-" + slug(v.Variant), kind: "llama", calib: true, llama: v, bytes: v.size(),
			name: fmt.Sprintf("budget at llama.cpp %s's size", v.Variant)})
	}
	return specs
}

var roundingName = map[string]string{"rtn": "round to nearest", "search": "scale search", "gptq": "GPTQ"}

func slug(s string) string {
	return strings.Trim(regexp.MustCompile(`[^a-z0-9.]+`).ReplaceAllString(strings.ToLower(s), "-"), "-")
}

// preset is a --preset name and what `mixq quantize --help` says it is.
type preset struct{ name, summary string }

// parsePresets reads the preset names from `mixq quantize --help`: the
// lines "NAME: SUMMARY" of the --preset flag's help. None when the build
// has no --preset.
func parsePresets(help string) []preset {
	var out []preset
	in := false
	item := regexp.MustCompile(`^\s+([A-Za-z0-9][A-Za-z0-9._-]*): (.*)$`)
	for _, l := range strings.Split(help, "\n") {
		t := strings.TrimSpace(l)
		if strings.HasPrefix(t, "-") {
			in = strings.HasPrefix(t, "--preset ")
			continue
		}
		if m := item.FindStringSubmatch(l); in && m != nil {
			out = append(out, preset{m[1], strings.TrimSpace(m[2])})
		}
	}
	return out
}

// bpwTarget is the byte target quantize --target-bpw b aims at.
func bpwTarget(ck *checkpoint.Checkpoint, b float64) (int64, error) {
	return importance.BPWTarget(ck, b)
}

// bpwFlag is the --target-bpw value, written with four decimals, whose
// byte target (target(b), importance.BPWTarget: floor(b·P/8)) is as close
// to limit bytes as four decimals allow without passing it.
func bpwFlag(params, limit int64, target func(float64) (int64, error)) (string, int64, error) {
	if params <= 0 || limit <= 0 {
		return "", 0, fmt.Errorf("no size to aim at (%d parameters, %d bytes)", params, limit)
	}
	b := math.Floor(8*float64(limit)/float64(params)*1e4) / 1e4
	for range 3 {
		s := strconv.FormatFloat(b, 'f', 4, 64)
		v, _ := strconv.ParseFloat(s, 64)
		if v >= 32 {
			return "", 0, fmt.Errorf("%d bytes is not smaller than F32 (%.4f bits per weight)", limit, v)
		}
		t, err := target(v)
		if err != nil {
			return "", 0, err
		}
		if t <= limit {
			return s, t, nil
		}
		b -= 1e-4 // the decimal printed rounded up past the limit
	}
	return "", 0, fmt.Errorf("no --target-bpw with four decimals stays within %d bytes", limit)
}

// row is one measured row.
type row struct {
	spec
	// command is the full command line, as a user types it.
	command string
	bytes   int64 // the model's own files: written bytes less the carried ones
	ratio   float64
	mix     string // share of the parameters per precision
	res     *eval.Result
	same    string // an earlier row with byte-identical weights, whose scores these are
	fail    string // why the row was not measured
	f32     bool
	qsecs   float64
	// limit and target: a size-matched budget's size to match and the
	// byte target its --target-bpw gives.
	limit, target int64
}

func (r *row) ok() bool { return r.fail == "" && r.res != nil }

// modelResult is a model's section of the report.
type modelResult struct {
	m     *modelRun
	rows  []row
	llama []llamaVariant
}

func (mr *modelResult) find(id string) *row {
	for i := range mr.rows {
		if mr.rows[i].id == id && mr.rows[i].ok() {
			return &mr.rows[i]
		}
	}
	return nil
}

// measure runs every row of specs (those matching only, when not nil).
// Quantizing runs up to jobs commands at a time (mixq's GPTQ and
// analysis leave a core idle much of the time); the rows are evaluated one
// at a time, in order, as their outputs are ready.
func measure(ctx context.Context, m *modelRun, specs []spec, only *regexp.Regexp, work string, jobs int) (*modelResult, error) {
	mr := &modelResult{m: m}
	mr.rows = append(mr.rows, row{spec: spec{id: "f32", name: "F32 (reference)"}, bytes: m.f32Bytes, ratio: 1, res: m.ref.res, f32: true})
	var todo []*job
	byID := map[string]*job{}
	for _, s := range specs {
		if only == nil || only.MatchString(s.id) {
			j := &job{row: row{spec: s}, done: make(chan struct{})}
			j.prefix = fmt.Sprintf("[%s %d/%%d] %s", m.key, len(todo)+1, s.name)
			todo = append(todo, j)
			byID[s.id] = j
		}
	}
	for _, j := range todo {
		j.prefix = fmt.Sprintf(j.prefix, len(todo))
	}
	var workers sync.WaitGroup
	defer func() {
		workers.Wait() // an interrupted mixq has stopped and cleaned up
		for _, j := range todo {
			if j.out != "" {
				os.RemoveAll(j.out)
				os.RemoveAll(j.out + ".report")
			}
		}
	}()
	next := make(chan *job)
	go func() {
		defer close(next)
		for _, j := range todo {
			select {
			case next <- j:
			case <-ctx.Done():
				return
			}
		}
	}()
	for range max(1, jobs) {
		workers.Add(1)
		go func() {
			defer workers.Done()
			for j := range next {
				j.quantize(ctx, m, byID, work)
				close(j.done)
			}
		}()
	}
	hashes := map[string]*row{}
	for _, j := range todo {
		select {
		case <-j.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		j.evaluate(ctx, m, hashes)
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		mr.rows = append(mr.rows, j.row)
	}
	return mr, nil
}

// job is a row on its way through the two stages.
type job struct {
	row
	prefix string
	out    string // the output directory, once quantized
	sum    string // weightsHash of it
	done   chan struct{}
}

// quantizeJSON is the part of `mixq quantize --json` read here.
type quantizeJSON struct {
	WrittenBytes int64 `json:"written_bytes"`
	Estimate     struct {
		CarriedBytes int64 `json:"carried_bytes"`
		ByPrecision  []struct {
			Name       string `json:"name"`
			Parameters int64  `json:"parameters"`
		} `json:"by_precision"`
	} `json:"estimate"`
}

// quantize runs the row's mixq quantize command; a row sized after
// another waits for that one's output.
func (j *job) quantize(ctx context.Context, m *modelRun, byID map[string]*job, work string) {
	r := &j.row
	flags := slices.Clone(r.flags)
	limit := r.spec.bytes
	if r.sizeOf != "" {
		dep, ok := byID[r.sizeOf]
		if ok {
			select {
			case <-dep.done:
			case <-ctx.Done():
				return
			}
		}
		if !ok || dep.fail != "" || dep.row.bytes <= 0 {
			r.fail = fmt.Sprintf("row %s was not measured", r.sizeOf)
		} else {
			limit = dep.row.bytes
		}
	}
	if r.fail == "" && limit > 0 {
		v, target, err := bpwFlag(m.params, limit, m.bpw)
		if err != nil {
			r.fail = err.Error()
		} else {
			flags = []string{"--policy", "budget", "--target-bpw", v}
			r.target, r.limit = target, limit
		}
	}
	shown := append([]string{"mixq", "quantize", m.shown, "-o", "OUT", "--backend", "cpu"}, flags...)
	out := filepath.Join(work, m.key+"-"+r.id)
	args := append([]string{"quantize", m.dir, "-o", out, "--backend", "cpu", "--json"}, flags...)
	if r.calib {
		shown = append(shown, m.calibShown...)
		args = append(args, m.calib...)
	}
	r.command = shellJoin(shown)
	if r.fail != "" {
		log.Printf("%s: not run: %s", j.prefix, r.fail)
		return
	}
	j.out = out

	t0 := time.Now()
	log.Printf("%s: quantizing…", j.prefix)
	cmd := exec.CommandContext(ctx, m.bin, args...)
	// Ctrl-C reaches mixq as an interrupt, which it answers by stopping
	// and removing its temporary output.
	cmd.Cancel = func() error { return cmd.Process.Signal(os.Interrupt) }
	cmd.WaitDelay = 10 * time.Second
	// mixq's notices and summaries show as it runs (its progress bars do
	// not: stderr is not a terminal), and the last line names a failure.
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, io.MultiWriter(os.Stderr, &stderr)
	if err := cmd.Run(); err != nil {
		r.fail = failure(err, stderr.String())
		log.Printf("%s: failed: %s", j.prefix, r.fail)
		return
	}
	r.qsecs = time.Since(t0).Seconds()
	var q quantizeJSON
	if err := json.Unmarshal(stdout.Bytes(), &q); err != nil {
		r.fail = fmt.Sprintf("reading quantize --json: %v", err)
		return
	}
	r.bytes = q.WrittenBytes - q.Estimate.CarriedBytes
	r.ratio = float64(m.f32Bytes) / float64(r.bytes)
	r.mix = mixOf(q)
	sum, err := weightsHash(out)
	if err != nil {
		r.fail = err.Error()
		return
	}
	j.sum = sum
	log.Printf("%s: quantized in %.0f s: %d B (%.2f×)", j.prefix, r.qsecs, r.bytes, r.ratio)
}

// evaluate scores the row's output against the F32 reference, or takes
// the scores of an earlier row with the same weights.
func (j *job) evaluate(ctx context.Context, m *modelRun, hashes map[string]*row) {
	r := &j.row
	if r.fail != "" {
		return
	}
	defer func() {
		os.RemoveAll(j.out)
		os.RemoveAll(j.out + ".report")
	}()
	if o, ok := hashes[j.sum]; ok {
		r.res, r.same = o.res, o.name
		log.Printf("%s: the same weights as %q", j.prefix, o.name)
		return
	}
	t1 := time.Now()
	qm, err := model.Load(j.out, cpu.New(0))
	if err != nil {
		r.fail = fmt.Sprintf("loading the output: %v", err)
		return
	}
	res, err := m.ref.compare(ctx, qm)
	qm.Close()
	if err != nil {
		r.fail = fmt.Sprintf("evaluating: %v", err)
		return
	}
	r.res = res
	hashes[j.sum] = &j.row
	log.Printf("%s: evaluated in %.0f s: perplexity %+.2f%%, mean KL %.5f", j.prefix, time.Since(t1).Seconds(), res.DeltaPerplexityPct, res.KLMean)
}

// failure is the last lines of a failed command's stderr, or its error.
func failure(err error, stderr string) string {
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
		if strings.HasPrefix(l, "mixq: notice:") || strings.HasPrefix(l, "mixq: warning:") {
			continue
		}
		// progress bars draw with carriage returns; keep the last frame
		if i := strings.LastIndexByte(l, '\r'); i >= 0 {
			l = l[i+1:]
		}
		if l = strings.TrimSpace(l); l != "" {
			lines = append(lines, l)
		}
	}
	var ee *exec.ExitError
	code := ""
	if errors.As(err, &ee) {
		code = fmt.Sprintf(" (exit %d)", ee.ExitCode())
	}
	if len(lines) == 0 {
		return err.Error()
	}
	msg := lines[len(lines)-1]
	if len(msg) > 300 {
		msg = msg[:300] + "…"
	}
	return msg + code
}

// mixOf says which share of the parameters each precision holds.
func mixOf(q quantizeJSON) string {
	var total int64
	for _, p := range q.Estimate.ByPrecision {
		total += p.Parameters
	}
	var parts []string
	for _, p := range q.Estimate.ByPrecision {
		if total > 0 && p.Parameters > 0 {
			parts = append(parts, fmt.Sprintf("%s %.1f%%", p.Name, 100*float64(p.Parameters)/float64(total)))
		}
	}
	return strings.Join(parts, ", ")
}

// weightsHash digests the files that hold the quantized model (its
// safetensors and config), not the carried ones, in name order.
func weightsHash(dir string) (string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, e := range ents {
		n := e.Name()
		if !strings.HasSuffix(n, ".safetensors") && !strings.HasSuffix(n, ".safetensors.index.json") && n != "config.json" {
			continue
		}
		f, err := os.Open(filepath.Join(dir, n))
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s\x00", n)
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// shellJoin quotes the words that a shell would split or expand.
func shellJoin(words []string) string {
	out := make([]string, len(words))
	for i, w := range words {
		if w == "" || strings.ContainsAny(w, " \t\n'\"\\$`*?[]{}()<>|&;#~!") {
			w = "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
		}
		out[i] = w
	}
	return strings.Join(out, " ")
}
