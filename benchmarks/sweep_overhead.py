"""Sweep overhead: sweep wall time against the trials' in-loop training time.

    python benchmarks/sweep_overhead.py [SPEC] [--repeats 5] [--out BENCHMARKS.md] [spec overrides ...]
    python benchmarks/sweep_overhead.py sweeps/quickstart.yaml                       # the quickstart
    python benchmarks/sweep_overhead.py sweeps/quickstart.yaml num_trials=2 \\
        overrides.train.max_steps=2400 overrides.train.eval_every=800 scheduler.type=none  # ~5-minute trials

Runs the sweep ``--repeats`` times on a local Ray (each a fresh name under its own temp storage
path: nothing is reused) and prints, as median [min, max] over the repeats:
- per trial slot: the sweep's wall time x concurrent trials / summed in-loop training time (1.0 =
  the slots never idle and every second of a trial is a training step), for the trials' part
  (``Tuner.fit``) and for the whole command (Ray start, the test evaluation of the best, the report);
- wall / summed in-loop time (the older figure: it flatters a sweep that runs trials side by side);
- where each trial's time went: in-loop training, evaluation, and the rest (start-up of the trial
  and its Train worker group, data and model building, checkpoints, reporting), and what the command
  spent outside the trials.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

from bench_out import report_figures, spread

REPO = Path(__file__).resolve().parents[1]


def trial_breakdown(sweep_dir: str) -> list[dict]:
    """Per trial: Tune's total time and the loop's own timers from each seed's metrics.jsonl (the
    sweep folder local or on a storage URI)."""
    from mmi_ray import storage
    from mmi_ray.layout import RESULT_FILE, RUNS_DIR, TRIAL_PREFIX, parse_run_name, read_metrics
    from mmi_ray.worker import CHECKPOINT_TIME, METRICS_WRITE_TIME

    runs = storage.listdir(storage.join(sweep_dir, RUNS_DIR))
    rows = []
    for tname in storage.listdir(sweep_dir):
        if not tname.startswith(TRIAL_PREFIX) or not storage.exists(storage.join(sweep_dir, tname, RESULT_FILE)):
            continue
        text = storage.read_text(storage.join(sweep_dir, tname, RESULT_FILE))
        results = [json.loads(x) for x in text.splitlines() if x.strip()]
        if not results:
            continue
        tid = tname[len(TRIAL_PREFIX):]
        train = evals = ckpt = writes = 0.0
        for run in runs:
            if (parse_run_name(run) or ("",))[0] != tid:
                continue
            lines = read_metrics(storage.join(sweep_dir, RUNS_DIR, run))
            train += lines[-1].get("train_time_s", 0.0) if lines else 0.0
            evals += sum(m.get("eval_time_s", 0.0) for m in lines)
            ckpt += lines[-1].get(CHECKPOINT_TIME, 0.0) if lines else 0.0
            writes += lines[-1].get(METRICS_WRITE_TIME, 0.0) if lines else 0.0
        rows.append({"trial": tid, "total_s": results[-1]["time_total_s"], "train_s": train, "eval_s": evals,
                     "checkpoint_s": ckpt, "metrics_write_s": writes, "steps": results[-1].get("step")})
    return rows


def one_sweep(spec: str, overrides: list[str], storage: str | None = None) -> dict:
    """One sweep under ``storage`` (a local folder or a URI; default: a new temp folder), under a new
    name: nothing is reused."""
    from mmi_ray.sweep import load_sweep, run_sweep
    from mmi_ray.sweep.placement import concurrency

    storage = storage or tempfile.mkdtemp(prefix="mmi-overhead-")
    name = f"overhead-{time.time_ns()}"
    # the search's slots are what is measured: confirmation runs (a spec's confirm:) are left out
    sweep = load_sweep(spec, ["confirm=null", *overrides, f"storage_path={storage}", f"name={name}"])
    import ray

    ours = not ray.is_initialized()  # else a Ray someone else started (a test's shared head): leave it be
    t0 = time.time()
    summary = run_sweep(sweep, verbose=0, rerun=True)
    t_report = time.time()
    from mmi_ray.analysis.report import build_report

    build_report([summary["sweep_dir"]], out_dir=tempfile.mkdtemp(prefix="mmi-overhead-report-"))  # what `mmi-ray sweep` does last
    t_report = time.time() - t_report
    command = time.time() - t0
    slots = concurrency(sweep)[0]
    if ours:
        ray.shutdown()  # the next repeat starts its own Ray, as a new `mmi-ray sweep` does
    wall, train = summary["wall_time_s"], summary["trial_train_time_s"]
    trials = trial_breakdown(summary["sweep_dir"])
    tot = sum(t["total_s"] for t in trials)
    evals = sum(t["eval_s"] for t in trials)
    ckpt = sum(t["checkpoint_s"] for t in trials)
    writes = sum(t["metrics_write_s"] for t in trials)
    return {"wall_s": wall, "command_s": command, "train_s": train, "ratio": wall / train, "slots": slots,
            "slot_ratio": wall * slots / train, "command_slot_ratio": command * slots / train, "trials": len(trials),
            "trial_total_s": tot, "eval_s": evals, "checkpoint_s": ckpt, "metrics_write_s": writes,
            "other_s": tot - train - evals - ckpt - writes, "status": summary["status_counts"],
            "ray_start_s": summary["phases"]["ray_start_s"], "summary_s": summary["phases"]["summary_s"],
            "report_s": t_report}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("spec", nargs="?", default=str(REPO / "sweeps" / "quickstart.yaml"))
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--repeats", type=int, default=5, help="sweeps run (at least 5 for a figure)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    runs = [one_sweep(args.spec, args.overrides) for _ in range(args.repeats)]
    res = {k: statistics.median(r[k] for r in runs) for k in
           ("wall_s", "command_s", "train_s", "ratio", "slot_ratio", "command_slot_ratio", "trial_total_s", "eval_s",
            "other_s")}
    first = runs[0]
    res.update(trials=first["trials"], slots=first["slots"], status=first["status"], runs=runs)
    n, slots = max(1, first["trials"]), first["slots"]
    per = lambda k: statistics.median(r[k] for r in runs) / n  # noqa: E731
    lines = [f"`{Path(args.spec).name}` {' '.join(args.overrides)}: {first['trials']} trials "
             f"({', '.join(f'{v} {k}' for k, v in first['status'].items())}), {slots} at once; {args.repeats} "
             f"sweep(s), median [min, max]" + ("" if args.repeats >= 5 else " (fewer than 5: a smoke run, not a figure)"),
             "", "| figure | value |", "|---|---|",
             f"| sweep wall time (trials: `Tuner.fit`) | {spread([r['wall_s'] for r in runs], 0)} s |",
             f"| the whole command (Ray start, trials, test of the best, report) | "
             f"{spread([r['command_s'] for r in runs], 0)} s |",
             f"| summed in-loop training time | {spread([r['train_s'] for r in runs], 0)} s |",
             f"| **per slot: wall x {slots} slots / in-loop** | **{spread([r['slot_ratio'] for r in runs], 2)}** |",
             f"| per slot, the whole command | {spread([r['command_slot_ratio'] for r in runs], 2)} |",
             f"| wall / in-loop (not per slot) | {spread([r['ratio'] for r in runs], 2)} |",
             f"| per trial: total (Tune) / in-loop / evaluation / rest | {per('trial_total_s'):.1f} / "
             f"{per('train_s'):.1f} / {per('eval_s'):.1f} / {per('other_s'):.1f} s |",
             f"| outside the trials: Ray start / summary (test of the best) / report | "
             f"{spread([r['ray_start_s'] for r in runs], 1)} / {spread([r['summary_s'] for r in runs], 1)} / "
             f"{spread([r['report_s'] for r in runs], 1)} s |"]
    report_figures(lines, args.out, "sweep_overhead.py", argv, "Sweep overhead")
    return res


if __name__ == "__main__":
    main()
