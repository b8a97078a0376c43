"""What a run trained on, and the switches that make its floats the same wherever the project can.

Float results depend on the run's config (seed, threads), which the project pins, and on the
machine (CPU model and vector unit, the BLAS torch was built with, the GPU), which it cannot: so
every run records ``describe()`` with its metrics, and ``mmi-ray analyze`` lists the machines a
report's runs trained on. Plain Python and torch (no Ray).
"""

from __future__ import annotations

import os
import platform
import re
import sys
import warnings

import torch


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else what ``platform`` says)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return re.sub(r"\s+", " ", line.split(":", 1)[1]).strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe(device: torch.device | None = None) -> str:
    """One line: CPU model and cores, torch build (CPU vector unit, BLAS, CUDA), threads, GPU.
    E.g. ``AMD EPYC x2 | torch 2.13.0+cpu AVX512 mkl AUTO,STRICT | 1 thread`` (after ``mkl``: its
    reproducibility mode, ``MKL_CBWR``)."""
    parts = [f"{cpu_model()} x{os.cpu_count()}"]
    build = f"torch {torch.__version__} {torch.backends.cpu.get_cpu_capability()}"
    build += f" mkl {os.environ.get('MKL_CBWR') or 'CNR-off'}" if torch.backends.mkl.is_available() else ""
    build += f" cuda {torch.version.cuda}" if torch.version.cuda else ""
    parts.append(build)
    n = torch.get_num_threads()
    parts.append(f"{n} thread{'s' * (n != 1)}")
    if device is not None and device.type == "cuda":
        parts.append(torch.cuda.get_device_name(device))
    return " | ".join(parts)


def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 in hardware: CPUs (autocast runs there), and GPUs from Ampere
    on. V100 and T4 only emulate it (``is_bf16_supported`` says yes unless emulation is excluded), at
    a fraction of their fp16/fp32 speed."""
    if device.type != "cuda":
        return True
    return torch.cuda.is_bf16_supported(including_emulation=False)


def resolve_precision(precision: str, gpu_bf16_native: bool | None) -> str:
    """``train.precision`` resolved: ``bf16`` and ``fp32`` as written; ``auto`` is bf16 on a GPU that
    computes bf16 natively, fp32 on CPUs (``gpu_bf16_native`` None) and on GPUs that would emulate it.
    The one rule for a run (``uses_bf16``) and for ``mmi-ray plan`` (``sizing.precision_on``)."""
    if precision == "auto":
        return "bf16" if gpu_bf16_native else "fp32"
    return precision


def uses_bf16(precision: str, device: torch.device) -> bool:
    """Whether a run of ``train.precision`` on ``device`` autocasts to bf16 (``resolve_precision``)."""
    return resolve_precision(precision, bf16_native(device) if device.type == "cuda" else None) == "bf16"


def autocast(precision: str, device: torch.device):
    """The context the forward passes run in: bf16 autocast where ``uses_bf16``, else nothing."""
    from contextlib import nullcontext

    return torch.autocast(device.type, dtype=torch.bfloat16) if uses_bf16(precision, device) else nullcontext()


def attention_kernel(deterministic: bool, device: torch.device) -> str:
    """The student's attention implementation. T5 attends through SDPA in transformers 5, and with
    its float position-bias mask CUDA's SDPA takes the memory-efficient kernel, whose backward is not
    deterministic (under ``use_deterministic_algorithms(warn_only=True)`` it only warns): with
    ``train.deterministic`` on a GPU the student attends eagerly (plain matmul + softmax, deterministic;
    slower and more memory: ``benchmarks/gpu_check.py`` measures both). CPU SDPA kernels are
    deterministic, so CPU runs keep SDPA."""
    return "eager" if deterministic and device.type == "cuda" else "sdpa"


def pin_numerics(threads: int, deterministic: bool, device: torch.device) -> None:
    """What the project controls of a run's floats: its intra-op threads (from the config, never
    from the machine's core count) and, with ``deterministic``, torch's deterministic kernels where
    torch has them (cuBLAS needs its workspace setting for that; an op without a deterministic
    kernel warns and runs as it is)."""
    torch.set_num_threads(threads)
    if not deterministic:
        return
    if torch.backends.mkl.is_available() and "STRICT" not in os.environ.get("MKL_CBWR", "").upper():
        warnings.warn(f"MKL_CBWR={os.environ.get('MKL_CBWR', '')!r} is set without STRICT: on Intel CPUs this "
                      "run's floats depend on its thread count (mmi_ray sets MKL_CBWR=AUTO,STRICT unless told "
                      "otherwise; see docs/reproducibility.md)", stacklevel=2)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    deterministic_kernels()


def deterministic_kernels() -> None:
    """``torch.use_deterministic_algorithms(True, warn_only=True)``, without its import of
    torch._inductor (to set inductor's own flag): 2 s of every new training process on these CPUs,
    for a compiler no run uses. Inductor's flag is still set, through the variable it reads when it
    is imported; once it is imported, the public call does both."""
    if "torch._inductor" in sys.modules or not hasattr(torch._C, "_set_deterministic_algorithms"):
        torch.use_deterministic_algorithms(True, warn_only=True)
        return
    os.environ["TORCHINDUCTOR_DETERMINISTIC"] = "1"
    torch._C._set_deterministic_algorithms(True, warn_only=True)
