"""The training loop of one worker (a Ray Train worker, a Tune trial process, or a benchmark).

Reads top to bottom: build data, student and optimizer; restore from the last checkpoint if the
runtime gives one; then step, and every ``eval_every`` steps validate, report and checkpoint (rank 0
writes the files, every rank reports). Dropout randomness is re-seeded from (seed, rank, step)
each step and the batch order is a function of (seed, epoch), so a restored run continues exactly.
Where it runs is ``WorkerEnv``'s business (mmi_ray/worker.py).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from . import fastdrop
from .checkpoint import restore, save_checkpoint
from .config import Config
from .data import load_splits
from .data.batching import BatchStream, collate, predict_inputs, prompts_for, tokenize
from .distill import DistillModule
from .evaluate import all_reduce, evaluate
from .layout import MACHINE, TRAIN_ROWS, TrainLog, divergence_record
from .machine import attention_kernel, autocast, bf16_native, describe, pin_numerics, uses_bf16
from .model import build_student, build_tokenizer, check_vocabulary, count_params
from .storage import is_uri
from .worker import WorkerEnv, ray_worker_env

LOSS_TERMS = ("loss", "label", "rationale", "mi", "mi_estimate")
"""The loss terms every evaluation reports, averaged over the steps since the last one."""


def step_seed(seed: int, rank: int, step: int) -> int:
    return (seed * 1_000_003 + rank * 10_007 + step) % (2**63 - 1)


def unwrap(model: torch.nn.Module) -> DistillModule:
    return model.module if hasattr(model, "module") else model


def build_optimizer(module: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    o = cfg.optim
    params = [p for p in module.parameters() if p.requires_grad]  # a LoRA student's own weights are frozen
    if o.optimizer == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    return torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)


def run_loop(cfg: Config, env: WorkerEnv) -> None:
    """The training loop of one worker."""
    for _ in iter_loop(cfg, env):
        pass


@dataclass
class _Run:
    """One worker's run, built: its data, the student (DDP-wrapped where several workers train), the
    optimizer and schedule, restored from the runtime's last checkpoint where it gives one."""

    tokenizer: Any
    train_tok: Any
    valid: list
    valid_ids: Any
    stream: BatchStream
    module: DistillModule
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    start_step: int
    train_time_s: float


def _build_run(cfg: Config, env: WorkerEnv) -> _Run:
    rank, world, device = env.rank, env.world, env.device
    # --- data: tokenised once per worker
    tokenizer = build_tokenizer(cfg.model)
    splits = load_splits(cfg.data)
    check_vocabulary(cfg, splits, "config")
    m = cfg.model
    prompts = prompts_for(m, tokenizer)
    train_tok = tokenize(splits.train.examples, prompts, m.max_source_length, m.max_target_length, cfg.data.label_type)
    valid = splits.valid.examples
    valid_ids = predict_inputs(valid, prompts, m.max_source_length)
    stream = BatchStream(train_tok, cfg.train.batch_size, cfg.train.seed, cfg.train.bucket_by_length, world, rank,
                         cfg.train.grad_accum_steps)

    # --- model, optimizer, schedule
    # student and critic initialised from the training seed alone; only this worker's own device's
    # generator is forked (Ray shares CUDA_VISIBLE_DEVICES among a node's workers: forking them all warns)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(cfg.train.seed)
        attn = attention_kernel(cfg.train.deterministic, device)
        module = DistillModule(build_student(cfg.model, tokenizer, cfg.train.seed, attn), cfg.loss)
    if device.type == "cpu" and cfg.model.fast_dropout:
        fastdrop.install(module.student)  # same dropout semantics, cheaper masks (mmi_ray/fastdrop.py)
    optimizer = build_optimizer(module, cfg)
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(optimizer, cfg.optim.warmup_steps, cfg.train.max_steps)

    model = env.wrap_model(module)  # placed first: restored optimizer state then follows its parameters
    state = env.latest_state()
    start_step = restore(state, unwrap(model), optimizer, scheduler, stream, cfg) if state is not None else 0
    if uses_bf16(cfg.train.precision, device) and not bf16_native(device) and rank == 0:
        print(f"[mmi-ray] warning: train.precision bf16 on {torch.cuda.get_device_name(device)}, which only emulates "
              "bf16 (slow): use fp32 (or auto) there", flush=True)
    if rank == 0 and start_step == 0:
        lora = (f" (LoRA r={cfg.model.lora.r}: {count_params(module.student, trained=True):,} of them trained)"
                if module.lora else "")
        print(f"[mmi-ray] student {count_params(module.student):,} params{lora}, critic "
              f"{count_params(module.estimator) if module.estimator is not None else 0:,}; "
              f"{len(train_tok)} train / {len(valid)} valid examples; "
              f"{cfg.examples_per_step()} examples per optimizer step over {world} worker(s)", flush=True)
        if splits.kept:
            print(f"[mmi-ray] {splits.kept}", flush=True)
    return _Run(tokenizer, train_tok, valid, valid_ids, stream, module, model, optimizer, scheduler, start_step,
                state["train_time_s"] if state is not None else 0.0)


class _Tally:
    """What the loop counts between reports: the loss terms (summed for the report, and for the
    training log), each micro-batch's loss (a non-finite one stops the run), examples, real tokens
    (not padding) and training time."""

    def __init__(self, device: torch.device):
        self.sums = torch.zeros(len(LOSS_TERMS), device=device)
        self.log_sums = torch.zeros(len(LOSS_TERMS), device=device)  # the training log's terms (train.log_every)
        self.log_n = 0  # steps in log_sums
        self.step_losses: list[torch.Tensor] = []
        self.since_report = self.n_examples = self.n_tokens = 0
        self.interval_time = 0.0

    def reset(self) -> None:
        self.sums.zero_()
        self.step_losses.clear()
        self.since_report = self.n_examples = self.n_tokens = 0
        self.interval_time = 0.0


def _train_step(cfg: Config, env: WorkerEnv, run: _Run, step: int, tally: _Tally, token_fields: list) -> int:
    """One optimizer step over its micro-batches (DDP's all-reduce on the last); returns how many."""
    device, model, module = env.device, run.model, run.module
    t0 = time.perf_counter()
    torch.manual_seed(step_seed(cfg.train.seed, env.rank, step))
    micro = run.stream.next_step()
    for k, idx in enumerate(micro):
        batch = {key: v.to(device, non_blocking=True) for key, v in
                 collate(run.train_tok, idx, run.tokenizer.pad_token_id, module.use_rationale).items()}
        sync = k == len(micro) - 1 or env.world == 1
        with nullcontext() if sync else model.no_sync():  # DDP: the all-reduce on the last micro-batch
            with autocast(cfg.train.precision, device):  # forward passes in bf16; the backward outside
                terms = model(batch)
            (terms.loss / len(micro)).backward()
        micro_terms = torch.stack([getattr(terms, n).detach().float() for n in LOSS_TERMS]) / len(micro)
        tally.sums += micro_terms
        tally.log_sums += micro_terms
        tally.step_losses.append(terms.loss.detach().float())
        tally.n_examples += len(idx)
        tally.n_tokens += sum(len(ids[i]) for ids in token_fields for i in idx)  # real tokens, not padding
    if cfg.optim.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad(set_to_none=True)
    env.after_step(env.rank, step + 1)
    tally.interval_time += time.perf_counter() - t0
    tally.since_report += 1
    tally.log_n += 1
    return len(micro)


def _first_bad_step(cfg: Config, tally: _Tally, done: int, n_micro: int, device: torch.device) -> int:
    """The first step since the last report whose loss was not finite on any rank (every rank
    agrees), or ``max_steps + 1``."""
    losses = torch.stack(tally.step_losses)
    bad = (~torch.isfinite(losses)).nonzero()
    first_bad = done - tally.since_report + int(bad[0]) // n_micro + 1 if len(bad) else cfg.train.max_steps + 1
    return int(all_reduce(torch.tensor(float(first_bad), device=device), dist.ReduceOp.MIN))


def _report_metrics(cfg: Config, env: WorkerEnv, run: _Run, tally: _Tally, done: int, machine: str) -> dict:
    """The evaluation record at step ``done``: loss terms averaged since the last report over every
    worker, validation figures, throughput of the interval, and the machine."""
    device, world = env.device, env.world
    if device.type == "cuda":  # the steps' queued GPU work belongs to their time, not the evaluation's
        t_sync = time.perf_counter()
        torch.cuda.synchronize(device)
        tally.interval_time += time.perf_counter() - t_sync
    avg = all_reduce(tally.sums.clone()) / (tally.since_report * world)
    t_eval = time.perf_counter()
    metrics = {n: float(v) for n, v in zip(LOSS_TERMS, avg.tolist())}
    metrics.update(evaluate(unwrap(run.model), run.tokenizer, run.valid, run.valid_ids, cfg, device, env.rank, world))
    eval_time = time.perf_counter() - t_eval
    counts = all_reduce(torch.tensor([float(tally.n_examples), float(tally.n_tokens)], device=device)).tolist()
    run.train_time_s += tally.interval_time
    metrics.update(
        step=done,
        epoch=run.stream.epoch,
        lr=run.scheduler.get_last_lr()[0],
        examples_per_s=counts[0] / max(tally.interval_time, 1e-9),
        tokens_per_s=counts[1] / max(tally.interval_time, 1e-9),
        train_time_s=run.train_time_s,
        eval_time_s=eval_time,
    )
    metrics[MACHINE] = machine
    metrics[TRAIN_ROWS] = len(run.train_tok)  # after data.rationales.keep
    if device.type == "cuda":  # this worker's peak since the run started (sizing.memory estimates it)
        metrics["gpu_peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return metrics


def iter_loop(cfg: Config, env: WorkerEnv) -> Iterator[int]:
    """The training loop of one worker, paused after each report (it yields the step reported): a
    caller that stops iterating (``close()``) stops the run there, with no training done past its
    last report. A Tune class trainable steps it, so a stopped trial never trains on (see
    ``sweep/trial.py``)."""
    rank, world, device = env.rank, env.world, env.device
    # floats depend on the config only where the project controls them; the machine is recorded
    pin_numerics(cfg.scaling.threads(), cfg.train.deterministic, device)
    machine = describe(device)
    run = _build_run(cfg, env)
    token_fields = [run.train_tok.predict_ids, run.train_tok.label_ids]
    if run.module.use_rationale:
        token_fields += [run.train_tok.explain_ids, run.train_tok.rationale_ids]
    tally = _Tally(device)
    log = TrainLog(env.log_dir, run.start_step) if rank == 0 and env.log_dir else None
    run.model.train()
    for step in range(run.start_step, cfg.train.max_steps):
        n_micro = _train_step(cfg, env, run, step, tally, token_fields)
        done = step + 1
        if done % cfg.train.log_every == 0:  # the terms averaged over the last log_every steps, every worker's
            terms_avg = (all_reduce(tally.log_sums.clone()) / (tally.log_n * world)).tolist()
            if log is not None:
                log.append({"step": done, **dict(zip(LOSS_TERMS, terms_avg)), "lr": run.scheduler.get_last_lr()[0]})
            tally.log_sums.zero_()
            tally.log_n = 0
        if done % cfg.train.eval_every and done != cfg.train.max_steps:
            continue
        # --- report: non-finite loss: every rank agrees on the first bad step, reports it once, and stops
        first_bad = _first_bad_step(cfg, tally, done, n_micro, device)
        if first_bad <= cfg.train.max_steps:
            env.report(divergence_record(done, first_bad), None)
            yield done
            return
        metrics = _report_metrics(cfg, env, run, tally, done, machine)
        with tempfile.TemporaryDirectory() as tmp:  # rank 0 writes the checkpoint; every rank reports
            if rank == 0:
                save_checkpoint(Path(tmp), unwrap(run.model), run.optimizer, run.scheduler, done, run.stream, cfg,
                                metrics)
            env.report(metrics, Path(tmp) if rank == 0 else None)
        tally.reset()
        yield done


def _drop_user_error(record) -> bool:
    return not record.getMessage().startswith("Error in training function")


def train_loop(loop_config: dict) -> None:
    """Ray Train worker entry point. ``loop_config = {"config": <Config as dict>, "ray_logs": bool,
    "run_dir": the run's folder}``."""
    import logging

    if not loop_config.get("ray_logs"):
        # Ray Train's worker logs each report at INFO through a logger named after its file, which its
        # own log_level setting misses; INFO on this worker's root logger is Ray's chatter, not ours
        logging.getLogger().setLevel(logging.WARNING)
        # the driver reports a worker's error once, in one line (its traceback goes to the run's
        # worker_error.txt), so Ray Train's own console copy of that traceback is dropped here
        for handler in logging.getLogger("ray.train").handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.addFilter(_drop_user_error)
    cfg = Config.model_validate(loop_config["config"])
    run_loop(cfg, ray_worker_env(loop_config.get("run_dir"), checkpoint_upload(cfg)))


def checkpoint_upload(cfg: Config) -> str:
    """``async`` or ``sync`` (``train.checkpoint_upload``; auto: async on a storage URI)."""
    mode = cfg.train.checkpoint_upload
    if mode == "auto":
        return "async" if is_uri(cfg.run.storage_path) else "sync"
    return mode
