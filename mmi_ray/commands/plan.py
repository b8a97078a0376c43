"""``mmi-ray plan``: what a sweep will ask of a cluster: trials at once, nodes, GPU-hours, cost."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("plan", help="what a sweep will ask of a cluster: trials at once, nodes, GPU-hours, cost")
    p.add_argument("spec", help="sweep spec YAML")
    p.add_argument("overrides", nargs="*", help="dotted key=value overrides of the spec, e.g. num_trials=64")
    p.add_argument("--cluster", required=True, help="a Ray cluster-launcher YAML (see cluster/)")
    p.add_argument("--step-time", type=float, default=None, help="seconds per optimizer step (measured)")
    p.set_defaults(fn=run)


def run(args) -> int:
    from ..plan import load_cluster, load_prices, make_plan
    from ..sweep import load_sweep

    sweep = load_sweep(args.spec, args.overrides)
    plan = make_plan(sweep, load_cluster(args.cluster), args.cluster, args.step_time, load_prices())
    print("\n".join(plan.lines))
    for w in plan.warnings:
        print(f"  warning: {w}")
    return 0
