#!/usr/bin/env python3
"""Helpers of scripts/llama-perplexity.sh (numpy only).

  llama_ppl.py chunks IDS_FILE N_CTX BOS OUT.json [MAX_CHUNKS]
      Cut llama-tokenize's ids of the evaluation text into the chunks
      llama-perplexity evaluates (tokens [i*n_ctx, (i+1)*n_ctx), the first
      replaced by BOS) as a `mixq eval --tokens` file.
  llama_ppl.py tokcheck LLAMA_TOKENIZE MODEL.gguf EVAL.txt EVAL_TOKENS.json N
      llama-tokenize (no BOS) on each of the first N non-empty lines must give
      the ids of eval_tokens.json (SentencePiece's sp.encode of each line,
      lines joined by one newline token, cut into BOS + 255 sequences).
  llama_ppl.py ppl LOGITS.f32 TOKENS.json VOCAB
      Perplexity over the positions llama-perplexity scores: in each chunk
      the predictions made at positions n_ctx/2 .. n_ctx-2 (of tokens
      n_ctx/2+1 .. n_ctx-1), from `mixq eval --logits-out` logits
      (float32, position-major, sequences in order); log-softmax in float64.
"""
import ast
import json
import subprocess
import sys

import numpy as np


def chunks(ids_file, n_ctx, bos, out, max_chunks=0):
    text = open(ids_file).read()
    ids = ast.literal_eval(text[text.index("["):text.rindex("]") + 1])
    n = len(ids) // n_ctx
    if max_chunks > 0:
        n = min(n, max_chunks)
    seqs = []
    for i in range(n):
        c = list(ids[i * n_ctx:(i + 1) * n_ctx])
        c[0] = bos
        seqs.append(c)
    json.dump({"description": "llama-perplexity's chunks of the evaluation text", "seq_len": n_ctx, "sequences": seqs}, open(out, "w"))
    print(f"{len(ids)} tokens, {n} chunks of {n_ctx}")


def ppl(logits_file, tokens_file, vocab):
    seqs = json.load(open(tokens_file))["sequences"]
    n_ctx = len(seqs[0])
    lg = np.memmap(logits_file, dtype="<f4", mode="r").reshape(len(seqs), n_ctx, vocab)
    first = n_ctx // 2
    nll, count = 0.0, 0
    for s, seq in enumerate(seqs):
        x = np.asarray(lg[s, first:n_ctx - 1], dtype=np.float64)
        m = x.max(axis=1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(x - m).sum(axis=1))
        tgt = np.asarray(seq[first + 1:n_ctx])
        nll += float((lse - x[np.arange(len(tgt)), tgt]).sum())
        count += len(tgt)
    print(f"{np.exp(nll / count):.6f}")


def tokcheck(tool, model, text, tokens, n):
    stream = [t for s in json.load(open(tokens))["sequences"] for t in s[1:]]
    lines = [l for l in open(text).read().split("\n") if l.strip()]
    pos = checked = 0
    for line in lines[:n]:
        out = subprocess.run([tool, "-m", model, "-p", line, "--ids", "--log-disable", "--no-bos"],
                             capture_output=True, text=True, check=True).stdout
        ids = ast.literal_eval(out.strip().splitlines()[-1])
        if pos + len(ids) >= len(stream):
            break
        if ids != stream[pos:pos + len(ids)]:
            raise SystemExit(f"line {checked + 1} {line[:40]!r}: llama.cpp {ids[:12]}..., SentencePiece {stream[pos:pos + 12]}...")
        pos += len(ids) + 1
        checked += 1
    print(f"{checked} lines, {pos} tokens: llama.cpp tokenizes as SentencePiece")


if __name__ == "__main__":
    if sys.argv[1] == "chunks":
        chunks(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6]) if len(sys.argv) > 6 else 0)
    elif sys.argv[1] == "tokcheck":
        tokcheck(sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], int(sys.argv[6]))
    elif sys.argv[1] == "ppl":
        ppl(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        raise SystemExit(__doc__)
