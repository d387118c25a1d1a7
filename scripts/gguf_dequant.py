#!/usr/bin/env python3
"""gguf_dequant.py: the python half of scripts/llama-quant-compare.sh (numpy and
llama.cpp's gguf-py only; PYTHONPATH must reach gguf-py).

  dequant GGUF MODEL_DIR OUT_DIR
      Dequantize every tensor of a llama.cpp GGUF with gguf-py's own decoders,
      map it back to Hugging Face names and layout, and write OUT_DIR with an
      F32 model.safetensors and MODEL_DIR's config.json (copied unchanged).
      Undoes what mixq's GGUF exporter (ggufexport/) did: the Q/K row
      permutation from rotate_half to llama.cpp's interleaved order, and the
      stacking of Mixtral experts into ffn_*_exps. rope_freqs.weight (generated
      by the exporter) is dropped. Every tensor of MODEL_DIR must come back with
      its shape (rotary inv_freq buffers excepted), and nothing else may.
      Prints {"types": {ggml type: tensor count}} on stdout.
  same DIR_A DIR_B
      Exit 1 unless the two checkpoints hold the same tensor names with
      bit-identical float32 values (F32, F16 or BF16 tensors, compared after
      widening to float32; a missing or extra name fails).
  sizes GGUF MODEL_DIR
      Prints {"file_bytes", "tokenizer_kv_bytes", "bytes_without_vocab",
      "tensor_bytes", "params", "types"} as JSON. tokenizer_kv_bytes is the serialized size
      of every tokenizer.* metadata key/value pair (key length, key, value
      type and value, as gguf-py parses them); bytes_without_vocab is
      file_bytes minus it (the alignment padding before the tensor data is
      left as it is); tensor_bytes is the tensor data alone (what issue 10's
      first table divided by). params is the number of elements of every tensor in
      MODEL_DIR's safetensors (a tied embedding counts once).
  vocab OUT.gguf N
      A vocabulary-only GGUF (SentencePiece "llama" model, no space prefix)
      of N tokens for a model that ships without a tokenizer: <unk> <s> </s>
      and then one CJK ideograph per id (id i is chr(0x4E00 + i)), so that
      text written in those characters tokenizes back to exactly its ids.
      For `mixq export --vocab-from`, so that llama.cpp's samplers and
      llama-imatrix can run on stories260K.
  calibcheck TEXT IDS N
      Exit 1 unless llama-tokenize's ids of the sampled calibration TEXT
      (IDS, its --ids output) are exactly the ids its characters stand for,
      N sequences of BOS + 127 tokens.
  report OUT.json META.json
      Assemble bench/llamacpp.json from META.json (written by the shell
      script: {"meta": {...}, "models": [{"name", "dir", "eval_set",
      "variants": [{"name", "command", "imatrix_command", "gguf", "eval"}]}]}),
      reading each variant's GGUF sizes and mixq eval --json output. Models
      already in OUT.json and not in META.json are kept.
  table OUT.json
      Print the file as a table.
"""
import json
import os
import struct
import sys

import numpy as np

from gguf_names import EXPERTS, LAYER, TOP, field

DTYPES = {"F32": np.float32, "F16": np.float16}


def fail(msg):
    print(f"gguf_dequant: {msg}", file=sys.stderr)
    sys.exit(1)


def st_files(d):
    """The safetensors files of a checkpoint directory, in name order."""
    fs = sorted(f for f in os.listdir(d) if f.endswith(".safetensors"))
    if not fs:
        fail(f"{d}: no .safetensors file")
    return [os.path.join(d, f) for f in fs]


def st_header(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return h, 8 + n


def st_read(d):
    """name -> float32 array for every tensor of a checkpoint directory."""
    out = {}
    for p in st_files(d):
        h, base = st_header(p)
        raw = np.memmap(p, dtype=np.uint8, mode="r")
        for name, e in h.items():
            b, end = e["data_offsets"]
            buf = raw[base + b:base + end]
            if e["dtype"] == "BF16":
                a = (buf.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
            elif e["dtype"] in DTYPES:
                a = buf.view(DTYPES[e["dtype"]]).astype(np.float32)
            else:
                fail(f"{p}: tensor {name}: dtype {e['dtype']} is not a float type")
            out[name] = a.reshape(e["shape"])
    return out


def st_shapes(d):
    """name -> shape, in file order, from the headers alone."""
    out = {}
    for p in st_files(d):
        h, _ = st_header(p)
        for name, e in sorted(h.items(), key=lambda kv: kv[1]["data_offsets"][0]):
            out[name] = list(e["shape"])
    return out


def st_write(path, tensors):
    """Write name -> float32 array as one safetensors file, under a temporary
    name renamed when complete."""
    header, off = {}, 0
    for name, a in tensors.items():
        n = a.size * 4
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + n]}
        off += n
    header["__metadata__"] = {"format": "pt"}
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * (-len(hb) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for a in tensors.values():
            f.write(np.ascontiguousarray(a, dtype="<f4").tobytes())
    os.replace(tmp, path)


def unpermute(w, heads):
    """Inverse of convert_hf_to_gguf.py's permute (rows of each head as
    [2][hd/2], axes swapped): back to Hugging Face's rotate_half order."""
    rows = w.shape[0]
    if rows % (2 * heads):
        fail(f"{rows} rows do not split into {heads} heads of even size")
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def dequant(gguf_path, model_dir, out_dir):
    from gguf import GGUFReader
    from gguf.quants import dequantize

    r = GGUFReader(gguf_path)
    arch = field(r, "general.architecture")
    if arch != "llama":
        fail(f"{gguf_path}: architecture {arch!r}, only llama is handled")
    n_head = int(field(r, "llama.attention.head_count"))
    n_kv = int(field(r, "llama.attention.head_count_kv") or n_head)
    want = st_shapes(model_dir)
    got, types = {}, {}
    for t in r.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
        shape = [int(x) for x in reversed(list(t.shape))]
        w = dequantize(t.data, t.tensor_type).astype(np.float32, copy=False).reshape(shape)
        name = t.name
        if name == "rope_freqs.weight":
            continue
        if name in TOP:
            got[TOP[name]] = w
            continue
        parts = name.split(".", 2)
        if len(parts) != 3 or parts[0] != "blk":
            fail(f"{gguf_path}: tensor {name} has no Hugging Face name")
        pre = f"model.layers.{parts[1]}."
        if parts[2] in EXPERTS:
            for x in range(w.shape[0]):
                got[f"{pre}block_sparse_moe.experts.{x}.{EXPERTS[parts[2]]}.weight"] = w[x]
            continue
        if parts[2] not in LAYER:
            fail(f"{gguf_path}: tensor {name} has no Hugging Face name")
        if parts[2] == "attn_q.weight":
            w = unpermute(w, n_head)
        elif parts[2] == "attn_k.weight":
            w = unpermute(w, n_kv)
        got[pre + LAYER[parts[2]]] = w
    for name, shape in want.items():
        if name.endswith("rotary_emb.inv_freq"):
            continue
        if name not in got:
            fail(f"{gguf_path}: {model_dir}'s tensor {name} is not in the GGUF")
        if list(got[name].shape) != shape:
            fail(f"{gguf_path}: tensor {name} has shape {list(got[name].shape)}, {model_dir} has {shape}")
    extra = sorted(set(got) - set(want))
    if extra:
        fail(f"{gguf_path}: tensors {extra} are not in {model_dir}")
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(model_dir, "config.json"), "rb") as f:
        cfg = f.read()
    with open(os.path.join(out_dir, "config.json.tmp"), "wb") as f:
        f.write(cfg)
    os.replace(os.path.join(out_dir, "config.json.tmp"), os.path.join(out_dir, "config.json"))
    order = [n for n in want if n in got]
    st_write(os.path.join(out_dir, "model.safetensors"), {n: got[n] for n in order})
    print(json.dumps({"types": types}))


def same(a, b):
    ta, tb = st_read(a), st_read(b)
    if set(ta) != set(tb):
        fail(f"{a} and {b} hold different tensors: {sorted(set(ta) ^ set(tb))}")
    for n in ta:
        if ta[n].shape != tb[n].shape or ta[n].view(np.uint32).tobytes() != tb[n].view(np.uint32).tobytes():
            d = np.abs(ta[n].astype(np.float64) - tb[n].astype(np.float64)).max() if ta[n].shape == tb[n].shape else None
            fail(f"{a} and {b} differ in tensor {n} (max |Δ| {d})")
    print(f"same: {len(ta)} tensors bit-identical")


def sizes(gguf_path, model_dir):
    from gguf import GGUFReader

    r = GGUFReader(gguf_path)
    tok = sum(sum(p.nbytes for p in f.parts) for k, f in r.fields.items() if k.startswith("tokenizer."))
    size = os.path.getsize(gguf_path)
    params = 0
    for shape in st_shapes(model_dir).values():
        params += int(np.prod(shape, dtype=np.int64))
    types = {}
    for t in r.tensors:
        types[t.tensor_type.name] = types.get(t.tensor_type.name, 0) + 1
    return {"file_bytes": size, "tokenizer_kv_bytes": tok, "bytes_without_vocab": size - tok,
            "tensor_bytes": sum(int(t.n_bytes) for t in r.tensors), "params": params, "types": types}


def vocab(out, n):
    from gguf import GGUFWriter

    w = GGUFWriter(out, "llama")
    tokens = ["<unk>", "<s>", "</s>"] + [chr(0x4E00 + i) for i in range(3, n)]
    w.add_tokenizer_model("llama")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * n)
    w.add_token_types([2, 3, 3] + [1] * (n - 3))
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_space_prefix(False)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def calibcheck(text_path, ids_path, nseq):
    """The sampled calibration text must tokenize back one to one: every
    character is the id it stands for (or <s>, <unk>, </s> its control
    token), llama-tokenize gave exactly those ids after its BOS, and there
    are nseq sequences of BOS + 127 tokens (each closed by one filler)."""
    with open(text_path, encoding="utf-8") as f:
        t = f.read()
    want, i = [1], 0
    specials = {"<s>": 1, "<unk>": 0, "</s>": 2}
    while i < len(t):
        for sp, tid in specials.items():
            if t.startswith(sp, i):
                want.append(tid)
                i += len(sp)
                break
        else:
            c = ord(t[i]) - 0x4E00
            if not 3 <= c < 0x10000:
                fail(f"{text_path}: character {t[i]!r} at {i} stands for no token")
            want.append(c)
            i += 1
    with open(ids_path) as f:
        got = json.loads(f.read().strip())
    if got != want:
        n = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        fail(f"{ids_path}: llama-tokenize gave {len(got)} ids, the text stands for {len(want)}; first difference at {n}")
    if len(want) != 1 + 128 * nseq:
        fail(f"{text_path}: {len(want)} tokens, want 1 + 128 x {nseq}")
    print(f"calibcheck: {nseq} sequences, {len(want)} tokens, tokenized one to one")


def report(out, meta_path):
    with open(meta_path) as f:
        meta = json.load(f)
    doc = dict(meta["meta"])
    models = []
    for m in meta["models"]:
        rows, base, positions, params = [], None, None, None
        for v in m["variants"]:
            s = sizes(v["gguf"], m["dir"])
            params = s["params"]
            with open(v["eval"]) as f:
                e = json.load(f)
            q = e.get("quantized") or fail(f"{v['eval']}: no quantized stats")
            base, positions = e["original"]["perplexity"], e["scored_positions"]
            row = {"variant": v["name"], "command": v["command"]}
            if v.get("imatrix_command"):
                row["imatrix_command"] = v["imatrix_command"]
            row.update({
                "ggml_types": s["types"],
                "file_bytes": s["file_bytes"],
                "bytes_without_vocab": s["bytes_without_vocab"],
                "tensor_bytes": s["tensor_bytes"],
                "ratio": round(4 * params / s["bytes_without_vocab"], 4),
                "ratio_file": round(4 * params / s["file_bytes"], 4),
                "ppl": q["perplexity"],
                "f32_ppl": base,
                # mixq eval --json leaves out fields that are zero
                "delta_ppl_pct": e.get("delta_perplexity_pct", 0.0),
                "kl_mean": e.get("kl_mean", 0.0),
                "kl_p99": e.get("kl_p99", 0.0),
                "top1": e.get("top1_agreement", 0.0),
            })
            rows.append(row)
        models.append({"model": m["name"], "date": doc.get("date"), "mixq_commit": doc.get("mixq_commit"),
                       "params": params, "f32_bytes": 4 * params, "eval_set": m["eval_set"],
                       "scored_positions": positions, "ppl_f32": base, "variants": rows})
    # A run over some models keeps the others already in the file.
    done = {m["model"] for m in models}
    if os.path.exists(out):
        with open(out) as f:
            old = json.load(f)
        kept = [m for m in old.get("models", []) if m.get("model") not in done]
        models = kept + models
        order = {"minillama": 0, "stories260K": 1}
        models.sort(key=lambda m: order.get(m.get("model"), 2))
    doc["models"] = models
    tmp = out + ".tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, indent=2)
        f.write("\n")
    os.replace(tmp, out)


def table(path):
    with open(path) as f:
        doc = json.load(f)
    print(doc.get("version", ""), "|", doc.get("date", ""))
    for m in doc["models"]:
        print(f"{m['model']}: {m['params']} params, F32 ppl {m['ppl_f32']:.4f}, {m['scored_positions']} positions")
        print(f"  {'variant':<15} {'file bytes':>10} {'w/o vocab':>10} {'ratio':>6} {'ppl':>9} {'dppl%':>7} "
              f"{'mean KL':>8} {'p99 KL':>8} {'top-1':>6}")
        for v in m["variants"]:
            print(f"  {v['variant']:<15} {v['file_bytes']:>10} {v['bytes_without_vocab']:>10} {v['ratio']:>6.3f} "
                  f"{v['ppl']:>9.4f} {v['delta_ppl_pct']:>+7.3f} {v['kl_mean']:>8.5f} {v['kl_p99']:>8.5f} {v['top1']:>6.4f}")


def main(argv):
    cmds = {"dequant": (dequant, 3), "same": (same, 2), "vocab": (vocab, 2), "report": (report, 2), "table": (table, 1),
            "calibcheck": (lambda t, i, n: calibcheck(t, i, int(n)), 3),
            "sizes": (lambda g, d: print(json.dumps(sizes(g, d))), 2)}
    if len(argv) < 2 or argv[1] not in cmds or len(argv) - 2 != cmds[argv[1]][1]:
        fail("usage: gguf_dequant.py dequant GGUF MODEL_DIR OUT_DIR | same A B | sizes GGUF MODEL_DIR | "
             "vocab OUT.gguf N | calibcheck TEXT IDS N | report OUT.json META.json | table OUT.json")
    fn, _ = cmds[argv[1]]
    args = argv[2:]
    if argv[1] == "vocab":
        args = [args[0], int(args[1])]
    fn(*args)


if __name__ == "__main__":
    main(sys.argv)
