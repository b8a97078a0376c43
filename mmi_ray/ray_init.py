"""Connect to Ray: the cluster in ``RAY_ADDRESS`` (``ray job submit`` sets it), or a local one that
listens on loopback only, with the dashboard on (its cleaner frees placement groups of stopped
trials) and Ray's token authentication left on."""

from __future__ import annotations

import os
import sys

# Ray reads this when it is imported. "0" is Ray's single-machine mode: the node's address is
# 127.0.0.1, so GCS, raylet, object manager, agents and metrics ports all bind loopback; without it
# they listen on every interface (or on the host's address) even with _node_ip_address=127.0.0.1.
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"

# A local Ray shares its machine with the training it runs. On a small CPU box Ray's periodic
# background work (metrics export from every process, event-loop stats, the dashboard agent's
# node stats every 5 s, the Train preemption watcher's poll every 5 s) takes CPU that the workers
# need (benchmarks/scaling.py --stock measures it). mmi-ray reads none of it: its figures come from
# its own metrics files. The dashboard, its job API and its cleaner stay on. Each is a default: a
# value already in the environment wins (e.g. RAY_enable_metrics_collection=1 for Ray's metrics).
LEAN_LOCAL_RAY = {
    "RAY_enable_metrics_collection": "0",  # Ray's Prometheus metrics, from every Ray process
    "RAY_event_stats": "0",  # Ray's event-loop statistics (its own debugging)
    "REPORTER_UPDATE_INTERVAL_MS": "30000",  # the dashboard's node and process stats (Ray: 5 s)
    "METRICS_RECORD_INTERVAL_S": "60",  # the dashboard head's own metrics record (Ray: 5 s)
    "RAY_TRAIN_PREEMPTION_POLL_INTERVAL_S": "60",  # spot-node preemption poll; one local node (Ray: 5 s)
}


def prepare_env() -> None:
    """Set Ray's environment for this process before ``import ray``: token mode when joining a
    cluster, loopback-only single-machine mode otherwise (an explicit user setting wins)."""
    if os.environ.get("RAY_ADDRESS"):
        # joining a cluster: Ray 2.60 clients must be in token mode (before Ray reads its config)
        # to send the cluster's token
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    elif "ray" not in sys.modules:
        os.environ.setdefault(LOCAL_ONLY_ENV, "0")


def init_ray(num_cpus: int | None = None, log_to_driver: bool = True) -> None:
    prepare_env()
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=log_to_driver, configure_logging=False)
        return
    for key, value in LEAN_LOCAL_RAY.items():  # read by the processes ray.init starts
        os.environ.setdefault(key, value)
    kwargs = {"num_cpus": num_cpus} if num_cpus else {}
    ray.init(include_dashboard=True, dashboard_host="127.0.0.1", _node_ip_address="127.0.0.1",
             log_to_driver=log_to_driver, configure_logging=False, **kwargs)


def stop_processes(matches) -> None:
    """SIGTERM the processes whose command line ``matches`` (and their children), SIGKILL stragglers:
    how tests and benchmarks stop the Ray processes they started (never ``ray stop``, which stops
    every Ray on the host). Needs ``psutil`` (the dev extra)."""
    import psutil

    mine = []
    for p in psutil.process_iter(["cmdline"]):
        if matches(" ".join(p.info["cmdline"] or [])):
            mine.append(p)
            mine.extend(p.children(recursive=True))
    for p in mine:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(mine, timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
