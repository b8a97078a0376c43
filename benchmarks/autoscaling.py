"""Autoscaling seen, not assumed: a sweep on Ray's fake multi-node provider.

    python benchmarks/autoscaling.py [--cluster cluster/aws-gpu.yaml] [--trials 4] [--idle-timeout-s 20]
                                     [--out BENCHMARKS.md] [--json FILE]

The autoscaler runs here for real (``ray start --head --autoscaling-config``, ``RAY_FAKE_CLUSTER=1``),
with the node types of the cluster YAML given to Ray's fake multi-node provider (nodes are
processes on this machine; GPUs become the custom resource ``sim_gpu``: no CUDA here). A sweep
whose Ray Train workers each need one GPU in the YAML's terms (here: one ``sim_gpu``, training on
CPU) then runs with its drivers pinned to the head (``resources.driver_resource: mmi_driver``); the
demand makes the autoscaler start worker nodes. Node counts per type are sampled every second, from
the start until the workers have gone back to zero after the idle timeout, and set beside what
``mmi-ray plan`` predicts for the same sweep with real GPUs on the real YAML.

Ray's ``ray.cluster_utils.AutoscalingCluster`` reads an ``example.yaml`` this wheel does not ship
and runs ``ray stop --force`` (it would stop every Ray on the machine): the config is built here,
and only the processes this script started are stopped. Run it where no other Ray runs.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import yaml
from bench_out import report_figures
from sweep_scale import TINY_TRIAL

REPO = Path(__file__).resolve().parents[1]
SIM_GPU = "sim_gpu"
HEAD_TYPE = "ray.head.default"  # the fake provider's name for the head node type


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_fake(resources: dict) -> dict:
    res = {k: v for k, v in resources.items()}
    if "GPU" in res:
        res[SIM_GPU] = res.pop("GPU")
    return res


def fake_config(cluster: dict, gcs_address: str, idle_timeout_s: float, object_store_mb: int = 80) -> dict:
    """The fake multi-node provider's config for a cluster-launcher YAML: the same worker node types
    (resources, min and max workers), GPUs as ``sim_gpu``, the head as the provider names it."""
    head = cluster["head_node_type"]
    types = {}
    for name, t in cluster["available_node_types"].items():
        res = _as_fake(t.get("resources", {}))
        if name == head:
            types[HEAD_TYPE] = {"resources": res, "node_config": {}, "max_workers": 0}
        else:
            types[name] = {"resources": {**res, "object_store_memory": object_store_mb * 2**20}, "node_config": {},
                           "min_workers": t.get("min_workers", 0), "max_workers": t.get("max_workers", 0)}
    return {
        "cluster_name": f"fake-{cluster.get('cluster_name', 'cluster')}",
        "max_workers": cluster.get("max_workers", 10),
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": gcs_address},
        "available_node_types": types, "head_node_type": HEAD_TYPE, "auth": {},
        "upscaling_speed": cluster.get("upscaling_speed", 1.0), "idle_timeout_minutes": idle_timeout_s / 60,
        "docker": {}, "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [],
    }


def sweep_specs(folder: Path, trials: int, steps: int) -> tuple[Path, Path]:
    """(the sweep as a GPU user writes it, for ``mmi-ray plan``; its twin for the fake cluster: each
    worker needs a ``sim_gpu`` instead of a GPU and trains on CPU)."""
    common = {
        "base": str(REPO / "configs" / "tiny_builtin.yaml"),
        "overrides": {**TINY_TRIAL, "train.max_steps": steps, "train.eval_every": steps},
        "search": {"loss.mi_weight": {"type": "uniform", "low": 0.0, "high": 1.0}},
        "objective": {"metric": "val_accuracy", "mode": "max"},
        "num_trials": trials, "seeds": [0], "scheduler": {"type": "none"},
        "storage_path": str(folder / "results"),
    }
    gpu = {**common, "name": "autoscale-gpu",
           "resources": {"num_workers": 1, "cpus_per_worker": 1, "use_gpu": True, "driver_resource": "mmi_driver"}}
    sim = {**common, "name": "autoscale",
           "resources": {"num_workers": 1, "cpus_per_worker": 1, "use_gpu": False, "worker_resources": {SIM_GPU: 1},
                         "driver_resource": "mmi_driver"}}
    paths = folder / "gpu.yaml", folder / "sim.yaml"
    for p, s in zip(paths, (gpu, sim)):
        p.write_text(yaml.safe_dump(s, sort_keys=False))
    return paths


class FakeCluster:
    """A head with the autoscaler and the fake provider; stops only what it started."""

    def __init__(self, config: dict, head_resources: dict, port: int):
        self.config, self.port = config, port
        self.temp_dir = tempfile.mkdtemp(prefix="mmias-", dir="/tmp")  # short: Ray puts unix sockets here
        self.head_resources = dict(head_resources)
        self.env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
                    "RAY_AUTH_MODE": "token", "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
        self.env.pop("RAY_ADDRESS", None)
        self.address = f"127.0.0.1:{port}"

    def start(self) -> None:
        cfg = Path(self.temp_dir) / "autoscaling.json"
        cfg.write_text(json.dumps(self.config))
        res = dict(self.head_resources)
        cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", f"--autoscaling-config={cfg}",
               "--temp-dir", self.temp_dir, "--node-ip-address", "127.0.0.1", "--port", str(self.port),
               "--dashboard-host", "127.0.0.1", "--dashboard-port", str(_free_port()), "--disable-usage-stats",
               f"--num-cpus={int(res.pop('CPU', 0))}", f"--num-gpus={int(res.pop('GPU', 0))}"]
        if res:
            cmd.append(f"--resources={json.dumps(res)}")
        r = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=180)
        if r.returncode != 0:
            self.stop()
            raise RuntimeError(f"ray start failed: {r.stderr[-2000:]}")

    def stop(self) -> None:
        from mmi_ray.ray_init import stop_processes

        # the head's processes and the fake nodes' (they name the head's GCS port)
        stop_processes(lambda cmd: self.temp_dir in cmd or f":{self.port}" in cmd)


def node_counts(types: dict) -> dict[str, int]:
    """Alive worker nodes per node type, told apart by their resources."""
    import ray

    signature = {name: {k: v for k, v in t["resources"].items() if k != "object_store_memory"}
                 for name, t in types.items() if name != HEAD_TYPE}
    counts = dict.fromkeys(signature, 0)
    for n in ray.nodes():
        if not n["Alive"]:
            continue
        for name, sig in signature.items():
            if all(abs(n["Resources"].get(k, 0) - v) < 1e-6 for k, v in sig.items()):
                counts[name] += 1
                break
    return counts


def run(cluster_path: str, trials: int, steps: int, idle_timeout_s: float, settle_s: float = 240) -> dict:
    """Start the fake autoscaling cluster, run the sweep, follow the node counts until the workers
    are gone (or ``settle_s`` after the sweep), stop the cluster. Returns the timeline and checks."""
    from mmi_ray.plan import load_cluster, load_prices, make_plan
    from mmi_ray.sweep import load_sweep
    from mmi_ray.sweep.placement import CLUSTER_CONFIG_ENV

    cluster = load_cluster(str(REPO / cluster_path) if not Path(cluster_path).is_absolute() else cluster_path)
    folder = Path(tempfile.mkdtemp(prefix="mmi-autoscale-"))
    gpu_spec, sim_spec = sweep_specs(folder, trials, steps)
    plan = make_plan(load_sweep(gpu_spec), cluster, cluster_path, None, load_prices())
    port = _free_port()
    config = fake_config(cluster, f"127.0.0.1:{port}", idle_timeout_s)
    head = config["available_node_types"][HEAD_TYPE]["resources"]
    fc = FakeCluster(config, head, port)
    fc.start()
    timeline: list[tuple[float, dict[str, int]]] = []
    stop = threading.Event()
    try:
        os.environ.update(RAY_ADDRESS=fc.address, RAY_AUTH_MODE="token")
        import ray

        from mmi_ray.ray_init import init_ray
        from mmi_ray.sweep import run_sweep

        init_ray(log_to_driver=False)
        t0 = time.time()

        def sample():
            while not stop.is_set():
                timeline.append((time.time() - t0, node_counts(config["available_node_types"])))
                stop.wait(1.0)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        # the spec as a user runs it, no concurrency set by hand: the sweep reads the cluster's config, as on
        # a head that `ray up` made (~/ray_bootstrap_config.yaml), and sizes it for the cluster at its maximum
        os.environ[CLUSTER_CONFIG_ENV] = str(Path(fc.temp_dir) / "autoscaling.json")
        summary = run_sweep(load_sweep(sim_spec), verbose=0)
        t_sweep = time.time() - t0
        deadline = time.time() + settle_s
        while time.time() < deadline and (not timeline or sum(timeline[-1][1].values()) > 0):
            time.sleep(1.0)
        stop.set()
        sampler.join(timeout=10)
        head_id = next(n["NodeID"] for n in ray.nodes() if n["Alive"] and "mmi_driver" in n["Resources"])
        sweep_dir = folder / "results" / "autoscale"
        drivers = set()
        for d in sweep_dir.glob("trial_*"):
            drivers |= {json.loads(x)["driver_node_id"] for x in (d / "result.json").read_text().splitlines() if x}
        ray.shutdown()
    finally:
        stop.set()
        fc.stop()
        os.environ.pop("RAY_ADDRESS", None)
        os.environ.pop(CLUSTER_CONFIG_ENV, None)
    peak = {name: max((c.get(name, 0) for _, c in timeline), default=0) for name in config["available_node_types"]
            if name != HEAD_TYPE}
    return {"plan_lines": plan.lines, "plan_nodes": plan.nodes, "plan_at_once": plan.trials_at_once, "peak": peak,
            "timeline": timeline, "t_sweep_s": t_sweep, "final": timeline[-1][1] if timeline else {},
            "completed": summary["status_counts"].get("completed", 0), "trials": trials,
            "drivers_on_head": drivers == {head_id}, "driver_nodes": sorted(drivers), "idle_timeout_s": idle_timeout_s}


def _changes(timeline) -> list[tuple[float, dict[str, int]]]:
    out, last = [], None
    for t, c in timeline:
        if c != last:
            out.append((t, c))
            last = c
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cluster", default="cluster/aws-gpu.yaml")
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--idle-timeout-s", type=float, default=20.0)
    ap.add_argument("--out", default=None)
    ap.add_argument("--json", default=None, help="write the result (timeline included) to this file")
    args = ap.parse_args(argv)
    res = run(args.cluster, args.trials, args.steps, args.idle_timeout_s)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    names = list(res["peak"])
    lines = [f"`{args.cluster}` worker node types on Ray's fake multi-node provider (GPU -> `{SIM_GPU}`), "
             f"idle timeout {args.idle_timeout_s:g} s; a sweep of {args.trials} trials x 1 seed x 1 worker "
             f"needing 1 GPU each, drivers on the head (`mmi_driver`)", "",
             "`mmi-ray plan` for the same sweep with real GPUs:", "", "```", *res["plan_lines"], "```", "",
             "| t (s) | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    lines += [f"| {t:.0f} | " + " | ".join(str(c.get(n, 0)) for n in names) + " |" for t, c in _changes(res["timeline"])]
    peak = ", ".join(f"{n} {res['peak'][n]}" for n in names)
    lines += ["", f"peak: {peak}; plan: "
                  f"{', '.join(f'{n} {c}' for n, c in res['plan_nodes'].items()) or 'none'}; "
                  f"sweep done at {res['t_sweep_s']:.0f} s ({res['completed']}/{res['trials']} completed); "
                  f"trial drivers on the head: {'yes' if res['drivers_on_head'] else 'NO'}; workers at the end: "
                  f"{sum(res['final'].values())}"]
    report_figures(lines, args.out, "autoscaling.py", argv, "Autoscaling on the fake multi-node provider")
    return res


if __name__ == "__main__":
    main()
