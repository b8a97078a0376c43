"""Append a benchmark's figures to a Markdown file (BENCHMARKS.md) with its command, date and machine."""

from __future__ import annotations

import datetime
import os
import platform
import sys


def append_section(out: str, script: str, argv: list[str] | None, title: str, lines: list[str],
                   machine: str | None = None) -> None:
    cmd = f"python benchmarks/{script} " + " ".join(argv if argv is not None else sys.argv[1:])
    machine = machine or f"{platform.machine()} CPU, {os.cpu_count()} cores"
    with open(out, "a") as f:
        f.write(f"\n### {title} ({datetime.date.today().isoformat()}, {machine})\n\n`{cmd.strip()}`\n\n"
                + "\n".join(lines) + "\n")
