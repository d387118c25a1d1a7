#!/usr/bin/env python3
"""Check a GGUF written by `mixq export` with llama.cpp's own reader, gguf-py.

    gguf_check.py FILE.gguf REF_DIR CONFIG_JSON [--vocab N] [--no-vocab]

REF_DIR is the output of `mixq dequantize --dtype f32` of the same mixq
checkpoint (one model.safetensors, float32). For every GGUF tensor, gguf-py's
dequantizer (gguf.quants.dequantize) must give bit for bit the float32 of the
reference, after the same layout changes llama.cpp's convert_hf_to_gguf.py
makes: Q/K rows permuted from rotate_half order, Mixtral experts stacked. A
tensor the GGUF holds as F16 is compared with the reference rounded to f16
(numpy's round-to-nearest-even), which is exact for tensors stored as F16 and
the documented rounding for the F16 fallback of rows that are not a multiple
of 32. Every reference tensor must be used once. The metadata must describe
the model: architecture, block count, heads, KV heads, embedding length,
vocabulary size, experts, BOS and EOS ids.

Needs numpy and gguf-py (PYTHONPATH pointing at llama.cpp/gguf-py). Prints one
line per problem and exits 1 if there is any, 0 otherwise.
"""
import json
import re
import struct
import sys

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType
from gguf.quants import dequantize

from gguf_names import EXPERTS, LAYER, TOP, field


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise SystemExit(f"{path}: {name} is {info['dtype']}, want F32 (mixq dequantize --dtype f32)")
        lo, hi = info["data_offsets"]
        out[name] = np.frombuffer(data[lo:hi], dtype=np.float32).reshape(info["shape"])
    return out


def permute(w, n_head):
    """convert_hf_to_gguf.py LlamaModel.permute, written out for numpy."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)




def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    no_vocab = "--no-vocab" in sys.argv
    gguf_path, ref_dir, config_path = args
    cfg = json.load(open(config_path))
    ref = read_safetensors(ref_dir + "/model.safetensors")
    used = set()
    problems = []
    reader = GGUFReader(gguf_path)
    n_head = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads", n_head)
    n_exp = cfg.get("num_local_experts", 0)
    checked = 0
    for t in reader.tensors:
        name = t.name
        m = re.match(r"blk\.(\d+)\.(.+)$", name)
        if name == "rope_freqs.weight":
            continue
        if name in TOP:
            want = ref[TOP[name]]
            used.add(TOP[name])
        elif m and m.group(2) in EXPERTS:
            names = [f"model.layers.{m.group(1)}.block_sparse_moe.experts.{e}.{EXPERTS[m.group(2)]}.weight" for e in range(n_exp)]
            want = np.stack([ref[n] for n in names])
            used.update(names)
        elif m and m.group(2) in LAYER:
            hf = f"model.layers.{m.group(1)}.{LAYER[m.group(2)]}"
            want = ref[hf]
            used.add(hf)
            if m.group(2) == "attn_q.weight":
                want = permute(want, n_head)
            elif m.group(2) == "attn_k.weight":
                want = permute(want, n_kv)
        else:
            problems.append(f"{name}: unexpected tensor")
            continue
        got = dequantize(t.data, t.tensor_type)
        got = np.asarray(got, dtype=np.float32).reshape(want.shape)
        if t.tensor_type == GGMLQuantizationType.F16:
            want = want.astype(np.float16).astype(np.float32)
        gb, wb = got.view(np.uint32), np.ascontiguousarray(want).view(np.uint32)
        diff = np.flatnonzero(gb.ravel() != wb.ravel())
        if diff.size:
            i = diff[0]
            problems.append(f"{name} ({t.tensor_type.name}): {diff.size} elements differ; first at {i}: gguf-py {got.ravel()[i]!r} vs mixq dequantize {want.ravel()[i]!r}")
        checked += 1
    for n in sorted(set(ref) - used):
        if n.endswith("rotary_emb.inv_freq"):
            continue
        problems.append(f"{n}: in the mixq checkpoint but not in the GGUF")

    a = "llama"
    emb_rows = ref["model.embed_tokens.weight"].shape[0]
    expect = {
        "general.architecture": a,
        f"{a}.block_count": cfg["num_hidden_layers"],
        f"{a}.embedding_length": cfg["hidden_size"],
        f"{a}.feed_forward_length": cfg["intermediate_size"],
        f"{a}.attention.head_count": n_head,
        f"{a}.attention.head_count_kv": n_kv,
        f"{a}.vocab_size": emb_rows,
    }
    if n_exp:
        expect[f"{a}.expert_count"] = n_exp
        expect[f"{a}.expert_used_count"] = cfg.get("num_experts_per_tok", 2)
    if not no_vocab:
        expect["tokenizer.ggml.bos_token_id"] = cfg.get("bos_token_id", 1)
        expect["tokenizer.ggml.eos_token_id"] = cfg.get("eos_token_id", 2)
        tokens = field(reader, "tokenizer.ggml.tokens")
        if tokens is None or len(tokens) != emb_rows:
            problems.append(f"tokenizer.ggml.tokens: {None if tokens is None else len(tokens)} tokens, want {emb_rows}")
    else:
        expect["tokenizer.ggml.model"] = "none"
    for k, v in expect.items():
        got = field(reader, k)
        if got != v:
            problems.append(f"metadata {k}: {got!r}, want {v!r}")
    for p in problems:
        print(p)
    print(f"{gguf_path}: {checked} tensors checked bit for bit, {len(expect)} metadata keys, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
