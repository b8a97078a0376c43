"""``mmi-ray train``: one training run as a Ray Train ``TorchTrainer``."""

from __future__ import annotations

from . import add_run_flags


def register(sub) -> None:
    p = sub.add_parser("train", help="one training run as a Ray Train TorchTrainer")
    p.add_argument("config", help="training config YAML (see configs/)")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. loss.mi_weight=0.2")
    add_run_flags(p, "no per-evaluation lines", "also Ray Train's own per-report log lines")
    p.set_defaults(fn=run)


def run(args) -> int:
    from ..config import check_paths, load_config
    from ..data import load_splits
    from ..model import build_tokenizer, check_student, check_vocabulary
    from ..train import run_training

    cfg = load_config(args.config, args.overrides)
    check_paths(cfg, args.config)
    check_student(cfg, args.config)
    # fail on bad data or model names here, before any Ray work starts
    check_vocabulary(cfg, load_splits(cfg.data), args.config)
    build_tokenizer(cfg.model)
    summary = run_training(cfg, source=args.config, verbose=not args.quiet, ray_logs=args.verbose, rerun=args.rerun)
    f = summary["final"]
    print(f"[mmi-ray] done: {summary['run_dir']}")
    print(f"[mmi-ray] final step {f['step']}: val_accuracy {100 * f['val_accuracy']:.2f}% "
          f"(best {100 * summary['best_val_accuracy']:.2f}% at step {summary['best_step']})")
    return 0
