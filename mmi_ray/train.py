"""Build and fit the Ray Train ``TorchTrainer`` for one training config (``mmi-ray train``).

A run folder ``<storage_path>/<run name>/`` holds Ray's ``checkpoint_*`` folders plus our
``config.yaml``, ``metrics.jsonl`` and, when the run finished, ``summary.json`` (names and
readers in mmi_ray/layout.py). A default run name cannot collide with another run's.
"""

from __future__ import annotations

import json
import math
import os
import uuid

from . import capacity
from .config import Config
from .errors import (
    ConfigError,
    NonFiniteLossError,
    StorageError,
    WorkerFailedError,
    describe_worker_failures,
)
from .layout import (
    CHECKPOINT_PATH,
    CONFIG_FILE,
    RUN_SUMMARY_FILE,
    WORKER_ERROR_FILE,
    MetricsLog,
    is_divergence,
    read_metrics,
)
from .ray_init import init_ray
from .storage import basename, ensure_writable, exists, join, read_text, resolve_storage, write_text

PROPAGATED_ENV_PREFIX = "MMI_RAY_"
"""mmi-ray's own settings (``MMI_RAY_*``) set where a run is launched reach its Train workers."""


def default_run_name(cfg: Config) -> str:
    return f"{cfg.data.dataset}-{cfg.fingerprint()}-{uuid.uuid4().hex[:6]}"


def format_metrics_line(m: dict) -> str:
    if is_divergence(m):
        return f"step {m['step']:>6} | {m['error']}: run stopped"
    parts = [f"step {m['step']:>6}", f"loss {m['loss']:.4f}", f"label {m['label']:.4f}",
             f"rationale {m['rationale']:.4f}", f"mi {m['mi']:.4f}"]
    if m.get("mi_estimate") == m.get("mi_estimate"):  # not NaN
        parts.append(f"mi_est {m['mi_estimate']:.3f} nats")
    parts += [f"val_acc {100 * m['val_accuracy']:.2f}%", f"{m['examples_per_s']:.1f} ex/s"]
    return " | ".join(parts)


def metrics_callback(run_dir: str, verbose: bool):
    """A Train callback, run on the controller, that appends rank 0's metrics of each report to
    the run's ``metrics.jsonl`` (and prints them when ``verbose``)."""
    from ray.train import UserCallback

    class MetricsFile(UserCallback):
        def __init__(self):
            self.log = MetricsLog(run_dir)

        def after_report(self, run_context, metrics, checkpoint):
            m = dict(metrics[0])
            if checkpoint is not None:
                m[CHECKPOINT_PATH] = checkpoint_location(run_dir, checkpoint)
            self.log.append(m)
            if verbose:
                print(f"[mmi-ray] {format_metrics_line(m)}", flush=True)

    return MetricsFile()


def checkpoint_location(run_dir: str, checkpoint) -> str:
    """Where a Ray Train checkpoint is, as mmi-ray names places: a local path, or the full URI
    (Ray's ``Checkpoint.path`` drops the scheme on s3:// and gs://)."""
    return join(run_dir, basename(checkpoint.path))


def _single_worker_config():
    """One worker: ``TorchTrainer``'s per-worker device set-up, but no torch process group, which
    one worker does not use: no rendezvous at start-up and no TCPStore listening on every interface."""
    from ray.train.backend import Backend
    from ray.train.torch import TorchConfig

    class NoProcessGroup(TorchConfig):
        @property
        def backend_cls(self):
            return Backend

    return NoProcessGroup()


def build_trainer(cfg: Config, run_name: str, storage_path: str, callbacks=None, ray_logs: bool = False,
                  loop=None):
    """The Ray Train ``TorchTrainer`` for one config: workers, backend, checkpoints, failure policy.
    Several workers train with DDP over a gloo (CPU) or NCCL (GPU) process group. Ray Train's own
    per-report INFO lines are shown only with ``ray_logs`` (``--verbose``); warnings always.
    ``loop`` replaces the training loop (``recipe.train_loop``), for checks of placement alone."""
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from .recipe import train_loop

    s = cfg.scaling
    resources = {"CPU": s.cpus_per_worker, **s.worker_resources}
    if s.use_gpu:
        resources["GPU"] = s.gpu_share()  # a share below 1: several workers (trials) on one GPU
    backend = TorchConfig(backend="nccl" if s.use_gpu else "gloo") if s.num_workers > 1 else _single_worker_config()
    env_vars = {k: v for k, v in os.environ.items() if k.startswith(PROPAGATED_ENV_PREFIX)}
    return TorchTrainer(
        loop or train_loop,
        train_loop_config={"config": cfg.model_dump(mode="json"), "ray_logs": ray_logs,
                           "run_dir": join(storage_path, run_name)},
        torch_config=backend,
        scaling_config=ScalingConfig(num_workers=s.num_workers, use_gpu=s.use_gpu, resources_per_worker=resources),
        run_config=RunConfig(
            name=run_name,
            storage_path=storage_path,
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.train.keep_checkpoints),
            # a finite controller limit: a leaked placement group ends in an error, not an endless wait
            failure_config=FailureConfig(max_failures=cfg.run.max_failures, controller_failure_limit=3),
            callbacks=callbacks or [],
            worker_runtime_env={"env_vars": env_vars} if env_vars else None,
            logging_config=LoggingConfig(log_level="INFO" if ray_logs else "WARNING"),
        ),
    )


def prepare_run(cfg: Config, source: str) -> tuple[str, str, bool]:
    """(storage, run name, resuming). Refuses to touch a finished run or one with another config;
    writes nothing (``write_run_config`` does, once the cluster can hold the run)."""
    storage = resolve_storage(cfg.run.storage_path)
    try:
        ensure_writable(storage)
    except StorageError as e:
        raise ConfigError(source, f"run.storage_path: {e}") from None
    name = cfg.run.name or default_run_name(cfg)
    run_dir = join(storage, name)
    resuming = False
    if exists(join(run_dir, RUN_SUMMARY_FILE)):
        raise ConfigError(source, f"run.name: run '{name}' already finished in {storage}; choose another name")
    if exists(join(run_dir, CONFIG_FILE)):
        old = Config.from_yaml(read_text(join(run_dir, CONFIG_FILE)))
        if old.fingerprint() != cfg.fingerprint():
            raise ConfigError(source, f"run.name: run '{name}' exists with a different config; choose another name")
        resuming = True
    return storage, name, resuming


def write_run_config(cfg: Config, run_dir: str, name: str) -> None:
    """The resolved config, with its run name, as the run folder's ``config.yaml``."""
    if not exists(join(run_dir, CONFIG_FILE)):
        write_text(join(run_dir, CONFIG_FILE), cfg.model_copy(update={
            "run": cfg.run.model_copy(update={"name": name})}).to_yaml())


def _summary(run_dir: str, lines: list[dict]) -> dict:
    best = max(lines, key=lambda m: m["val_accuracy"])
    final = lines[-1]
    return {"run_dir": run_dir, "final": final, "best_val_accuracy": best["val_accuracy"], "best_step": best["step"],
            "checkpoint": final.get(CHECKPOINT_PATH)}


def run_training(cfg: Config, source: str = "config", verbose: bool = True, ray_logs: bool = False,
                 rerun: bool = False) -> dict:
    """Fit one run; returns its summary (also written to ``summary.json``). A run whose identity
    (config, data, code: mmi_ray/reuse.py) finished before under the same storage root is adopted,
    not trained, unless ``rerun``."""
    from . import reuse

    storage, name, resuming = prepare_run(cfg, source)
    run_dir = join(storage, name)
    root = reuse.index_root(storage, not rerun)
    note = None if resuming else reuse.adopt(cfg, run_dir, root, allow_partial=False)
    if note is not None:
        write_run_config(cfg, run_dir, name)
        summary = {**_summary(run_dir, read_metrics(run_dir)), "reused_from": note["from"]}
        write_text(join(run_dir, RUN_SUMMARY_FILE), json.dumps(summary, indent=2))
        if verbose:
            print(f"[mmi-ray] reused the finished run {note['from']} (same config, data and code): nothing trained; "
                  "--rerun trains it again", flush=True)
        return summary
    init_ray(num_cpus=_local_cpus(cfg), log_to_driver=verbose)
    capacity.check(cfg.scaling, cfg.scaling.num_workers, "scaling", source, f"{cfg.scaling.num_workers} worker(s)")
    write_run_config(cfg, run_dir, name)
    if verbose:
        print(f"[mmi-ray] run {'resumed' if resuming else 'started'}: {run_dir}", flush=True)
        print(f"[mmi-ray] {cfg.scaling.num_workers} worker(s) x {cfg.train.batch_size} examples x "
              f"{cfg.train.grad_accum_steps} accumulation = {cfg.examples_per_step()} examples per step", flush=True)
    trainer = build_trainer(cfg, name, storage, callbacks=[metrics_callback(run_dir, verbose)], ray_logs=ray_logs)
    try:
        result = trainer.fit()
    except Exception as e:
        described = describe_worker_failures(e)
        if described is None:
            raise
        line, text = described
        write_text(join(run_dir, WORKER_ERROR_FILE), text + "\n")
        raise WorkerFailedError(f"{line} (tracebacks: {join(run_dir, WORKER_ERROR_FILE)})") from None
    lines = read_metrics(run_dir)
    if lines and is_divergence(lines[-1]):
        raise NonFiniteLossError(f"{run_dir}: {lines[-1]['error']}")
    summary = {**_summary(run_dir, lines), "final": result.metrics,
               "checkpoint": result.checkpoint.path if result.checkpoint else None}
    write_text(join(run_dir, RUN_SUMMARY_FILE), json.dumps(summary, indent=2))
    reuse.register(run_dir, root)
    return summary


def _local_cpus(cfg: Config) -> int:
    """When this process starts Ray itself, enough logical CPUs for the workers (which may exceed
    the physical cores on a small machine)."""
    need = cfg.scaling.num_workers * cfg.scaling.cpus_per_worker
    return max(os.cpu_count() or 1, math.ceil(need))
