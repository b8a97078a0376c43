"""One report for one or more sweeps: tables, comparisons, plots, best configuration, compute.

    mmi-ray analyze RESULTS_DIR [RESULTS_DIR ...] [--out DIR] [--budget final|STEP] [--no-test | --test-methods]

Writes ``report.md`` and ``report.html`` with the PNGs and CSV/Parquet exports beside them.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..layout import (
    COMPLETED,
    CRITIC_HEATMAP_PLOT,
    CURVES_PLOT,
    ERROR,
    HISTORY_PLOT,
    IMPORTANCE_PLOT,
    MACHINE,
    METHODS_PLOT,
    MI_WEIGHT_PLOT,
    PARETO_PLOT,
    RATIONALE_WEIGHT_PLOT,
    REPORT_DIR,
    REPORT_HTML,
    REPORT_MD,
    STEP,
    TRAIN_LOSS_PLOT,
)
from ..results.ranking import best_entry, final_rows, ranked, seed_test_accuracies
from ..results.records import LoadResult, export, load_results
from ..results.stats import (
    DSS,
    INTERVAL,
    LABEL_ONLY,
    aggregate,
    arm_comparisons,
    arm_table,
    at_budget,
    confirmation_runs,
    holm,
    named_arms,
    paired_comparison,
    paper_table,
    pareto_front,
    published_beside,
    t_interval,
)
from ..storage import basename, is_uri, join, upload_dir
from . import plots


def _md_table(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    if df is None or df.empty:
        return "_(none)_\n"
    show = df.copy()
    for c in show.columns:
        if show[c].dtype.kind == "f":
            show[c] = show[c].map(lambda v: "" if v != v else format(v, floatfmt))
    cols = [str(c) for c in show.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in show.iterrows():
        lines.append("| " + " | ".join(str(v) for v in r.tolist()) + " |")
    return "\n".join(lines) + "\n"


def _save(fig, out: Path, name: str, written: list[str]) -> None:
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    written.append(name)


def _best_test(best: dict, sweeps: dict, runs: pd.DataFrame, evaluate_test: bool) -> tuple[float | None, str]:
    """Test accuracy of the best configuration: the sweep summary's, which evaluated that same
    trial once, when it did; else computed now from each seed's final checkpoint."""
    b = (sweeps.get(best["sweep"], {}).get("summary") or {}).get("best") or {}
    if b.get("trial_id") == best["trial_id"] and "test_accuracy" in b:
        return float(b["test_accuracy"]), "from the sweep's final summary"
    if not evaluate_test:
        return None, "not computed (--no-test)"
    accs = seed_test_accuracies(runs, best["sweep"], best["trial_id"])
    if not accs:
        return None, "no checkpoint found"
    return sum(accs) / len(accs), f"computed now from {len(accs)} seed checkpoint(s)"


def method_test_table(ranked_agg: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Each method's best completed configuration (``ranked_agg`` is best first; chosen on validation)
    and the test accuracy of its seeds' final checkpoints, computed once for this report: mean, sd and
    Student-t interval over seeds. Validation figures stay in their own tables."""
    rows = []
    done = ranked_agg[ranked_agg["status"] == COMPLETED]
    for method, g in done.groupby("method", sort=False):
        top = g.iloc[0]
        accs = seed_test_accuracies(runs, top["sweep"], top["trial_id"])
        low, high = t_interval(accs)
        rows.append({"method": method, "trial_id": top["trial_id"], "dataset": top.get("dataset"),
                     "model": top.get("model"), "test_n": len(accs),
                     "test_mean": float(np.mean(accs)) if accs else float("nan"),
                     "test_std": float(np.std(accs, ddof=1)) if len(accs) > 1 else float("nan"),
                     "test_low": low, "test_high": high})
    return pd.DataFrame(rows)


@dataclass
class _Inputs:
    """What every section of one report reads."""

    res: LoadResult
    agg: pd.DataFrame  # configurations at the budget, ranked best first
    metric: str
    mode: str
    searched: list[str]
    budget: str | int
    out: Path


def _section_headline(x: _Inputs) -> list[str]:
    """The confirmation runs of each sweep that has them: the figures a paper would print."""
    md = []
    for name, s in x.res.sweeps.items():
        state = s.get("confirmation") or {}
        runs = confirmation_runs(state)
        if runs.empty:
            continue
        table = arm_table(runs, x.metric, mode=x.mode)
        md += [f"## Headline: confirmation runs of `{name}`", "",
               f"The search's top configurations and the baselines, trained again on fresh seeds "
               f"{state['seeds']} at the full budget. Validation and test per arm ({INTERVAL} intervals over "
               "seeds, n shown, cut at 0 and 1; `*_wide`: the uncut interval was wider than that, too few seeds "
               "to bound the mean); ranked on mean validation (`rank`, shared by `tied` arms); test was read once per "
               "run, after training, and chose nothing.", "",
               _md_table(table), "### Paired by seed, on test (one family, Holm-corrected)", "",
               _md_table(arm_comparisons(runs, "test_accuracy")),
               "### Paired by seed, on validation (one family, Holm-corrected)", "",
               _md_table(arm_comparisons(runs, x.metric)), "### Arms", ""]
        shown = named_arms(state["arms"])
        md += [f"- `{shown[a]}` ({arm['method']}): " + (", ".join(f"`{k}={v}`" for k, v in arm["params"].items())
                                                  or "the base config") +
               (f" (search trial `{arm['from_trial']}`)" if arm.get("from_trial") else " (not in the search)")
               for a, arm in state["arms"].items()]
        md.append("")
        base = runs.merge(table[["arm", "test_mean", "test_low", "test_high", "n"]], on="arm").drop_duplicates("arm")
        dataset_model = x.res.runs.groupby("sweep")[["dataset", "model"]].first()
        if name in dataset_model.index:
            base = base.assign(dataset=dataset_model.loc[name, "dataset"], model=dataset_model.loc[name, "model"],
                               test_n=base["n"])
            md += ["### Beside the published test accuracies (same model and dataset only)", "",
                   _md_table(published_beside(base)), ""]
    return md


def _section_pareto(x: _Inputs, spec: dict, written: list[str]) -> list[str]:
    """A multi-objective spec: the Pareto front of the completed configurations, a table and a plot."""
    objectives = [(o["metric"], o["mode"]) for o in [spec["objective"], *spec.get("more_objectives", [])]]
    if len(objectives) < 2:
        return []
    front = pareto_front(x.res.runs, objectives, x.searched)
    names = ", ".join(f"`{m}` ({mode})" for m, mode in objectives)
    md = [f"## Pareto front: {names}", ""]
    if front.empty:
        return md + ["No configuration completed the full budget with every objective reported.", ""]
    _save(plots.pareto(front, objectives[0], objectives[1]), x.out, PARETO_PLOT, written)
    cols = ["sweep", "trial_id", "method", *[c for c in x.searched if c in front], *[m for m, _ in objectives],
            "n_seeds", "trials"]
    md += [f"{int(front['pareto'].sum())} of {len(front)} completed configurations are on the front (mean over seeds "
           "at the full budget; none is worse on every objective than another one). Chosen on validation: "
           "the confirmation runs measure them again; `trials`: how many trials proposed the configuration.", "",
           _md_table(front[front["pareto"]][cols]),
           f"![Pareto front]({PARETO_PLOT})", ""]
    return md


def _section_trials(x: _Inputs) -> list[str]:
    counts = x.res.trials["status"].value_counts().to_dict()
    md = ["## Trials", "", ", ".join(f"{v} {k}" for k, v in counts.items()), ""]
    reused = int(x.res.trials["reused_runs"].sum()) if "reused_runs" in x.res.trials else 0
    if reused:
        md += [f"{reused} run(s) were adopted from earlier runs of the same config, data and code (mmi_ray/reuse.py), "
               "not trained again: the configurations table counts them in `reused_runs`.", ""]
    errored = x.res.trials[x.res.trials["status"] == ERROR]
    if not errored.empty:
        md += ["Errored trials:", "", _md_table(errored[["sweep", "trial_id", "error"]])]
    return md


def _section_configurations(x: _Inputs) -> list[str]:
    cols = ["sweep", "trial_id", "method", *[c for c in x.searched if c in x.agg], "status", STEP, "n_seeds",
            "mean", "std", "ci_low", "ci_high"]
    md = ["## Configurations (mean over seeds, 95% Student-t interval)", "",
          "Ranked: `completed` rows (trained to the full budget) first, then by mean. `ci_low`/`ci_high`: the "
          f"{INTERVAL} interval of the mean over the `n_seeds` seeds.", ""]
    if (x.agg["n_seeds"] < 2).any():
        md += ["Rows with fewer than 2 seeds have no interval: one value says nothing about the seed-to-seed "
               "spread.", ""]
    agg = x.agg
    if "reused_runs" in x.res.trials and x.res.trials["reused_runs"].any():  # adopted, not trained: marked
        agg = agg.merge(x.res.trials[["sweep", "trial_id", "reused_runs"]], on=["sweep", "trial_id"], how="left")
        cols.append("reused_runs")
    return md + [_md_table(agg[cols])]


def _section_comparisons(x: _Inputs) -> list[str]:
    """Every configuration against the best DSS and label-only ones, at equal budget, as one family
    of tests: p-values Holm-corrected over all the comparisons in this report."""
    parts = [paired_comparison(x.res.runs, x.agg, b, x.metric, x.budget) for b in (DSS, LABEL_ONLY)]
    missing = [b for b, c in zip((DSS, LABEL_ONLY), parts) if c.empty]
    comp = pd.concat([c for c in parts if not c.empty], ignore_index=True) if len(missing) < 2 else pd.DataFrame()
    md = ["## Against the baselines (paired by seed, equal budget)", ""]
    md += [f"_no completed {b} configuration in these sweeps_\n" for b in missing]
    if comp.empty:
        return md
    done = comp[comp["compared"]].copy()
    done["p_holm"] = holm(done["p_value"])
    n_tests = int(done["p_value"].notna().sum())
    md += [f"Paired by seed at the baseline's step; `ci_low`/`ci_high`: {INTERVAL} interval of the mean "
           f"difference; `effect_dz`: mean difference / sd of the differences; `p_holm`: paired t-test "
           f"p-values Holm-corrected over the {n_tests} tests of this report (one family).", ""]
    cols = ["baseline", "sweep", "trial_id", "method", "step", "n_pairs", "mean_diff", "ci_low", "ci_high",
            "effect_dz", "p_value", "p_holm"]
    md.append(_md_table(done[cols]) if not done.empty else "_(no configuration at a baseline's budget)_\n")
    skipped = comp[~comp["compared"]]
    if not skipped.empty:
        md += [f"Not compared ({len(skipped)}): trained to another step than the baseline "
               f"(early-stopped configurations are compared only at a step both reached, `--budget STEP`): "
               + ", ".join(f"`{r.trial_id}` (step {r.step} vs {r.baseline_step})" for r in skipped.itertuples()), ""]
    return md


def _section_results_table(table: pd.DataFrame) -> list[str]:
    return ["## Results table (validation, best completed configuration per method)", "",
            "Validation means at this sweep's budget. Published numbers are test accuracies and stand only "
            "beside our test figures (`--test-methods`).", "",
            _md_table(table.reset_index().rename(columns={"index": "method"})) if not table.empty else "_(none)_\n"]


def _section_best(x: _Inputs, evaluate_test: bool, test_methods: bool) -> list[str]:
    best = best_entry(x.agg, x.res.runs, x.metric, x.mode, x.searched, evaluate_test=False)
    if best is None:
        return ["## Best configuration", "", "No configuration completed its budget yet.", ""]
    md = []
    test, how = _best_test(best, x.res.sweeps, x.res.runs, evaluate_test)
    if test_methods:
        per_method = method_test_table(x.agg, x.res.runs)
        md += ["## Test split, each method's best configuration (computed once, for this report)", "",
               "Each method's configuration was chosen on validation; test was read once, here, and chose "
               "nothing.", "", _md_table(per_method[["method", "trial_id", "test_n", "test_mean", "test_std",
                                                      "test_low", "test_high"]]),
               "### Beside the published test accuracies (same model and dataset only)", "",
               _md_table(published_beside(per_method))]
    params = ", ".join(f"`{k}={v}`" for k, v in best["params"].items())
    test_text = f"{test:.4f}" if test is not None else "n/a"
    return md + ["## Best configuration", "", f"Trial `{best['trial_id']}` ({best['method']}): {params}", "",
                 f"- validation {x.metric}: {best[x.metric]:.4f} (n={best['n_seeds']} seeds)",
                 f"- test accuracy: {test_text} ({how}; never seen by the searcher)", ""]


def machines_lines(runs: pd.DataFrame) -> list[str]:
    """Which machines the runs trained on (CPU, torch build, threads, GPU), with their run counts:
    float results follow the machine, so figures from different machines differ seed for seed."""
    if MACHINE not in runs or runs[MACHINE].isna().all():
        return ["- machine: not recorded (runs from before mmi-ray recorded it)"]
    per_run = runs.dropna(subset=[MACHINE]).groupby(["trial_id", "seed"])[MACHINE].last().value_counts()
    note = " (float results differ between machines: compare across them over seeds, not seed for seed)"
    return [f"- machine: `{m}`, {n} run{'s' * (n != 1)}" + (note if len(per_run) > 1 else "")
            for m, n in per_run.items()]


def _section_compute(x: _Inputs) -> list[str]:
    runs = x.res.runs
    finals = at_budget(runs)
    eval_s = float(runs["eval_time_s"].sum()) if "eval_time_s" in runs else 0.0
    trial_hours = (finals["train_time_s"].sum() + eval_s) / 3600
    gpu_hours = float((finals["train_time_s"] * finals["num_workers"].fillna(1))[finals["use_gpu"]].sum()) / 3600
    md = ["## Compute", "", f"- in-loop run time (training + validation), all runs: {trial_hours:.3f} h",
          f"- GPU-hours: {gpu_hours:.3f}"]
    md += machines_lines(runs)
    for name, s in x.res.sweeps.items():
        summ = s.get("summary") or {}
        if summ.get("overhead_ratio"):
            md.append(f"- sweep `{name}`: wall {summ['wall_time_s']:.0f} s for {summ['trial_train_time_s']:.0f} s of "
                      f"in-loop training; overhead ratio {summ['overhead_ratio']:.2f}")
    return md + [""]


def method_points(x: _Inputs) -> tuple[pd.DataFrame, str]:
    """Per-seed accuracies by method for the report's first plot: the confirmation runs (validation
    and test) where a sweep has them, else each method's best configuration at the full budget
    (validation only, and optimistic: the same figures chose it)."""
    rows = []
    for s in x.res.sweeps.values():
        runs = pd.DataFrame((s.get("confirmation") or {}).get("runs", []))
        for r in runs.itertuples():
            group = f"{r.arm}\n{r.method}" if r.arm != r.method else r.arm  # e.g. "top1\nMI (maxpool)"
            rows += [{"group": group, "split": "validation", "value": getattr(r, x.metric)},
                     {"group": group, "split": "test", "value": r.test_accuracy}]
    if rows:
        return pd.DataFrame(rows), "Accuracy by method (confirmation runs on fresh seeds)"
    done = x.agg[x.agg["status"] == COMPLETED]
    for method, g in done.groupby("method", sort=False):
        last = final_rows(x.res.runs, g.iloc[0]["sweep"], g.iloc[0]["trial_id"])
        rows += [{"group": method, "split": "validation", "value": v} for v in last[x.metric]]
    return pd.DataFrame(rows), "Accuracy by method (each method's best configuration, chosen on these figures)"


def _section_plots(x: _Inputs, space: dict, notes: list[str]) -> tuple[list[str], list[str]]:
    """Draws the plots into the report folder; returns (the importances section, plot file names)."""
    agg, metric, written, md = x.agg, x.metric, [], []
    points, title = method_points(x)
    if not points.empty:
        _save(plots.accuracy_by_method(points, title), x.out, METHODS_PLOT, written)
    if "loss.mi_weight" in agg:
        _save(plots.metric_vs_param(agg, "loss.mi_weight", metric, log_x=True), x.out, MI_WEIGHT_PLOT,
              written)
    if "loss.critic_size" in agg and "loss.mi_weight" in agg:
        full = agg[(agg["status"] == COMPLETED) & agg["method"].str.startswith("MI")]  # one budget in a cell
        _save(plots.heatmap(full, "loss.mi_weight", "loss.critic_size", metric),
              x.out, CRITIC_HEATMAP_PLOT, written)
    if "loss.rationale_weight" in agg:
        _save(plots.metric_vs_param(agg, "loss.rationale_weight", metric), x.out, RATIONALE_WEIGHT_PLOT, written)
    top = [(r["sweep"], r["trial_id"]) for _, r in agg.head(6).iterrows()]
    labels = {(r["sweep"], r["trial_id"]): f"{r['trial_id']} {r['method']}" for _, r in agg.iterrows()}
    _save(plots.learning_curves(x.res.runs, metric, top, labels), x.out, CURVES_PLOT, written)
    if not x.res.train_log.empty:
        _save(plots.training_loss(x.res.train_log, top, labels), x.out, TRAIN_LOSS_PLOT, written)
    try:  # equal budgets only: an early-stopped trial's value is not comparable with a finished one's
        done = agg[agg["status"] == COMPLETED].rename(columns={"mean": "_value"})
        study = plots.optuna_study_from_trials(done, space, "_value", x.mode)
        if len(study.trials) >= 2:
            _save(plots.optimization_history(study), x.out, HISTORY_PLOT, written)
            fig, imp = plots.importances(study)
            _save(fig, x.out, IMPORTANCE_PLOT, written)
            md += [f"## Hyperparameter importances (Optuna fANOVA over the {len(study.trials)} completed trials: equal budget)", "",
                   _md_table(pd.DataFrame({"param": list(imp), "importance": list(imp.values())}))]
    except Exception as e:  # noqa: BLE001 - importances need enough varied trials; say why not
        notes.append(f"Optuna history/importances not drawn: {type(e).__name__}: {e}")
    return md, written


LOCAL_REPORTS = "reports"
"""Where the report of a sweep on a storage URI goes by default: ``./reports/<sweep name>/``."""


def default_report_dir(sweep: str) -> Path:
    """``<sweep>/report`` for a local sweep folder; ``./reports/<sweep name>`` (here, in the folder the
    command runs in) for a sweep on a storage URI, which ``--report-to-storage`` uploads."""
    if is_uri(sweep):
        return Path.cwd() / LOCAL_REPORTS / basename(sweep)
    return Path(sweep).expanduser() / REPORT_DIR


def build_report(paths: list[str], out_dir: str | None = None, budget: str | int = "final",
                 evaluate_test: bool = True, test_methods: bool = False, to_storage: bool = False) -> dict:
    """Load the sweeps, write ``report.md`` / ``report.html`` with plots and exports; one function per
    section. ``to_storage``: a sweep on a storage URI also gets the report in ``<sweep>/report``."""
    out = Path(out_dir) if out_dir else default_report_dir(str(paths[0]))
    report = _build_report(paths, out, budget, evaluate_test, test_methods)
    if to_storage and is_uri(str(paths[0])):
        target = join(str(paths[0]).rstrip("/"), REPORT_DIR)
        upload_dir(out, target)
        report["uploaded"] = target
    return report


def _build_report(paths: list[str], out: Path, budget: str | int, evaluate_test: bool, test_methods: bool) -> dict:
    res = load_results(paths)
    out.mkdir(parents=True, exist_ok=True)
    exported = [p.name for p in export(res, out)]
    first = next(iter(res.sweeps.values()), None)
    notes = list(res.skipped)
    md = ["# mmi-ray sweep report", ""]
    if first is None or res.runs.empty:
        md.append("No evaluations found in " + ", ".join(map(str, paths)) + ".")
        md += [f"- {n}" for n in notes]
        (out / REPORT_MD).write_text("\n".join(md) + "\n")
        return {"report": str(out / REPORT_MD), "plots": [], "notes": notes}
    spec = first["spec"]
    metric, mode = spec["objective"]["metric"], spec["objective"]["mode"]
    searched = sorted({k for s in res.sweeps.values() for k in s["spec"]["search"]})
    x = _Inputs(res, ranked(aggregate(res.runs, metric, searched, budget), mode), metric, mode, searched, budget, out)
    table = paper_table(x.agg)
    md += [f"Sweeps: {', '.join(res.sweeps)}. Objective: `{metric}` ({mode}), at budget `{budget}`.", ""]
    importances, written = _section_plots(x, spec["search"], notes)
    if METHODS_PLOT in written:  # the report opens with it
        md += [f"![accuracy by method]({METHODS_PLOT})", ""]
    md += _section_headline(x) + _section_pareto(x, spec, written) + _section_trials(x) + _section_configurations(x)
    md += _section_comparisons(x)
    md += _section_results_table(table) + _section_best(x, evaluate_test, test_methods) + _section_compute(x)
    md += importances
    md += ["## Plots", ""] + [f"![{w}]({w})" for w in written] + [""]
    md += ["## Files", ""] + [f"- `{f}`" for f in exported] + [""]
    if notes:
        md += ["## Left out", ""] + [f"- {n}" for n in notes] + [""]
    text = "\n".join(md)
    (out / REPORT_MD).write_text(text)
    (out / REPORT_HTML).write_text(_html(text))
    return {"report": str(out / REPORT_MD), "html": str(out / REPORT_HTML), "plots": written,
            "notes": notes, "configurations": len(x.agg), "table": table}


def _html(md: str) -> str:
    """A plain HTML rendering of the Markdown we write (headings, tables, images, lists)."""
    body, in_table = [], False
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-"):
                continue
            if not in_table:
                body.append("<table border=1 cellspacing=0 cellpadding=3>")
                in_table = True
            body.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            body.append(f"<h{level}>{html.escape(line[level:].strip())}</h{level}>")
        elif line.startswith("![") and "](" in line:
            src = line[line.index("](") + 2 : -1]
            body.append(f'<p><img src="{html.escape(src)}" width="600"></p>')
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{html.escape(line)}</p>")
    if in_table:
        body.append("</table>")
    return "<html><head><meta charset='utf-8'><title>mmi-ray report</title></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
