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
    load_sweep_dir,
    paired_comparison,
    paper_table,
    t_interval,
)
from mmi_ray.analysis.report import build_report
from mmi_ray.results.stats import published_beside, with_method


def test_t_interval_is_exact_on_a_hand_computed_case():
    lo, hi = t_interval([0.5, 0.6, 0.7])  # mean 0.6, s 0.1, t(2, 0.975) = 4.302653
    assert lo == pytest.approx(0.6 - 4.302653 * 0.1 / 3**0.5, abs=1e-6)
    assert hi == pytest.approx(0.6 + 4.302653 * 0.1 / 3**0.5, abs=1e-6)
    assert all(x != x for x in t_interval([0.5]))  # one seed: no interval
    assert t_interval([0.4, 0.4]) == (0.4, 0.4)


@pytest.mark.parametrize("n", [3, 5, 10])
@pytest.mark.parametrize("dist", ["normal", "skewed"])
def test_t_interval_coverage_is_within_two_points_of_95(n, dist):
    """20,000 simulated experiments of n seeds each. ``skewed``: Beta(8, 2), skewness -0.85, like
    accuracies near a ceiling. (On an exponential, skewness 2, coverage drops to ~88%.)"""
    rng = np.random.default_rng(n)
    if dist == "normal":
        x, mu = rng.normal(0.6, 0.1, (20_000, n)), 0.6
    else:
        x, mu = rng.beta(8, 2, (20_000, n)), 0.8
    hits = sum(lo <= mu <= hi for lo, hi in (t_interval(row) for row in x))
    assert abs(hits / len(x) - 0.95) <= 0.02


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


def test_holm_matches_a_hand_computed_family():
    from mmi_ray.results.stats import holm

    adj = holm([0.01, 0.04, 0.03, float("nan"), 0.20])
    # sorted 0.01, 0.03, 0.04, 0.20 (m=4): 0.04, 0.09, 0.09 (monotone), 0.20
    assert adj[0] == pytest.approx(0.04) and adj[2] == pytest.approx(0.09) and adj[1] == pytest.approx(0.09)
    assert adj[4] == pytest.approx(0.20) and adj[3] != adj[3]


def test_comparisons_only_at_equal_budget():
    runs = _runs({"dss": [0.60, 0.62, 0.58], "mi": [0.65, 0.67, 0.63]}, {"dss": (0.5, 0.0), "mi": (0.5, 0.1)})
    early = _runs({"stop": [0.9, 0.9, 0.9]}, {"stop": (0.5, 0.3)}, steps=(10,)).assign(status="stopped early")
    runs = pd.concat([runs, early], ignore_index=True)
    comp = paired_comparison(runs, aggregate(runs, "val_accuracy", []), "DSS").set_index("trial_id")
    assert bool(comp.loc["mi", "compared"]) and comp.loc["mi", "mean_diff"] == pytest.approx(0.05)
    assert not bool(comp.loc["stop", "compared"]) and comp.loc["stop", "step"] == 10  # 10 steps vs 20: not compared
    assert comp.loc["stop", "mean_diff"] != comp.loc["stop", "mean_diff"]  # no figure for it
    at10 = paired_comparison(runs, aggregate(runs, "val_accuracy", [], budget=10), "DSS", budget=10)
    assert set(at10[at10["compared"]]["trial_id"]) == {"mi", "stop"}  # at a step all reached, all compare


def test_paired_test_detects_a_consistent_gain():
    runs = _runs({"dss": [0.60, 0.55, 0.70, 0.65, 0.58], "mi": [0.63, 0.59, 0.72, 0.69, 0.61]},
                 {"dss": (0.5, 0.0), "mi": (0.5, 0.1)})
    agg = aggregate(runs, "val_accuracy", [])
    comp = paired_comparison(runs, agg, "DSS").iloc[0]
    assert comp["p_value"] < 0.01 and comp["ci_low"] > 0
    diffs = np.array([0.03, 0.04, 0.02, 0.04, 0.03])
    assert comp["effect_dz"] == pytest.approx(diffs.mean() / diffs.std(ddof=1))


def test_published_numbers_stand_only_beside_test_figures():
    runs = _runs({"dss": [0.60, 0.62], "lab": [0.50, 0.52]}, {"dss": (0.5, 0.0), "lab": (0.0, 0.0)})
    table = paper_table(aggregate(runs, "val_accuracy", []))
    col = "cqa (google/t5-v1_1-base), validation"
    assert table.loc["DSS (ours, n=2)", col].startswith("61.00")
    assert not any("published" in str(i) for i in table.index)  # validation: no published figure beside it
    test = pd.DataFrame([{"method": "DSS", "dataset": "cqa", "model": "google/t5-v1_1-base", "test_mean": 0.6,
                          "test_low": 0.55, "test_high": 0.65, "test_n": 5},
                         {"method": "MI (infonce)", "dataset": "esnli", "model": "google/t5-v1_1-base",
                          "test_mean": 0.9, "test_low": 0.88, "test_high": 0.92, "test_n": 5},
                         {"method": "DSS", "dataset": "builtin", "model": "tiny", "test_mean": 0.7,
                          "test_low": float("nan"), "test_high": float("nan"), "test_n": 1}])
    pub = published_beside(test).set_index("dataset")
    assert pub.loc["cqa", "published (test)"] == "63.29" and "Hsieh et al. 2023" in pub.loc["cqa", "source"]
    assert "not confirmed" in pub.loc["cqa", "source"]
    assert pub.loc["esnli", "published (test)"] == "89.50" and "unconfirmed" in pub.loc["esnli", "source"]
    assert pub.loc["builtin", "published (test)"] == "" and pub.loc["builtin", "source"] == ""


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
            log = [json.dumps({"step": s, "loss": 2.0 / s, "label": 1.0 / s, "rationale": 0.8 / s, "mi": 0.2 / s,
                               "mi_estimate": 0.1, "lr": 0.001}) for s in range(5, steps[-1] + 1, 5)]
            (run / "train_log.jsonl").write_text("\n".join(log) + "\n")  # train.log_every 5
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
    # the training log (train.log_every steps) of each run, beside the evaluations
    log = res.train_log[(res.train_log["trial_id"] == "t1") & (res.train_log["seed"] == 0)]
    assert list(log["step"]) == [5, 10, 15, 20] and log["loss"].iloc[0] == pytest.approx(0.4)


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
    assert {"metric_vs_mi_weight.png", "rationale_weight.png", "learning_curves.png", "training_loss.png"} <= set(r["plots"])
    # it opens with accuracy by method (each method's best configuration here: no confirmation runs)
    assert r["plots"][0] == "accuracy_by_method.png" and text.index("accuracy_by_method.png") < text.index("## Trials")
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
    assert e.value.code == 2 and "--test-methods: not allowed with argument --no-test" in capsys.readouterr().err
    d = write_fake_sweep(tmp_path)
    assert main(["analyze", "--no-test", "--out", str(tmp_path / "rep"), str(d)]) == 0
    assert "Trial `t1`" in (tmp_path / "rep" / "report.md").read_text()


def test_method_summary_says_what_its_intervals_count():
    """The sweep's closing "by method" lines: with several seeds a Student-t interval over seeds and
    a paired one for the gap to label-only; with one seed, Wilson over the validation questions and
    Newcombe's interval for the gap (hand-checked values)."""
    from mmi_ray.results.stats import aggregate, newcombe_difference, wilson_interval
    from mmi_ray.sweep.summary import method_summary

    methods = {"dss": (0.5, 0.0), "mi": (0.5, 0.1), "lab": (0.0, 0.0)}
    runs = _runs({"dss": [0.60, 0.62, 0.58], "mi": [0.65, 0.69, 0.64], "lab": [0.50, 0.52, 0.48]}, methods)
    out = method_summary(aggregate(runs, "val_accuracy", ["loss.rationale_weight", "loss.mi_weight"]), runs,
                         "val_accuracy", "max", ["loss.rationale_weight", "loss.mi_weight"])
    assert [e["method"] for e in out] == ["MI (maxpool)", "DSS", "label-only"]
    mi = out[0]
    assert mi["interval"] == "Student-t over 3 seeds" and mi["vs_label_only"] == pytest.approx(0.16)
    assert (mi["low"], mi["high"]) == pytest.approx(t_interval([0.65, 0.69, 0.64]))
    assert (mi["vs_low"], mi["vs_high"]) == pytest.approx(t_interval([0.15, 0.17, 0.16]))
    assert "vs_label_only" not in out[2]

    one = _runs({"dss": [0.9], "lab": [0.25]}, methods).assign(val_n=60)
    out = method_summary(aggregate(one, "val_accuracy", ["loss.rationale_weight", "loss.mi_weight"]), one,
                         "val_accuracy", "max", ["loss.rationale_weight", "loss.mi_weight"])
    dss, lab = out
    assert dss["interval"] == "Wilson over 60 questions, 1 seed" and dss["n_questions"] == 60
    assert (lab["low"], lab["high"]) == pytest.approx((0.1578, 0.3723), abs=1e-4)  # 15 of 60, by hand
    assert (dss["low"], dss["high"]) == pytest.approx(wilson_interval(54, 60))
    assert (dss["vs_low"], dss["vs_high"]) == pytest.approx(newcombe_difference(0.9, 60, 0.25, 60))
    assert dss["vs_low"] < 0.65 < dss["vs_high"]


def test_arm_comparisons_are_one_family_with_each_pair_once():
    """Confirmation arms against DSS and label-only, paired by seed: DSS vs label-only is one
    comparison (not also label-only vs DSS), and Holm runs over exactly these three."""
    from mmi_ray.results.stats import arm_comparisons, arm_table, holm

    acc = {"top1": [0.93, 0.95, 0.90], "DSS": [0.96, 0.97, 0.95], "label-only": [0.25, 0.20, 0.30]}
    method = {"top1": "MI (maxpool)", "DSS": "DSS", "label-only": "label-only"}
    runs = pd.DataFrame([{"arm": a, "method": method[a], "seed": s, "test_accuracy": v, "val_accuracy": v,
                          "val_n": 60, "test_n": 60} for a, vals in acc.items() for s, v in enumerate(vals)])
    cmp = arm_comparisons(runs)
    assert [(r.arm, r.baseline) for r in cmp.itertuples()] == [("top1", "DSS"), ("label-only", "DSS"),
                                                               ("top1", "label-only")]
    first = cmp.iloc[0]
    assert first["mean_diff"] == pytest.approx(-0.1 / 3) and first["n_pairs"] == 3
    assert (first["ci_low"], first["ci_high"]) == pytest.approx(t_interval([-0.03, -0.02, -0.05]))
    assert list(cmp["p_holm"]) == pytest.approx(list(holm(cmp["p_value"])))
    table = arm_table(runs)
    assert list(table["test_n"]) == [60, 60, 60] and list(table["n"]) == [3, 3, 3]


def test_pareto_front_on_a_hand_made_case():
    from mmi_ray.results.stats import pareto_front

    # (accuracy max, ece min) per configuration, two seeds each; c is dominated by a, e is unfinished
    figures = {"a": (0.9, 0.05), "b": (0.95, 0.20), "c": (0.85, 0.10), "d": (0.60, 0.01), "e": (0.99, 0.0)}
    rows = []
    for i, (tid, (acc, ece)) in enumerate(figures.items()):
        for seed, jitter in ((0, -0.01), (1, 0.01)):
            for step in (10, 20):
                rows.append({"sweep": "s", "trial_id": tid, "seed": seed, "step": step, "method": "MI",
                             "loss.mi_weight": 0.1 * (i + 1), "val_accuracy": acc + jitter, "val_ece": ece,
                             "status": "stopped early" if tid == "e" else "completed"})
    front = pareto_front(pd.DataFrame(rows), [("val_accuracy", "max"), ("val_ece", "min")], ["loss.mi_weight"])
    assert set(front["trial_id"]) == {"a", "b", "c", "d"}  # completed only
    assert dict(zip(front["trial_id"], front["pareto"])) == {"b": True, "a": True, "d": True, "c": False}
    assert list(front["trial_id"]) == ["b", "a", "d", "c"]  # the front first, by the first objective
    assert front.set_index("trial_id").loc["a", "val_accuracy"] == pytest.approx(0.9)
    assert (front["n_seeds"] == 2).all()
    # the modes count: minimising both, d (lowest on both) dominates every other configuration
    flipped = pareto_front(pd.DataFrame(rows), [("val_accuracy", "min"), ("val_ece", "min")], [])
    assert set(flipped.loc[flipped["pareto"], "trial_id"]) == {"d"}
    # a configuration TPE proposed again (trial a2: a's values, its adopted run's figures) is one point,
    # shown once with the trials that proposed it; identical rows do not dominate each other, so
    # without this it stood on the front twice
    again = [{**r, "trial_id": "a2"} for r in rows if r["trial_id"] == "a"]
    twice = pareto_front(pd.DataFrame(rows + again), [("val_accuracy", "max"), ("val_ece", "min")], ["loss.mi_weight"])
    assert list(twice["trial_id"]) == ["b", "a", "d", "c"]
    assert dict(zip(twice["trial_id"], twice["trials"])) == {"b": 1, "a": 2, "d": 1, "c": 1}
    assert (twice["n_seeds"] == 2).all()


def _confirmation(acc: dict[str, list[float]], methods: dict[str, str], params: dict | None = None) -> dict:
    """A confirmation state as ``confirm/confirmation.json`` holds it, from per-arm accuracies per seed."""
    runs = [{"arm": a, "method": methods[a], "seed": s, "test_accuracy": v, "val_accuracy": v, "val_n": 40,
             "test_n": 40} for a, vals in acc.items() for s, v in enumerate(vals, start=1)]
    arms = {a: {"method": methods[a], "params": (params or {}).get(a, {})} for a in acc}
    return {"seeds": [1, 2], "arms": arms, "runs": runs}


def test_intervals_stay_inside_what_they_measure_and_say_when_seeds_are_too_few():
    """Two seeds that disagree give a t interval past 0 and 100 (the own-data sweep printed
    -60.00 points [-250.59, +130.59]): means are cut at [0, 100], differences at [-100, 100], and
    the line says n is too small."""
    from mmi_ray.results.stats import arm_comparisons, arm_table, too_wide
    from mmi_ray.sweep.confirm import headline_lines

    assert t_interval([0.9, 0.3], bounds=(0.0, 1.0)) == (0.0, 1.0) and too_wide([0.9, 0.3], bounds=(0.0, 1.0))
    assert not too_wide([0.5, 0.52], bounds=(0.0, 1.0))
    state = _confirmation({"DSS": [0.975, 0.70], "label-only": [0.30, 0.60]}, {"DSS": "DSS", "label-only": "label-only"})
    runs = pd.DataFrame(state["runs"])
    table = arm_table(runs)
    assert table["val_low"].min() >= 0 and table["val_high"].max() <= 1 and table["val_wide"].all()
    near_ceiling = arm_table(pd.DataFrame(_confirmation({"DSS": [1.0, 0.95, 1.0]}, {"DSS": "DSS"})["runs"]))
    assert near_ceiling["val_high"].iloc[0] == 1.0 and not near_ceiling["val_wide"].iloc[0]  # cut, not too few
    cmp = arm_comparisons(runs)
    raw = t_interval([0.30 - 0.975, 0.60 - 0.70])
    assert raw[0] < -1  # the uncut interval reached past -100 points
    assert cmp.iloc[0]["ci_low"] == -1.0 and cmp.iloc[0]["ci_wide"]
    text = "\n".join(headline_lines(state, "val_accuracy"))
    assert "[-100.00, " in text and "-250" not in text
    assert "n=2 seeds is wider than the whole range" in text and "too few seeds" in text


def test_when_nothing_is_learned_no_arm_wins_a_tie_and_no_nan_is_printed():
    """Every run at 0%: the comparisons say there is no difference to measure (was `d_z nan, p nan
    (Holm nan)`), and the arms share rank 1."""
    from mmi_ray.sweep.confirm import headline_lines

    state = _confirmation({"DSS": [0.0, 0.0], "label-only": [0.0, 0.0], "MI-maxpool": [0.0, 0.0]},
                          {"DSS": "DSS", "label-only": "label-only", "MI-maxpool": "MI (maxpool)"})
    text = "\n".join(headline_lines(state, "val_accuracy"))
    assert "nan" not in text.lower()
    assert "label-only - DSS: no difference measurable: every run of both scored 0.00%, n=2" in text
    assert text.count("  =1  ") == 3 and "share a rank" in text


def test_arms_are_named_for_what_they_are_and_ranked_by_the_confirmation():
    """The README's ablation had `top1` (MI infonce, val 96.0) above `top2` (DSS, val 96.5): names
    from the search's order read as ranks. Arms are named by method (and by the values that tell
    two of one method apart); older states' `topN` keys are shown by the same names; the table is
    ranked on the confirmation's own validation means, the export's rule."""
    from mmi_ray.results.stats import arm_names, arm_table, confirmation_runs

    arms = {0: {"method": "MI (maxpool)", "params": {"loss.mi_weight": 0.1, "loss.rationale_weight": 4}},
            1: {"method": "MI (maxpool)", "params": {"loss.mi_weight": 0.3, "loss.rationale_weight": 4}},
            2: {"method": "DSS", "params": {"loss.mi_weight": 0.0}}, 3: {"method": "MI (infonce)", "params": {}}}
    assert arm_names(arms) == {0: "MI-maxpool@mi_weight=0.1", 1: "MI-maxpool@mi_weight=0.3", 2: "DSS", 3: "MI-infonce"}
    state = _confirmation({"top1": [0.96, 0.96], "top2": [0.965, 0.965], "top3": [0.25, 0.26]},
                          {"top1": "MI (infonce)", "top2": "DSS", "top3": "label-only"})
    table = arm_table(confirmation_runs(state))
    assert list(table["arm"]) == ["DSS", "MI-infonce", "label-only"] and list(table["rank"]) == [1, 2, 3]
    assert not table["tied"].any()


def _scores(d: Path, val: dict[str, float]) -> None:
    """Rewrite a fake sweep's runs so that every evaluation of trial ``tid`` scored ``val[tid]``."""
    for run in (d / "runs").iterdir():
        tid = run.name.split("_seed")[0]
        if tid in val:
            lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
            (run / "metrics.jsonl").write_text("".join(json.dumps({**m, "val_accuracy": val[tid]}) + "\n" for m in lines))


def test_a_tie_in_the_search_goes_to_no_arm_silently(tmp_path):
    """Every completed configuration at 0%: none is confirmed as the best (label-only won that tie and
    was merged with the baseline arm), only the baselines are; a tie across the top-k cut is named."""
    from mmi_ray.layout import read_spec
    from mmi_ray.sweep.confirm import choose_arms
    from mmi_ray.sweep.spec import Confirm, LoadedSweep, SweepSpec

    d = write_fake_sweep(tmp_path)
    spec, base = read_spec(str(d))
    sweep = LoadedSweep(SweepSpec.model_validate({**spec, "base": base, "num_trials": 3}), base, str(d / "sweep_spec.yaml"))
    _scores(d, {"t1": 0.0, "t2": 0.0})
    arms, notes = choose_arms(sweep, str(d), Confirm(top_k=1, seeds=[5, 6]))
    assert list(arms) == ["DSS", "label-only"] and all(a["from_trial"] is None for a in arms.values())
    assert notes == ["every completed configuration of the search scored val_accuracy 0: none is best, so none is "
                     "confirmed as such; the baselines are"]
    import shutil

    shutil.copytree(d / "trial_t1", d / "trial_t5")  # a third completed configuration, below the tie
    for seed in (0, 1):
        shutil.copytree(d / "runs" / f"t1_seed{seed}", d / "runs" / f"t5_seed{seed}")
        cfg = yaml.safe_load((d / "runs" / f"t5_seed{seed}" / "config.yaml").read_text())
        cfg["loss"]["mi_weight"] = 0.9
        (d / "runs" / f"t5_seed{seed}" / "config.yaml").write_text(yaml.safe_dump(cfg))
    _scores(d, {"t1": 0.5, "t2": 0.5, "t5": 0.3})
    arms, notes = choose_arms(sweep, str(d), Confirm(top_k=1, seeds=[5, 6]))
    assert list(arms) == ["MI-maxpool", "DSS", "label-only"] and arms["MI-maxpool"]["search_rank"] == 1
    assert notes and "2 configurations tie at val_accuracy 0.5 across the top-1 cut" in notes[0]
