"""Validation and test evaluation: greedy label generation scored against the gold labels.

``evaluate`` runs inside the training loop (each worker scores its shard; counts are summed over
workers); ``evaluate_checkpoint`` scores a saved student on a split (test only for final reports).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist

from .checkpoint import load_module
from .config import Config
from .data import load_splits
from .data.batching import Prompts, padded, predict_inputs, prompts_for
from .distill import DistillModule
from .machine import autocast
from .metrics import ece_equal_mass, ece_equal_width, label_correct


def all_reduce(t: torch.Tensor, op=None) -> torch.Tensor:
    """Sum (or ``op``) over the workers of a run; unchanged with one worker."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t


def gather(items: list) -> list:
    """Every worker's list, concatenated in rank order (unchanged with one worker)."""
    if dist.is_available() and dist.is_initialized():
        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, items)
        return [x for part in out for x in part]
    return items


@torch.no_grad()
def evaluate(module: DistillModule, tokenizer, examples, predict_ids, cfg: Config, device, rank: int = 0,
             world: int = 1, prefix: str = "val", records: list | None = None) -> dict:
    """Accuracy (overall and per task family) of greedy label generation on this worker's shard of
    ``examples``, and its calibration: ECE of the first decoder step's largest softmax probability,
    as the MI paper's code bins it (``_ece``: 100 equal-mass bins) and the usual way (``_ece15``: 15
    equal-width bins). Counts and scores are gathered over workers: every rank returns the same.
    ``records``, when given, receives one dict per example: input, gold, prediction, correct, confidence.
    Generation runs in the training precision (``train.precision``: bf16 autocast where training used it)."""
    with autocast(cfg.train.precision, torch.device(device)):
        return _evaluate(module, tokenizer, examples, predict_ids, cfg, device, rank, world, prefix, records)


def _evaluate(module: DistillModule, tokenizer, examples, predict_ids, cfg: Config, device, rank: int, world: int,
              prefix: str, records: list | None) -> dict:
    module.eval()
    tasks = sorted({e.task for e in examples})
    correct = torch.zeros(len(tasks) + 1, dtype=torch.float64)
    total = torch.zeros(len(tasks) + 1, dtype=torch.float64)
    mine = list(range(rank, len(examples), world))
    mine.sort(key=lambda i: len(predict_ids[i]))  # similar lengths per generation batch
    bs = cfg.train.eval_batch_size
    scored = []  # (confidence, prediction, gold, correct) per example of this worker
    predicted: dict[int, str] = {}
    for start in range(0, len(mine), bs):
        idx = mine[start : start + bs]
        ids, mask = padded([predict_ids[i] for i in idx], tokenizer.pad_token_id)
        out, conf = module.predict_labels(ids.to(device), mask.to(device), cfg.train.max_new_tokens)
        preds = tokenizer.batch_decode(out, skip_special_tokens=True)
        for i, pred, c in zip(idx, preds, conf.tolist()):
            ex = examples[i]
            ok = float(label_correct(pred, ex.label, ex.kind, ex.input))
            pred = pred.strip()
            scored.append((c, pred, ex.label, bool(ok)))
            predicted[i] = pred
            if records is not None:
                records.append({"index": i, "input": ex.input, "gold": ex.label, "prediction": pred,
                                "correct": bool(ok), "confidence": c})
            t = tasks.index(ex.task)
            correct[t] += ok
            total[t] += 1
            correct[-1] += ok
            total[-1] += 1
    counts = all_reduce(torch.stack([correct, total]).to(device)).cpu()
    scored = gather(scored)
    if records is not None:
        records[:] = sorted(gather(records), key=lambda r: r["index"])
    rationale_metrics = _rationales(module, tokenizer, examples, predicted, cfg, device, rank, world, prefix)
    module.train()
    conf, preds, golds, ok = zip(*scored) if scored else ((), (), (), ())
    metrics = {f"{prefix}_accuracy": float(counts[0, -1] / counts[1, -1].clamp_min(1)), f"{prefix}_n": int(counts[1, -1]),
               f"{prefix}_ece": ece_equal_mass(conf, ok, preds, golds), f"{prefix}_ece15": ece_equal_width(conf, ok),
               **rationale_metrics}
    if len(tasks) > 1:
        for t, name in enumerate(tasks):
            metrics[f"{prefix}_accuracy_{name}"] = float(counts[0, t] / counts[1, t].clamp_min(1))
    return metrics


def _rationales(module: DistillModule, tokenizer, examples, predicted: dict[int, str], cfg: Config, device,
                rank: int, world: int, prefix: str) -> dict:
    """``train.eval_rationales`` > 0: the first N examples' ``explain:`` generations (this worker's
    share of them), scored once gathered (see ``rationale_eval``); their cost in ``_rationale_s``."""
    n = min(cfg.train.eval_rationales, len(examples))
    if n == 0:
        return {}
    import time

    from .data.batching import RATIONALE_PREFIX
    from .rationale_eval import score_rationales

    t0 = time.perf_counter()
    mine = [i for i in range(rank, n, world) if i in predicted]
    records = []
    bs = cfg.train.eval_batch_size
    explain_ids = Prompts(tokenizer, module.causal, cfg.model.chat_template).inputs(
        RATIONALE_PREFIX, [examples[i].input for i in mine], cfg.model.max_source_length)
    for start in range(0, len(mine), bs):
        idx = mine[start:start + bs]
        ids, mask = padded(explain_ids[start:start + bs], tokenizer.pad_token_id)
        out = module.generate(ids.to(device), mask.to(device), cfg.train.max_rationale_tokens)
        for i, text in zip(idx, tokenizer.batch_decode(out, skip_special_tokens=True)):
            ex = examples[i]
            records.append((text.strip(), ex.rationale, predicted[i], ex.label, ex.kind, ex.task, ex.input))
    records = gather(records)
    scores = score_rationales(records)
    seconds = all_reduce(torch.tensor([time.perf_counter() - t0], dtype=torch.float64, device=device),
                         op=dist.ReduceOp.MAX if dist.is_available() and dist.is_initialized() else None).item()
    return {**{f"{prefix}_rationale_{k}": v for k, v in scores.items()}, f"{prefix}_rationale_n": len(records),
            f"{prefix}_rationale_s": seconds}


def evaluate_checkpoint(checkpoint_dir: str | Path, split: str = "test", device: str = "cpu") -> dict:
    """Accuracy (and per-task accuracy) of a checkpoint's student on ``split``."""
    module, tokenizer, cfg = load_module(checkpoint_dir)
    splits = load_splits(cfg.data)
    data = {"valid": splits.valid, "test": splits.test, "train": splits.train}[split]
    if data is None:
        raise ValueError(f"dataset '{cfg.data.dataset}' has no {split} split")
    ids = predict_inputs(data.examples, prompts_for(cfg.model, tokenizer), cfg.model.max_source_length)
    dev = torch.device(device)
    return evaluate(module.to(dev), tokenizer, data.examples, ids, cfg, dev, prefix=split)
