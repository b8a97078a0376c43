"""``mmi-ray sweep``: a Ray Tune + Optuna sweep over a YAML spec, its confirmation runs and report."""

from __future__ import annotations

from . import add_run_flags, verbosity


def register(sub) -> None:
    p = sub.add_parser("sweep", help="a Ray Tune + Optuna sweep over a YAML spec (see sweeps/)")
    p.add_argument("spec", help="sweep spec YAML")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides of the spec, e.g. num_trials=4")
    p.add_argument("--resume", action="store_true", help="continue an interrupted sweep of the same name")
    add_run_flags(p, "no trial table while running", "also every worker's log and Ray Train's own lines")
    p.add_argument("--no-report", action="store_true", help="skip the analysis report at the end")
    p.add_argument("--report-to-storage", action="store_true", help="a sweep on a storage URI: the report also goes "
                   "to <sweep URI>/report (it is written to ./reports/<name> here either way)")
    p.set_defaults(fn=run)


def check_inputs(sweep, source: str) -> None:
    """What would fail in every trial, checked once before any: paths, each searched student or
    tokenizer, and your own rows against the tokenizer."""
    from ..config import check_paths
    from ..model import check_student

    check_paths(sweep.base, f"{source} (base)")
    check_student(sweep.base, f"{source} (base)")
    for key, p in sweep.spec.search.items():  # a searched student or tokenizer: each choice, before any trial
        if key in ("model.name", "model.tokenizer") and p.type == "choice":
            for v in p.values:
                trial = sweep.trial_config({key: v}, sweep.spec.seeds[0], "/tmp")
                check_paths(trial, f"{source} (search.{key})")
                check_student(trial, f"{source} (search.{key})")
    if sweep.base.data.dataset == "custom":  # your own rows: a bad row fails here, not in every trial
        from ..data import load_splits
        from ..model import check_vocabulary

        check_vocabulary(sweep.base, load_splits(sweep.base.data), f"{source} (base)")


def run(args) -> int:
    from ..sweep import load_sweep, run_sweep
    from ..sweep.summary import print_summary

    sweep = load_sweep(args.spec, args.overrides)
    check_inputs(sweep, args.spec)
    summary = run_sweep(sweep, resume=args.resume, verbose=verbosity(args), rerun=args.rerun)
    print_summary(summary)
    if summary.get("confirmation"):
        from ..sweep.confirm import print_headline

        print_headline(summary["confirmation"], sweep.spec.objective.metric, sweep.spec.objective.mode)
    if not args.no_report:
        from ..analysis.report import build_report

        report = build_report([summary["sweep_dir"]], to_storage=args.report_to_storage)
        where = f" and {report['uploaded']}" if report.get("uploaded") else ""
        print(f"[mmi-ray] report: {report['report']}{where} (tables, comparisons, {len(report['plots'])} plots); "
              f"again any time with: mmi-ray analyze {summary['sweep_dir']}")
    return 0
