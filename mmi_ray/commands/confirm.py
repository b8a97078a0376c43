"""``mmi-ray confirm``: a finished sweep's top configurations and the baselines trained again on
fresh seeds, with the spec the sweep started with."""

from __future__ import annotations

from . import add_run_flags


def register(sub) -> None:
    p = sub.add_parser("confirm", help="train a finished sweep's top configurations and the baselines again on fresh seeds")
    p.add_argument("sweep_dir", help="a sweep folder (<storage_path>/<name>)")
    p.add_argument("--top-k", type=int, default=None, help="configurations to confirm (default: the spec's, else 3)")
    p.add_argument("--seeds", type=int, nargs="+", default=None, help="fresh seeds (default: the spec's, else "
                   "1000-1004); on a folder with a confirmation, the seeds it holds and more add the new ones to it "
                   "(the same arms)")
    add_run_flags(p, "no trial table while running")
    p.set_defaults(fn=run)


def run(args) -> int:
    from pydantic import ValidationError

    from ..config import format_validation_error, set_dotted
    from ..errors import ConfigError, MmiError
    from ..layout import SPEC_FILE, read_spec
    from ..storage import absolute, exists, join
    from ..sweep.confirm import print_headline, run_confirmation
    from ..sweep.spec import Confirm, LoadedSweep, SweepSpec

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
