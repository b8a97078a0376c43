"""Run a sweep: a Ray Tune ``Tuner`` (Optuna TPE + ASHA) whose trials each fit ``TorchTrainer``s.

Ray's Train-in-Tune pattern (Ray 2.60, Train V2): the Tune trial is a function (the "driver")
that builds one ``TorchTrainer`` per seed, named after the trial id so that a retried or restored
trial resumes from its own checkpoints, runs them side by side, and reports the mean over seeds
of every metric at each evaluation step. A one-seed, one-CPU-worker trial trains in the trial
process itself (``resources.in_process``), writing the same run folder.
"""

from __future__ import annotations

import json
import math
import os
import queue as pyqueue
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError, StorageError, root_cause
from ..ray_init import init_ray
from ..recipe import NonFiniteLossError
from ..storage import ensure_writable, exists, is_uri, join, read_text, write_text
from ..train import METRICS_FILE, _metrics_callback, build_trainer
from .spec import LoadedSweep, SweepSpec

SPEC_FILE = "sweep_spec.yaml"
SUMMARY_FILE = "sweep_summary.json"
TRIALS_FILE = "trials.csv"
RUNS_DIR = "runs"


def _queue_callback(q, seed: int):
    from ray.train import UserCallback

    class ToDriver(UserCallback):
        """On the Train controller: forward rank 0's metrics of each report to the trial driver."""

        def after_report(self, run_context, metrics, checkpoint):
            m = dict(metrics[0])
            if checkpoint is not None:
                m["checkpoint_path"] = checkpoint.path
            q.put((seed, m))

    return ToDriver()


def _read_history(run_dir: str) -> list[dict]:
    path = join(run_dir, METRICS_FILE)
    if not exists(path):
        return []
    return [json.loads(ln) for ln in read_text(path).splitlines() if ln.strip()]


def _reported_steps(trial_dir: str | None) -> list[int]:
    if not trial_dir:
        return []
    path = Path(trial_dir) / "result.json"
    if not path.exists():
        return []
    steps = []
    for line in path.read_text().splitlines():
        try:
            steps.append(int(json.loads(line)["step"]))
        except (ValueError, KeyError, TypeError):
            continue  # a line cut short by the kill
    return steps


def aggregate(per_seed: dict[int, dict], objective: str) -> dict[str, Any]:
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
        out[f"{objective}_seed{s}"] = per_seed[s][objective]
        if "node_id" in per_seed[s]:
            out[f"node_id_seed{s}"] = per_seed[s]["node_id"]
        if "checkpoint_path" in per_seed[s]:
            out[f"checkpoint_seed{s}"] = per_seed[s]["checkpoint_path"]
    out["train_time_s_sum"] = sum(per_seed[s].get("train_time_s", 0.0) for s in seeds)
    out["step"] = int(per_seed[seeds[0]]["step"])
    out["num_seeds"] = len(seeds)
    return out


def trial_driver(params: dict, payload: dict) -> None:
    """The Tune function trainable: one configuration, ``len(seeds)`` Train runs, mean reports."""
    import ray
    from ray import tune
    from ray.util.queue import Empty, Queue

    sweep = LoadedSweep(SweepSpec.model_validate(payload["spec"]), None, payload["base_raw"], payload["source"])
    spec = sweep.spec
    searched = {k: params[k] for k in spec.search}
    trial_id = tune.get_context().get_trial_id()
    driver_node = ray.get_runtime_context().get_node_id()
    runs_root = join(payload["sweep_dir"], RUNS_DIR)
    if payload.get("in_process"):
        return _train_in_trial(sweep, searched, trial_id, runs_root, driver_node, payload.get("loop_extra"))
    q = Queue(actor_options={"num_cpus": 0})
    history: dict[int, dict[int, dict]] = {}  # step -> seed -> metrics
    errors: dict[int, BaseException] = {}
    threads = []
    for seed in spec.seeds:
        cfg = sweep.trial_config(searched, seed, runs_root)
        name = f"{trial_id}_seed{seed}"
        run_dir = join(runs_root, name)
        done = _read_history(run_dir)
        diverged = [m for m in done if "non_finite_step" in m]
        if diverged:  # deterministic: running it again would diverge again
            raise NonFiniteLossError(f"seed {seed}: {diverged[-1]['error']}")
        for m in done:
            history.setdefault(m["step"], {})[seed] = m
        if done and done[-1]["step"] >= cfg.train.max_steps:
            continue  # this seed finished before the trial was interrupted
        if not exists(join(run_dir, "config.yaml")):
            write_text(join(run_dir, "config.yaml"), yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
        trainer = build_trainer(cfg, name, runs_root,
                                callbacks=[_metrics_callback(run_dir, verbose=False), _queue_callback(q, seed)],
                                loop_extra=payload.get("loop_extra"))

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
    k = len(spec.seeds)

    def flush():
        nonlocal reported
        for step in sorted(s for s in history if s > reported):
            if len(history[step]) < k:
                break
            tune.report({**aggregate(history[step], spec.objective.metric), "driver_node_id": driver_node})
            reported = step

    flush()
    while any(t.is_alive() for t in threads) or not q.empty():
        try:
            seed, m = q.get(timeout=1.0)
        except (pyqueue.Empty, Empty):
            if errors:
                break
            continue
        if "non_finite_step" in m:
            errors[seed] = NonFiniteLossError(m["error"])
            break
        history.setdefault(m["step"], {})[seed] = m
        flush()
    for t in threads:
        t.join(timeout=5)
    if errors:
        seed, err = next(iter(errors.items()))
        if isinstance(err, NonFiniteLossError):
            raise NonFiniteLossError(f"seed {seed}: {err}")
        raise RuntimeError(f"seed {seed}: {_root_message(err)}") from err


def _complete_checkpoints(run_dir: Path) -> list[Path]:
    from ..recipe import META_FILE, STATE_FILE

    return sorted(p for p in run_dir.glob("checkpoint_*") if (p / STATE_FILE).exists() and (p / META_FILE).exists())


def _train_in_trial(sweep: LoadedSweep, searched: dict, trial_id: str, runs_root: str, node: str,
                    loop_extra: dict | None) -> None:
    """One seed, one CPU worker: run the training loop in this Tune trial process (no Train
    controller or worker group). Same files as a Ray Train run: ``runs/<trial>_seed<k>/`` with
    ``config.yaml``, ``metrics.jsonl`` and ``checkpoint_<step>`` folders (the newest
    ``keep_checkpoints`` kept); a retried or restored trial resumes from its newest checkpoint."""
    import shutil

    import torch
    from ray import tune

    from ..recipe import WorkerEnv, load_state, run_loop

    spec = sweep.spec
    seed = spec.seeds[0]
    cfg = sweep.trial_config(searched, seed, runs_root)
    run_dir = Path(runs_root) / f"{trial_id}_seed{seed}"
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "config.yaml").exists():
        write_text(str(run_dir / "config.yaml"), yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    ckpts = _complete_checkpoints(run_dir)
    state = load_state(ckpts[-1]) if ckpts else None
    start = state["step"] if state is not None else 0
    lines = [m for m in _read_history(str(run_dir)) if m["step"] <= start or "non_finite_step" in m]
    if lines and "non_finite_step" in lines[-1]:  # deterministic: running it again would diverge again
        raise NonFiniteLossError(f"seed {seed}: {lines[-1]['error']}")
    obj = spec.objective.metric

    def to_tune(m: dict) -> None:
        tune.report({**aggregate({seed: m}, obj), "driver_node_id": node})

    # restored: Tune holds the steps in result.json; report the newest again and the ones after it
    already = max(_reported_steps(tune.get_context().get_trial_dir()), default=0)
    reported = max((m["step"] for m in lines if m["step"] < already), default=0)
    for m in lines:
        if m["step"] > reported:
            to_tune(m)
    if start >= cfg.train.max_steps:
        return

    def report(metrics: dict, ckpt_dir: Path | None) -> None:
        m = {**metrics, "node_id": node}
        if ckpt_dir is not None:
            final = run_dir / f"checkpoint_{m['step']:07d}"
            tmp = run_dir / f".tmp_{final.name}"
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.copytree(ckpt_dir, tmp)
            shutil.rmtree(final, ignore_errors=True)
            tmp.rename(final)
            m["checkpoint_path"] = str(final)
        lines.append(m)
        write_text(str(run_dir / METRICS_FILE), "".join(json.dumps(x) + "\n" for x in lines))
        for old in _complete_checkpoints(run_dir)[:-cfg.train.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        if "non_finite_step" not in m:
            to_tune(m)

    env = WorkerEnv(0, 1, torch.device("cpu"), lambda: state, report, lambda model: model)
    run_loop(cfg, env, fault=(loop_extra or {}).get("_inject_fault"))
    if lines and "non_finite_step" in lines[-1]:
        raise NonFiniteLossError(f"seed {seed}: {lines[-1]['error']}")


def _root_message(e: BaseException) -> str:
    root = root_cause(e)
    return f"{type(root).__name__}: {root}"


# ---------------------------------------------------------------------------------------------


def _searcher(sweep: LoadedSweep, sweep_dir: str):
    import optuna
    from ray.tune.search.optuna import OptunaSearch

    spec = sweep.spec
    url = spec.study_storage
    if url is None:
        db_dir = sweep_dir if not is_uri(sweep_dir) else str(Path("~/.mmi-ray/optuna").expanduser())
        Path(db_dir).mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{Path(db_dir, 'optuna.db' if not is_uri(sweep_dir) else f'{spec.name}.db')}"
    storage = optuna.storages.RDBStorage(url)
    return OptunaSearch(
        space={k: p.optuna_distribution() for k, p in spec.search.items()},
        metric=spec.objective.metric,
        mode=spec.objective.mode,
        points_to_evaluate=[dict(p) for p in spec.points_to_evaluate] or None,
        sampler=optuna.samplers.TPESampler(seed=spec.searcher_seed),
        study_name=spec.name,
        storage=storage,
    ), url


def _callbacks(spec: SweepSpec) -> list:
    cbs = []
    t = spec.tracking
    if t.mlflow_uri:
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        cbs.append(MLflowLoggerCallback(tracking_uri=t.mlflow_uri, experiment_name=spec.name))
    if t.wandb_project:
        from ray.air.integrations.wandb import WandbLoggerCallback

        cbs.append(WandbLoggerCallback(project=t.wandb_project, group=spec.name))
    return cbs


def _trainable(payload: dict):
    from ray import tune

    def mmi_trial(config):  # stable name: Tuner.restore needs the same trainable
        trial_driver(config, payload)

    spec = SweepSpec.model_validate(payload["spec"])
    if payload.get("in_process"):  # the trial trains itself: it holds the worker's CPUs
        return tune.with_resources(mmi_trial, {"CPU": spec.resources.cpus_per_worker})
    driver = spec.resources.driver_resource
    return tune.with_resources(mmi_trial, {driver: 0.01} if driver else {"CPU": 0.01})


def sweep_dir_of(spec: SweepSpec) -> tuple[str, str]:
    storage = spec.storage_path if is_uri(spec.storage_path) else str(Path(spec.storage_path).expanduser().resolve())
    return storage, join(storage, spec.name)


def cluster_resources() -> dict[str, float]:
    import ray

    return dict(ray.cluster_resources())


def run_sweep(sweep: LoadedSweep, resume: bool = False, verbose: int = 1, loop_extra: dict | None = None) -> dict:
    """Run (or resume) the sweep and return its summary (also written to ``sweep_summary.json``)."""
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    spec = sweep.spec
    storage, sweep_dir = sweep_dir_of(spec)
    try:
        ensure_writable(storage)
    except StorageError as e:
        raise ConfigError(sweep.source, f"storage_path: {e}") from None
    spec_text = yaml.safe_dump({"spec": spec.model_dump(mode="json"), "base": sweep.base_raw}, sort_keys=True)
    started = exists(join(sweep_dir, SPEC_FILE))
    if started and not resume:
        raise ConfigError(sweep.source, f"name: sweep '{spec.name}' already exists in {storage}; "
                                        "add --resume to continue it, or choose another name")
    if resume and not started:
        raise ConfigError(sweep.source, f"name: no sweep '{spec.name}' in {storage} to resume")
    if resume and read_text(join(sweep_dir, SPEC_FILE)) != spec_text:
        raise ConfigError(sweep.source, f"the spec differs from the one sweep '{spec.name}' started with; "
                                        "resume with the same spec")
    if not started:
        write_text(join(sweep_dir, SPEC_FILE), spec_text)

    init_ray(log_to_driver=verbose > 1)
    payload = {"spec": spec.model_dump(mode="json"), "base_raw": sweep.base_raw, "source": sweep.source,
               "sweep_dir": sweep_dir, "loop_extra": loop_extra, "in_process": sweep.in_process()}
    trainable = _trainable(payload)
    cluster = cluster_resources()
    need = sweep.trial_cpus()
    if need > cluster.get("CPU", 0):
        msg = (f"resources: one trial runs {len(spec.seeds)} seed(s) x {spec.resources.workers} worker(s) x "
               f"{spec.resources.cpus_per_worker} CPU = {need:g} CPUs side by side, but the cluster has "
               f"{cluster.get('CPU', 0):g}; lower resources.cpus_per_worker (fractions work) or the seeds")
        if not os.environ.get("RAY_ADDRESS"):
            raise ConfigError(sweep.source, msg)
        print(f"[mmi-ray] warning: {msg} (waiting for the autoscaler)", flush=True)
    concurrency = sweep.derived_concurrency(cluster)
    t0 = time.time()
    if resume and tune.Tuner.can_restore(sweep_dir):
        tuner = tune.Tuner.restore(sweep_dir, trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        searcher, study_url = _searcher(sweep, sweep_dir)
        if spec.scheduler.type == "asha":
            scheduler = ASHAScheduler(time_attr="step", max_t=sweep.max_steps, grace_period=spec.scheduler.grace_period,
                                      reduction_factor=spec.scheduler.reduction_factor)
        else:
            scheduler = FIFOScheduler()
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(
                metric=spec.objective.metric,
                mode=spec.objective.mode,
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=spec.num_trials,
                max_concurrent_trials=concurrency,
                time_budget_s=spec.failure.time_budget_s,
                trial_name_creator=lambda t: f"trial_{t.trial_id}",
                trial_dirname_creator=lambda t: f"trial_{t.trial_id}",
            ),
            run_config=tune.RunConfig(
                name=spec.name,
                storage_path=storage,
                failure_config=tune.FailureConfig(max_failures=spec.failure.trial_max_failures),
                callbacks=_callbacks(spec),
                verbose=verbose,
            ),
        )
        if verbose:
            print(f"[mmi-ray] sweep '{spec.name}': {spec.num_trials} trials x {len(spec.seeds)} seed(s), "
                  f"{concurrency} at once; Optuna study in {study_url}", flush=True)
    grid = tuner.fit()
    wall = time.time() - t0
    from .summary import summarize

    summary = summarize(grid, sweep, sweep_dir, wall)
    write_text(join(sweep_dir, SUMMARY_FILE), json.dumps(summary, indent=2, default=str))
    return summary
