#!/usr/bin/env python3
"""Reads the runs of scripts/ggml-mulmat/run.sh and prints the ratio table.

usage: compare.py DIR   (DIR holds mixq-N.json and ggml-N.txt for each round)
Each time is the median over the rounds of that side; ratio = ggml's time
over mixq's (>= 1: mixq is as fast or faster).
"""
import glob, json, os, re, statistics, sys

d = sys.argv[1]
mixq, ggml = {}, {}
for f in sorted(glob.glob(os.path.join(d, "mixq-*.json"))):
    for r in json.load(open(f)):
        m = re.match(r"matmul m=(\d+)$", r["op"])
        if not m:
            continue
        key = (r["shape"], int(m.group(1)), r.get("precision", ""), r["backend"])
        mixq.setdefault(key, []).append(r["seconds"])
pat = re.compile(r"MUL_MAT\(type=f32,ne=\[(\d+),(\d+),1,1\].*sources=(\w+)\[(\d+),(\d+),1,1\].*?([\d.]+) us/run")
for f in sorted(glob.glob(os.path.join(d, "ggml-*.txt"))):
    for line in open(f):
        m = pat.search(line)
        if m:
            rows, n, typ, cols = int(m.group(1)), int(m.group(2)), m.group(3), int(m.group(4))
            ggml.setdefault((f"{rows}x{cols}", n, typ), []).append(float(m.group(6)) * 1e-6)
med = lambda v: statistics.median(v)
print("| shape | batch | ggml q8_0 | ggml q4_0 | mixq INT8 | mixq INT4 | mixq F32 (plain Go) | q8_0/INT8 | q4_0/INT4 |")
print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
shapes = sorted({(k[0], k[1]) for k in ggml} | {(k[0], k[1]) for k in mixq})
for shape, n in shapes:
    g8, g4 = ggml.get((shape, n, "q8_0")), ggml.get((shape, n, "q4_0"))
    m8, m4 = mixq.get((shape, n, "int8", "cpu")), mixq.get((shape, n, "int4", "cpu"))
    f32 = mixq.get((shape, n, "f32", "host"))
    ms = lambda v: "%.3f ms" % (1e3 * med(v)) if v else "-"
    ratio = lambda g, m: "**%.2f**" % (med(g) / med(m)) if g and m else "-"
    print(f"| {shape} | {n} | {ms(g8)} | {ms(g4)} | {ms(m8)} | {ms(m4)} | {ms(f32)} | {ratio(g8, m8)} | {ratio(g4, m4)} |")
rounds = len(glob.glob(os.path.join(d, "mixq-*.json")))
print(f"\n{rounds} alternating rounds; median of each side.")

# Ratios within each round (ggml, then mixq right after it): on a shared
# machine the load changes between rounds, so these say more than the
# ratio of medians.
print("\nper round (ggml time / mixq time):")
for r in range(1, rounds + 1):
    mq, gg = {}, {}
    for row in json.load(open(os.path.join(d, f"mixq-{r}.json"))):
        m = re.match(r"matmul m=(\d+)$", row["op"])
        if m and row["backend"] == "cpu":
            mq[(row["shape"], int(m.group(1)), row["precision"])] = row["seconds"]
    for line in open(os.path.join(d, f"ggml-{r}.txt")):
        m = pat.search(line)
        if m:
            gg[(f"{m.group(1)}x{m.group(4)}", int(m.group(2)), m.group(3))] = float(m.group(6)) * 1e-6
    parts = []
    for (shape, n, typ), g in sorted(gg.items()):
        prec = {"q8_0": "int8", "q4_0": "int4"}[typ]
        if (shape, n, prec) in mq:
            parts.append(f"{typ}/{prec.upper()} b{n} {g / mq[(shape, n, prec)]:.2f}")
    print(f"  round {r}: " + ", ".join(parts))
