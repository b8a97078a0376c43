"""MI term overhead: step time (forward + backward + AdamW step) and peak memory with each MI
estimator against DSS (mi_weight 0), same tiny model, data, batch and dropout, one process.

    python benchmarks/mi_overhead.py [--pairs 5] [--steps 6] [--batch 32] [--vocab byte|t5|qwen]
        [--student seq2seq|causal] [--out BENCHMARKS.md]

Timing is interleaved: every round runs ``--steps`` steps of DSS, then of each variant, in a new
order each round (A B A B ...); a variant's ratio is its median step time over DSS's in the same
round, printed as the median over rounds with the min and max. Memory: each variant runs alone in
a fresh subprocess, and its peak RSS above DSS's is the extra memory of its MI term.

``--vocab t5`` widens the output layer to T5's 32,128 entries so the [B, T, V] softmax and max-pool
tensors of ``maxpool`` have their real size (the ids the model sees stay bytes); ``--vocab qwen`` to
Qwen2.5's 151,936. ``--student causal``: the tiny decoder-only (Llama-shaped) student, each task a
prompt and its continuation, the output layer at the continuation positions only.
``maxpool (released, unfused)`` is the released formula computed apart from the cross-entropy (the
implementation before ``losses.ce_and_maxpool``), kept here to show what the fused pass saves.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from bench_out import report_figures, spread

from mmi_ray.config import LossConfig, ModelConfig
from mmi_ray.data.batching import Prompts, collate, epoch_batches, tokenize
from mmi_ray.data.builtin import generate
from mmi_ray.distill import DistillModule
from mmi_ray.model import build_student, build_tokenizer

VARIANTS = {"DSS": {"mi_weight": 0.0}, "maxpool": {"mi_estimator": "maxpool"},
            "maxpool (released, unfused)": {"mi_estimator": "maxpool"},
            "maxpool_masked": {"mi_estimator": "maxpool_masked"}, "infonce": {"mi_estimator": "infonce"},
            "nwj": {"mi_estimator": "nwj"}}


class WideVocab:
    """The byte tokenizer, reporting a larger vocabulary size to size the model's output layer."""

    def __init__(self, tok, size: int):
        self.tok, self.size = tok, size

    def __len__(self) -> int:
        return self.size

    def __getattr__(self, name):
        return getattr(self.tok, name)


VOCABS = {"byte": None, "t5": 32128, "qwen": 151936}
"""Output vocabulary sizes: the byte tokenizer's own, T5's, Qwen2.5's."""


def setup(vocab: str, batch: int, student: str = "seq2seq"):
    mcfg = ModelConfig(max_source_length=256, max_target_length=128, kind=student)
    tok = build_tokenizer(mcfg)
    model_tok = WideVocab(tok, VOCABS[vocab]) if VOCABS[vocab] else tok
    data = tokenize(generate(8 * batch, 0, ["arith", "choice", "nli"], 0.0), Prompts(tok, causal=student == "causal"),
                    256, 128)
    batches = [collate(data, idx, tok.pad_token_id) for idx in epoch_batches(data, batch, 0, 0, True)]
    return mcfg, model_tok, batches


class Runner:
    """One variant's module and optimizer; ``run(n)`` times n steps and counts their non-pad tokens."""

    def __init__(self, name: str, mcfg, tok, batches):
        torch.manual_seed(0)
        self.module = DistillModule(build_student(mcfg, tok, 0), LossConfig(**VARIANTS[name]))
        if name.endswith("(released, unfused)"):
            self.module.estimator.pools = False  # the released formula on the logits, apart from the CE
        self.opt = torch.optim.AdamW(self.module.parameters(), lr=1e-3)
        self.batches, self.i = batches, 0

    def run(self, steps: int) -> tuple[list[float], int]:
        times, tokens = [], 0
        for _ in range(steps):
            b = self.batches[self.i % len(self.batches)]
            self.i += 1
            t0 = time.perf_counter()
            self.module(b).loss.backward()
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
            times.append(time.perf_counter() - t0)
            tokens += int(sum(b[k].ne(0).sum() for k in ("predict_ids", "explain_ids")))  # pad id 0: counted, not estimated
            tokens += int(sum(b[k].ne(-100).sum() for k in ("label_ids", "rationale_ids")))
        return times, tokens


def step_peak_mb() -> float:
    """This process's peak RSS since the last ``reset_peak()`` (Linux ``VmHWM``), in MB."""
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:  # "5": reset the peak RSS to the current RSS
        f.write("5")


def peak_rss_mb(name: str, vocab: str, batch: int, steps: int, threads: int, student: str = "seq2seq") -> float:
    """Peak RSS during ``steps`` training steps (after one untimed step) of a fresh process that builds
    the variant alone (MB); the peak is reset before the steps, so set-up does not count."""
    code = ("import sys, torch; sys.path.insert(0, 'benchmarks'); import mi_overhead as m; "
            f"torch.set_num_threads({threads}); c, t, b = m.setup({vocab!r}, {batch}, {student!r}); "
            f"r = m.Runner({name!r}, c, t, b); r.run(1); m.reset_peak(); r.run({steps}); print(m.step_peak_mb())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(__file__).resolve().parents[1]))
    return float(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=5, help="interleaved rounds (A B A B ...)")
    ap.add_argument("--steps", type=int, default=6, help="steps per variant per round (median taken)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--vocab", choices=list(VOCABS), default="byte")
    ap.add_argument("--student", choices=["seq2seq", "causal"], default="seq2seq")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--out", default=None, help="append the table to this Markdown file")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = ["DSS", *[v for v in args.variants if v != "DSS"]]
    mcfg, tok, batches = setup(args.vocab, args.batch, args.student)
    runners = {n: Runner(n, mcfg, tok, batches) for n in names}
    for r in runners.values():  # warm-up, not timed
        r.run(2)
    ratios = {n: [] for n in names}
    ms = {n: [] for n in names}
    tok_s = {n: [] for n in names}
    rng = random.Random(0)
    for _ in range(args.pairs):
        order = names[:]
        rng.shuffle(order)
        med = {}
        for n in order:
            times, tokens = runners[n].run(args.steps)
            med[n] = statistics.median(times)
            ms[n].append(1000 * med[n])
            tok_s[n].append(tokens / sum(times))
        for n in names:
            ratios[n].append(med[n] / med["DSS"])
    mem = {} if args.no_memory else {n: peak_rss_mb(n, args.vocab, args.batch, 2, args.threads, args.student)
                                     for n in names}

    model = "tiny T5" if args.student == "seq2seq" else "tiny decoder-only (Llama-shaped)"
    head = (f"{model} (d_model {mcfg.d_model}), output vocab {len(tok)}, batch {args.batch}, {args.threads} "
            f"thread(s); {args.pairs} interleaved rounds of {args.steps} steps per variant (order shuffled per "
            "round); ratio: the variant's median step over DSS's in the same round, median [min, max] over rounds; "
            "tokens/s: non-pad tokens of the batches run (inputs and targets of both passes) per second; peak RSS: "
            "a fresh process per variant, the peak of 2 steps after one")
    lines = [head, "", "| variant | ms/step (median) | vs DSS | tokens/s | peak RSS MB | extra vs DSS MB |",
             "|---|---|---|---|---|---|"]
    for n in names:
        extra = f"{mem[n] - mem['DSS']:+.0f}" if mem else ""
        rss = f"{mem[n]:.0f}" if mem else ""
        lines.append(f"| {n} | {statistics.median(ms[n]):.1f} | {spread(ratios[n])} | "
                     f"{statistics.median(tok_s[n]):.0f} | {rss} | {extra} |")
    if "maxpool" in names and "maxpool (released, unfused)" in mem and mem:
        old = mem["maxpool (released, unfused)"] - mem["DSS"]
        new = mem["maxpool"] - mem["DSS"]
        lines.append("")
        lines.append(f"maxpool's extra memory: {new:+.0f} MB fused vs {old:+.0f} MB unfused "
                     f"(goal: at most a quarter of the unfused: {old / 4:.0f} MB); step ratio goal at most 1.05: "
                     f"{'met' if max(ratios['maxpool']) <= 1.05 else 'the range crosses it' if min(ratios['maxpool']) <= 1.05 else 'not met'}")
    report_figures(lines, args.out, "mi_overhead.py", argv, "MI term overhead (interleaved)")
    result = {"ratios": ratios, "ms": ms, "tokens_per_s": tok_s, "peak_rss_mb": mem}
    print(json.dumps({k: {n: round(statistics.median(v), 4) for n, v in d.items()} if k != "peak_rss_mb" else d
                      for k, d in result.items()}))
    return result


if __name__ == "__main__":
    main()
