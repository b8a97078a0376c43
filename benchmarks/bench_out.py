"""Append a benchmark's figures to a Markdown file (BENCHMARKS.md) with its command, date and machine."""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import sys


def append_section(out: str, script: str, argv: list[str] | None, title: str, lines: list[str],
                   machine: str | None = None) -> None:
    cmd = f"python benchmarks/{script} " + " ".join(argv if argv is not None else sys.argv[1:])
    machine = machine or f"{platform.machine()} CPU, {os.cpu_count()} cores"
    with open(out, "a") as f:
        f.write(f"\n### {title} ({datetime.date.today().isoformat()}, {machine})\n\n`{cmd.strip()}`\n\n"
                + "\n".join(lines) + "\n")


def report_figures(lines: list[str], out: str | None, script: str, argv: list[str] | None, title: str,
            machine: str | None = None) -> None:
    """Print a benchmark's figures and, with ``out``, append them to that Markdown file."""
    print("\n".join(lines), flush=True)
    if out:
        append_section(out, script, argv, title, lines, machine)


def spread(xs: list[float], digits: int = 3) -> str:
    """A figure from repeated rounds: ``median [min, max]``."""
    return f"{statistics.median(xs):.{digits}f} [{min(xs):.{digits}f}, {max(xs):.{digits}f}]"
