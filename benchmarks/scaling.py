"""Data-parallel scaling (issue 7, figure 4): 2 Ray Train workers against 1 on this machine.

    python benchmarks/scaling.py [--steps 150] [--batch 32] [--workers 1 2] [--out BENCHMARKS.md] [overrides ...]

Each run is ``mmi-ray train configs/tiny_builtin.yaml`` (``train.run_training``: a Ray Train run on a
local Ray) with ``batch`` examples per worker per step (weak scaling: 2 workers do twice the
examples per step). Throughput is training examples/s from the loop's own timers (evaluation and
start-up excluded), over every evaluation interval after the first (warm-up).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench_out import publish

from mmi_ray.config import load_config
from mmi_ray.layout import read_metrics
from mmi_ray.train import run_training

REPO = Path(__file__).resolve().parents[1]


def _config(steps: int, eval_every: int, batch: int, overrides, *extra: str):
    return load_config(REPO / "configs" / "tiny_builtin.yaml", [
        "scaling.cpus_per_worker=1", f"train.batch_size={batch}", f"train.max_steps={steps}",
        f"train.eval_every={eval_every}", "data.builtin.num_valid=30", *extra, *overrides])


def _rate(lines: list[dict], examples_per_step: int) -> tuple[float, float]:
    """(examples/s, s/step) from metrics lines, leaving out the first interval (warm-up)."""
    first = lines[0] if len(lines) > 1 else {"train_time_s": 0.0, "step": 0}
    seconds = lines[-1]["train_time_s"] - first["train_time_s"]  # train_time_s is cumulative in-loop time
    steps = lines[-1]["step"] - first["step"]
    return steps * examples_per_step / seconds, seconds / steps


def throughput(workers: int, args, storage: str) -> dict:
    cfg = _config(args.steps, args.eval_every, args.batch, args.overrides, f"scaling.num_workers={workers}",
                  f"run.storage_path={storage}", f"run.name=scaling-{workers}w")
    summary = run_training(cfg, verbose=False)
    lines = read_metrics(summary["run_dir"])
    rate, step_s = _rate(lines, args.batch * workers)
    return {"workers": workers, "examples_per_s": rate, "step_s": step_s}


def _alone(args_overrides: tuple, q) -> None:
    """One in-process loop (no Ray, no DDP): examples/s after the first evaluation interval."""
    from mmi_ray.recipe import run_loop
    from mmi_ray.worker import local_env

    steps, eval_every, batch, overrides = args_overrides
    lines: list[dict] = []
    run_loop(_config(steps, eval_every, batch, overrides), local_env(lambda m, _c: lines.append(m)))
    q.put(_rate(lines, batch)[0])


def ceiling(k: int, args) -> float:
    """Summed examples/s of ``k`` independent single-thread loops running at once: what this
    machine allows k workers without any communication or Ray processes."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=_alone, args=((args.steps, args.eval_every, args.batch, tuple(args.overrides)), q))
             for _ in range(k)]
    for p in procs:
        p.start()
    rates = [q.get() for _ in procs]
    for p in procs:
        p.join()
    return sum(rates)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--ceiling", action="store_true",
                    help="also run 1 and 2 independent loops at once without Ray (the machine's own limit)")
    ap.add_argument("--out", default=None)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        rows = [throughput(w, args, tmp) for w in args.workers]
    base = rows[0]["examples_per_s"]
    extra = []
    if args.ceiling:
        alone = [ceiling(k, args) for k in (1, 2)]
        extra = ["", f"Without Ray or DDP, independent loops at once: 1 -> {alone[0]:.1f} ex/s, 2 -> {alone[1]:.1f} "
                     f"ex/s ({alone[1] / alone[0]:.2f}x): the most 2 workers could reach on this machine."]
        rows.append({"ceiling_1": alone[0], "ceiling_2": alone[1]})
    head = (f"tiny T5 (configs/tiny_builtin.yaml), {args.batch} examples per worker per step, 1 CPU (1 thread) per "
            f"worker, steps {args.eval_every + 1}-{args.steps}")
    lines = [head, "", "| workers | examples/s | s/step | vs 1 worker |", "|---|---|---|---|"]
    lines += [f"| {r['workers']} | {r['examples_per_s']:.1f} | {r['step_s']:.3f} | {r['examples_per_s'] / base:.2f}x |"
              for r in rows if "workers" in r] + extra
    publish(lines, args.out, "scaling.py", argv, "Data-parallel scaling")
    return rows


if __name__ == "__main__":
    main()
