"""Summarise a finished (or stopped) sweep from its folder: the trials table, the best completed
configuration and its test accuracy (computed once, never shown to the searcher), compute used.

It reads the sweep through the same loader, ranking and best-configuration code as the report
(mmi_ray/analysis), so the two can never choose different trials.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..analysis.best import best_entry, ranked
from ..analysis.load import load_sweep_dir
from ..analysis.stats import aggregate, at_budget
from ..layout import STEP, TRIALS_FILE
from ..storage import join, write_text
from .spec import LoadedSweep


def trials_table(trials: pd.DataFrame, agg: pd.DataFrame, metric: str, mode: str) -> pd.DataFrame:
    """One row per trial, best first: method, searched values, status, step reached, the objective's
    mean and std over seeds, and the error of a failed trial."""
    if trials.empty:
        return trials
    t = trials.rename(columns={"steps_reached": STEP})
    vals = agg[["trial_id", "mean", "std", "n_seeds"]] if not agg.empty else pd.DataFrame(
        columns=["trial_id", "mean", "std", "n_seeds"])
    t = ranked(t.merge(vals, on="trial_id", how="left"), mode)
    return t.rename(columns={"mean": metric, "std": f"{metric}_std"}).drop(columns=["sweep", "max_steps"])


def format_table(df: pd.DataFrame, sweep: LoadedSweep) -> str:
    obj = sweep.spec.objective.metric
    cols = ["trial_id", "status", STEP, *sweep.spec.search, obj]
    if len(sweep.spec.seeds) > 1:
        cols.append(f"{obj}_std")
    show = df[cols].copy()
    for c in show.columns:
        if show[c].dtype.kind == "f":
            show[c] = show[c].map(lambda v: f"{v:.4g}")
    return show.to_string(index=False)


def summarize(sweep: LoadedSweep, sweep_dir: str, wall_s: float, evaluate_test: bool = True) -> dict[str, Any]:
    spec = sweep.spec
    obj, mode, searched = spec.objective.metric, spec.objective.mode, list(spec.search)
    res = load_sweep_dir(sweep_dir, finished=True)
    agg = aggregate(res.runs, obj, searched)
    df = trials_table(res.trials, agg, obj, mode)
    if not df.empty:
        write_text(join(sweep_dir, TRIALS_FILE), df.to_csv(index=False))
    counts = df["status"].value_counts().to_dict() if not df.empty else {}
    finals = at_budget(res.runs)
    train_time = float(finals["train_time_s"].fillna(0).sum()) if "train_time_s" in finals else 0.0
    return {
        "sweep": spec.name,
        "sweep_dir": sweep_dir,
        "objective": {"metric": obj, "mode": mode},
        "trials": int(len(df)),
        "status_counts": counts,
        "wall_time_s": wall_s,
        "trial_train_time_s": train_time,
        "overhead_ratio": wall_s / train_time if train_time else None,
        "best": best_entry(agg, res.runs, obj, mode, searched, evaluate_test),
        "table": format_table(df, sweep) if not df.empty else "",
    }


def print_summary(summary: dict) -> None:
    obj = summary["objective"]["metric"]
    print(f"\n[mmi-ray] sweep '{summary['sweep']}' in {summary['sweep_dir']}")
    print(summary["table"])
    counts = ", ".join(f"{v} {k}" for k, v in summary["status_counts"].items())
    print(f"\ntrials: {summary['trials']} ({counts})")
    if summary["overhead_ratio"]:
        print(f"wall time {summary['wall_time_s']:.0f} s; in-loop training time of all runs "
              f"{summary['trial_train_time_s']:.0f} s; overhead ratio {summary['overhead_ratio']:.2f}")
    b = summary["best"]
    if b is None:
        print("no trial completed: no best configuration (early-stopped trials are not ranked against finished ones)")
        return
    params = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in b["params"].items())
    print(f"best configuration (completed trials, equal budget of {b[STEP]} steps): {params}")
    line = f"  {obj} {b[obj]:.4f}"
    if "test_accuracy" in b:
        line += f"; test_accuracy {b['test_accuracy']:.4f} (computed once, for this report)"
    print(line)
