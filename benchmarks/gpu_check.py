"""The GPU check (issue 14): the project's own training loop (``recipe.run_loop``) on one GPU with a
t5-v1_1-base-shaped student (768 wide, 12 + 12 layers, T5's 32,128-entry output layer, a Unigram
tokenizer built offline by ``mmi_ray.offline_student``), bf16 autocast, the released max-pool MI
term on. Prints examples/s and tokens/s (counted by the loop), MFU from analytic FLOPs, peak GPU
memory, the MI term's overhead (interleaved runs with and without it), and whether a run restored
from its mid-way checkpoint on the GPU reproduces the uninterrupted run.

    python benchmarks/gpu_check.py [--steps 60] [--batch 64] [--pairs 2] [--out BENCHMARKS.md]
    python benchmarks/gpu_check.py --small      # tiny student on CPU: checks the script, no figure
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch
from bench_out import publish
from gpu_mfu import peak_tflops, step_flops

from mmi_ray.config import load_config
from mmi_ray.data import load_splits
from mmi_ray.data.batching import tokenize
from mmi_ray.offline_student import build_student
from mmi_ray.recipe import run_loop
from mmi_ray.worker import WorkerEnv

REPO = Path(__file__).resolve().parents[1]
BASE = {"d_model": 768, "num_layers": 12, "num_heads": 12, "d_ff": 2048, "model_vocab": 32128}
SMALL = {"d_model": 32, "num_layers": 1, "num_heads": 2, "d_ff": 64, "model_vocab": 512}


def run(cfg, device: torch.device, state: dict | None = None) -> tuple[list[dict], dict]:
    """One run of the loop on ``device``; (its metrics, its checkpoints' states by step)."""
    from mmi_ray.checkpoint import load_state

    out, saved = [], {}

    def report(metrics, ckpt_dir):
        out.append(metrics)
        if ckpt_dir is not None:
            saved[metrics["step"]] = load_state(ckpt_dir)

    run_loop(cfg, WorkerEnv(0, 1, device, lambda: state, report, lambda m: m.to(device)))
    return out, saved


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--pairs", type=int, default=2, help="interleaved MI-on / MI-off pairs")
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.small:
        args.steps, args.batch, args.pairs = 4, 4, 1
    gpu = torch.cuda.is_available() and not args.small
    device = torch.device("cuda" if gpu else "cpu")
    if gpu:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS for the restore check
    shape = SMALL if args.small else BASE
    tmp = Path(tempfile.mkdtemp(prefix="mmi-gpu-check-"))
    probe = load_config(REPO / "configs" / "tiny_builtin.yaml")
    texts = [t for e in load_splits(probe.data).train.examples for t in (e.input, e.label, e.rationale)]
    t0 = time.perf_counter()
    student = build_student(tmp / "student", ["predict:", "explain:", *texts], vocab_size=1000, **shape)
    build_s = time.perf_counter() - t0
    ov = [f"model.name={student}", f"train.batch_size={args.batch}", f"train.max_steps={args.steps}",
          f"train.eval_every={args.steps // 2}", "train.precision=bf16", "loss.mi_estimator=maxpool",
          "data.builtin.num_valid=128", "train.eval_batch_size=128", "train.max_new_tokens=16",
          f"run.storage_path={tmp / 'runs'}", "optim.lr=1e-4"]
    cfg_mi = load_config(REPO / "configs" / "tiny_builtin.yaml", [*ov, "loss.mi_weight=0.1"])
    cfg_dss = load_config(REPO / "configs" / "tiny_builtin.yaml", [*ov, "loss.mi_weight=0.0"])
    rates = {"mi": [], "dss": []}
    tokens, peak_mem, mi_runs = [], 0.0, []
    for _ in range(args.pairs):  # A B A B: the machine's drift falls on both sides
        for name, cfg in (("mi", cfg_mi), ("dss", cfg_dss)):
            if gpu:
                torch.cuda.reset_peak_memory_stats()
            metrics, _ = run(cfg, device)
            rates[name].append(metrics[-1]["examples_per_s"])  # the second interval: past the warm-up
            if name == "mi":
                tokens.append(metrics[-1]["tokens_per_s"])
                mi_runs.append(metrics)
                peak_mem = max(peak_mem, torch.cuda.max_memory_allocated() / 2**30 if gpu else 0.0)
    # restore on the device: the mid-way checkpoint of a fresh MI run, resumed, against the run itself
    # (deterministic kernels from here on: CUDA's default embedding backward adds atomically)
    torch.use_deterministic_algorithms(True, warn_only=True)
    full, saved = run(cfg_mi, device)
    resumed, _ = run(cfg_mi, device, state=saved[args.steps // 2])
    keys = ["loss", "label", "rationale", "mi", "val_accuracy"]
    diff = max(abs(resumed[-1][k] - full[-1][k]) for k in keys)
    # analytic FLOPs from the mean token lengths the loop ran (padding included as the loop pads)
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

    c = AutoConfig.from_pretrained(student)
    tok = AutoTokenizer.from_pretrained(student)
    tk = tokenize(load_splits(cfg_mi.data).train.examples[:512], tok, cfg_mi.model.max_source_length,
                  cfg_mi.model.max_target_length, "gold")
    mean = lambda key: statistics.mean(len(x) for x in getattr(tk, f"{key}_ids"))  # noqa: E731
    flops_per_example = step_flops(c, 1, round(mean("predict")), round(mean("label")), round(mean("rationale")))
    ex_s = statistics.median(rates["mi"])
    name = torch.cuda.get_device_name() if gpu else "cpu"
    peak = peak_tflops(name, args.peak_tflops) if gpu else None
    tflops = flops_per_example * ex_s / 1e12
    overhead = [m / d for m, d in zip(rates["dss"], rates["mi"])]  # DSS rate / MI rate = step-time ratio
    params = sum(p.numel() for p in AutoModelForSeq2SeqLM.from_pretrained(student).parameters())
    lines = [
        f"student: t5-v1_1-{'base' if not args.small else 'tiny'} shape, {params / 1e6:.0f}M parameters, output layer "
        f"{c.vocab_size}, built offline in {build_s:.0f} s; device {name}; bf16 autocast; batch {args.batch}; "
        f"{args.steps} steps a run; MI maxpool (weight 0.1)",
        "| figure | value |", "|---|---|",
        f"| examples/s (loop's own count, 2nd interval), median of {args.pairs} | {ex_s:.1f} |",
        f"| tokens/s (the padded batch tokens the loop ran) | {statistics.median(tokens):.0f} |",
        f"| model TFLOP/s (analytic, mean lengths {mean('predict'):.0f}/{mean('label'):.0f}/{mean('rationale'):.0f}) "
        f"| {tflops:.2f} |",
        f"| MFU | {f'{100 * tflops / peak:.1f}%' if peak else 'n/a (no GPU peak known)'} |",
        f"| peak GPU memory | {f'{peak_mem:.1f} GiB' if gpu else 'n/a (CPU)'} |",
        f"| MI step-time overhead (DSS ex/s / MI ex/s), median (min-max) of {len(overhead)} interleaved pairs "
        f"| {statistics.median(overhead):.3f} ({min(overhead):.3f}-{max(overhead):.3f}) |",
        f"| restored from step {args.steps // 2} on the device vs uninterrupted, max abs difference at step "
        f"{args.steps} | {diff:.3g} ({'equal' if diff == 0 else 'not equal'}) |",
    ]
    publish(lines, args.out, "gpu_check.py", argv, "GPU check: the project's loop on a t5-v1_1-base-shaped student",
            machine=name)
    return {"examples_per_s": ex_s, "mfu": tflops / peak if peak else None, "restore_diff": diff,
            "mi_overhead": statistics.median(overhead), "peak_mem_gib": peak_mem}


if __name__ == "__main__":
    main()
