"""The on-disk layout of runs and sweeps: the contract between the trainer, the sweep and the analysis.

Every file and folder name, the status words, the metric record keys, and the readers and writers
of a run's ``metrics.jsonl`` live here, and every module that writes or reads them imports them from
here. Plain Python (no Ray, no torch), so ``analysis/`` can read results anywhere.

    <storage>/<run name>/                  one training run (``mmi-ray train``)
        config.yaml                        the resolved training config
        metrics.jsonl                      one JSON line per evaluation (or the divergence record)
        summary.json                       written when the run finished
        reused.json                        when adopted from an earlier run of the same identity
        test_eval.json                     its one test evaluation (confirmation runs)
        checkpoint_0000100/                state.pt (tensors) + meta.json (step, metrics, config)
    <storage>/run_index/<identity>.json    the furthest run of each identity (run reuse)
    <storage>/<sweep name>/                one sweep (``mmi-ray sweep``)
        sweep_spec.yaml                    the spec and base config the sweep started with
        sweep_summary.json  trials.csv     written when the sweep ended
        ended_trials.json                  how each ended trial ended, as it happened
        optuna.db                          the Optuna study (local storage)
        trial_<id>/                        Tune's trial folder: params.json, result.json, error.txt
        runs/<id>_seed<k>/                 one run folder (as above) per trial and seed
        report/                            ``mmi-ray analyze``'s default output
        confirm/                           confirmation runs: trial_<id>/, runs/, confirmation.json
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from .storage import exists, is_uri, join, listdir, read_text, remove, upload_dir, write_text

# --- a run folder
CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
TRAIN_LOG_FILE = "train_log.jsonl"
"""The training loss terms every ``train.log_every`` steps (rank 0 writes it; never a Tune result)."""
RUN_SUMMARY_FILE = "summary.json"
WORKER_ERROR_FILE = "worker_error.txt"  # every failed rank's traceback, written by the driver
REUSED_FILE = "reused.json"
"""In a run folder adopted from an earlier run of the same identity (mmi_ray/reuse.py): where from."""
TEST_EVAL_FILE = "test_eval.json"
"""In a run folder: its one test evaluation (step and figures), kept so that no later reader reads test again."""
CHECKPOINT_PREFIX = "checkpoint_"
STATE_FILE = "state.pt"
META_FILE = "meta.json"

# --- a storage root
RUN_INDEX_DIR = "run_index"
"""``<storage root>/run_index/<identity>.json``: the furthest run of each identity (mmi_ray/reuse.py)."""
LATEST_LINK = "latest"
"""``<storage root>/latest``: a link to the sweep folder started last there (a local root only), so the
newest sweep has a name to type: ``mmi-ray confirm results/latest``."""

EXPORT_SOURCES = "a sweep folder (its confirmed arm), a run folder (its newest checkpoint) or a checkpoint"
"""What ``mmi-ray export`` takes (its help and its errors say the same)."""
MODEL_SOURCES = "an exported folder, " + EXPORT_SOURCES
"""What ``mmi-ray predict`` and ``evaluate`` take."""

# --- a sweep folder
SPEC_FILE = "sweep_spec.yaml"
SWEEP_SUMMARY_FILE = "sweep_summary.json"
TRIALS_FILE = "trials.csv"
OPTUNA_DB = "optuna.db"
RUNS_DIR = "runs"
REPORT_DIR = "report"
CONFIRM_DIR = "confirm"
"""The confirmation runs' own Tune experiment inside a sweep folder (its runs in ``confirm/runs/``)."""
CONFIRMATION_FILE = "confirmation.json"
"""In ``confirm/``: each confirmation run's arm, seed, final validation and (read once) test figures."""
REPORT_MD, REPORT_HTML = "report.md", "report.html"
METHODS_PLOT = "accuracy_by_method.png"  # the report's first figure
# the report's tables and other figures (``mmi-ray analyze``)
RUNS_CSV, RUNS_PARQUET = "runs.csv", "runs.parquet"
PARETO_PLOT = "pareto_front.png"
MI_WEIGHT_PLOT, CRITIC_HEATMAP_PLOT = "metric_vs_mi_weight.png", "critic_size_x_mi_weight.png"
RATIONALE_WEIGHT_PLOT, CURVES_PLOT = "rationale_weight.png", "learning_curves.png"
TRAIN_LOSS_PLOT = "training_loss.png"
HISTORY_PLOT, IMPORTANCE_PLOT = "optuna_history.png", "param_importances.png"
TRIAL_PREFIX = "trial_"
# Tune's own files in a trial folder (read, never written, by us)
PARAMS_FILE = "params.json"
RESULT_FILE = "result.json"
ERROR_FILE = "error.txt"

TRIAL_ENDS_FILE = "ended_trials.jsonl"
"""In a sweep folder: how each trial that ended ended (completed / stopped early by the scheduler /
error), a JSON line ``{"trial_id", "end"}`` each, written as it happens; a trial short of its budget
and not in it was interrupted. Not a ``.json`` file: a restored Tune experiment copies every
top-level ``*.json`` of its folder aside and syncs the copies back over the originals as it runs."""
LEGACY_TRIAL_ENDS_FILE = "ended_trials.json"
"""The same record as one JSON object, as sweeps before the change wrote it (read, never written)."""

# --- trial status words (also their ranking order: completed trials first)
COMPLETED, STOPPED, ERROR, RUNNING, NOT_RUN = "completed", "stopped early", "error", "running", "not run"
INTERRUPTED = "interrupted"
"""Short of its budget when the sweep was stopped (Ctrl-C, time budget): resumable, not judged."""
STATUSES = (COMPLETED, STOPPED, INTERRUPTED, ERROR, RUNNING, NOT_RUN)

# --- metric record keys
STEP = "step"
CHECKPOINT_PATH = "checkpoint_path"
NODE_ID = "node_id"
MACHINE = "machine"
"""What the run trained on (``machine.describe()``: CPU, torch build, threads, GPU), in every record."""
TRAIN_ROWS = "train_rows"
"""Training rows the run trained on (after ``data.rationales.keep``), in every record."""
NON_FINITE = "non_finite_step"
"""Key of the divergence record: a run's last line when a loss term became NaN or infinite."""


def checkpoint_dir_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step:07d}"


def trial_folder_of(trial) -> str:
    """Tune's ``trial_name_creator`` / ``trial_dirname_creator``: a module-level function, so the
    experiment state stores a reference to it per trial, not a pickled lambda (1.3 KB each)."""
    return trial_dir_name(trial.trial_id)


def trial_dir_name(trial_id: str) -> str:
    return f"{TRIAL_PREFIX}{trial_id}"


def run_name(trial_id: str, seed: int) -> str:
    """The run folder (and Ray Train run name) of one trial and seed: never a timestamp, so a
    retried or restored trial finds its own checkpoints."""
    return f"{trial_id}_seed{seed}"


def parse_run_name(name: str) -> tuple[str, int] | None:
    """``run_name``'s inverse; None for a folder that is not a trial's run."""
    tid, sep, seed = name.rpartition("_seed")
    return (tid, int(seed)) if sep and tid and seed.isdigit() else None


def seed_key(key: str, seed: int) -> str:
    """A per-seed column of a trial's reported metrics, e.g. ``val_accuracy_seed1``."""
    return f"{key}_seed{seed}"


def divergence_record(step: int, first_bad: int) -> dict[str, Any]:
    return {STEP: step, NON_FINITE: first_bad, "error": f"non-finite loss at step {first_bad}"}


def is_divergence(record: dict) -> bool:
    return NON_FINITE in record


def read_metrics(run_dir: str | Path, skipped: list[str] | None = None, file: str = METRICS_FILE) -> list[dict]:
    """The records of a run's ``metrics.jsonl`` (or ``file``: ``TRAIN_LOG_FILE``; empty when there is
    none). Damaged lines and lines without a step (a write cut short) are left out, and listed in
    ``skipped`` when given."""
    path = join(str(run_dir), file)
    if not exists(path):
        return []
    try:
        text = read_text(path)
    except (OSError, UnicodeDecodeError) as e:
        if skipped is not None:
            skipped.append(f"{path}: unreadable ({e})")
        return []
    out = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if skipped is not None:
                skipped.append(f"{path}: line {n}: damaged JSON line skipped")
            continue
        if not isinstance(record, dict) or STEP not in record:
            if skipped is not None:
                skipped.append(f"{path}: line {n}: a line without '{STEP}' skipped")
            continue
        out.append(record)
    return out


def read_trial_ends(folder: str | Path, skipped: list[str] | None = None) -> dict[str, str] | None:
    """How each ended trial of a sweep (or confirmation) folder ended: ``{trial_id: end}``, the
    newest line of a trial winning; None when the folder holds no record. Damaged lines are left
    out, and listed in ``skipped`` when given."""
    ends: dict[str, str] | None = None
    legacy = join(str(folder), LEGACY_TRIAL_ENDS_FILE)
    if exists(legacy):
        try:
            ends = {str(k): str(v) for k, v in json.loads(read_text(legacy)).items()}
        except (json.JSONDecodeError, AttributeError):
            if skipped is not None:
                skipped.append(f"{legacy}: damaged, ignored")
    path = join(str(folder), TRIAL_ENDS_FILE)
    if exists(path):
        ends = ends or {}
        for n, line in enumerate(read_text(path).splitlines(), start=1):
            try:
                record = json.loads(line)
                ends[str(record["trial_id"])] = str(record["end"])
            except (json.JSONDecodeError, KeyError, TypeError):
                if skipped is not None and line.strip():
                    skipped.append(f"{path}: line {n}: damaged, ignored")
    return ends


def write_trial_ends(folder: str | Path, ends: dict[str, str], new: str | None = None) -> None:
    """Record how trials ended: on a local disk the ``new`` trial's line is appended (a sweep of n
    trials writes O(n) bytes, not O(n^2)); on a storage URI, or without ``new``, the whole record
    is written (atomically on local disks)."""
    path = join(str(folder), TRIAL_ENDS_FILE)
    if new is not None and not is_uri(path) and exists(path):
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"trial_id": new, "end": ends[new]}) + "\n")
        return
    write_text(path, "".join(json.dumps({"trial_id": t, "end": e}) + "\n" for t, e in ends.items()))


class MetricsLog:
    """Writer of one run's ``metrics.jsonl``, rewritten whole (atomically on local disks) at each
    evaluation. A resumed run keeps what an earlier attempt wrote before the first new step."""

    def __init__(self, run_dir: str | Path):
        self.run_dir = str(run_dir)
        self.records: list[dict] | None = None

    def append(self, record: dict) -> None:
        if self.records is None:
            self.records = [m for m in read_metrics(self.run_dir) if m[STEP] < record[STEP]]
        self.records.append(record)
        write_text(join(self.run_dir, METRICS_FILE), "".join(json.dumps(m) + "\n" for m in self.records))


class TrainLog:
    """Writer of one run's ``train_log.jsonl`` (the loss terms every ``train.log_every`` steps) and,
    on a local run folder, of TensorBoard scalars ``train/<term>`` beside it. A resumed run keeps the
    records up to the step it resumes from."""

    def __init__(self, run_dir: str | Path, resume_step: int):
        self.run_dir = str(run_dir)
        self.records = [m for m in read_metrics(self.run_dir, file=TRAIN_LOG_FILE) if m[STEP] <= resume_step]
        self.board = None
        if not is_uri(self.run_dir):
            from tensorboardX import SummaryWriter

            self.board = SummaryWriter(self.run_dir, purge_step=resume_step + 1)

    def append(self, record: dict) -> None:
        self.records.append(record)
        write_text(join(self.run_dir, TRAIN_LOG_FILE), "".join(json.dumps(m) + "\n" for m in self.records))
        if self.board is not None:
            for k, v in record.items():
                if k != STEP and isinstance(v, float):
                    self.board.add_scalar(f"train/{k}", v, record[STEP])
            self.board.flush()


def complete_checkpoints(run_dir: str | Path) -> list[str]:
    """A run's checkpoint folders (local or on a storage URI) that hold both files, oldest first."""
    run_dir = str(run_dir)
    return [join(run_dir, name) for name in listdir(run_dir) if name.startswith(CHECKPOINT_PREFIX)
            and {STATE_FILE, META_FILE} <= set(listdir(join(run_dir, name)))]


def store_checkpoint(src: Path, run_dir: str | Path, step: int, keep: int) -> str:
    """Copy a checkpoint folder into a run (local or on a storage URI) as ``checkpoint_<step>``,
    then keep only the newest ``keep``; the same names and rotation as a Ray Train run. Whole or not
    at all: on a local disk by a rename; on a URI ``meta.json`` is written last, and a folder without
    it is not a checkpoint (``complete_checkpoints``)."""
    run_dir = str(run_dir)
    final = join(run_dir, checkpoint_dir_name(step))
    if is_uri(run_dir):
        remove(final)
        upload_dir(src, final, last=(META_FILE,))
    else:
        tmp = Path(final).with_name(f".tmp_{Path(final).name}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
    for old in complete_checkpoints(run_dir)[:-keep]:
        remove(old)
    return final


def spec_text(spec: dict, base: dict) -> str:
    """What ``sweep_spec.yaml`` holds: the validated spec and the resolved base config."""
    return yaml.safe_dump({"spec": spec, "base": base}, sort_keys=True)


def read_spec(sweep_dir: str) -> tuple[dict, dict]:
    """(spec, base) from a sweep folder's ``sweep_spec.yaml``."""
    saved = yaml.safe_load(read_text(join(sweep_dir, SPEC_FILE)))
    return saved["spec"], saved["base"]
