"""Summarise a finished (or stopped) sweep from its folder: the trials table, the best completed
configuration and its test accuracy (computed once, never shown to the searcher), compute used.

It reads the sweep through the same loader, ranking and best-configuration code as the report
(mmi_ray/analysis), so the two can never choose different trials.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..layout import COMPLETED, ERROR, STEP, TRIALS_FILE
from ..results.ranking import best_entry, final_rows, ranked, searched_values
from ..results.records import load_sweep_dir
from ..results.stats import (
    LABEL_ONLY,
    aggregate,
    at_budget,
    best_of_method,
    metric_bounds,
    newcombe_difference,
    pareto_front,
    t_interval,
    wilson_interval,
)
from ..storage import join, write_text
from .spec import LoadedSweep, params_text


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


def method_summary(agg: pd.DataFrame, runs: pd.DataFrame, metric: str, mode: str, searched: list[str]) -> list[dict]:
    """Each method's best completed configuration (equal budget), best first, with an interval that
    says what it counts: Student-t over seeds with 2 or more seeds, else Wilson over the validation
    questions of the one seed; and its difference from label-only, when the sweep trained it."""
    if agg.empty:
        return []
    done = agg[agg["status"] == COMPLETED]
    out = []
    for method in done["method"].drop_duplicates():
        best = best_of_method(done, method, mode)
        finals = final_rows(runs, best["sweep"], best["trial_id"])
        vals = finals[metric].astype(float).tolist()
        n_q = int(finals["val_n"].iloc[0]) if "val_n" in finals and finals["val_n"].notna().all() else 0
        e = {"method": method, "trial_id": best["trial_id"], "params": searched_values(best, searched),
             "mean": float(best["mean"]), "n_seeds": len(vals), "n_questions": n_q, "per_seed": vals}
        if len(vals) >= 2:
            e["low"], e["high"] = t_interval(vals, bounds=metric_bounds(metric))
            e["interval"] = f"Student-t over {len(vals)} seeds"
        elif n_q and metric.endswith("accuracy"):  # a share of questions answered right
            e["low"], e["high"] = wilson_interval(vals[0] * n_q, n_q)
            e["interval"] = f"Wilson over {n_q} questions, 1 seed"
        out.append(e)
    out.sort(key=lambda e: e["mean"], reverse=mode == "max")
    base = next((e for e in out if e["method"] == LABEL_ONLY), None)
    for e in out:
        if base is None or e is base:
            continue
        e["vs_label_only"] = e["mean"] - base["mean"]
        if e["n_seeds"] >= 2 and base["n_seeds"] == e["n_seeds"]:
            e["vs_low"], e["vs_high"] = t_interval([a - b for a, b in zip(e["per_seed"], base["per_seed"])],
                                                   bounds=metric_bounds(metric, difference=True))
        elif (e["n_seeds"] == 1 and base["n_seeds"] == 1 and e["n_questions"] and base["n_questions"]
              and metric.endswith("accuracy")):
            e["vs_low"], e["vs_high"] = newcombe_difference(e["mean"], e["n_questions"], base["mean"],
                                                            base["n_questions"])
    return out


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
    reused = int(res.trials["reused_runs"].sum()) if "reused_runs" in res.trials else 0
    trained = finals[~finals["reused"].astype(bool)] if "reused" in finals else finals  # adopted runs cost nothing here
    train_time = float(trained["train_time_s"].fillna(0).sum()) if "train_time_s" in trained else 0.0
    return {
        "sweep": spec.name,
        "sweep_dir": sweep_dir,
        "objective": {"metric": obj, "mode": mode},
        "trials": int(len(df)),
        "status_counts": counts,
        "runs": int(res.runs[["trial_id", "seed"]].drop_duplicates().shape[0]) if not res.runs.empty else 0,
        "reused_runs": reused,
        "wall_time_s": wall_s,
        "trial_train_time_s": train_time,
        "overhead_ratio": wall_s / train_time if train_time else None,
        "best": best_entry(agg, res.runs, obj, mode, searched, evaluate_test),
        "methods": method_summary(agg, res.runs, obj, mode, searched),
        "objectives": [{"metric": o.metric, "mode": o.mode} for o in spec.objectives],
        "pareto": (pareto_front(res.runs, [(o.metric, o.mode) for o in spec.objectives], searched)
                   .to_dict("records") if spec.more_objectives else []),
        "table": format_table(df, sweep) if not df.empty else "",
    }


def print_summary(summary: dict) -> None:
    obj = summary["objective"]["metric"]
    print(f"\n[mmi-ray] sweep '{summary['sweep']}' in {summary['sweep_dir']}")
    print(summary["table"])
    counts = ", ".join(f"{v} {k}" for k, v in summary["status_counts"].items())
    print(f"\ntrials: {summary['trials']} ({counts})")
    if summary["status_counts"].get(ERROR):
        print(f"{summary['status_counts'][ERROR]} trial(s) ended in an error ({TRIALS_FILE}'s error column says "
              "which): the same `mmi-ray sweep` command with --resume runs them again (for a passing fault: storage "
              "gone, a node lost)")
    if summary.get("reused_runs"):
        print(f"reused: {summary['reused_runs']} of {summary['runs']} runs were adopted from earlier runs of the same "
              "config, data and code, not trained (--rerun trains them again)")
    if summary["overhead_ratio"]:
        print(f"wall time {summary['wall_time_s']:.0f} s; in-loop training time of all runs "
              f"{summary['trial_train_time_s']:.0f} s; overhead ratio {summary['overhead_ratio']:.2f}")
    _print_methods(summary)
    _print_pareto(summary)
    b = summary["best"]
    if b is None:
        print("no trial completed: no best configuration (early-stopped trials are not ranked against finished ones)")
        return
    if b.get("completed", 0) > 1 and b.get("tied") == b["completed"] - 1:
        print(f"no best configuration: every completed configuration scored {obj} {b[obj]:.4g} (nothing to tell "
              "them apart at this budget)")
        return
    print(f"best configuration (completed trials, equal budget of {b[STEP]} steps): {params_text(b['params'])}")
    if b.get("tied"):
        print(f"  (tied with {b['tied']} other configuration(s) at {obj} {b[obj]:.4g}: the ranking's order, by the "
              "configuration's values then trial id, put this one first)")
    line = f"  {obj} {b[obj]:.4f}"
    if "test_accuracy" in b:
        tests, n_q = b["test_accuracy_per_seed"], b.get("test_n")
        if len(tests) >= 2:
            lo, hi = t_interval(tests, bounds=metric_bounds("test_accuracy"))
            shown = f" [{lo:.4f}, {hi:.4f}] (95% t, n={len(tests)} seeds)"
        elif n_q:
            lo, hi = wilson_interval(tests[0] * n_q, n_q)
            shown = f" [{lo:.4f}, {hi:.4f}] (95% Wilson, n={n_q} questions, 1 seed)"
        else:
            shown = ""
        line += f"; test_accuracy {b['test_accuracy']:.4f}{shown} (computed once, for this report)"
    print(line)


def _pct(lo, hi) -> str:
    return f"[{100 * lo:.1f}, {100 * hi:.1f}]" if lo == lo and hi == hi else "(no interval)"


def _print_methods(summary: dict) -> None:
    lines = methods_lines(summary)
    if lines:
        print("\n" + "\n".join(lines))


def methods_lines(summary: dict) -> list[str]:
    """The sweep's closing lines per method (each method's best configuration), as printed."""
    methods = summary.get("methods") or []
    if len(methods) < 2:
        return []
    obj = summary["objective"]["metric"]
    step = summary["best"][STEP] if summary.get("best") else "the full"
    lines = [f"by method ({obj}, each method's best configuration at {step} steps; chosen on these figures, "
             "so a little optimistic):"]
    width = max(len(e["method"]) for e in methods)
    for e in methods:
        line = f"  {e['method']:<{width}}  {100 * e['mean']:5.1f}% {_pct(e.get('low', float('nan')), e.get('high', float('nan')))}"
        if "vs_label_only" in e:
            line += (f"  {100 * e['vs_label_only']:+.1f} points vs label-only "
                     f"{_pct(e.get('vs_low', float('nan')), e.get('vs_high', float('nan')))}")
        lines.append(line)
    kinds = sorted({e["interval"] for e in methods if "interval" in e})
    if kinds:
        note = "; ".join(kinds)
        if any(e["n_seeds"] == 1 for e in methods):
            note += ": seed-to-seed variation is not in these intervals (confirmation runs measure it)"
        lines.append(f"  (95% intervals: {note})")
    return lines


def _print_pareto(summary: dict) -> None:
    rows = summary.get("pareto") or []
    if not rows:
        return
    objs = summary["objectives"]
    front = [r for r in rows if r["pareto"]]
    names = ", ".join(f"{o['metric']} ({o['mode']})" for o in objs)
    print(f"\nPareto front on {names}: {len(front)} of {len(rows)} completed configurations "
          "(mean over seeds, full budget; none is worse on every objective than another):")
    cols = ["trial_id", "method", *[o["metric"] for o in objs], "n_seeds"]
    if any(r.get("trials", 1) > 1 for r in front):  # a configuration proposed by several trials: shown once
        cols.append("trials")
    table = pd.DataFrame(front)[cols]
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
