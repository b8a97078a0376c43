"""Training throughput: mmi-ray's loop against a reference-style loop.

    python benchmarks/reference_loop.py [--steps 60] [--repeats 3] [--data-dir ../shared/data/dss/datasets]
                                        [--student seq2seq|causal] [--out BENCHMARKS.md]

The reference is written the way the DSS/MI reference code trains: an HF ``Seq2SeqTrainer`` subclass
whose ``compute_loss`` runs the label task and the rationale task as two separately padded passes,
a collator that pads each task with ``DataCollatorForSeq2Seq``, random shuffling (no length
bucketing), and the released max-pool MI term when it is on. mmi-ray's side is ``recipe.run_loop``
itself (one process, no Ray), with its length-bucketed two-task batches.

``--student causal``: the tiny decoder-only (Llama-shaped) student; the reference is a plain HF
``Trainer`` whose rows are prompt + continuation with the prompt's labels at -100 (the usual causal-LM
fine-tuning layout: right padding, the model's own shifted loss over the full ``[B, T, V]`` logits), and
its max-pool MI term reads the continuation positions, gathered from each row's prompt length (the
positions mmi-ray's term reads).

Same semantics on both sides: the same randomly initialised student (``build_seq2seq`` with the same
seed: tiny T5-v1.1 style, gated-gelu, dropout 0.1, ByT5 byte tokenizer), the same CQA training
examples and truncation, batch size, AdamW lr and schedule, gradient clipping, loss weights and MI
term. Throughput is examples/s over steps ``warmup+1 .. steps`` (evaluation excluded). The sides
run in interleaved rounds (``--repeats``, at least 5; order shuffled each round), a ratio is
mmi-ray's over the reference's in the same round, printed as the median over rounds with the min and
max; tokens/s counts the real (non-pad) tokens of the batches each side ran, both tasks' inputs and
targets.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_out import report_figures, spread

from mmi_ray.config import Config, load_config
from mmi_ray.data import load_splits
from mmi_ray.data.batching import Prompts, tokenize
from mmi_ray.losses import maxpool_ce
from mmi_ray.model import build_seq2seq, build_student, build_tokenizer
from mmi_ray.recipe import run_loop
from mmi_ray.worker import local_env

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "dss" / "datasets"
STUDENT = ["model.name=tiny", "model.d_model=64", "model.num_layers=2", "model.num_heads=4", "model.d_ff=256",
           "model.dropout=0.1", "model.abs_positions=false", "model.max_source_length=512",
           "model.max_target_length=256"]


def bench_config(args, mi: bool) -> Config:
    data = (["data.dataset=builtin"] if args.data_dir is None else
            ["data.dataset=cqa", "data.source=local", f"data.data_dir={args.data_dir}"])
    kind = [f"model.kind={args.student}"] if args.student == "causal" else []
    return load_config(REPO / "configs" / "cqa_t5_base.yaml", [
        *STUDENT, *kind, *data, "data.max_eval_examples=8", f"train.batch_size={args.batch}",
        f"train.max_steps={args.steps}", f"train.eval_every={args.warmup}", "train.eval_batch_size=8",
        "train.max_new_tokens=4", "optim.lr=1e-3", "optim.warmup_steps=0", "scaling.use_gpu=false",
        "scaling.cpus_per_worker=1", f"scaling.torch_threads={args.threads}",
        f"loss.mi_weight={0.1 if mi else 0.0}", "loss.mi_estimator=maxpool"])


def ours(cfg: Config, warmup: int) -> tuple[float, float]:
    """(examples/s, tokens/s) of run_loop after ``warmup`` steps, from its own in-loop timers and
    counts (tokens: non-pad tokens of the batches run)."""
    reports: list[dict] = []
    run_loop(cfg, local_env(lambda m, _c: reports.append(m)))
    after = [m for m in reports if m["step"] > warmup]
    if not after:
        raise RuntimeError("no report after the warm-up steps: use --steps > --warmup")
    examples = (cfg.train.max_steps - warmup) * cfg.train.batch_size
    seconds = after[-1]["train_time_s"] - reports[0]["train_time_s"]
    prev = [reports[0], *after[:-1]]
    tokens = sum(m["tokens_per_s"] * (m["train_time_s"] - p["train_time_s"]) for m, p in zip(after, prev))
    return examples / seconds, tokens / seconds


def reference(cfg: Config, warmup: int) -> tuple[float, float]:
    """(examples/s, tokens/s) of the reference-style Seq2SeqTrainer loop after ``warmup`` steps
    (tokens: non-pad tokens of the batches its collator built, one batch per step)."""
    from transformers import (
        DataCollatorForSeq2Seq,
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
    )

    torch.set_num_threads(cfg.scaling.torch_threads or 1)
    tok = build_tokenizer(cfg.model)
    examples = load_splits(cfg.data).train.examples
    t = tokenize(examples, Prompts(tok), cfg.model.max_source_length, cfg.model.max_target_length)
    rows = [{"pred_ids": t.predict_ids[i], "expl_ids": t.explain_ids[i], "labels": t.label_ids[i],
             "aux_labels": t.rationale_ids[i]} for i in range(len(t))]
    with torch.random.fork_rng():
        torch.manual_seed(cfg.train.seed)
        model = build_seq2seq(cfg.model, tok, cfg.train.seed)
    mi_weight, alpha = cfg.loss.mi_weight, cfg.loss.label_weight

    batch_tokens: list[int] = []

    class TaskPrefixDataCollator(DataCollatorForSeq2Seq):
        def __call__(self, features, return_tensors=None):
            batch_tokens.append(sum(len(f[k]) for f in features for k in ("pred_ids", "expl_ids", "labels", "aux_labels")))
            pred = [{"input_ids": f["pred_ids"], "attention_mask": [1] * len(f["pred_ids"]), "labels": f["labels"]}
                    for f in features]
            expl = [{"input_ids": f["expl_ids"], "attention_mask": [1] * len(f["expl_ids"]),
                     "labels": f["aux_labels"]} for f in features]
            return {"pred": super().__call__(pred, return_tensors), "expl": super().__call__(expl, return_tensors)}

    class TaskPrefixTrainer(Seq2SeqTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            pred_out = model(**inputs["pred"])
            expl_out = model(**inputs["expl"])
            loss = alpha * pred_out.loss + (1 - alpha) * expl_out.loss
            if mi_weight > 0:
                loss = loss + mi_weight * maxpool_ce(pred_out.logits, expl_out.logits)
            return (loss, {"pred": pred_out, "expl": expl_out}) if return_outputs else loss

    return timed_train(TaskPrefixTrainer, Seq2SeqTrainingArguments, model, rows, TaskPrefixDataCollator(tok, model=model),
                       cfg, warmup, batch_tokens)


def timed_train(trainer_cls, args_cls, model, rows, collator, cfg: Config, warmup: int,
                batch_tokens: list[int]) -> tuple[float, float]:
    """Train with ``trainer_cls`` at the config's batch, steps, schedule and clipping; (examples/s,
    tokens/s) after ``warmup`` steps, from a callback's step-end times and the collator's token counts."""
    from transformers import TrainerCallback

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []

        def on_step_end(self, args, state, control, **kw):
            self.times.append(time.perf_counter())

    timer = StepTimes()
    with tempfile.TemporaryDirectory() as out:
        targs = args_cls(
            output_dir=out, per_device_train_batch_size=cfg.train.batch_size, max_steps=cfg.train.max_steps,
            learning_rate=cfg.optim.lr, lr_scheduler_type="linear", warmup_steps=cfg.optim.warmup_steps,
            max_grad_norm=cfg.optim.max_grad_norm, weight_decay=cfg.optim.weight_decay, optim="adamw_torch",
            seed=cfg.train.seed, remove_unused_columns=False, save_strategy="no", eval_strategy="no",
            logging_strategy="no", report_to=[], disable_tqdm=True, use_cpu=True, dataloader_num_workers=0)
        trainer_cls(model=model, args=targs, train_dataset=rows, data_collator=collator, callbacks=[timer]).train()
    n = cfg.train.max_steps - warmup
    seconds = timer.times[-1] - timer.times[warmup - 1]
    return n * cfg.train.batch_size / seconds, sum(batch_tokens[warmup:cfg.train.max_steps]) / seconds


def reference_causal(cfg: Config, warmup: int) -> tuple[float, float]:
    """(examples/s, tokens/s) of a plain ``Trainer`` loop on the decoder-only student after ``warmup``
    steps: each task's rows are prompt + continuation, the prompt's labels -100."""
    from transformers import Trainer, TrainingArguments

    torch.set_num_threads(cfg.scaling.torch_threads or 1)
    tok = build_tokenizer(cfg.model)
    examples = load_splits(cfg.data).train.examples
    t = tokenize(examples, Prompts(tok, causal=True), cfg.model.max_source_length, cfg.model.max_target_length)
    rows = [{"pred": (t.predict_ids[i], t.label_ids[i]), "expl": (t.explain_ids[i], t.rationale_ids[i])}
            for i in range(len(t))]
    with torch.random.fork_rng():
        torch.manual_seed(cfg.train.seed)
        model = build_student(cfg.model, tok, cfg.train.seed)
    mi_weight, alpha, pad_id = cfg.loss.mi_weight, cfg.loss.label_weight, tok.pad_token_id
    batch_tokens: list[int] = []

    def task(pairs):
        ids = [p + c for p, c in pairs]
        n = max(len(x) for x in ids)
        return {"input_ids": torch.tensor([x + [pad_id] * (n - len(x)) for x in ids]),
                "attention_mask": torch.tensor([[1] * len(x) + [0] * (n - len(x)) for x in ids]),
                "labels": torch.tensor([[-100] * len(p) + c + [-100] * (n - len(p) - len(c)) for p, c in pairs]),
                "prompt_len": torch.tensor([len(p) for p, _ in pairs]), "cont": max(len(c) for _, c in pairs)}

    def collate(features):
        batch_tokens.append(sum(len(a) + len(b) for f in features for a, b in (f["pred"], f["expl"])))
        return {"pred": task([f["pred"] for f in features]), "expl": task([f["expl"] for f in features])}

    def continuation(logits, b):  # [B, C, V]: the positions that predict each row's continuation
        idx = (b["prompt_len"].unsqueeze(1) - 1 + torch.arange(b["cont"])).clamp_max(logits.size(1) - 1)
        return logits.gather(1, idx.unsqueeze(-1).expand(-1, -1, logits.size(-1)))

    class TaskPrefixTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            p, e = inputs["pred"], inputs["expl"]
            keys = ("input_ids", "attention_mask", "labels")
            pred_out = model(**{k: p[k] for k in keys})
            expl_out = model(**{k: e[k] for k in keys})
            loss = alpha * pred_out.loss + (1 - alpha) * expl_out.loss
            if mi_weight > 0:
                loss = loss + mi_weight * maxpool_ce(continuation(pred_out.logits, p), continuation(expl_out.logits, e))
            return (loss, {"pred": pred_out, "expl": expl_out}) if return_outputs else loss

    return timed_train(TaskPrefixTrainer, TrainingArguments, model, rows, collate, cfg, warmup, batch_tokens)


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=10, help="steps left out of the timing")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-dir", default=str(DEFAULT_DATA) if (DEFAULT_DATA / "cqa").is_dir() else None,
                    help="DSS datasets folder (CQA); without it the built-in task is used (small mode)")
    ap.add_argument("--builtin", action="store_true", help="the built-in task instead of CQA (small mode)")
    ap.add_argument("--mi", choices=["off", "on", "both"], default="both")
    ap.add_argument("--student", choices=["seq2seq", "causal"], default="seq2seq")
    ap.add_argument("--out", default=None, help="append the table to this Markdown file")
    args = ap.parse_args(argv)
    if args.builtin:
        args.data_dir = None
    rng = random.Random(0)
    rows = []
    for mi in {"off": [False], "on": [True], "both": [False, True]}[args.mi]:
        cfg = bench_config(args, mi)
        stock = cfg.model_copy(update={"model": cfg.model.model_copy(update={"fast_dropout": False})})
        ref = reference_causal if args.student == "causal" else reference
        sides = {"reference": lambda c=cfg, ref=ref: ref(c, args.warmup), "ours": lambda c=cfg: ours(c, args.warmup),
                 "ours_stock_dropout": lambda c=stock: ours(c, args.warmup)}
        runs: dict[str, list[tuple[float, float]]] = {k: [] for k in sides}
        for _ in range(args.repeats):  # interleaved rounds, order shuffled: drift hits every side alike
            for k in rng.sample(list(sides), len(sides)):
                runs[k].append(sides[k]())
        ratio = [o[0] / r[0] for o, r in zip(runs["ours"], runs["reference"])]
        ratio_stock = [o[0] / r[0] for o, r in zip(runs["ours_stock_dropout"], runs["reference"])]
        med = {k: (statistics.median(x[0] for x in v), statistics.median(x[1] for x in v)) for k, v in runs.items()}
        rows.append({"mi": "on (maxpool, 0.1)" if mi else "off (DSS)", "reference": med["reference"][0],
                     "ours": med["ours"][0], "ours_stock_dropout": med["ours_stock_dropout"][0],
                     "reference_tok_s": med["reference"][1], "ours_tok_s": med["ours"][1],
                     "ratio": statistics.median(ratio), "ratios": ratio, "ratio_stock_dropout": statistics.median(ratio_stock),
                     "ratios_stock_dropout": ratio_stock, "runs": runs})
    data = "CQA train (DSS files)" if args.data_dir else "built-in task (small mode)"
    student = ("tiny decoder-only (Llama-shaped) student (d_model 64, 2 layers, dropout 0.1" if args.student == "causal"
               else "tiny T5-v1.1-style student (d_model 64, 2+2 layers, dropout 0.1")
    head = (f"{student}, byte tokenizer, max input 512), reference: "
            f"{'a plain Trainer (prompt + continuation rows)' if args.student == 'causal' else 'a Seq2SeqTrainer'}, "
            f"{data}, batch {args.batch}, {args.threads} thread(s), steps {args.warmup + 1}-{args.steps}; "
            f"{args.repeats} interleaved rounds (order shuffled per round); ex/s and tok/s: medians over rounds "
            f"(tok/s: non-pad tokens of the batches run); ratio: mmi-ray ex/s over the reference's in the same "
            f"round, median [min, max] over rounds" + ("" if args.repeats >= 5 else
                                                        " (fewer than 5 rounds: a smoke run, not a figure)"))
    lines = [head, "", "| MI term | reference ex/s | mmi-ray ex/s | reference tok/s | mmi-ray tok/s | ratio | "
                       "mmi-ray with stock dropout: ratio |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {x['mi']} | {x['reference']:.1f} | {x['ours']:.1f} | {x['reference_tok_s']:.0f} | {x['ours_tok_s']:.0f} "
              f"| **{spread(x['ratios'], 2)}x** | {spread(x['ratios_stock_dropout'], 2)}x |" for x in rows]
    report_figures(lines, args.out, "reference_loop.py", argv, "Training loop vs reference-style loop")
    return rows


if __name__ == "__main__":
    main()
