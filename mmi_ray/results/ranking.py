"""The ranking of a sweep's configurations, its best one, and that one's test accuracy: defined
here once, and used alike by the sweep's own summary and by the report.

Only configurations trained to the full budget (status ``completed``) can be best; ties in the
objective break by the configuration's values, then its trial id. Test accuracy is computed from each seed's final checkpoint, once,
after everything that chooses has chosen.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from ..layout import CHECKPOINT_PATH, COMPLETED, STATE_FILE, STATUSES, STEP
from ..storage import exists, join, parent


def ranked(agg: pd.DataFrame, mode: str = "max") -> pd.DataFrame:
    """Configurations best first: completed ones before the rest (in ``STATUSES`` order), then by the
    mean objective (rounded, so float noise does not reorder ties), the step reached, and then, so
    that equal scores order the same way in every run, by the configuration's own values (its dotted
    config-key columns) before the (random) trial id."""
    if agg.empty:
        return agg
    order = {s: i for i, s in enumerate(STATUSES)}
    values = {f"_t{i}": agg[c].astype(str) for i, c in enumerate(sorted(c for c in agg.columns if "." in c))}
    keyed = agg.assign(_o=agg["status"].map(order).fillna(len(STATUSES)), _v=agg["mean"].round(9), **values)
    keys = ["_o", "_v", STEP, *values, "trial_id"]  # values as text: any mix of types sorts
    return (keyed.sort_values(keys, ascending=[True, mode == "min", False, *[True] * len(values), True],
                              na_position="last", kind="stable")
            .drop(columns=["_o", "_v", *values]).reset_index(drop=True))


def best_configuration(agg: pd.DataFrame, mode: str = "max") -> pd.Series | None:
    """The best completed configuration, or None when none completed its budget."""
    r = ranked(agg, mode)
    done = r[r["status"] == COMPLETED] if not r.empty else r
    return None if done.empty else done.iloc[0]


def final_rows(runs: pd.DataFrame, sweep: str, trial_id: str) -> pd.DataFrame:
    """One trial's last evaluation of each seed, in seed order."""
    g = runs[(runs["sweep"] == sweep) & (runs["trial_id"] == trial_id)]
    return g.loc[g.groupby("seed")[STEP].idxmax()].sort_values("seed")


def test_figures(run_dir: str, checkpoint: str, step: int) -> dict:
    """A run's test figures at its final checkpoint, read once: evaluated the first time any reader
    (a sweep's closing lines, a confirmation, ``mmi-ray analyze``) asks, then kept in the run's folder
    (``test_eval.json``) and read from there."""
    from ..evaluate import evaluate_checkpoint
    from ..reuse import cached_test

    return cached_test(run_dir, checkpoint, step, lambda ckpt: evaluate_checkpoint(ckpt, "test"))


def seed_test_results(runs: pd.DataFrame, sweep: str, trial_id: str) -> list[dict]:
    """The test figures of each seed's final checkpoint of one trial (read once), in seed order."""
    finals = final_rows(runs, sweep, trial_id)
    return [test_figures(parent(p), p, int(step)) for p, step in zip(finals[CHECKPOINT_PATH], finals[STEP])
            if isinstance(p, str) and exists(join(p, STATE_FILE))]


def seed_test_accuracies(runs: pd.DataFrame, sweep: str, trial_id: str) -> list[float]:
    """Test accuracy of each seed's final checkpoint of one trial (read once), in seed order."""
    return [r["test_accuracy"] for r in seed_test_results(runs, sweep, trial_id)]


def best_entry(agg: pd.DataFrame, runs: pd.DataFrame, metric: str, mode: str, searched: list[str],
               evaluate_test: bool = True) -> dict[str, Any] | None:
    """The best configuration as a record (trial, method, parameters, validation mean, step, seeds),
    with the mean and per-seed test accuracy of its final checkpoints when ``evaluate_test``."""
    best = best_configuration(agg, mode)
    if best is None:
        return None
    done = agg[agg["status"] == COMPLETED]
    entry = {"sweep": best["sweep"], "trial_id": best["trial_id"], "method": best["method"],
             "params": searched_values(best, searched), metric: float(best["mean"]),
             STEP: int(best[STEP]), "n_seeds": int(best["n_seeds"]),
             # completed configurations with the best one's score (the ranking's order broke the tie)
             "tied": int((done["mean"].round(9) == round(float(best["mean"]), 9)).sum()) - 1,
             "completed": int(len(done))}
    if evaluate_test:
        results = seed_test_results(runs, best["sweep"], best["trial_id"])
        tests = [r["test_accuracy"] for r in results]
        if tests:
            entry["test_accuracy"] = sum(tests) / len(tests)
            entry["test_accuracy_per_seed"] = tests
            entry["test_n"] = results[0].get("test_n")  # questions each seed's run was scored on
    return entry


def searched_values(row: pd.Series, searched: list[str]) -> dict[str, Any]:
    """A configuration's searched values as plain Python (numpy scalars unwrapped)."""
    return {k: row[k].item() if hasattr(row[k], "item") else row[k] for k in searched if k in row}
