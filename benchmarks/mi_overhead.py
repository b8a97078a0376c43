"""MI term overhead (issue 7, figure 2): step time (forward + backward + AdamW step) with each MI
estimator against DSS (mi_weight 0), same tiny model, data, batch and dropout, one process.

    python benchmarks/mi_overhead.py [--steps 20] [--batch 32] [--vocab byte|t5] [--out BENCHMARKS.md]

``--vocab t5`` widens the output layer to T5's 32,128 entries so the [B, T, V] softmax and max-pool
tensors of ``maxpool`` have their real size (the ids the model sees stay bytes).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from bench_out import publish

from mmi_ray.config import LossConfig, ModelConfig
from mmi_ray.data.batching import collate, epoch_batches, tokenize
from mmi_ray.data.builtin import generate
from mmi_ray.model import build_seq2seq, build_tokenizer
from mmi_ray.objective import DistillModule

VARIANTS = [("DSS", {"mi_weight": 0.0}), ("maxpool", {"mi_estimator": "maxpool"}),
            ("maxpool_masked", {"mi_estimator": "maxpool_masked"}), ("infonce", {"mi_estimator": "infonce"}),
            ("nwj", {"mi_estimator": "nwj"})]


class WideVocab:
    """The byte tokenizer, reporting a larger vocabulary size to size the model's output layer."""

    def __init__(self, tok, size: int):
        self.tok, self.size = tok, size

    def __len__(self) -> int:
        return self.size

    def __getattr__(self, name):
        return getattr(self.tok, name)


def step_time(loss_kw: dict, mcfg: ModelConfig, tok, batches: list, steps: int, warmup: int = 3) -> float:
    torch.manual_seed(0)
    module = DistillModule(build_seq2seq(mcfg, tok, 0), LossConfig(**loss_kw))
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    times = []
    for i in range(warmup + steps):
        batch = batches[i % len(batches)]
        t0 = time.perf_counter()
        module(batch).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> list[tuple[str, float]]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--vocab", choices=["byte", "t5"], default="byte")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="append the table to this Markdown file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    mcfg = ModelConfig(max_source_length=256, max_target_length=128)
    tok = build_tokenizer(mcfg)
    model_tok = WideVocab(tok, 32128) if args.vocab == "t5" else tok
    data = tokenize(generate(8 * args.batch, 0, ["arith", "choice", "nli"], 0.0), tok, 256, 128)
    batches = [collate(data, idx, tok.pad_token_id) for idx in epoch_batches(data, args.batch, 0, 0, True)]
    rows = [(name, step_time(kw, mcfg, model_tok, batches, args.steps)) for name, kw in VARIANTS]
    base = rows[0][1]
    head = (f"tiny T5 (d_model {mcfg.d_model}), output vocab {len(model_tok)}, batch {args.batch}, "
            f"{args.threads} thread(s), median of {args.steps} steps")
    lines = [head, "", "| variant | ms/step | vs DSS |", "|---|---|---|"]
    lines += [f"| {name} | {1000 * t:.1f} | {t / base:.3f} |" for name, t in rows]
    publish(lines, args.out, "mi_overhead.py", argv, "MI term overhead")
    return rows


if __name__ == "__main__":
    main()
