"""Cluster YAMLs validate offline with Ray's own validator, open no port to the internet, match
the pinned Ray; the planner's arithmetic and warnings."""

import copy
import re
from pathlib import Path

import pytest
import ray
import yaml

from mmi_ray.errors import ConfigError
from mmi_ray.plan import asha_expected_steps, load_prices, make_plan
from mmi_ray.sweep import load_sweep

REPO = Path(__file__).resolve().parents[1]
LAUNCHER = sorted((REPO / "cluster").glob("*-gpu.yaml"))
KUBERAY = sorted((REPO / "cluster" / "kuberay").glob("*.yaml"))
ALL = LAUNCHER + KUBERAY
RAY_PORTS = ("8265", "6379", "10001")


@pytest.mark.parametrize("path", LAUNCHER, ids=lambda p: p.name)
def test_launcher_yaml_validates_with_rays_schema(path):
    from ray.autoscaler._private.util import prepare_config, validate_config

    cfg = yaml.safe_load(path.read_text())
    validate_config(prepare_config(copy.deepcopy(cfg)))
    head = cfg["available_node_types"][cfg["head_node_type"]]
    assert "mmi_driver" in head["resources"], "the head carries the driver resource"
    workers = [t for n, t in cfg["available_node_types"].items() if n != cfg["head_node_type"]]
    assert all(t["min_workers"] == 0 for t in workers), "GPU workers scale back to zero"
    assert any(t["resources"].get("GPU") == 1 for t in workers) and any(t["resources"].get("GPU", 0) > 1 for t in workers)
    assert cfg["idle_timeout_minutes"] <= 10
    assert path.read_text().startswith("#")


@pytest.mark.parametrize("path", KUBERAY, ids=lambda p: p.name)
def test_kuberay_manifests_are_well_formed(path):
    doc = yaml.safe_load(path.read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] in ("RayCluster", "RayJob")
    spec = doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]
    assert spec["enableInTreeAutoscaling"] is True
    gpu_groups = [g for g in spec["workerGroupSpecs"]
                  if g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu")]
    assert gpu_groups and all(g["minReplicas"] == 0 for g in gpu_groups)
    if doc["kind"] == "RayJob":
        assert "mmi-ray sweep sweeps/" in doc["spec"]["entrypoint"]
        assert (REPO / re.search(r"(sweeps/\S+\.yaml)", doc["spec"]["entrypoint"]).group(1)).exists()


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_no_ray_port_is_opened_to_the_internet(path):
    text = path.read_text()
    doc = yaml.safe_load(text)
    flat = yaml.safe_dump(doc)
    # no security group / firewall rule / Service that exposes Ray's ports publicly
    assert "0.0.0.0/0" not in flat and "::/0" not in flat
    assert "LoadBalancer" not in flat and "NodePort" not in flat
    for port in RAY_PORTS:
        assert not re.search(rf"(FromPort|toPort|ports?)\W+{port}\b.*0\.0\.0\.0", flat)
    if path in LAUNCHER:
        head_cmds = " ".join(doc["head_start_ray_commands"])
        assert "--dashboard-host=127.0.0.1" in head_cmds and "RAY_AUTH_MODE=token" in head_cmds
        assert "RAY_AUTH_MODE=disabled" not in text


@pytest.mark.parametrize("path", ALL, ids=lambda p: p.name)
def test_versions_match_the_pinned_ray(path):
    pinned = re.search(r'"ray\[[^\]]*\]>=([\d.]+),<', (REPO / "pyproject.toml").read_text()).group(1)
    assert ray.__version__.startswith(pinned)
    images = re.findall(r"rayproject/ray:(\S+)", path.read_text())
    assert images and all(i == f"{ray.__version__}-py311-gpu" for i in images)
    for v in re.findall(r'rayVersion: "([\d.]+)"', path.read_text()):
        assert v == ray.__version__


def _cluster(name="aws-gpu.yaml"):
    return yaml.safe_load((REPO / "cluster" / name).read_text())


def test_plan_paper_spec_on_aws_by_hand():
    sweep = load_sweep(REPO / "sweeps" / "paper_cqa.yaml", ["storage_path=s3://bucket/mmi"])
    plan = make_plan(sweep, _cluster(), "aws", step_time=0.9, prices=load_prices())
    # runs that fit: 8 spot nodes x 1 GPU + 2 x 4 GPUs = 16 seed runs -> 16 // 3 seeds = 5 trials
    assert plan.trials_at_once == 5
    # 15 runs: the cheaper-per-GPU spot type fills first (8), then two 4-GPU nodes (7 runs)
    assert plan.nodes == {"gpu_spot_1x": 8, "gpu_ondemand_4x": 2}
    assert plan.gpu_hours_full == pytest.approx(16 * 3 * 10000 * 0.9 / 3600)  # 120
    # ASHA rungs 2500, 5000, 10000 with eta 2: 2500 + 2500/2 + 5000/4 = 5000 steps a run
    assert plan.gpu_hours_asha == pytest.approx(16 * 3 * 5000 * 0.9 / 3600)
    per_gpu_hour = (8 * 0.40 + 2 * 5.672) / 16
    head = 0.384 * (16 * 3 * 10000 * 0.9 / 3600) / 15
    assert plan.cost_full == pytest.approx(120 * per_gpu_hour + head)
    # an autoscaling cluster starts without workers: the sweep sizes its concurrency for the cluster at
    # its maximum (mmi_ray/sweep/placement.py), as the plan does, so nothing needs setting by hand
    assert "at once on this cluster: 5 (a sweep on the head reads the cluster's config" in "\n".join(plan.lines)
    assert not any("max_concurrent_trials" in w for w in plan.warnings)
    # the rest: the data is not on this machine, so at the config's maximum lengths a batch of 64 does not
    # fit an A10G (sizing.py)
    assert len(plan.warnings) == 1 and "train.grad_accum_steps" in plan.warnings[0]


def test_asha_expected_steps():
    assert asha_expected_steps(100, 100, 2) == 100
    assert asha_expected_steps(120, 40, 3) == pytest.approx(40 + 80 / 3)
    assert asha_expected_steps(400, 100, 2) == pytest.approx(100 + 100 / 2 + 200 / 4)


def test_plan_warnings():
    sweep = load_sweep(REPO / "sweeps" / "paper_cqa.yaml",
                       ["resources.num_workers=64", "resources.driver_resource=elsewhere"])
    cluster = _cluster("gcp-gpu.yaml")
    plan = make_plan(sweep, cluster, "gcp", step_time=1.0, prices=load_prices())
    text = "\n".join(plan.warnings)
    assert "more than the cluster can ever have" in text
    assert "head node type does not carry it" in text
    assert "is local" in text
    assert plan.trials_at_once == 0
    no_driver = make_plan(load_sweep(REPO / "sweeps" / "paper_cqa.yaml", ["resources.driver_resource=null"]),
                          cluster, "gcp", step_time=1.0, prices=load_prices())
    assert any("no driver resource" in w for w in no_driver.warnings)
    cpu_only = _cluster("gcp-gpu.yaml")
    for t in cpu_only["available_node_types"].values():
        (t.get("resources") or {}).pop("GPU", None)
    no_gpu = make_plan(load_sweep(REPO / "sweeps" / "paper_cqa.yaml"), cpu_only, "gcp", step_time=1.0,
                       prices=load_prices())
    assert any("needs a GPU (resources.use_gpu) but no worker node type has one" in w for w in no_gpu.warnings)
    assert no_gpu.trials_at_once == 0


def test_plan_warns_when_cpu_training_takes_every_core():
    cluster = _cluster()  # gpu_spot_1x: 4 CPUs, 1 GPU
    def warned(cpus: int, workers: int = 1) -> list[str]:
        sweep = load_sweep(REPO / "sweeps" / "paper_cqa.yaml", ["resources.use_gpu=false",
                                                                f"resources.cpus_per_worker={cpus}",
                                                                f"resources.num_workers={workers}"])
        plan = make_plan(sweep, cluster, "aws", step_time=1.0, prices=load_prices())
        assert plan.nodes  # the runs land on worker nodes
        return [w for w in plan.warnings if "takes every CPU" in w]
    assert warned(4) and "gpu_spot_1x" in warned(4)[0] and "leave a core free" in warned(4)[0]
    assert warned(2)  # two runs of 2 CPUs fill a 4-CPU node just the same
    assert not any("gpu_spot_1x" in w for w in warned(3))  # one run of 3 CPUs leaves it a core for Ray
    assert "gpu_ondemand_4x" in warned(3)[0]  # but 16 runs of 3 fill its 48
    # data-parallel workers wait for each other when Ray's processes delay one: fewer all-reduces help
    assert "grad_accum_steps" in warned(2, workers=2)[0] and "grad_accum_steps" not in warned(4)[0]


def test_plan_cli_prints_plan(capsys):
    from mmi_ray.cli import main

    assert main(["plan", str(REPO / "sweeps" / "paper_cqa.yaml"), "--cluster", str(REPO / "cluster/aws-gpu.yaml")]) == 0
    out = capsys.readouterr().out
    assert "trials: 16; at once on this cluster: 5 (" in out and "GPU: A10G (22 GiB usable; bf16" in out
    st = float(re.search(r"step time: ([\d.]+) s \(estimated: ", out).group(1))
    gpu_hours = float(re.search(r"GPU-hours: ([\d.]+) without early stopping", out).group(1))
    assert gpu_hours == pytest.approx(16 * 3 * 10000 * st / 3600, rel=1e-3)
    # 3 best + DSS + label-only, each on 5 fresh seeds at 10,000 steps
    confirm = re.search(r"confirmation: up to 25 runs \(\(3 best \+ 2 baselines\) x 5 fresh seeds, full budget\): "
                        r"([\d.]+) GPU-hours", out)
    assert float(confirm.group(1)) == pytest.approx(25 * 10000 * st / 3600, rel=2e-3)
    assert "at an assumed 35% of A10G's 70 TFLOP/s bf16 peak" in out and "an upper bound" in out


def test_a_gpu_share_packs_several_trials_on_one_gpu_and_plan_counts_them(tmp_path):
    """resources.gpus_per_worker 0.25: four workers (of four trials) on each GPU, in the plan's
    trials at once and node count, in the concurrency a sweep derives from a cluster, and in the
    capacity check; the plan says Ray does not split the memory, and warns where it cannot hold them."""
    from mmi_ray import capacity

    small = ["max_concurrent_trials=null", "num_trials=64", "seeds=[0]", "overrides.model.name=google/t5-v1_1-small", "overrides.train.batch_size=8",
             "resources.gpus_per_worker=0.25", "resources.cpus_per_worker=1"]
    whole = load_sweep(REPO / "sweeps" / "paper_cqa.yaml", small[:-2] + ["resources.cpus_per_worker=1"])
    shared = load_sweep(REPO / "sweeps" / "paper_cqa.yaml", small)
    cluster = _cluster()  # gpu_spot_1x: 4 CPUs, 1 GPU, up to 8; gpu_ondemand_4x: 48 CPUs, 4 GPUs, up to 2
    one, four = (make_plan(s, cluster, "aws", step_time=0.5, prices=load_prices()) for s in (whole, shared))
    assert one.trials_at_once == 8 + 2 * 4 and four.trials_at_once == 4 * (8 + 2 * 4)
    assert four.gpu_hours_full == pytest.approx(one.gpu_hours_full / 4)
    text = "\n".join(four.lines)
    assert "0.25 GPU" in text and "4 workers per GPU" in text and "it does not split the memory" in text
    # a cluster of 2 GPUs: 8 trials at once, not 2
    assert shared.derived_concurrency({"CPU": 64, "GPU": 2}) == 8 and whole.derived_concurrency({"CPU": 64, "GPU": 2}) == 2
    capacity.check(shared.spec.resources, 4, "resources", "s.yaml", "4 workers", [{"CPU": 8, "GPU": 1}])
    with pytest.raises(ConfigError, match="resources.gpus_per_worker: 5 workers: 5 workers need 1.25 GPU"):
        capacity.check(shared.spec.resources, 5, "resources", "s.yaml", "5 workers", [{"CPU": 8, "GPU": 1}])
    # the paper's batch of t5-v1_1-base: four per A10G do not fit; the plan says how many do
    base = load_sweep(REPO / "sweeps" / "paper_cqa.yaml", ["resources.gpus_per_worker=0.25", "overrides.train.batch_size=8"])
    plan = make_plan(base, cluster, "aws", step_time=0.5, prices=load_prices())
    assert any("4 workers per GPU need about" in w and "set resources.gpus_per_worker:" in w for w in plan.warnings), plan.warnings
    # drivers pinned to the head (the paper spec): no warning; unpinned: the plan says what it costs
    assert not any("drivers unpinned" in w for w in four.warnings)
    loose = load_sweep(REPO / "sweeps" / "paper_cqa.yaml", [*small, "resources.driver_resource=null"])
    assert any("drivers unpinned" in w and "resources.driver_resource" in w
               for w in make_plan(loose, cluster, "aws", step_time=0.5, prices=load_prices()).warnings)


def test_a_run_with_a_gpu_share_asks_ray_train_for_that_share():
    from mmi_ray.config import load_config
    from mmi_ray.train import build_trainer

    cfg = load_config(REPO / "configs" / "tiny_builtin.yaml",
                      ["scaling.use_gpu=true", "scaling.gpus_per_worker=0.25", "scaling.num_workers=2"])
    scaling = build_trainer(cfg, "x", "/tmp/x").scaling_config
    assert scaling.use_gpu and scaling.num_workers == 2 and scaling.resources_per_worker == {"CPU": 1.0, "GPU": 0.25}
    whole = build_trainer(load_config(REPO / "configs" / "tiny_builtin.yaml", ["scaling.use_gpu=true"]), "y", "/tmp/y")
    assert whole.scaling_config.resources_per_worker == {"CPU": 1.0, "GPU": 1.0}


def test_a_sweep_on_an_autoscaling_cluster_runs_as_many_trials_as_the_cluster_can_grow_to(tmp_path, monkeypatch):
    """The head of `cluster/aws-gpu.yaml` with its GPU workers scaled to zero: the concurrency comes from
    the cluster's config at its maximum size (what `mmi-ray plan` says), not from the head alone."""
    from mmi_ray.capacity import nodes_at_max_size
    from mmi_ray.sweep.placement import CLUSTER_CONFIG_ENV, autoscaling_config

    cluster = _cluster()
    nodes = nodes_at_max_size(cluster)
    assert len(nodes) == 1 + 8 + 2 and sum(n.get("GPU", 0) for n in nodes) == 8 + 2 * 4
    sweep = load_sweep(REPO / "sweeps" / "paper_cqa.yaml", ["max_concurrent_trials=null"])
    head_only = {"CPU": 8, "mmi_driver": 100}
    assert sweep.derived_concurrency(head_only) == 1  # what the nodes up at the start hold
    plan = make_plan(sweep, cluster, "aws", step_time=1.0, prices=load_prices())
    assert sweep.derived_concurrency(head_only, scalable=nodes) == plan.trials_at_once == 5
    # the global max_workers caps the worker nodes (the types listed first taken first)
    capped = nodes_at_max_size({**cluster, "max_workers": 3})
    assert len(capped) == 1 + 3
    # where the config is read from: the variable, else ~/ray_bootstrap_config.yaml (absent here)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv(CLUSTER_CONFIG_ENV, raising=False)
    assert autoscaling_config() is None
    (tmp_path / "ray_bootstrap_config.yaml").write_text((REPO / "cluster" / "aws-gpu.yaml").read_text())
    assert autoscaling_config()[0] == str(tmp_path / "ray_bootstrap_config.yaml")
    monkeypatch.setenv(CLUSTER_CONFIG_ENV, str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="MMI_RAY_CLUSTER_CONFIG: .*missing.yaml: not a file"):
        autoscaling_config()
