"""The paper table: datasets x methods from confirmation runs, in Markdown or LaTeX (booktabs).

    mmi-ray table RESULTS_DIR [RESULTS_DIR ...] [--format markdown|latex|both] [--out FILE]

One row per dataset (and model) and method: the confirmation arm of that method that the search
ranked highest on validation (``top1`` before ``top2`` before the baselines), its test accuracy
mean over the fresh seeds with the 95% Student-t interval and n, its test ECE (the MI paper's
equal-mass ECE), the rationale BLEU and the faithfulness of its rationales when they were scored,
and the published test accuracy for the same model and dataset beside it, with its source. Every
figure is read from ``confirm/confirmation.json``: test was read once per run, after training.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd

from ..config import flatten
from ..errors import MmiError
from ..layout import CONFIRM_DIR, CONFIRMATION_FILE, SPEC_FILE, read_spec
from ..results.stats import DSS, LABEL_ONLY, PUBLISHED, t_interval
from ..storage import exists, is_uri, join, read_text

METHOD_ORDER = (LABEL_ONLY, DSS)
"""Rows within a dataset: the baselines first, then the MI estimators by name."""


def _dataset_name(base: dict) -> str:
    flat = flatten(base)
    dataset = flat.get("data.dataset", "builtin")
    if dataset == "builtin":
        tasks = flat.get("data.builtin.tasks") or ["arith", "choice", "nli"]
        return f"builtin ({', '.join(tasks)})"
    return dataset


def _published(model: str, dataset: str, method: str) -> tuple[float, str] | None:
    ref = PUBLISHED.get((model, dataset), {})
    return ref.get(method) or (ref.get("MI") if method.startswith("MI") else None)


def _mean(g: pd.DataFrame, col: str) -> float:
    return float(g[col].mean()) if col in g and g[col].notna().all() else math.nan


def table_rows(paths: list[str]) -> pd.DataFrame:
    """One row per (sweep, method) from each sweep's confirmation runs (see the module doc)."""
    rows = []
    for path in paths:
        root = str(path) if is_uri(str(path)) else str(Path(path).expanduser())
        if not exists(join(root, SPEC_FILE)):
            raise MmiError(f"{path}: no {SPEC_FILE}: not a sweep folder")
        conf = join(root, CONFIRM_DIR, CONFIRMATION_FILE)
        if not exists(conf):
            raise MmiError(f"{path}: no confirmation runs ({CONFIRM_DIR}/{CONFIRMATION_FILE}); the table reports "
                           f"only those: run `mmi-ray confirm {path}` first")
        try:
            state = json.loads(read_text(conf))
        except json.JSONDecodeError as e:
            raise MmiError(f"{conf}: damaged ({e.msg}, line {e.lineno})") from None
        spec, base = read_spec(root)
        runs = pd.DataFrame(state.get("runs", []))
        if runs.empty:
            raise MmiError(f"{conf}: runs: no confirmation run finished")
        dataset, model = _dataset_name(base), flatten(base).get("model.name", "tiny")
        taken = set()
        for arm in state["arms"]:  # ranked on validation: the first arm of each method stands for it
            g = runs[runs["arm"] == arm]
            method = state["arms"][arm]["method"]
            if g.empty or method in taken:
                continue
            taken.add(method)
            lo, hi = t_interval(g["test_accuracy"])
            pub = _published(model, flatten(base).get("data.dataset", ""), method)
            rows.append({"sweep": spec["name"], "dataset": dataset, "model": model, "method": method, "arm": arm,
                         "n": len(g), "test_mean": float(g["test_accuracy"].mean()), "test_low": lo, "test_high": hi,
                         "test_n": int(g["test_n"].max()) if "test_n" in g and g["test_n"].notna().all() else None,
                         "test_ece": _mean(g, "test_ece"), "bleu": _mean(g, "test_rationale_bleu"),
                         "faithful": _mean(g, "test_rationale_faithful"),
                         "published": pub[0] if pub else math.nan, "source": pub[1] if pub else ""})
    out = pd.DataFrame(rows)
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    out["_order"] = [order.get(m, len(order)) for m in out["method"]]
    return out.sort_values(["dataset", "model", "_order", "method"]).drop(columns="_order").reset_index(drop=True)


def _cells(rows: pd.DataFrame, latex: bool) -> tuple[pd.DataFrame, list[str]]:
    """The printed cells and the numbered source notes (one per distinct source)."""
    sources: list[str] = []
    dup = rows.duplicated(["dataset", "model", "method"], keep=False)
    out = []
    pm = r"$\pm$" if latex else "±"
    for i, r in rows.iterrows():
        acc = f"{100 * r['test_mean']:.1f}"
        if r["test_low"] == r["test_low"]:
            acc += f" {pm} {100 * (r['test_high'] - r['test_low']) / 2:.1f}"
        pub = ""
        if r["published"] == r["published"]:
            if r["source"] not in sources:
                sources.append(r["source"])
            mark = sources.index(r["source"]) + 1
            pub = f"{r['published']:.2f}" + (f"$^{{{mark}}}$" if latex else f" [{mark}]")
        method = r["method"] + (f" ({r['sweep']})" if dup[i] else "")
        out.append({"dataset": r["dataset"], "model": r["model"], "method": method, "test acc. (%)": acc,
                    "n": str(r["n"]), "ECE": "" if r["test_ece"] != r["test_ece"] else f"{r['test_ece']:.3f}",
                    "BLEU": "" if r["bleu"] != r["bleu"] else f"{r['bleu']:.1f}",
                    "faithful (%)": "" if r["faithful"] != r["faithful"] else f"{100 * r['faithful']:.1f}",
                    "published (%)": pub})
    return pd.DataFrame(out), sources


NOTE = ("Test accuracy: mean over the confirmation runs' fresh seeds ± the half-width of the 95% Student-t "
        "interval (n seeds; each run's test split read once, after training). ECE: the MI paper's equal-mass "
        "ECE on test. BLEU and faithful (the share of the student's own rationales whose stated answer is its "
        "predicted label) where rationales were scored (train.eval_rationales). Published figures stand only "
        "beside the same model and dataset.")


def to_markdown(rows: pd.DataFrame) -> str:
    cells, sources = _cells(rows, latex=False)
    cols = list(cells.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" if c in ("dataset", "model", "method") else "---:"
                                                          for c in cols) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in cells.itertuples(index=False)]
    notes = [f"[{i}] {s}" for i, s in enumerate(sources, start=1)]
    return "\n".join(lines + ["", NOTE, *notes]) + "\n"


def _tex(text: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#")):
        text = text.replace(a, b)
    return text


def to_latex(rows: pd.DataFrame) -> str:
    """booktabs: one block per dataset and model, a \\midrule between blocks."""
    cells, sources = _cells(rows, latex=True)
    value_cols = ["method", "test acc. (%)", "n", "ECE", "BLEU", "faithful (%)", "published (%)"]
    keep = [c for c in value_cols if c == "method" or (cells[c] != "").any()]
    lines = [r"\begin{tabular}{l" + "r" * (len(keep) - 1) + "}", r"\toprule",
             " & ".join(_tex(c) for c in keep) + r" \\", r"\midrule"]
    blocks = list(cells.groupby(["dataset", "model"], sort=False))
    for b, ((dataset, model), g) in enumerate(blocks):
        lines.append(rf"\multicolumn{{{len(keep)}}}{{l}}{{\textit{{{_tex(dataset)}, {_tex(model)}}}}} \\")
        for _, r in g.iterrows():
            vals = [r[c] if c in ("test acc. (%)", "published (%)") else _tex(r[c]) for c in keep]
            lines.append(" & ".join(vals) + r" \\")
        if b < len(blocks) - 1:
            lines.append(r"\midrule")
    lines += [r"\bottomrule", r"\end{tabular}", "", "% " + NOTE]
    lines += [f"% $^{i}$ {s}" for i, s in enumerate(sources, start=1)]
    return "\n".join(lines) + "\n"
