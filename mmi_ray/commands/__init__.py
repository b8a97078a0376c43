"""The ``mmi-ray`` commands, one module each: ``register(sub)`` adds its arguments to the command
line, ``run(args)`` does it. ``mmi_ray/cli.py`` registers every one of them the same way."""

from __future__ import annotations

from pathlib import Path

COMMANDS = ("train", "sweep", "confirm", "plan", "analyze", "table", "export", "predict", "evaluate", "data",
            "rationales")
"""Each a module of this package, in the order ``mmi-ray --help`` lists them."""

RERUN_HELP = "train runs again even when a finished run of the same identity (config, data, code) exists"


def add_run_flags(p, quiet: str, verbose: str | None = None) -> None:
    """The flags of the commands that train: ``--quiet`` (what it hides), ``--verbose`` (what it adds,
    where the command has it) and ``--rerun``."""
    p.add_argument("--quiet", action="store_true", help=quiet)
    if verbose:
        p.add_argument("--verbose", action="store_true", help=verbose)
    p.add_argument("--rerun", action="store_true", help=RERUN_HELP)


def verbosity(args) -> int:
    """0 with ``--quiet``, 2 with ``--verbose``, else 1."""
    return 0 if args.quiet else 2 if getattr(args, "verbose", False) else 1


def shown(path: str) -> str:
    """A path as the user would type it: relative to the working directory when under it."""
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
