"""One report for one or more sweeps: tables, comparisons, plots, best configuration, compute.

    mmi-ray analyze RESULTS_DIR [RESULTS_DIR ...] [--out DIR] [--budget final|STEP] [--no-test | --test-methods]

Writes ``report.md`` and ``report.html`` with the PNGs and CSV/Parquet exports beside them.
"""

from __future__ import annotations

import html
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ..layout import COMPLETED, ERROR, REPORT_DIR
from . import plots
from .best import best_entry, ranked, seed_test_accuracies
from .load import export, load_results
from .stats import DSS, LABEL_ONLY, aggregate, paired_comparison, paper_table


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
    """Each method's best completed configuration (``ranked_agg`` is best first) with its validation
    mean and the test accuracy of its seeds' final checkpoints, computed once for this report."""
    rows = []
    done = ranked_agg[ranked_agg["status"] == COMPLETED]
    for method, g in done.groupby("method", sort=False):
        top = g.iloc[0]
        accs = seed_test_accuracies(runs, top["sweep"], top["trial_id"])
        rows.append({"method": method, "trial_id": top["trial_id"], "n_seeds": int(top["n_seeds"]),
                     "val_mean": top["mean"], "val_std": top["std"], "test_n": len(accs),
                     "test_mean": float(np.mean(accs)) if accs else float("nan"),
                     "test_std": float(np.std(accs, ddof=1)) if len(accs) > 1 else float("nan")})
    return pd.DataFrame(rows)


def build_report(paths: list[str], out_dir: str | None = None, budget: str | int = "final",
                 evaluate_test: bool = True, test_methods: bool = False) -> dict:
    res = load_results(paths)
    out = Path(out_dir) if out_dir else Path(paths[0]).expanduser() / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    exported = [p.name for p in export(res, out)]
    first = next(iter(res.sweeps.values()), None)
    notes = list(res.skipped)
    md = ["# mmi-ray sweep report", ""]
    if first is None or res.runs.empty:
        md.append("No evaluations found in " + ", ".join(map(str, paths)) + ".")
        for n in notes:
            md.append(f"- {n}")
        (out / "report.md").write_text("\n".join(md) + "\n")
        return {"report": str(out / "report.md"), "plots": [], "notes": notes}
    spec = first["spec"]
    metric = spec["objective"]["metric"]
    mode = spec["objective"]["mode"]
    searched = sorted({k for s in res.sweeps.values() for k in s["spec"]["search"]})
    runs = res.runs
    agg = ranked(aggregate(runs, metric, searched, budget), mode)
    md += [f"Sweeps: {', '.join(res.sweeps)}. Objective: `{metric}` ({mode}), at budget `{budget}`.", ""]

    # status
    counts = res.trials["status"].value_counts().to_dict()
    md += ["## Trials", "", ", ".join(f"{v} {k}" for k, v in counts.items()), ""]
    errored = res.trials[res.trials["status"] == ERROR]
    if not errored.empty:
        md += ["Errored trials:", "", _md_table(errored[["sweep", "trial_id", "error"]])]

    # configurations
    show_cols = ["sweep", "trial_id", "method", *[c for c in searched if c in agg], "status", "step", "n_seeds",
                 "mean", "std", "ci_low", "ci_high"]
    md += ["## Configurations (mean over seeds, 95% bootstrap CI)", "",
           "Ranked: `completed` rows (trained to the full budget) first, then by mean.", "",
           _md_table(agg[show_cols])]

    # comparisons
    md += ["## Against the baselines (paired by seed)", ""]
    for baseline in (DSS, LABEL_ONLY):
        comp = paired_comparison(runs, agg, baseline, metric, budget)
        md += [f"### vs {baseline}", ""]
        md.append(_md_table(comp) if not comp.empty else f"_no completed {baseline} configuration in these sweeps_\n")
    table = paper_table(agg)
    md += ["## Results table (validation, best completed configuration per method)", "",
           "Published numbers are test accuracies at full scale (t5-v1_1-base, method.md); ours are "
           "validation means at this sweep's budget.", "",
           _md_table(table.reset_index().rename(columns={"index": "method"})) if not table.empty else "_(none)_\n"]

    # best + compute
    best = best_entry(agg, runs, metric, mode, searched, evaluate_test=False)
    if best is not None:
        test, how = _best_test(best, res.sweeps, runs, evaluate_test)
        if test_methods:
            md += ["## Test split, each method's best configuration (computed once, for this report)", "",
                   "For an ablation: never used to choose anything.", "",
                   _md_table(method_test_table(agg, runs))]
        params = ", ".join(f"`{k}={v}`" for k, v in best["params"].items())
        test_text = f"{test:.4f}" if test is not None else "n/a"
        md += ["## Best configuration", "", f"Trial `{best['trial_id']}` ({best['method']}): {params}", "",
               f"- validation {metric}: {best[metric]:.4f} (n={best['n_seeds']} seeds)",
               f"- test accuracy: {test_text} ({how}; never seen by the searcher)", ""]
    else:
        md += ["## Best configuration", "", "No configuration completed its budget yet.", ""]
    finals = runs.loc[runs.groupby(["sweep", "trial_id", "seed"])["step"].idxmax()]
    eval_s = runs.groupby(["sweep", "trial_id", "seed"])["eval_time_s"].sum() if "eval_time_s" in runs else 0
    trial_hours = (finals["train_time_s"].sum() + float(getattr(eval_s, "sum", lambda: 0)())) / 3600
    gpu_hours = float((finals["train_time_s"] * finals["num_workers"].fillna(1))[finals["use_gpu"]].sum()) / 3600
    md += ["## Compute", "", f"- in-loop run time (training + validation), all runs: {trial_hours:.3f} h",
           f"- GPU-hours: {gpu_hours:.3f}"]
    for name, s in res.sweeps.items():
        summ = s.get("summary") or {}
        if summ.get("overhead_ratio"):
            md.append(f"- sweep `{name}`: wall {summ['wall_time_s']:.0f} s for {summ['trial_train_time_s']:.0f} s of "
                      f"in-loop training; overhead ratio {summ['overhead_ratio']:.2f}")
    md.append("")

    # plots
    written: list[str] = []
    mlabel = metric
    if "loss.mi_weight" in agg:
        _save(plots.metric_vs_param(agg, "loss.mi_weight", mlabel, log_x=True), out, "metric_vs_mi_weight.png", written)
    if "loss.critic_size" in agg and "loss.mi_weight" in agg:
        _save(plots.heatmap(agg[agg["method"].str.startswith("MI")], "loss.mi_weight", "loss.critic_size", mlabel),
              out, "critic_size_x_mi_weight.png", written)
    if "loss.rationale_weight" in agg:
        _save(plots.metric_vs_param(agg, "loss.rationale_weight", mlabel), out, "rationale_weight.png", written)
    top = [(r["sweep"], r["trial_id"]) for _, r in agg.head(6).iterrows()]
    labels = {(r["sweep"], r["trial_id"]): f"{r['trial_id']} {r['method']}" for _, r in agg.iterrows()}
    _save(plots.learning_curves(runs, metric, top, labels), out, "learning_curves.png", written)
    try:
        tri = agg.rename(columns={"mean": "_value"})
        study = plots.optuna_study_from_trials(tri, spec["search"], "_value", mode)
        if len(study.trials) >= 2:
            _save(plots.optimization_history(study), out, "optuna_history.png", written)
            fig, imp = plots.importances(study)
            _save(fig, out, "param_importances.png", written)
            md += ["## Hyperparameter importances (Optuna fANOVA on the trials table)", "",
                   _md_table(pd.DataFrame({"param": list(imp), "importance": list(imp.values())}))]
    except Exception as e:  # noqa: BLE001 - importances need enough varied trials; say why not
        notes.append(f"Optuna history/importances not drawn: {type(e).__name__}: {e}")
    md += ["## Plots", ""] + [f"![{w}]({w})" for w in written] + [""]
    md += ["## Files", ""] + [f"- `{f}`" for f in exported] + [""]
    if notes:
        md += ["## Left out", ""] + [f"- {n}" for n in notes] + [""]
    text = "\n".join(md)
    (out / "report.md").write_text(text)
    (out / "report.html").write_text(_html(text))
    return {"report": str(out / "report.md"), "html": str(out / "report.html"), "plots": written,
            "notes": notes, "configurations": len(agg), "table": table}


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


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="mmi-ray analyze", description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", help="sweep folders (<storage_path>/<name>) or storage URIs")
    ap.add_argument("--out", default=None, help="report folder (default: <first sweep>/report)")
    ap.add_argument("--budget", default="final", help="'final' or a step that every compared trial reached")
    ap.add_argument("--no-test", action="store_true", help="do not evaluate the best configuration on test")
    ap.add_argument("--test-methods", action="store_true",
                    help="also evaluate each method's best configuration on test (ablations; once, at report time)")
    args = ap.parse_args(argv)
    budget = args.budget if args.budget == "final" else int(args.budget)
    if args.no_test and args.test_methods:
        ap.error("--no-test and --test-methods contradict each other")
    r = build_report(args.results, args.out, budget, evaluate_test=not args.no_test, test_methods=args.test_methods)
    print(f"[mmi-ray] report: {r['report']}")
    if r.get("plots"):
        print(f"[mmi-ray] plots: {', '.join(r['plots'])}")
    for n in r["notes"]:
        print(f"[mmi-ray] left out: {n}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
