"""Evaluate a saved checkpoint on a split (the test split only for final reports)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .config import Config
from .data import load_splits
from .data.batching import predict_inputs
from .model import build_seq2seq, build_tokenizer
from .objective import DistillModule
from .recipe import META_FILE, evaluate, load_state


def evaluate_checkpoint(checkpoint_dir: str | Path, split: str = "test", device: str = "cpu") -> dict:
    """Accuracy (and per-task accuracy) of a checkpoint's student on ``split``."""
    d = Path(checkpoint_dir)
    cfg = Config.model_validate(json.loads((d / META_FILE).read_text())["config"])
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
