"""Summarise a finished (or stopped) sweep: rank configurations at equal budget, report the best,
and evaluate it once on the test split (never shown to the searcher)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ..storage import join, write_text
from .spec import LoadedSweep

STATUS_COMPLETED, STATUS_STOPPED, STATUS_ERROR, STATUS_PENDING = "completed", "stopped early", "error", "not run"


def trials_frame(grid, sweep: LoadedSweep) -> pd.DataFrame:
    """One row per trial: searched values, status, steps reached, last reported metrics."""
    spec = sweep.spec
    obj = spec.objective.metric
    rows = []
    for r in grid:
        m = r.metrics or {}
        steps = int(m.get("step", 0) or 0)
        if r.error is not None:
            status = STATUS_ERROR
        elif not m:
            status = STATUS_PENDING
        elif steps >= sweep.max_steps:
            status = STATUS_COMPLETED
        else:
            status = STATUS_STOPPED
        row = {"trial_id": m.get("trial_id") or (r.path.rstrip("/").rsplit("trial_", 1)[-1] if r.path else "?"),
               "status": status, "step": steps}
        row.update({k: (r.config or {}).get(k) for k in spec.search})
        row[obj] = m.get(obj, math.nan)
        row[f"{obj}_std"] = m.get(f"{obj}_std", math.nan)
        for key in ("loss", "label", "rationale", "mi", "mi_estimate", "train_time_s_sum"):
            row[key] = m.get(key, math.nan)
        for s in spec.seeds:
            row[f"checkpoint_seed{s}"] = m.get(f"checkpoint_seed{s}")
        if r.error is not None:
            row["error"] = str(r.error).strip().splitlines()[-1][:300] if str(r.error).strip() else type(r.error).__name__
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    asc = spec.objective.mode == "min"
    order = {STATUS_COMPLETED: 0, STATUS_STOPPED: 1, STATUS_ERROR: 2, STATUS_PENDING: 3}
    df["_o"] = df["status"].map(order)
    df["_v"] = df[obj].round(9)  # ties (common at low accuracy) break by trial id, as in the report
    df = df.sort_values(["_o", "_v", "step", "trial_id"], ascending=[True, asc, False, True]).drop(
        columns=["_o", "_v"]).reset_index(drop=True)
    return df


def format_table(df: pd.DataFrame, sweep: LoadedSweep) -> str:
    obj = sweep.spec.objective.metric
    cols = ["trial_id", "status", "step", *sweep.spec.search, obj]
    if len(sweep.spec.seeds) > 1:
        cols.append(f"{obj}_std")
    show = df[cols].copy()
    for c in show.columns:
        if show[c].dtype.kind == "f":
            show[c] = show[c].map(lambda v: f"{v:.4g}")
    return show.to_string(index=False)


def summarize(grid, sweep: LoadedSweep, sweep_dir: str, wall_s: float, evaluate_test: bool = True) -> dict[str, Any]:
    from ..evaluate import evaluate_checkpoint

    spec = sweep.spec
    obj = spec.objective.metric
    df = trials_frame(grid, sweep)
    if not df.empty:
        write_text(join(sweep_dir, "trials.csv"),
                   df.drop(columns=[c for c in df.columns if c.startswith("checkpoint_seed")]).to_csv(index=False))
    completed = df[df["status"] == STATUS_COMPLETED] if not df.empty else df
    counts = df["status"].value_counts().to_dict() if not df.empty else {}
    train_time = float(df["train_time_s_sum"].fillna(0).sum()) if not df.empty else 0.0
    summary: dict[str, Any] = {
        "sweep": spec.name,
        "sweep_dir": sweep_dir,
        "objective": {"metric": obj, "mode": spec.objective.mode},
        "trials": int(len(df)),
        "status_counts": counts,
        "wall_time_s": wall_s,
        "trial_train_time_s": train_time,
        "overhead_ratio": wall_s / train_time if train_time else None,
        "best": None,
        "table": format_table(df, sweep) if not df.empty else "",
    }
    if not completed.empty:
        best = completed.iloc[0]
        entry = {"trial_id": best["trial_id"], "params": {k: _plain(best[k]) for k in spec.search},
                 obj: float(best[obj]), "step": int(best["step"])}
        if evaluate_test:
            tests = []
            for s in spec.seeds:
                ck = best.get(f"checkpoint_seed{s}")
                if ck:
                    tests.append(evaluate_checkpoint(ck, split="test")["test_accuracy"])
            if tests:
                entry["test_accuracy"] = sum(tests) / len(tests)
                entry["test_accuracy_per_seed"] = tests
        summary["best"] = entry
    return summary


def _plain(v):
    if hasattr(v, "item"):
        return v.item()
    return v


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
    print(f"best configuration (completed trials, equal budget of {b['step']} steps): {params}")
    line = f"  {obj} {b[obj]:.4f}"
    if "test_accuracy" in b:
        line += f"; test_accuracy {b['test_accuracy']:.4f} (computed once, for this report)"
    print(line)
