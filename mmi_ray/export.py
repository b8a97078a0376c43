"""The distilled student leaves the sweep: choose a run (a sweep's confirmed arm, a run folder or a
checkpoint), write its student as a ``save_pretrained`` folder that plain ``transformers`` loads,
with a model card, and load any of them back for prediction (``mmi-ray export`` / ``predict``).

The MI critic is not part of the exported model: it only shapes training.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .checkpoint import load_config, load_module
from .config import Config, LossConfig
from .data.batching import LABEL_PREFIX, RATIONALE_PREFIX, SEPARATOR, Prompts
from .errors import MmiError
from .layout import (
    CONFIG_FILE,
    CONFIRM_DIR,
    CONFIRMATION_FILE,
    EXPORT_SOURCES,
    META_FILE,
    MODEL_SOURCES,
    RUNS_DIR,
    SPEC_FILE,
    STATE_FILE,
    complete_checkpoints,
    read_spec,
    run_name,
)
from .results.stats import named_arms
from .storage import basename, exists, is_uri, join, read_text

HF_CONFIG = "config.json"
"""``save_pretrained``'s model config: what marks an exported folder."""
PROMPT_FILE = "mmi_ray_prompt.json"
"""In an exported folder: how the student's prompts are written (prefixes, separator, chat template)."""
REMOTE_CODE = "modeling_mmi_t5.py"
"""Shipped in an exported folder whose student has learned encoder positions (the ``tiny`` preset)."""


class ExportError(MmiError):
    """A source that cannot be exported, or an output folder that would be overwritten."""


@dataclass
class Chosen:
    """The checkpoint to export and what it was chosen from (local paths or storage URIs)."""

    checkpoint: str
    cfg: Config
    seed: int
    sweep_dir: str | None = None
    arm: str | None = None
    confirmation: dict | None = None
    metric: str = "val_accuracy"
    mode: str = "max"
    why: list[str] = field(default_factory=list)


def newest_checkpoint(run_dir: str) -> str:
    ckpts = complete_checkpoints(run_dir)
    if not ckpts:
        raise ExportError(f"{run_dir}: no checkpoint (a run folder holds checkpoint_<step>/ with {STATE_FILE} "
                          f"and {META_FILE})")
    return ckpts[-1]


def choose(source: str | Path, arm: str | None = None, seed: int | None = None, takes: str = EXPORT_SOURCES) -> Chosen:
    """A checkpoint folder itself; a run folder's newest checkpoint; or, from a sweep folder, the
    confirmation arm ranked first on validation (or ``arm``) and its seed run named by ``seed`` or
    else the one whose validation figure is closest to the arm's mean. Never chosen on test. Each
    may be a local folder or a storage URI (s3://, gs://)."""
    src = str(source)
    if not is_uri(src) and Path(src).is_symlink():  # results/latest: the sweep itself
        src = str(Path(src).resolve())
    src = src.rstrip("/") if is_uri(src) else src
    if exists(join(src, STATE_FILE)) and exists(join(src, META_FILE)):
        cfg = load_config(src)
        return Chosen(src, cfg, cfg.train.seed, why=[f"checkpoint `{src}`"])
    if exists(join(src, CONFIG_FILE)):
        ckpt = newest_checkpoint(src)
        cfg = load_config(ckpt)
        return Chosen(ckpt, cfg, cfg.train.seed, why=[f"run `{basename(src)}`, its newest checkpoint `{basename(ckpt)}`"])
    if not exists(join(src, SPEC_FILE)):
        raise ExportError(f"{src}: not {takes} (none of {SPEC_FILE}, {CONFIG_FILE}, {STATE_FILE} in it)")
    conf_file = join(src, CONFIRM_DIR, CONFIRMATION_FILE)
    state = json.loads(read_text(conf_file)) if exists(conf_file) else {}
    if not state.get("runs"):
        raise ExportError(f"{conf_file}: no confirmation runs to export from; run `mmi-ray confirm {src}` first "
                          "(a student is exported from runs on fresh seeds, never from the search)")
    spec, _ = read_spec(src)
    metric, mode = spec["objective"]["metric"], spec["objective"].get("mode", "max")
    means = arm_means(state, metric)
    shown = named_arms(state["arms"])
    by_name = {v: k for k, v in shown.items()}
    if arm is None:  # the confirmation's rank 1 (ties: the first listed, as the headline shows them)
        arm = (max if mode == "max" else min)(means, key=lambda a: (round(means[a], 9), -list(state["arms"]).index(a)))
    elif by_name.get(arm, arm) not in means:
        raise ExportError(f"{conf_file}: --arm: no arm '{arm}' with finished runs "
                          f"(arms: {', '.join(shown[a] for a in means)})")
    arm = by_name.get(arm, arm)
    runs = {r["seed"]: r for r in state["runs"] if r["arm"] == arm}
    if seed is None:
        seed = min(runs, key=lambda s: (abs(runs[s][metric] - means[arm]), s))
        how = f"the seed whose {metric} is closest to the arm's mean"
    elif seed not in runs:
        raise ExportError(f"{conf_file}: --seed: arm {shown[arm]} has no finished run on seed {seed} "
                          f"(seeds: {', '.join(map(str, sorted(runs)))})")
    else:
        how = "the seed asked for"
    run_dir = join(src, CONFIRM_DIR, RUNS_DIR, run_name(runs[seed]["trial_id"], seed))
    ckpt = newest_checkpoint(run_dir)
    better = sum(1 for a in means if (means[a] > means[arm] if mode == "max" else means[a] < means[arm]))
    why = [f"sweep `{basename(src)}`: confirmation arm **{shown[arm]}** ({state['arms'][arm]['method']}), ranked "
           f"{better + 1} of {len(means)} arms on mean {metric} over fresh seeds (test chose nothing)",
           f"seed {seed}: {how}; checkpoint `{basename(ckpt)}`"]
    return Chosen(ckpt, load_config(ckpt), seed, src, arm, state, metric, mode, why)


def arm_means(state: dict, metric: str) -> dict[str, float]:
    """Each confirmation arm's mean validation objective over its finished seed runs."""
    out: dict[str, list[float]] = {}
    for r in state["runs"]:
        out.setdefault(r["arm"], []).append(float(r[metric]))
    return {a: sum(v) / len(v) for a, v in out.items()}


# --- the student as plain transformers

def load_student(checkpoint: str | Path) -> tuple[torch.nn.Module, object, Config]:
    """The student of a checkpoint (no critic), its tokenizer and the run's config."""
    module, tokenizer, cfg = load_module(checkpoint)
    return module.student.eval(), tokenizer, cfg


def as_hf_model(student: torch.nn.Module, cfg: Config) -> torch.nn.Module:
    """A model ``save_pretrained`` can write: the student itself, or, for a student with learned
    encoder positions, the same weights in ``MMIT5ForConditionalGeneration`` (remote code)."""
    from .model import EncoderPositions

    if not isinstance(getattr(getattr(student, "encoder", None), "embed_tokens", None), EncoderPositions):
        return student
    from .hf.modeling_mmi_t5 import MMIT5Config, MMIT5ForConditionalGeneration

    skip = ("model_type", "architectures", "transformers_version", "auto_map")
    conf = MMIT5Config(encoder_positions=cfg.model.max_source_length,
                       **{k: v for k, v in student.config.to_dict().items() if k not in skip})
    conf.auto_map = {"AutoConfig": f"{REMOTE_CODE[:-3]}.MMIT5Config",
                     "AutoModelForSeq2SeqLM": f"{REMOTE_CODE[:-3]}.MMIT5ForConditionalGeneration"}
    model = MMIT5ForConditionalGeneration(conf)
    renamed = {"encoder.embed_tokens.positions.weight": "encoder_positions.weight",
               "encoder.embed_tokens.tokens.weight": "encoder.embed_tokens.weight"}  # = shared.weight (tied)
    state = {renamed.get(k, k): v for k, v in student.state_dict().items()}
    model.load_state_dict(state, strict=True)
    model.generation_config = student.generation_config
    return model.eval()


def write_model(chosen: Chosen, out: Path, merge: bool = False) -> bool:
    """Write the ``save_pretrained`` folder (safetensors, tokenizer, generation config); returns
    whether it needs ``trust_remote_code`` (the tiny preset's encoder positions). A LoRA student is
    written as its adapter folder, or with ``merge`` as the student with the adapters merged in."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the shard-writing bar of a one-file model says nothing
    from .distill import is_lora

    student, tokenizer, cfg = load_student(chosen.checkpoint)
    if is_lora(student):
        if not merge:
            return write_adapter(student, tokenizer, cfg, out)
        student = student.merge_and_unload()
    model = as_hf_model(student, cfg)
    model.generation_config.max_new_tokens = cfg.train.max_new_tokens
    model.generation_config.do_sample = False
    model.generation_config.num_beams = 1
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.model_max_length = cfg.model.max_source_length  # truncation=True cuts inputs as training did
    tokenizer.save_pretrained(out)
    _write_prompt(student, tokenizer, cfg, out)
    remote = model is not student
    if remote:
        shutil.copy(Path(__file__).parent / "hf" / REMOTE_CODE, out / REMOTE_CODE)
    return remote


ADAPTER_CONFIG = "adapter_config.json"
"""peft's adapter config: what marks an exported LoRA adapter folder."""
BASE_DIR = "base"
"""In an adapter folder whose student is not on the hub or on disk (the ``tiny`` preset): the frozen student."""


def write_adapter(student, tokenizer, cfg: Config, out: Path) -> bool:
    """A LoRA student as peft writes it (``adapter_config.json``, ``adapter_model.safetensors``), with
    the tokenizer and the prompt file; its frozen student is named by hub name or folder, or, for the
    ``tiny`` preset (random weights from the run's seed), written beside it in ``base/``."""
    from .model import build_student

    remote = False
    if cfg.model.name == "tiny":
        plain = build_student(cfg.model, tokenizer, cfg.train.seed, lora=False)  # the run's frozen student, again
        base = as_hf_model(plain, cfg)
        remote = base is not plain
        base.save_pretrained(out / BASE_DIR, safe_serialization=True)
        if remote:
            shutil.copy(Path(__file__).parent / "hf" / REMOTE_CODE, out / BASE_DIR / REMOTE_CODE)
        base_ref = BASE_DIR
    else:
        p = Path(cfg.model.name).expanduser()
        base_ref = str(p.resolve()) if p.is_dir() else cfg.model.name
    student.peft_config["default"].base_model_name_or_path = base_ref
    student.save_pretrained(out, safe_serialization=True, save_embedding_layers=False)  # frozen: the base has them
    tokenizer.model_max_length = cfg.model.max_source_length
    tokenizer.save_pretrained(out)
    _write_prompt(student, tokenizer, cfg, out)
    return remote


def _write_prompt(student, tokenizer, cfg: Config, out: Path) -> None:
    from .distill import is_causal

    causal = is_causal(student)
    prompt = {"kind": "causal" if causal else "seq2seq", "label_prefix": LABEL_PREFIX, "rationale_prefix": RATIONALE_PREFIX,
              "max_new_tokens": cfg.train.max_new_tokens}
    if causal:
        prompt |= {"chat_template": cfg.model.chat_template, "separator": None if cfg.model.chat_template else SEPARATOR,
                   "continuation_ends_with": tokenizer.eos_token}
    (out / PROMPT_FILE).write_text(json.dumps(prompt, indent=2) + "\n")


def prepare_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ExportError(f"{out}: --out exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ExportError(f"{out}: --out is a folder that is not empty; choose another, or add --force to replace it")


@dataclass
class Loaded:
    """A student ready to generate, and how training generated and cut its inputs."""

    model: torch.nn.Module
    tokenizer: object
    max_new_tokens: int
    max_source: int
    cfg: Config | None = None
    """The run's config (its data, for ``evaluate``); None for an exported folder, which carries none."""
    chat_template: bool = False
    """A decoder-only student's prompts go through its tokenizer's chat template (as in training)."""

    @property
    def prompts(self) -> Prompts:
        from .distill import is_causal

        return Prompts(self.tokenizer, is_causal(self.model), self.chat_template)


def _loaded(student, tokenizer, cfg: Config, device: str) -> Loaded:
    return Loaded(student.to(device), tokenizer, cfg.train.max_new_tokens, cfg.model.max_source_length, cfg,
                  cfg.model.chat_template)


def is_exported(path: Path) -> bool:
    """An ``export`` (``save_pretrained``) folder, as opposed to a run folder or a checkpoint."""
    return ((path / HF_CONFIG).exists() or (path / ADAPTER_CONFIG).exists()) and not (path / STATE_FILE).exists()


def load_exported(p: Path):
    """An exported folder's model and tokenizer, with plain transformers (and peft for an adapter folder)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    def model_at(folder):
        remote = (Path(folder) / REMOTE_CODE).exists()  # our own exported code, shipped beside the weights
        seq2seq = getattr(AutoConfig.from_pretrained(folder, trust_remote_code=remote), "is_encoder_decoder", False)
        return (AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM).from_pretrained(folder, trust_remote_code=remote)

    if (p / ADAPTER_CONFIG).exists():
        try:
            from peft import PeftConfig, PeftModel
        except ImportError:
            raise ExportError(f"{p}: a LoRA adapter folder; loading it needs peft (pip install 'mmi-ray[lora]')") from None
        ref = PeftConfig.from_pretrained(p).base_model_name_or_path
        model = PeftModel.from_pretrained(model_at(p / ref if (p / ref).is_dir() else ref), p)
    else:
        model = model_at(p)
    return model, AutoTokenizer.from_pretrained(p, trust_remote_code=(p / REMOTE_CODE).exists())


def load_model(path: str | Path, device: str = "cpu") -> Loaded:
    """The student of an exported folder, a run folder (its newest checkpoint), a sweep folder (its
    confirmed arm) or a checkpoint."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading weights" of a small local folder: noise on a predict's stderr
    if is_uri(str(path)):
        return _loaded(*load_student(choose(str(path), takes=MODEL_SOURCES).checkpoint), device)
    p = Path(path)
    if is_exported(p):
        model, tokenizer = load_exported(p)
        max_source = tokenizer.model_max_length if tokenizer.model_max_length < 1_000_000 else 512
        prompt = json.loads((p / PROMPT_FILE).read_text()) if (p / PROMPT_FILE).exists() else {}
        max_new = prompt.get("max_new_tokens") or model.generation_config.max_new_tokens or 64
        return Loaded(model.to(device).eval(), tokenizer, max_new, max_source,
                      chat_template=bool(prompt.get("chat_template", False)))
    if not p.exists():
        raise ExportError(f"{p}: not found (MODEL is {MODEL_SOURCES})")
    return _loaded(*load_student(choose(p, takes=MODEL_SOURCES).checkpoint), device)


def as_module(model: torch.nn.Module) -> torch.nn.Module:
    """A student wrapped as the trainer's evaluation expects it (no critic, no MI term)."""
    from .distill import DistillModule

    return DistillModule(model, LossConfig(mi_weight=0.0, rationale_weight=0.0))
