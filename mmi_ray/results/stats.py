"""Pure DataFrame -> DataFrame functions: budgets, per-configuration aggregates over seeds with
Student-t confidence intervals, and seed-paired comparisons against the DSS / label-only baselines.

Intervals are Student-t intervals of the mean over seeds (``INTERVAL``): at n = 3 a percentile
bootstrap is just [min, max] of three values and covers the mean about 75% of the time, while the
t interval holds its 95% on normal data and 93% on skewed, accuracy-like data (tests/test_analysis.py
simulates it). With fewer than 2 values there is no interval (NaN)."""

from __future__ import annotations

import functools
import math
import re

import numpy as np
import pandas as pd
from scipy import stats

from ..config import LossConfig
from .ranking import best_configuration

LABEL_ONLY, DSS = "label-only", "DSS"

# Published TEST accuracies (%), t5-v1_1-base (220M), full training sets, PaLM rationales
# (the sources below). They stand only beside our test figures for the same model and
# dataset, never beside validation figures.
SOURCE_DSS = ("Hsieh et al. 2023 (DSS), T5-base 220M, full data; read from a secondary summary of the "
              "paper, not confirmed against the paper itself")
SOURCE_MI = ("Chen et al. 2024 (MI), T5-base 220M; an aggregator's figure without its table, unconfirmed; "
             "MI's estimator not stated")
PUBLISHED = {
    ("google/t5-v1_1-base", "esnli"): {LABEL_ONLY: (88.38, SOURCE_DSS), DSS: (89.51, SOURCE_DSS), "MI": (89.5, SOURCE_MI)},
    ("google/t5-v1_1-base", "anli1"): {LABEL_ONLY: (43.58, SOURCE_DSS), DSS: (49.58, SOURCE_DSS), "MI": (51.2, SOURCE_MI)},
    ("google/t5-v1_1-base", "cqa"): {LABEL_ONLY: (62.19, SOURCE_DSS), DSS: (63.29, SOURCE_DSS), "MI": (63.88, SOURCE_MI)},
    ("google/t5-v1_1-base", "svamp"): {LABEL_ONLY: (62.63, SOURCE_DSS), DSS: (65.50, SOURCE_DSS), "MI": (68.0, SOURCE_MI)},
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


INTERVAL = "Student-t"
"""The name of the interval method, printed beside every interval with its n."""


def t_interval(values, confidence: float = 0.95, bounds: tuple[float, float] | None = None) -> tuple[float, float]:
    """Student-t interval of the mean, ``mean ± t(n-1) * s / sqrt(n)``, cut at ``bounds`` (an
    accuracy's mean lies in [0, 1], a difference of two in [-1, 1]); (NaN, NaN) with fewer than 2 values."""
    v = np.asarray([x for x in values if x == x], dtype=float)
    if len(v) < 2:
        return (math.nan, math.nan)
    half = _t_quantile((1 + confidence) / 2, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    lo, hi = float(v.mean() - half), float(v.mean() + half)
    return (max(lo, bounds[0]), min(hi, bounds[1])) if bounds else (lo, hi)


def too_wide(values, confidence: float = 0.95, bounds: tuple[float, float] | None = None) -> bool:
    """Whether the uncut t interval is wider than the whole range ``bounds`` (two seeds that disagree:
    [-250, +130] points for a difference): the seeds are too few to say more than the bounds do."""
    if not bounds:
        return False
    lo, hi = t_interval(values, confidence)
    return lo == lo and hi - lo > bounds[1] - bounds[0]


PROPORTIONS = ("accuracy", "ece", "faithful")
"""Metric names (parts of) whose values are proportions in [0, 1]."""


def metric_bounds(metric: str, difference: bool = False) -> tuple[float, float] | None:
    """Where a metric's mean lies (a proportion: [0, 1]; a difference of two: [-1, 1]); None: unbounded."""
    if not any(w in metric for w in PROPORTIONS):
        return None
    return (-1.0, 1.0) if difference else (0.0, 1.0)


@functools.lru_cache(maxsize=256)
def _t_quantile(q: float, df: int) -> float:
    return float(stats.t.ppf(q, df))


def wilson_interval(correct: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of an accuracy over ``n`` independent questions (scipy's); (NaN, NaN)
    when ``n`` is 0. One training seed: it says nothing about seed-to-seed variation."""
    if not n:
        return (math.nan, math.nan)
    ci = stats.binomtest(int(round(correct)), int(n)).proportion_ci(confidence, method="wilson")
    return float(ci.low), float(ci.high)


def newcombe_difference(p1: float, n1: int, p2: float, n2: int, confidence: float = 0.95) -> tuple[float, float]:
    """Interval of ``p1 - p2`` from the two Wilson intervals (Newcombe's method 10). For two runs
    scored on the same questions it ignores the pairing, so it is wider than a paired interval."""
    l1, u1 = wilson_interval(p1 * n1, n1, confidence)
    l2, u2 = wilson_interval(p2 * n2, n2, confidence)
    d = p1 - p2
    return d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2), d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)


def config_keys(runs: pd.DataFrame, searched: list[str]) -> list[str]:
    return ["sweep", "trial_id", "method", *[c for c in searched if c in runs]]


def aggregate(runs: pd.DataFrame, metric: str = "val_accuracy", searched: list[str] | None = None,
              budget: str | int = "final", confidence: float = 0.95) -> pd.DataFrame:
    """Per configuration across seeds: mean, std, Student-t interval, number of seeds, step, status."""
    b = at_budget(runs, budget)
    if b.empty:
        return pd.DataFrame()
    keys = config_keys(b, searched or [])
    rows = []
    for key, g in b.groupby(keys, dropna=False, sort=False):
        vals = g[metric].astype(float).tolist()
        lo, hi = t_interval(vals, confidence, metric_bounds(metric))
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        row.update(mean=float(np.mean(vals)), std=float(np.std(vals, ddof=1)) if len(vals) > 1 else math.nan,
                   ci_low=lo, ci_high=hi, ci_wide=too_wide(vals, confidence, metric_bounds(metric)),
                   n_seeds=len(vals), step=int(g["step"].min()),
                   status=g["status"].iloc[0] if "status" in g else "", dataset=g["dataset"].iloc[0] if "dataset" in g else "",
                   model=g["model"].iloc[0] if "model" in g else "")
        rows.append(row)
    return pd.DataFrame(rows).sort_values("mean", ascending=False).reset_index(drop=True)


def best_of_method(agg: pd.DataFrame, method: str, mode: str = "max") -> pd.Series | None:
    """The best completed configuration of one method (the same ranking as the sweep's best)."""
    return best_configuration(agg[agg["method"] == method], mode)


def paired_comparison(runs: pd.DataFrame, agg: pd.DataFrame, baseline: str, metric: str = "val_accuracy",
                      budget: str | int = "final", confidence: float = 0.95) -> pd.DataFrame:
    """Each other configuration vs the best completed configuration of ``baseline`` (same dataset and
    model), paired by seed, at equal budget only: a configuration that reached another step (an
    early-stopped one at ``final``) is listed with ``compared`` False and no figures. Per pair: mean
    difference, its Student-t interval, the paired t-test p-value, the effect size d_z (mean
    difference / sd of the differences) and n. Correct the p-values of a whole report with ``holm``."""
    base = best_of_method(agg, baseline)
    if base is None:
        return pd.DataFrame()
    b = at_budget(runs, budget)
    base_rows = b[(b["sweep"] == base["sweep"]) & (b["trial_id"] == base["trial_id"])].set_index("seed")[metric]
    rows = []
    for _, cfg in agg.iterrows():
        if cfg["method"] == baseline or cfg.get("dataset") != base.get("dataset") or cfg.get("model") != base.get("model"):
            continue
        row = {"sweep": cfg["sweep"], "trial_id": cfg["trial_id"], "method": cfg["method"], "baseline": baseline,
               "baseline_trial": base["trial_id"], "step": int(cfg["step"]), "baseline_step": int(base["step"])}
        mine = b[(b["sweep"] == cfg["sweep"]) & (b["trial_id"] == cfg["trial_id"])].set_index("seed")[metric]
        seeds = sorted(set(mine.index) & set(base_rows.index))
        if int(cfg["step"]) != int(base["step"]) or not seeds:
            rows.append({**row, "compared": False, "n_pairs": len(seeds)})
            continue
        diffs = np.array([mine[s] - base_rows[s] for s in seeds], dtype=float)
        bounds = metric_bounds(metric, difference=True)
        lo, hi = t_interval(diffs, confidence, bounds)
        spread = diffs.std(ddof=1) if len(diffs) > 1 else math.nan
        varied = len(seeds) > 1 and np.any(diffs != diffs[0])
        p = float(stats.ttest_rel([mine[s] for s in seeds], [base_rows[s] for s in seeds]).pvalue) if varied else math.nan
        rows.append({**row, "compared": True, "n_pairs": len(seeds), "mean_diff": float(diffs.mean()), "ci_low": lo,
                     "ci_high": hi, "ci_wide": too_wide(diffs, confidence, bounds),
                     "effect_dz": float(diffs.mean() / spread) if varied else math.nan, "p_value": p})
    return pd.DataFrame(rows)


def holm(p_values) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values for one family of tests (NaN stays NaN, and is not counted)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    m = len(idx)
    running = 0.0
    for rank, i in enumerate(idx[np.argsort(p[idx], kind="stable")]):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def paper_table(agg: pd.DataFrame, scale: float = 100.0) -> pd.DataFrame:
    """Datasets x methods, VALIDATION: the best completed configuration of each method as mean ± the
    half-width of its Student-t interval, with n. Published numbers (test accuracies) are not here:
    ``published_beside`` puts them beside test figures only."""
    cells: dict[str, dict[str, str]] = {}
    for (dataset, model), g in agg.groupby(["dataset", "model"], dropna=False):
        col = f"{dataset} ({model}), validation"
        for method in sorted(g["method"].unique()):
            best = best_of_method(g, method)
            if best is None:
                continue
            half = (best["ci_high"] - best["ci_low"]) / 2 if best["ci_high"] == best["ci_high"] else math.nan
            text = f"{scale * best['mean']:.2f}"
            text += f" ± {scale * half:.2f}" if half == half else " (n < 2: no interval)"
            cells.setdefault(f"{method} (ours, n={best['n_seeds']})", {})[col] = text
    return pd.DataFrame(cells).T.sort_index() if cells else pd.DataFrame()


def published_beside(test: pd.DataFrame, scale: float = 100.0) -> pd.DataFrame:
    """Our TEST figures (``test``: method, dataset, model, test_mean, test_low, test_high, test_n) with
    the published test accuracy for the same model, dataset and method beside them, and its source."""
    rows = []
    for _, r in test.iterrows():
        ref = PUBLISHED.get((r["model"], r["dataset"]), {})
        pub = ref.get(r["method"]) or (ref.get("MI") if str(r["method"]).startswith("MI") else None)
        ours = f"{scale * r['test_mean']:.2f}" if r["test_mean"] == r["test_mean"] else "n/a"
        if r["test_low"] == r["test_low"]:
            ours += f" [{scale * r['test_low']:.2f}, {scale * r['test_high']:.2f}]"
        rows.append({"dataset": r["dataset"], "model": r["model"], "method": r["method"], "n": int(r["test_n"]),
                     "ours (test, 95% " + INTERVAL + ")": ours,
                     "published (test)": f"{pub[0]:.2f}" if pub else "", "source": pub[1] if pub else ""})
    return pd.DataFrame(rows)


# --- confirmation runs (mmi_ray/sweep/confirm.py): one row per (arm, seed)


def arm_slug(method: str) -> str:
    """A method as an arm name one can type: ``MI (maxpool)`` -> ``MI-maxpool``."""
    return re.sub(r"\s*\((.*)\)", r"-\1", method).replace(" ", "-")


def arm_names(arms: dict[str, dict]) -> dict[str, str]:
    """An arm's name says what it is: its method (``DSS``, ``label-only``, ``MI-maxpool``), and where
    two arms share a method, the values that tell them apart (``MI-maxpool@mi_weight=0.3``).
    ``arms``: key -> {method, params} as a confirmation holds them; returns key -> name."""
    groups: dict[str, list[str]] = {}
    for key, arm in arms.items():
        groups.setdefault(arm_slug(arm["method"]), []).append(key)
    names = {}
    for slug, keys in groups.items():
        if len(keys) == 1:
            names[keys[0]] = slug
            continue
        params = [arms[k].get("params") or {} for k in keys]
        differ = [p for p in dict.fromkeys(k for ps in params for k in ps)
                  if len({str(ps.get(p)) for ps in params}) > 1]
        for i, (k, ps) in enumerate(zip(keys, params, strict=True)):
            tag = ",".join(f"{p.rsplit('.', 1)[-1]}={ps[p]:.3g}" if isinstance(ps.get(p), float)
                           else f"{p.rsplit('.', 1)[-1]}={ps.get(p)}" for p in differ)
            names[k] = f"{slug}@{tag}" if tag else f"{slug}#{i + 1}"
    return {k: names[k] for k in arms}


def named_arms(arms: dict[str, dict]) -> dict[str, str]:
    """Key -> the name shown: the key itself, except for the rank-like keys of older confirmations
    (``top1``, ``top2``: the search's order, which the confirmation may reverse)."""
    if not any(re.fullmatch(r"top\d+", k) for k in arms):
        return {k: k for k in arms}
    return arm_names(arms)


def confirmation_runs(state: dict) -> pd.DataFrame:
    """A confirmation state's runs, one row per (arm, seed), each arm under the name it is shown by."""
    runs = pd.DataFrame(state.get("runs", []))
    if not runs.empty:
        runs["arm"] = runs["arm"].map(named_arms(state["arms"]))
    return runs


def arm_table(runs: pd.DataFrame, metric: str = "val_accuracy", confidence: float = 0.95,
              mode: str = "max") -> pd.DataFrame:
    """Per confirmation arm, ranked on the mean validation ``metric`` over its seeds (``rank``; arms
    with equal means share it and are ``tied``; the export takes rank 1): n seeds, then the
    validation and the test mean, each with its Student-t interval over seeds cut at [0, 1]
    (``*_wide``: the uncut one was wider than [0, 1]: too few seeds to bound the mean), in separate columns;
    ``val_n`` / ``test_n``: the questions each run was scored on (the interval covers seed-to-seed
    variation on those questions)."""
    rows = []
    for arm, g in runs.groupby("arm", sort=False):
        vb, tb = metric_bounds(metric), metric_bounds("test_accuracy")
        vlo, vhi = t_interval(g[metric], confidence, vb)
        tlo, thi = t_interval(g["test_accuracy"], confidence, tb)
        row = {"arm": arm, "method": g["method"].iloc[0], "n": len(g), "val_mean": float(g[metric].mean()),
               "val_low": vlo, "val_high": vhi, "test_mean": float(g["test_accuracy"].mean()),
               "test_low": tlo, "test_high": thi,
               "val_wide": too_wide(g[metric], confidence, vb), "test_wide": too_wide(g["test_accuracy"], confidence, tb),
               # seed-to-seed standard deviations (n - 1); NaN for one seed
               "val_sd": float(g[metric].std()), "test_sd": float(g["test_accuracy"].std())}
        for k in ("val_n", "test_n"):  # questions per run (older confirmation files lack them)
            if k in g and g[k].notna().all():
                row[k] = int(g[k].max())
        if "test_ece" in g and g["test_ece"].notna().all():  # calibration: the MI paper's equal-mass ECE
            row["test_ece"] = float(g["test_ece"].mean())
        rows.append(row)
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    key = table["val_mean"].round(9)
    table.insert(0, "rank", key.rank(method="min", ascending=mode == "min").astype(int))
    table.insert(1, "tied", key.duplicated(keep=False))
    return table.sort_values("rank", kind="stable").reset_index(drop=True)


def arm_comparisons(runs: pd.DataFrame, column: str = "test_accuracy", confidence: float = 0.95) -> pd.DataFrame:
    """Every arm against the DSS and the label-only arm, paired by seed on ``column``: mean
    difference with its Student-t interval, effect size d_z, paired t-test p, n, and the p-values
    Holm-corrected over all these comparisons (one family; DSS against label-only counted once)."""
    rows, done = [], set()
    for baseline in (DSS, LABEL_ONLY):
        base_arms = runs.loc[runs["method"] == baseline, "arm"]
        if base_arms.empty:
            continue
        base = runs[runs["arm"] == base_arms.iloc[0]].set_index("seed")[column]
        for arm, g in runs.groupby("arm", sort=False):
            if arm == base_arms.iloc[0] or (base_arms.iloc[0], arm) in done:
                continue
            done.add((arm, base_arms.iloc[0]))
            mine = g.set_index("seed")[column]
            seeds = sorted(set(mine.index) & set(base.index))
            diffs = np.array([mine[s] - base[s] for s in seeds], dtype=float)
            if not len(diffs):
                continue
            bounds = metric_bounds(column, difference=True)
            lo, hi = t_interval(diffs, confidence, bounds)
            varied = len(diffs) > 1 and np.any(diffs != diffs[0])
            p = float(stats.ttest_rel([mine[s] for s in seeds], [base[s] for s in seeds]).pvalue) if varied else math.nan
            rows.append({"arm": arm, "method": g["method"].iloc[0], "baseline": baseline, "n_pairs": len(seeds),
                         "mean_diff": float(diffs.mean()), "ci_low": lo, "ci_high": hi,
                         "ci_wide": too_wide(diffs, confidence, bounds),
                         # every run of both arms scored the same (all 0, say): nothing to compare
                         "all_equal": len({*mine[seeds], *base[seeds]}) == 1,
                         "common": float(mine[seeds[0]]) if len({*mine[seeds], *base[seeds]}) == 1 else math.nan,
                         "effect_dz": float(diffs.mean() / diffs.std(ddof=1)) if varied else math.nan, "p_value": p})
    out = pd.DataFrame(rows)
    if not out.empty:
        out["p_holm"] = holm(out["p_value"])
    return out


# --- several objectives (a multi-objective spec)


def pareto_front(runs: pd.DataFrame, objectives: list[tuple[str, str]], searched: list[str]) -> pd.DataFrame:
    """The configurations that completed the full budget, one row each (a configuration proposed
    again by several trials once, ``trials`` counting them): method, searched values,
    each objective's mean over seeds at the final evaluation, ``n_seeds``, and ``pareto``: no other
    configuration is at least as good on every objective and better on one (``objectives``: (metric,
    mode) pairs). Front first, then by the first objective."""
    from ..layout import COMPLETED

    metrics = [m for m, _ in objectives]
    if runs.empty or "status" not in runs or any(m not in runs for m in metrics):
        return pd.DataFrame()
    final = at_budget(runs[runs["status"] == COMPLETED])
    if final.empty:
        return pd.DataFrame()
    keys = ["sweep", "trial_id"]
    values = [k for k in searched if k in final]
    first = final.groupby(keys, sort=False)[["method", *values]].first()
    means = final.groupby(keys, sort=False)[metrics].mean()
    out = first.join(means).join(final.groupby(keys, sort=False).size().rename("n_seeds")).reset_index()
    # a configuration TPE proposed again is one point (its trials share one adopted run): the first
    # trial stands for it, ``trials`` says how many proposed it
    out["trials"] = 1
    if values:  # without searched values nothing tells two configurations apart
        conf = ["sweep", *values]
        out["trials"] = out.groupby(conf, sort=False, dropna=False)["trial_id"].transform("size")
        out = out.drop_duplicates(conf, keep="first").reset_index(drop=True)
    # as losses (lower is better) for the dominance test; a configuration missing a figure is not on the front
    loss = np.column_stack([out[m].to_numpy(float) * (-1 if mode == "max" else 1) for m, mode in objectives])
    ok = ~np.isnan(loss).any(axis=1)
    front = []
    for i in range(len(out)):
        others = loss[ok & (np.arange(len(out)) != i)]
        dominated = bool(((others <= loss[i]).all(axis=1) & (others < loss[i]).any(axis=1)).any())
        front.append(bool(ok[i]) and not dominated)
    out["pareto"] = front
    first_metric, first_mode = objectives[0]
    return out.sort_values(["pareto", first_metric], ascending=[False, first_mode == "min"]).reset_index(drop=True)
