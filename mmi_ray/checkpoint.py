"""The checkpoint format of a run: ``state.pt`` (student, critic, optimizer, schedule, step, data
position, config fingerprint, in-loop time) and ``meta.json`` (step, metrics, resolved config).

Written by rank 0 at each evaluation; read to resume a run and to evaluate a saved student.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .config import Config
from .data.batching import BatchStream
from .distill import DistillModule
from .errors import MmiError
from .layout import META_FILE, STATE_FILE
from .storage import join, local_dir, read_text


def save_checkpoint(path: Path, module: DistillModule, optimizer, scheduler, step: int, stream: BatchStream,
                    cfg: Config, metrics: dict) -> None:
    state = {
        "model": module.checkpoint_state(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "step": step,
        "data_position": stream.position,
        "fingerprint": cfg.fingerprint(),
        "train_time_s": metrics.get("train_time_s", 0.0),
    }
    torch.save(state, path / STATE_FILE)
    (path / META_FILE).write_text(json.dumps({"step": step, "metrics": metrics, "config": cfg.model_dump(mode="json")}))


def load_state(path: str | Path) -> dict:
    """The tensors of a checkpoint folder (local, or on a storage URI: read through this machine's
    cache), on the CPU (``weights_only``: no code runs on load), and under ``"config"`` the resolved
    config it was written with."""
    folder = local_dir(path)
    state = torch.load(folder / STATE_FILE, map_location="cpu", weights_only=True)
    if (folder / META_FILE).is_file():
        state["config"] = json.loads((folder / META_FILE).read_text())["config"]
    return state


def written_by(state: dict, cfg: Config) -> bool:
    """Whether a checkpoint was written by this config. Its fingerprint is compared first; where that
    differs, the config it was written with is read again by this mmi-ray, so a checkpoint from a
    release that had fewer config keys resumes when the keys added since hold their defaults (a value
    the old run set differently still refuses)."""
    if state["fingerprint"] == cfg.fingerprint():
        return True
    try:
        return state.get("config") is not None and Config.model_validate(state["config"]).fingerprint() == cfg.fingerprint()
    except ValueError:  # a key this release no longer reads, or a value it no longer allows
        return False


def load_config(path: str | Path) -> Config:
    """The resolved training config a checkpoint was written with."""
    return Config.model_validate(json.loads(read_text(join(str(path), META_FILE)))["config"])


def load_module(path: str | Path) -> tuple[DistillModule, object, Config]:
    """A checkpoint's trained student (and critic) as the run built it, its tokenizer and config."""
    from .model import build_student, build_tokenizer

    cfg = load_config(path)
    tokenizer = build_tokenizer(cfg.model)
    module = DistillModule(build_student(cfg.model, tokenizer, cfg.train.seed), cfg.loss)
    module.load_checkpoint_state(load_state(path)["model"])
    return module, tokenizer, cfg


def restore(state: dict, module: DistillModule, optimizer, scheduler, stream: BatchStream, cfg: Config) -> int:
    """Load a checkpoint's state into a freshly built run whose model is already placed on its device;
    returns the step to continue from. The optimizer's state is cast to each parameter's device and
    dtype as it loads (``Optimizer.load_state_dict``), so it follows the model onto a GPU."""
    if not written_by(state, cfg):
        raise MmiError("checkpoint was written by a different config; refusing to resume from it")
    module.load_checkpoint_state(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    stream.seek(**state["data_position"])
    return int(state["step"])
