"""Which settings change a run's floats: torch threads (pinned by the config) against the CPU
vector unit torch dispatches to (decided by the machine; ``ATEN_CPU_CAPABILITY`` can lower it).

    python benchmarks/numerics.py --steps 60 --threads 1 2 4 --capabilities default avx2 native

Each setting trains the same config in a fresh process (the capability is read when torch loads)
and prints its final validation accuracy, loss and a hash of every trained parameter; settings
whose hash equals the first's give bit-identical models.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
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

    run_loop(cfg, local_env(report))
    print("RESULT " + json.dumps(out))


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "tiny_props.yaml"))
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--capabilities", nargs="+", default=["native", "avx2", "default"],
                    help="ATEN_CPU_CAPABILITY values (native: leave it unset)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.config, args.steps, args.threads[0])
        return []
    settings = [("native", t) for t in args.threads] + [(c, 1) for c in args.capabilities if c != "native"]
    first, machine, rows = None, "", []
    print(f"{'capability':<12} {'threads':>7} {'dispatch':<9} {'val acc':>8} {'loss':>10}  params hash       same as first")
    for cap, threads in settings:
        env = {k: v for k, v in os.environ.items() if k != "ATEN_CPU_CAPABILITY"}
        if cap != "native":
            env["ATEN_CPU_CAPABILITY"] = cap
        r = subprocess.run([sys.executable, __file__, "--child", "--config", args.config, "--steps", str(args.steps),
                            "--threads", str(threads)], env=env, capture_output=True, text=True, check=True)
        res = json.loads(next(x for x in r.stdout.splitlines() if x.startswith("RESULT "))[7:])
        first, machine = first or res["params"], machine or res["machine"]
        rows.append({"setting": cap, "threads": threads, **res})  # res["capability"]: what torch dispatched to
        print(f"{cap:<12} {threads:>7} {res['capability']:<9} {100 * res['val_accuracy']:7.1f}% {res['loss']:10.6f}  "
              f"{res['params']}  {'yes' if res['params'] == first else 'no'}")
    print(f"({args.steps} steps of {Path(args.config).name}; machine: {machine.rsplit(' | ', 1)[0]})")
    return rows


if __name__ == "__main__":
    main()
