"""A sweep on a 3-node cluster on one machine: the shared head (carrying ``mmi_driver``) plus two
worker nodes started with ``ray start --address`` (and stopped by this test). Drivers must run on
the head and Train workers on the worker nodes. Marked ``adds_nodes``: runs after every other test."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_sweep_e2e import write_spec

from conftest import _free_port, stop_processes
from mmi_ray.sweep import load_sweep, run_sweep

pytestmark = [pytest.mark.ray, pytest.mark.adds_nodes]


def _stop_node(nm_port: int) -> None:
    stop_processes(lambda cmd: f"--node_manager_port={nm_port}" in cmd)


@pytest.fixture
def worker_nodes(ray_head, ray_session):
    """Two worker nodes (2 CPUs and a ``train_node`` resource each), stopped afterwards."""
    ports = []
    try:
        for _ in range(2):
            port = _free_port()
            cmd = [str(Path(sys.executable).parent / "ray"), "start", "--address", ray_head["address"],
                   "--num-cpus", "2", "--resources", '{"train_node": 10}', "--node-manager-port", str(port),
                   "--disable-usage-stats"]
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


def test_placement_and_losing_a_worker_node(worker_nodes, tmp_path, capsys):
    """Trial drivers run on the head, Train workers on the worker nodes; one of the two worker
    nodes dies while trials train: Ray Train restarts the lost worker group from its last
    checkpoint on the node that is left, and every trial completes. (One test: each cluster of
    worker nodes costs a minute to start.)"""
    import threading
    import time

    assert len(worker_nodes["head"]) == 1 and len(worker_nodes["workers"]) == 2
    spec = write_spec(tmp_path, "nodeloss", num_trials=2, max_concurrent_trials=2, scheduler={"type": "none"},
                      overrides={"model.d_model": 32, "model.d_ff": 64, "model.num_layers": 1, "model.num_heads": 2,
                                 "data.builtin.num_train": 300, "data.builtin.num_valid": 30,
                                 "data.builtin.num_test": 30, "train.batch_size": 8, "train.max_steps": 60,
                                 "train.eval_every": 10, "optim.lr": 0.003},
                      resources={"num_workers": 1, "cpus_per_worker": 1, "worker_resources": {"train_node": 1},
                                 "driver_resource": "mmi_driver"},
                      failure={"trial_max_failures": 2, "train_max_failures": 3, "time_budget_s": 900})
    sweep_dir = tmp_path / "results" / "nodeloss"
    killed = {}

    def kill_when_training():
        deadline = time.time() + 300
        while time.time() < deadline:
            if any(p.read_text().count("\n") >= 1 for p in sweep_dir.glob("runs/*/metrics.jsonl")):
                killed["at"] = time.time()
                _stop_node(worker_nodes["ports"][0])
                return
            time.sleep(0.5)

    t = threading.Thread(target=kill_when_training, daemon=True)
    t.start()
    summary = run_sweep(load_sweep(spec), verbose=0)
    t.join()
    assert "at" in killed, "the node was not killed while training"
    assert summary["status_counts"] == {"completed": 2}
    import ray

    survivors = {n["NodeID"] for n in ray.nodes() if n["Alive"] and "train_node" in n["Resources"]}
    assert len(survivors) == 1
    last_nodes, driver_nodes, train_nodes = set(), set(), []
    for d in sweep_dir.glob("trial_*"):
        rows = [json.loads(x) for x in (d / "result.json").read_text().splitlines()]
        assert rows[-1]["step"] == 60
        last_nodes.add(rows[-1]["node_id_seed0"])
        driver_nodes |= {r["driver_node_id"] for r in rows}
        train_nodes += [r["node_id_seed0"] for r in rows]
    assert last_nodes <= survivors and len(last_nodes) == 1, "both trials finished on the node that was left"
    assert driver_nodes == set(worker_nodes["head"]), "trial drivers ran off the head"
    assert set(train_nodes) <= set(worker_nodes["workers"]), "a Train worker ran on the head"
    with capsys.disabled():
        print(f"\n[node loss] sweep finished {time.time() - killed['at']:.0f} s after the node was killed; "
              f"Train worker reports per node {pd.Series(train_nodes).value_counts().to_dict()}")
