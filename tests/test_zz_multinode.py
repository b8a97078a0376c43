"""A sweep on a 3-node cluster on one machine: the shared head (carrying ``mmi_driver``) plus two
worker nodes started with ``ray start --address`` (and stopped by this test). Drivers must run on
the head and Train workers on the worker nodes. Runs last: it adds nodes to the shared head."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import psutil
import pytest
from test_sweep_e2e import write_spec

from conftest import _free_port
from mmi_ray.sweep import load_sweep
from mmi_ray.sweep.runner import run_sweep

pytestmark = pytest.mark.ray


def _stop_node(nm_port: int) -> None:
    procs = []
    for p in psutil.process_iter(["cmdline"]):
        if f"--node_manager_port={nm_port}" in " ".join(p.info["cmdline"] or []):
            procs.append(p)
            procs.extend(p.children(recursive=True))
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        p.kill()


@pytest.fixture
def worker_nodes(ray_head, ray_session):
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
               "workers": [n["NodeID"] for n in nodes if "train_node" in n["Resources"]]}
    finally:
        for p in ports:
            _stop_node(p)


def test_drivers_on_head_and_train_workers_on_worker_nodes(worker_nodes, tmp_path):
    assert len(worker_nodes["head"]) == 1 and len(worker_nodes["workers"]) == 2
    spec = write_spec(tmp_path, "multinode", num_trials=2, seeds=[0, 1],
                      resources={"workers": 1, "cpus_per_worker": 1, "worker_resources": {"train_node": 1},
                                 "driver_resource": "mmi_driver"})
    summary = run_sweep(load_sweep(spec), verbose=0)
    assert summary["trials"] == 2
    sweep_dir = tmp_path / "results" / "multinode"
    driver_nodes, worker_node_ids = set(), []
    for d in sweep_dir.glob("trial_*"):
        rows = [json.loads(x) for x in (d / "result.json").read_text().splitlines()]
        driver_nodes |= {r["driver_node_id"] for r in rows}
        worker_node_ids += [r[f"node_id_seed{s}"] for r in rows for s in (0, 1)]
    assert driver_nodes == set(worker_nodes["head"])
    assert set(worker_node_ids) <= set(worker_nodes["workers"])
    counts = pd.Series(worker_node_ids).value_counts()
    print(f"placement: drivers on head {sorted(driver_nodes)}; Train worker reports per node {counts.to_dict()}")
