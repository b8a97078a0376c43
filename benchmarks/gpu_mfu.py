"""GPU training throughput and model FLOPs utilisation.

    python benchmarks/gpu_mfu.py [--batch 64] [--src-len 512] [--label-len 8] [--rationale-len 128]
                                 [--steps 30] [--mi maxpool|off] [--compile] [--peak-tflops N] [--out BENCHMARKS.md]
    python benchmarks/gpu_mfu.py --small          # tiny model on CPU: checks the script, no figure

A t5-v1_1-base student (random weights, built from its config: no download) trains one MI
distillation step after another (label pass + rationale pass + MI term, ``DistillModule``, AdamW)
under bf16 autocast on one GPU, on fixed-length random token batches. Model FLOPs per step are
counted analytically (matmuls of both passes, attention included, x3 for forward + backward), and
MFU = achieved FLOP/s / the GPU's dense bf16 peak (``--peak-tflops``, or a table of known GPUs).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from bench_out import report_figures

from mmi_ray.config import LossConfig
from mmi_ray.sizing import Shape, gpu_by_name, shape_from_hf, step_flops


def t5_base_config(small: bool):
    from transformers import T5Config

    if small:
        return T5Config(vocab_size=384, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                        feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.1,
                        decoder_start_token_id=0)
    # google/t5-v1_1-base
    return T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=2048, num_layers=12, num_decoder_layers=12,
                    num_heads=12, feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.1,
                    decoder_start_token_id=0)


def shape(c) -> Shape:
    return shape_from_hf(c.to_dict(), "T5Config")


def peak_tflops(device_name: str, given: float | None) -> float | None:
    if given:
        return given
    gpu = gpu_by_name(device_name)
    return gpu.bf16_tflops if gpu else None


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--src-len", type=int, default=512)
    ap.add_argument("--label-len", type=int, default=8)
    ap.add_argument("--rationale-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--mi", choices=["maxpool", "off"], default="maxpool")
    ap.add_argument("--compile", action="store_true", help="torch.compile the student")
    ap.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the GPU")
    ap.add_argument("--small", action="store_true", help="tiny model on CPU, to check the script")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.small:
        args.batch, args.src_len, args.rationale_len, args.steps, args.warmup = 4, 32, 16, 2, 1
    from transformers import T5ForConditionalGeneration

    from mmi_ray.distill import DistillModule

    device = torch.device("cuda" if torch.cuda.is_available() and not args.small else "cpu")
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    c = t5_base_config(args.small)
    torch.manual_seed(0)
    student = T5ForConditionalGeneration(c)
    module = DistillModule(student, LossConfig(mi_weight=0.1 if args.mi == "maxpool" else 0.0,
                                               mi_estimator="maxpool")).to(device)
    if args.compile:
        module.student = torch.compile(module.student)
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4, fused=device.type == "cuda")
    g = torch.Generator().manual_seed(0)

    def ids(length: int) -> torch.Tensor:
        return torch.randint(2, c.vocab_size, (args.batch, length), generator=g).to(device)

    batch = {"predict_ids": ids(args.src_len), "explain_ids": ids(args.src_len), "label_ids": ids(args.label_len),
             "rationale_ids": ids(args.rationale_len)}
    batch["predict_mask"] = torch.ones_like(batch["predict_ids"], dtype=torch.bool)
    batch["explain_mask"] = torch.ones_like(batch["explain_ids"], dtype=torch.bool)
    times = []
    for i in range(args.warmup + args.steps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = module(batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    flops = step_flops(shape(c), args.batch, args.src_len, args.label_len, args.rationale_len)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    peak = peak_tflops(name, args.peak_tflops) if device.type == "cuda" else None
    res = {"device": name, "params": sum(p.numel() for p in student.parameters()), "step_s": step_s,
           "examples_per_s": args.batch / step_s,
           "tokens_per_s": args.batch * (2 * args.src_len + args.label_len + args.rationale_len) / step_s,
           "model_tflops_per_s": flops / step_s / 1e12, "peak_tflops": peak,
           "mfu": (flops / step_s / 1e12 / peak) if peak else None,
           "max_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None}
    mfu = f"{100 * res['mfu']:.1f}%" if res["mfu"] is not None else "n/a (no GPU peak)"
    line = (f"{'t5-v1_1-base' if not args.small else 'tiny (small mode)'} ({res['params'] / 1e6:.0f}M) on {name}, "
            f"batch {args.batch}, src {args.src_len}, label {args.label_len}, rationale {args.rationale_len}, "
            f"MI {args.mi}, compile {args.compile}: {1000 * step_s:.0f} ms/step, {res['examples_per_s']:.1f} ex/s, "
            f"{res['tokens_per_s']:.0f} tok/s, {res['model_tflops_per_s']:.1f} model TFLOP/s, MFU {mfu}")
    report_figures([line], args.out, "gpu_mfu.py", argv, "GPU throughput and MFU", machine=name)
    return res


if __name__ == "__main__":
    main()
