"""The trial side of a sweep: the Tune function trainable (the "driver") of one configuration.

Ray's Train-in-Tune pattern (Ray 2.60, Train V2): the driver builds one ``TorchTrainer`` per seed,
named after the trial id so that a retried or restored trial resumes from its own checkpoints, runs
them side by side, and reports the mean over seeds of every metric at each evaluation step. A
one-seed, one-CPU-worker trial trains in the trial process itself (``resources.in_process``), a
class trainable that steps the loop from one evaluation to the next, writing the same run folder
through ``worker.in_process_env``.
"""

from __future__ import annotations

import json
import math
import queue as pyqueue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import NonFiniteLossError, WorkerFailedError, describe_worker_failures, root_cause
from ..layout import (
    CHECKPOINT_PATH,
    CONFIG_FILE,
    MACHINE,
    NODE_ID,
    RESULT_FILE,
    RUNS_DIR,
    STEP,
    WORKER_ERROR_FILE,
    is_divergence,
    read_metrics,
    run_name,
    seed_key,
)
from ..reuse import adopt
from ..storage import exists, join, write_text
from .spec import LoadedSweep, SweepSpec

DRIVER_NODE_ID = "driver_node_id"
"""Reported by every trial: the node its driver ran on (placement checks)."""
TIMESTEPS_TOTAL = "timesteps_total"
"""Tune's own result key (``ray.tune.result``), set to the training step: TensorBoard's x axis."""


def mean_over_seeds(per_seed: dict[int, dict], objective: str) -> dict[str, Any]:
    """Mean over seeds of every numeric metric, plus the objective's std and per-seed values, and
    the summed in-loop training time of all seed runs."""
    seeds = sorted(per_seed)
    out: dict[str, Any] = {}
    keys = set.intersection(*(set(per_seed[s]) for s in seeds))
    for k in sorted(keys):
        vals = [per_seed[s][k] for s in seeds]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            out[k] = sum(vals) / len(vals)
    vals = [per_seed[s][objective] for s in seeds]
    mean = sum(vals) / len(vals)
    out[f"{objective}_std"] = math.sqrt(sum((v - mean) ** 2 for v in vals) / max(1, len(vals) - 1)) if len(vals) > 1 else 0.0
    for s in seeds:
        out[seed_key(objective, s)] = per_seed[s][objective]
        for key, name in ((NODE_ID, NODE_ID), (CHECKPOINT_PATH, "checkpoint"), (MACHINE, MACHINE)):
            if key in per_seed[s]:
                out[seed_key(name, s)] = per_seed[s][key]
    out["train_time_s_sum"] = sum(per_seed[s].get("train_time_s", 0.0) for s in seeds)
    out[STEP] = int(per_seed[seeds[0]][STEP])
    out["num_seeds"] = len(seeds)
    return out


def _reported_steps(trial_dir: str | None) -> list[int]:
    """Steps Tune already holds for this trial (a restored trial reports only what follows)."""
    if not trial_dir:
        return []
    path = Path(trial_dir) / RESULT_FILE
    if not path.exists():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            steps.append(int(json.loads(line)[STEP]))
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by the kill
    return steps


def _queue_callback(q, seed: int, run_dir: str):
    from ray.train import UserCallback

    from ..train import checkpoint_location

    class ToDriver(UserCallback):
        """On the Train controller: forward rank 0's metrics of each report to the trial driver."""

        def after_report(self, run_context, metrics, checkpoint):
            m = dict(metrics[0])
            if checkpoint is not None:
                m[CHECKPOINT_PATH] = checkpoint_location(run_dir, checkpoint)
            q.put((seed, m))

    return ToDriver()


def _ensure_config(run_dir: str, cfg) -> None:
    if not exists(join(run_dir, CONFIG_FILE)):
        write_text(join(run_dir, CONFIG_FILE), cfg.to_yaml())


@dataclass(frozen=True)
class TrialPayload:
    """What every trial of one Tune experiment needs besides its own parameters, sent with the
    trainable to wherever Ray runs it: the sweep as plain data (specs and configs are rebuilt and
    validated there), where its runs go, and how to log and reuse."""

    spec: dict[str, Any]
    """The sweep spec, as JSON."""
    base_raw: dict[str, Any]
    """The base config as the spec's file gave it (before overrides)."""
    source: str
    """The spec's file, for messages."""
    sweep_dir: str
    """The experiment's folder: its runs go to ``runs/`` under it."""
    ray_logs: bool = False
    """Ray Train's own per-report log lines (``--verbose``)."""
    reuse_root: str | None = None
    """The storage root whose run index finished runs are adopted from; None: reuse off."""
    arms: dict[str, dict[str, Any]] | None = None
    """A confirmation's arms: each arm's searched values (its trials' ``params`` are arm and seed)."""

    @classmethod
    def of(cls, sweep: LoadedSweep, sweep_dir: str, verbose: int, reuse_root: str | None,
           arms: dict[str, dict[str, Any]] | None = None) -> TrialPayload:
        return cls(sweep.spec.model_dump(mode="json"), sweep.base_raw, sweep.source, sweep_dir, verbose > 1,
                   reuse_root, arms)

    def inputs(self, params: dict) -> tuple[LoadedSweep, dict, list[int]]:
        """The sweep, searched values and seeds of a trial. A search trial's ``params`` are the
        searched values (seeds: the spec's); a confirmation trial's are ``{"arm": name, "seed": k}``."""
        sweep = LoadedSweep(SweepSpec.model_validate(self.spec), self.base_raw, self.source)
        if self.arms is not None:
            return sweep, self.arms[params["arm"]], [int(params["seed"])]
        return sweep, {k: params[k] for k in sweep.spec.search}, list(sweep.spec.seeds)

    @property
    def runs_root(self) -> str:
        return join(self.sweep_dir, RUNS_DIR)


def trial_driver(params: dict, payload: TrialPayload) -> None:
    """The Tune function trainable of a trial whose seeds train as Ray Train runs: one configuration,
    one Train run per seed, mean reports."""
    import ray
    from ray import tune

    sweep, searched, seeds = payload.inputs(params)
    _train_with_ray_train(sweep, searched, seeds, tune.get_context().get_trial_id(), payload.runs_root,
                          ray.get_runtime_context().get_node_id(), payload.ray_logs, payload.reuse_root)


def in_process_trainable(payload: TrialPayload):
    """The Tune class trainable of a trial that trains in its own process (one seed, one CPU worker):
    each ``step()`` trains up to the next evaluation and returns its report, so a trial that Tune
    stops (ASHA, Ctrl-C) trains no further, and its process can take the next trial at once
    (``reuse_actors``: no second start of Python, torch and transformers)."""
    from ray import tune

    class mmi_trial(tune.Trainable):  # stable name: Tuner.restore needs the same trainable
        def setup(self, config):
            self._results = _in_process_results(config, payload, self.trial_id, self.logdir)

        def step(self):
            try:
                result = next(self._results)
            except StopIteration:
                raise RuntimeError(f"trial {self.trial_id}: the run ended without its final report") from None
            return result

        # Tune saves a trial it pauses or interrupts; the run's own checkpoints live in its run
        # folder, where a restarted trial finds them, so Tune's checkpoint is a marker only
        def save_checkpoint(self, checkpoint_dir):
            return {"trial_id": self.trial_id}

        def load_checkpoint(self, checkpoint):
            pass

        def reset_config(self, new_config):
            self._results.close()
            self.setup(new_config)
            return True

        def cleanup(self):
            self._results.close()

    return mmi_trial


def _train_with_ray_train(sweep: LoadedSweep, searched: dict, seeds: list[int], trial_id: str, runs_root: str,
                          driver_node: str, ray_logs: bool = False, reuse_root: str | None = None) -> None:
    """One Ray Train run per seed, side by side; reports the mean over seeds at each evaluation. A
    seed whose identity finished before (``reuse_root``'s index) is adopted, not trained."""
    from ray import tune
    from ray.util.queue import Empty, Queue

    from ..train import build_trainer, metrics_callback

    spec = sweep.spec
    q = Queue(actor_options={"num_cpus": 0})
    history: dict[int, dict[int, dict]] = {}  # step -> seed -> metrics
    errors: dict[int, BaseException] = {}
    threads = []
    for seed in seeds:
        cfg = sweep.trial_config(searched, seed, runs_root)
        name = run_name(trial_id, seed)
        run_dir = join(runs_root, name)
        if adopt(cfg, run_dir, reuse_root, allow_partial=False) is not None:
            _ensure_config(run_dir, cfg)  # adopted finished: it trains nothing, but its folder is a whole run
        done = read_metrics(run_dir)
        diverged = [m for m in done if is_divergence(m)]
        if diverged:  # deterministic: running it again would diverge again
            raise NonFiniteLossError(f"seed {seed}: {diverged[-1]['error']}")
        for m in done:
            history.setdefault(m[STEP], {})[seed] = m
        if done and done[-1][STEP] >= cfg.train.max_steps:
            continue  # this seed finished before the trial was interrupted
        _ensure_config(run_dir, cfg)
        trainer = build_trainer(cfg, name, runs_root,
                                callbacks=[metrics_callback(run_dir, verbose=False), _queue_callback(q, seed, run_dir)],
                                ray_logs=ray_logs)

        def fit(trainer=trainer, seed=seed):
            try:
                trainer.fit()
            except BaseException as e:  # noqa: BLE001 - re-raised in the driver thread below
                errors[seed] = e
        threads.append(threading.Thread(target=fit, daemon=True, name=f"fit-seed{seed}"))
    for t in threads:
        t.start()

    # a restored trial: Tune already holds the steps in its result.json; report only the newest
    # again (so the trial's final metrics are fresh) and the ones that follow
    already = max(_reported_steps(tune.get_context().get_trial_dir()), default=0)
    reported = max((s for s in history if s < already), default=0)
    k = len(seeds)

    def flush():
        nonlocal reported
        for step in sorted(s for s in history if s > reported):
            if len(history[step]) < k:
                break
            tune.report({**mean_over_seeds(history[step], spec.objective.metric), DRIVER_NODE_ID: driver_node,
                         TIMESTEPS_TOTAL: step})
            reported = step

    flush()
    while any(t.is_alive() for t in threads) or not q.empty():
        try:
            seed, m = q.get(timeout=1.0)
        except (pyqueue.Empty, Empty):
            if errors:
                break
            continue
        if is_divergence(m):
            errors[seed] = NonFiniteLossError(m["error"])
            break
        history.setdefault(m[STEP], {})[seed] = m
        flush()
    for t in threads:
        t.join(timeout=5)
    if errors:
        seed, err = next(iter(errors.items()))
        if isinstance(err, NonFiniteLossError):
            raise NonFiniteLossError(f"seed {seed}: {err}")
        described = describe_worker_failures(err)
        if described is not None:  # as `mmi-ray train` does: one line, the tracebacks in the run folder
            line, text = described
            write_text(join(runs_root, run_name(trial_id, seed), WORKER_ERROR_FILE), text + "\n")
            raise WorkerFailedError(f"seed {seed}: {line}") from None
        root = root_cause(err)
        raise RuntimeError(f"seed {seed}: {type(root).__name__}: {root}") from err


def _in_process_results(params: dict, payload: TrialPayload, trial_id: str, trial_dir: str) -> Iterator[dict]:
    """The reports of one in-process trial, for Tune, one per evaluation (the last says ``done``):
    the loop runs in this process (no Train controller or worker group), writing the same run folder
    as a Ray Train run; a retried or restored trial resumes from its newest checkpoint, and so does a
    run adopted from an earlier run of the same identity that was stopped early (a finished one
    trains nothing)."""
    import ray

    from ..recipe import iter_loop
    from ..worker import in_process_env

    sweep, searched, seeds = payload.inputs(params)
    seed, node = seeds[0], ray.get_runtime_context().get_node_id()
    spec = sweep.spec
    runs_root = payload.runs_root
    cfg = sweep.trial_config(searched, seed, runs_root)
    run_dir = join(runs_root, run_name(trial_id, seed))
    adopt(cfg, run_dir, payload.reuse_root, allow_partial=True)
    _ensure_config(run_dir, cfg)
    obj, last = spec.objective.metric, cfg.train.max_steps
    pending: list[dict] = []

    def to_tune(m: dict) -> None:
        if not is_divergence(m):
            pending.append({**mean_over_seeds({seed: m}, obj), DRIVER_NODE_ID: node, TIMESTEPS_TOTAL: m[STEP],
                            "done": m[STEP] >= last})

    env, state = in_process_env(run_dir, cfg.train.keep_checkpoints, node, to_tune)
    start = state[STEP] if state is not None else 0
    done = [m for m in read_metrics(run_dir) if m[STEP] <= start or is_divergence(m)]
    if done and is_divergence(done[-1]):  # deterministic: running it again would diverge again
        raise NonFiniteLossError(f"seed {seed}: {done[-1]['error']}")
    # restored: Tune holds the steps in result.json; report the newest again and the ones after it
    already = max(_reported_steps(trial_dir), default=0)
    reported = max((m[STEP] for m in done if m[STEP] < already), default=0)
    for m in done:
        if m[STEP] > reported:
            to_tune(m)
    yield from pending
    pending.clear()
    if start < last:
        for _ in iter_loop(cfg, env):
            yield from pending
            pending.clear()
    after = read_metrics(run_dir)
    if after and is_divergence(after[-1]):
        raise NonFiniteLossError(f"seed {seed}: {after[-1]['error']}")
