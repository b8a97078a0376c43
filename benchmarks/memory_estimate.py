"""``mmi-ray plan``'s memory estimate (``mmi_ray/sizing.py memory``) against what training holds.

Each shape runs in a fresh process: a randomly initialised T5 (or, for the ``causal-`` shapes, a
Llama-shaped decoder-only student, in full or with LoRA adapters on q_proj and v_proj) of that size
with the max-pool MI term and AdamW takes two optimizer steps on fixed-length random batches on the CPU, in fp32 (or bf16
autocast), and the peak resident memory it added over the process before the model was built is set
beside the estimate. On a GPU the same comparison is ``benchmarks/gpu_check.py``'s peak-memory row.

    python benchmarks/memory_estimate.py                   # four shapes, fp32
    python benchmarks/memory_estimate.py --small           # two small shapes (the tests)
    python benchmarks/memory_estimate.py --shapes causal-32k causal-lora-32k causal-long
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

SHAPES = {  # name: (d_model, heads, d_ff, layers, vocab, batch, src, label, rationale)
    "tiny-vocab-32k": (64, 4, 128, 2, 32128, 16, 64, 8, 96),
    "small-long-inputs": (256, 4, 1024, 4, 8000, 8, 512, 8, 128),
    "t5-small-like": (512, 8, 1024, 4, 32128, 8, 256, 8, 128),
    "wide-batch": (128, 4, 256, 2, 32128, 64, 128, 8, 256),
}
CAUSAL = {  # name: (d_model, heads, kv heads, d_ff, layers, vocab, batch, prompt, label, rationale, LoRA r)
    "causal-32k": (256, 4, 2, 768, 4, 32128, 8, 96, 8, 96, 0),
    "causal-lora-32k": (256, 4, 2, 768, 4, 32128, 8, 96, 8, 96, 8),
    "causal-long": (128, 4, 4, 512, 4, 8000, 8, 384, 8, 128, 0),
}
SMALL = ["tiny-vocab-32k", "wide-batch"]


def rss(field: str) -> int:
    """This process's resident memory (``VmRSS``) or its peak (``VmHWM``), bytes. Not ``ru_maxrss``:
    Linux carries the parent's peak into a child through fork, so a child of a large process reads
    its parent's figure."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))


def child(name: str, precision: str, attention: str) -> dict:
    import torch

    if name in CAUSAL:
        return causal_child(name, precision, attention)
    from transformers import T5Config, T5ForConditionalGeneration

    from mmi_ray.config import LossConfig
    from mmi_ray.distill import DistillModule
    from mmi_ray.sizing import Shape, memory

    torch.set_num_threads(2)
    d, h, ff, layers, v, b, src, lab, rat = SHAPES[name]
    before = rss("VmHWM")
    config = T5Config(vocab_size=v, d_model=d, d_kv=d // h, d_ff=ff, num_layers=layers, num_heads=h,
                      feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.1,
                      decoder_start_token_id=0)
    torch.manual_seed(0)
    module = DistillModule(T5ForConditionalGeneration(config), LossConfig(mi_weight=0.1, mi_estimator="maxpool"))
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4)
    two_steps(module, opt, random_batch(v, b, src, lab, rat), precision)
    peak = rss("VmHWM")
    shape = Shape(d, d, h, ff, layers, layers, v, "built here")
    est = memory(shape, src, lab, rat, b, precision, "maxpool")
    return {"shape": name, "measured": peak - before, **est}


def random_batch(v: int, b: int, src: int, lab: int, rat: int) -> dict:
    """Fixed-length random token ids (no padding) in the trainer's batch layout."""
    import torch

    g = torch.Generator().manual_seed(0)

    def ids(length: int) -> torch.Tensor:
        return torch.randint(3, v, (b, length), generator=g)

    batch = {"predict_ids": ids(src), "explain_ids": ids(src), "label_ids": ids(lab), "rationale_ids": ids(rat)}
    batch["predict_mask"] = torch.ones_like(batch["predict_ids"], dtype=torch.bool)
    batch["explain_mask"] = torch.ones_like(batch["explain_ids"], dtype=torch.bool)
    return batch


def two_steps(module, opt, batch: dict, precision: str) -> None:
    import torch

    for _ in range(2):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = module(batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)


def causal_child(name: str, precision: str, attention: str) -> dict:
    """The decoder-only student as ``model.kind: causal`` builds it (sdpa attention, untied output
    layer), the critic-free max-pool term; with LoRA, peft's adapters on q_proj and v_proj and only
    they (and no critic) in AdamW."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from mmi_ray.config import LossConfig, ModelConfig
    from mmi_ray.distill import DistillModule
    from mmi_ray.model import with_lora
    from mmi_ray.sizing import CausalShape, memory

    torch.set_num_threads(2)
    d, h, kv, ff, layers, v, b, src, lab, rat, r = CAUSAL[name]
    before = rss("VmHWM")
    config = LlamaConfig(vocab_size=v, hidden_size=d, intermediate_size=ff, num_hidden_layers=layers,
                         num_attention_heads=h, num_key_value_heads=kv, max_position_embeddings=src + rat,
                         tie_word_embeddings=False, pad_token_id=0, eos_token_id=1, bos_token_id=None,
                         attn_implementation=attention)
    torch.manual_seed(0)
    student = LlamaForCausalLM(config)
    if r:  # as model.lora builds them (peft's default targets here: q_proj, v_proj)
        student = with_lora(student, ModelConfig(kind="causal", lora={"r": r}), causal=True)
    module = DistillModule(student, LossConfig(mi_weight=0.1, mi_estimator="maxpool"))
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)
    two_steps(module, opt, random_batch(v, b, src, lab, rat), precision)
    peak = rss("VmHWM")
    shape = CausalShape(d, h, kv, d // h, ff, layers, v, False, "built here", lora_r=r)
    est = memory(shape, src, lab, rat, b, precision, "maxpool", eager=attention == "eager")
    return {"shape": name, "measured": peak - before, **est}


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=[*SHAPES, *CAUSAL],
                    help=f"default: the T5 shapes; decoder-only: {', '.join(CAUSAL)}")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--attention", choices=["sdpa", "eager"], default="sdpa",
                    help="the decoder-only shapes' attention (eager: as train.deterministic on a GPU)")
    ap.add_argument("--small", action="store_true", help=f"only {', '.join(SMALL)}")
    ap.add_argument("--jobs", type=int, default=2, help="shapes measured at once, each in its own process (default 2)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.precision, args.attention)))
        return []
    rows = []
    print(f"{'shape':<18} {'estimate':>9} {'measured':>9} {'ratio':>6}  (estimate: states / activations / [B,T,V])")
    names = SMALL if args.small else args.shapes

    def measure(name: str) -> subprocess.CompletedProcess:  # each shape in a process of its own: its own peak
        return subprocess.run([sys.executable, __file__, "--child", name, "--precision", args.precision,
                               "--attention", args.attention],
                              capture_output=True, text=True, check=True, cwd=Path(__file__).parent)

    with ThreadPoolExecutor(args.jobs) as pool:  # side by side: a peak is per process, the time is not measured
        done = list(pool.map(measure, names))
    for name, r in zip(names, done):
        row = json.loads(next(x for x in r.stdout.splitlines() if x.startswith("RESULT "))[7:])
        row["ratio"] = row["total"] / row["measured"]
        rows.append(row)
        mib = lambda x: f"{x / 2**20:.0f}"  # noqa: E731
        print(f"{name:<18} {mib(row['total']):>7} M {mib(row['measured']):>7} M {row['ratio']:6.2f}  "
              f"({mib(row.get('weights, gradients, AdamW', row.get('frozen weights, adapters + AdamW', 0)))} / {mib(row['activations'] + row.get('eager attention probabilities', 0))} / {mib(row['[B, T, V] buffers'])} MiB)")
    print(f"(peak RSS added over the process before the model, 2 AdamW steps, {args.precision}, CPU; "
          "ratio: estimate / measured)")
    return rows


if __name__ == "__main__":
    main()
