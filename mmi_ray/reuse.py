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
runs only). ``--rerun`` trains anew. On a storage URI (s3://, gs://) the index lives on the
storage itself and adopted checkpoints are copied by the storage server. The index is written by the sweep driver when a trial ends and by ``mmi-ray train`` when it ends.
"""

from __future__ import annotations

import functools
import hashlib
import json
import sys
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
from .storage import absolute, copy_dir, exists, is_uri, isdir, join, listdir, read_text, write_text

NOT_RESULT_FIELDS = (("run",), ("scaling", "cpus_per_worker"), ("scaling", "gpus_per_worker"), ("scaling", "worker_resources"),
                     ("scaling", "torch_threads"), ("train", "keep_checkpoints"),
                     ("train", "checkpoint_upload"))
"""Config fields that do not change what a run trains or measures (left out of its identity)."""

RESULT_SOURCES = ("checkpoint.py", "evaluate.py", "fastdrop.py", "losses.py", "metrics.py", "model.py",
                  "distill.py", "offline_student.py", "rationale_eval.py", "recipe.py", "data/__init__.py",
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
    """Where a storage root (a local folder or a URI) keeps its run index; None (no reuse) when disabled."""
    return absolute(storage) if enabled else None


def _entry_path(root: str, ident: str) -> str:
    return join(root, RUN_INDEX_DIR, f"{ident}.json")


def _progress(run_dir: str) -> tuple[int, bool] | None:
    """(last step, diverged) of a run folder; None when it has no evaluation."""
    records = read_metrics(run_dir)
    if not records:
        return None
    return int(records[-1][STEP]), is_divergence(records[-1])


def register(run_dir: str | Path, root: str | None) -> str | None:
    """Record a run that stopped (finished, stopped early, or failed with checkpoints) in the index
    when it went further than the run the index names for its identity. Returns the identity."""
    run = absolute(run_dir)
    if root is None or not exists(join(run, CONFIG_FILE)):
        return None
    progress = _progress(run)
    if progress is None or progress[1]:  # nothing to reuse, or a divergence (its own record says so)
        return None
    step = progress[0]
    if not any(name.startswith(CHECKPOINT_PREFIX) for name in listdir(run)):
        return None
    cfg = Config.from_yaml(read_text(join(run, CONFIG_FILE)))
    ident = identity(cfg)
    entry = _entry_path(root, ident)
    try:
        old = json.loads(read_text(entry))
        if old["run_dir"] != run and old["step"] >= step and exists(join(old["run_dir"], METRICS_FILE)):
            return ident
    except (OSError, ValueError, KeyError):
        pass
    write_text(entry, json.dumps({"run_dir": run, "step": step, "finished": step >= cfg.train.max_steps}))
    return ident


def register_all(runs_root: str | Path, root: str | None, prefix: str = "") -> None:
    """Register every run folder under ``runs_root`` whose name starts with ``prefix``."""
    if root is None:
        return
    for name in listdir(str(runs_root)):
        if name.startswith(prefix) and not name.startswith("."):
            register(join(str(runs_root), name), root)


def lookup(cfg: Config, root: str | None) -> dict | None:
    """The index entry of ``cfg``'s identity whose run folder still holds its records, or None."""
    if root is None:
        return None
    ident = identity(cfg)
    try:
        entry = json.loads(read_text(_entry_path(root, ident)))
    except (OSError, ValueError):
        return None
    src = entry.get("run_dir", "")
    if not src or not exists(join(src, METRICS_FILE)) or not exists(join(src, CONFIG_FILE)):
        return None
    if identity(Config.from_yaml(read_text(join(src, CONFIG_FILE)))) != ident:  # a stale entry (code changed)
        return None
    return {**entry, "identity": ident}


def adopt(cfg: Config, run_dir: str | Path, root: str | None, allow_partial: bool) -> dict | None:
    """Make ``run_dir`` (a run not started yet) a copy of the furthest earlier run of the same
    identity: records copied with their checkpoint paths moved here, checkpoint files hard-linked
    on a local disk, copied by the server on a URI (never written to again: new checkpoints are new
    folders). Returns ``reused.json``'s content, or None when there is nothing to adopt (then train
    as usual)."""
    dst = absolute(run_dir)
    if root is None or read_metrics(dst):
        return None
    entry = lookup(cfg, root)
    if entry is None or absolute(entry["run_dir"]) == dst:
        return None
    src = entry["run_dir"]
    if not entry["finished"]:  # it resumes from the source's checkpoint, which must be this config's to the
        # last field (checkpoint.restore compares fingerprints, e.g. CPUs per worker, which identity leaves out)
        if not allow_partial or Config.from_yaml(read_text(join(src, CONFIG_FILE))).fingerprint() != cfg.fingerprint():
            return None
    if not is_uri(dst):
        Path(dst).mkdir(parents=True, exist_ok=True)
    for name in listdir(src):
        if name.startswith(CHECKPOINT_PREFIX) and isdir(join(src, name)):
            copy_dir(join(src, name), join(dst, name))
    for name in (RUN_SUMMARY_FILE, TEST_EVAL_FILE):
        if exists(join(src, name)):
            write_text(join(dst, name), read_text(join(src, name)))
    lines = []
    for m in read_metrics(src):
        if isinstance(m.get(CHECKPOINT_PATH), str) and m[CHECKPOINT_PATH].startswith(src):
            m[CHECKPOINT_PATH] = dst + m[CHECKPOINT_PATH][len(src):]
        lines.append(json.dumps(m))
    note = {"from": src, "identity": entry["identity"], "step": entry["step"], "finished": entry["finished"]}
    write_text(join(dst, REUSED_FILE), json.dumps(note, indent=2))
    write_text(join(dst, METRICS_FILE), "\n".join(lines) + "\n")  # last: a folder with records is an adopted one
    return note


def reused_from(run_dir: str | Path) -> str | None:
    """The run a folder was adopted from, or None when it trained itself."""
    try:
        return json.loads(read_text(join(str(run_dir), REUSED_FILE)))["from"]
    except (OSError, ValueError, KeyError):
        return None


def cached_test(run_dir: str | Path, checkpoint: str, step: int, evaluate) -> dict:
    """The run's test figures at ``step``: read from ``test_eval.json`` when an earlier reader (or
    the run this one was adopted from) evaluated them, else ``evaluate(checkpoint)`` once, kept."""
    p = join(str(run_dir), TEST_EVAL_FILE)
    try:
        kept = json.loads(read_text(p))
        if int(kept[STEP]) == step:
            return kept["metrics"]
    except (OSError, ValueError, KeyError):
        pass
    figures = evaluate(checkpoint)
    try:
        write_text(p, json.dumps({STEP: step, "metrics": figures}, indent=2, default=float))
    except OSError as e:  # a folder the reader may not write: the figures stand, read again next time
        print(f"[mmi-ray] could not keep the test figures in {p}: {e}", file=sys.stderr)
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
