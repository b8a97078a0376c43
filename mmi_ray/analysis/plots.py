"""Figures from DataFrames (matplotlib, Agg). Each function returns a Figure; nothing global."""

from __future__ import annotations

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402


def accuracy_by_method(points: pd.DataFrame, title: str):
    """The first figure of a report: one column per arm (or method), a point per seed, the mean as
    a bar and its 95% Student-t interval; one panel per split (``points``: group, split, value)."""
    from ..results.stats import t_interval

    splits = list(dict.fromkeys(points["split"]))
    groups = list(dict.fromkeys(points["group"]))
    fig, axes = plt.subplots(1, len(splits), figsize=(max(6.5 / len(splits), 1.4 * len(groups) + 1.5) * len(splits),
                                                      4.3), squeeze=False, sharey=True)
    rng = np.random.default_rng(0)
    for ax, split in zip(axes[0], splits):
        for i, g in enumerate(groups):
            v = points.loc[(points["split"] == split) & (points["group"] == g), "value"].astype(float).to_numpy()
            if not len(v):
                continue
            ax.scatter(i + rng.uniform(-0.12, 0.12, len(v)), 100 * v, s=18, color="grey", alpha=0.7, zorder=2)
            lo, hi = t_interval(v)
            ax.hlines(100 * v.mean(), i - 0.25, i + 0.25, color="C0", lw=2.5, zorder=3)
            if lo == lo:
                ax.errorbar(i, 100 * v.mean(), yerr=[[100 * (v.mean() - lo)], [100 * (hi - v.mean())]], color="C0",
                            capsize=6, lw=1.5, zorder=3)
            ax.annotate(f"{100 * v.mean():.1f}\nn={len(v)}", (i + 0.28, 100 * v.mean()), fontsize=8, va="center")
        ax.set_xticks(range(len(groups)), groups, fontsize=8)
        ax.set_ylim(-3, 103)  # an interval past 0 or 100 (few seeds) is cut at the axis
        ax.set_xlim(-0.6, len(groups) - 0.2)
        ax.set_title(split, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].set_ylabel("accuracy (%)")
    fig.suptitle(title + "\ngrey: one seed each; blue: the mean and its 95% Student-t interval over seeds",
                 fontsize=9)
    fig.tight_layout()
    return fig


def metric_vs_param(agg: pd.DataFrame, param: str, metric_label: str, log_x: bool = False):
    """Mean validation metric against one hyperparameter, a line with interval bars per method through
    the configurations trained to the full budget only; early-stopped ones (a smaller budget) are
    hollow points apart, never joined to the others."""
    from ..layout import COMPLETED

    fig, ax = plt.subplots(figsize=(6, 4))
    d = agg.dropna(subset=[param])
    for method, g in d[d["status"] == COMPLETED].groupby("method"):
        g = g.sort_values(param)
        x = g[param].astype(float).to_numpy()
        mean = g["mean"].astype(float).to_numpy()
        err = np.vstack([mean - g["ci_low"].astype(float), g["ci_high"].astype(float) - mean])  # NaN: no bar
        ax.errorbar(x, mean, yerr=err, marker="o", capsize=3, label=method)
    early = d[d["status"] != COMPLETED]
    if not early.empty:
        ax.scatter(early[param].astype(float), early["mean"], facecolors="none", edgecolors="grey",
                   label="stopped early (smaller budget)")
    if log_x:
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel(param)
    ax.set_ylabel(metric_label)
    ax.set_title(f"{metric_label} vs {param}\n(mean over seeds at the full budget; bars: 95% Student-t interval)",
                 fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def heatmap(agg: pd.DataFrame, x: str, y: str, metric_label: str, bins: int = 4):
    """Mean metric over a binned ``x`` x ``y`` grid (log-spaced bins for positive ranges); pass
    configurations of one budget (the report passes the completed ones)."""
    d = agg.dropna(subset=[x, y]).copy()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    if d.empty:
        ax.text(0.5, 0.5, "no data", ha="center")
        return fig

    def cut(col):
        v = d[col].astype(float)
        lo, hi = v.min(), v.max()
        if lo == hi:
            return v.map(lambda t: f"{t:.3g}")
        edges = np.geomspace(lo, hi, bins + 1) if lo > 0 else np.linspace(lo, hi, bins + 1)
        return pd.cut(v, edges, include_lowest=True, duplicates="drop").astype(str)

    d["_x"], d["_y"] = cut(x), cut(y)
    table = d.pivot_table(index="_y", columns="_x", values="mean", aggfunc="mean")
    im = ax.imshow(table.to_numpy(dtype=float), aspect="auto", origin="lower", cmap="viridis")
    ax.set_xticks(range(len(table.columns)), table.columns, rotation=30, ha="right", fontsize=7)
    ax.set_yticks(range(len(table.index)), table.index, fontsize=7)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    fig.colorbar(im, ax=ax, label=metric_label)
    ax.set_title(f"{metric_label}: {y} x {x}")
    fig.tight_layout()
    return fig


STYLES = [("o", "-"), ("s", "--"), ("^", "-."), ("D", ":"), ("v", "-"), ("P", "--"), ("X", "-."), ("*", ":")]
"""Marker and line style per curve: curves that overlap (two configurations learning alike) stay
visible under each other."""


def _curves(ax, frame: pd.DataFrame, column: str, top: list[tuple[str, str]], labels: dict, markers: bool) -> None:
    for i, key in enumerate(top):
        g = frame[(frame["sweep"] == key[0]) & (frame["trial_id"] == key[1])]
        if g.empty or column not in g:
            continue
        curve = g.groupby("step")[column].agg(["mean", "min", "max"]).reset_index()
        marker, line = STYLES[i % len(STYLES)]
        ax.plot(curve["step"], curve["mean"], linestyle=line, marker=marker if markers else None,
                markersize=8 - 0.6 * (i % len(STYLES)), fillstyle="none", alpha=0.85, label=labels.get(key, key[1]))
        ax.fill_between(curve["step"], curve["min"], curve["max"], alpha=0.12)


def learning_curves(runs: pd.DataFrame, metric: str, top: list[tuple[str, str]], labels: dict):
    """Mean (over seeds) metric against step for the given (sweep, trial_id) configurations."""
    fig, ax = plt.subplots(figsize=(6, 4))
    _curves(ax, runs, metric, top, labels, markers=True)
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(f"learning curves ({metric} at each evaluation; band: seed min-max)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def training_loss(train_log: pd.DataFrame, top: list[tuple[str, str]], labels: dict, term: str = "loss"):
    """The training loss (``train_log.jsonl``: averaged over each ``train.log_every`` steps) against
    step, mean over seeds with the seeds' min-max band, for the given configurations."""
    fig, ax = plt.subplots(figsize=(6, 4))
    _curves(ax, train_log, term, top, labels, markers=False)
    ax.set_xlabel("step")
    ax.set_ylabel(f"training {term}")
    ax.set_yscale("log")
    ax.set_title(f"training {term} per step (mean over each log interval; band: seed min-max)", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def optuna_study_from_trials(trials: pd.DataFrame, search: dict, metric_col: str, direction: str):
    """An in-memory Optuna study holding one finished trial per configuration (for Optuna's own
    history plot and importance evaluators)."""
    import optuna

    from ..space import Param

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = {k: Param.model_validate(v) for k, v in search.items()}
    study = optuna.create_study(direction="maximize" if direction == "max" else "minimize")
    for _, row in trials.iterrows():
        params = {k: (row[k].item() if hasattr(row[k], "item") else row[k]) for k in space}
        if any(v is None or (isinstance(v, float) and v != v) for v in params.values()) or row[metric_col] != row[metric_col]:
            continue
        # a conditional key the search did not draw holds the base config's value, maybe outside the space
        params = {k: v for k, v in params.items() if space[k].contains(v)}
        dists = {k: space[k].optuna_distribution() for k in params}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=float(row[metric_col])))
    return study


def optimization_history(study):
    import warnings

    from optuna.visualization.matplotlib import plot_optimization_history

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna marks its matplotlib plots experimental
        ax = plot_optimization_history(study)
    fig = ax.figure
    fig.set_size_inches(6, 4)
    fig.tight_layout()
    return fig


def importances(study):
    import optuna

    imp = optuna.importance.get_param_importances(study)
    fig, ax = plt.subplots(figsize=(6, 3))
    names = list(imp)[::-1]
    ax.barh(names, [imp[n] for n in names])
    ax.set_xlabel("importance (Optuna fANOVA)")
    ax.set_title("hyperparameter importances")
    fig.tight_layout()
    return fig, imp


def pareto(front: pd.DataFrame, x: tuple[str, str], y: tuple[str, str]):
    """Every completed configuration on two objectives (``(metric, mode)``), the Pareto front joined
    and labelled by method; arrows on the axes say which way is better."""
    fig, ax = plt.subplots(figsize=(6.5, 4.6))
    rest, best = front[~front["pareto"]], front[front["pareto"]].sort_values(x[0])
    ax.scatter(rest[x[0]], rest[y[0]], s=22, color="grey", alpha=0.6, label="dominated")
    ax.plot(best[x[0]], best[y[0]], "-o", color="tab:red", ms=7, label="Pareto front", zorder=3)
    for _, r in best.iterrows():
        ax.annotate(r["method"], (r[x[0]], r[y[0]]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel(f"{x[0]} ({'higher' if x[1] == 'max' else 'lower'} is better)")
    ax.set_ylabel(f"{y[0]} ({'higher' if y[1] == 'max' else 'lower'} is better)")
    ax.set_title(f"Completed configurations ({len(front)}, mean over seeds, full budget)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
