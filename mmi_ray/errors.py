"""Errors a user can act on: each names the file and the key (or line) to fix.

The CLI prints them as one line each and exits non-zero, without a traceback.
"""

from __future__ import annotations


class MmiError(Exception):
    """Base class of every error that the CLI reports as a one-line message."""


class ConfigError(MmiError):
    """A config or sweep spec value is missing, unknown or out of range."""

    def __init__(self, source: str, problems: list[str] | str):
        self.source = source
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(f"{source}: {p}" for p in self.problems))


class DataError(MmiError):
    """A data file is missing, malformed or does not match its partner file."""


class ModelError(MmiError):
    """A model name or path cannot be loaded."""


class StorageError(MmiError):
    """The storage path for runs or sweeps cannot be used."""


class NonFiniteLossError(MmiError):
    """A loss term became NaN or infinite; the run (and its trial) ends with this reason.
    Deterministic: running the same config again would diverge again, so it is never retried."""


def root_cause(e: BaseException) -> BaseException:
    """The innermost cause of an error that Ray wrapped (worker failures, chained exceptions)."""
    seen = set()
    while id(e) not in seen:
        seen.add(id(e))
        nxt = e.__cause__ or getattr(e, "cause", None)
        if nxt is None and hasattr(e, "worker_failures"):
            failures = list(e.worker_failures.values())
            nxt = failures[0] if failures else None
        if nxt is None:
            break
        e = nxt
    return e
