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

SPEC_FILE = "sweep_spec.yaml"
SUMMARY_FILE = "sweep_summary.json"

STATUSES = ("completed", "stopped early", "error", "running", "not run")


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


def _localize(path: str) -> Path:
    """A storage URI is copied (its small text files only) into a temp folder."""
    if "://" not in path:
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


def _json_lines(path: Path, skipped: list[str]) -> list[dict]:
    rows = []
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        skipped.append(f"{path}: unreadable ({e.strerror})")
        return rows
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            skipped.append(f"{path}: line {n}: damaged JSON line skipped")
    return rows


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _trial_status(trial_dir: Path | None, last_step: int, max_steps: int, finished_sweep: bool) -> str:
    if trial_dir is not None and (trial_dir / "error.txt").exists():
        return "error"
    if last_step >= max_steps:
        return "completed"
    if last_step == 0:
        return "not run" if finished_sweep else "running"
    return "stopped early" if finished_sweep else "running"


def load_sweep_dir(path: str | Path) -> LoadResult:
    """One sweep folder (``<storage_path>/<name>``)."""
    skipped: list[str] = []
    root = _localize(str(path))
    spec_path = root / SPEC_FILE
    if not spec_path.exists():
        return LoadResult(pd.DataFrame(), pd.DataFrame(), {}, [f"{root}: no {SPEC_FILE}: not a sweep folder"])
    saved = yaml.safe_load(spec_path.read_text())
    spec, base = saved["spec"], saved["base"]
    name = spec["name"]
    searched = list(spec["search"])
    max_steps = int(_flat(base).get("train.max_steps", 0) or 0)
    for k, v in (spec.get("overrides") or {}).items():
        if k == "train.max_steps":
            max_steps = int(v)
    summary = {}
    if (root / SUMMARY_FILE).exists():
        try:
            summary = json.loads((root / SUMMARY_FILE).read_text())
        except json.JSONDecodeError:
            skipped.append(f"{root / SUMMARY_FILE}: damaged, ignored")
    finished = bool(summary)

    trial_dirs = {p.name[len("trial_"):]: p for p in root.glob("trial_*") if p.is_dir()}
    run_dirs = sorted(p for p in (root / "runs").glob("*_seed*") if p.is_dir()) if (root / "runs").is_dir() else []
    rows, trial_rows = [], {}
    for run in run_dirs:
        tid, _, seed = run.name.rpartition("_seed")
        cfg_path = run / "config.yaml"
        if not cfg_path.exists():
            skipped.append(f"{run}: no config.yaml, run left out")
            continue
        try:
            cfg = _flat(yaml.safe_load(cfg_path.read_text()))
        except yaml.YAMLError:
            skipped.append(f"{cfg_path}: damaged, run left out")
            continue
        params = {k: cfg.get(k) for k in searched}
        metrics_path = run / "metrics.jsonl"
        history = _json_lines(metrics_path, skipped) if metrics_path.exists() else []
        if not history:
            skipped.append(f"{run}: no evaluations yet")
        diverged = ""
        for m in history:
            if not isinstance(m, dict) or "step" not in m:
                skipped.append(f"{metrics_path}: a line without 'step' skipped")
                continue
            if "non_finite_step" in m:
                diverged = f"seed {seed}: {m.get('error', 'non-finite loss')}"
                continue
            rows.append({"sweep": name, "trial_id": tid, "seed": int(seed), **params,
                         "dataset": cfg.get("data.dataset"), "model": cfg.get("model.name"),
                         "use_gpu": bool(cfg.get("scaling.use_gpu")), "workers": cfg.get("scaling.num_workers"),
                         **{k: v for k, v in m.items() if k != "checkpoint_path"},
                         "checkpoint_path": m.get("checkpoint_path")})
        last = max((int(m["step"]) for m in history if isinstance(m, dict) and "step" in m), default=0)
        t = trial_rows.setdefault(tid, {"sweep": name, "trial_id": tid, **params, "last_steps": [], "diverged": ""})
        t["last_steps"].append(last)
        t["diverged"] = t["diverged"] or diverged
    for tid, tdir in trial_dirs.items():  # trials whose runs never started (errors before training)
        if tid not in trial_rows:
            params = {}
            if (tdir / "params.json").exists():
                try:
                    params = {k: json.loads((tdir / "params.json").read_text()).get(k) for k in searched}
                except json.JSONDecodeError:
                    skipped.append(f"{tdir / 'params.json'}: damaged")
            trial_rows[tid] = {"sweep": name, "trial_id": tid, **params, "last_steps": [0], "diverged": ""}
    trials = []
    for tid, t in trial_rows.items():
        tdir = trial_dirs.get(tid)
        last = min(t.pop("last_steps"))
        diverged = t.pop("diverged")
        status = "error" if diverged else _trial_status(tdir, last, max_steps, finished)
        err = diverged
        if status == "error" and not err:
            lines = [x for x in (tdir / "error.txt").read_text(errors="replace").splitlines() if x.strip()]
            err = lines[-1][:300] if lines else "error"
        trials.append({**t, "status": status, "steps_reached": last, "max_steps": max_steps, "error": err})
    trials_df = pd.DataFrame(trials)
    runs = pd.DataFrame(rows)
    if not runs.empty and not trials_df.empty:
        runs = runs.merge(trials_df[["trial_id", "status"]], on="trial_id", how="left")
        runs = runs.drop_duplicates(["trial_id", "seed", "step"], keep="last").sort_values(
            ["trial_id", "seed", "step"]).reset_index(drop=True)
    return LoadResult(runs, trials_df, {name: {"spec": spec, "base": base, "summary": summary, "dir": str(root)}},
                      skipped)


def load_results(paths: list[str | Path]) -> LoadResult:
    """Several sweep folders into one result (rows carry their ``sweep`` name)."""
    parts = [load_sweep_dir(p) for p in paths]
    runs = pd.concat([p.runs for p in parts if not p.runs.empty], ignore_index=True) if any(
        not p.runs.empty for p in parts) else pd.DataFrame()
    trials = pd.concat([p.trials for p in parts if not p.trials.empty], ignore_index=True) if any(
        not p.trials.empty for p in parts) else pd.DataFrame()
    sweeps, skipped = {}, []
    for p in parts:
        sweeps.update(p.sweeps)
        skipped.extend(p.skipped)
    return LoadResult(runs, trials, sweeps, skipped)


def export(result: LoadResult, out_dir: str | Path) -> list[Path]:
    """``runs.csv``, ``runs.parquet`` and ``trials.csv`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "runs.csv", out / "runs.parquet", out / "trials.csv"]
    result.runs.to_csv(paths[0], index=False)
    result.runs.to_parquet(paths[1], index=False)
    result.trials.to_csv(paths[2], index=False)
    return paths
