"""End to end on a local Ray: ``mmi-ray train`` with Ray Train workers, files written, resume."""

import json
from pathlib import Path

import pytest

from conftest import tiny_overrides
from mmi_ray.cli import main
from mmi_ray.config import load_config
from mmi_ray.faults import FAULT_ENV
from mmi_ray.train import run_training

REPO = Path(__file__).resolve().parents[1]
CFG = REPO / "configs" / "tiny_builtin.yaml"
pytestmark = pytest.mark.ray


def _metrics(run_dir):
    return [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def test_train_cli_two_workers_writes_run_and_loss_goes_down(ray_session, tmp_path, capsys):
    rc = main(["train", str(CFG), *tiny_overrides(tmp_path, **{"scaling.num_workers": 2, "train.max_steps": 40,
                                                                "optim.lr": 3e-3, "train.log_every": 5})])
    assert rc == 0
    runs = [p for p in (tmp_path / "runs").iterdir() if p.name != "run_index"]  # the storage root's reuse index
    assert len(runs) == 1 and len(list((tmp_path / "runs" / "run_index").glob("*.json"))) == 1
    run = runs[0]
    names = {p.name for p in run.iterdir()}
    assert {"config.yaml", "metrics.jsonl", "summary.json"} <= names
    ckpts = sorted(n for n in names if n.startswith("checkpoint_0"))
    assert ckpts == ["checkpoint_0000030", "checkpoint_0000040"]  # keep_checkpoints: 2
    assert {"state.pt", "meta.json"} <= {p.name for p in (run / ckpts[-1]).iterdir()}
    m = _metrics(run)
    assert [x["step"] for x in m] == [10, 20, 30, 40]
    assert m[-1]["loss"] < 0.7 * m[0]["loss"]
    assert m[-1]["label"] < 0.7 * m[0]["label"] and m[-1]["rationale"] < 0.7 * m[0]["rationale"]
    assert all(0.0 <= x["val_accuracy"] <= 1.0 for x in m)
    assert all(x["val_n"] == 40 and 0 <= x["val_ece"] <= 1 for x in m)  # gathered from both workers
    # rank 0's training log, every log_every steps, averaged over both workers as the reports are
    log = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == list(range(5, 41, 5))
    assert m[0]["loss"] == pytest.approx((log[0]["loss"] + log[1]["loss"]) / 2, rel=1e-6)
    assert "mkl AUTO,STRICT" in m[0]["machine"]  # the Ray Train worker took mmi_ray's MKL setting too
    saved = load_config(run / "config.yaml")
    assert saved.scaling.num_workers == 2 and saved.run.name == run.name
    out = capsys.readouterr().out
    assert "examples per step" in out and "final step 40" in out


def test_runs_of_the_same_config_never_collide_and_a_finished_name_is_kept(ray_session, tmp_path):
    ov = tiny_overrides(tmp_path, **{"train.max_steps": 10})
    a = run_training(load_config(CFG, [*ov, "run.name=fixed"]), verbose=False)
    b = run_training(load_config(CFG, ov), verbose=False)
    assert a["run_dir"] != b["run_dir"]
    assert Path(a["run_dir"], "summary.json").exists() and Path(b["run_dir"], "summary.json").exists()
    # the same config, data and code finished before: b adopted a and trained nothing (--rerun would
    # train: tests/test_sweep_e2e.py::test_finished_runs_are_never_trained_twice)
    assert b["reused_from"] == str(Path(a["run_dir"]).resolve()) and b["final"]["step"] == 10
    assert Path(b["checkpoint"], "state.pt").stat().st_ino == Path(a["checkpoint"], "state.pt").stat().st_ino
    before = (tmp_path / "runs" / "fixed" / "metrics.jsonl").read_text()
    assert main(["train", str(CFG), *ov, "run.name=fixed"]) == 2  # finished: never overwritten
    assert (tmp_path / "runs" / "fixed" / "metrics.jsonl").read_text() == before


def test_an_error_inside_a_worker_reaches_the_user_once_in_one_line(ray_head, tmp_path):
    """``mmi-ray train`` as a user runs it (a process of its own on the cluster): a worker raises at
    step 3, and the console shows that error once, as one ``mmi-ray: error:`` line naming the rank
    and the cause, with no traceback; every failed rank's traceback is in the run's worker_error.txt."""
    import os
    import subprocess
    import sys

    env = {**ray_head["env"], FAULT_ENV: json.dumps({"step": 3, "marker": str(tmp_path / "m")})}
    env.pop("PYTEST_CURRENT_TEST", None)
    ov = tiny_overrides(tmp_path, **{"train.max_steps": 10, "run.max_failures": 0, "run.name": "fails"})
    p = subprocess.run([sys.executable, "-m", "mmi_ray.cli", "train", str(CFG), *ov], env=env, capture_output=True,
                       text=True, timeout=300, cwd=os.fspath(tmp_path))
    console = p.stdout + p.stderr
    assert p.returncode == 2, console
    errors = [x for x in p.stderr.splitlines() if x.startswith("mmi-ray: error:")]
    saved = tmp_path / "runs" / "fails" / "worker_error.txt"
    assert errors == [f"mmi-ray: error: Train worker rank 0: RuntimeError: injected fault at step 3 (tracebacks: {saved})"]
    assert console.count("injected fault") == 1 and "Traceback" not in console, console
    assert "injected fault at step 3" in saved.read_text() and "faults.py" in saved.read_text()
