"""Fault injection for the recovery tests, switched on only by an environment variable.

A test sets ``MMI_RAY_FAULT='{"step": 15, "marker": "/tmp/x", "kind": "raise" | "sigkill"}'`` where
it launches a run (``build_trainer`` passes ``MMI_RAY_*`` variables on to the Ray Train workers).
Rank 0 then fails once right after optimizer step ``step``; the marker file makes it once across
restarts. Unset (always, outside tests), every worker's hook does nothing.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

FAULT_ENV = "MMI_RAY_FAULT"


def _no_fault(rank: int, step: int) -> None:
    return None


def step_hook_from_env() -> Callable[[int, int], None]:
    """``hook(rank, step)``, called by the loop after each optimizer step."""
    text = os.environ.get(FAULT_ENV)
    if not text:
        return _no_fault
    fault = json.loads(text)
    marker = Path(fault["marker"])

    def hook(rank: int, step: int) -> None:
        if rank != 0 or step != fault["step"] or marker.exists():
            return
        marker.write_text("fault injected")
        if fault.get("kind", "raise") == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"injected fault at step {step}")

    return hook
