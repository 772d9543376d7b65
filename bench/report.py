#!/usr/bin/env python3
"""Turns the `bench=` lines of a `make bench` run (stdin or a file) into the Markdown tables of
docs/benchmarks.md. Standard library only: /usr/bin/python3 bench/report.py out.log"""
import math
import re
import sys


def fields(line):
    return dict(kv.split("=", 1) for kv in line.split() if "=" in kv)


def main():
    src = open(sys.argv[1]) if len(sys.argv) > 1 else sys.stdin
    gemm, ops, other = [], [], []
    for line in src:
        if not line.startswith("bench=") or "summary" in line:
            continue
        f = fields(line)
        (gemm if f["bench"] == "gemm" else ops if f["bench"] == "ops" else other).append(f)
    if gemm:
        print("| N | threads | kiln GFLOP/s | PyTorch GFLOP/s | ratio |\n| --- | --- | --- | --- | --- |")
        for f in gemm:
            print(f"| {f['n']} | {f['threads']} | {float(f['gflops']):.1f} | "
                  f"{float(f['torch_gflops']):.1f} | {float(f['ratio_vs_pytorch']):.3f} |")
        print()
    if ops:
        print("| op | pass | shape | kiln ms | PyTorch ms | torch cfg | ratio |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        ratios = []
        for f in ops:
            r = float(f["ratio_vs_pytorch"])
            ratios.append((r, f"{f['op']}/{f['pass']}"))
            print(f"| {f['op']} | {f['pass']} | {f['shape']} | {float(f['ms']):.3f} | "
                  f"{float(f['torch_ms']):.3f} | {f.get('torch_cfg', '')} | {r:.3f} |")
        gm = math.exp(sum(math.log(r) for r, _ in ratios) / len(ratios))
        lo = min(ratios)
        print(f"\nGeometric mean of the ratios: {gm:.3f}; minimum: {lo[0]:.3f} ({lo[1]}).")


if __name__ == "__main__":
    main()
