"""``mmi-ray evaluate``: a student scored on a dataset split through the trainer's own evaluation."""

from __future__ import annotations

import json
from pathlib import Path

from ..layout import MODEL_SOURCES


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="score a student on a dataset split, as training's evaluation does")
    p.add_argument("model", help=MODEL_SOURCES)
    p.add_argument("--data", default=None, help="a training config YAML whose data section names the dataset "
                   "(default: the run's own)")
    p.add_argument("--split", default="test", choices=["train", "valid", "test"], help="the split to score (default: test)")
    p.add_argument("--rationales", type=int, default=0, help="also generate and score N rationales (BLEU, ROUGE-L, "
                   "faithfulness)")
    p.add_argument("--out", default=None, help="write per-example predictions (JSONL) here")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: a GPU when there is one)")
    p.set_defaults(fn=run)


def run(args) -> int:
    m = evaluate_model(args.model, args.data, args.split, args.rationales, args.out, args.device)
    s = args.split
    print(f"{s} accuracy {100 * m[f'{s}_accuracy']:.1f}% [{100 * m[f'{s}_accuracy_low']:.1f}, "
          f"{100 * m[f'{s}_accuracy_high']:.1f}] (95% Wilson, n={m[f'{s}_n']} questions)")
    print(f"{s} ECE {m[f'{s}_ece']:.3f} (100 equal-mass bins), {m[f'{s}_ece15']:.3f} (15 bins)")
    if args.rationales:
        print(f"rationales (n={m[f'{s}_rationale_n']}): BLEU {m[f'{s}_rationale_bleu']:.1f}, ROUGE-L "
              f"{m[f'{s}_rationale_rougeL']:.2f}, faithful {100 * m[f'{s}_rationale_faithful']:.1f}%")
    if args.out:
        print(f"per-example predictions: {args.out}")
    return 0


def evaluate_model(model_path: str, data: str | None, split: str, rationales: int, out: str | None,
                   device: str | None) -> dict:
    """Accuracy with its Wilson interval and n, ECE, and with ``rationales`` the rationale scores,
    through the trainer's own ``evaluate``; per-example predictions to ``out``."""
    import torch

    from ..config import load_config
    from ..data import load_splits
    from ..data.batching import predict_inputs
    from ..errors import DataError
    from ..evaluate import evaluate
    from ..export import as_module, load_model
    from ..results.stats import wilson_interval

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    loaded = load_model(model_path, str(dev))
    model, tokenizer = loaded.model, loaded.tokenizer
    if data is not None:
        cfg = load_config(data)
    elif loaded.cfg is None:
        raise DataError(f"{model_path}: an exported folder carries no data config; give --data CONFIG.yaml")
    else:
        cfg = loaded.cfg
    cfg = cfg.model_copy(update={"train": cfg.train.model_copy(update={"eval_rationales": rationales,
                                                                      "max_new_tokens": loaded.max_new_tokens}),
                                 "model": cfg.model.model_copy(update={"chat_template": loaded.chat_template})})
    splits = load_splits(cfg.data)
    part = {"valid": splits.valid, "test": splits.test, "train": splits.train}[split]
    if part is None or not part.examples:
        raise DataError(f"{data or model_path}: data: the {split} split is empty")
    ids = predict_inputs(part.examples, loaded.prompts, cfg.model.max_source_length)
    records: list[dict] = []
    metrics = evaluate(as_module(model).to(dev), tokenizer, part.examples, ids, cfg, dev, prefix=split,
                       records=records)
    n = metrics[f"{split}_n"]
    lo, hi = wilson_interval(metrics[f"{split}_accuracy"] * n, n)
    metrics[f"{split}_accuracy_low"], metrics[f"{split}_accuracy_high"] = lo, hi
    if out:
        Path(out).write_text("".join(json.dumps(r) + "\n" for r in records))
    return metrics
