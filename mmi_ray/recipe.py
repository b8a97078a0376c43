"""The per-worker training loop (runs inside each Ray Train worker).

Reads top to bottom: build data, student and optimizer; restore from the last checkpoint if Ray
gives one; then step, and every ``eval_every`` steps validate, report and checkpoint (rank 0
writes the files, every rank reports). Dropout randomness is re-seeded from (seed, rank, step)
each step and the batch order is a function of (seed, epoch), so a restored run continues exactly.
"""

from __future__ import annotations

import json
import math
import os
import signal
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from . import fastdrop
from .config import Config
from .data import load_splits
from .data.batching import BatchStream, collate, pad, predict_inputs, tokenize
from .metrics import label_correct
from .model import build_seq2seq, build_tokenizer, count_params
from .objective import DistillModule

STATE_FILE = "state.pt"
META_FILE = "meta.json"


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or infinite; the run (and its trial) ends with this reason."""


def step_seed(seed: int, rank: int, step: int) -> int:
    return (seed * 1_000_003 + rank * 10_007 + step) % (2**63 - 1)


def unwrap(model: torch.nn.Module) -> DistillModule:
    return model.module if hasattr(model, "module") else model


def _all_reduce_min(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return t


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t)
    return t


@torch.no_grad()
def evaluate(module: DistillModule, tokenizer, valid, predict_ids, cfg: Config, device, rank: int = 0, world: int = 1,
             prefix: str = "val") -> dict:
    """Greedy label generation on this worker's shard of ``valid``; counts summed over workers."""
    module.eval()
    tasks = sorted({e.task for e in valid})
    correct = torch.zeros(len(tasks) + 1, dtype=torch.float64)
    total = torch.zeros(len(tasks) + 1, dtype=torch.float64)
    mine = list(range(rank, len(valid), world))
    mine.sort(key=lambda i: len(predict_ids[i]))  # similar lengths per generation batch
    bs = cfg.train.eval_batch_size
    for start in range(0, len(mine), bs):
        idx = mine[start : start + bs]
        ids = pad([predict_ids[i] for i in idx], tokenizer.pad_token_id).to(device)
        out = module.predict_labels(ids, ids.ne(tokenizer.pad_token_id), cfg.train.max_new_tokens)
        preds = tokenizer.batch_decode(out, skip_special_tokens=True)
        for i, pred in zip(idx, preds):
            ex = valid[i]
            ok = float(label_correct(pred, ex.label, ex.kind))
            t = tasks.index(ex.task)
            correct[t] += ok
            total[t] += 1
            correct[-1] += ok
            total[-1] += 1
    counts = _all_reduce(torch.stack([correct, total]).to(device)).cpu()
    module.train()
    metrics = {f"{prefix}_accuracy": float(counts[0, -1] / counts[1, -1].clamp_min(1))}
    if len(tasks) > 1:
        for t, name in enumerate(tasks):
            metrics[f"{prefix}_accuracy_{name}"] = float(counts[0, t] / counts[1, t].clamp_min(1))
    return metrics


def save_checkpoint(path: Path, module: DistillModule, optimizer, scheduler, step: int, stream: BatchStream,
                    cfg: Config, metrics: dict) -> None:
    state = {
        "model": module.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "data_position": stream.position,
        "fingerprint": cfg.fingerprint(),
        "train_time_s": metrics.get("train_time_s", 0.0),
    }
    torch.save(state, path / STATE_FILE)
    (path / META_FILE).write_text(json.dumps({"step": step, "metrics": metrics, "config": cfg.model_dump(mode="json")}))


def load_state(path: Path) -> dict:
    return torch.load(path / STATE_FILE, map_location="cpu", weights_only=True)


@dataclass
class WorkerEnv:
    """What the loop needs from its runtime: Ray Train workers, or a plain process (benchmarks)."""

    rank: int
    world: int
    device: torch.device
    latest_state: Callable[[], dict | None]
    """The state dict of the checkpoint to resume from, or None."""
    report: Callable[[dict, Path | None], None]
    """Report metrics, with a checkpoint folder from rank 0 (None from other ranks)."""
    wrap_model: Callable[[torch.nn.Module], torch.nn.Module]
    """DDP wrapper (``ray.train.torch.prepare_model``) or a plain ``.to(device)``."""


def ray_worker_env() -> WorkerEnv:
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
        metrics = {**metrics, "node_id": node_id}  # where this worker ran (placement checks)
        checkpoint = ray.train.Checkpoint.from_directory(ckpt_dir) if ckpt_dir is not None else None
        ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=f"checkpoint_{metrics['step']:07d}")

    world = ctx.get_world_size()
    device = ray.train.torch.get_device()
    wrap = ray.train.torch.prepare_model if world > 1 else (lambda m: m.to(device))
    return WorkerEnv(ctx.get_world_rank(), world, device, latest_state, report, wrap)


def local_env(report: Callable[[dict, Path | None], None], device: str = "cpu") -> WorkerEnv:
    """A single in-process worker with no persistence (benchmarks, quick experiments)."""
    dev = torch.device(device)
    return WorkerEnv(0, 1, dev, lambda: None, report, lambda m: m.to(dev))


def _inject(fault: dict, step: int) -> None:
    """Tests only: fail once at ``step`` (the marker file makes it once across restarts)."""
    Path(fault["marker"]).write_text("fault injected")
    kind = fault.get("kind", "raise")
    if kind == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise RuntimeError(f"injected fault at step {step}")


def build_optimizer(module: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    o = cfg.optim
    if o.optimizer == "sgd":
        return torch.optim.SGD(module.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay)
    return torch.optim.AdamW(module.parameters(), lr=o.lr, weight_decay=o.weight_decay)


def train_loop(loop_config: dict) -> None:
    """Ray Train worker entry point. ``loop_config = {"config": <Config as dict>, ...}``."""
    cfg = Config.model_validate(loop_config["config"])
    run_loop(cfg, ray_worker_env(), fault=loop_config.get("_inject_fault"))


def _fault_applies(fault: dict | None, cfg: Config) -> dict | None:
    """Tests only: a fault may be limited to runs whose config matches ``when`` (dotted keys)."""
    if not fault:
        return None
    for key, value in (fault.get("when") or {}).items():
        obj = cfg
        for part in key.split("."):
            obj = getattr(obj, part)
        if obj != value:
            return None
    return fault


def run_loop(cfg: Config, env: WorkerEnv, fault: dict | None = None) -> None:
    """The training loop of one worker. ``fault`` (tests only): {"step": k, "marker": path,
    "kind": "raise" | "sigkill", "when": {dotted key: value}}."""
    fault = _fault_applies(fault, cfg)
    rank, world, device = env.rank, env.world, env.device
    torch.set_num_threads(cfg.scaling.torch_threads or max(1, math.ceil(cfg.scaling.cpus_per_worker)))

    # --- data: tokenised once per worker
    tokenizer = build_tokenizer(cfg.model)
    splits = load_splits(cfg.data)
    m = cfg.model
    train_tok = tokenize(splits.train.examples, tokenizer, m.max_source_length, m.max_target_length, cfg.data.label_type)
    valid = splits.valid.examples
    valid_ids = predict_inputs(valid, tokenizer, m.max_source_length)
    stream = BatchStream(train_tok, cfg.train.batch_size, cfg.train.seed, cfg.train.bucket_by_length, world, rank,
                         cfg.train.grad_accum_steps)

    # --- model, optimizer, schedule
    with torch.random.fork_rng():  # student and critic initialised from the training seed alone
        torch.manual_seed(cfg.train.seed)
        module = DistillModule(build_seq2seq(cfg.model, tokenizer, cfg.train.seed), cfg.loss)
    if device.type == "cpu" and cfg.model.fast_dropout:
        fastdrop.install(module.student)  # same dropout semantics, cheaper masks (mmi_ray/fastdrop.py)
    optimizer = build_optimizer(module, cfg)
    from transformers import get_linear_schedule_with_warmup

    scheduler = get_linear_schedule_with_warmup(optimizer, cfg.optim.warmup_steps, cfg.train.max_steps)

    start_step = 0
    state = env.latest_state()
    if state is not None:
        if state["fingerprint"] != cfg.fingerprint():
            raise RuntimeError("checkpoint was written by a different config; refusing to resume from it")
        module.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        stream.seek(**state["data_position"])
        start_step = state["step"]

    model = env.wrap_model(module)
    if world == 1:  # prepare_model moves optimizer-held tensors implicitly only for DDP; be explicit
        for st in optimizer.state.values():
            for k, v in st.items():
                if torch.is_tensor(v) and k != "step":
                    st[k] = v.to(device)
    use_bf16 = cfg.train.precision == "bf16" or (cfg.train.precision == "auto" and device.type == "cuda")
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 else nullcontext
    if rank == 0 and start_step == 0:
        print(f"[mmi-ray] student {count_params(module.student):,} params, critic "
              f"{count_params(module.estimator) if module.estimator is not None else 0:,}; "
              f"{len(train_tok)} train / {len(valid)} valid examples; "
              f"{cfg.examples_per_step()} examples per optimizer step over {world} worker(s)", flush=True)

    # --- the loop
    names = ("loss", "label", "rationale", "mi", "mi_estimate")
    sums = torch.zeros(len(names), device=device)
    step_losses: list[torch.Tensor] = []
    since_report = n_examples = n_tokens = 0
    interval_time = 0.0
    total_time = state["train_time_s"] if state is not None else 0.0
    model.train()
    for step in range(start_step, cfg.train.max_steps):
        t0 = time.perf_counter()
        torch.manual_seed(step_seed(cfg.train.seed, rank, step))
        micro = stream.next_step()
        for k, idx in enumerate(micro):
            batch = {key: v.to(device, non_blocking=True) for key, v in
                     collate(train_tok, idx, tokenizer.pad_token_id, module.use_rationale).items()}
            sync = k == len(micro) - 1 or world == 1
            with (nullcontext() if sync else model.no_sync()), autocast():
                terms = model(batch)
                (terms.loss / len(micro)).backward()
            sums += torch.stack([getattr(terms, n).detach().float() for n in names]) / len(micro)
            step_losses.append(terms.loss.detach().float())
            n_examples += len(idx)
            n_tokens += sum(batch[key].numel() for key in ("predict_ids", "label_ids", "explain_ids", "rationale_ids")
                            if key in batch)
        if cfg.optim.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if fault and rank == 0 and step + 1 == fault["step"] and not os.path.exists(fault["marker"]):
            _inject(fault, step + 1)
        interval_time += time.perf_counter() - t0
        since_report += 1

        done = step + 1
        if done % cfg.train.eval_every and done != cfg.train.max_steps:
            continue
        # --- report: loss terms averaged since the last report, validation, checkpoint
        # non-finite loss: every rank agrees on the first bad step, reports it once, and stops
        losses = torch.stack(step_losses)
        bad = (~torch.isfinite(losses)).nonzero()
        first_bad = done - since_report + int(bad[0]) // len(micro) + 1 if len(bad) else cfg.train.max_steps + 1
        first_bad = int(_all_reduce_min(torch.tensor(float(first_bad), device=device)))
        if first_bad <= cfg.train.max_steps:
            env.report({"step": done, "non_finite_step": first_bad, "error": f"non-finite loss at step {first_bad}"},
                       None)
            return
        avg = _all_reduce(sums.clone()) / (since_report * world)
        t_eval = time.perf_counter()
        metrics = {n: float(v) for n, v in zip(names, avg.tolist())}
        metrics.update(evaluate(unwrap(model), tokenizer, valid, valid_ids, cfg, device, rank, world))
        eval_time = time.perf_counter() - t_eval
        counts = _all_reduce(torch.tensor([float(n_examples), float(n_tokens)], device=device)).tolist()
        total_time += interval_time
        metrics.update(
            step=done,
            epoch=stream.epoch,
            lr=scheduler.get_last_lr()[0],
            examples_per_s=counts[0] / max(interval_time, 1e-9),
            tokens_per_s=counts[1] / max(interval_time, 1e-9),
            train_time_s=total_time,
            eval_time_s=eval_time,
        )
        with tempfile.TemporaryDirectory() as tmp:
            if rank == 0:
                save_checkpoint(Path(tmp), unwrap(model), optimizer, scheduler, done, stream, cfg, metrics)
            env.report(metrics, Path(tmp) if rank == 0 else None)
        sums.zero_()
        step_losses.clear()
        since_report = n_examples = n_tokens = 0
        interval_time = 0.0
