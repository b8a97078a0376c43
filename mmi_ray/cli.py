"""mmi-ray: chain-of-thought distillation with the MI method on Ray: train, sweep, confirm, analyze, table, export, predict, evaluate, plan, data, rationales.

Errors in user input print as one line each (file and key named) with exit code 2, no traceback.
Importing this module changes nothing in the environment; Ray's is set where Ray is started
(mmi_ray/ray_init.py).
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib import import_module

from .commands import COMMANDS
from .errors import MmiError, root_cause


def build_parser() -> argparse.ArgumentParser:
    """The command line: each command of ``mmi_ray/commands/`` registers its own arguments."""
    p = argparse.ArgumentParser(prog="mmi-ray", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        import_module(f".commands.{name}", __package__).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # the command as given: a command that stops early prints how to resume it
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    try:
        return args.fn(args)
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
