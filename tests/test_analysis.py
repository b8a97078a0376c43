"""Analysis maths on synthetic frames with known answers, and loading of (damaged) sweep folders."""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mmi_ray.analysis import (
    aggregate,
    at_budget,
    bootstrap_ci,
    load_sweep_dir,
    paired_comparison,
    paper_table,
)
from mmi_ray.analysis.report import build_report
from mmi_ray.analysis.stats import with_method


def test_bootstrap_ci_contains_the_true_mean_and_is_reproducible():
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(40):
        lo, hi = bootstrap_ci(rng.normal(0.7, 0.05, size=30))
        hits += lo <= 0.7 <= hi
    assert hits >= 34  # a 95% interval: expect ~38 of 40
    v = rng.normal(0, 1, 10)
    assert bootstrap_ci(v) == bootstrap_ci(v)
    assert all(x != x for x in bootstrap_ci([0.5]))  # one seed: no interval


def _runs(values: dict[str, list[float]], methods: dict[str, tuple], steps=(10, 20)) -> pd.DataFrame:
    rows = []
    for tid, vals in values.items():
        rw, mw = methods[tid]
        for seed, v in enumerate(vals):
            for step in steps:
                rows.append({"sweep": "s", "trial_id": tid, "seed": seed, "step": step, "status": "completed",
                             "val_accuracy": v if step == steps[-1] else v / 2, "loss.rationale_weight": rw,
                             "loss.mi_weight": mw, "loss.mi_estimator": "maxpool", "dataset": "cqa",
                             "model": "google/t5-v1_1-base"})
    return with_method(pd.DataFrame(rows))


def test_aggregate_and_paired_differences_are_exact():
    runs = _runs({"dss": [0.60, 0.62, 0.58], "mi": [0.65, 0.67, 0.63], "lab": [0.50, 0.52, 0.48]},
                 {"dss": (0.5, 0.0), "mi": (0.5, 0.1), "lab": (0.0, 0.0)})
    agg = aggregate(runs, "val_accuracy", ["loss.mi_weight", "loss.rationale_weight"])
    row = agg.set_index("trial_id").loc["mi"]
    assert row["mean"] == pytest.approx(0.65) and row["std"] == pytest.approx(0.02) and row["n_seeds"] == 3
    assert set(agg["method"]) == {"DSS", "MI (maxpool)", "label-only"}
    comp = paired_comparison(runs, agg, "DSS").set_index("trial_id")
    assert comp.loc["mi", "mean_diff"] == pytest.approx(0.05)
    assert comp.loc["mi", "ci_low"] == pytest.approx(0.05) and comp.loc["mi", "ci_high"] == pytest.approx(0.05)
    assert comp.loc["lab", "mean_diff"] == pytest.approx(-0.10) and comp.loc["lab", "n_pairs"] == 3
    # at an earlier, fixed budget every value is halved
    early = aggregate(runs, "val_accuracy", [], budget=10).set_index("trial_id")
    assert early.loc["mi", "mean"] == pytest.approx(0.325)
    assert len(at_budget(runs, "final")) == 9


def test_paired_test_detects_a_consistent_gain():
    runs = _runs({"dss": [0.60, 0.55, 0.70, 0.65, 0.58], "mi": [0.63, 0.59, 0.72, 0.69, 0.61]},
                 {"dss": (0.5, 0.0), "mi": (0.5, 0.1)})
    agg = aggregate(runs, "val_accuracy", [])
    comp = paired_comparison(runs, agg, "DSS").iloc[0]
    assert comp["p_value"] < 0.01 and comp["ci_low"] > 0


def test_paper_table_puts_published_numbers_beside_ours():
    runs = _runs({"dss": [0.60, 0.62], "lab": [0.50, 0.52]}, {"dss": (0.5, 0.0), "lab": (0.0, 0.0)})
    table = paper_table(aggregate(runs, "val_accuracy", []))
    col = "cqa (google/t5-v1_1-base)"
    assert table.loc["DSS (published, test)", col] == "63.29"
    assert table.loc["DSS (ours, n=2)", col].startswith("61.00")


def write_fake_sweep(root: Path, damaged: bool = False) -> Path:
    """A sweep folder laid out as the runner writes it, from known numbers (no Ray needed)."""
    d = root / "fake"
    spec = {"name": "fake", "search": {"loss.mi_weight": {"type": "loguniform", "low": 0.01, "high": 1.0},
                                       "loss.rationale_weight": {"type": "uniform", "low": 0.0, "high": 1.0}},
            "objective": {"metric": "val_accuracy", "mode": "max"}, "overrides": {}}
    base = {"train": {"max_steps": 20}, "loss": {"mi_estimator": "maxpool"}}
    d.mkdir(parents=True)
    (d / "sweep_spec.yaml").write_text(yaml.safe_dump({"spec": spec, "base": base}))
    trials = {"t1": (0.1, 0.5, [0.4, 0.5]), "t2": (0.5, 0.5, [0.3, 0.2]), "t3": (0.01, 0.0, [0.1]),
              "t4": (0.2, 0.5, [])}
    for tid, (mw, rw, finals) in trials.items():
        (d / f"trial_{tid}").mkdir()
        (d / f"trial_{tid}" / "params.json").write_text(json.dumps({"loss.mi_weight": mw, "loss.rationale_weight": rw}))
        for seed, final in enumerate(finals if tid != "t3" else [0.1, 0.1]):
            run = d / "runs" / f"{tid}_seed{seed}"
            run.mkdir(parents=True)
            cfg = {"loss": {"mi_weight": mw, "rationale_weight": rw, "mi_estimator": "maxpool"},
                   "data": {"dataset": "builtin"}, "model": {"name": "tiny"}, "scaling": {"use_gpu": False, "num_workers": 1}}
            (run / "config.yaml").write_text(yaml.safe_dump(cfg))
            steps = [10] if tid == "t3" else [10, 20]
            lines = [json.dumps({"step": s, "val_accuracy": final * s / 20, "loss": 1.0, "label": 0.5, "rationale": 0.4,
                                 "mi": 0.1, "mi_estimate": 0.2, "train_time_s": s, "eval_time_s": 1.0}) for s in steps]
            (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    (d / "trial_t4" / "error.txt").write_text("Traceback...\nNonFiniteLossError: non-finite loss at step 3\n")
    (d / "sweep_summary.json").write_text(json.dumps({"wall_time_s": 100.0, "trial_train_time_s": 80.0,
                                                      "overhead_ratio": 1.25}))
    if damaged:
        with open(d / "runs" / "t1_seed1" / "metrics.jsonl", "a") as f:
            f.write('{"step": 30, "val_acc')  # cut off mid-line by a crash
        (d / "runs" / "t2_seed1" / "config.yaml").unlink()
    return d


def test_load_gives_tidy_rows_and_statuses(tmp_path):
    res = load_sweep_dir(write_fake_sweep(tmp_path))
    assert len(res.runs) == 2 * 2 + 2 * 2 + 2 * 1  # trial x seed x step
    assert {"loss.mi_weight", "loss.rationale_weight", "val_accuracy", "mi_estimate", "status"} <= set(res.runs)
    status = res.trials.set_index("trial_id")["status"].to_dict()
    assert status == {"t1": "completed", "t2": "completed", "t3": "stopped early", "t4": "error"}
    assert "non-finite loss at step 3" in res.trials.set_index("trial_id").loc["t4", "error"]


def test_damaged_folder_is_reported_not_fatal(tmp_path):
    res = load_sweep_dir(write_fake_sweep(tmp_path, damaged=True))
    assert any("t1_seed1/metrics.jsonl: line 3: damaged JSON line skipped" in s for s in res.skipped)
    assert any("t2_seed1: no config.yaml" in s for s in res.skipped)
    assert len(res.runs[res.runs["trial_id"] == "t2"]) == 2  # the other seed still loads
    assert load_sweep_dir(tmp_path / "nope").skipped[0].endswith("not a sweep folder")


def test_report_on_a_fake_sweep(tmp_path):
    d = write_fake_sweep(tmp_path, damaged=True)
    r = build_report([str(d)], str(tmp_path / "report"), evaluate_test=False)
    text = Path(r["report"]).read_text()
    assert r["configurations"] == 4 - 1  # t4 never reported
    for name in r["plots"]:
        assert (tmp_path / "report" / name).stat().st_size > 1000
    assert {"metric_vs_mi_weight.png", "rationale_weight.png", "learning_curves.png"} <= set(r["plots"])
    assert "## Best configuration" in text and "Trial `t1`" in text
    assert "1 error" in text and "damaged JSON line skipped" in text
    assert "overhead ratio 1.25" in text
    assert (tmp_path / "report" / "runs.parquet").exists() and (tmp_path / "report" / "report.html").exists()
    assert pd.read_csv(tmp_path / "report" / "runs.csv").shape[0] == 8  # t2 seed 1 left out


def test_analyze_command_takes_options_before_the_folders(tmp_path, capsys):
    from mmi_ray.cli import main

    with pytest.raises(SystemExit) as e:
        main(["analyze", "-h"])
    assert e.value.code == 0 and "--test-methods" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["analyze", "--no-test", "--test-methods", str(tmp_path)])
    assert e.value.code == 2 and "contradict" in capsys.readouterr().err
    d = write_fake_sweep(tmp_path)
    assert main(["analyze", "--no-test", "--out", str(tmp_path / "rep"), str(d)]) == 0
    assert "Trial `t1`" in (tmp_path / "rep" / "report.md").read_text()
