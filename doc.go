// Package mixq quantizes large model checkpoints to mixed precision: INT4
// and INT8 with group-wise absmax F16 scales, and F16 kept for sensitive
// tensors, chosen per tensor by a policy.
//
// The pipeline, which the mixq command is a thin layer over:
//
//	ck, _ := mixq.Open("model/")                      // headers only, data memory-mapped
//	plan, _ := mixq.PlanQuantization(ck, mixq.Options{}) // static policy by default
//	est := plan.Estimate(6)                            // exact output size, before any work
//	res, _ := mixq.Quantize(ctx, ck, plan, "model-q/", mixq.Options{})
//	q, _ := mixq.OpenQuantized("model-q/")             // read back, any tensor as float32
//
// Tensors are processed one block of rows at a time, so peak memory tracks a
// block, not the checkpoint. Outputs are written under a temporary name and
// renamed when complete.
package mixq
