package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"time"

	"github.com/mixq/mixq"
	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/eval"
	"github.com/mixq/mixq/model"
)

// config is what the command line sets.
type config struct {
	out, mixqBin, llamaJSON string
	minillama, stories      string
	calibSeqs, jobs         int
	storiesSeqs, storiesLen int
	models                  map[string]bool
	rows                    *regexp.Regexp // nil: every row
}

func main() {
	var c config
	flag.StringVar(&c.out, "o", "bench/QUALITY.md", "output Markdown file")
	flag.StringVar(&c.mixqBin, "mixq", "bin/mixq", "the mixq binary whose `quantize` makes every row (make build)")
	flag.StringVar(&c.llamaJSON, "llamacpp", "bench/llamacpp.json", "llama.cpp's measured variants (make llama-compare); absent: no comparison")
	flag.StringVar(&c.minillama, "minillama", "../shared/testdata/minillama", "minillama directory")
	flag.StringVar(&c.stories, "stories", "../shared/testdata/stories260K", "stories260K directory")
	flag.IntVar(&c.calibSeqs, "calib-seqs", 32, "minillama: calibrate on the first N sequences of calib_tokens.json (0: all)")
	flag.IntVar(&c.jobs, "jobs", 2, "mixq quantize commands run at a time (evaluation runs beside them, one row at a time)")
	flag.IntVar(&c.storiesSeqs, "stories-sequences", 32, "stories260K: sampled evaluation sequences (calibration samples a quarter as many)")
	flag.IntVar(&c.storiesLen, "stories-seq-len", 128, "stories260K: length of each sampled sequence")
	models := flag.String("models", "minillama,stories260K", "comma-separated models to measure")
	rows := flag.String("rows", "", "only rows whose id matches this regexp (for trying the generator; the output says it is partial)")
	flag.Parse()
	log.SetFlags(0)
	c.models = map[string]bool{}
	for _, m := range strings.Split(*models, ",") {
		c.models[strings.TrimSpace(m)] = true
	}
	if *rows != "" {
		re, err := regexp.Compile(*rows)
		if err != nil {
			log.Fatalf("quality: -rows: %v", err)
		}
		c.rows = re
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, c)
	stop()
	if err != nil {
		log.Fatalf("quality: %v", err)
	}
}

// run measures every model and writes the report under a temporary name,
// renamed when complete.
func run(ctx context.Context, c config) error {
	start := time.Now()
	loadStart := loadAvg()
	bin, err := filepath.Abs(c.mixqBin)
	if err != nil {
		return err
	}
	version, err := exec.CommandContext(ctx, bin, "--version").Output()
	if err != nil {
		return fmt.Errorf("%s --version: %v (run make build first)", bin, err)
	}
	help, err := exec.CommandContext(ctx, bin, "quantize", "--help").Output()
	if err != nil {
		return fmt.Errorf("%s quantize --help: %v", bin, err)
	}
	presets := parsePresets(string(help))
	llama, llamaErr := readLlama(c.llamaJSON)
	if llamaErr != nil && !errors.Is(llamaErr, os.ErrNotExist) {
		log.Printf("quality: %s: %v (the llama.cpp comparison is left out)", c.llamaJSON, llamaErr)
	}

	work, err := os.MkdirTemp("", "mixq-quality")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)

	var sections []*modelResult
	for _, m := range []struct {
		key  string
		prep func(ctx context.Context, c config, work string) (*modelRun, error)
	}{
		{"minillama", prepMinillama},
		{"stories260K", prepStories},
	} {
		if !c.models[m.key] {
			continue
		}
		mr, err := m.prep(ctx, c, work)
		if err != nil {
			return fmt.Errorf("%s: %w", m.key, err)
		}
		mr.bin = bin
		res, err := measure(ctx, mr, rowSpecs(presets, llama.forModel(m.key)), c.rows, work, c.jobs)
		mr.close()
		if err != nil {
			return fmt.Errorf("%s: %w", m.key, err)
		}
		res.llama = llama.forModel(m.key)
		sections = append(sections, res)
	}

	h := header{
		date:      start.UTC(),
		took:      time.Since(start),
		loadStart: loadStart,
		loadEnd:   loadAvg(),
		cpu:       cpuModel(),
		cpus:      runtime.NumCPU(),
		version:   strings.TrimSpace(string(version)),
		partial:   c.rows != nil,
		presets:   presets,
		llamaPath: c.llamaJSON,
		llamaErr:  llamaErr,
		llama:     llama,
	}
	text := writeReport(h, sections)
	tmp := c.out + ".tmp"
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, c.out); err != nil {
		os.Remove(tmp)
		return err
	}
	log.Printf("quality: wrote %s in %s", c.out, time.Since(start).Round(time.Second))
	return nil
}

// modelRun is one model under measurement: its F32 reference logits on
// the evaluation sequences and the calibration flags its rows add.
type modelRun struct {
	key, title, dir string
	// shown is how commands name the model's directory.
	shown string
	// about says what the evaluation and calibration sequences are.
	about string
	// calib and calibShown are the calibration flags, as run and as
	// printed (a temporary file is given a stable name).
	calib, calibShown []string
	params, f32Bytes  int64
	bin               string
	ref               *reference
	ck                interface{ Close() error }
	bpw               func(float64) (int64, error) // importance.BPWTarget of the checkpoint
}

func (m *modelRun) close() {
	if m.ck != nil {
		m.ck.Close()
	}
}

// prepMinillama evaluates on the held-out eval_tokens.json and calibrates
// on the first c.calibSeqs sequences of calib_tokens.json.
func prepMinillama(ctx context.Context, c config, work string) (*modelRun, error) {
	dir := c.minillama
	seqs, err := readTokens(filepath.Join(dir, "eval_tokens.json"))
	if err != nil {
		return nil, err
	}
	calibPath := filepath.Join(dir, "calib_tokens.json")
	calib, err := readTokens(calibPath)
	if err != nil {
		return nil, err
	}
	shownCalib := filepath.Join(c.minillama, "calib_tokens.json")
	used := len(calib)
	if c.calibSeqs > 0 && c.calibSeqs < len(calib) {
		used = c.calibSeqs
		calibPath = filepath.Join(work, fmt.Sprintf("calib%d.json", used))
		raw, err := json.Marshal(map[string]any{"sequences": calib[:used]})
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(calibPath, raw, 0o644); err != nil {
			return nil, err
		}
		shownCalib = fmt.Sprintf("calib%d.json", used)
	}
	m := &modelRun{
		key: "minillama", dir: dir, shown: dir,
		calib:      []string{"--calib-tokens", calibPath},
		calibShown: []string{"--calib-tokens", shownCalib},
	}
	about := fmt.Sprintf("Evaluation: the held-out `eval_tokens.json` (%d sequences, %d tokens, %%d predicted positions). Calibration (`--calib-tokens`): ", len(seqs), eval.Tokens(seqs))
	if used < len(calib) {
		about += fmt.Sprintf("the first %d of the %d sequences of `calib_tokens.json` (%d tokens), written to `%s` (`python3 -c 'import json; d=json.load(open(\"%s/calib_tokens.json\")); json.dump({\"sequences\": d[\"sequences\"][:%d]}, open(\"%s\", \"w\"))'`); the whole file makes every calibrated row take about four times as long.",
			used, len(calib), eval.Tokens(calib[:used]), shownCalib, c.minillama, used, shownCalib)
	} else {
		about += fmt.Sprintf("all %d sequences of `calib_tokens.json` (%d tokens).", len(calib), eval.Tokens(calib))
	}
	m.about = about
	return m, m.load(ctx, "minillama (real Llama: 6 layers, hidden 256, GQA 8/4 heads, MLP 768, vocab 2048, untied head)", seqs, nil)
}

// prepStories samples the evaluation sequences from the F32 model (seed 1,
// as `mixq eval --sample N --seq-len L --seed 1`), and lets the CLI sample
// a quarter as many for calibration with seed 2.
func prepStories(ctx context.Context, c config, work string) (*modelRun, error) {
	nCalib := max(1, c.storiesSeqs/4)
	calib := []string{"--calib-sample", fmt.Sprint(nCalib), "--calib-seed", "2", "--calib-seq-len", fmt.Sprint(c.storiesLen)}
	m := &modelRun{key: "stories260K", dir: c.stories, shown: c.stories, calib: calib, calibShown: calib}
	m.about = fmt.Sprintf("stories260K has no token files. Evaluation: %d sequences of %d tokens sampled at temperature 1 from the F32 model with seed 1 (the sequences `mixq eval --sample %d --seq-len %d --seed 1` draws; %%d predicted positions). Calibration: %d sequences of %d tokens the CLI samples with seed 2 (`%s`).",
		c.storiesSeqs, c.storiesLen, c.storiesSeqs, c.storiesLen, nCalib, c.storiesLen, strings.Join(calib, " "))
	return m, m.load(ctx, "stories260K (real, 260K parameters, tied embeddings, 64- and 172-wide rows)", nil, func(ref *model.Model) ([][]int, error) {
		return eval.SampleContext(ctx, ref, c.storiesSeqs, c.storiesLen, ref.Config.BOS, 1, nil)
	})
}

// load opens the checkpoint for its sizes and computes the F32 reference
// on seqs (or on the sequences sample draws from the F32 model).
func (m *modelRun) load(ctx context.Context, title string, seqs [][]int, sample func(*model.Model) ([][]int, error)) error {
	m.title = title
	ck, err := mixq.Open(m.dir)
	if err != nil {
		return err
	}
	m.ck = ck
	for _, t := range ck.Tensors {
		m.params += t.NumElements()
	}
	m.f32Bytes = 4 * m.params
	m.bpw = func(b float64) (int64, error) { return bpwTarget(ck, b) }
	ref, err := model.Load(m.dir, cpu.New(0))
	if err != nil {
		return err
	}
	defer ref.Close()
	if sample != nil {
		if seqs, err = sample(ref); err != nil {
			return err
		}
	}
	t0 := time.Now()
	log.Printf("[%s] F32 reference on %d sequences (%d tokens)…", m.key, len(seqs), eval.Tokens(seqs))
	m.ref, err = newReference(ctx, ref, seqs)
	if err != nil {
		return err
	}
	m.about = fmt.Sprintf(m.about, m.ref.res.Scored)
	log.Printf("[%s] F32 perplexity %.4f (%s)", m.key, m.ref.res.Original.Perplexity, time.Since(t0).Round(time.Second))
	return nil
}

// readTokens reads {"input_tokens": [...]} or {"sequences": [[...]]}, as
// mixq eval --tokens does.
func readTokens(path string) ([][]int, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var v struct {
		InputTokens []int   `json:"input_tokens"`
		Sequences   [][]int `json:"sequences"`
	}
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(v.Sequences) > 0 {
		return v.Sequences, nil
	}
	if len(v.InputTokens) > 0 {
		return [][]int{v.InputTokens}, nil
	}
	return nil, fmt.Errorf("%s: no input_tokens or sequences", path)
}

func loadAvg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(raw))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func cpuModel() string {
	raw, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, l := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(l, "model name") {
			if i := strings.IndexByte(l, ':'); i >= 0 {
				return strings.TrimSpace(l[i+1:])
			}
		}
	}
	return "unknown CPU"
}
