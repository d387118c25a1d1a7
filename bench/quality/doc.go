// Command quality measures what each way of quantizing costs a model and
// writes bench/QUALITY.md: `make quality` (go run ./bench/quality -mixq
// bin/mixq).
//
// Every quantized row is made by the real CLI, `mixq quantize IN -o OUT
// FLAGS` run as a subprocess, exactly as a user types it; QUALITY.md lists
// each row's command. The outputs are evaluated in-process with the eval
// package against the F32 model on held-out tokens. The F32 model's logits
// are computed once per model and kept, so each row runs only its own
// forward pass (eval.Evaluate would rerun the F32 model for every row);
// compare.go scores them with the same arithmetic as eval.Evaluate, and a
// test checks that both give the same numbers bit for bit.
//
// Models: minillama (real held-out eval_tokens.json; calibration on the
// first sequences of calib_tokens.json) and stories260K (no token files:
// evaluation sequences sampled from its F32 version with seed 1,
// calibration sampled by the CLI with seed 2). llama.cpp's rows come from
// bench/llamacpp.json (scripts/llama-quant-compare.sh, `make
// llama-compare`); mixq's budget policy is run at each of their sizes.
//
// The rows are a table (rows.go); the findings under each table (report.go)
// are computed from the measured numbers.
package main
