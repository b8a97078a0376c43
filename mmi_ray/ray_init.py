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
