"""Faults survived with nothing lost, on the shared local Ray head."""

import json
import os
import re
from pathlib import Path

import pytest
from test_sweep_e2e import write_spec

from conftest import read_trials, tiny_overrides
from mmi_ray.analysis import load_sweep_dir
from mmi_ray.config import load_config
from mmi_ray.faults import FAULT_ENV
from mmi_ray.sweep import load_sweep, run_sweep
from mmi_ray.train import run_training

REPO = Path(__file__).resolve().parents[1]
CFG = REPO / "configs" / "tiny_builtin.yaml"
pytestmark = pytest.mark.ray


def _metrics(run_dir):
    return [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


def test_a_worker_that_raises_or_is_sigkilled_restores_from_checkpoint_with_identical_metrics(
        ray_session, tmp_path, capsys, monkeypatch):
    """2 workers, learned (InfoNCE) critic. Rank 0 fails after step 15, once by raising, once by
    SIGKILL; Ray Train restores both runs from the step-10 checkpoint (student, critic, optimizer,
    schedule, data position) and every logged figure equals that of an uninterrupted run exactly."""
    import time

    common = {"run.max_failures": 1, "scaling.num_workers": 2, "loss.mi_estimator": "infonce", "train.batch_size": 8}
    t0 = time.time()
    clean = run_training(load_config(CFG, tiny_overrides(tmp_path / "a", **common)), verbose=False)
    t1 = time.time()
    keys = ["step", "loss", "label", "rationale", "mi", "mi_estimate", "val_accuracy"]
    expected = [{k: x[k] for k in keys} for x in _metrics(clean["run_dir"])]
    assert [x["step"] for x in expected] == [10, 20, 30]
    for kind in ("raise", "sigkill"):
        marker = tmp_path / f"fault-{kind}"
        monkeypatch.setenv(FAULT_ENV, json.dumps({"step": 15, "marker": str(marker), "kind": kind}))
        t2 = time.time()
        faulty = run_training(load_config(CFG, tiny_overrides(tmp_path / kind, **common)), verbose=False)
        assert marker.exists(), f"rank 0 failed ({kind}) at step 15"
        assert [{k: x[k] for k in keys} for x in _metrics(faulty["run_dir"])] == expected, kind
        with capsys.disabled():
            print(f"\n[worker {kind}] clean run {t1 - t0:.0f} s, failed + restored run {time.time() - t2:.0f} s")


def test_diverging_learning_rate_ends_its_trial_with_the_reason_and_the_sweep_goes_on(ray_session, tmp_path, capsys):
    """No injection: plain SGD at lr 30 without clipping overflows within a few steps."""
    spec = write_spec(tmp_path, "nan", search={"optim.lr": {"type": "loguniform", "low": 1e-3, "high": 100.0}},
                      points_to_evaluate=[{"optim.lr": 30.0}, {"optim.lr": 0.05}], num_trials=2,
                      scheduler={"type": "none"})
    text = spec.read_text().replace("optim.lr: 0.003", "optim.lr: 0.003\n  optim.optimizer: sgd\n"
                                    "  optim.max_grad_norm: 0.0\n  optim.warmup_steps: 0")
    spec.write_text(text)
    summary = run_sweep(load_sweep(spec), verbose=0)
    trials = read_trials(tmp_path / "results" / "nan" / "trials.csv").set_index("optim.lr")
    assert trials.loc[30.0, "status"] == "error"
    assert re.search(r"non-finite loss at step \d+", trials.loc[30.0, "error"]), trials.loc[30.0, "error"]
    assert trials.loc[0.05, "status"] == "completed"
    assert summary["best"]["params"]["optim.lr"] == 0.05
    t = load_sweep_dir(tmp_path / "results" / "nan").trials.set_index("optim.lr")
    assert t.loc[30.0, "status"] == "error" and "non-finite loss at step" in t.loc[30.0, "error"]
    from mmi_ray.sweep.summary import print_summary

    print_summary(summary)
    assert "1 trial(s) ended in an error (trials.csv's error column says which): the same `mmi-ray sweep` command " \
           "with --resume runs them again" in capsys.readouterr().out


@pytest.mark.parametrize("storage,env,expected", [
    ("/etc/hostname/sub", {}, "storage_path: cannot write to /etc/hostname/sub"),
    ("{tmp}/full", {"MMI_RAY_MIN_FREE_MB": "100000000"}, "MiB free at"),
])
def test_unusable_storage_fails_before_any_trial(ray_head, tmp_path, storage, env, expected):
    import subprocess
    import sys

    storage = storage.format(tmp=tmp_path)
    spec = write_spec(tmp_path, "nostore", storage_path=storage)
    r = subprocess.run([sys.executable, "-m", "mmi_ray.cli", "sweep", str(spec), "--quiet"],
                       env={**ray_head["env"], **env}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert expected in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not any(Path(storage).glob("nostore/trial_*")) if os.path.isdir(storage) else True
