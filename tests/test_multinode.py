"""A sweep on a 3-node cluster on one machine: the shared head (carrying ``mmi_driver``) plus two
worker nodes started with ``ray start --address``, each with its own temp dir (and stopped by this
test), storage on the session's S3 server. Drivers must run on the head and Train workers on the
worker nodes. Marked ``adds_nodes``: runs after every other test."""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_sweep_e2e import write_spec

from conftest import _free_port, stop_processes
from mmi_ray import storage
from mmi_ray.sweep import load_sweep, run_sweep

pytestmark = [pytest.mark.ray, pytest.mark.adds_nodes]


def _stop_node(nm_port: int) -> None:
    stop_processes(lambda cmd: f"--node_manager_port={nm_port}" in cmd)


@pytest.fixture
def worker_nodes(ray_head, ray_session):
    """Two worker nodes (1 CPU, so one Train worker, and a ``train_node`` resource each; each its own
    temp dir), stopped afterwards."""
    ports = []
    try:
        for _ in range(2):
            port = _free_port()
            temp_dir = tempfile.mkdtemp(prefix="mmirn-", dir="/tmp")  # its own: no disk shared with the head
            cmd = [str(Path(sys.executable).parent / "ray"), "start", "--address", ray_head["address"],
                   "--num-cpus", "1", "--resources", '{"train_node": 10}', "--node-manager-port", str(port),
                   "--temp-dir", temp_dir, "--disable-usage-stats"]
            r = subprocess.run(cmd, env=ray_head["env"], capture_output=True, text=True, timeout=180)
            assert r.returncode == 0, r.stderr[-2000:]
            ports.append(port)
        import ray

        nodes = [n for n in ray.nodes() if n["Alive"]]
        yield {"head": [n["NodeID"] for n in nodes if "mmi_driver" in n["Resources"]],
               "workers": [n["NodeID"] for n in nodes if "train_node" in n["Resources"]], "ports": ports}
    finally:
        for p in ports:
            _stop_node(p)


RECORD_KEYS = ["step", "loss", "label", "rationale", "mi", "mi_estimate", "val_accuracy"]


def _records(uri: str) -> dict[float, list[dict]]:
    """Per configuration (its MI weight): the run's evaluation records, the figures that must not move."""
    out = {}
    for run in storage.listdir(f"{uri}/runs"):
        cfg = yaml.safe_load(storage.read_text(f"{uri}/runs/{run}/config.yaml"))
        lines = storage.read_text(f"{uri}/runs/{run}/metrics.jsonl").splitlines()
        out[cfg["loss"]["mi_weight"]] = [{k: json.loads(x)[k] for k in RECORD_KEYS} for x in lines]
    return out


def test_placement_and_losing_a_worker_node_with_storage_on_s3(worker_nodes, ray_head, s3_bucket, tmp_path, capsys):
    """Trial drivers run on the head, Train workers on the worker nodes (each with its own temp dir),
    storage on the S3 server; one of the two worker nodes dies while trials train: Ray Train restarts
    the lost worker group from its last checkpoint on S3 on the node that is left, every trial
    completes, and every figure equals that of an uninterrupted run of the same configurations.
    Nothing of the runs is on the head's disk. (One test: each cluster of worker nodes costs a minute.)"""
    import threading
    import time

    assert len(worker_nodes["head"]) == 1 and len(worker_nodes["workers"]) == 2
    root = f"{s3_bucket}/results"
    spec = write_spec(tmp_path, "nodeloss", num_trials=2, max_concurrent_trials=2, scheduler={"type": "none"},
                      storage_path=root,
                      overrides={"model.d_model": 32, "model.d_ff": 64, "model.num_layers": 1, "model.num_heads": 2,
                                 "data.builtin.num_train": 300, "data.builtin.num_valid": 30,
                                 "data.builtin.num_test": 30, "train.batch_size": 8, "train.max_steps": 60,
                                 "train.eval_every": 10, "optim.lr": 0.003},
                      resources={"num_workers": 1, "cpus_per_worker": 1, "worker_resources": {"train_node": 1},
                                 "driver_resource": "mmi_driver"},
                      failure={"trial_max_failures": 2, "train_max_failures": 3, "time_budget_s": 900})
    uri = f"{root}/nodeloss"
    killed = {}

    def kill_when_training():  # once both trials have reported: one on each worker node
        deadline = time.time() + 300
        while time.time() < deadline:
            paths = [f"{uri}/runs/{run}/metrics.jsonl" for run in storage.listdir(f"{uri}/runs")]
            if len(paths) == 2 and all(storage.exists(p) and storage.read_text(p).count("\n") >= 1 for p in paths):
                killed["at"] = time.time()
                _stop_node(worker_nodes["ports"][0])
                return
            time.sleep(0.3)

    t = threading.Thread(target=kill_when_training, daemon=True)
    t.start()
    summary = run_sweep(load_sweep(spec), verbose=0)
    t.join()
    assert "at" in killed, "the node was not killed while training"
    assert summary["status_counts"] == {"completed": 2}
    import ray

    survivors = {n["NodeID"] for n in ray.nodes() if n["Alive"] and "train_node" in n["Resources"]}
    assert len(survivors) == 1
    last_nodes, driver_nodes, train_nodes, per_trial = set(), set(), [], {}
    for d in storage.listdir(uri):
        if not d.startswith("trial_"):
            continue
        rows = [json.loads(x) for x in storage.read_text(f"{uri}/{d}/result.json").splitlines()]
        assert rows[-1]["step"] == 60
        last_nodes.add(rows[-1]["node_id_seed0"])
        driver_nodes |= {r["driver_node_id"] for r in rows}
        train_nodes += [r["node_id_seed0"] for r in rows]
        per_trial[d] = [r["node_id_seed0"] for r in rows]
    assert last_nodes <= survivors and len(last_nodes) == 1, "both trials finished on the node that was left"
    assert driver_nodes == set(worker_nodes["head"]), "trial drivers ran off the head"
    assert set(train_nodes) == set(worker_nodes["workers"]), "the trials trained on both worker nodes, not on the head"
    moved = [nodes for nodes in per_trial.values() if len(set(nodes)) == 2]
    assert len(moved) == 1 and moved[0][-1] in survivors, f"one trial moved to the node left: {per_trial}"
    took = time.time() - killed["at"]
    # the same two configurations, uninterrupted, trained from their run folders' configs in this
    # process (a plain process and a Ray Train worker give the same floats:
    # tests/test_sweep_e2e.py::test_in_process_trials_equal_ray_train_trials): the same figures
    from mmi_ray.config import Config
    from mmi_ray.recipe import run_loop
    from mmi_ray.worker import local_env

    killed_runs, clean_runs = _records(uri), {}
    for run in storage.listdir(f"{uri}/runs"):
        cfg = Config.model_validate(yaml.safe_load(storage.read_text(f"{uri}/runs/{run}/config.yaml")))
        reports: list[dict] = []
        run_loop(cfg, local_env(lambda m, _ckpt, reports=reports: reports.append(m)))
        clean_runs[cfg.loss.mi_weight] = [{k: m[k] for k in RECORD_KEYS} for m in reports]
    assert sorted(killed_runs) == sorted(clean_runs) and killed_runs == clean_runs
    # nothing of the runs on the head's disk (its temp dir, the folder the sweep ran in)
    local = [p for base in (Path(ray_head["temp_dir"]), tmp_path) for p in base.rglob("*")
             if p.name in ("state.pt", "metrics.jsonl")]
    assert not local, local[:5]
    with capsys.disabled():
        print(f"\n[node loss, s3] sweep finished {took:.0f} s after the node was killed; "
              f"Train worker reports per node {pd.Series(train_nodes).value_counts().to_dict()}")


@pytest.fixture
def logical_gpu_node(ray_head, ray_session):
    """A worker node with one logical GPU (``--num-gpus 1`` on a CPU machine: Ray schedules on it,
    nothing can compute on it) and 4 CPUs; stopped afterwards."""
    port = _free_port()
    temp_dir = tempfile.mkdtemp(prefix="mmirg-", dir="/tmp")
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--address", ray_head["address"], "--num-cpus", "4",
           "--num-gpus", "1", "--node-manager-port", str(port), "--temp-dir", temp_dir, "--disable-usage-stats"]
    r = subprocess.run(cmd, env=ray_head["env"], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-2000:]
    try:
        import ray

        yield [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("GPU")]
    finally:
        _stop_node(port)


def test_four_trials_share_one_logical_gpu(logical_gpu_node, tmp_path):
    """``resources.gpus_per_worker: 0.25`` on a cluster with one (logical) GPU: the sweep's concurrency
    is 4, and four trials' Ray Train workers, built as a sweep builds them, hold the GPU at the same time
    (each sees GPU 0). Placement only: the training itself needs a real GPU (``benchmarks/gpu_check.py
    --share 0.25`` where one is lent)."""
    import ray
    from ray import tune

    from mmi_ray.train import build_trainer

    assert len(logical_gpu_node) == 1

    def _gpu_probe(config):
        """A Train worker's loop that trains nothing: it says which GPU Ray gave it and when it held it."""
        import json
        import os
        import time

        import ray

        start = time.time()
        os.makedirs(config["run_dir"], exist_ok=True)  # one machine: the test reads it
        open(os.path.join(config["run_dir"], "started"), "w").close()
        runs = os.path.dirname(config["run_dir"])
        while time.time() < start + 60 and sum(os.path.exists(os.path.join(runs, d, "started"))
                                                for d in os.listdir(runs)) < 4:
            time.sleep(0.2)  # hold the GPU share until four workers hold theirs (or a minute passed)
        with open(os.path.join(config["run_dir"], "probe.json"), "w") as f:
            json.dump({"gpu_ids": [str(g) for g in ray.get_gpu_ids()], "start": start, "end": time.time(),
                       "cuda_visible": os.environ.get("CUDA_VISIBLE_DEVICES"),
                       "node": ray.get_runtime_context().get_node_id()}, f)

    spec = write_spec(tmp_path, "gpushare", num_trials=4, scheduler={"type": "none"},
                      resources={"num_workers": 1, "cpus_per_worker": 1, "use_gpu": True, "gpus_per_worker": 0.25,
                                 "driver_resource": "mmi_driver"})
    sweep = load_sweep(spec)
    cluster = ray.cluster_resources()
    concurrency = sweep.derived_concurrency(cluster, n_trials=8)  # 8 wanted, 8 CPUs free: the GPU caps it
    assert cluster["GPU"] == 1 and cluster["CPU"] >= 8 and concurrency == 4  # the GPU, not the CPUs, limits

    def trial(params):
        cfg = sweep.trial_config({"loss.mi_weight": params["w"]}, sweep.spec.seeds[0], str(tmp_path / "runs"))
        build_trainer(cfg, f"w{params['w']}", str(tmp_path / "runs"), loop=_gpu_probe).fit()

    # trial drivers on the head, as the shipped specs pin them: one with a CPU share on the GPU node
    # would cost a worker's whole CPU there (3 at once, measured)
    tuner = tune.Tuner(tune.with_resources(trial, {"mmi_driver": 0.01}),
                       param_space={"w": tune.grid_search([0.1, 0.2, 0.3, 0.4])},
                       tune_config=tune.TuneConfig(max_concurrent_trials=concurrency),
                       run_config=tune.RunConfig(storage_path=str(tmp_path / "tune"), name="gpushare"))
    assert not tuner.fit().errors
    rows = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/probe.json")]
    assert len(rows) == 4 and all(r["gpu_ids"] == ["0"] and r["cuda_visible"] == "0" for r in rows), rows
    assert {r["node"] for r in rows} == set(logical_gpu_node)
    at_once = max(sum(r["start"] <= t < r["end"] for r in rows) for t in (r["start"] for r in rows))
    assert at_once == 4, f"{at_once} workers held the GPU at once"
