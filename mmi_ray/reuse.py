"""Finished runs are never trained twice.

A run's identity is a content hash of everything that changes what it trains and measures: the
resolved config (less the fields that only say where and how it runs: ``run.*``, CPUs per worker,
custom resources, torch threads, checkpoints kept), the data's fingerprint (the DSS files' bytes;
the built-in generator is code) and the version of the code that computes the result (the
sources of the model, losses, recipe, data and evaluation modules, and the torch and transformers
versions). ``<storage root>/run_index/<identity>.json`` names the furthest run of each identity.

A sweep, a confirmation run or ``mmi-ray train`` about to train a run first looks its identity up:
a finished run is adopted (its records copied, its checkpoint files hard-linked, ``reused.json``
saying where from) and nothing trains; a run stopped early by the scheduler is adopted and
training resumes from its newest checkpoint (in-process trials; a Ray Train run adopts finished
runs only). ``--rerun`` trains anew. Local storage only: on a storage URI nothing is reused.
The index is written by the sweep driver when a trial ends and by ``mmi-ray train`` when it ends.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
from pathlib import Path

from .config import Config, DataConfig
from .layout import (
    CHECKPOINT_PATH,
    CHECKPOINT_PREFIX,
    CONFIG_FILE,
    METRICS_FILE,
    REUSED_FILE,
    RUN_INDEX_DIR,
    RUN_SUMMARY_FILE,
    STEP,
    TEST_EVAL_FILE,
    is_divergence,
    read_metrics,
)
from .storage import is_uri, write_text

NOT_RESULT_FIELDS = (("run",), ("scaling", "cpus_per_worker"), ("scaling", "worker_resources"),
                     ("scaling", "torch_threads"), ("train", "keep_checkpoints"))
"""Config fields that do not change what a run trains or measures (left out of its identity)."""

RESULT_SOURCES = ("checkpoint.py", "evaluate.py", "fastdrop.py", "losses.py", "metrics.py", "model.py",
                  "objective.py", "offline_student.py", "rationale_eval.py", "recipe.py", "data/__init__.py",
                  "data/batching.py", "data/builtin.py", "data/dss.py", "data/examples.py")
"""The project's modules whose code decides a run's result (relative to the package)."""


@functools.cache
def code_version() -> str:
    """Hash of the result-deciding sources and the torch / transformers versions."""
    import torch
    import transformers

    h = hashlib.sha256(f"torch {torch.__version__}; transformers {transformers.__version__}".encode())
    pkg = Path(__file__).parent
    for rel in RESULT_SOURCES:
        h.update(rel.encode())
        h.update((pkg / rel).read_bytes())
    return h.hexdigest()[:16]


@functools.cache
def _files_hash(root: str, stamp: tuple) -> str:
    h = hashlib.sha256()
    if Path(root).is_file():
        h.update(Path(root).read_bytes())
        return h.hexdigest()[:16]
    for f in sorted(Path(root).rglob("*")):
        if f.is_file():
            h.update(str(f.relative_to(root)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def data_fingerprint(data: DataConfig) -> str:
    """The DSS or custom files' bytes (local source: new rationales, a new identity); the built-in data is
    decided by config and code."""
    if data.dataset == "builtin":
        return "builtin"
    if data.dataset == "custom":
        if data.path.startswith("hf:"):
            return data.path
        root = Path(data.path).expanduser()
    elif data.source == "hub" or not data.data_dir:
        return f"hub:{data.dataset}"
    else:
        root = Path(data.data_dir).expanduser() / data.dataset
    if not root.exists():
        return f"missing:{root}"
    files = [root] if root.is_file() else sorted(f for f in root.rglob("*") if f.is_file())
    stamp = tuple((str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    return _files_hash(str(root), stamp)


def identity(cfg: Config) -> str:
    """A run's identity: equal identities train the same model and measure the same figures."""
    d = cfg.model_dump(mode="json")
    for path in NOT_RESULT_FIELDS:
        node = d
        for k in path[:-1]:
            node = node[k]
        node.pop(path[-1], None)
    blob = json.dumps({"config": d, "data": data_fingerprint(cfg.data), "code": code_version()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:20]


def index_root(storage: str, enabled: bool = True) -> str | None:
    """Where a storage root keeps its run index; None (no reuse) when disabled or on a URI."""
    return None if not enabled or is_uri(storage) else str(Path(storage).expanduser().resolve())


def _entry_path(root: str, ident: str) -> Path:
    return Path(root) / RUN_INDEX_DIR / f"{ident}.json"


def _progress(run_dir: Path) -> tuple[int, bool] | None:
    """(last step, diverged) of a run folder; None when it has no evaluation."""
    records = read_metrics(run_dir)
    if not records:
        return None
    return int(records[-1][STEP]), is_divergence(records[-1])


def register(run_dir: str | Path, root: str | None) -> str | None:
    """Record a run that stopped (finished, stopped early, or failed with checkpoints) in the index
    when it went further than the run the index names for its identity. Returns the identity."""
    run = Path(run_dir).resolve()
    if root is None or not (run / CONFIG_FILE).exists():
        return None
    progress = _progress(run)
    if progress is None or progress[1]:  # nothing to reuse, or a divergence (its own record says so)
        return None
    step = progress[0]
    if not any(run.glob(f"{CHECKPOINT_PREFIX}*")):
        return None
    cfg = Config.from_yaml((run / CONFIG_FILE).read_text())
    ident = identity(cfg)
    entry = _entry_path(root, ident)
    try:
        old = json.loads(entry.read_text())
        if old["run_dir"] != str(run) and old["step"] >= step and Path(old["run_dir"], METRICS_FILE).exists():
            return ident
    except (OSError, ValueError, KeyError):
        pass
    write_text(str(entry), json.dumps({"run_dir": str(run), "step": step, "finished": step >= cfg.train.max_steps}))
    return ident


def register_all(runs_root: str | Path, root: str | None, prefix: str = "") -> None:
    """Register every run folder under ``runs_root`` whose name starts with ``prefix``."""
    if root is None or not Path(runs_root).is_dir():
        return
    for run in sorted(Path(runs_root).iterdir()):
        if run.is_dir() and run.name.startswith(prefix):
            register(run, root)


def lookup(cfg: Config, root: str | None) -> dict | None:
    """The index entry of ``cfg``'s identity whose run folder still holds its records, or None."""
    if root is None:
        return None
    ident = identity(cfg)
    try:
        entry = json.loads(_entry_path(root, ident).read_text())
    except (OSError, ValueError):
        return None
    src = Path(entry.get("run_dir", ""))
    if not (src / METRICS_FILE).exists() or not (src / CONFIG_FILE).exists():
        return None
    if identity(Config.from_yaml((src / CONFIG_FILE).read_text())) != ident:  # a stale entry (code changed)
        return None
    return {**entry, "identity": ident}


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(src, dst)


def adopt(cfg: Config, run_dir: str | Path, root: str | None, allow_partial: bool) -> dict | None:
    """Make ``run_dir`` (a run not started yet) a copy of the furthest earlier run of the same
    identity: records copied with their checkpoint paths moved here, checkpoint files hard-linked
    (never written to again: new checkpoints are new folders). Returns ``reused.json``'s content,
    or None when there is nothing to adopt (then train as usual)."""
    dst = Path(run_dir)
    if root is None or read_metrics(dst):
        return None
    entry = lookup(cfg, root)
    if entry is None or Path(entry["run_dir"]).resolve() == dst.resolve():
        return None
    src = Path(entry["run_dir"])
    if not entry["finished"]:  # it resumes from the source's checkpoint, which must be this config's to the
        # last field (checkpoint.restore compares fingerprints, e.g. CPUs per worker, which identity leaves out)
        if not allow_partial or Config.from_yaml((src / CONFIG_FILE).read_text()).fingerprint() != cfg.fingerprint():
            return None
    dst.mkdir(parents=True, exist_ok=True)
    for ckpt in sorted(src.glob(f"{CHECKPOINT_PREFIX}*")):
        if not ckpt.is_dir():
            continue
        tmp = dst / f".tmp_{ckpt.name}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(ckpt, tmp, copy_function=_link_or_copy)
        tmp.rename(dst / ckpt.name)
    for name in (RUN_SUMMARY_FILE, TEST_EVAL_FILE):
        if (src / name).exists():
            shutil.copy2(src / name, dst / name)
    lines = []
    for m in read_metrics(src):
        if isinstance(m.get(CHECKPOINT_PATH), str) and m[CHECKPOINT_PATH].startswith(str(src)):
            m[CHECKPOINT_PATH] = str(dst) + m[CHECKPOINT_PATH][len(str(src)):]
        lines.append(json.dumps(m))
    note = {"from": str(src), "identity": entry["identity"], "step": entry["step"], "finished": entry["finished"]}
    (dst / REUSED_FILE).write_text(json.dumps(note, indent=2))
    write_text(str(dst / METRICS_FILE), "\n".join(lines) + "\n")  # last: a folder with records is an adopted one
    return note


def reused_from(run_dir: str | Path) -> str | None:
    """The run a folder was adopted from, or None when it trained itself."""
    p = Path(run_dir) / REUSED_FILE
    try:
        return json.loads(p.read_text())["from"]
    except (OSError, ValueError, KeyError):
        return None


def cached_test(run_dir: str | Path, checkpoint: str, step: int, evaluate) -> dict:
    """The run's test figures at ``step``: read from ``test_eval.json`` when an earlier reader (or
    the run this one was adopted from) evaluated them, else ``evaluate(checkpoint)`` once, kept."""
    if is_uri(str(run_dir)):
        return evaluate(checkpoint)
    p = Path(run_dir) / TEST_EVAL_FILE
    try:
        kept = json.loads(p.read_text())
        if int(kept[STEP]) == step:
            return kept["metrics"]
    except (OSError, ValueError, KeyError):
        pass
    figures = evaluate(checkpoint)
    write_text(str(p), json.dumps({STEP: step, "metrics": figures}, indent=2, default=float))
    return figures


def tune_callback(runs_root: str, root: str | None):
    """A Tune callback (in the sweep driver) that registers a trial's runs when the trial ends,
    and every run of the experiment when it ends; None when reuse is off."""
    if root is None:
        return None
    from ray.tune import Callback

    from .layout import run_name

    class RunIndex(Callback):
        def on_trial_complete(self, iteration, trials, trial, **info):
            register_all(runs_root, root, prefix=run_name(trial.trial_id, 0).rsplit("_seed", 1)[0] + "_seed")

        on_trial_error = on_trial_complete

        def on_experiment_end(self, trials, **info):
            register_all(runs_root, root)

    return RunIndex()
