"""What a LoRA checkpoint holds against a full one, for hub-shaped decoder-only students, counted from
the models built on the meta device from their published shapes (no download, no weights):

    python benchmarks/lora_sizes.py [--r 8 16 64] [--out BENCHMARKS.md]

A full-training checkpoint holds fp32 weights and AdamW's two moments (12 bytes a parameter); a LoRA
checkpoint holds the adapters and their moments only (the frozen student is rebuilt from its name).
The MI critic (learned estimators) adds the same to both; it is left out here.
"""

from __future__ import annotations

import argparse

import torch
from bench_out import report_figures

SHAPES = {  # the published config.json values that size the model
    "Qwen/Qwen2.5-0.5B": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                              num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "Qwen/Qwen2.5-1.5B": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                              num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    "meta-llama/Llama-3.2-1B": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                                    num_attention_heads=32, num_key_value_heads=8, vocab_size=128256,
                                    tie_word_embeddings=True),
}
ALL = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def counts(name: str, r: int, targets: list[str] | None) -> tuple[int, int]:
    """(the student's parameters, the adapters') for ``name``'s shape at rank ``r``."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    conf, cls = (Qwen2Config, Qwen2ForCausalLM) if name.startswith("Qwen") else (LlamaConfig, LlamaForCausalLM)
    with torch.device("meta"):
        model = cls(conf(**SHAPES[name]))
        full = sum(p.numel() for p in model.parameters())
        peft = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets, task_type="CAUSAL_LM"))
        return full, sum(p.numel() for p in peft.parameters() if p.requires_grad)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--r", type=int, nargs="+", default=[8, 16, 64])
    ap.add_argument("--models", nargs="+", default=list(SHAPES), choices=list(SHAPES))
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    lines = ["| student | parameters | full checkpoint (fp32 + AdamW) | adapters | r | targets | adapter checkpoint | share |",
             "|---|---|---|---|---|---|---|---|"]
    for name in args.models:
        for r in args.r:
            for label, targets in (("q, v (peft's default)", None), ("all 7 projections", ALL)):
                full, lora = counts(name, r, targets)
                lines.append(f"| {name} | {full / 1e6:.0f}M | {12 * full / 2**30:.2f} GiB | {lora / 1e6:.2f}M | {r} | "
                             f"{label} | {12 * lora / 2**20:.0f} MiB | {100 * lora / full:.2f}% |")
    report_figures(lines, args.out, "lora_sizes.py", argv, "LoRA checkpoints against full ones")


if __name__ == "__main__":
    main()
