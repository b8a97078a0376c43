"""`mmi-ray table`: datasets x methods from confirmation runs, Markdown and LaTeX (booktabs)."""

import json
import math
from pathlib import Path

import pytest
import yaml

from mmi_ray.analysis.table import table_rows, to_latex, to_markdown
from mmi_ray.cli import main


def fake_confirmed_sweep(root: Path, name: str, base: dict, arms: dict, per_seed: dict) -> Path:
    """A sweep folder as `mmi-ray sweep` + confirmation leave it (only what the table reads)."""
    d = root / name
    (d / "confirm").mkdir(parents=True)
    (d / "sweep_spec.yaml").write_text(yaml.safe_dump({"spec": {"name": name, "search": {}}, "base": base}))
    runs = []
    for arm, figures in per_seed.items():
        for seed, f in enumerate(figures, start=1000):
            runs.append({"arm": arm, "method": arms[arm]["method"], "seed": seed, "step": 100, "val_accuracy": 0.5,
                         "test_n": 60, **f})
    (d / "confirm" / "confirmation.json").write_text(json.dumps({"seeds": [1000, 1001, 1002], "arms": arms,
                                                                 "runs": runs}))
    return d


def _arms(*methods):
    return {a: {"method": m, "params": {}, "from_trial": None} for a, m in methods}


@pytest.fixture
def two_sweeps(tmp_path):
    props = fake_confirmed_sweep(
        tmp_path, "props-ablation", {"data": {"dataset": "builtin", "builtin": {"tasks": ["props"]}}},
        _arms(("top1", "MI (maxpool)"), ("top2", "MI (maxpool)"), ("DSS", "DSS"), ("label-only", "label-only")),
        {"top1": [{"test_accuracy": a, "test_ece": 0.02, "test_rationale_bleu": 80.0, "test_rationale_faithful": 0.9}
                  for a in (0.90, 0.94, 0.92)],
         "top2": [{"test_accuracy": 0.5, "test_ece": 0.3} for _ in range(3)],  # a lower-ranked arm: not shown
         "DSS": [{"test_accuracy": a, "test_ece": 0.04} for a in (0.95, 0.97, 0.96)],
         "label-only": [{"test_accuracy": a, "test_ece": 0.5} for a in (0.25, 0.20, 0.30)]})
    cqa = fake_confirmed_sweep(
        tmp_path, "paper-cqa", {"data": {"dataset": "cqa"}, "model": {"name": "google/t5-v1_1-base"}},
        _arms(("top1", "MI (infonce)"), ("DSS", "DSS")),
        {"top1": [{"test_accuracy": a} for a in (0.62, 0.64, 0.63)],
         "DSS": [{"test_accuracy": a} for a in (0.61, 0.63, 0.62)]})
    return [str(props), str(cqa)]


def test_rows_take_each_methods_best_arm_with_interval_and_published_beside(two_sweeps):
    rows = table_rows(two_sweeps)
    props = rows[rows["dataset"] == "builtin (props)"]
    assert list(props["method"]) == ["label-only", "DSS", "MI (maxpool)"]  # baselines first
    mi = props.set_index("method").loc["MI (maxpool)"]
    assert mi["arm"] == "top1" and mi["n"] == 3 and mi["test_mean"] == pytest.approx(0.92)
    # Student-t, 2 df: 0.92 ± 4.303 * 0.02 / sqrt(3)
    assert mi["test_high"] - mi["test_mean"] == pytest.approx(4.3027 * 0.02 / math.sqrt(3), rel=1e-3)
    assert mi["bleu"] == 80.0 and mi["faithful"] == pytest.approx(0.9) and mi["test_ece"] == pytest.approx(0.02)
    assert math.isnan(props.set_index("method").loc["DSS", "bleu"])  # not scored: empty, not zero
    assert props["published"].isna().all()  # no published figure for a built-in task
    cqa = rows[rows["dataset"] == "cqa"].set_index("method")
    assert cqa.loc["DSS", "published"] == 63.29 and "Hsieh et al. 2023" in cqa.loc["DSS", "source"]
    assert cqa.loc["MI (infonce)", "published"] == 63.88 and "unconfirmed" in cqa.loc["MI (infonce)", "source"]


def test_markdown_and_latex_outputs(two_sweeps, tmp_path, capsys):
    rows = table_rows(two_sweeps)
    md = to_markdown(rows)
    assert "| dataset | model | method | test acc. (%) | n | ECE | BLEU | faithful (%) | published (%) |" in md
    assert "| builtin (props) | tiny | MI (maxpool) | 92.0 ± 5.0 | 3 | 0.020 | 80.0 | 90.0 |  |" in md
    assert "| cqa | google/t5-v1_1-base | DSS | 62.0 ± 2.5 | 3 |  |  |  | 63.29 [1] |" in md
    assert "[1] Hsieh et al. 2023" in md and "[2] Chen et al. 2024" in md
    tex = to_latex(rows)
    assert tex.startswith(r"\begin{tabular}{lrrrrrr}") and r"\toprule" in tex and r"\bottomrule" in tex
    assert tex.count(r"\midrule") == 2  # under the header, and between the two datasets
    assert r"MI (maxpool) & 92.0 $\pm$ 5.0 & 3 & 0.020 & 80.0 & 90.0 &  \\" in tex
    assert r"DSS & 62.0 $\pm$ 2.5 & 3 &  &  &  & 63.29$^{1}$ \\" in tex
    assert r"faithful (\%)" in tex and "% $^1$ Hsieh et al. 2023" in tex
    # the command: both formats, and files
    assert main(["table", *two_sweeps, "--format", "both", "--out", str(tmp_path / "t" / "paper")]) == 0
    out = capsys.readouterr().out
    assert "| dataset |" in out and r"\toprule" in out
    assert (tmp_path / "t" / "paper.md").read_text() == md and (tmp_path / "t" / "paper.tex").read_text() == tex


def test_a_sweep_without_confirmation_runs_is_refused_by_name(tmp_path, capsys):
    d = tmp_path / "plain"
    d.mkdir()
    (d / "sweep_spec.yaml").write_text(yaml.safe_dump({"spec": {"name": "plain", "search": {}}, "base": {}}))
    assert main(["table", str(d)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"mmi-ray: error: {d}: no confirmation runs (confirm/confirmation.json); the table reports only "
                   f"those: run `mmi-ray confirm {d}` first")
