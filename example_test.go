package mixq_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strings"

	"github.com/mixq/mixq"
	"github.com/mixq/mixq/cpu"
	"github.com/mixq/mixq/policy"
	"github.com/mixq/mixq/synth"
)

// The whole pipeline: open a checkpoint, estimate its size, choose a
// policy, quantize, and read the result back.
func Example() {
	dir, err := os.MkdirTemp("", "mixq-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	in, out := filepath.Join(dir, "model"), filepath.Join(dir, "model-mixq")

	// A small synthetic Mixtral-style checkpoint stands in for a real one.
	p, _ := synth.Lookup("tiny-moe")
	if err := synth.Write(in, synth.Options{Preset: p, Seed: 1}); err != nil {
		log.Fatal(err)
	}

	ck, err := mixq.Open(in)
	if err != nil {
		log.Fatal(err)
	}
	defer ck.Close()

	// The static policy with one user rule in front of the built-in ones.
	rule, _ := policy.ParseRule(`self_attn\.o_proj=f16`)
	opt := mixq.Options{Policy: mixq.StaticPolicy(ck, []policy.Rule{rule}), GroupSize: 64, Backend: cpu.New(0)}

	plan, err := mixq.PlanQuantization(ck, opt)
	if err != nil {
		log.Fatal(err)
	}
	est := plan.Estimate(4)
	fmt.Printf("estimate: %d parameters, %.2fx smaller than FP32, meets 4x: %v\n",
		est.TotalParameters, est.CompressionRatio, est.MeetsTarget)

	res, err := mixq.Quantize(context.Background(), ck, plan, out, opt)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("bytes on disk equal the estimate:", res.WrittenBytes == est.MixedPrecisionBytes)

	q, err := mixq.OpenQuantized(out)
	if err != nil {
		log.Fatal(err)
	}
	defer q.Close()
	e, _ := q.Lookup("model.layers.0.block_sparse_moe.experts.0.w1.weight")
	w := make([]float32, e.NumElements())
	if err := q.Float32(e, w, opt.Backend); err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s: %s, group %d, shape %v\n", e.Name, e.Record.Precision, e.Record.GroupSize, e.Record.Shape)
	// Output:
	// estimate: 254784 parameters, 4.65x smaller than FP32, meets 4x: true
	// bytes on disk equal the estimate: true
	// model.layers.0.block_sparse_moe.experts.0.w1.weight: int4, group 64, shape [128 64]
}

// Estimating from headers alone, with the rules that chose each tensor.
func ExamplePlanQuantization() {
	dir, _ := os.MkdirTemp("", "mixq-example")
	defer os.RemoveAll(dir)
	p, _ := synth.Lookup("tiny")
	if err := synth.Write(dir+"/m", synth.Options{Preset: p, Seed: 1}); err != nil {
		log.Fatal(err)
	}
	ck, err := mixq.Open(dir + "/m")
	if err != nil {
		log.Fatal(err)
	}
	defer ck.Close()
	plan, err := mixq.PlanQuantization(ck, mixq.Options{})
	if err != nil {
		log.Fatal(err)
	}
	for _, it := range plan.Items[:4] {
		fmt.Println(strings.TrimSpace(fmt.Sprintf("%-40s %-5s %s", it.Input.Name, it.Record.Precision, it.Decision.Source)))
	}
	// Output:
	// model.embed_tokens.weight                f16   builtin:embeddings
	// model.layers.0.input_layernorm.weight    keep
	// model.layers.0.self_attn.q_proj.weight   int8  builtin:core-attention
	// model.layers.0.self_attn.k_proj.weight   int8  builtin:core-attention
}
