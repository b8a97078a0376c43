"""mmi-ray: chain-of-thought distillation with the MI method on Ray: train, sweep, confirm, analyze, table, export, predict, evaluate, plan, data, rationales.

Errors in user input print as one line each (file and key named) with exit code 2, no traceback.
Importing this module changes nothing in the environment; Ray's is set where Ray is started
(mmi_ray/ray_init.py).
"""

from __future__ import annotations

import argparse
import os
import sys

from .config import DSS_NAMES
from .errors import MmiError, root_cause
from .layout import EXPORT_SOURCES, MODEL_SOURCES
from .storage import absolute, exists, join


def cmd_train(args) -> int:
    from .config import check_paths, load_config
    from .data import load_splits
    from .model import build_tokenizer, check_fits
    from .train import run_training

    cfg = load_config(args.config, args.overrides)
    check_paths(cfg, args.config)
    # fail on bad data or model names here, before any Ray work starts
    check_fits(cfg, load_splits(cfg.data), args.config)
    build_tokenizer(cfg.model)
    summary = run_training(cfg, source=args.config, verbose=not args.quiet, ray_logs=args.verbose, rerun=args.rerun)
    f = summary["final"]
    print(f"[mmi-ray] done: {summary['run_dir']}")
    print(f"[mmi-ray] final step {f['step']}: val_accuracy {100 * f['val_accuracy']:.2f}% "
          f"(best {100 * summary['best_val_accuracy']:.2f}% at step {summary['best_step']})")
    return 0


def cmd_data(args) -> int:
    from pathlib import Path

    if args.name not in DSS_NAMES or args.settings:
        if args.data_dir:
            raise MmiError(f"--data-dir is for the DSS datasets ({', '.join(DSS_NAMES)}); '{args.name}' is read as a custom dataset")
        from .teacher.cli import cmd_data_custom

        return cmd_data_custom(args)
    if not args.data_dir:
        raise MmiError(f"{args.name}: --data-dir (the DSS datasets/ folder) is required for a DSS dataset")

    from .data.dss import DSS_DATASETS, available_splits, load_dss_split
    from .errors import DataError
    from .metrics import label_correct

    root = Path(args.data_dir).expanduser() / args.name
    if not root.is_dir():
        raise DataError(f"{root}: folder not found (--data-dir must hold the DSS '{args.name}' folder)")
    have = available_splits(args.name, args.data_dir)
    if not have:
        raise DataError(f"{root}: no {args.name}_{{train,valid,test}}.json files")
    print(f"{args.name}: {root}")
    print(f"{'split':<7} {'rows':>7} {'unparsed':>9} {'teacher acc':>12}")
    for split in have:
        sp = load_dss_split(args.name, args.data_dir, split)
        acc = sum(label_correct(e.teacher_label, e.label, e.kind) for e in sp.examples) / len(sp)
        print(f"{split:<7} {len(sp):>7} {sp.unparsed:>9} {100 * acc:>11.2f}%")
    if "valid" not in DSS_DATASETS[args.name].splits:
        print("note: no validation split; training carves data.valid_fraction of train off with data.split_seed")
    return 0


def cmd_sweep(args) -> int:
    from .sweep import load_sweep, run_sweep
    from .sweep.summary import print_summary

    sweep = load_sweep(args.spec, args.overrides)
    from .config import check_paths

    check_paths(sweep.base, f"{args.spec} (base)")
    for key, p in sweep.spec.search.items():  # a searched student or tokenizer: each choice, before any trial
        if key in ("model.name", "model.tokenizer") and p.type == "choice":
            for v in p.values:
                check_paths(sweep.trial_config({key: v}, sweep.spec.seeds[0], "/tmp"), f"{args.spec} (search.{key})")
    if sweep.base.data.dataset == "custom":  # your own rows: a bad row fails here, not in every trial
        from .data import load_splits
        from .model import check_fits

        check_fits(sweep.base, load_splits(sweep.base.data), f"{args.spec} (base)")
    summary = run_sweep(sweep, resume=args.resume, verbose=0 if args.quiet else 2 if args.verbose else 1,
                        rerun=args.rerun)
    print_summary(summary)
    if summary.get("confirmation"):
        from .sweep.confirm import print_headline

        print_headline(summary["confirmation"], sweep.spec.objective.metric, sweep.spec.objective.mode)
    if not args.no_report:
        from .analysis.report import build_report

        report = build_report([summary["sweep_dir"]], to_storage=args.report_to_storage)
        where = f" and {report['uploaded']}" if report.get("uploaded") else ""
        print(f"[mmi-ray] report: {report['report']}{where} (tables, comparisons, {len(report['plots'])} plots); "
              f"again any time with: mmi-ray analyze {summary['sweep_dir']}")
    return 0


def cmd_confirm(args) -> int:
    """Confirmation runs on an existing sweep folder, with the spec it was started with."""

    from pydantic import ValidationError

    from .config import format_validation_error, set_dotted
    from .errors import ConfigError
    from .layout import SPEC_FILE, read_spec
    from .sweep.confirm import print_headline, run_confirmation
    from .sweep.spec import Confirm, LoadedSweep, SweepSpec

    sweep_dir = absolute(args.sweep_dir)
    source = join(sweep_dir, SPEC_FILE)
    if not exists(source):
        raise MmiError(f"{args.sweep_dir}: no {SPEC_FILE}: not a sweep folder")
    spec_raw, base_raw = read_spec(sweep_dir)
    confirm = dict(spec_raw.get("confirm") or {})
    if args.top_k is not None:
        confirm["top_k"] = args.top_k
    if args.seeds:
        confirm["seeds"] = args.seeds
    try:
        set_dotted(spec_raw, ["confirm"], Confirm.model_validate(confirm).model_dump())
        sweep = LoadedSweep(SweepSpec.model_validate(spec_raw), base_raw, source)
    except ValidationError as e:
        raise ConfigError("command line", format_validation_error(e)) from None
    state = run_confirmation(sweep, sweep_dir, sweep.spec.confirm, verbose=0 if args.quiet else 1, rerun=args.rerun)
    print_headline(state, sweep.spec.objective.metric, sweep.spec.objective.mode)
    return 0


def cmd_plan(args) -> int:
    from .plan import load_cluster, load_prices, make_plan
    from .sweep import load_sweep

    sweep = load_sweep(args.spec, args.overrides)
    plan = make_plan(sweep, load_cluster(args.cluster), args.cluster, args.step_time, load_prices())
    print("\n".join(plan.lines))
    for w in plan.warnings:
        print(f"  warning: {w}")
    return 0


def cmd_export(args) -> int:
    from .publish import export_student

    chosen, out = export_student(args.source, args.out, args.arm, args.seed, args.force, args.push_to_hub)
    for line in chosen.why:
        print(f"[mmi-ray] {line.replace('**', '').replace('`', '')}")
    print(f"[mmi-ray] exported: {out} (model card: {out / 'README.md'})")
    if args.push_to_hub:
        print(f"[mmi-ray] pushed to the Hub: {args.push_to_hub}")
    return 0


def cmd_predict(args) -> int:
    from .predict import run_predict

    return run_predict(args.model, args.input, args.explain, args.batch, args.out, args.device)


def cmd_evaluate(args) -> int:
    from .predict import run_evaluate

    m = run_evaluate(args.model, args.data, args.split, args.rationales, args.out, args.device)
    s = args.split
    print(f"{s} accuracy {100 * m[f'{s}_accuracy']:.1f}% [{100 * m[f'{s}_accuracy_low']:.1f}, "
          f"{100 * m[f'{s}_accuracy_high']:.1f}] (95% Wilson, n={m[f'{s}_n']} questions)")
    print(f"{s} ECE {m[f'{s}_ece']:.3f} (100 equal-mass bins), {m[f'{s}_ece15']:.3f} (15 bins)")
    if args.rationales:
        print(f"rationales (n={m[f'{s}_rationale_n']}): BLEU {m[f'{s}_rationale_bleu']:.1f}, ROUGE-L "
              f"{m[f'{s}_rationale_rougeL']:.2f}, faithful {100 * m[f'{s}_rationale_faithful']:.1f}%")
    if args.out:
        print(f"per-example predictions: {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mmi-ray", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="one training run as a Ray Train TorchTrainer")
    t.add_argument("config", help="training config YAML (see configs/)")
    t.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. loss.mi_weight=0.2")
    t.add_argument("--quiet", action="store_true", help="no per-evaluation lines")
    t.add_argument("--verbose", action="store_true", help="also Ray Train's own per-report log lines")
    t.add_argument("--rerun", action="store_true", help="train runs again even when a finished run of the same identity (config, data, code) exists")
    t.set_defaults(fn=cmd_train)

    w = sub.add_parser("sweep", help="a Ray Tune + Optuna sweep over a YAML spec (see sweeps/)")
    w.add_argument("spec", help="sweep spec YAML")
    w.add_argument("overrides", nargs="*", help="dotted key=value overrides of the spec, e.g. num_trials=4")
    w.add_argument("--resume", action="store_true", help="continue an interrupted sweep of the same name")
    w.add_argument("--quiet", action="store_true", help="no trial table while running")
    w.add_argument("--verbose", action="store_true", help="also every worker's log and Ray Train's own lines")
    w.add_argument("--no-report", action="store_true", help="skip the analysis report at the end")
    w.add_argument("--report-to-storage", action="store_true", help="a sweep on a storage URI: the report also goes "
                   "to <sweep URI>/report (it is written to ./reports/<name> here either way)")
    w.add_argument("--rerun", action="store_true", help="train runs again even when a finished run of the same identity (config, data, code) exists")
    w.set_defaults(fn=cmd_sweep)

    c = sub.add_parser("confirm", help="train a finished sweep's top configurations and the baselines again on fresh seeds")
    c.add_argument("sweep_dir", help="a sweep folder (<storage_path>/<name>)")
    c.add_argument("--top-k", type=int, default=None, help="configurations to confirm (default: the spec's, else 3)")
    c.add_argument("--seeds", type=int, nargs="+", default=None, help="fresh seeds (default: the spec's, else 1000-1004); on a folder with a confirmation, the seeds it "
                        "holds and more add the new ones to it (the same arms)")
    c.add_argument("--quiet", action="store_true", help="no trial table while running")
    c.add_argument("--rerun", action="store_true", help="train runs again even when a finished run of the same identity (config, data, code) exists")
    c.set_defaults(fn=cmd_confirm)

    pl = sub.add_parser("plan", help="what a sweep will ask of a cluster: trials at once, nodes, GPU-hours, cost")
    pl.add_argument("spec", help="sweep spec YAML")
    pl.add_argument("overrides", nargs="*", help="dotted key=value overrides of the spec, e.g. num_trials=64")
    pl.add_argument("--cluster", required=True, help="a Ray cluster-launcher YAML (see cluster/)")
    pl.add_argument("--step-time", type=float, default=None, help="seconds per optimizer step (measured)")
    pl.set_defaults(fn=cmd_plan)

    a = sub.add_parser("analyze", help="tables, comparisons, plots and a report for sweep results", add_help=False)
    a.add_argument("rest", nargs=argparse.REMAINDER)
    a.set_defaults(fn=lambda args: __import__("mmi_ray.analysis.report", fromlist=["main"]).main(args.rest))

    tb = sub.add_parser("table", help="the paper table: datasets x methods from confirmation runs (Markdown, LaTeX)",
                        add_help=False)
    tb.add_argument("rest", nargs=argparse.REMAINDER)

    e = sub.add_parser("export", help="a trained student as a transformers folder with a model card (and to the Hub)")
    e.add_argument("source", help=EXPORT_SOURCES)
    e.add_argument("--out", required=True, help="the folder to write (refused if it exists and is not empty)")
    e.add_argument("--arm", default=None, help="a confirmation arm by its name (DSS, MI-maxpool, ...); default: the one ranked first on validation")
    e.add_argument("--seed", type=int, default=None, help="the arm's seed run; default: the one closest to the arm's mean")
    e.add_argument("--force", action="store_true", help="replace a non-empty --out folder")
    e.add_argument("--push-to-hub", default=None, metavar="REPO_ID", help="also upload it (huggingface_hub; token from HF_TOKEN or hf auth login)")
    e.set_defaults(fn=cmd_export)

    pr = sub.add_parser("predict", help="run a student on new inputs (JSONL with an 'input' field, or text lines)")
    pr.add_argument("model", help=MODEL_SOURCES)
    pr.add_argument("--input", default="-", help="a .jsonl or text file, or - for standard input (default)")
    pr.add_argument("--explain", action="store_true", help="also generate each rationale (explain: prefix)")
    pr.add_argument("--batch", type=int, default=32, help="inputs per generation batch")
    pr.add_argument("--out", default=None, help="write JSONL here (default: standard output)")
    pr.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: a GPU when there is one)")
    pr.set_defaults(fn=cmd_predict)

    ev = sub.add_parser("evaluate", help="score a student on a dataset split, as training's evaluation does")
    ev.add_argument("model", help=MODEL_SOURCES)
    ev.add_argument("--data", default=None, help="a training config YAML whose data section names the dataset (default: the run's own)")
    ev.add_argument("--split", default="test", choices=["train", "valid", "test"], help="the split to score (default: test)")
    ev.add_argument("--rationales", type=int, default=0, help="also generate and score N rationales (BLEU, ROUGE-L, faithfulness)")
    ev.add_argument("--out", default=None, help="write per-example predictions (JSONL) here")
    ev.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: a GPU when there is one)")
    ev.set_defaults(fn=cmd_evaluate)

    d = sub.add_parser("data", help="load a dataset (DSS or your own) and report rows, parse failures, teacher accuracy")
    d.add_argument("name", help=f"a DSS dataset ({', '.join(DSS_NAMES)}) with --data-dir, or a custom dataset's path")
    d.add_argument("settings", nargs="*", help="custom data: dotted key=value settings of the data section (custom.label_kind=number ...)")
    d.add_argument("--data-dir", default=None, help="the DSS datasets/ folder")
    d.set_defaults(fn=cmd_data)

    from .teacher.cli import add_parsers

    add_parsers(sub)
    return p


def parser_for(argv: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The parser that reads a command line, and the arguments it reads: ``analyze`` and ``table``
    have their own (argparse's REMAINDER drops a leading option such as -h or --out)."""
    if argv[:1] == ["analyze"]:
        from .analysis.report import parser

        return parser(), argv[1:]
    if argv[:1] == ["table"]:
        from .analysis.table import parser

        return parser(), argv[1:]
    return build_parser(), argv


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["analyze"]:  # its own parser: argparse's REMAINDER drops a leading option (-h, --out)
        from .analysis.report import main as analyze

        run = lambda: analyze(argv[1:])  # noqa: E731
    elif argv[:1] == ["table"]:
        from .analysis.table import main as table

        run = lambda: table(argv[1:])  # noqa: E731
    else:
        args = build_parser().parse_args(argv)
        run = lambda: args.fn(args)  # noqa: E731
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    try:
        return run()
    except MmiError as e:
        for line in str(e).splitlines():
            print(f"mmi-ray: error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mmi-ray: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # Ray wraps worker errors; show the cause in one line
        root = root_cause(e)
        if isinstance(root, MmiError):
            print(f"mmi-ray: error: {root}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
