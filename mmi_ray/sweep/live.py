"""What a sweep shows while it runs: one compact view instead of Tune's wide tables.

``SweepProgress`` is a Tune callback. It records how each trial ended in ``ended_trials.jsonl`` (so
the summary can tell a trial the scheduler stopped from one a Ctrl-C interrupted) and, unless
quiet, shows trials done / running / stopped early / failed, the best configuration so far at the
full budget (its mean over seeds with a Student-t interval when it has 2 or more seeds), the
elapsed time and an estimate of the time left. On a terminal the view is one line redrawn in
place; elsewhere (CI, ``ray job logs``) it prints plain lines when something changes.
"""

from __future__ import annotations

import sys
import time

from ray.tune import Callback

from ..layout import COMPLETED, ERROR, STEP, STOPPED, read_trial_ends, seed_key, write_trial_ends


def tune_verbosity(verbose: int) -> int:
    """Tune's own output: its full tables only with ``--verbose`` (our view replaces them). Below
    that, Tune's legacy output engine at verbosity 0 prints nothing, where its new engine still
    prints a configuration box and a TensorBoard path into a temporary session folder."""
    import os

    if verbose > 1:
        os.environ.pop("RAY_AIR_NEW_OUTPUT", None)
        return 2
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    return 0


def tensorboard_hint(sweep_dir: str) -> str:
    return f"[mmi-ray] TensorBoard (x axis: training step): tensorboard --logdir {sweep_dir}"


def hide_tune_restore_hint() -> None:
    """Tune ends an interrupted run with ``Tuner.restore(path=..., trainable=...)``, which is not how
    an mmi-ray sweep resumes; the sweep prints its own hint instead."""
    import logging

    logger = logging.getLogger("ray.tune.tune")
    if not any(getattr(f, "_mmi_ray", False) for f in logger.filters):
        def drop(record) -> bool:
            return "Tuner.restore(" not in record.getMessage()

        drop._mmi_ray = True
        logger.addFilter(drop)


_SESSION: dict = {}


def configure(show: bool | None) -> None:
    """This invocation's choice of view (None: the callback's own). Tune pickles its callbacks with
    the experiment and, on ``--resume``, runs the pickled ones: so what may differ between
    invocations is read at setup."""
    if show is None:
        _SESSION.pop("show", None)
    else:
        _SESSION["show"] = show


def read_ends(sweep_dir: str) -> dict[str, str]:
    """How each ended trial of a sweep folder ended ({} when none is recorded)."""
    return read_trial_ends(sweep_dir) or {}


def _duration(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else str(v)


class SweepProgress(Callback):
    def __init__(self, sweep_dir: str, label: str, num_trials: int, max_steps: int, seeds: list[int],
                 metric: str | None, mode: str = "max", show: bool = True, heartbeat_s: float = 60.0):
        self.sweep_dir, self.label, self.num_trials, self.max_steps = sweep_dir, label, num_trials, max_steps
        self.seeds, self.metric, self.mode, self.show, self.heartbeat_s = list(seeds), metric, mode, show, heartbeat_s
        self.ends: dict[str, str] = {}
        self.steps: dict[str, int] = {}
        self.running: set[str] = set()
        self.best: tuple[float, str, dict, list[float], int] | None = None
        self.t0 = time.time()
        self._last_line, self._last_print, self._drawn = "", 0.0, False

    # --- Tune's hooks (driver process)
    def setup(self, **info):
        self.t0 = time.time()
        self.show = _SESSION.get("show", self.show)
        self.ends = read_ends(self.sweep_dir)  # the file is the record: earlier invocations' ends too
        self.running = set()

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running.add(trial.trial_id)
        self._update(force=True)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        step = int(result.get(STEP, 0))
        self.steps[trial.trial_id] = max(step, self.steps.get(trial.trial_id, 0))
        if self.metric and step >= self.max_steps and self.metric in result:  # the best is judged at the full budget only
            value = float(result[self.metric])
            per_seed = [result[k] for k in (seed_key(self.metric, s) for s in self.seeds) if k in result]
            sign = 1 if self.mode == "max" else -1
            if self.best is None or sign * value > sign * self.best[0]:
                params = {k: v for k, v in (trial.config or {}).items() if not isinstance(v, dict)}
                n_questions = int(result.get(self.metric.split("_")[0] + "_n") or 0)  # val_accuracy -> val_n
                self.best = (value, trial.trial_id, params, per_seed, n_questions)
                self._update(force=True)
                return
        self._update(force=False)

    def on_trial_complete(self, iteration, trials, trial, **info):
        full = self.steps.get(trial.trial_id, 0) >= self.max_steps
        self._end(trial.trial_id, COMPLETED if full else STOPPED)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._end(trial.trial_id, ERROR)

    def on_step_end(self, iteration, trials, **info):
        self._update(force=False)

    def on_experiment_end(self, trials, **info):
        self._update(force=True)
        if self._drawn:
            sys.stdout.write("\n")
            sys.stdout.flush()
            self._drawn = False

    # --- ours
    def _end(self, trial_id: str, how: str) -> None:
        self.running.discard(trial_id)
        self.ends[trial_id] = how
        write_trial_ends(self.sweep_dir, self.ends, new=trial_id)
        self._update(force=True)

    def unfinished(self) -> int:
        """Trials that did not end (interrupted, or never started) once the run is over."""
        return self.num_trials - len(self.ends)

    def counts(self) -> dict[str, int]:
        ended = list(self.ends.values())
        return {"done": ended.count(COMPLETED), "running": len(self.running), "stopped early": ended.count(STOPPED),
                "failed": ended.count(ERROR)}

    def time_left(self, now: float) -> float | None:
        """Seconds left, from the share of the budget spent so far: every ended trial counts in full,
        a running one by its steps. An estimate (ASHA may stop the trials still to come sooner)."""
        spent = sum(1.0 if t in self.ends else min(s, self.max_steps) / self.max_steps for t, s in self.steps.items())
        spent += sum(1.0 for t in self.ends if t not in self.steps)
        share = spent / max(1, self.num_trials)
        if share <= 0.02 or share >= 1:
            return None if share < 1 else 0.0
        return (now - self.t0) * (1 - share) / share

    def line(self, now: float | None = None) -> str:
        from ..results.stats import t_interval, wilson_interval

        now = time.time() if now is None else now
        c = self.counts()
        parts = [f"[mmi-ray] {self.label}: {c['done']}/{self.num_trials} done, {c['running']} running, "
                 f"{c['stopped early']} stopped early, {c['failed']} failed"]
        if self.best is not None:
            value, tid, params, per_seed, n_q = self.best
            best = f"best {self.metric} {value:.4f}"
            if len(per_seed) >= 2:
                lo, hi = t_interval(per_seed)
                best += f" [{lo:.4f}, {hi:.4f}] (95% t, n={len(per_seed)} seeds)"
            elif n_q and self.metric.endswith("accuracy") and 0 <= value <= 1:
                lo, hi = wilson_interval(value * n_q, n_q)
                best += f" [{lo:.4f}, {hi:.4f}] (95% Wilson, n={n_q} questions, 1 seed)"
            else:
                best += " (1 seed, no interval)"
            shown = ", ".join(f"{k.split('.')[-1]}={_fmt(v)}" for k, v in params.items())
            parts.append(f"{best} trial {tid}" + (f" ({shown})" if shown else ""))
        left = self.time_left(now)
        parts.append(f"{_duration(now - self.t0)} elapsed" + (f", ~{_duration(left)} left (estimate)"
                                                              if left is not None else ""))
        return " | ".join(parts)

    def _update(self, force: bool) -> None:
        if not self.show:
            return
        now = time.time()
        text = self.line(now)
        if sys.stdout.isatty():
            if force or now - self._last_print >= 1.0:
                width = 200
                sys.stdout.write("\r\x1b[K" + text[:width])
                sys.stdout.flush()
                self._drawn, self._last_print = True, now
            return
        changed = text.split(" | ")[:-1] != self._last_line.split(" | ")[:-1]
        if (force and changed) or now - self._last_print >= self.heartbeat_s:
            print(text, flush=True)
            self._last_line, self._last_print = text, now
