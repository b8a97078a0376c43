"""Validation and test evaluation: greedy label generation scored against the gold labels.

``evaluate`` runs inside the training loop (each worker scores its shard; counts are summed over
workers); ``evaluate_checkpoint`` scores a saved student on a split (test only for final reports).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from .checkpoint import load_config, load_state
from .config import Config
from .data import load_splits
from .data.batching import pad, predict_inputs
from .metrics import label_correct
from .model import build_seq2seq, build_tokenizer
from .objective import DistillModule


def all_reduce(t: torch.Tensor, op=None) -> torch.Tensor:
    """Sum (or ``op``) over the workers of a run; unchanged with one worker."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t


@torch.no_grad()
def evaluate(module: DistillModule, tokenizer, examples, predict_ids, cfg: Config, device, rank: int = 0,
             world: int = 1, prefix: str = "val") -> dict:
    """Accuracy (overall and per task family) of greedy label generation on this worker's shard of
    ``examples``; counts are summed over workers, so every rank returns the same figures."""
    module.eval()
    tasks = sorted({e.task for e in examples})
    correct = torch.zeros(len(tasks) + 1, dtype=torch.float64)
    total = torch.zeros(len(tasks) + 1, dtype=torch.float64)
    mine = list(range(rank, len(examples), world))
    mine.sort(key=lambda i: len(predict_ids[i]))  # similar lengths per generation batch
    bs = cfg.train.eval_batch_size
    for start in range(0, len(mine), bs):
        idx = mine[start : start + bs]
        ids = pad([predict_ids[i] for i in idx], tokenizer.pad_token_id).to(device)
        out = module.predict_labels(ids, ids.ne(tokenizer.pad_token_id), cfg.train.max_new_tokens)
        preds = tokenizer.batch_decode(out, skip_special_tokens=True)
        for i, pred in zip(idx, preds):
            ex = examples[i]
            ok = float(label_correct(pred, ex.label, ex.kind))
            t = tasks.index(ex.task)
            correct[t] += ok
            total[t] += 1
            correct[-1] += ok
            total[-1] += 1
    counts = all_reduce(torch.stack([correct, total]).to(device)).cpu()
    module.train()
    metrics = {f"{prefix}_accuracy": float(counts[0, -1] / counts[1, -1].clamp_min(1))}
    if len(tasks) > 1:
        for t, name in enumerate(tasks):
            metrics[f"{prefix}_accuracy_{name}"] = float(counts[0, t] / counts[1, t].clamp_min(1))
    return metrics


def evaluate_checkpoint(checkpoint_dir: str | Path, split: str = "test", device: str = "cpu") -> dict:
    """Accuracy (and per-task accuracy) of a checkpoint's student on ``split``."""
    d = Path(checkpoint_dir)
    cfg = load_config(d)
    tokenizer = build_tokenizer(cfg.model)
    module = DistillModule(build_seq2seq(cfg.model, tokenizer, cfg.train.seed), cfg.loss)
    module.load_state_dict(load_state(d)["model"])
    splits = load_splits(cfg.data)
    data = {"valid": splits.valid, "test": splits.test, "train": splits.train}[split]
    if data is None:
        raise ValueError(f"dataset '{cfg.data.dataset}' has no {split} split")
    ids = predict_inputs(data.examples, tokenizer, cfg.model.max_source_length)
    dev = torch.device(device)
    return evaluate(module.to(dev), tokenizer, data.examples, ids, cfg, dev, prefix=split)
