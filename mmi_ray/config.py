"""Typed training config: YAML + dotted ``key=value`` overrides -> validated ``Config``.

Every value is checked once, up front, before any Ray work starts; errors name the file and the
key to change (``configs/x.yaml: loss.mi_weight: must be >= 0 (got -1)``).
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .storage import is_uri, resolve_storage

# The names of the registries, defined once: the Literal types below use them, and a test holds the
# registries themselves (data/dss.py DSS_DATASETS, data/builtin.py GENERATORS, losses.py
# MI_ESTIMATORS) to exactly these keys.
DSS_NAMES = ("cqa", "svamp", "esnli", "anli1")
DATASETS = ("builtin", *DSS_NAMES, "custom")
LABEL_KINDS = ("text", "choice", "number", "class")
"""How a custom dataset's labels read and compare (data/custom.py; the teacher's answer parser per kind:
teacher/parse.py)."""
BUILTIN_TASKS = ("arith", "choice", "nli", "props")
MI_ESTIMATOR_NAMES = ("maxpool", "maxpool_masked", "infonce", "nwj")
LEARNED_ESTIMATORS = ("infonce", "nwj")
"""The estimators with a learned critic (``critic_size`` and ``detach_label`` mean something for these only)."""

CONDITIONS = {  # dotted key -> (the key it depends on, whether it means anything given that key's value)
    "loss.mi_estimator": ("loss.mi_weight", lambda beta: beta != 0),
    "loss.critic_size": ("loss.mi_estimator", lambda est: est in LEARNED_ESTIMATORS),
    "loss.detach_label": ("loss.mi_estimator", lambda est: est in LEARNED_ESTIMATORS),
    "optim.momentum": ("optim.optimizer", lambda opt: opt == "sgd"),
}
"""Config values that change nothing unless another key allows it. A search never spends a trial on a
configuration that differs from another only there (``sweep/spec.py``: a conditional space)."""


def active(key: str, values: dict[str, Any]) -> bool:
    """Whether the dotted ``key`` changes the run, given ``values`` (dotted key -> value) of the keys
    it depends on, transitively: the MI estimator means nothing at ``mi_weight: 0``, and so neither
    does the critic size it would have."""
    if key not in CONDITIONS:
        return True
    parent, allows = CONDITIONS[key]
    return active(parent, values) and allows(values[parent])


class Section(BaseModel):
    """A block of a config or sweep spec: unknown keys refused, each field documented by its docstring."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)


class LoraConfig(Section):
    r: int = Field(0, ge=0)
    """LoRA rank: the student's weights stay frozen and rank-``r`` adapters (``peft``) train in their
    place; 0: no adapters, the whole student trains. Searchable (``model.lora.r``)."""
    alpha: float = Field(16.0, gt=0)
    """LoRA scale numerator (the update is scaled by ``alpha / r``). Searchable (``model.lora.alpha``)."""
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    """Dropout on the adapters' input."""
    target_modules: list[str] | None = None
    """Names (or name endings) of the layers that get adapters, e.g. ``[q_proj, k_proj, v_proj, o_proj]``;
    None: peft's choice for the architecture (``q_proj``/``v_proj`` for Llama and Qwen2, ``q``/``v`` for T5)."""


class ModelConfig(Section):
    name: str = "tiny"
    """Student: ``tiny`` (random small T5, byte tokenizer, no files), a hub name such as
    ``google/t5-v1_1-base``, or a local checkpoint directory."""
    kind: Literal["auto", "seq2seq", "causal"] = "auto"
    """What the student is: ``seq2seq`` (T5 family: the two tasks through its encoder and decoder) or
    ``causal`` (a decoder-only LM: each task a prompt and its continuation); ``auto`` reads it from the
    model's config (``tiny`` is seq2seq; ``name: tiny, kind: causal`` is the tiny Llama-shaped preset)."""
    tokenizer: str | None = None
    """Tokenizer name or path; None uses ``name`` (``tiny`` uses ByT5's byte tokenizer). ``words``: one
    token per word of the built-in task (no files; built-in data, or custom data written in its words), which ``props`` learns fastest with."""
    d_model: int = Field(128, ge=8)
    """tiny preset: hidden width."""
    num_layers: int = Field(2, ge=1)
    """tiny preset: encoder layers (and as many decoder layers)."""
    num_heads: int = Field(4, ge=1)
    """tiny preset: attention heads; d_model must divide by it."""
    d_ff: int = Field(256, ge=8)
    """tiny preset: feed-forward width (gated-gelu, as T5 v1.1)."""
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    """Dropout rate of the student (tiny preset; hub models keep their own unless set here)."""
    abs_positions: bool = True
    """tiny preset: add learned absolute position embeddings to the encoder input. Stock T5 has only
    relative position bias, and a tiny one from scratch cannot learn which digit sits where."""
    fast_dropout: bool = True
    """On CPU, draw dropout masks 16 bits per element (same dropout rate and scaling, ~3x cheaper)."""
    max_source_length: int = Field(512, ge=8)
    """Input tokens kept (prefix included); longer inputs are truncated."""
    max_target_length: int = Field(256, ge=4)
    """Rationale and label tokens kept; longer targets are truncated."""
    lora: LoraConfig = LoraConfig()
    """LoRA adapters in place of training the whole student (``lora.r`` > 0); checkpoints hold the
    adapters (and the MI critic) only."""
    chat_template: bool = False
    """Decoder-only students: wrap each prompt in the tokenizer's chat template (one user turn and the
    generation prompt), as an instruct model expects; off: the prompt, a newline, the continuation."""

    @model_validator(mode="after")
    def _heads_divide(self):
        if self.name == "tiny" and self.d_model % self.num_heads:
            raise ValueError(f"d_model ({self.d_model}) must be divisible by num_heads ({self.num_heads})")
        return self


class BuiltinDataConfig(Section):
    num_train: int = Field(4000, ge=1)
    """Generated training examples."""
    num_valid: int = Field(300, ge=1)
    """Generated validation examples (model selection)."""
    num_test: int = Field(300, ge=1)
    """Generated test examples (final report only)."""
    teacher_error_rate: float = Field(0.0, ge=0.0, le=1.0)
    """Share of training rationales in which the simulated teacher makes a slip (its label follows it)."""
    tasks: list[Literal[BUILTIN_TASKS]] = ["arith", "choice", "nli"]
    """Task families mixed in: SVAMP-like arithmetic, CQA-like choice, NLI-like class label, and
    ``props`` (teacher knowledge only the rationales carry; used by the ablation sweep)."""
    max_operand: int = Field(20, ge=3, le=99)
    """Largest number in the generated problems (smaller is easier)."""
    props_boxes: int = Field(60, ge=1, le=120)
    """``props``: held-out boxes per split (validation and test each ask the colour of their own boxes,
    in turn). Rows beyond this repeat a box."""
    props_taught: int | None = Field(None, ge=1, le=241)
    """``props``: boxes whose colour training asks (the student learns from them that the rationale's
    colour answers the colour question); None: as many as ``props_boxes``. At most 361 boxes in all."""
    seed: int = 0
    """Seed of the generator (the data itself); the training seed is ``train.seed``."""


class ColumnsConfig(Section):
    """Which column of a custom dataset holds what (CSV header names, JSON keys, ``datasets`` features)."""

    input: str = "input"
    """The task input (the question)."""
    label: str = "label"
    """The gold label."""
    rationale: str = "rationale"
    """The teacher's rationale (optional: a dataset without it trains label-only until ``mmi-ray rationales``
    has written one)."""
    teacher_answer: str = "teacher_answer"
    """The teacher's parsed answer (optional; ``data.label_type: teacher`` trains on it)."""
    choices: str = "choices"
    """``label_kind: choice``: the options, a JSON list or one string with ``|`` between options."""
    split: str = "split"
    """Optional: a column naming each row's split (train / valid / test) in a single file."""


class CustomDataConfig(Section):
    label_kind: Literal[LABEL_KINDS] | None = None
    """``text`` (any answer, matched normalised), ``choice`` (one of the row's options), ``number``
    (numeric value), ``class`` (one of ``classes``); None: the kind a ``mmi-ray rationales`` folder
    records, else ``text``."""
    unlabelled: Literal["error", "teacher"] = "error"
    """Rows with no gold label: an error naming the row, or (``teacher``) training rows labelled by the
    teacher's answer: the majority answer over its samples where ``mmi-ray rationales --samples``
    wrote several (self-consistency). Validation and test rows always need their gold label."""
    classes: list[str] | None = None
    """``label_kind: class``: the closed set of labels (a label outside it is an error naming the row)."""
    columns: ColumnsConfig = ColumnsConfig()
    """Column names (only those that differ from the defaults need be given)."""
    label_names: dict[str, str] | None = None
    """Gold label values -> label text, e.g. ``{0: entailment, 1: neutral, 2: contradiction}`` for a dataset
    that stores class ids."""
    input_template: str | None = None
    """Build the input from several columns, e.g. ``"{premise} </s> {hypothesis}"``; None: the input column."""
    test_fraction: float | None = Field(None, gt=0.0, lt=1.0)
    """A dataset with no test split: carve this share of train off as test (before validation is carved);
    None leaves it without a test split."""

    @field_validator("classes", mode="before")
    @classmethod
    def _no_yaml_booleans(cls, v):
        if isinstance(v, list) and any(isinstance(c, bool) for c in v):
            raise ValueError("YAML reads yes / no / on / off as true / false: quote the labels, e.g. ['yes', 'no']")
        return v

    @field_validator("label_names", mode="before")
    @classmethod
    def _keys_as_text(cls, v):
        return {str(k): v2 for k, v2 in v.items()} if isinstance(v, dict) else v


class RationalesConfig(Section):
    keep: Literal["all", "correct", "relabel", "label_only"] = "all"
    """Which training rows keep the teacher's rationale, by the teacher's answer (matched to the gold
    label as evaluation matches answers): ``all`` (a row whose teacher output did not parse trains an
    empty rationale, as DSS's code does); ``correct``: a row whose teacher answer is wrong (or did
    not parse) is dropped from training, both tasks; ``relabel``: such a row keeps its rationale and
    its label task trains on the gold label even with ``data.label_type: teacher``; ``label_only``:
    such a row trains the label task (on the gold label) and neither the rationale task nor the MI
    term. Validation and test are never filtered. Searchable in a sweep."""
    per_row: int = Field(1, ge=1)
    """Rationales per training row, where ``mmi-ray rationales --samples N`` wrote several: the first
    ``per_row`` samples of each row are used, each as an example of its own (diverse reasoning:
    every epoch sees them all, as distillation with several rationales per question trains).
    Validation and test use each row once."""


class DataConfig(Section):
    dataset: Literal[DATASETS] = "builtin"
    """Which dataset: the generated offline task, one of the four DSS datasets, or ``custom`` (your own
    rows in ``data.path``: docs/own-data.md)."""
    path: str | None = None
    """``custom``: a JSONL / CSV file, a folder of ``train`` / ``valid`` / ``test`` files (what ``mmi-ray
    rationales`` writes), a ``datasets`` folder (``save_to_disk``), or ``hf:NAME`` for a hub dataset."""
    custom: CustomDataConfig = CustomDataConfig()
    """How to read a custom dataset."""
    source: Literal["local", "hub"] = "local"
    """DSS data from ``data_dir`` (the released layout), or from the hub with ``datasets`` (online; gold rows
    only, no teacher rationales, so label-only training)."""
    data_dir: str | None = None
    """Folder holding ``NAME/NAME_{split}.json`` and ``NAME/llm/`` (the DSS ``datasets/`` folder)."""
    label_type: Literal["gold", "teacher"] = "gold"
    """Train on gold labels or on the teacher's parsed labels (evaluation always uses gold)."""
    valid_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    """Share of train carved off as validation when the dataset has no validation split."""
    split_seed: int = 0
    """Seed of that carve-off, kept apart from the training seed."""
    max_train_examples: int | None = Field(None, ge=1)
    """Use only the first N training examples (after the carve-off); None uses all."""
    max_eval_examples: int | None = Field(None, ge=1)
    """Evaluate on the first N validation examples; None uses all."""
    builtin: BuiltinDataConfig = BuiltinDataConfig()
    """Settings of the generated offline task."""
    rationales: RationalesConfig = RationalesConfig()
    """Which training rows keep the teacher's rationales (a filter by the teacher's answer)."""

    @model_validator(mode="after")
    def _dir_needed(self):
        if self.dataset == "custom":
            if not self.path:
                raise ValueError("path is required for dataset 'custom' (a JSONL / CSV file or a folder: docs/own-data.md)")
            if self.custom.label_kind == "class" and not self.custom.classes:
                raise ValueError("custom.classes: label_kind 'class' needs the closed set of labels")
        elif self.path is not None:
            raise ValueError(f"path is read for dataset 'custom' only (dataset is '{self.dataset}'); use data_dir for DSS files")
        if self.dataset not in ("builtin", "custom") and self.source == "local" and not self.data_dir:
            raise ValueError(f"data_dir is required for dataset '{self.dataset}' with source 'local'")
        return self


class LossConfig(Section):
    label_weight: float = Field(0.5, ge=0.0)
    """alpha: weight of the label cross-entropy."""
    rationale_weight: float = Field(0.5, ge=0.0)
    """Weight of the rationale cross-entropy; 0 with mi_weight 0 is label-only fine-tuning."""
    mi_weight: float = Field(0.1, ge=0.0)
    """beta: weight of the mutual-information term; 0 gives plain distilling step-by-step."""
    mi_estimator: Literal[MI_ESTIMATOR_NAMES] = "maxpool"
    """MI estimator: ``maxpool`` (the released formulation), ``maxpool_masked`` (corrected),
    ``infonce`` or ``nwj`` (learned critics)."""
    critic_size: int = Field(128, ge=1)
    """Hidden width of the learned critic's MLP (learned estimators only)."""
    detach_label: bool = True
    """Learned critics: stop the MI gradient into the label pass, as the released code does."""

    @model_validator(mode="after")
    def _some_weight(self):
        if self.label_weight == 0 and self.rationale_weight == 0 and self.mi_weight == 0:
            raise ValueError("at least one of label_weight, rationale_weight, mi_weight must be > 0")
        return self


class OptimConfig(Section):
    optimizer: Literal["adamw", "sgd"] = "adamw"
    """AdamW (the reference recipe) or SGD with momentum."""
    lr: float = Field(5e-5, gt=0.0, le=100.0)
    """Peak learning rate; linear decay to 0 at train.max_steps."""
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    """SGD momentum (``optimizer: sgd`` only)."""
    weight_decay: float = Field(0.0, ge=0.0)
    """AdamW weight decay."""
    warmup_steps: int = Field(0, ge=0)
    """Linear warm-up steps before the decay."""
    max_grad_norm: float = Field(1.0, ge=0.0)
    """Gradient clipping norm; 0 disables clipping."""


class TrainConfig(Section):
    max_steps: int = Field(1000, ge=1)
    """Optimizer steps."""
    batch_size: int = Field(32, ge=1)
    """Examples per worker per micro-batch (each example gives a label and a rationale pass)."""
    grad_accum_steps: int = Field(1, ge=1)
    """Micro-batches accumulated per optimizer step."""
    eval_every: int = Field(250, ge=1)
    """Validate (and checkpoint) every N optimizer steps, and at the last step."""
    log_every: int = Field(50, ge=1)
    """Every N steps, the loss terms averaged over those N steps (all workers) go to the run's
    ``train_log.jsonl`` and its TensorBoard scalars ``train/*``; the report plots them. Not Tune
    results: ASHA and the search see the evaluations (``eval_every``) only."""
    eval_batch_size: int = Field(64, ge=1)
    """Examples per generation batch during validation."""
    max_new_tokens: int = Field(64, ge=1)
    """Greedy decoding limit for label predictions."""
    eval_rationales: int = Field(0, ge=0)
    """At each evaluation also generate the ``explain:`` rationale (greedy) of the first N validation
    examples: BLEU and ROUGE-L against the teacher's, and faithfulness (does the student's own
    rationale reach its own answer); 0 = off. Its cost is logged as ``val_rationale_s``."""
    max_rationale_tokens: int = Field(128, ge=1)
    """Greedy decoding limit for those rationales."""
    keep_checkpoints: int = Field(2, ge=1)
    """Checkpoints kept per run (the newest)."""
    checkpoint_upload: Literal["auto", "async", "sync"] = "auto"
    """How a Ray Train run's checkpoint reaches its storage: ``async`` (Ray's asynchronous upload:
    the workers train on while it uploads; a checkpoint counts once it is whole on the storage),
    ``sync`` (every worker waits for it), ``auto``: async on a storage URI, sync on a local disk
    (a copy, which costs little)."""
    seed: int = 0
    """Training seed: model init, data order, dropout. The data split has its own seed."""
    bucket_by_length: bool = True
    """Group examples of similar input and rationale length into batches (less padding)."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """``fp32`` is the reference code's default; ``bf16`` autocasts the forward passes (GPU, or CPU);
    ``auto`` uses bf16 on GPU and fp32 on CPU. Paper configs state theirs."""
    deterministic: bool = True
    """torch's deterministic kernels where it has them (``torch.use_deterministic_algorithms``, cuDNN
    and cuBLAS settings on GPU): the same config gives the same floats on the same machine and
    build. What the machine decides (CPU vector unit, BLAS, GPU model) is recorded, not pinned."""

    @property
    def examples_per_worker_step(self) -> int:
        return self.batch_size * self.grad_accum_steps


class WorkerResources(Section):
    """What each Ray Train worker of a run holds; the same words in a training config's
    ``scaling`` section and a sweep spec's ``resources`` section."""

    num_workers: int = Field(1, ge=1)
    """Ray Train workers (data parallel)."""
    cpus_per_worker: float = Field(1.0, gt=0.0)
    """CPUs reserved per worker (fractions allowed)."""
    use_gpu: bool = False
    """A GPU per worker (NCCL backend between workers); False uses CPUs with gloo."""
    gpus_per_worker: float | None = Field(None, gt=0.0)
    """With ``use_gpu``: the share of one GPU each worker holds, 1 by default; 0.25 lets four small
    trials share a GPU (Ray counts the shares; it does not split the GPU's memory: docs/clusters.md)."""
    worker_resources: dict[str, float] = {}
    """Extra custom Ray resources per worker (e.g. to pin workers to a node type)."""

    @field_validator("gpus_per_worker")
    @classmethod
    def _gpu_share(cls, v: float | None, info) -> float | None:
        if v is None:
            return v
        if not info.data.get("use_gpu"):
            raise ValueError("needs use_gpu: true (a share of a GPU for a worker that uses none)")
        if v > 1:
            raise ValueError(f"{v:g} is more than one GPU: a worker trains on one device; give 1 or a share "
                             "below it, or more workers (num_workers) for more GPUs")
        return v

    def gpu_share(self) -> float:
        """GPUs one worker holds: 0 on CPU, else ``gpus_per_worker`` (default 1)."""
        return (self.gpus_per_worker or 1.0) if self.use_gpu else 0.0


class ScalingConfig(WorkerResources):
    torch_threads: int | None = Field(None, ge=1)
    """torch intra-op threads per worker; None uses cpus_per_worker rounded up."""

    def threads(self) -> int:
        """torch intra-op threads of each worker: from the config, never from the machine's cores
        (results at 1, 2 and 4 threads are identical: tests/test_recipe.py)."""
        return self.torch_threads or max(1, math.ceil(self.cpus_per_worker))


class RunConfig(Section):
    name: str | None = None
    """Run name; None makes a unique one. A name that exists resumes that run if it is unfinished."""
    storage_path: str = "runs"
    """Where run directories go (local path, NFS mount, or s3:// / gs:// URI)."""
    max_failures: int = Field(0, ge=-1)
    """Ray Train restarts of a failed worker group from the last checkpoint (-1: no limit)."""


class Config(Section):
    model: ModelConfig = ModelConfig()
    data: DataConfig = DataConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    train: TrainConfig = TrainConfig()
    scaling: ScalingConfig = ScalingConfig()
    run: RunConfig = RunConfig()

    @model_validator(mode="after")
    def _rationales_available(self):
        d, loss = self.data, self.loss
        if d.dataset not in ("builtin", "custom") and d.source == "hub" and (loss.rationale_weight > 0 or loss.mi_weight > 0):
            raise ValueError("data.source: 'hub' has the gold rows but no teacher rationales, and DSS / MI "
                             "(loss.rationale_weight or loss.mi_weight > 0) would train on empty targets; use "
                             "source 'local' with the DSS files in data.data_dir, or label-only (both weights 0)")
        if self.model.tokenizer == "words" and d.dataset not in ("builtin", "custom"):
            raise ValueError(f"model.tokenizer: 'words' knows only the built-in task's words; dataset '{d.dataset}' "
                             "needs the model's own tokenizer (leave model.tokenizer unset) or 'byt5'")
        return self

    def examples_per_step(self) -> int:
        """Training examples per optimizer step, across all workers."""
        return self.train.examples_per_worker_step * max(1, self.scaling.num_workers)

    def to_yaml(self) -> str:
        """The resolved config as a run folder's ``config.yaml`` holds it."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    @classmethod
    def from_yaml(cls, text: str) -> Config:
        return cls.model_validate(yaml.safe_load(text))

    def fingerprint(self) -> str:
        """Short hash of everything that changes the trained model (not run name or storage)."""
        d = self.model_dump(mode="json")
        d.pop("run")
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]


# ---------------------------------------------------------------------------------------------
# Loading, overrides, error formatting


RENAMED_KEYS = {"resources.workers": "resources.num_workers"}
"""Keys an older release used, and their names now (named in the unknown-key error)."""


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}, "c.d": 2}`` -> ``{"a.b": 1, "c.d": 2}``: nested sections to dotted keys."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def model_keys(model: type[BaseModel], prefix: str = "", sections: bool = False) -> list[str]:
    """Every dotted key a model (and its nested sections) accepts: ``loss.mi_weight``, ... (and,
    with ``sections``, the sections' own names: ``loss``)."""
    keys = []
    for name, field in model.model_fields.items():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            keys += [f"{prefix}{name}"] * sections + model_keys(sub, f"{prefix}{name}.", sections)
        else:
            keys.append(f"{prefix}{name}")
    return keys


def did_you_mean(key: str, known: list[str]) -> str:
    """`` (did you mean loss.mi_weight?)`` for the known key nearest a misspelt one, else ``""``."""
    near = difflib.get_close_matches(key, known, n=1, cutoff=0.75)
    if not near:  # a right key in the wrong section: compare the last parts
        last = {k.rsplit(".", 1)[-1]: k for k in known}
        near = [last[m] for m in difflib.get_close_matches(key.rsplit(".", 1)[-1], list(last), n=1, cutoff=0.8)]
    return f" (did you mean {near[0]}?)" if near else ""


def format_validation_error(err: ValidationError, prefix: str = "", known: list[str] | None = None) -> list[str]:
    """One line per problem: ``key.path: message (got value)``; an unknown key names the nearest of
    ``known`` (dotted keys, as ``model_keys`` lists them)."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        key = ".".join(p for p in (prefix, loc) if p)
        msg = e["msg"]
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        if e["type"] == "extra_forbidden":
            msg = "unknown key" + (f" (now called {RENAMED_KEYS[key]})" if key in RENAMED_KEYS
                                   else did_you_mean(key, known) if known else "")
        skip = e["type"] in ("extra_forbidden", "missing") or isinstance(e.get("input"), dict)
        got = "" if skip else f" (got {e['input']!r})"
        lines.append(f"{key}: {msg}{got}" if key else f"{msg}{got}")
    return lines


def read_yaml(path: str | Path) -> dict:
    """``yaml.safe_load`` a mapping; errors name the file (and line where YAML knows it)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(str(path), "file not found")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as e:
        raise ConfigError(str(path), f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(str(path), f"{where}invalid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), f"top level must be a mapping of sections (got {type(data).__name__})")
    return data


def parse_override(text: str) -> tuple[list[str], Any]:
    """``loss.mi_weight=0.2`` -> (["loss", "mi_weight"], 0.2); the value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError("command line", f"override '{text}' must look like key.path=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError("command line", f"override '{text}': empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return parts, value


def set_dotted(d: dict, parts: list[str], value: Any, source: str = "command line") -> None:
    cur = d
    for i, p in enumerate(parts[:-1]):
        nxt = cur.get(p)
        if nxt is None:
            nxt = cur[p] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(source, f"{'.'.join(parts[: i + 1])}: is a value, not a section")
        cur = nxt
    cur[parts[-1]] = value


def apply_overrides(raw: dict, overrides: list[str] | None) -> dict:
    out = copy.deepcopy(raw)
    for o in overrides or []:
        parts, value = parse_override(o)
        set_dotted(out, parts, value)
    return out


PATH_KEYS = (("data", "data_dir"), ("data", "path"), ("model", "name"), ("model", "tokenizer"), ("run", "storage_path"))
"""Config values that may name a local folder."""


def _is_local_path(key: tuple[str, str], value: str) -> bool:
    if is_uri(value):  # a storage URI (s3://, gs://) stays as it is
        return False
    if key == ("data", "path") and value.startswith("hf:"):  # a hub dataset name
        return False
    if key[0] == "model":  # a hub name ("google/t5-v1_1-base") stays a name unless a folder says otherwise
        return value != "tiny" and (value.startswith((".", "/", "~")) or Path(value).expanduser().exists())
    return True


def resolve_paths(raw: dict, base: Path | None = None) -> dict:
    """Relative local paths made absolute against ``base`` (the directory the command runs in), on
    the driver, before anything moves to a worker (whose own working directory is elsewhere); a
    relative ``run.storage_path`` goes under ``storage.results_root()`` (see there for ray jobs)."""
    out = copy.deepcopy(raw)
    base = base or Path.cwd()
    for section, key in PATH_KEYS:
        value = (out.get(section) or {}).get(key) if isinstance(out.get(section), dict) else None
        if isinstance(value, str) and value and _is_local_path((section, key), value):
            out[section][key] = (resolve_storage(value) if (section, key) == ("run", "storage_path")
                                 else str((base / Path(value).expanduser()).resolve()))
    return out


def config_from_dict(raw: dict, source: str = "config", prefix: str = "",
                     overrides: list[str] | None = None) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        err = ConfigError(source, format_validation_error(e, prefix, model_keys(Config, sections=True)))
        raise blame(err, overrides) from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read a training config YAML, apply ``key=value`` overrides, make relative paths absolute against
    the working directory, validate everything. A problem with an override's key is blamed on the
    command line, not on the file."""
    raw = resolve_paths(apply_overrides(read_yaml(path), overrides))
    return config_from_dict(raw, source=str(path), overrides=overrides)


def override_keys(overrides: list[str] | None) -> list[str]:
    """The dotted keys of ``key=value`` overrides."""
    return [o.split("=", 1)[0].strip() for o in overrides or [] if "=" in o]


def blame(err: ConfigError, overrides: list[str] | None, where: str = "command line") -> ConfigError:
    """``err`` with each problem whose key an override set blamed on ``where``."""
    keys = override_keys(overrides)
    if not keys:
        return err

    def from_override(problem: str) -> bool:
        k = problem.split(":", 1)[0]
        return any(k == o or k.startswith(o + ".") or o.startswith(k + ".") for o in keys)

    sources = [where if from_override(p) else src for p, src in zip(err.problems, err.sources, strict=True)]
    return ConfigError(err.source, err.problems, sources)


MODEL_PRESETS = ("tiny",)
"""Students built here, with no files: ``model.name: tiny``."""
TOKENIZER_PRESETS = ("byt5", "words")
"""Tokenizers built here, with no files (``model.tokenizer``; ``tiny`` students default to ``byt5``)."""
HUB_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def hub_problem(name: str, file: str) -> str | None:
    """Why ``name`` cannot be loaded from the Hugging Face Hub, or None: it is in the local cache
    (where ``file``, which every such repository has, lies), or the Hub knows it. With
    ``HF_HUB_OFFLINE=1`` only the cache counts. Seconds, not a trial's retries."""
    if not HUB_NAME.match(name):
        return "not a local folder and not a hub name (owner/name)"
    from huggingface_hub import HfApi, try_to_load_from_cache
    from huggingface_hub.errors import RepositoryNotFoundError

    if isinstance(try_to_load_from_cache(name, file), str):
        return None
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return "not in the Hugging Face cache, and HF_HUB_OFFLINE is set"
    try:
        HfApi().model_info(name, timeout=10)
    except RepositoryNotFoundError:
        return "no such model on the Hugging Face Hub (or it is private: log in with `hf auth login`)"
    except Exception as e:  # noqa: BLE001 - no network, a proxy, a timeout: one line that says which
        return f"not in the Hugging Face cache, and the Hub cannot be reached ({type(e).__name__}: {str(e).splitlines()[0][:120]})"
    return None


def model_source_problems(m: ModelConfig) -> list[str]:
    """``model.name`` and ``model.tokenizer`` must each be a preset, a local folder, or a hub name
    that is cached or that the Hub knows; checked before any trial (a name taken for a hub name would
    otherwise fail in every trial, after the loader's retries)."""
    problems = []
    for key, value, presets, file in (("model.name", m.name, MODEL_PRESETS, "config.json"),
                                      ("model.tokenizer", m.tokenizer, (*MODEL_PRESETS, *TOKENIZER_PRESETS),
                                       "tokenizer_config.json")):
        if value is None or value in presets:
            continue
        path = Path(value).expanduser()
        if value.startswith((".", "/", "~")) or path.exists():
            if not path.is_dir():
                problems.append(f"{key}: {'checkpoint' if key == 'model.name' else 'tokenizer'} folder not found: {value}")
            continue
        why = hub_problem(value, file)
        if why:
            near = difflib.get_close_matches(value, presets, n=1, cutoff=0.5)
            hint = f"; did you mean {near[0]}?" if near else f"; presets: {', '.join(presets)}"
            problems.append(f"{key}: '{value}': {why}{hint}")
    return problems


def check_paths(cfg: Config, source: str) -> None:
    """Checks that need the file system (run before any Ray work)."""
    problems = []
    if cfg.data.dataset == "custom":
        if not cfg.data.path.startswith("hf:") and not Path(cfg.data.path).expanduser().exists():
            problems.append(f"data.path: file or folder not found: {cfg.data.path}")
    elif cfg.data.dataset != "builtin" and cfg.data.source == "local":
        d = Path(cfg.data.data_dir).expanduser()
        if not d.is_dir():
            problems.append(f"data.data_dir: folder not found: {cfg.data.data_dir}")
        elif not (d / cfg.data.dataset).is_dir():
            problems.append(f"data.data_dir: no '{cfg.data.dataset}' folder in {cfg.data.data_dir}")
    problems += model_source_problems(cfg.model)
    if problems:
        raise ConfigError(source, problems)
