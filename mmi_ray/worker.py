"""The runtime seam of the training loop: what one worker needs from where it runs.

``WorkerEnv`` is built in one of three ways, and the loop (``recipe.run_loop``) never knows which:
``ray_worker_env`` inside a Ray Train worker (``recipe.train_loop`` is the worker entry point),
``in_process_env`` inside a Tune trial process (one seed, one CPU worker: same run folder, metrics
writer and checkpoint rotation as a Ray Train run), and ``local_env`` for benchmarks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import faults
from .checkpoint import load_state
from .layout import (
    CHECKPOINT_PATH,
    NODE_ID,
    MetricsLog,
    checkpoint_dir_name,
    complete_checkpoints,
    publish_checkpoint,
)


@dataclass
class WorkerEnv:
    """What the loop needs from its runtime: Ray Train workers, a Tune trial, or a plain process."""

    rank: int
    world: int
    device: torch.device
    latest_state: Callable[[], dict | None]
    """The state dict of the checkpoint to resume from, or None."""
    report: Callable[[dict, Path | None], None]
    """Report metrics, with a checkpoint folder from rank 0 (None from other ranks)."""
    wrap_model: Callable[[torch.nn.Module], torch.nn.Module]
    """DDP wrapper (``ray.train.torch.prepare_model``) or a plain ``.to(device)``."""
    after_step: Callable[[int, int], None] = field(default_factory=faults.step_hook_from_env)
    """``(rank, step)`` after each optimizer step: nothing, unless a recovery test injects a fault."""
    log_dir: str | None = None
    """The run folder, where rank 0 writes the training log (``train.log_every``); None: no log."""


def local_env(report: Callable[[dict, Path | None], None], device: str = "cpu", log_dir: str | None = None) -> WorkerEnv:
    """A single in-process worker with no persistence (benchmarks, quick experiments), but the
    training log when ``log_dir`` is given."""
    dev = torch.device(device)
    return WorkerEnv(0, 1, dev, lambda: None, report, lambda m: m.to(dev), log_dir=log_dir)


def in_process_env(run_dir: Path, keep_checkpoints: int, node_id: str,
                   on_report: Callable[[dict], None]) -> tuple[WorkerEnv, dict | None]:
    """One CPU worker in this process, persisting like a Ray Train run: ``checkpoint_<step>``
    folders (the newest ``keep_checkpoints``) and ``metrics.jsonl`` in ``run_dir``. Returns the env
    and the state it resumes from; ``on_report(metrics)`` follows every report."""
    ckpts = complete_checkpoints(run_dir)
    state = load_state(ckpts[-1]) if ckpts else None
    log = MetricsLog(run_dir)

    def report(metrics: dict, ckpt_dir: Path | None) -> None:
        m = {**metrics, NODE_ID: node_id}
        if ckpt_dir is not None:
            m[CHECKPOINT_PATH] = str(publish_checkpoint(ckpt_dir, run_dir, m["step"], keep_checkpoints))
        log.append(m)
        on_report(m)

    return WorkerEnv(0, 1, torch.device("cpu"), lambda: state, report, lambda model: model,
                     log_dir=str(run_dir)), state


def ray_worker_env(run_dir: str | None = None) -> WorkerEnv:
    """The env of a Ray Train worker: its rank, device, checkpoint and ``ray.train.report``; rank 0
    writes the training log into ``run_dir`` (the run's folder on the run's storage)."""
    import ray
    import ray.train
    import ray.train.torch

    ctx = ray.train.get_context()

    def latest_state():
        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            return None
        with ckpt.as_directory() as d:
            return load_state(Path(d))

    node_id = ray.get_runtime_context().get_node_id()

    def report(metrics, ckpt_dir):
        metrics = {**metrics, NODE_ID: node_id}  # where this worker ran (placement checks)
        checkpoint = ray.train.Checkpoint.from_directory(ckpt_dir) if ckpt_dir is not None else None
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=checkpoint_dir_name(metrics["step"]))

    world = ctx.get_world_size()
    device = ray.train.torch.get_device()
    wrap = ray.train.torch.prepare_model if world > 1 else (lambda m: m.to(device))
    return WorkerEnv(ctx.get_world_rank(), world, device, latest_state, report, wrap, log_dir=run_dir)
