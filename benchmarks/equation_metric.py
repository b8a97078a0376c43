"""Equation metric speed: 10,000 random model outputs (9,000 random strings of arithmetic-like
characters, 1,000 power towers such as ``((37**51)**44)**64``) scored against a SVAMP label.
Goal: under 1 s in total (integer arithmetic once took over 20 s on one tower).

    python benchmarks/equation_metric.py [--n 10000] [--repeats 5] [--out BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from bench_out import report_figures

from mmi_ray.metrics import label_correct


def outputs(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    alphabet = "0123456789+-*/%() .e_abcxyz'"
    towers = n // 10
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60))) for _ in range(n - towers)]
    return texts + [f"(({rng.randint(2, 99)}**{rng.randint(30, 64)})**{rng.randint(30, 64)})**64"
                    for _ in range(towers)]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    texts = outputs(args.n)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for t in texts:
            label_correct(t, "( 84.0 / 2.0 )", "equation")
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    lines = ["| outputs | repeats | total s, median (min-max) | goal |", "|---|---|---|---|",
             f"| {args.n:,} | {args.repeats} | {med:.3f} ({min(times):.3f}-{max(times):.3f}) | < 1 s: "
             f"{'met' if max(times) < 1 else 'range crosses the goal' if min(times) < 1 else 'not met'} |"]
    report_figures(lines, args.out, "equation_metric.py", argv, "Equation metric: 10,000 model outputs")
    return {"median_s": med, "min_s": min(times), "max_s": max(times)}


if __name__ == "__main__":
    main()
