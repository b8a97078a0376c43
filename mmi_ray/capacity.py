"""Can the cluster ever hold what a run or a sweep asks for? Checked before any trainer starts.

A request the cluster cannot place otherwise fails late: Ray Train waits for its worker group,
times out, retries, and ends in a traceback minutes later. Here one worker must fit on one node
and all of a run's (or a trial's) workers on the cluster; when not, the error is one line naming
the key to change and what the cluster has. A cluster joined through RAY_ADDRESS may autoscale, so
there the shortfall is a warning; a local Ray started by mmi-ray cannot grow, so it is an error.
"""

from __future__ import annotations

import math
import os

from .config import WorkerResources
from .errors import ConfigError

KEY_OF = {"CPU": "cpus_per_worker", "GPU": "use_gpu"}
"""The config key (under ``scaling.`` or ``resources.``) that asks for each Ray resource."""


def worker_request(r: WorkerResources) -> dict[str, float]:
    """What one Ray Train worker holds."""
    need = {"CPU": float(r.cpus_per_worker), **{k: float(v) for k, v in r.worker_resources.items()}}
    if r.use_gpu:
        need["GPU"] = r.gpu_share()
    return need


def workers_fit(need: dict[str, float], nodes: list[dict[str, float]]) -> int:
    """How many workers of ``need`` the ``nodes`` (each node's total resources) hold side by side."""
    wanted = {k: v for k, v in need.items() if v > 0}
    if not wanted:
        return 0
    return sum(min(math.floor(n.get(res, 0.0) / amount + 1e-9) for res, amount in wanted.items()) for n in nodes)


def nodes_at_max_size(cluster: dict) -> list[dict[str, float]]:
    """Each node a cluster-launcher (or autoscaler) config can scale to: the head, and each worker
    node type's resources ``max_workers`` times, at most the config's ``max_workers`` worker nodes
    in all (the types listed first taken first)."""
    head = cluster.get("head_node_type")
    types = cluster.get("available_node_types") or {}
    nodes = [dict(types[head].get("resources") or {})] if head in types else []
    room = cluster.get("max_workers", math.inf)
    for name, t in types.items():
        if name == head:
            continue
        n = int(min(t.get("max_workers", 0), room))
        nodes += [{k: float(v) for k, v in (t.get("resources") or {}).items()}] * n
        room -= n
    return nodes


def shortfall(need: dict[str, float], workers: int, nodes: list[dict[str, float]]) -> tuple[str, str] | None:
    """(resource, why) when ``workers`` workers of ``need`` each can never be placed on ``nodes``
    (each node's total resources), else None."""
    wanted = {k: v for k, v in need.items() if v > 0}
    for res, amount in wanted.items():
        largest = max((n.get(res, 0.0) for n in nodes), default=0.0)
        if largest < amount:
            total = sum(n.get(res, 0.0) for n in nodes)
            return res, (f"one worker needs {amount:g} {res}, but no node has that many "
                         f"(largest node {largest:g}, cluster {total:g})")
    fit = workers_fit(need, nodes)
    if fit < workers:
        scarce = min(wanted, key=lambda res: sum(n.get(res, 0.0) for n in nodes) / wanted[res])
        have = sum(n.get(scarce, 0.0) for n in nodes)
        return scarce, (f"{workers} workers need {workers * wanted[scarce]:g} {scarce} side by side, but the cluster "
                        f"places {fit} such worker(s) ({have:g} {scarce} in all)")
    return None


def live_nodes() -> list[dict[str, float]]:
    """Each live node's total resources (Ray must be initialised)."""
    import ray

    return [dict(n["Resources"]) for n in ray.nodes() if n.get("Alive")]


def check(r: WorkerResources, workers: int, section: str, source: str, what: str,
          nodes: list[dict[str, float]] | None = None, hints: dict[str, str] | None = None) -> None:
    """Raise (own local Ray) or warn (a cluster that may autoscale) when ``workers`` workers of ``r``
    can never be placed. ``section`` is ``scaling`` or ``resources``; ``what`` names the request;
    ``hints`` adds advice per resource."""
    nodes = live_nodes() if nodes is None else nodes
    short = shortfall(worker_request(r), workers, nodes)
    if short is None:
        return
    res, why = short
    key = f"{section}.{'gpus_per_worker' if res == 'GPU' and r.gpus_per_worker else KEY_OF.get(res, f'worker_resources.{res}')}"
    msg = f"{key}: {what}: {why}" + (f"; {hints[res]}" if hints and res in hints else "")
    if os.environ.get("RAY_ADDRESS"):
        print(f"[mmi-ray] warning: {source}: {msg} (waiting for the autoscaler)", flush=True)
        return
    raise ConfigError(source, msg)
