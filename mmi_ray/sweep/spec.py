"""Sweep specs: YAML under ``sweeps/`` -> validated ``SweepSpec`` (before any trial starts).

A spec names a base training config (path or inline mapping) plus overrides, a search space over
any config key, points to evaluate first, the objective (a validation metric), trials, seeds per
configuration, the ASHA scheduler, resources, storage, failure limits and tracking.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from ..config import (
    Config,
    Section,
    WorkerResources,
    apply_overrides,
    blame,
    config_from_dict,
    flatten,
    format_validation_error,
    model_keys,
    read_yaml,
    resolve_paths,
    set_dotted,
)
from ..errors import ConfigError
from ..space import ConditionalSpace, Param
from ..storage import is_uri


def params_text(params: dict[str, Any]) -> str:
    """Searched values as the console prints them: ``key=value, ...``, floats to 4 significant digits."""
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


class Objective(Section):
    metric: str = "val_accuracy"
    """A validation metric reported by the recipe (never a test metric)."""
    mode: Literal["max", "min"] = "max"

    @model_validator(mode="after")
    def _validation_only(self):
        if "test" in self.metric.lower():
            raise ValueError(f"the objective must be a validation metric, not a test metric (got '{self.metric}')")
        return self


class Scheduler(Section):
    type: Literal["asha", "none"] = "asha"
    """``asha`` stops poor trials early on the worker-reported ``step``; ``none`` runs all to the end."""
    grace_period: int = Field(100, ge=1)
    """Steps every trial gets before it can be stopped."""
    reduction_factor: float = Field(2.0, gt=1.0)
    """ASHA's eta: the share of trials kept at each rung is 1 / reduction_factor."""


class Resources(WorkerResources):
    """Per Ray Train worker of every seed run (the training config's ``scaling`` words), plus
    where the trial drivers go and whether a trial trains in its own process."""

    driver_resource: str | None = None
    """Custom resource the Tune trial drivers need, e.g. ``mmi_driver`` carried by an on-demand head
    node only, so a spot preemption never kills a driver. None: drivers take 0.01 CPU anywhere."""
    in_process: bool | None = None
    """Train inside the Tune trial itself, with no Ray Train controller or worker group (saves their
    start-up, ~2/3 of a short CPU trial); the trial then holds the worker's CPUs and
    ``worker_resources``. None (auto): when a trial is one seed on one CPU worker with no driver or
    worker resources (on local storage or a URI alike); false: always a Ray Train run."""


class Failure(Section):
    trial_max_failures: int = Field(1, ge=0)
    """Tune retries of a failed trial (it resumes from its checkpoints)."""
    train_max_failures: int = Field(1, ge=0)
    """Ray Train restarts of a failed worker group inside one seed run."""
    time_budget_s: float | None = Field(None, gt=0)
    """Wall-clock budget of the whole sweep; a leak or hang then ends in an error, not a wait."""


class Tracking(Section):
    """TensorBoard event files are always written in each trial folder (Tune's default loggers);
    MLflow and W&B are optional extras."""

    mlflow_uri: str | None = None
    """MLflow tracking URI (needs ``mmi-ray[mlflow]``), e.g. ``sqlite:///mlflow.db`` or ``http://...``; None
    disables. File stores (``file://`` or a plain path) are refused: MLflow 3 no longer accepts them."""

    @field_validator("mlflow_uri")
    @classmethod
    def _mlflow_store(cls, uri: str | None) -> str | None:
        if uri and (uri.startswith("file:") or not is_uri(uri)):
            raise ValueError("MLflow 3 refuses file stores; use a database such as 'sqlite:///mlflow.db' "
                             "(every trial is logged there) or a tracking server 'http://...'")
        return uri
    wandb_project: str | None = None
    """W&B project (needs ``mmi-ray[wandb]``); None disables."""


class Confirm(Section):
    """Confirmation runs after the search: the best configurations and the baselines trained again on
    fresh seeds at the full budget. Only these feed the headline table (validation and test per seed;
    test read once per run, after training, and never used to choose)."""

    top_k: int = Field(3, ge=1)
    """The best completed configurations of the search (ranked on validation) to train again."""
    seeds: list[int] = Field([1000, 1001, 1002, 1003, 1004], min_length=2)
    """Fresh training seeds, disjoint from the search's ``seeds``; every arm trains on all of them."""
    baselines: bool = True
    """Also train DSS (``loss.mi_weight: 0``) and label-only (``loss.mi_weight: 0``,
    ``loss.rationale_weight: 0``) on the same seeds and budget: the best such configuration of the
    search if it found one, else the base config with those weights."""


class SweepSpec(Section):
    name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$")
    """Sweep name: the folder under ``storage_path``."""
    base: str | dict
    """Base training config: a YAML path (relative to the spec file) or an inline mapping."""
    overrides: dict[str, Any] = {}
    """Dotted keys applied to the base config before the search values."""
    search: dict[str, Param]
    """Searched keys (dotted config keys) and their distributions."""
    points_to_evaluate: list[dict[str, Any]] = []
    """Configurations the searcher tries first (e.g. the paper defaults, the DSS baseline)."""
    objective: Objective = Objective()
    """The objective, or (given as a list) the first of several: then the search is Optuna's
    multi-objective TPE over all of them, and this first one is the primary objective (ASHA's
    stopping rule, the ranking of configurations, the choice of confirmation arms)."""
    more_objectives: list[Objective] = []
    """The further objectives of a multi-objective spec (``objective: [a, b, ...]`` sets them)."""
    num_trials: int = Field(..., ge=1)
    """Configurations to try (each trained once per seed)."""
    seeds: list[int] = Field([0], min_length=1)
    """Training seeds per configuration; the searcher sees the mean over them."""
    searcher_seed: int = 0
    """Seed of Optuna's TPE sampler."""
    searcher_startup_trials: int = Field(10, ge=1)
    """Proposals TPE draws at random before it models the results (Optuna's ``n_startup_trials``;
    ``points_to_evaluate`` count among them). On a space of a few dozen points, lower it: with the
    default 10, a 12-point grid is searched at random for 10 of its 12 proposals; left unset in a sweep
    where TPE would model fewer than half its proposals, the sweep is warned (``search_advice``)."""
    scheduler: Scheduler = Scheduler()
    resources: Resources = Resources()
    max_concurrent_trials: int | None = Field(None, ge=1)
    """None derives it from the cluster's CPUs/GPUs and one trial's needs."""
    storage_path: str = "results"
    """Local folder, NFS mount, or s3:// / gs:// URI; the sweep goes to ``storage_path/name``."""
    study_storage: str | None = None
    """Optuna storage URL; None uses ``sqlite:///<sweep dir>/optuna.db``."""
    failure: Failure = Failure()
    tracking: Tracking = Tracking()
    confirm: Confirm | None = None
    """Confirmation runs after the search (none when absent; ``mmi-ray confirm`` runs them later)."""

    @model_validator(mode="before")
    @classmethod
    def _objective_list(cls, data):
        """``objective: [{metric, mode}, ...]``: the first is ``objective``, the rest ``more_objectives``."""
        if isinstance(data, dict) and isinstance(data.get("objective"), list):
            objs = data["objective"]
            if not objs:
                raise ValueError("objective: an empty list; give one objective or several")
            if data.get("more_objectives"):
                raise ValueError("objective: a list, and more_objectives too; give the objectives in one place")
            data = {**data, "objective": objs[0], "more_objectives": objs[1:]}
        return data

    @property
    def objectives(self) -> list[Objective]:
        """Every objective, the primary one first (one for a single-objective spec)."""
        return [self.objective, *self.more_objectives]

    def search_advice(self) -> list[str]:
        """What the search-efficiency replays (BENCHMARKS.md, "Search efficiency") advise against in this
        spec's search, as warnings; none when the spec sets the key itself.

        TPE's random start-up (Optuna's default 10 proposals, ``points_to_evaluate`` among them) is sized
        for hundreds of trials: in a sweep of a few dozen it leaves TPE to model few or none of the
        proposals. On replays of three small grids one to five random start-up proposals reached the
        grid's best with less compute than ten did."""
        points, proposals = len(self.points_to_evaluate), self.num_trials - len(self.points_to_evaluate)
        if "searcher_startup_trials" in self.model_fields_set or proposals <= 0:
            return []
        startup = self.searcher_startup_trials
        drawn = min(max(startup - points, 0), proposals)  # random proposals after the points; TPE models the rest
        if 2 * (proposals - drawn) >= proposals:
            return []
        suggest = points + max(1, proposals // 4)
        return [f"searcher_startup_trials: TPE draws {drawn} of this sweep's {proposals} proposals at random "
                f"(Optuna's default start-up, {startup}, counts the {points} points_to_evaluate) and models "
                f"{proposals - drawn}; on replays of small grids 1 to 5 random proposals reached the best with less "
                f"compute than 10 (docs/sweeps.md): set searcher_startup_trials: {suggest} "
                f"({points} point{'s' * (points != 1)}, then {suggest - points} at random), or {startup} to keep "
                "the default"]

    @model_validator(mode="after")
    def _points_in_space(self):
        metrics = [o.metric for o in self.objectives]
        if len(set(metrics)) != len(metrics):
            raise ValueError(f"objective: each metric once (got {metrics})")
        if not self.search:
            raise ValueError("search: the space is empty; name at least one key to search")
        for i, p in enumerate(self.points_to_evaluate):
            missing = set(self.search) - set(p)
            extra = set(p) - set(self.search)
            if missing or extra:
                raise ValueError(f"points_to_evaluate[{i}]: must set exactly the searched keys "
                                 f"(missing {sorted(missing)}, not searched {sorted(extra)})")
            for k, v in p.items():
                if not self.search[k].contains(v):
                    raise ValueError(f"points_to_evaluate[{i}].{k}: {v!r} is outside the search space")
        if len(self.points_to_evaluate) > self.num_trials:
            raise ValueError("num_trials must be >= the number of points_to_evaluate")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds must be distinct")
        if self.confirm is not None:
            if len(set(self.confirm.seeds)) != len(self.confirm.seeds):
                raise ValueError("confirm.seeds must be distinct")
            if set(self.confirm.seeds) & set(self.seeds):
                raise ValueError(f"confirm.seeds must be fresh: {sorted(set(self.confirm.seeds) & set(self.seeds))} "
                                 "also in seeds")
        r = self.resources
        if r.in_process and (len(self.seeds) > 1 or r.num_workers > 1 or r.use_gpu):
            raise ValueError("resources.in_process: needs one seed and one CPU worker (use_gpu: false)")
        return self


class LoadedSweep:
    """A validated spec, its base config (raw, and validated), and where it came from."""

    def __init__(self, spec: SweepSpec, base_raw: dict, source: str, base_source: str | None = None):
        self.spec, self.base_raw, self.source = spec, base_raw, source
        try:
            self.base = config_from_dict(base_raw, base_source or f"{source} (base)")
        except ConfigError as e:  # a key the spec's overrides set is the spec's to fix
            raise blame(e, [f"{k}=" for k in flatten(spec.overrides)], f"{source} (overrides)") from None

    def trial_config(self, params: dict[str, Any], seed: int, sweep_dir: str) -> Config:
        """The training config of one (configuration, seed) run."""
        raw = apply_overrides(self.base_raw, [])
        for k, v in params.items():
            set_dotted(raw, k.split("."), v, self.source)
        set_dotted(raw, ["train", "seed"], seed)
        for key in WorkerResources.model_fields:  # the spec's resources decide every seed run's scaling
            set_dotted(raw, ["scaling", key], getattr(self.spec.resources, key))
        set_dotted(raw, ["run", "storage_path"], sweep_dir)
        set_dotted(raw, ["run", "max_failures"], self.spec.failure.train_max_failures)
        return config_from_dict(raw, self.source)

    def space(self) -> ConditionalSpace:
        """The search space as Optuna draws it: conditional keys only where they mean something."""
        return ConditionalSpace(self.spec.search, flatten(self.base.model_dump(mode="json")))

    @property
    def max_steps(self) -> int:
        return self.base.train.max_steps

    def in_process(self, n_seeds: int | None = None) -> bool:
        """Whether trials of ``n_seeds`` seeds (default: the spec's) run their training loop in the Tune
        trial process (see Resources.in_process)."""
        r = self.spec.resources
        n = n_seeds or len(self.spec.seeds)
        if r.in_process is not None:
            return r.in_process and n == 1
        return (n == 1 and r.num_workers == 1 and not r.use_gpu and not r.worker_resources
                and not r.driver_resource)

    def trial_cpus(self, n_seeds: int | None = None) -> float:
        """CPUs one trial holds: its seed runs train side by side."""
        r = self.spec.resources
        return (n_seeds or len(self.spec.seeds)) * r.num_workers * r.cpus_per_worker

    def derived_concurrency(self, cluster: dict[str, float], n_seeds: int | None = None,
                            n_trials: int | None = None, scalable: list[dict[str, float]] | None = None) -> int:
        """Trials that fit the cluster at once (each holds ``trial_cpus()`` and its GPU shares;
        drivers and Train controllers take no CPU), unless ``max_concurrent_trials`` is given. With
        ``scalable`` (each node an autoscaling cluster can grow to), the trials that fit it at its
        maximum size, where that is more than fit the nodes up now: the autoscaler adds nodes only
        for trials that wait for them."""
        if self.spec.max_concurrent_trials:
            return self.spec.max_concurrent_trials
        from ..capacity import worker_request, workers_fit

        r = self.spec.resources
        k = n_seeds or len(self.spec.seeds)
        cpu_need = self.trial_cpus(k)
        fits = math.floor(cluster.get("CPU", 1) / cpu_need) if cpu_need else 1
        if r.use_gpu:
            fits = min(fits, math.floor(cluster.get("GPU", 0) / (k * r.num_workers * r.gpu_share()) + 1e-9))
        if scalable:
            fits = max(fits, workers_fit(worker_request(r), scalable) // (k * r.num_workers))
        return max(1, min(fits, n_trials or self.spec.num_trials))


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> LoadedSweep:
    """Read and validate a spec and every configuration it can produce, naming file and key."""
    source = str(path)
    raw = apply_overrides(read_yaml(path), overrides)
    try:
        spec = SweepSpec.model_validate(raw)
    except ValidationError as e:
        problems = format_validation_error(e, known=model_keys(SweepSpec, sections=True))
        if isinstance(raw.get("objective"), list):  # name the key as the spec wrote it: objective.<i>
            problems = [re.sub(r"^more_objectives\.(\d+)", lambda m: f"objective.{int(m.group(1)) + 1}", x)
                        for x in problems]
        raise blame(ConfigError(source, problems), overrides) from None
    if isinstance(spec.base, str):
        base_path = Path(spec.base)
        if not base_path.is_absolute():
            base_path = Path(os.path.dirname(os.path.abspath(source))) / base_path
        if not base_path.is_file():
            raise ConfigError(source, f"base: file not found: {base_path}")
        base_raw = read_yaml(base_path)
        base_source = f"{source} (base {spec.base})"
    else:
        base_raw, base_source = apply_overrides(spec.base, []), f"{source} (base)"
    for key, value in flatten(spec.overrides).items():
        set_dotted(base_raw, key.split("."), value, f"{source} (overrides)")
    sweep = LoadedSweep(spec, resolve_paths(base_raw), source, base_source)
    base = sweep.base
    # every searched key must exist in the config, and every candidate value must validate
    for key, p in spec.search.items():
        probes = p.values if p.type == "choice" else [p.low, p.high]
        for v in probes:
            if p.type == "int":
                v = int(v)
            try:
                sweep.trial_config({key: v}, spec.seeds[0], "/tmp")
            except ConfigError as e:
                raise ConfigError(source, [f"search.{key}: {x.split(': ', 1)[-1]}" for x in e.problems]) from None
    for i, point in enumerate(spec.points_to_evaluate):
        try:
            sweep.trial_config(point, spec.seeds[0], "/tmp")
        except ConfigError as e:
            raise ConfigError(source, [f"points_to_evaluate[{i}]: {x.split(': ', 1)[-1]}" for x in e.problems]) from None
    for i, o in enumerate(spec.objectives):  # a metric the evaluation will report
        if "_rationale_" in o.metric and base.train.eval_rationales == 0:
            raise ConfigError(source, f"objective{f'.{i}' if spec.more_objectives else ''}.metric: '{o.metric}' needs rationales generated at evaluation; "
                                      "set train.eval_rationales (in overrides) to the number to score")
    if spec.scheduler.type == "asha" and spec.scheduler.grace_period > base.train.max_steps:
        raise ConfigError(source, f"scheduler.grace_period: {spec.scheduler.grace_period} exceeds train.max_steps "
                                  f"({base.train.max_steps})")
    return sweep
