"""``mmi-ray analyze``: one report for one or more finished sweeps (mmi_ray/analysis/report.py)."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("analyze", help="tables, comparisons, plots and a report for sweep results")
    p.add_argument("results", nargs="+", help="sweep folders (<storage_path>/<name>) or storage URIs")
    p.add_argument("--out", default=None, help="report folder (default: <first sweep>/report; for a sweep on a "
                   "storage URI, ./reports/<sweep name>)")
    p.add_argument("--report-to-storage", action="store_true",
                   help="a sweep on a storage URI: also upload the report to <sweep URI>/report")
    p.add_argument("--budget", default="final", help="'final' or a step that every compared trial reached")
    test = p.add_mutually_exclusive_group()
    test.add_argument("--no-test", action="store_true", help="do not evaluate the best configuration on test")
    test.add_argument("--test-methods", action="store_true",
                      help="also evaluate each method's best configuration on test (ablations; once, at report time)")
    p.set_defaults(fn=run)


def run(args) -> int:
    from ..analysis.report import build_report
    from ..errors import MmiError

    if args.budget != "final" and not args.budget.isdigit():
        raise MmiError(f"--budget: 'final' or a step (got '{args.budget}')")
    budget = args.budget if args.budget == "final" else int(args.budget)
    r = build_report(args.results, args.out, budget, evaluate_test=not args.no_test, test_methods=args.test_methods,
                     to_storage=args.report_to_storage)
    print(f"[mmi-ray] report: {r['report']}" + (f" (and {r['uploaded']})" if r.get("uploaded") else ""))
    if r.get("plots"):
        print(f"[mmi-ray] plots: {', '.join(r['plots'])}")
    for n in r["notes"]:
        print(f"[mmi-ray] left out: {n}")
    return 0
