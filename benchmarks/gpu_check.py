"""The GPU check: the paper workload's shapes through the project's own Ray Train path, ready for the
first lent GPU (one script, about 5 minutes on one H100).

A t5-v1_1-base-shaped student (768 wide, 12 + 12 layers, T5's 32,128-entry output layer; a Unigram
tokenizer trained offline on the data by ``mmi_ray.offline_student``: no download), bf16 autocast,
the released max-pool MI term, on the DSS CQA files when they are here (``--data``) or else on
generated rows of the same shape (inputs up to 1,024 tokens, rationales up to 256). Prints:

- examples/s and tokens/s (real tokens, not padding: the loop's own count; its interval ends with a
  ``torch.cuda.synchronize``) through Ray Train on one GPU, and on every GPU of the machine (DDP);
- MFU from those real token counts (``mmi_ray/sizing.py``'s FLOPs over the GPU's datasheet peak);
- peak GPU memory (``torch.cuda.max_memory_allocated`` in the worker) beside ``mmi-ray plan``'s estimate;
- the restore check (a run resumed from its mid-way checkpoint against the uninterrupted run) and the
  determinism check (the same run twice, ``train.deterministic`` on: eager attention), and what the
  deterministic kernels cost against SDPA (``train.deterministic: false``);
- a decoder-only student of Qwen2.5-0.5B's shape (``--causal``, on by default; offline Qwen2 weights):
  peak GPU memory beside ``mmi-ray plan``'s estimate and examples/s, for LoRA (r 16) and full
  fine-tuning with eager attention (``train.deterministic``), and full fine-tuning with SDPA;
- GPUs shared by trials (``--share 0.25``): a sweep of 1/share t5-v1_1-small-shaped trials at
  ``resources.gpus_per_worker: share`` on one GPU (the sweep's own concurrency: all at once), their
  examples/s together against one such run alone on the GPU, and the peak memory of each.

    python benchmarks/gpu_check.py [--steps 40] [--batch 16] [--data DSS_DIR] [--share 0.25] [--no-causal] [--out BENCHMARKS.md]
    python benchmarks/gpu_check.py --small      # a tiny student on CPU: checks the script, no figure
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

import torch
from bench_out import report_figures

from mmi_ray.config import load_config
from mmi_ray.offline_student import build_causal_student, build_student
from mmi_ray.recipe import run_loop
from mmi_ray.sizing import (
    data_lengths,
    gib,
    gpu_by_name,
    memory,
    shape_from_hf,
    shape_of,
    step_flops,
)
from mmi_ray.worker import WorkerEnv

REPO = Path(__file__).resolve().parents[1]
DSS = REPO.parent / "shared" / "data" / "dss" / "datasets"
BASE = {"d_model": 768, "num_layers": 12, "num_heads": 12, "d_ff": 2048, "model_vocab": 32128}
T5_SMALL = {"d_model": 512, "num_layers": 8, "num_heads": 6, "d_ff": 1024, "model_vocab": 32128}
SMALL = {"d_model": 32, "num_layers": 1, "num_heads": 2, "d_ff": 64, "model_vocab": 512}
QWEN_05B = {"hidden": 896, "layers": 24, "heads": 14, "kv_heads": 2, "ff": 4864, "model_vocab": 151936}
CAUSAL_SMALL = {"hidden": 32, "layers": 1, "heads": 2, "kv_heads": 1, "ff": 64, "model_vocab": 512}
CAUSAL_VARIANTS = [("LoRA r 16, eager (deterministic)", ["model.lora.r=16", "train.deterministic=true"]),
                   ("full, eager (deterministic)", ["train.deterministic=true"]),
                   ("full, SDPA (deterministic false)", ["train.deterministic=false"])]


def generated_rows(path: Path, n: int, small: bool) -> Path:
    """Rows shaped like the DSS sets at the paper's limits: inputs of 100-900 words (cut at 1,024
    tokens), rationales of 20-220 words, one-word labels."""
    rng = random.Random(0)
    words = [f"w{i}" for i in range(400)]
    hi_in, hi_r = (60, 20) if small else (900, 220)
    with open(path, "w") as f:
        for i in range(n):
            text = " ".join(rng.choices(words, k=rng.randint(hi_in // 9, hi_in)))
            rat = " ".join(rng.choices(words, k=rng.randint(hi_r // 11, hi_r)))
            f.write(json.dumps({"input": text, "label": rng.choice(words), "rationale": rat,
                                "split": "valid" if i % 20 == 0 else "train"}) + "\n")
    return path


def in_process(cfg, device: torch.device, state: dict | None = None) -> tuple[list[dict], dict]:
    """One run of the loop in this process on ``device``: (its metrics, its checkpoints' states by step)."""
    from mmi_ray.checkpoint import load_state

    out, saved = [], {}

    def report(metrics, ckpt_dir):
        out.append(metrics)
        if ckpt_dir is not None:
            saved[metrics["step"]] = load_state(ckpt_dir)

    run_loop(cfg, WorkerEnv(0, 1, device, lambda: state, report, lambda m: m.to(device)))
    return out, saved


def causal_rows(tmp: Path, texts: list[str], data: list[str], device: torch.device, steps: int, batch: int,
                small: bool) -> tuple[list[str], list[dict]]:
    """The decoder-only student (Qwen2.5-0.5B's shape, or a tiny one with ``small``) in this process on
    ``device``, one run a variant: its peak memory and examples/s beside the plan's estimate (eager
    attention counted where the run attends eagerly: deterministic, on a GPU)."""
    student = build_causal_student(tmp / "causal-student", ["predict:", "explain:", *texts],
                                   vocab_size=300 if small else 8000, **(CAUSAL_SMALL if small else QWEN_05B))
    base = [*data, f"model.name={student}", "model.max_source_length=1024", "model.max_target_length=256",
            f"train.batch_size={batch}", f"train.max_steps={steps}", f"train.eval_every={steps}", "train.precision=bf16",
            "loss.mi_weight=0.1", "loss.mi_estimator=maxpool", "data.max_eval_examples=16", "train.eval_batch_size=16",
            "train.max_new_tokens=8", "optim.lr=1e-4", f"run.storage_path={tmp / 'causal-runs'}"]
    rows, results = [], []
    for label, ov in CAUSAL_VARIANTS:
        cfg = load_config(REPO / "configs" / "cqa_qwen2.5_0.5b.yaml", [*base, *ov])
        n, shape = data_lengths(cfg), shape_of(cfg.model)
        eager = cfg.train.deterministic and device.type == "cuda"
        est = memory(shape, n.src_max, n.label_max, n.rationale_max, batch, "bf16", "maxpool", eager=eager)
        what = f"| decoder-only ({shape.params() / 1e6:.0f}M, {label}, batch {batch}): peak GPU memory / estimate; examples/s |"
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        try:
            out, _ = in_process(cfg, device)
        except torch.cuda.OutOfMemoryError:  # a figure too: the estimate said it would fit, or not
            rows.append(f"{what} out of memory / {gib(est['total'])}; - |")
            results.append({"variant": label, "peak_gib": None, "estimate_gib": est["total"] / 2**30, "oom": True})
            continue
        m = out[-1]
        peak = f"{m['gpu_peak_gib']:.1f} GiB" if "gpu_peak_gib" in m else "n/a (CPU)"
        rows.append(f"{what} {peak} / {gib(est['total'])}; {m['examples_per_s']:.1f} |")
        results.append({"variant": label, "peak_gib": m.get("gpu_peak_gib"), "estimate_gib": est["total"] / 2**30,
                        "examples_per_s": m["examples_per_s"], "lora": cfg.model.lora.r, "eager": eager})
    return rows, results


def through_ray(cfg) -> dict:
    """A Ray Train run of ``cfg``; its last evaluation's metrics (every worker's counts summed)."""
    from mmi_ray.layout import read_metrics
    from mmi_ray.train import run_training

    summary = run_training(cfg, "gpu_check", verbose=False, rerun=True)
    return read_metrics(summary["run_dir"])[-1]


def share_spec(path: Path, share: float, overrides: list[str]) -> Path:
    """A sweep of 1/share trials (MI weights apart) at ``resources.gpus_per_worker: share``, no
    scheduler, no confirmation: every trial trains the whole budget, side by side."""
    import yaml

    n = round(1 / share)
    ov = dict(x.split("=", 1) for x in overrides)
    spec = {"name": "gpu-share", "base": str(REPO / "configs" / "cqa_t5_base.yaml"),
            "overrides": {k: yaml.safe_load(v) for k, v in ov.items() if not k.startswith(("scaling.", "loss.mi_weight"))},
            "search": {"loss.mi_weight": {"type": "choice", "values": [round(0.05 * (i + 1), 2) for i in range(n)]}},
            "points_to_evaluate": [{"loss.mi_weight": round(0.05 * (i + 1), 2)} for i in range(n)],
            "num_trials": n, "seeds": [0], "scheduler": {"type": "none"},
            "resources": {"num_workers": 1, "cpus_per_worker": 1, "use_gpu": True, "gpus_per_worker": share},
            "storage_path": str(path.parent / "share-runs")}
    path.write_text(yaml.safe_dump(spec))
    return path


def shared_gpu(tmp: Path, share: float, ov: list[str], alone: dict) -> list[str]:
    """A sweep of 1/share trials sharing one GPU: each trial's examples/s and peak memory, and all of
    them together against ``alone`` (one run of the same shape with the GPU to itself)."""
    from mmi_ray.layout import read_metrics
    from mmi_ray.sweep import load_sweep, run_sweep

    sweep = load_sweep(share_spec(tmp / "share.yaml", share, ov))
    t0 = time.perf_counter()
    summary = run_sweep(sweep, verbose=0, rerun=True)
    wall = time.perf_counter() - t0
    runs = [read_metrics(r)[-1] for r in sorted((Path(summary["sweep_dir"]) / "runs").iterdir())]
    together = sum(m["examples_per_s"] for m in runs)
    each = ", ".join(f"{m['examples_per_s']:.1f}" for m in runs)
    return [f"| {len(runs)} trials at gpus_per_worker {share:g} on one GPU: examples/s each (2nd interval) | "
            f"{each} |",
            f"| ... together / one t5-small-shaped run alone ({alone['examples_per_s']:.1f}) | "
            f"{together:.1f} / {alone['examples_per_s']:.1f} = {together / alone['examples_per_s']:.2f}x |",
            f"| ... peak GPU memory each / alone | {max(m.get('gpu_peak_gib', 0) for m in runs):.1f} / "
            f"{alone.get('gpu_peak_gib', 0):.1f} GiB (the sweep: {wall:.0f} s, "
            f"{summary['status_counts']}) |"]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40, help="optimizer steps a run (evaluations at half and at the end)")
    ap.add_argument("--batch", type=int, default=16, help="examples per worker per step")
    ap.add_argument("--data", default=str(DSS), help="the DSS datasets/ folder (its cqa), else generated rows")
    ap.add_argument("--small", action="store_true", help="a tiny student on CPU: checks the script")
    ap.add_argument("--share", type=float, default=0.25,
                    help="the GPU share per trial for the shared-GPU rows (0: skip them; needs a GPU)")
    ap.add_argument("--causal", action=argparse.BooleanOptionalAction, default=True,
                    help="the decoder-only rows (Qwen2.5-0.5B's shape; --no-causal: skip them)")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.small:
        args.steps, args.batch = 4, 4
    gpus = torch.cuda.device_count() if not args.small else 0
    device = torch.device("cuda" if gpus else "cpu")
    tmp = Path(tempfile.mkdtemp(prefix="mmi-gpu-check-"))
    dss = Path(args.data) / "cqa"
    if dss.is_dir() and not args.small:
        data = ["data.dataset=cqa", f"data.data_dir={args.data}", "data.max_train_examples=4000"]
        from mmi_ray.data.dss import load_dss_split

        rows = load_dss_split("cqa", args.data, "train").examples[:2000]
        texts = [t for e in rows for t in (e.input, e.label, e.rationale)]
        where = f"DSS CQA ({args.data})"
    else:
        path = generated_rows(tmp / "rows.jsonl", 600 if args.small else 2000, args.small)
        data = ["data.dataset=custom", f"data.path={path}"]
        texts = [json.loads(x)[k] for x in path.read_text().splitlines() for k in ("input", "label", "rationale")]
        where = "generated rows of the DSS shape (inputs to 1,024 tokens, rationales to 256)"
    t0 = time.perf_counter()
    student = build_student(tmp / "student", ["predict:", "explain:", *texts], vocab_size=8000 if not args.small else 300,
                            **(SMALL if args.small else BASE))
    build_s = time.perf_counter() - t0
    ov = [*data, f"model.name={student}", "model.max_source_length=1024", "model.max_target_length=256",
          f"train.batch_size={args.batch}", f"train.max_steps={args.steps}", f"train.eval_every={args.steps // 2}",
          "train.precision=bf16", "loss.mi_weight=0.1", "loss.mi_estimator=maxpool", "data.max_eval_examples=64",
          "train.eval_batch_size=64", "train.max_new_tokens=8", f"run.storage_path={tmp / 'runs'}", "optim.lr=1e-4",
          f"scaling.use_gpu={bool(gpus)}", "scaling.cpus_per_worker=1"]
    cfg = load_config(REPO / "configs" / "cqa_t5_base.yaml", ov)
    shape = shape_from_hf(json.loads((student / "config.json").read_text()), "the offline student")
    n = data_lengths(cfg)

    # 1. throughput through Ray Train: one GPU, then every GPU (DDP)
    counts = sorted({1, gpus}) if gpus else [1]
    ray_rows = {}
    for k in counts:
        m = through_ray(load_config(REPO / "configs" / "cqa_t5_base.yaml", [*ov, f"scaling.num_workers={k}"]))
        ray_rows[k] = m
    gpu = gpu_by_name(torch.cuda.get_device_name()) if gpus else None
    name = torch.cuda.get_device_name() if gpus else "cpu"
    one = ray_rows[1]
    flops_per_example = step_flops(shape, 1, n.src, n.label, n.rationale)  # real tokens: no padding counted
    tflops = flops_per_example * one["examples_per_s"] / 1e12
    est = memory(shape, n.src_max, n.label_max, n.rationale_max, args.batch, "bf16", "maxpool")

    # 2. restore and determinism, in this process on the device: deterministic (eager attention) twice,
    #    a resume from the mid-way checkpoint, and the same run with train.deterministic false (SDPA)
    full, saved = in_process(cfg, device)
    again, _ = in_process(cfg, device)
    resumed, _ = in_process(cfg, device, state=saved[args.steps // 2])
    fast_cfg = load_config(REPO / "configs" / "cqa_t5_base.yaml", [*ov, "train.deterministic=false"])
    fast, _ = in_process(fast_cfg, device)
    keys = ["loss", "label", "rationale", "mi", "val_accuracy"]
    restore_diff = max(abs(resumed[-1][k] - full[-1][k]) for k in keys)
    repeat_diff = max(abs(again[-1][k] - full[-1][k]) for k in keys)
    eager_cost = fast[-1]["examples_per_s"] / full[-1]["examples_per_s"]

    # 3. GPUs shared by trials: t5-small-shaped trials, 1/share of them on one GPU
    share_rows = []
    if args.share and gpus:
        small = build_student(tmp / "student-small", ["predict:", "explain:", *texts], vocab_size=8000, **T5_SMALL)
        small_ov = [*ov, f"model.name={small}"]
        alone = through_ray(load_config(REPO / "configs" / "cqa_t5_base.yaml", small_ov))
        share_rows = shared_gpu(tmp, args.share, small_ov, alone)
    elif args.share:
        from mmi_ray.sweep import load_sweep

        load_sweep(share_spec(tmp / "share.yaml", args.share, ov))  # the spec validates even here
        share_rows = [f"| trials sharing one GPU (gpus_per_worker {args.share:g}) | n/a (no GPU) |"]

    causal, causal_results = (causal_rows(tmp, texts, data, device, args.steps, max(1, args.batch // 4), args.small)
                              if args.causal else ([], []))
    peak_text = (f"{one['gpu_peak_gib']:.1f} GiB" if "gpu_peak_gib" in one else "n/a (CPU)")
    lines = [
        f"student: t5-v1_1-{'base' if not args.small else 'tiny'} shape, {shape.params() / 1e6:.0f}M parameters, "
        f"output layer {shape.vocab}, built offline in {build_s:.0f} s; data: {where}; real tokens a row "
        f"{n.src:.0f} in / {n.label:.0f} label / {n.rationale:.0f} rationale (longest {n.src_max}/{n.label_max}/"
        f"{n.rationale_max}); device {name} x {max(gpus, 1)}; bf16 autocast; batch {args.batch} a worker; "
        f"{args.steps} steps a run; MI maxpool (weight 0.1)",
        "| figure | value |", "|---|---|",
        *[f"| examples/s through Ray Train, {k} worker(s) (2nd interval) | {ray_rows[k]['examples_per_s']:.1f} |"
          for k in counts],
        *[f"| real tokens/s through Ray Train, {k} worker(s) | {ray_rows[k]['tokens_per_s']:.0f} |" for k in counts],
        f"| model TFLOP/s on real tokens (1 worker) | {tflops:.2f} |",
        f"| MFU (bf16 datasheet peak {gpu.bf16_tflops if gpu else 'n/a'} TFLOP/s) | "
        f"{f'{100 * tflops / gpu.bf16_tflops:.1f}%' if gpu else 'n/a (no known GPU)'} |",
        f"| peak GPU memory (worker) / mmi-ray plan's estimate | {peak_text} / {gib(est['total'])} |",
        f"| restored from step {args.steps // 2} vs uninterrupted, max abs difference | {restore_diff:.3g} "
        f"({'equal' if restore_diff == 0 else 'NOT equal'}) |",
        f"| the same run twice (train.deterministic, eager attention), max abs difference | {repeat_diff:.3g} "
        f"({'equal' if repeat_diff == 0 else 'NOT equal'}) |",
        f"| SDPA (deterministic false) ex/s over eager (deterministic) ex/s | {eager_cost:.2f} |",
        *share_rows,
        *causal,
    ]
    report_figures(lines, args.out, "gpu_check.py", argv, "GPU check: the paper workload's shapes through Ray Train",
            machine=name)
    return {"examples_per_s": one["examples_per_s"], "mfu": tflops / gpu.bf16_tflops if gpu else None,
            "restore_diff": restore_diff, "repeat_diff": repeat_diff, "peak_gib": one.get("gpu_peak_gib"),
            "estimate_gib": est["total"] / 2**30, "sdpa_over_eager": eager_cost, "workers": counts,
            "causal": causal_results}


if __name__ == "__main__":
    main()
