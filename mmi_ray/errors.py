"""Errors a user can act on: each names the file and the key (or line) to fix.

The CLI prints them as one line each and exits non-zero, without a traceback.
"""

from __future__ import annotations


class MmiError(Exception):
    """Base class of every error that the CLI reports as a one-line message."""


class ConfigError(MmiError):
    """A config or sweep spec value is missing, unknown or out of range."""

    def __init__(self, source: str, problems: list[str] | str, sources: list[str] | None = None):
        """``sources``: where each problem came from, where that is not ``source`` for all (a value
        given on the command line over a file's)."""
        self.source = source
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.sources = list(sources) if sources else [source] * len(self.problems)
        super().__init__("\n".join(f"{src}: {p}" for src, p in zip(self.sources, self.problems, strict=True)))


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


class WorkerFailedError(MmiError):
    """The training function raised inside a Ray Train worker: one line with the cause; the full
    tracebacks of every failed rank are in the run's ``worker_error.txt``."""


def _last_line(exc) -> str:
    """The cause in one line: a traceback's last line, ``pkg.mod.SomeError: message`` ->
    ``SomeError: message`` (Ray hands worker errors over as their traceback text), else
    ``SomeError: message`` of the exception itself."""
    text = str(exc)
    if "Traceback (most recent call last)" not in text and isinstance(exc, BaseException):
        text = f"{type(exc).__name__}: {text}"
    lines = [x for x in text.strip().splitlines() if x.strip()]
    last = lines[-1].strip() if lines else "unknown error"
    head, sep, rest = last.partition(": ")
    if "." in head and " " not in head:
        head = head.rsplit(".", 1)[1]
    return f"{head}{sep}{rest}"


def describe_worker_failures(e: BaseException) -> tuple[str, str] | None:
    """(one line, full text) for a Ray Train failure (``TrainingFailedError``: its public
    ``worker_failures``, each rank's exception, or ``controller_failure``); None for any other error.
    The full text is the error's own message, which carries every failed rank's traceback."""
    failures = getattr(e, "worker_failures", None)
    if failures:
        by_line: dict[str, list[int]] = {}
        for rank in sorted(failures):
            by_line.setdefault(_last_line(failures[rank]), []).append(rank)
        line = "; ".join(f"Train worker rank{'s' if len(r) > 1 else ''} {', '.join(map(str, r))}: {msg}"
                         for msg, r in by_line.items())
        causes = "\n".join(f"rank {rank}: {type(exc).__name__}: {exc}" for rank, exc in sorted(failures.items()))
        return line, f"{causes}\n\n{e}"
    cause = getattr(e, "controller_failure", None)
    if cause is not None:
        return f"Ray Train controller: {_last_line(cause)}", f"{e}\n\n{type(cause).__name__}: {cause}"
    return None
