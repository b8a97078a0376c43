"""Pure DataFrame -> DataFrame functions: budgets, per-configuration aggregates over seeds with
bootstrap confidence intervals, and seed-paired comparisons against the DSS / label-only baselines."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from ..config import LossConfig
from .best import best_configuration

LABEL_ONLY, DSS = "label-only", "DSS"

# Reference test accuracies (%) for t5-v1_1-base, full data, PaLM rationales (method.md section 4).
REFERENCE = {
    ("google/t5-v1_1-base", "esnli"): {LABEL_ONLY: 88.38, DSS: 89.51},
    ("google/t5-v1_1-base", "anli1"): {LABEL_ONLY: 43.58, DSS: 49.58, "MI (unconfirmed)": 51.2},
    ("google/t5-v1_1-base", "cqa"): {LABEL_ONLY: 62.19, DSS: 63.29, "MI (unconfirmed)": 63.88},
    ("google/t5-v1_1-base", "svamp"): {LABEL_ONLY: 62.63, DSS: 65.50, "MI (unconfirmed)": 68.0},
}


def method_of(rationale_weight: float, mi_weight: float, estimator: str | None) -> str:
    if (mi_weight or 0) == 0:
        return LABEL_ONLY if (rationale_weight or 0) == 0 else DSS
    return f"MI ({estimator})"


LOSS_DEFAULTS = {f"loss.{k}": f.default for k, f in LossConfig.model_fields.items()}


def run_method(cfg: dict) -> str:
    """The method of a run from its resolved config (dotted keys); unset loss keys take the config's defaults."""
    get = lambda k: cfg.get(k, LOSS_DEFAULTS[k])  # noqa: E731
    return method_of(get("loss.rationale_weight"), get("loss.mi_weight"), get("loss.mi_estimator"))


def with_method(runs: pd.DataFrame) -> pd.DataFrame:
    """Adds ``method`` from each row's loss columns (frames built by hand; loaded runs carry it)."""
    out = runs.copy()
    keys = [k for k in ("loss.rationale_weight", "loss.mi_weight", "loss.mi_estimator") if k in out]
    out["method"] = [run_method(dict(zip(keys, vals))) for vals in zip(*(out[k] for k in keys))] if keys \
        else run_method({})
    return out


def at_budget(runs: pd.DataFrame, budget: str | int = "final") -> pd.DataFrame:
    """One row per trial x seed: its last evaluation (``final``) or the one at step ``budget``."""
    if runs.empty:
        return runs
    if budget == "final":
        idx = runs.groupby(["sweep", "trial_id", "seed"])["step"].idxmax()
        return runs.loc[idx].reset_index(drop=True)
    return runs[runs["step"] == int(budget)].reset_index(drop=True)


def bootstrap_ci(values, confidence: float = 0.95, n_resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean (NaN, NaN with fewer than 2 values)."""
    v = np.asarray([x for x in values if x == x], dtype=float)
    if len(v) < 2:
        return (math.nan, math.nan)
    if np.all(v == v[0]):
        return (float(v[0]), float(v[0]))
    r = stats.bootstrap((v,), np.mean, confidence_level=confidence, n_resamples=n_resamples, method="percentile",
                        random_state=np.random.default_rng(seed))
    return float(r.confidence_interval.low), float(r.confidence_interval.high)


def config_keys(runs: pd.DataFrame, searched: list[str]) -> list[str]:
    return ["sweep", "trial_id", "method", *[c for c in searched if c in runs]]


def aggregate(runs: pd.DataFrame, metric: str = "val_accuracy", searched: list[str] | None = None,
              budget: str | int = "final", confidence: float = 0.95) -> pd.DataFrame:
    """Per configuration across seeds: mean, std, bootstrap CI, number of seeds, step, status."""
    b = at_budget(runs, budget)
    if b.empty:
        return pd.DataFrame()
    keys = config_keys(b, searched or [])
    rows = []
    for key, g in b.groupby(keys, dropna=False, sort=False):
        vals = g[metric].astype(float).tolist()
        lo, hi = bootstrap_ci(vals, confidence)
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        row.update(mean=float(np.mean(vals)), std=float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan,
                   ci_low=lo, ci_high=hi, n_seeds=len(vals), step=int(g["step"].min()),
                   status=g["status"].iloc[0] if "status" in g else "", dataset=g["dataset"].iloc[0] if "dataset" in g else "",
                   model=g["model"].iloc[0] if "model" in g else "")
        rows.append(row)
    return pd.DataFrame(rows).sort_values("mean", ascending=False).reset_index(drop=True)


def best_of_method(agg: pd.DataFrame, method: str, mode: str = "max") -> pd.Series | None:
    """The best completed configuration of one method (the same ranking as the sweep's best)."""
    return best_configuration(agg[agg["method"] == method], mode)


def paired_comparison(runs: pd.DataFrame, agg: pd.DataFrame, baseline: str, metric: str = "val_accuracy",
                      budget: str | int = "final", confidence: float = 0.95) -> pd.DataFrame:
    """Each non-baseline configuration vs the best configuration of ``baseline`` (same dataset and
    model), paired by seed: mean difference, its bootstrap CI, paired t-test p-value, pairs."""
    base = best_of_method(agg, baseline)
    if base is None:
        return pd.DataFrame()
    b = at_budget(runs, budget)
    base_rows = b[(b["sweep"] == base["sweep"]) & (b["trial_id"] == base["trial_id"])].set_index("seed")[metric]
    rows = []
    for _, cfg in agg.iterrows():
        if cfg["method"] == baseline or (cfg.get("dataset") != base.get("dataset")):
            continue
        mine = b[(b["sweep"] == cfg["sweep"]) & (b["trial_id"] == cfg["trial_id"])].set_index("seed")[metric]
        seeds = sorted(set(mine.index) & set(base_rows.index))
        if not seeds:
            continue
        diffs = np.array([mine[s] - base_rows[s] for s in seeds], dtype=float)
        lo, hi = bootstrap_ci(diffs, confidence)
        p = float(stats.ttest_rel([mine[s] for s in seeds], [base_rows[s] for s in seeds]).pvalue) \
            if len(seeds) > 1 and np.any(diffs != diffs[0]) else math.nan
        rows.append({"sweep": cfg["sweep"], "trial_id": cfg["trial_id"], "method": cfg["method"],
                     "baseline": baseline, "baseline_trial": base["trial_id"], "mean_diff": float(diffs.mean()),
                     "ci_low": lo, "ci_high": hi, "p_value": p, "n_pairs": len(seeds), "status": cfg.get("status", "")})
    return pd.DataFrame(rows)


def paper_table(agg: pd.DataFrame, scale: float = 100.0) -> pd.DataFrame:
    """Datasets x methods: the best completed configuration of each method as mean ± CI half-width,
    with the published numbers beside ours where the dataset and model match."""
    cells: dict[str, dict[str, str]] = {}
    for (dataset, model), g in agg.groupby(["dataset", "model"], dropna=False):
        col = f"{dataset} ({model})"
        for method in sorted(g["method"].unique()):
            best = best_of_method(g, method)
            if best is None:
                continue
            half = (best["ci_high"] - best["ci_low"]) / 2 if best["ci_high"] == best["ci_high"] else math.nan
            text = f"{scale * best['mean']:.2f}"
            text += f" ± {scale * half:.2f}" if half == half else ""
            cells.setdefault(f"{method} (ours, n={best['n_seeds']})", {})[col] = text
        for method, value in REFERENCE.get((model, dataset), {}).items():
            cells.setdefault(f"{method} (published, test)", {})[col] = f"{value:.2f}"
    return pd.DataFrame(cells).T.sort_index() if cells else pd.DataFrame()
