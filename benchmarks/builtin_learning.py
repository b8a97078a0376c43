"""What a tiny student learns on the built-in task: label-only vs DSS vs MI, in-process (no Ray).

    python benchmarks/builtin_learning.py [key=value overrides of configs/tiny_builtin.yaml] \
        --steps 600 --seeds 0 1 --variants label dss mi
    # the ablation's family (overrides go first: --seeds / --variants take every value after them)
    python benchmarks/builtin_learning.py data.builtin.tasks=[props] model.max_target_length=64 \
        --steps 800 --seeds 0 1 2 --variants label dss

Prints one line per evaluation and a final table (validation accuracy per variant and seed).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from mmi_ray.config import load_config
from mmi_ray.recipe import run_loop
from mmi_ray.worker import local_env

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "label": ["loss.label_weight=1.0", "loss.rationale_weight=0", "loss.mi_weight=0"],
    "dss": ["loss.mi_weight=0"],
    "mi": ["loss.mi_weight=0.1", "loss.mi_estimator=maxpool"],
    "infonce": ["loss.mi_weight=0.1", "loss.mi_estimator=infonce"],
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--variants", nargs="+", default=["label", "dss"], choices=sorted(VARIANTS))
    ap.add_argument("--config", default=str(REPO / "configs/tiny_builtin.yaml"))
    ap.add_argument("--out", default=None, help="append JSON lines of results here")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    rows = []
    for variant in args.variants:
        for seed in args.seeds:
            cfg = load_config(args.config, [f"train.max_steps={args.steps}", f"train.seed={seed}",
                                            *VARIANTS[variant], *args.overrides])
            history = []

            def report(m, _ckpt, history=history, variant=variant, seed=seed):
                history.append(m)
                tasks = " ".join(f"{k[13:]} {100 * v:.0f}" for k, v in m.items() if k.startswith("val_accuracy_"))
                print(f"{variant:8s} seed {seed} step {m['step']:5d} label {m['label']:.3f} "
                      f"rat {m['rationale']:.3f} val {100 * m['val_accuracy']:.1f}% ({tasks}) "
                      f"{m['examples_per_s']:.0f} ex/s", flush=True)

            t0 = time.perf_counter()
            run_loop(cfg, local_env(report))
            best = max(h["val_accuracy"] for h in history)
            rows.append({"variant": variant, "seed": seed, "final": history[-1]["val_accuracy"], "best": best,
                         "wall_s": time.perf_counter() - t0, "overrides": args.overrides, "steps": args.steps,
                         **{k: v for k, v in history[-1].items() if k.startswith("val_accuracy_")}})
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(rows[-1]) + "\n")
    print(f"\n{'variant':10s} {'seed':>4s} {'final':>7s} {'best':>7s} {'wall s':>7s}")
    for r in rows:
        print(f"{r['variant']:10s} {r['seed']:>4d} {100 * r['final']:>6.1f}% {100 * r['best']:>6.1f}% {r['wall_s']:>7.0f}")


if __name__ == "__main__":
    main()
