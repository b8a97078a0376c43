"""The search side of a sweep: start or resume it, check it against the cluster, run its Tune
experiment (Optuna TPE + ASHA over the trials of mmi_ray/sweep/trial.py; the ``Tuner`` itself is
built by mmi_ray/sweep/experiment.py), write its summary, then the confirmation runs.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..errors import ConfigError, StorageError
from ..layout import (
    LATEST_LINK,
    OPTUNA_DB,
    SPEC_FILE,
    STEP,
    SWEEP_SUMMARY_FILE,
    read_spec,
    spec_text,
)
from ..ray_init import init_ray
from ..storage import basename, ensure_writable, exists, is_uri, join, read_text, write_text
from .experiment import experiment
from .placement import check_cluster_fits, concurrency, sweep_dir_of
from .spec import LoadedSweep, SweepSpec, params_text
from .trial import TrialPayload

REPEAT_ASKS = 20
"""How many times a trial asks TPE for a configuration that has not finished before it takes a
repeat (adopted from its finished run: nothing trains)."""


def config_key(config: dict) -> str:
    """One string per configuration (the searched values), the same for a repeat."""
    return json.dumps(config, sort_keys=True, default=str)


def _repeats_message(configs: list[dict], took_repeat: bool) -> str:
    """The console line for the finished configurations TPE proposed again before a trial got one."""
    distinct = list({config_key(c): c for c in configs}.values())
    text = "; ".join(f"({params_text(c)})" for c in distinct[:2])
    text += f" and {len(distinct) - 2} more" if len(distinct) > 2 else ""
    text += f" ({len(configs)} proposals)" if len(configs) > len(distinct) else ""
    told = "its result" if len(distinct) == 1 else "their results"
    return (f"[mmi-ray] TPE proposed {text} again, finished before: Optuna is told {told} again"
            + (f"; after {REPEAT_ASKS} such proposals in a row this trial takes the repeat (adopted from its "
               "finished run: nothing trains)" if took_repeat else " and asked for another (no trial spent on it)"))


def _searcher_class():
    from ray.tune.search.optuna import OptunaSearch

    class BudgetAwareOptunaSearch(OptunaSearch):
        """Ray's OptunaSearch, told what early stopping means. Intermediate values are keyed by the
        training step (not by Tune's report count), and a trial that ended short of the full budget
        without an error (ASHA stopped it) reaches Optuna as PRUNED, its value the last intermediate
        one, so TPE never takes a 40-step score for a finished 120-step one.

        A proposal of a configuration that already finished at the full budget does not take a
        trial: Optuna is told that configuration's result again (what an adopted repeat would have
        reported) and asked again, so ``num_trials`` counts configurations tried, not proposals. After
        ``REPEAT_ASKS`` repeats in a row (a small discrete space tried out) the repeat takes the trial
        and is adopted from its finished run. The ids Optuna knows the extra asks by are the trial's
        id with ``~N``; ``asked_as`` maps the trial to the one it runs."""

        def __init__(self, *args, budget_steps: int, **kwargs):
            super().__init__(*args, **kwargs)
            self.budget_steps = budget_steps
            self.reported: dict[str, set[int]] = {}
            self.finished: dict[str, dict] = {}   # configuration -> the result it finished with
            self.config_of: dict[str, str] = {}   # trial -> its configuration
            self.asked_as: dict[str, str] = {}    # trial -> the id Optuna knows its proposal by
            self.repeats_told = 0
            self.open_in_study: set[str] = set()  # trials the study holds as running (``_told``)

        def suggest(self, trial_id: str):
            ask_id, repeats = trial_id, []
            for n in range(REPEAT_ASKS):
                config = super().suggest(ask_id)
                key = config_key(config)
                known = self.finished.get(key)
                if known is None or n == REPEAT_ASKS - 1:
                    break
                super().on_trial_complete(ask_id, known)  # what the adopted repeat would report
                self.repeats_told += 1
                repeats.append(config)
                ask_id = f"{trial_id}~{n + 1}"
            if repeats:
                print(_repeats_message(repeats, took_repeat=known is not None), flush=True)
            self.asked_as[trial_id] = ask_id
            self.config_of[trial_id] = key
            return config

        def _told(self, trial_id: str) -> bool:
            """Whether Optuna's study already holds this trial as finished: a trial that finished
            shortly before its driver was killed can run again on ``--resume`` (Tune's experiment
            state on a storage URI is synced now and then, not at each trial's end); it then
            re-reports what the study has, which Optuna refuses to take twice."""
            if trial_id in self.open_in_study:  # asked once per trial, not at every result
                return False
            ot_trial = self._ot_trials.get(self.asked_as.get(trial_id, trial_id))  # OptunaSearch's own map
            if ot_trial is None:
                return False
            states = self._ot_study.get_trials(deepcopy=False)
            if ot_trial.number < len(states) and states[ot_trial.number].state.is_finished():
                return True
            self.open_in_study.add(trial_id)
            return False

        def restore(self, checkpoint_path: str):
            """Tune's saved state is older than the study (SQLite, written at each report): a trial
            open then may have finished since, so which trials are open is asked of the study again."""
            super().restore(checkpoint_path)
            self.open_in_study = set()

        def on_trial_result(self, trial_id: str, result: dict):
            if self._told(trial_id):
                return
            step = int(result.get(STEP, 0))
            self.reported.setdefault(trial_id, set()).add(step)
            super().on_trial_result(self.asked_as.get(trial_id, trial_id), {**result, "training_iteration": step})

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
            told = self._told(trial_id)
            self.open_in_study.discard(trial_id)
            step = int((result or {}).get(STEP, 0))
            if result and not error and not told and step not in self.reported.get(trial_id, set()):
                self.on_trial_result(trial_id, result)  # Tune withholds the result a scheduler stopped on
            self.reported.pop(trial_id, None)
            stopped = bool(result) and not error and step < self.budget_steps
            metrics = self.metric if isinstance(self.metric, list) else [self.metric]
            key = self.config_of.pop(trial_id, None)
            if key and result and not error and not stopped and all(m in result for m in metrics):
                self.finished[key] = {m: result[m] for m in metrics} | {STEP: step}
            ask_id = self.asked_as.pop(trial_id, trial_id)
            if not told:  # no result and no error: OptunaSearch tells it PRUNED, valued at its last report
                super().on_trial_complete(ask_id, None if stopped else result, error)

    return BudgetAwareOptunaSearch


def tpe_sampler(seed: int, startup_trials: int):
    """The TPE sampler a sweep searches with (``benchmarks/search_efficiency.py`` replays the same):
    ``startup_trials`` random proposals before it models. ``constant_liar``: trials still running
    count as bad results, so trials side by side are not given the configuration one of them is
    already training (Optuna's default from 5.0, not before; no effect on a replay, where none runs)."""
    import optuna

    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup_trials, constant_liar=True)


STUDIES_DIR = "~/.mmi-ray/optuna"
"""Where the Optuna study of a sweep on a storage URI lives: SQLite needs a local disk, so it stays on
the machine that runs the sweep's driver (the head), one file per sweep URI."""


def study_file(sweep_dir: str) -> Path:
    """The Optuna study's SQLite file: in a local sweep folder, or under ``STUDIES_DIR`` for a sweep
    on a storage URI (named for the sweep and a hash of its URI, so two buckets never share one)."""
    if not is_uri(sweep_dir):
        path = Path(sweep_dir, OPTUNA_DB)
    else:
        import hashlib

        tag = hashlib.sha1(sweep_dir.rstrip("/").encode()).hexdigest()[:8]
        path = Path(STUDIES_DIR).expanduser() / f"{basename(sweep_dir)}-{tag}.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _searcher(sweep: LoadedSweep, sweep_dir: str):
    import optuna

    spec = sweep.spec
    url = spec.study_storage
    if url is None:
        url = f"sqlite:///{study_file(sweep_dir)}"
    storage = optuna.storages.RDBStorage(url)
    space = sweep.space()
    return _searcher_class()(
        budget_steps=sweep.max_steps,
        space=space,  # define-by-run: a key that means nothing given the others is not drawn
        # one objective: its metric and mode; several: lists, and Optuna's TPE is multi-objective
        metric=[o.metric for o in spec.objectives] if spec.more_objectives else spec.objective.metric,
        mode=[o.mode for o in spec.objectives] if spec.more_objectives else spec.objective.mode,
        points_to_evaluate=[space.drawn(p) for p in spec.points_to_evaluate] or None,
        sampler=tpe_sampler(spec.searcher_seed, spec.searcher_startup_trials),
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


def _start_or_resume(sweep: LoadedSweep, storage: str, sweep_dir: str, resume: bool) -> None:
    """Refuse to overwrite a sweep, or to resume one that differs; record the spec on a new start."""
    spec = sweep.spec
    try:
        ensure_writable(storage)
    except StorageError as e:
        raise ConfigError(sweep.source, f"storage_path: {e}") from None
    text = spec_text(spec.model_dump(mode="json"), sweep.base_raw)
    started = exists(join(sweep_dir, SPEC_FILE))
    if started and not resume:
        free = next(f"{spec.name}-{i}" for i in range(2, 10_000) if not exists(join(storage, f"{spec.name}-{i}", SPEC_FILE)))
        raise ConfigError(sweep.source, f"name: sweep '{spec.name}' already exists in {storage}; continue it with "
                                        f"`mmi-ray sweep {sweep.source} --resume`, or start another with "
                                        f"`mmi-ray sweep {sweep.source} name={free}`")
    if resume and not started:
        raise ConfigError(sweep.source, f"name: no sweep '{spec.name}' in {storage} to resume")
    if resume and read_text(join(sweep_dir, SPEC_FILE)) != text and _revalidated(sweep_dir) != text:
        raise ConfigError(sweep.source, f"the spec differs from the one sweep '{spec.name}' started with; "
                                        "resume with the same spec")
    if not started:
        write_text(join(sweep_dir, SPEC_FILE), text)
    link_latest(storage, sweep_dir)


def link_latest(storage: str, sweep_dir: str) -> None:
    """Point ``<storage>/latest`` at ``sweep_dir`` (a relative link; local storage only; a file or
    folder of that name that is not such a link is left alone)."""
    if is_uri(storage):
        return
    link = Path(storage) / LATEST_LINK
    if link.exists() and not link.is_symlink():
        return
    tmp = link.with_name(f".{LATEST_LINK}.{os.getpid()}")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(os.path.relpath(sweep_dir, storage))
    os.replace(tmp, link)  # atomic: a reader sees the old sweep or the new one


def _revalidated(sweep_dir: str) -> str:
    """A started sweep's recorded spec as this version writes it: keys added since it started take
    their defaults (which keep the old behaviour), so upgrading mmi-ray does not block a resume."""
    saved, base = read_spec(sweep_dir)
    try:
        return spec_text(SweepSpec.model_validate(saved).model_dump(mode="json"), base)
    except ValueError:  # a key this version no longer knows: it differs
        return ""


def _ends_missing(sweep_dir: str, num_trials: int) -> int:
    """Trials of the sweep that never ended (interrupted or never started)."""
    from .live import read_ends

    return max(0, num_trials - len(read_ends(sweep_dir)))


def announce(sweep: LoadedSweep, sweep_dir: str, resume: bool) -> None:
    """Where the results go, and (on a new start: a resumed sweep keeps its spec) what the spec's
    search design is warned about (``SweepSpec.search_advice``)."""
    print(f"[mmi-ray] sweep '{sweep.spec.name}' results: {sweep_dir}", flush=True)
    if not resume:
        for w in sweep.spec.search_advice():
            print(f"[mmi-ray] warning: {sweep.source}: {w}", flush=True)


def run_sweep(sweep: LoadedSweep, resume: bool = False, verbose: int = 1, rerun: bool = False) -> dict:
    """Run (or resume) the sweep and return its summary (also written to ``sweep_summary.json``).
    Runs whose identity finished before under the storage root are adopted, not trained
    (mmi_ray/reuse.py), unless ``rerun``. Then the confirmation runs, where the spec asks for them."""
    from ..reuse import index_root

    spec = sweep.spec
    storage, sweep_dir = sweep_dir_of(spec)
    _start_or_resume(sweep, storage, sweep_dir, resume)
    announce(sweep, sweep_dir, resume)
    t_ray = time.time()
    init_ray(log_to_driver=verbose > 1)
    t_ray = time.time() - t_ray
    payload = TrialPayload.of(sweep, sweep_dir, verbose, index_root(storage, not rerun))
    check_cluster_fits(sweep)
    t0 = time.time()
    cpu0 = os.times()
    _search(sweep, payload, storage, resume, verbose)
    wall, cpu1 = time.time() - t0, os.times()
    summary = _summarize(sweep, sweep_dir, wall, {"ray_start_s": t_ray, "fit_s": wall,
                                                  "fit_driver_cpu_s": cpu1.user - cpu0.user + cpu1.system - cpu0.system})
    stopped = summary["interrupted"] = _ends_missing(sweep_dir, spec.num_trials)
    if stopped:
        print(f"[mmi-ray] the sweep stopped with {stopped} trial(s) unfinished (Ctrl-C or failure.time_budget_s); "
              f"resume it with: mmi-ray sweep {sweep.source} --resume", flush=True)
        return summary
    if spec.confirm is not None:
        from .confirm import run_confirmation

        summary["confirmation"] = run_confirmation(sweep, sweep_dir, spec.confirm, verbose, rerun=rerun)
    return summary


def _search_options(sweep: LoadedSweep, sweep_dir: str, verbose: int, at_once: int, why: str) -> dict:
    """A new search's ``TuneConfig`` options: the Optuna searcher with its study, the scheduler, the
    trial count and time budget (and, ``verbose``, the line that says so)."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    spec = sweep.spec
    searcher, study_url = _searcher(sweep, sweep_dir)
    if spec.scheduler.type == "asha":
        scheduler = ASHAScheduler(time_attr=STEP, max_t=sweep.max_steps, grace_period=spec.scheduler.grace_period,
                                  reduction_factor=spec.scheduler.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    if verbose:
        print(f"[mmi-ray] sweep '{spec.name}': {spec.num_trials} trials x {len(spec.seeds)} seed(s), "
              f"{at_once} at once (from {why}); Optuna study in {study_url}", flush=True)
        if spec.more_objectives:
            names = ", ".join(f"{o.metric} ({o.mode})" for o in spec.objectives)
            print(f"[mmi-ray] objectives: {names}: multi-objective TPE; the report gives the Pareto front"
                  + (f"; ASHA stops trials on {spec.objective.metric} alone" if spec.scheduler.type == "asha"
                     else ""), flush=True)
    return {"metric": spec.objective.metric, "mode": spec.objective.mode, "search_alg": searcher,
            "scheduler": scheduler, "num_samples": spec.num_trials, "time_budget_s": spec.failure.time_budget_s}


def _search(sweep: LoadedSweep, payload: TrialPayload, storage: str, resume: bool, verbose: int) -> None:
    """The search itself: one Tune experiment, its progress shown on the console."""
    from ..reuse import tune_callback
    from .live import (
        SweepProgress,
        configure,
        hide_tune_restore_hint,
        tensorboard_hint,
        tune_verbosity,
    )

    spec, sweep_dir = sweep.spec, payload.sweep_dir
    hide_tune_restore_hint()
    configure(show=verbose == 1)
    progress = SweepProgress(sweep_dir, f"sweep '{spec.name}'", spec.num_trials, sweep.max_steps, spec.seeds,
                             spec.objective.metric, spec.objective.mode, show=verbose == 1)
    at_once, why = concurrency(sweep)
    tuner, _ = experiment(sweep, payload, storage, spec.name, restore=resume, at_once=at_once,
                          callbacks=[*_callbacks(spec), progress,
                                     *filter(None, [tune_callback(payload.runs_root, payload.reuse_root)])],
                          verbose=tune_verbosity(verbose),
                          new_options=lambda: _search_options(sweep, sweep_dir, verbose, at_once, why))
    if verbose:
        print(tensorboard_hint(sweep_dir), flush=True)
    try:
        tuner.fit()
    finally:
        configure(None)


def _summarize(sweep: LoadedSweep, sweep_dir: str, wall: float, phases: dict) -> dict:
    """The sweep's summary, with where the command's time went outside the trials
    (benchmarks/sweep_overhead.py reports it), written to the sweep folder."""
    from .summary import summarize

    t_sum = time.time()
    summary = summarize(sweep, sweep_dir, wall)
    summary["phases"] = {**phases, "summary_s": time.time() - t_sum}
    write_text(join(sweep_dir, SWEEP_SUMMARY_FILE), json.dumps(summary, indent=2, default=str))
    return summary
