"""Which settings change a run's floats: torch threads (pinned by the config) against the CPU
vector unit torch dispatches to (decided by the machine; ``ATEN_CPU_CAPABILITY`` can lower it).

    python benchmarks/numerics.py --steps 60 --threads 1 2 4 --capabilities default avx2 native
    python benchmarks/numerics.py --steps 60 --threads 1 2 4 --mkl-as-intel --mkl-cbwr AUTO

``--mkl-as-intel`` runs MKL's Intel code path on any x86 CPU (a one-function library, compiled with
``cc`` and preloaded, answers MKL's "is this an Intel CPU?"), so an AMD machine shows what an Intel
one computes; ``--mkl-cbwr V`` adds rows at each thread count with ``MKL_CBWR=V`` instead of the
``AUTO,STRICT`` that mmi_ray sets (``AUTO``: MKL's fixed code path without its thread-count rule).

Each setting trains the same config in a fresh process (the capability is read when torch loads)
and prints its final validation accuracy, loss and a hash of every trained parameter; settings
whose hash equals the first's give bit-identical models.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def child(config: str, steps: int, threads: int) -> None:
    import torch

    from mmi_ray.checkpoint import load_state
    from mmi_ray.config import load_config
    from mmi_ray.layout import MACHINE
    from mmi_ray.recipe import run_loop
    from mmi_ray.worker import local_env

    cfg = load_config(config, [f"train.max_steps={steps}", f"train.eval_every={steps}",
                               f"scaling.torch_threads={threads}", "run.storage_path=unused"])
    out: dict = {}

    def report(m, ckpt):
        h = hashlib.sha256()
        for k, v in sorted(load_state(ckpt)["model"].items()):
            h.update(k.encode() + v.contiguous().numpy().tobytes())
        out.update(val_accuracy=m["val_accuracy"], loss=m["loss"], params=h.hexdigest()[:16], machine=m[MACHINE],
                   capability=torch.backends.cpu.get_cpu_capability())

    t0 = time.perf_counter()
    run_loop(cfg, local_env(report))
    out["train_s"] = round(time.perf_counter() - t0, 2)  # the loop (data, model, steps, evaluation)
    print("RESULT " + json.dumps(out))


SHIM = "int mkl_serv_intel_cpu_true(void) { return 1; }\nint mkl_serv_intel_cpu(void) { return 1; }\n"


def intel_mkl_shim(folder: Path) -> Path:
    """A shared library that makes MKL (linked into torch) take its Intel code path on any x86 CPU;
    preload it with ``LD_PRELOAD``. Needs a C compiler (``cc``)."""
    src, lib = folder / "mkl_intel_shim.c", folder / "libmkl_intel_shim.so"
    src.write_text(SHIM)
    try:
        subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-o", str(lib), str(src)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise SystemExit(f"--mkl-as-intel: cannot compile the MKL shim with cc ({e})") from None
    return lib


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "tiny_props.yaml"))
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--capabilities", nargs="+", default=["native", "avx2", "default"],
                    help="ATEN_CPU_CAPABILITY values (native: leave it unset)")
    ap.add_argument("--mkl-as-intel", action="store_true", help="run MKL's Intel code path on any x86 CPU")
    ap.add_argument("--mkl-cbwr", nargs="*", default=[],
                    help="also run each thread count with MKL_CBWR set to these values (mmi_ray's: AUTO,STRICT)")
    ap.add_argument("--rounds", type=int, default=1, help="run every setting this many times, interleaved (timings)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.config, args.steps, args.threads[0])
        return []
    settings = [("native", t) for t in args.threads] + [(c, 1) for c in args.capabilities if c != "native"]
    settings += [(f"MKL_CBWR={v}", t) for v in args.mkl_cbwr for t in args.threads]
    base_env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")}
    with tempfile.TemporaryDirectory() as tmp:
        if args.mkl_as_intel:
            base_env["LD_PRELOAD"] = str(intel_mkl_shim(Path(tmp)))
        return _run(args, settings, base_env)


def _child(args, setting: tuple[str, int], base_env: dict) -> dict:
    cap, threads = setting
    env = dict(base_env)
    if cap.startswith("MKL_CBWR="):
        env["MKL_CBWR"] = cap.split("=", 1)[1]
    elif cap != "native":
        env["ATEN_CPU_CAPABILITY"] = cap
    r = subprocess.run([sys.executable, __file__, "--child", "--config", args.config, "--steps", str(args.steps),
                        "--threads", str(threads)], env=env, capture_output=True, text=True, check=True)
    return json.loads(next(x for x in r.stdout.splitlines() if x.startswith("RESULT "))[7:])


def _run(args, settings: list[tuple[str, int]], base_env: dict) -> list[dict]:
    """Each setting once per round, the rounds interleaved (order shuffled per round): the floats of
    a setting must agree across rounds; its loop time is the median [min, max] over them."""
    rng = random.Random(0)
    results: dict[tuple[str, int], list[dict]] = {s: [] for s in settings}
    for _ in range(args.rounds):
        for setting in rng.sample(settings, len(settings)) if args.rounds > 1 else settings:
            results[setting].append(_child(args, setting, base_env))
    first, machine, rows = None, "", []
    timing = "loop s" if args.rounds == 1 else f"loop s, median [min, max] of {args.rounds}"
    print(f"{'setting':<19} {'threads':>7} {'dispatch':<9} {'val acc':>8} {'loss':>10}  params hash       "
          f"same as first  {timing}")
    for (cap, threads), runs in results.items():
        res = runs[0]
        if len({r["params"] for r in runs}) != 1:
            raise SystemExit(f"{cap} at {threads} threads: rounds gave different models {[r['params'] for r in runs]}")
        first, machine = first or res["params"], machine or res["machine"]
        times = sorted(r["train_s"] for r in runs)
        rows.append({"setting": cap, "threads": threads, **res, "train_s": statistics.median(times),
                     "train_s_all": times})  # res["capability"]: what torch dispatched to
        took = f"{statistics.median(times):6.1f}" + (f" [{times[0]:.1f}, {times[-1]:.1f}]" if len(times) > 1 else "")
        print(f"{cap:<19} {threads:>7} {res['capability']:<9} {100 * res['val_accuracy']:7.1f}% {res['loss']:10.6f}  "
              f"{res['params']}  {'yes' if res['params'] == first else 'no':<13}  {took}")
    mkl = "; MKL on its Intel code path (--mkl-as-intel)" if args.mkl_as_intel else ""
    print(f"({args.steps} steps of {Path(args.config).name}; machine: {machine.rsplit(' | ', 1)[0]}{mkl})")
    return rows


if __name__ == "__main__":
    main()
