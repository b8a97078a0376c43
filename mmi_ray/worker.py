"""The runtime seam of the training loop: what one worker needs from where it runs.

``WorkerEnv`` is built in one of three ways, and the loop (``recipe.run_loop``) never knows which:
``ray_worker_env`` inside a Ray Train worker (``recipe.train_loop`` is the worker entry point),
``in_process_env`` inside a Tune trial process (one seed, one CPU worker: same run folder, metrics
writer and checkpoint rotation as a Ray Train run), and ``local_env`` for benchmarks.
"""

from __future__ import annotations

import shutil
import tempfile
import time
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
    store_checkpoint,
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


CHECKPOINT_TIME = "checkpoint_write_s"
"""In a run's records: seconds training waited on checkpoints before this record (their writes and
uploads in a trial process; rank 0's ``ray.train.report`` calls with a checkpoint in a Ray Train run)."""
METRICS_WRITE_TIME = "metrics_write_s"
"""In a run's records (in-process trials): seconds spent writing ``metrics.jsonl`` before this record."""


def in_process_env(run_dir: str, keep_checkpoints: int, node_id: str,
                   on_report: Callable[[dict], None]) -> tuple[WorkerEnv, dict | None]:
    """One CPU worker in this process, persisting like a Ray Train run: ``checkpoint_<step>``
    folders (the newest ``keep_checkpoints``) and ``metrics.jsonl`` in ``run_dir`` (a local folder or a storage URI). Returns the env
    and the state it resumes from; ``on_report(metrics)`` follows every report."""
    ckpts = complete_checkpoints(run_dir)
    state = load_state(ckpts[-1]) if ckpts else None
    log = MetricsLog(run_dir)
    spent = {CHECKPOINT_TIME: 0.0, METRICS_WRITE_TIME: 0.0}  # this attempt's, up to each report

    def report(metrics: dict, ckpt_dir: Path | None) -> None:
        m = {**metrics, NODE_ID: node_id}
        if ckpt_dir is not None:
            t0 = time.perf_counter()
            m[CHECKPOINT_PATH] = store_checkpoint(ckpt_dir, run_dir, m["step"], keep_checkpoints)
            spent[CHECKPOINT_TIME] += time.perf_counter() - t0
        t0 = time.perf_counter()
        log.append({**m, **spent})  # the writes before this one (its own is timed into the next)
        spent[METRICS_WRITE_TIME] += time.perf_counter() - t0
        on_report(m)

    return WorkerEnv(0, 1, torch.device("cpu"), lambda: state, report, lambda model: model,
                     log_dir=str(run_dir)), state


def ray_worker_env(run_dir: str | None = None, upload: str = "sync") -> WorkerEnv:
    """The env of a Ray Train worker: its rank, device, checkpoint and ``ray.train.report``; rank 0
    writes the training log into ``run_dir`` (the run's folder on the run's storage). ``upload``
    ``async``: a checkpoint's files move to a folder of their own, which Ray uploads while training
    goes on and deletes after (``CheckpointUploadMode.ASYNC``)."""
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

    waited = [0.0]  # seconds this worker spent in reports with a checkpoint, before this one

    def report(metrics, ckpt_dir):
        # where this worker ran (placement checks); how long checkpoints held it up so far
        metrics = {**metrics, NODE_ID: node_id, CHECKPOINT_TIME: waited[0]}
        t0 = time.perf_counter()
        mode = ray.train.CheckpointUploadMode.ASYNC if upload == "async" else ray.train.CheckpointUploadMode.SYNC
        if ckpt_dir is not None and upload == "async":  # the loop deletes its folder when this returns
            staged = Path(tempfile.mkdtemp(prefix="mmi-checkpoint-"))
            for f in Path(ckpt_dir).iterdir():
                shutil.move(f, staged / f.name)  # a rename on one disk: nothing copied
            ckpt_dir = staged
        checkpoint = ray.train.Checkpoint.from_directory(ckpt_dir) if ckpt_dir is not None else None
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=checkpoint_dir_name(metrics["step"]),
                         checkpoint_upload_mode=mode)
        if ckpt_dir is not None:
            waited[0] += time.perf_counter() - t0

    world = ctx.get_world_size()
    device = ray.train.torch.get_device()
    wrap = ray.train.torch.prepare_model if world > 1 else (lambda m: m.to(device))
    return WorkerEnv(ctx.get_world_rank(), world, device, latest_state, report, wrap, log_dir=run_dir)
