"""One evaluation's figures beyond accuracy, for label-only, DSS and MI on the built-in `props` task:
calibration (ECE), rationale BLEU / ROUGE-L, faithfulness, and what generating the rationales costs
against the in-loop training time. In-process (no Ray).

    python benchmarks/beyond_accuracy.py [--steps 400] [--rationales 60] [--out BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from mmi_ray.config import load_config
from mmi_ray.recipe import run_loop
from mmi_ray.worker import local_env

REPO = Path(__file__).resolve().parents[1]
METHODS = {
    "label-only": ["loss.rationale_weight=0", "loss.mi_weight=0"],
    "DSS": ["loss.mi_weight=0"],
    "MI (maxpool)": ["loss.mi_weight=0.1", "loss.mi_estimator=maxpool"],
}
COLUMNS = ["val_accuracy", "val_ece", "val_ece15", "val_rationale_bleu", "val_rationale_rougeL",
           "val_rationale_answered", "val_rationale_true", "val_rationale_faithful"]


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--rationales", type=int, default=60, help="train.eval_rationales")
    ap.add_argument("--config", default=str(REPO / "configs/tiny_props.yaml"))
    ap.add_argument("--out", default=None, help="append the table to this Markdown file")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args(argv)
    rows = []
    for method, ov in METHODS.items():
        cfg = load_config(args.config, [f"train.max_steps={args.steps}", f"train.eval_every={args.steps}",
                                        f"train.eval_rationales={args.rationales}", *ov, *args.overrides])
        out: list[dict] = []
        t0 = time.perf_counter()
        run_loop(cfg, local_env(lambda m, _c, out=out: out.append(m)))
        m = out[-1]
        rows.append({"method": method, **{k: m.get(k) for k in COLUMNS}, "rationale_s": m["val_rationale_s"],
                     "train_s": m["train_time_s"], "wall_s": time.perf_counter() - t0})
    head = (f"| method | {' | '.join(c.removeprefix('val_') for c in COLUMNS)} | rationale eval s | in-loop train s "
            "| cost |")
    lines = [f"`python benchmarks/beyond_accuracy.py --steps {args.steps} --rationales {args.rationales}` "
             f"({time.strftime('%Y-%m-%d')}; one evaluation of {args.rationales} validation rationales after "
             f"{args.steps} steps, `configs/tiny_props.yaml`, one seed)", "", head,
             "|" + " --- |" * (len(COLUMNS) + 4)]
    for r in rows:
        cells = [f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in COLUMNS]
        lines.append(f"| {r['method']} | {' | '.join(cells)} | {r['rationale_s']:.2f} | {r['train_s']:.1f} | "
                     f"{100 * r['rationale_s'] / r['train_s']:.1f}% of one run, per evaluation |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        with open(args.out, "a") as f:
            f.write("\n### Beyond accuracy (built-in `props`)\n\n" + text + "\n")
    return rows


if __name__ == "__main__":
    main()
