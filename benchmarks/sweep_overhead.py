"""Sweep overhead (issue 7, figure 3): sweep wall time against the trials' in-loop training time.

    python benchmarks/sweep_overhead.py [SPEC] [--out BENCHMARKS.md] [spec overrides ...]
    python benchmarks/sweep_overhead.py sweeps/quickstart.yaml                       # the quickstart
    python benchmarks/sweep_overhead.py sweeps/quickstart.yaml num_trials=2 \\
        overrides.train.max_steps=2400 overrides.train.eval_every=800 scheduler.type=none  # ~5-minute trials

Runs the sweep on a local Ray (a fresh name under a temp storage path) and prints:
- the ratio the issue names: sweep wall time / sum of the trials' in-loop training time;
- the same per trial slot: wall x concurrent trials / summed in-loop time (1.0 = the slots never idle
  and every second of a trial is a training step);
- where each trial's time went: in-loop training, evaluation, and the rest (start-up of the trial
  and its Train worker group, data and model building, checkpoints, reporting).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from bench_out import publish

REPO = Path(__file__).resolve().parents[1]


def trial_breakdown(sweep_dir: Path) -> list[dict]:
    """Per trial: Tune's total time and the loop's own timers from each seed's metrics.jsonl."""
    from mmi_ray.layout import RESULT_FILE, RUNS_DIR, TRIAL_PREFIX, read_metrics, run_name

    rows = []
    for tdir in sorted(sweep_dir.glob(f"{TRIAL_PREFIX}*")):
        results = [json.loads(x) for x in (tdir / RESULT_FILE).read_text().splitlines() if x.strip()]
        if not results:
            continue
        tid = tdir.name[len(TRIAL_PREFIX):]
        train = evals = 0.0
        for run in sweep_dir.glob(f"{RUNS_DIR}/{run_name(tid, '*')}"):
            lines = read_metrics(run)
            train += lines[-1].get("train_time_s", 0.0) if lines else 0.0
            evals += sum(m.get("eval_time_s", 0.0) for m in lines)
        rows.append({"trial": tid, "total_s": results[-1]["time_total_s"], "train_s": train, "eval_s": evals,
                     "steps": results[-1].get("step")})
    return rows


def main(argv: list[str] | None = None) -> dict:
    from mmi_ray.sweep import load_sweep, run_sweep

    ap = argparse.ArgumentParser()
    ap.add_argument("spec", nargs="?", default=str(REPO / "sweeps" / "quickstart.yaml"))
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    storage = tempfile.mkdtemp(prefix="mmi-overhead-")
    name = f"overhead-{int(time.time())}"
    sweep = load_sweep(args.spec, [*args.overrides, f"storage_path={storage}", f"name={name}"])
    summary = run_sweep(sweep, verbose=0)
    from mmi_ray.sweep.tuner import cluster_resources

    slots = sweep.derived_concurrency(cluster_resources())
    wall, train = summary["wall_time_s"], summary["trial_train_time_s"]
    trials = trial_breakdown(Path(storage) / name)
    tot = sum(t["total_s"] for t in trials)
    evals = sum(t["eval_s"] for t in trials)
    res = {"wall_s": wall, "train_s": train, "ratio": wall / train, "slots": slots,
           "slot_ratio": wall * slots / train, "trials": len(trials), "trial_total_s": tot, "eval_s": evals,
           "other_s": tot - train - evals, "status": summary["status_counts"]}
    n = max(1, len(trials))
    lines = [f"`{Path(args.spec).name}` {' '.join(args.overrides)}: {len(trials)} trials "
             f"({', '.join(f'{v} {k}' for k, v in summary['status_counts'].items())}), {slots} at once",
             "", "| figure | value |", "|---|---|",
             f"| sweep wall time | {wall:.0f} s |",
             f"| summed in-loop training time | {train:.0f} s |",
             f"| **wall / in-loop** (the issue's ratio) | **{res['ratio']:.2f}** |",
             f"| wall x {slots} slots / in-loop | {res['slot_ratio']:.2f} |",
             f"| per trial: total (Tune) / in-loop / evaluation / rest | {tot / n:.1f} / {train / n:.1f} / "
             f"{evals / n:.1f} / {res['other_s'] / n:.1f} s |"]
    publish(lines, args.out, "sweep_overhead.py", argv, "Sweep overhead")
    return res


if __name__ == "__main__":
    main()
