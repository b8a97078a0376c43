"""A sweep on a storage URI (a bucket on the session's S3 server, moto's on 127.0.0.1), as a user
runs it: every command on the URI as on a local folder, nothing of the runs on the local disk, run
reuse through the index on the bucket, and ``--resume`` after the driver is killed."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from test_sweep_e2e import write_spec

from mmi_ray import storage

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.ray


def _mmi(args, env, cwd, timeout=600, **kw):
    r = subprocess.run([sys.executable, "-m", "mmi_ray.cli", *args], env=env, cwd=cwd, capture_output=True,
                       text=True, timeout=timeout, **kw)
    return r.returncode, r.stdout + r.stderr


def _here(args, cwd, capsys, monkeypatch) -> tuple[int, str]:
    """A command that starts no Ray, in this process (no second start of Python and torch)."""
    from mmi_ray.cli import main

    monkeypatch.chdir(cwd)
    capsys.readouterr()
    rc = main(args)
    captured = capsys.readouterr()
    return rc, captured.out + captured.err


def _trials(uri: str) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(storage.read_text(f"{uri}/trials.csv")), dtype={"trial_id": str})


def test_every_command_works_on_a_sweep_on_s3(ray_head, s3_server, s3_bucket, tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"  # the folder the user runs the commands in
    work.mkdir()
    env = ray_head["env"]
    root = f"{s3_bucket}/results"
    # the quickstart, shorter: label-only, DSS and MI; then `mmi-ray confirm` on the URI: MI, DSS and
    # label-only on 2 fresh seeds (the sweep's own confirmation is the same call, after the search)
    spec = [str(REPO / "sweeps" / "quickstart.yaml"), "name=ons3", f"storage_path={root}", "num_trials=3",
            "overrides.train.max_steps=60", "overrides.train.eval_every=30", "scheduler.grace_period=30",
            "confirm=null"]
    t0 = time.time()
    rc, out = _mmi(["sweep", *spec], env, work)
    took = time.time() - t0
    assert rc == 0, out[-4000:]
    uri = f"{root}/ons3"
    assert f"[mmi-ray] sweep 'ons3' in {uri}" in out
    assert "; test_accuracy " in out, "the best configuration's test figure is in the closing lines"
    assert f"[mmi-ray] report: {work}/reports/ons3/report.md" in out
    assert (work / "reports" / "ons3" / "report.md").exists()
    assert sorted(p.name for p in work.iterdir()) == ["reports"], "only the report is on the local disk"
    keys = s3_server.keys(uri)
    assert "results/ons3/sweep_summary.json" in keys
    assert any(k.endswith("/state.pt") for k in keys) and not any("/report/" in k for k in keys)
    runs = [r for r in storage.listdir(f"{uri}/runs")]
    last = json.loads(storage.read_text(f"{uri}/runs/{runs[0]}/metrics.jsonl").splitlines()[-1])
    assert last["checkpoint_path"].startswith(f"{uri}/runs/{runs[0]}/checkpoint_"), last["checkpoint_path"]

    # the confirmation, on the URI
    rc, out = _mmi(["confirm", uri, "--seeds", "1", "2", "--quiet"], env, work)
    assert rc == 0, out[-3000:]
    assert "confirmation runs (fresh seeds [1, 2]" in out and "no confirmation run finished" not in out, out[-3000:]
    assert "results/ons3/confirm/confirmation.json" in s3_server.keys(uri)
    state = json.loads(storage.read_text(f"{uri}/confirm/confirmation.json"))
    assert state["seeds"] == [1, 2] and {r["seed"] for r in state["runs"]} == {1, 2}

    # analyze (and the report on the bucket too), table
    rc, out = _here(["analyze", uri, "--report-to-storage", "--no-test"], work, capsys, monkeypatch)
    assert rc == 0 and f"(and {uri}/report)" in out, out
    assert "results/ons3/report/report.md" in s3_server.keys(uri)
    rc, out = _here(["table", uri], work, capsys, monkeypatch)
    assert rc == 0 and "| DSS |" in out.replace("  ", " "), out

    # export from the sweep, a run and a checkpoint; evaluate and predict from a run, all on the URI
    rc, out = _here(["export", uri, "--out", "from-sweep"], work, capsys, monkeypatch)
    assert rc == 0 and "confirmation arm" in out, out
    run = storage.join(uri, "confirm", "runs", storage.listdir(f"{uri}/confirm/runs")[0])
    ckpt = [c for c in storage.listdir(run) if c.startswith("checkpoint_")][-1]
    for source, out_dir in ((run, "from-run"), (f"{run}/{ckpt}", "from-checkpoint")):
        rc, out = _here(["export", source, "--out", out_dir], work, capsys, monkeypatch)
        assert rc == 0 and (work / out_dir / "config.json").exists(), out
    final = json.loads(storage.read_text(f"{run}/metrics.jsonl").splitlines()[-1])
    rc, out = _here(["evaluate", run, "--split", "valid", "--out", "valid.jsonl"], work, capsys, monkeypatch)
    assert rc == 0 and f"valid accuracy {100 * final['val_accuracy']:.1f}%" in out, (final["val_accuracy"], out)
    records = [json.loads(x) for x in (work / "valid.jsonl").read_text().splitlines()]
    inputs = "".join(json.dumps({"input": r["input"]}) + "\n" for r in records)
    r = subprocess.run([sys.executable, "-m", "mmi_ray.cli", "predict", run], input=inputs, env=env, cwd=work,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    answers = [json.loads(x)["answer"] for x in r.stdout.splitlines()]
    assert answers == [rec["prediction"] for rec in records], "predict answers as the run's evaluation did"

    # the runs are in the index on the bucket (adopting from it: tests/test_storage.py, without Ray)
    assert any(k.startswith("results/run_index/") for k in s3_server.keys(root))
    with capsys.disabled():
        print(f"\n[s3 sweep] 3 trials on s3:// in {took:.0f} s")


def test_resume_after_the_driver_is_killed_on_s3(ray_head, s3_bucket, tmp_path):
    """The driver is SIGKILLed once a trial finished; ``--resume`` on the URI finishes the sweep and
    the finished trial's run is not trained again."""
    env = ray_head["env"]
    root = f"{s3_bucket}/results"
    spec = write_spec(tmp_path, "killed", storage_path=root, num_trials=3, scheduler={"type": "none"},
                      max_concurrent_trials=1, extra_overrides={"train.max_steps": 60, "train.eval_every": 15})
    uri = f"{root}/killed"
    proc = subprocess.Popen([sys.executable, "-m", "mmi_ray.cli", "sweep", str(spec), "--quiet"], env=env,
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    deadline, done = time.time() + 400, None
    while done is None:
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
        time.sleep(0.5)
        for run in storage.listdir(f"{uri}/runs"):
            steps = [json.loads(x)["step"] for x in storage.read_text(f"{uri}/runs/{run}/metrics.jsonl").splitlines()] \
                if storage.exists(f"{uri}/runs/{run}/metrics.jsonl") else []
            if steps and steps[-1] == 60:
                done = run
                break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = storage.read_text(f"{uri}/runs/{done}/metrics.jsonl")
    rc, out = _mmi(["sweep", str(spec), "--resume", "--quiet", "--no-report"], env, tmp_path)
    assert rc == 0, out[-4000:]
    trials = _trials(uri)
    assert len(trials) == 3 and (trials["status"] == "completed").all(), trials
    assert storage.read_text(f"{uri}/runs/{done}/metrics.jsonl") == before, "a finished run was trained again"


def test_the_readme_job_command_twice_gives_two_sweeps_on_the_bucket(ray_head, s3_server, s3_bucket, tmp_path):
    """The README's `ray job submit` line as written (its bucket this test's, the quickstart cut short),
    twice, through Ray's own job CLI to the local head: two sweeps on the bucket (a timestamped name,
    not `already exists`), their results read from the bucket."""
    readme = (REPO / "README.md").read_text()
    block = readme[readme.index("ray job submit --address"):]
    command = block[:block.index("\n", block.index(" -- mmi-ray sweep"))].replace("\\\n", " ")
    assert "storage_path=s3://my-bucket/mmi name=quickstart-$(date +%Y%m%d-%H%M%S)" in command
    short = " num_trials=1 points_to_evaluate=[] overrides.train.max_steps=30 overrides.train.eval_every=30 scheduler.type=none confirm=null --quiet"
    command = command.replace("s3://my-bucket", s3_bucket) + short
    env = {**ray_head["env"], "RAY_AUTH_MODE": "token"}
    for _ in range(2):
        r = subprocess.run(["bash", "-c", command], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
        assert "succeeded" in (r.stdout + r.stderr).lower()
        time.sleep(1.1)  # the name is stamped to the second
    names = [n for n in storage.listdir(f"{s3_bucket}/mmi") if n.startswith("quickstart-")]
    assert len(names) == 2, names
    for name in names:
        summary = json.loads(storage.read_text(f"{s3_bucket}/mmi/{name}/sweep_summary.json"))
        assert summary["trials"] == 1 and summary["sweep_dir"] == f"{s3_bucket}/mmi/{name}"


def test_the_storage_gone_for_20_s_mid_sweep_loses_nothing(ray_head, s3_server, s3_bucket, tmp_path, capsys):
    """The S3 server stops for 20 s while trials train, then comes back on the same port with the same
    buckets. The sweep rides through on retries (mmi_ray/storage.py: each request tried for about
    50 s; or Tune runs a trial that failed again, and its stale error file no longer marks it as
    errored), or stops with one line naming the URI and ``--resume`` finishes it; either way every
    trial completes with every evaluation recorded once."""
    env = ray_head["env"]
    root = f"{s3_bucket}/results"
    spec = write_spec(tmp_path, "outage", storage_path=root, num_trials=2, scheduler={"type": "none"},
                      max_concurrent_trials=1, extra_overrides={"train.max_steps": 90, "train.eval_every": 15})
    uri = f"{root}/outage"
    proc = subprocess.Popen([sys.executable, "-m", "mmi_ray.cli", "sweep", str(spec), "--quiet", "--no-report"],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 300
    while not any(storage.exists(f"{uri}/runs/{r}/metrics.jsonl") for r in storage.listdir(f"{uri}/runs")):
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read()
        time.sleep(0.3)
    s3_server.stop()
    t_down = time.time()
    time.sleep(20)
    s3_server.start()
    out, _ = proc.communicate(timeout=600)
    resumed = proc.returncode != 0
    if resumed:  # stopped: in one line that names the storage, then --resume finishes
        lines = [x for x in out.splitlines() if x.startswith("mmi-ray: error")]
        assert len(lines) == 1 and s3_bucket in lines[0], out[-3000:]
        rc, out = _mmi(["sweep", str(spec), "--resume", "--quiet", "--no-report"], env, tmp_path)
        assert rc == 0, out[-3000:]
    trials = _trials(uri)
    assert len(trials) == 2 and (trials["status"] == "completed").all(), (
        trials[["trial_id", "status", "error"]].to_dict("records"), out[-4000:])
    for run in storage.listdir(f"{uri}/runs"):
        steps = [json.loads(x)["step"] for x in storage.read_text(f"{uri}/runs/{run}/metrics.jsonl").splitlines()]
        assert steps == [15, 30, 45, 60, 75, 90], (run, steps)
    with capsys.disabled():
        print(f"\n[s3 outage] 20 s without the S3 server: the sweep {'stopped; --resume finished it' if resumed else 'rode through'}"
              f", done {time.time() - t_down:.0f} s after the outage began")
