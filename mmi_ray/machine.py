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
    torch.use_deterministic_algorithms(True, warn_only=True)
