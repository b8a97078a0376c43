"""Load sweep result folders into one tidy DataFrame. The only module that reads Ray's files.

One row per trial x seed x evaluation step, with every searched hyperparameter as a column, the
loss terms, validation metrics, the MI estimate, steps, in-loop time and the trial's status.
Damaged or partial sweeps load too: what could not be read is listed in ``LoadResult.skipped``.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml

from ..config import flatten
from ..layout import (
    CHECKPOINT_PATH,
    COMPLETED,
    CONFIG_FILE,
    CONFIRM_DIR,
    CONFIRMATION_FILE,
    ERROR,
    ERROR_FILE,
    INTERRUPTED,
    NOT_RUN,
    PARAMS_FILE,
    RUNNING,
    RUNS_CSV,
    RUNS_DIR,
    RUNS_PARQUET,
    SPEC_FILE,
    STEP,
    STOPPED,
    SWEEP_SUMMARY_FILE,
    TRAIN_LOG_FILE,
    TRIAL_PREFIX,
    TRIALS_FILE,
    is_divergence,
    parse_run_name,
    read_metrics,
    read_spec,
    read_trial_ends,
)
from ..reuse import reused_from
from ..storage import is_uri
from .stats import run_method


@dataclass
class LoadResult:
    runs: pd.DataFrame
    """Tidy: one row per trial x seed x evaluation step."""
    trials: pd.DataFrame
    """One row per trial: status, searched values, error text."""
    sweeps: dict[str, dict] = field(default_factory=dict)
    """Per sweep name: its spec, base config and summary (when written)."""
    skipped: list[str] = field(default_factory=list)
    """What could not be read, one line each (damaged files, missing runs)."""
    train_log: pd.DataFrame = field(default_factory=pd.DataFrame)
    """Tidy: one row per trial x seed x logged step (``train.log_every``): the training loss terms."""


def _localize(path: str) -> Path:
    """A storage URI is copied (its small text files only) into a temp folder."""
    if not is_uri(path):
        return Path(path).expanduser()
    from pyarrow import fs

    filesystem, root = fs.FileSystem.from_uri(path)
    dest = Path(tempfile.mkdtemp(prefix="mmi-ray-analysis-"))
    for info in filesystem.get_file_info(fs.FileSelector(root, recursive=True)):
        if info.type != fs.FileType.File or not info.path.endswith((".json", ".jsonl", ".yaml", ".txt", ".csv")):
            continue
        rel = info.path[len(root):].lstrip("/")
        if "/checkpoint_" in f"/{rel}":
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with filesystem.open_input_stream(info.path) as src:
            target.write_bytes(src.read())
    return dest


def _trial_status(trial_dir: Path | None, last_step: int, max_steps: int, finished_sweep: bool,
                  ended: str | None = None, ends_known: bool = False) -> str:
    """``ended``: the trial's newest entry in ``ended_trials.jsonl``; ``ends_known``: the sweep kept that
    file (older sweeps did not: a trial short of its budget in a finished sweep then counts as stopped).
    Tune's ``error.txt`` stays in a trial folder after the trial ran again and finished (a retry within
    the sweep, or ``--resume``): it says the trial errored only where no later end is recorded."""
    if ended == ERROR or (ended is None and trial_dir is not None and (trial_dir / ERROR_FILE).exists()):
        return ERROR
    if last_step >= max_steps:
        return COMPLETED
    if last_step == 0:
        return NOT_RUN if finished_sweep else RUNNING
    if not finished_sweep:
        return RUNNING
    if ends_known and ended != STOPPED:
        return INTERRUPTED
    return STOPPED


def load_sweep_dir(path: str | Path, finished: bool | None = None) -> LoadResult:
    """One sweep folder (``<storage_path>/<name>``). ``finished`` (default: the sweep wrote its
    summary) decides whether a trial short of its budget was stopped early or is still running."""
    skipped: list[str] = []
    root = _localize(str(path))
    if not (root / SPEC_FILE).exists():
        return LoadResult(pd.DataFrame(), pd.DataFrame(), {}, [f"{root}: no {SPEC_FILE}: not a sweep folder"])
    spec, base = read_spec(str(root))
    name = spec["name"]
    searched = list(spec["search"])
    max_steps = int(flatten(base).get("train.max_steps", 0) or 0)
    summary = {}
    if (root / SWEEP_SUMMARY_FILE).exists():
        try:
            summary = json.loads((root / SWEEP_SUMMARY_FILE).read_text())
        except json.JSONDecodeError:
            skipped.append(f"{root / SWEEP_SUMMARY_FILE}: damaged, ignored")
    finished = bool(summary) if finished is None else finished

    trial_dirs = {p.name[len(TRIAL_PREFIX):]: p for p in root.glob(f"{TRIAL_PREFIX}*") if p.is_dir()}
    runs_root = root / RUNS_DIR
    run_dirs = sorted(p for p in runs_root.iterdir() if p.is_dir() and parse_run_name(p.name)) \
        if runs_root.is_dir() else []
    rows, trial_rows, log_rows = [], {}, []
    for run in run_dirs:
        tid, seed = parse_run_name(run.name)
        cfg_path = run / CONFIG_FILE
        if not cfg_path.exists():
            skipped.append(f"{run}: no {CONFIG_FILE}, run left out")
            continue
        try:
            cfg = flatten(yaml.safe_load(cfg_path.read_text()))
        except yaml.YAMLError:
            skipped.append(f"{cfg_path}: damaged, run left out")
            continue
        params = {k: cfg.get(k) for k in searched}
        reused = reused_from(run) is not None  # adopted from an earlier run (mmi_ray/reuse.py)
        history = read_metrics(run, skipped)
        log_rows += [{"sweep": name, "trial_id": tid, "seed": seed, "method": run_method(cfg), **m}
                     for m in read_metrics(run, skipped, TRAIN_LOG_FILE)]
        if not history:
            skipped.append(f"{run}: no evaluations yet")
        diverged = ""
        for m in history:
            if is_divergence(m):
                diverged = f"seed {seed}: {m.get('error', 'non-finite loss')}"
                continue
            rows.append({"sweep": name, "trial_id": tid, "seed": seed, **params, "method": run_method(cfg),
                         "dataset": cfg.get("data.dataset"), "model": cfg.get("model.name"),
                         "use_gpu": bool(cfg.get("scaling.use_gpu")), "num_workers": cfg.get("scaling.num_workers"),
                         "reused": reused,
                         **{k: v for k, v in m.items() if k != CHECKPOINT_PATH},
                         CHECKPOINT_PATH: m.get(CHECKPOINT_PATH)})
        last = max((int(m[STEP]) for m in history), default=0)
        t = trial_rows.setdefault(tid, {"sweep": name, "trial_id": tid, **params, "method": run_method(cfg),
                                        "last_steps": [], "diverged": "", "reused_runs": 0})
        t["last_steps"].append(last)
        t["reused_runs"] += reused
        t["diverged"] = t["diverged"] or diverged
    for tid, tdir in trial_dirs.items():  # trials whose runs never started (errors before training)
        if tid not in trial_rows:
            params = {}
            if (tdir / PARAMS_FILE).exists():
                try:
                    params = {k: json.loads((tdir / PARAMS_FILE).read_text()).get(k) for k in searched}
                except json.JSONDecodeError:
                    skipped.append(f"{tdir / PARAMS_FILE}: damaged")
            trial_rows[tid] = {"sweep": name, "trial_id": tid, **params,
                               "method": run_method({**flatten(base), **params}), "last_steps": [0], "diverged": "",
                               "reused_runs": 0}
    ends = read_trial_ends(root, skipped)
    ends_known = ends is not None
    ends = ends or {}
    trials = []
    for tid, t in trial_rows.items():
        tdir = trial_dirs.get(tid)
        last = min(t.pop("last_steps"))
        diverged = t.pop("diverged")
        status = ERROR if diverged else _trial_status(tdir, last, max_steps, finished, ends.get(tid), ends_known)
        err = diverged
        if status == ERROR and not err and tdir is not None and (tdir / ERROR_FILE).exists():
            lines = [x for x in (tdir / ERROR_FILE).read_text(errors="replace").splitlines() if x.strip()]
            err = lines[-1][:300] if lines else "error"
        trials.append({**t, "status": status, "steps_reached": last, "max_steps": max_steps, "error": err})
    trials_df = pd.DataFrame(trials)
    runs = pd.DataFrame(rows)
    if not runs.empty and not trials_df.empty:
        runs = runs.merge(trials_df[["trial_id", "status"]], on="trial_id", how="left")
        runs = runs.drop_duplicates(["trial_id", "seed", STEP], keep="last").sort_values(
            ["trial_id", "seed", STEP]).reset_index(drop=True)
    confirmation = {}
    if (root / CONFIRM_DIR / CONFIRMATION_FILE).exists():
        try:
            confirmation = json.loads((root / CONFIRM_DIR / CONFIRMATION_FILE).read_text())
        except json.JSONDecodeError:
            skipped.append(f"{root / CONFIRM_DIR / CONFIRMATION_FILE}: damaged, ignored")
    return LoadResult(runs, trials_df, {name: {"spec": spec, "base": base, "summary": summary, "dir": str(root),
                                               "confirmation": confirmation}}, skipped, pd.DataFrame(log_rows))


def load_results(paths: list[str | Path], finished: bool | None = None) -> LoadResult:
    """Several sweep folders into one result (rows carry their ``sweep`` name)."""
    parts = [load_sweep_dir(p, finished) for p in paths]

    def concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
        frames = [f for f in frames if not f.empty]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    sweeps, skipped = {}, []
    for p in parts:
        sweeps.update(p.sweeps)
        skipped.extend(p.skipped)
    return LoadResult(concat([p.runs for p in parts]), concat([p.trials for p in parts]), sweeps, skipped,
                      concat([p.train_log for p in parts]))


def export(result: LoadResult, out_dir: str | Path) -> list[Path]:
    """``runs.csv``, ``runs.parquet`` and ``trials.csv`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / RUNS_CSV, out / RUNS_PARQUET, out / TRIALS_FILE]
    result.runs.to_csv(paths[0], index=False)
    result.runs.to_parquet(paths[1], index=False)
    result.trials.to_csv(paths[2], index=False)
    return paths
