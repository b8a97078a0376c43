"""Rows per second of the ``ray-data`` teacher backend on CPU (HF transformers generation in Ray Data
actors), against the same generation in this process without Ray (the overhead ratio).

    python benchmarks/teacher_throughput.py --rows 128 --replicas 1 2 --batch-size 16 --max-tokens 32 --rounds 5

The teacher is a randomly initialised GPT-2-shaped causal LM built here (no download: offline), sized
by --d-model / --layers; its replies are noise, so this measures the plumbing and the generation cost,
not rationale quality. Prompts are the box questions in the shipped ``text`` few-shot template
(about 150 tokens each). Each replica is one Ray actor with --cpus-per-replica CPUs and as many torch
threads.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def build_tiny_causal_lm(folder: Path, d_model: int = 64, layers: int = 2, heads: int = 2, seed: int = 0) -> Path:
    """A random GPT-2-shaped causal LM and a byte-level BPE tokenizer trained on the few-shot prompts,
    saved as a transformers folder (what ``--teacher`` names)."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from mmi_ray.teacher.prompts import PROMPT_DIR

    texts = [p.read_text() for p in PROMPT_DIR.glob("*.txt")] + (REPO / "examples/boxes.csv").read_text().splitlines()[:2000]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=512, special_tokens=["<|endoftext|>"],
                                                       initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                                       show_progress=False))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(fast), n_positions=1024, n_embd=d_model, n_layer=layers,
                                       n_head=heads, bos_token_id=0, eos_token_id=0))
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


def prompts(n: int) -> list[tuple[str, str]]:
    from mmi_ray.teacher.prompts import load_prompt

    p = load_prompt("text")
    qs = [line.split(",")[0] for line in (REPO / "examples/boxes.csv").read_text().splitlines()[1:]]
    return [(f"r{i}", p.render({"input": f"{qs[i % len(qs)]} (#{i})"}, "bench")) for i in range(n)]


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=256)
    ap.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--d-model", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--cpus-per-replica", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=5, help="interleaved rounds (each side once per round)")
    ap.add_argument("--json", default=None, help="also write the rows here")
    args = ap.parse_args(argv)

    import torch

    from mmi_ray.ray_init import init_ray
    from mmi_ray.teacher.backends import HFGenerate, RayDataBackend, Sampling

    sampling = Sampling(max_tokens=args.max_tokens, stop=())  # no stop: every row generates max_tokens
    folder = build_tiny_causal_lm(Path(tempfile.mkdtemp(prefix="tiny-teacher-")), args.d_model, args.layers, 4)
    reqs = prompts(args.rows)
    n_params = sum(p.numel() for p in __import__("transformers").AutoModelForCausalLM.from_pretrained(folder).parameters())
    print(f"teacher: random GPT-2 shape, d_model {args.d_model}, {args.layers} layers, {n_params / 1e6:.2f}M params; "
          f"{args.rows} rows, {args.max_tokens} new tokens each, batch {args.batch_size}")
    torch.set_num_threads(max(1, int(args.cpus_per_replica)))
    gen = HFGenerate(str(folder), sampling.as_dict(), "cpu")

    def in_process() -> float:
        t = time.perf_counter()
        for i in range(0, len(reqs), args.batch_size):
            chunk = reqs[i:i + args.batch_size]
            gen({"id": [r for r, _ in chunk], "prompt": [p for _, p in chunk]})
        return args.rows / (time.perf_counter() - t)

    def ray_data(k: int) -> float:
        b = RayDataBackend(str(folder), "hf", args.batch_size, k, args.cpus_per_replica, 0.0, sampling)
        got: list[str] = []
        t = time.perf_counter()
        b.run(reqs, lambda rid, text, tokens=None, got=got: got.append(rid))
        assert len(got) == args.rows
        return args.rows / (time.perf_counter() - t)

    init_ray(log_to_driver=False)
    import logging

    import ray.data

    logging.getLogger("ray.data").setLevel(logging.WARNING)  # the figures, not Ray Data's progress lines
    ray.data.DataContext.get_current().enable_progress_bars = False
    sides = [("in process (no Ray)", 1, in_process)] + [("ray-data backend", k, lambda k=k: ray_data(k)) for k in args.replicas]
    rates: dict[int, list[float]] = {i: [] for i in range(len(sides))}
    rng = random.Random(0)
    for _ in range(args.rounds):  # interleaved rounds, order shuffled: the machine's drift hits every side
        order = list(range(len(sides)))
        rng.shuffle(order)
        for i in order:
            rates[i].append(sides[i][2]())
    rows = []
    for i, (how, k, _) in enumerate(sides):
        ratios = [a / b for a, b in zip(rates[i], rates[0])]  # within each round
        rows.append({"how": how, "replicas": k, "rows_per_s": round(statistics.median(rates[i]), 2),
                     "ratio": round(statistics.median(ratios), 2), "ratio_min": round(min(ratios), 2),
                     "ratio_max": round(max(ratios), 2)})
    print(f"  median over {args.rounds} interleaved rounds; ratio to in-process within each round (min - max)")
    for r in rows:
        print(f"  {r['how']:<22} replicas {r['replicas']}  {r['rows_per_s']:>7.2f} rows/s  x{r['ratio']:.2f} "
              f"({r['ratio_min']:.2f} - {r['ratio_max']:.2f})")
    print("  (ray-data times include starting the actors and loading the model in each: a fixed cost per run)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
