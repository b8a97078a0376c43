"""Requests the cluster can never hold fail before any trainer starts, naming the key (no Ray here)."""

import pytest

from mmi_ray import capacity
from mmi_ray.config import ScalingConfig
from mmi_ray.errors import ConfigError
from mmi_ray.sweep.spec import Resources

CPU_HOST = [{"CPU": 2.0, "memory": 1e10}]
GPU_CLUSTER = [{"CPU": 4.0}, {"CPU": 8.0, "GPU": 1.0, "a10": 1.0}, {"CPU": 48.0, "GPU": 4.0}]


@pytest.mark.parametrize("request_,workers,nodes,expected", [
    (ScalingConfig(use_gpu=True), 1, CPU_HOST, ("GPU", "one worker needs 1 GPU, but no node has that many (largest node 0, cluster 0)")),
    (ScalingConfig(cpus_per_worker=4), 1, CPU_HOST, ("CPU", "one worker needs 4 CPU, but no node has that many")),
    (ScalingConfig(cpus_per_worker=1), 3, CPU_HOST, ("CPU", "3 workers need 3 CPU side by side, but the cluster places 2")),
    (ScalingConfig(worker_resources={"train_node": 1}), 1, CPU_HOST, ("train_node", "one worker needs 1 train_node")),
    (ScalingConfig(use_gpu=True, cpus_per_worker=4), 5, GPU_CLUSTER, None),  # 1 + 4 GPUs across two nodes
    (ScalingConfig(use_gpu=True, cpus_per_worker=4), 6, GPU_CLUSTER, ("GPU", "6 workers need 6 GPU side by side, but the cluster places 5")),
    (ScalingConfig(use_gpu=True, cpus_per_worker=16), 1, GPU_CLUSTER, None),
    (ScalingConfig(use_gpu=True, worker_resources={"a10": 1}), 2, GPU_CLUSTER, ("a10", "2 workers need 2 a10")),
])
def test_shortfall_names_the_resource(request_, workers, nodes, expected):
    got = capacity.shortfall(capacity.worker_request(request_), workers, nodes)
    if expected is None:
        assert got is None
    else:
        assert got[0] == expected[0] and got[1].startswith(expected[1]), got


def test_own_ray_refuses_with_the_key_and_a_joined_cluster_warns(monkeypatch, capsys):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(ConfigError) as e:
        capacity.check(ScalingConfig(use_gpu=True), 1, "scaling", "c.yaml", "1 worker(s)", CPU_HOST)
    assert str(e.value).startswith("c.yaml: scaling.use_gpu: 1 worker(s): one worker needs 1 GPU")
    with pytest.raises(ConfigError, match=r"resources.worker_resources.train_node: one trial"):
        capacity.check(Resources(worker_resources={"train_node": 1}), 2, "resources", "s.yaml", "one trial", CPU_HOST)
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")  # may autoscale: say so, go on
    capacity.check(ScalingConfig(use_gpu=True), 1, "scaling", "c.yaml", "1 worker(s)", CPU_HOST)
    assert "warning: c.yaml: scaling.use_gpu" in capsys.readouterr().out


def test_sweep_refuses_a_driver_resource_no_node_carries(tmp_path, monkeypatch):
    from test_sweep_spec import _load, good_spec

    from mmi_ray.sweep.placement import check_cluster_fits

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    sweep = _load(tmp_path, good_spec(resources={"driver_resource": "mmi_driver"}))
    with pytest.raises(ConfigError, match="resources.driver_resource: no node carries 'mmi_driver'"):
        check_cluster_fits(sweep, [{"CPU": 4.0}])
    check_cluster_fits(sweep, [{"CPU": 4.0, "mmi_driver": 1.0}])
    gpu = _load(tmp_path, good_spec(seeds=[0, 1, 2], resources={"use_gpu": True}))
    with pytest.raises(ConfigError, match="resources.use_gpu: one trial runs 3 seed"):
        check_cluster_fits(gpu, [{"CPU": 16.0, "GPU": 2.0}])
