"""Sweeps on a real local Ray head: in-process, interrupted + resumed, and via ``ray job submit``."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

from conftest import read_trials
from mmi_ray.layout import read_metrics, read_trial_ends
from mmi_ray.sweep import load_sweep, run_sweep

REPO = Path(__file__).resolve().parents[1]
BASE = str(REPO / "configs" / "tiny_builtin.yaml")
pytestmark = pytest.mark.ray

POINTS = [{"loss.mi_weight": 0.1, "loss.rationale_weight": 0.5},
          {"loss.mi_weight": 0.5, "loss.rationale_weight": 0.9}]


def write_spec(tmp_path: Path, name: str, **changes) -> Path:
    spec = {
        "name": name,
        "base": BASE,
        "overrides": {"model.d_model": 32, "model.d_ff": 64, "model.num_layers": 1, "model.num_heads": 2,
                      "data.builtin.num_train": 300, "data.builtin.num_valid": 30, "data.builtin.num_test": 30,
                      "train.batch_size": 8, "train.max_steps": 30, "train.eval_every": 10, "optim.lr": 0.003},
        "search": {"loss.mi_weight": {"type": "loguniform", "low": 0.01, "high": 1.0},
                   "loss.rationale_weight": {"type": "uniform", "low": 0.1, "high": 1.0}},
        "points_to_evaluate": POINTS,
        "num_trials": 3,
        "seeds": [0],
        "scheduler": {"type": "asha", "grace_period": 10, "reduction_factor": 2},
        "storage_path": str(tmp_path / "results"),
        "failure": {"trial_max_failures": 1, "train_max_failures": 1, "time_budget_s": 900},
    }
    spec["overrides"].update(changes.pop("extra_overrides", {}))
    spec.update(changes)
    p = tmp_path / f"{name}.yaml"
    p.write_text("# test spec\n" + yaml.safe_dump(spec))
    return p


def test_small_sweep_with_seeds_completes_and_writes_trials(ray_session, tmp_path, capsys):
    """2 trials x 2 seeds at once: 4 Ray Train runs side by side with fractional CPUs, no deadlock, every
    placement group released afterwards; the trials, the study, the summary and the report on disk.
    Prints the peak memory of one Train worker process (the per-run cost here)."""
    import threading

    import psutil
    from ray.util import placement_group_table

    sweep = load_sweep(write_spec(tmp_path, "small", seeds=[0, 1], num_trials=2, max_concurrent_trials=2,
                                  resources={"num_workers": 1, "cpus_per_worker": 0.5}))
    peak, together, stop = {}, [0], threading.Event()

    def sample():  # RSS of every Train worker, and how many ran at once
        while not stop.is_set():
            now = [p for p in psutil.process_iter(["cmdline", "memory_info"])
                   if "RayTrainWorker" in " ".join(p.info["cmdline"] or []) and p.info["memory_info"]]
            for p in now:
                peak[p.pid] = max(peak.get(p.pid, 0), p.info["memory_info"].rss)
            together[0] = max(together[0], len(now))
            stop.wait(0.5)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    summary = run_sweep(sweep, verbose=0)
    stop.set()
    t.join()
    # a trial ASHA stops has its Train controller killed, which leaves its placement group to Ray
    # Train's cleaner actor (docs: ray-notes): freed within a bounded time, not at once
    t0 = time.time()
    while live := [g for g in placement_group_table().values() if g["state"] != "REMOVED"]:
        if time.time() > t0 + 90:
            break
        time.sleep(1)
    assert live == [], f"leaked placement groups (90 s after the sweep): {live}"
    assert len(peak) >= 4 and together[0] >= 3, (len(peak), together)  # the two trials' seed runs overlapped
    with capsys.disabled():
        print(f"\n[2 trials x 2 seeds at once] every placement group freed {time.time() - t0:.0f} s after the sweep; "
              f"{together[0]} Train workers at once; peak RSS per Train worker: "
              f"max {max(peak.values()) / 2**20:.0f} MiB, median {sorted(peak.values())[len(peak) // 2] / 2**20:.0f} MiB "
              f"over {len(peak)} workers")
    sweep_dir = tmp_path / "results" / "small"
    assert summary["trials"] == 2
    trial_dirs = sorted(p for p in sweep_dir.iterdir() if p.name.startswith("trial_"))
    assert len(trial_dirs) == 2
    for d in trial_dirs:
        tid = d.name[len("trial_"):]
        rows = [json.loads(x) for x in (d / "result.json").read_text().splitlines()]
        assert rows and {r["step"] for r in rows} <= {10, 20, 30}
        last = rows[-1]
        # the searcher sees the mean over seeds
        assert last["val_accuracy"] == pytest.approx((last["val_accuracy_seed0"] + last["val_accuracy_seed1"]) / 2)
        for seed in (0, 1):  # one Train run per seed, named after the trial id
            run = sweep_dir / "runs" / f"{tid}_seed{seed}"
            assert (run / "metrics.jsonl").exists() and any(run.glob("checkpoint_*"))
    # Optuna study on disk, openable with Optuna's own tools; the points to evaluate came first
    study = optuna.load_study(study_name="small", storage=f"sqlite:///{sweep_dir / 'optuna.db'}")
    assert len(study.trials) == 2
    assert [t.params for t in study.trials] == POINTS
    # the summary ranks completed trials only, and evaluated the best once on test
    trials = read_trials(sweep_dir / "trials.csv")
    assert len(trials) == 2 and set(trials["status"]) <= {"completed", "stopped early"}
    best = summary["best"]
    assert best is not None
    assert trials.loc[trials["trial_id"] == best["trial_id"], "status"].item() == "completed"
    assert 0.0 <= best["test_accuracy"] <= 1.0 and len(best["test_accuracy_per_seed"]) == 2
    assert summary["overhead_ratio"] > 1.0
    # the analysis loads this real sweep folder and writes its report
    from mmi_ray.analysis.report import build_report

    report = build_report([str(sweep_dir)], str(tmp_path / "report"), test_methods=True)
    assert report["configurations"] == 2
    text = Path(report["report"]).read_text()
    assert f"Trial `{best['trial_id']}`" in text and "from the sweep's final summary" in text
    # --test-methods: each method's best configuration evaluated on test now; for the best trial this
    # recomputation must equal the sweep's own test evaluation
    section = text.split("## Test split")[1].split("### Beside the published")[0]
    lines = [r for r in section.splitlines() if r.startswith("| ")]
    header = [c.strip() for c in lines[0].split("|")]
    rows = [dict(zip(header, (c.strip() for c in r.split("|")))) for r in lines[1:]]
    completed = trials[trials["status"] == "completed"]
    assert 1 <= len(rows) <= len(completed)
    best_row = next(r for r in rows if r["trial_id"] == best["trial_id"])
    assert float(best_row["test_mean"]) == pytest.approx(best["test_accuracy"], abs=1e-4)
    assert "val" not in " ".join(header)  # validation and test never share a table
    runs = pd.read_csv(tmp_path / "report" / "runs.csv")
    assert len(runs) == 2 * trials["step"].floordiv(10).sum()  # seeds x evaluations each trial reached
    assert all((tmp_path / "report" / p).exists() for p in report["plots"])
    # the same spec again (a new name): Ray Train trials adopt every finished seed run, train none of them
    again = run_sweep(load_sweep(write_spec(tmp_path, "small-again", seeds=[0, 1], num_trials=2, max_concurrent_trials=2,
                                          resources={"num_workers": 1, "cpus_per_worker": 0.5})), verbose=0)
    n_done = int((trials["status"] == "completed").sum())
    assert again["reused_runs"] >= 2 * n_done and again["best"]["params"] == best["params"]
    for run in (tmp_path / "results" / "small-again" / "runs").iterdir():
        assert (run / "config.yaml").exists()  # adopted folders are whole runs: the loader reads them
        if (run / "reused.json").exists():
            src = Path(json.loads((run / "reused.json").read_text())["from"])
            assert src.parent == sweep_dir / "runs"


def test_two_sweeps_with_different_searched_keys_analysed_together_compare_with_dss(ray_session, tmp_path):
    """The README's multi-sweep example on two small real sweeps: an MI sweep that searches the MI
    weight and a DSS sweep (mi_weight 0 in its overrides) that searches the learning rate. Each
    run's method comes from its own resolved config, so the DSS rows are DSS and the comparison is made."""
    from mmi_ray.analysis.report import build_report

    common = {"num_trials": 1, "seeds": [0], "scheduler": {"type": "none"}}  # one seed: in-process, quick
    mi = write_spec(tmp_path, "mi_part", search={"loss.mi_weight": {"type": "choice", "values": [0.1]}},
                    points_to_evaluate=[], **common)
    dss = write_spec(tmp_path, "dss_part", search={"optim.lr": {"type": "choice", "values": [0.003]}},
                     points_to_evaluate=[], **common)
    dss.write_text(dss.read_text().replace("optim.lr: 0.003", "optim.lr: 0.003\n  loss.mi_weight: 0.0"))
    for spec in (mi, dss):
        run_sweep(load_sweep(spec), verbose=0)
    dirs = [str(tmp_path / "results" / n) for n in ("mi_part", "dss_part")]
    report = build_report(dirs, str(tmp_path / "both"), evaluate_test=False)
    text = Path(report["report"]).read_text()
    runs = pd.read_csv(tmp_path / "both" / "runs.csv")
    assert set(runs.groupby("sweep")["method"].first().items()) == {("mi_part", "MI (maxpool)"), ("dss_part", "DSS")}
    assert "MI (nan)" not in text
    section = text.split("## Against the baselines")[1].split("## Results table")[0]
    assert "_no completed DSS configuration" not in section
    row = next(r for r in section.splitlines() if r.startswith("| DSS | mi_part |"))
    assert "| MI (maxpool) | 30 | 1 |" in row  # at the same budget (step 30), paired on the common seed


def test_same_sweep_name_is_not_overwritten(ray_session, tmp_path):
    from mmi_ray.errors import ConfigError

    spec = write_spec(tmp_path, "again", num_trials=1, points_to_evaluate=POINTS[:1])
    run_sweep(load_sweep(spec), verbose=0)
    before = (tmp_path / "results" / "again" / "trials.csv").read_text()
    with pytest.raises(ConfigError, match="already exists.*--resume"):
        run_sweep(load_sweep(spec), verbose=0)
    assert (tmp_path / "results" / "again" / "trials.csv").read_text() == before


def _cli(args, env, **kw):
    return subprocess.Popen([sys.executable, "-m", "mmi_ray.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def _finished(d: Path, final: int) -> bool:
    """The newest step the trial reported is ``final`` (its last step: it finished; an earlier one:
    it is mid-run)."""
    res = d / "result.json"
    steps = []
    for line in res.read_text().splitlines() if res.exists() else []:
        try:
            steps.append(json.loads(line)["step"])
        except ValueError:  # a line being written
            pass
    return bool(steps) and steps[-1] == final


def _last_step(run_dir: Path) -> int | None:
    steps = [m["step"] for m in read_metrics(run_dir)]
    return steps[-1] if steps else None


def _wait_for_finished_trial(proc, sweep_dir, exclude=(), timeout=400, final=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.25)
        for d in sorted(sweep_dir.glob("trial_*")):
            if d not in exclude and _finished(d, final):
                return d
        assert proc.poll() is None, proc.stdout.read()
    raise AssertionError("no trial finished in time")


def test_resume_after_driver_killed_or_interrupted_finishes_without_rerunning(ray_head, tmp_path, capsys):
    """The driver is SIGKILLed after one trial; resumed, it gets a Ctrl-C (SIGINT) after another, and
    says so in words that match (trials "interrupted", not "stopped early"; resume with
    ``mmi-ray sweep SPEC --resume``, not Tune's ``Tuner.restore``); the last resume finishes the
    sweep without running a finished trial again. Off a terminal the live view prints plain lines."""
    # 6 trials: after the resumed driver finishes one, some are left to interrupt mid-run. With reused
    # trial processes a 90-step trial takes about a second on a fast box: the test polls every 20 ms for a
    # newest report of 15 to 60 (CI once missed a 15-30 window of 60-step trials on every trial left), and
    # the trials run 180 steps, so the driver has 120 steps to act on the Ctrl-C before the trial would
    # complete (at 90 steps, once, it did not: every trial on record completed, none interrupted)
    spec = write_spec(tmp_path, "resumable", num_trials=6, scheduler={"type": "none"}, max_concurrent_trials=1,
                      extra_overrides={"train.max_steps": 180, "train.eval_every": 15})  # long enough to interrupt
    sweep_dir = tmp_path / "results" / "resumable"
    proc = _cli(["sweep", str(spec), "--quiet"], ray_head["env"], start_new_session=True)
    finished = _wait_for_finished_trial(proc, sweep_dir, final=180)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver dies mid-sweep
    proc.wait()
    before = (finished / "result.json").read_text()
    run_before = (sweep_dir / "runs" / f"{finished.name[6:]}_seed0" / "metrics.jsonl").read_text()
    # trials are quick (the next one reuses the trial process): another may have finished before the kill
    done_before = tuple(d for d in sweep_dir.glob("trial_*") if _finished(d, 180))

    proc = _cli(["sweep", str(spec), "--resume"], ray_head["env"], start_new_session=True)
    _wait_for_finished_trial(proc, sweep_dir, exclude=done_before, final=180)  # the resumed driver finished one
    # Ctrl-C while a later trial is mid-run (its run's newest report: step 15 to 60 of 180), not at its end
    deadline = time.time() + 300
    while not any(15 <= (_last_step(r) or 0) <= 60 for r in (sweep_dir / "runs").glob("*_seed0")):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGINT)  # Ctrl-C
    out, _ = proc.communicate(timeout=300)
    assert "Tuner.restore" not in out and f"resume it with: mmi-ray sweep {spec} --resume" in out, out
    assert "\r" not in out and "[mmi-ray] sweep 'resumable': " in out and "Trial status" not in out, out
    statuses = set(read_trials(sweep_dir / "trials.csv")["status"])
    assert "stopped early" not in statuses and statuses & {"interrupted", "not run"}, statuses

    t_resume = time.time()
    r = _cli(["sweep", str(spec), "--resume", "--quiet"], ray_head["env"])
    out, _ = r.communicate(timeout=600)
    assert r.returncode == 0, out
    with capsys.disabled():
        print(f"\n[driver kill] --resume finished the remaining trials in {time.time() - t_resume:.0f} s")
    trials = read_trials(sweep_dir / "trials.csv")
    assert len(trials) == 6 and (trials["status"] == "completed").all()
    # every end is on record, those of the resumed invocations too (Tune's restore once synced a stale
    # copy of the record back over it, and the finished sweep said it had stopped short)
    assert read_trial_ends(sweep_dir) == {t: "completed" for t in trials["trial_id"]}
    assert "stopped with" not in out, out
    after = (finished / "result.json").read_text()
    assert after.startswith(before), "a finished trial's results were rewritten"
    again = [json.loads(x)["step"] for x in after[len(before):].splitlines()]
    assert again in ([], [180]), f"a finished trial was run again (re-reported steps {again})"
    assert (sweep_dir / "runs" / f"{finished.name[6:]}_seed0" / "metrics.jsonl").read_text() == run_before
    assert "best configuration" in out


def test_ray_job_submit_runs_a_sweep_and_its_results_outlive_the_job(ray_head, tmp_path):
    """Ray's own CLI submits the sweep with a relative storage_path. The job's working directory is a
    package Ray deletes, so the results go under the results root (MMI_RAY_RESULTS here; by default
    ~/mmi-ray-results on the head), which the job prints when it starts and when it ends."""
    spec = write_spec(tmp_path, "submitted", num_trials=2, storage_path="results")
    root = tmp_path / "results-root"
    env = ray_head["env"]
    runtime_env = {"excludes": [".venv", ".git", "runs", "results", "__pycache__"],
                   "env_vars": {"MMI_RAY_RESULTS": str(root)}}
    cmd = [str(Path(sys.executable).parent / "ray"), "job", "submit", "--address", ray_head["dashboard"],
           "--working-dir", str(REPO), "--runtime-env-json", json.dumps(runtime_env),
           "--", "mmi-ray", "sweep", str(spec), "--quiet"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-6000:]
    assert "succeeded" in out.lower()
    sweep_dir = root / "results" / "submitted"
    summary = json.loads((sweep_dir / "sweep_summary.json").read_text())
    assert summary["trials"] == 2 and summary["best"] is not None
    assert summary["sweep_dir"] == str(sweep_dir) and "working_dir_files" not in summary["sweep_dir"]
    assert f"[mmi-ray] sweep 'submitted' results: {sweep_dir}" in out  # where, at the start
    assert f"[mmi-ray] sweep 'submitted' in {sweep_dir}" in out  # and at the end


def test_asha_stops_a_poor_trial_and_the_next_one_still_runs(ray_session, tmp_path):
    """ASHA stops the hopeless learning rate at the first rung; the trial after it still gets its
    resources (no leaked placement group), and the stopped trial is not ranked as the best."""
    spec = write_spec(
        tmp_path, "asha",
        search={"optim.lr": {"type": "loguniform", "low": 1e-7, "high": 1e-2}},
        points_to_evaluate=[{"optim.lr": 0.005}, {"optim.lr": 1e-7}, {"optim.lr": 0.004}],
        num_trials=3, max_concurrent_trials=1,
        objective={"metric": "label", "mode": "min"},
        scheduler={"type": "asha", "grace_period": 10, "reduction_factor": 2},
    )
    summary = run_sweep(load_sweep(spec), verbose=0)
    trials = read_trials(tmp_path / "results" / "asha" / "trials.csv")
    assert len(trials) == 3
    hopeless = trials[trials["optim.lr"] < 1e-6].iloc[0]
    assert hopeless["status"] == "stopped early" and hopeless["step"] == 10
    assert (trials["status"] != "error").all()
    assert summary["best"]["params"]["optim.lr"] > 1e-3
    # the searcher saw the early stop as pruning, with its value at the step it reached, and
    # intermediate values keyed by training step
    study = optuna.load_study(study_name="asha", storage=f"sqlite:///{tmp_path / 'results' / 'asha' / 'optuna.db'}")
    states = {round(t.params["optim.lr"], 12): t for t in study.trials}
    pruned = states[round(float(hopeless["optim.lr"]), 12)]
    assert pruned.state == optuna.trial.TrialState.PRUNED and list(pruned.intermediate_values) == [10]
    assert pruned.value == pytest.approx(pruned.intermediate_values[10])
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert done and all(sorted(t.intermediate_values) == [10, 20, 30] for t in done)


def test_in_process_trials_equal_ray_train_trials(ray_session, tmp_path):
    """A one-seed, one-worker trial trains inside the Tune trial (no Train worker group); its
    metrics, step by step, are exactly those of the same trial run as a Ray Train run."""
    histories = {}
    for mode in (True, False):
        name = f"inproc-{mode}"
        spec = write_spec(tmp_path, name, num_trials=1, scheduler={"type": "none"},
                          points_to_evaluate=POINTS[:1],
                          resources={"num_workers": 1, "cpus_per_worker": 1, "in_process": mode})
        sweep = load_sweep(spec)
        assert sweep.in_process() is mode
        summary = run_sweep(sweep, verbose=0, rerun=True)  # the same identity: train it again, don't reuse
        assert summary["reused_runs"] == 0
        assert summary["status_counts"] == {"completed": 1}
        sweep_dir = tmp_path / "results" / name
        trials = read_trials(sweep_dir / "trials.csv")
        for _, t in trials.iterrows():
            run = sweep_dir / "runs" / f"{t['trial_id']}_seed0"
            lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
            key = (round(t["loss.mi_weight"], 9), round(t["loss.rationale_weight"], 9))
            histories.setdefault(key, {})[mode] = [
                {k: m[k] for k in ("step", "loss", "label", "rationale", "mi", "val_accuracy")} for m in lines]
            ckpts = sorted(p.name for p in run.glob("checkpoint_*") if p.is_dir())
            assert ckpts == ["checkpoint_0000020", "checkpoint_0000030"]
            assert Path(lines[-1]["checkpoint_path"]).name == "checkpoint_0000030"
    assert len(histories) == 1
    for key, h in histories.items():
        assert [m["step"] for m in h[True]] == [10, 20, 30]
        assert h[True] == h[False], key


def _write_anli(root: Path, flip_test: bool) -> Path:
    """A small anli1-format dataset (train/valid/test and teacher outputs); ``flip_test`` changes
    every test label and nothing else."""
    import random

    names = {0: "entailment", 1: "neutral", 2: "contradiction"}
    rng = random.Random(0)
    d = root / "anli1"
    (d / "llm").mkdir(parents=True)
    for split, n in (("train", 240), ("valid", 30), ("test", 30)):
        rows, outs = [], []
        for i in range(n):
            a, b = rng.randint(0, 9), rng.randint(0, 9)
            label = 0 if a > b else 2 if a < b else 1
            shown = (label + 1) % 3 if flip_test and split == "test" else label
            rows.append({"uid": f"{split}{i}", "premise": f"A has {a}.", "hypothesis": f"B has {b}.", "label": shown,
                         "reason": ""})
            outs.append(f"A has {a} and B has {b}. So the answer is {names[label]}.")
        (d / f"anli1_{split}.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        (d / "llm" / f"{split}_CoT_0.json").write_text(json.dumps(outs))
    return root


def test_confirmation_runs_resume_and_a_changed_test_split_steers_nothing(ray_session, tmp_path, capsys):
    """Search on validation, then the top configuration and the DSS and label-only baselines on fresh
    seeds. A second sweep on the same data with every test label changed selects the same
    configurations with the same validation figures at every step; only test figures move. Resuming
    trains nothing again and reads test no second time; ``mmi-ray confirm`` runs it on a folder, and
    adds seeds to a confirmation without touching the runs it holds."""
    from mmi_ray.cli import main

    def spec(name, data_dir, confirm):  # 60 steps at lr 0.01: the student emits real labels by then
        return write_spec(tmp_path, name, num_trials=2, scheduler={"type": "none"},
                          extra_overrides={"data.dataset": "anli1", "data.data_dir": str(data_dir), "optim.lr": 0.01,
                                           "train.max_steps": 60, "train.eval_every": 20},
                          **({"confirm": {"top_k": 1, "seeds": [10, 11]}} if confirm else {}))

    a = spec("sealed", _write_anli(tmp_path / "data_a", flip_test=False), confirm=True)
    b = spec("flipped", _write_anli(tmp_path / "data_b", flip_test=True), confirm=False)
    summary = run_sweep(load_sweep(a), verbose=0)
    state = summary["confirmation"]
    assert list(state["arms"]) == ["MI-maxpool", "DSS", "label-only"]  # named for what they are
    assert state["arms"]["MI-maxpool"]["search_rank"] == 1
    assert state["arms"]["DSS"]["params"] == {"loss.mi_weight": 0.0} and state["arms"]["DSS"]["from_trial"] is None
    assert [(r["arm"], r["seed"]) for r in state["runs"]] == [(a_, s) for a_ in ("MI-maxpool", "DSS", "label-only")
                                                              for s in (10, 11)]
    assert all(r["step"] == 60 and 0 <= r["test_accuracy"] <= 1 for r in state["runs"])
    assert any(r["val_accuracy"] > 0 for r in state["runs"])  # figures that could differ, not all zero
    sealed_dir = tmp_path / "results" / "sealed"
    conf_file = sealed_dir / "confirm" / "confirmation.json"
    metrics_before = {p: p.read_text() for p in sealed_dir.glob("confirm/runs/*/metrics.jsonl")}
    assert len(metrics_before) == 6
    before = conf_file.read_text()
    again = run_sweep(load_sweep(a), resume=True, verbose=0)  # resumed: nothing trains, test not read again
    assert conf_file.read_text() == before and again["confirmation"]["runs"] == state["runs"]
    assert {p: p.read_text() for p in metrics_before} == metrics_before


    run_sweep(load_sweep(b), verbose=0)
    flipped_dir = tmp_path / "results" / "flipped"
    assert main(["confirm", str(flipped_dir), "--top-k", "1", "--seeds", "10", "11", "--quiet"]) == 0
    other = json.loads((flipped_dir / "confirm" / "confirmation.json").read_text())
    cols = ["loss.mi_weight", "loss.rationale_weight", "status", "step", "val_accuracy"]
    ta = read_trials(sealed_dir / "trials.csv").sort_values("loss.mi_weight")[cols].reset_index(drop=True)
    tb = read_trials(flipped_dir / "trials.csv").sort_values("loss.mi_weight")[cols].reset_index(drop=True)
    pd.testing.assert_frame_equal(ta, tb)  # the same choices from the same validation figures
    top = "MI-maxpool"
    assert other["arms"] == state["arms"] | {top: {**state["arms"][top], "from_trial": other["arms"][top]["from_trial"]}}
    key = lambda r: (r["arm"], r["seed"])  # noqa: E731
    assert [(key(r), r["val_accuracy"]) for r in other["runs"]] == [(key(r), r["val_accuracy"]) for r in state["runs"]]
    assert [r["test_accuracy"] for r in other["runs"]] != [r["test_accuracy"] for r in state["runs"]]
    def vals(d):  # every validation figure at every step, search and confirmation runs
        return sorted(tuple((m["step"], m["val_accuracy"]) for m in map(json.loads, p.read_text().splitlines()))
                      for p in [*d.glob("runs/*/metrics.jsonl"), *d.glob("confirm/runs/*/metrics.jsonl")])

    assert len(vals(sealed_dir)) == 8 and vals(sealed_dir) == vals(flipped_dir)
    # the report puts the headline first, validation and test in separate columns
    from mmi_ray.analysis.report import build_report

    text = Path(build_report([str(sealed_dir)], str(tmp_path / "rep"), evaluate_test=False)["report"]).read_text()
    assert text.index("## Headline: confirmation runs") < text.index("## Trials")
    assert "| rank | tied | arm | method | n | val_mean | val_low | val_high | test_mean | test_low | test_high |" in text

    # a seed added: every arm trains on it, the runs it held stay as they were (and their test read once)
    assert main(["confirm", str(sealed_dir), "--seeds", "10", "11", "12", "--quiet"]) == 0
    more = json.loads(conf_file.read_text())
    assert more["seeds"] == [10, 11, 12] and more["arms"] == state["arms"]
    assert [(r["arm"], r["seed"]) for r in more["runs"]] == [(a_, s) for a_ in ("MI-maxpool", "DSS", "label-only")
                                                             for s in (10, 11, 12)]
    assert [r for r in more["runs"] if r["seed"] != 12] == state["runs"]
    assert {p: p.read_text() for p in metrics_before} == metrics_before
    assert len(list(sealed_dir.glob("confirm/runs/*/metrics.jsonl"))) == 9
    # the sweep resumed with its spec's seeds (fewer than held) keeps them all
    assert run_sweep(load_sweep(a), resume=True, verbose=0)["confirmation"]["runs"] == more["runs"]
    capsys.readouterr()
    assert main(["confirm", str(sealed_dir), "--seeds", "12", "13", "--quiet"]) == 2  # leaves 10 and 11 out
    err = capsys.readouterr().err
    assert "confirm.seeds: confirm/ holds runs on seeds [10, 11, 12]" in err and "[12, 13]" in err
    assert json.loads(conf_file.read_text()) == more


def test_finished_runs_are_never_trained_twice(ray_session, tmp_path, capsys):
    """A spec run twice trains nothing the second time; a second spec that shares the DSS baseline
    adopts it and trains only its new configuration; ``--rerun`` trains again."""
    def spec(name, mi_values):
        return write_spec(tmp_path, name, num_trials=2, scheduler={"type": "none"},
                          search={"loss.mi_weight": {"type": "choice", "values": mi_values}},
                          points_to_evaluate=[{"loss.mi_weight": v} for v in mi_values])

    def runs(name):  # run folder -> (adopted from, inode of its final checkpoint's weights)
        out = {}
        for run in sorted((tmp_path / "results" / name / "runs").iterdir()):
            final = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
            out[run.name] = (json.loads((run / "reused.json").read_text())["from"] if (run / "reused.json").exists()
                             else None, (Path(final["checkpoint_path"]) / "state.pt").stat().st_ino, final)
        return out

    first = run_sweep(load_sweep(spec("first", [0.0, 0.1])), verbose=0)
    assert first["reused_runs"] == 0 and first["runs"] == 2
    a = runs("first")
    assert all(src is None for src, _, _ in a.values())
    capsys.readouterr()
    again = run_sweep(load_sweep(spec("again", [0.0, 0.1])), verbose=1)
    from mmi_ray.sweep.summary import print_summary

    print_summary(again)
    out = capsys.readouterr().out
    assert "reused: 2 of 2 runs were adopted" in out
    b = runs("again")
    assert again["reused_runs"] == 2 and all(src is not None for src, _, _ in b.values())
    # nothing trained: every final checkpoint is the first sweep's file, every record the same figure
    assert sorted(ino for _, ino, _ in b.values()) == sorted(ino for _, ino, _ in a.values())
    key = lambda f: (f["step"], f["val_accuracy"], f["loss"])  # noqa: E731
    assert sorted(key(f) for _, _, f in b.values()) == sorted(key(f) for _, _, f in a.values())
    assert again["best"]["params"] == first["best"]["params"]

    shared = run_sweep(load_sweep(spec("shares-dss", [0.0, 0.3])), verbose=0)  # DSS shared, MI 0.3 is new
    c = runs("shares-dss")
    assert shared["reused_runs"] == 1
    dss_first = next(ino for src, ino, f in a.values() if src is None)
    adopted = [ino for src, ino, _ in c.values() if src is not None]
    trained = [ino for src, ino, _ in c.values() if src is None]
    assert len(adopted) == 1 and len(trained) == 1 and trained[0] not in {ino for _, ino, _ in a.values()}
    assert adopted[0] in {ino for _, ino, _ in a.values()} and dss_first in {ino for _, ino, _ in a.values()}
    dss_cfg = yaml.safe_load(next(p for p in (tmp_path / "results" / "shares-dss" / "runs").glob("*/reused.json"))
                             .parent.joinpath("config.yaml").read_text())
    assert dss_cfg["loss"]["mi_weight"] == 0.0  # what was shared is the DSS baseline
    report = (tmp_path / "results" / "shares-dss" / "sweep_summary.json")
    assert json.loads(report.read_text())["reused_runs"] == 1

    # --rerun trains anew; this one also searches two objectives (Optuna's multi-objective TPE)
    two = [{"metric": "val_accuracy", "mode": "max"}, {"metric": "val_ece", "mode": "min"}]
    forced = run_sweep(load_sweep(write_spec(tmp_path, "forced", num_trials=2, objective=two, scheduler={"type": "none"},
                                             search={"loss.mi_weight": {"type": "choice", "values": [0.0, 0.1]}},
                                             points_to_evaluate=[{"loss.mi_weight": 0.0}, {"loss.mi_weight": 0.1}])),
                       verbose=0, rerun=True)
    assert forced["reused_runs"] == 0
    assert not {ino for _, ino, _ in runs("forced").values()} & {ino for _, ino, _ in a.values()}
    study = optuna.load_study(study_name="forced", storage=f"sqlite:///{tmp_path / 'results' / 'forced' / 'optuna.db'}")
    assert len(study.directions) == 2
    told = [t.values for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    pareto = forced["pareto"]
    assert len(pareto) == 2 and any(r["pareto"] for r in pareto)
    assert len(told) == 2
    for r in pareto:  # the searcher was told both figures, the summary's front holds the same ones
        assert any(v == pytest.approx([r["val_accuracy"], r["val_ece"]]) for v in told)
    print_summary(forced)
    assert "Pareto front on val_accuracy (max), val_ece (min)" in capsys.readouterr().out
    from mmi_ray.analysis.report import build_report

    rep = build_report([str(tmp_path / "results" / "forced")], str(tmp_path / "rep"), evaluate_test=False)
    assert "pareto_front.png" in rep["plots"]
    assert "## Pareto front: `val_accuracy` (max), `val_ece` (min)" in Path(rep["report"]).read_text()
