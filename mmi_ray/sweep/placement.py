"""Where a sweep's trials run: the sweep folder under its storage root, the Tune trainable with its
resources, and the check that one trial fits the cluster. Shared by the search (tuner.py) and the
confirmation runs (confirm.py)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from ..errors import ConfigError
from ..storage import join, resolve_storage
from .spec import LoadedSweep, SweepSpec

if TYPE_CHECKING:
    from .trial import TrialPayload


def trainable(sweep: LoadedSweep, payload: TrialPayload, n_seeds: int | None = None):
    """The trial with its resources: a class trainable that trains in its own process and holds the
    worker's CPUs, or a function trainable (the driver) that holds a sliver while its Train runs
    reserve their own."""
    from ray import tune

    from .trial import in_process_trainable, trial_driver

    r = sweep.spec.resources
    if sweep.in_process(n_seeds):  # the trial trains itself: it holds the worker's CPUs and resources
        return tune.with_resources(in_process_trainable(payload), {"CPU": r.cpus_per_worker, **r.worker_resources})

    def mmi_trial(config):  # stable name: Tuner.restore needs the same trainable
        trial_driver(config, payload)

    return tune.with_resources(mmi_trial, {r.driver_resource: 0.01} if r.driver_resource else {"CPU": 0.01})


def sweep_dir_of(spec: SweepSpec) -> tuple[str, str]:
    """(storage root, sweep folder); a relative ``storage_path`` under ``storage.results_root()``."""
    storage = resolve_storage(spec.storage_path)
    return storage, join(storage, spec.name)


def cluster_resources() -> dict[str, float]:
    import ray

    return dict(ray.cluster_resources())


CLUSTER_CONFIG_ENV = "MMI_RAY_CLUSTER_CONFIG"
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"
"""Where ``ray up`` puts the cluster's own config on the head node (its autoscaler reads it)."""


def autoscaling_config() -> tuple[str, dict] | None:
    """The config of the autoscaling cluster this driver runs on, as (path, config):
    ``$MMI_RAY_CLUSTER_CONFIG`` (a cluster-launcher YAML or an autoscaler config), else the head's
    ``~/ray_bootstrap_config.yaml``; None when neither is there (a fixed cluster, a local Ray)."""
    import yaml

    path = os.environ.get(CLUSTER_CONFIG_ENV) or os.path.expanduser(BOOTSTRAP_CONFIG)
    if not os.path.isfile(path):
        if os.environ.get(CLUSTER_CONFIG_ENV):
            raise ConfigError(CLUSTER_CONFIG_ENV, f"{path}: not a file")
        return None
    with open(path, encoding="utf-8") as f:
        cfg = yaml.safe_load(f)  # JSON is YAML too
    if not isinstance(cfg, dict) or "available_node_types" not in cfg:
        raise ConfigError(path, "available_node_types: missing (a Ray cluster-launcher or autoscaler config is expected)")
    return path, cfg


def concurrency(sweep: LoadedSweep, n_seeds: int | None = None, n_trials: int | None = None) -> tuple[int, str]:
    """Trials at once, and where the number comes from: the spec's ``max_concurrent_trials``; the
    cluster at its maximum size when it autoscales (``autoscaling_config``), where more fit than on
    the nodes up at the start; else the nodes up now."""
    from ..capacity import nodes_at_max_size

    if sweep.spec.max_concurrent_trials:
        return sweep.spec.max_concurrent_trials, "max_concurrent_trials"
    cluster, found = cluster_resources(), autoscaling_config()
    now = sweep.derived_concurrency(cluster, n_seeds, n_trials)
    if found is None:
        return now, "the nodes up now"
    scaled = sweep.derived_concurrency(cluster, n_seeds, n_trials, nodes_at_max_size(found[1]))
    return scaled, (f"the cluster at its maximum size ({found[0]})" if scaled > now else "the nodes up now")


def check_cluster_fits(sweep: LoadedSweep, nodes: list[dict[str, float]] | None = None, n_seeds: int | None = None) -> None:
    """One trial (its seed runs side by side) must fit the cluster, and its driver must find its
    resource: an error on a Ray of our own, a warning on a cluster that may autoscale."""
    from .. import capacity

    spec, r = sweep.spec, sweep.spec.resources
    nodes = capacity.live_nodes() if nodes is None else nodes
    k = n_seeds or len(spec.seeds)
    capacity.check(r, k * r.num_workers, "resources", sweep.source,
                   f"one trial runs {k} seed(s) x {r.num_workers} worker(s) side by side", nodes,
                   hints={"CPU": "lower resources.cpus_per_worker (fractions work) or the seeds"})
    if r.driver_resource and not any(n.get(r.driver_resource, 0) > 0 for n in nodes):
        msg = f"resources.driver_resource: no node carries '{r.driver_resource}', so no trial driver can start"
        if not os.environ.get("RAY_ADDRESS"):
            raise ConfigError(sweep.source, msg)
        print(f"[mmi-ray] warning: {sweep.source}: {msg} (waiting for the autoscaler)", flush=True)
