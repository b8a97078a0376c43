"""Loaders for the four Distilling step-by-step datasets in their released layout.

``DIR/NAME/NAME_{split}.json`` holds gold rows as JSON Lines; ``DIR/NAME/llm/{split}_CoT_{i}.json``
holds the teacher's raw chain-of-thought strings, element ``j`` of file ``i`` belonging to row
``i * chunk + j``. Parsers follow the reference code; a string that does not parse gives an empty
rationale and label, and is counted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .examples import Example, SplitData

NLI_LABELS = {0: "entailment", 1: "neutral", 2: "contradiction"}


# --- teacher-output parsers: raw string -> (rationale, label), ("", "") when it does not parse


def parse_cqa(output: str) -> tuple[str, str]:
    text = output.split("Q:")[0].rstrip()
    parts = text.split("So the answer is")
    if len(parts) != 2:
        return "", ""
    rationale, rest = parts[0].rstrip(), parts[1]
    pieces = re.split(r"\(.\)", rest)
    if len(pieces) < 2 or not pieces[1].strip():
        return "", ""
    label = pieces[1].strip()
    if label.endswith("."):
        label = label[:-1]
    return rationale, label


def parse_svamp(output: str) -> tuple[str, str]:
    text = output.split("Q:")[0].rstrip()
    parts = text.split("The answer is")
    if len(parts) != 2:
        return "", ""
    m = re.search(r"\(.*\)", parts[1])
    if m is None:
        return "", ""
    return parts[0].rstrip(), m.group(0)


def parse_anli(output: str) -> tuple[str, str]:
    text = output.split("Premise:")[0]
    parts = text.split("So the answer is")
    if len(parts) != 2:
        return "", ""
    label = parts[1].strip()[:-1]
    if not label:
        return "", ""
    return parts[0].strip(), label


def parse_esnli(output: str) -> tuple[str, str]:
    if "Answer: " not in output:
        return "", ""
    rationale = output.split("Answer:")[0].rstrip()
    label = output.split("Answer: ")[1].split("Premise")[0].rstrip()
    if not label:
        return "", ""
    return rationale, label


# --- gold rows -> (input, label)


def _row_cqa(row: dict) -> tuple[str, str]:
    choices = row["choices"]
    if not isinstance(choices, list) or len(choices) != 5:
        raise KeyError("choices (must be a list of 5)")
    letters = "abcde"
    opts = "\n".join(f"({letters[i]}) {c}" for i, c in enumerate(choices))
    return f"{row['question']}\nAnswer Choices:\n{opts}", row["answer"]


def _row_svamp(row: dict) -> tuple[str, str]:
    return row["input"], row["label"]


def _row_nli(row: dict) -> tuple[str, str]:
    label = row["label"]
    if label not in NLI_LABELS:
        raise KeyError("label (must be 0, 1 or 2)")
    return f"{row['premise']} </s> {row['hypothesis']}", NLI_LABELS[label]


@dataclass(frozen=True)
class DssSpec:
    name: str
    splits: tuple[str, ...]
    chunk: int
    kind: str
    row: Callable[[dict], tuple[str, str]]
    parse: Callable[[str], tuple[str, str]]
    hub: tuple[str, str | None]
    """(hub dataset, config) for ``source: hub``."""


DSS_DATASETS: dict[str, DssSpec] = {
    "cqa": DssSpec("cqa", ("train", "test"), 1000, "text", _row_cqa, parse_cqa, ("cos_e", "v1.11")),
    "svamp": DssSpec("svamp", ("train", "test"), 500, "equation", _row_svamp, parse_svamp, ("ChilleD/SVAMP", None)),
    "anli1": DssSpec("anli1", ("train", "valid", "test"), 5000, "text", _row_nli, parse_anli, ("anli", None)),
    "esnli": DssSpec("esnli", ("train", "valid", "test"), 5500, "text", _row_nli, parse_esnli, ("esnli", None)),
}


def read_jsonl(path: Path, numbered: bool = False) -> list:
    """JSON Lines with errors that name the file and line (``numbered``: ``(line, object)`` pairs)."""
    rows = []
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror})") from None
    for n, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: line {n}: not UTF-8 ({e.reason} at byte {e.start})") from None
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: line {n}, column {e.colno}: invalid JSON ({e.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}: line {n}: expected a JSON object, got {type(obj).__name__}")
        rows.append((n, obj) if numbered else obj)
    return rows


def _llm_files(root: Path, split: str) -> list[Path]:
    files = {}
    for p in (root / "llm").glob(f"{split}_CoT_*.json"):
        m = re.fullmatch(rf"{split}_CoT_(\d+)\.json", p.name)
        if m:
            files[int(m.group(1))] = p
    if not files:
        return []
    missing = [i for i in range(max(files) + 1) if i not in files]
    if missing:
        raise DataError(f"{root / 'llm'}: {split}_CoT_{missing[0]}.json is missing (files must be numbered 0..N)")
    return [files[i] for i in sorted(files)]


def read_teacher_outputs(root: Path, split: str, chunk: int) -> list[str]:
    outputs: list[str] = []
    files = _llm_files(root, split)
    if not files:
        raise DataError(f"{root / 'llm'}: no teacher files {split}_CoT_*.json")
    for i, p in enumerate(files):
        try:
            arr = json.loads(p.read_bytes().decode("utf-8"))
        except UnicodeDecodeError as e:
            raise DataError(f"{p}: not UTF-8 ({e.reason} at byte {e.start})") from None
        except json.JSONDecodeError as e:
            raise DataError(f"{p}: line {e.lineno}: invalid JSON ({e.msg})") from None
        if not isinstance(arr, list) or not all(isinstance(s, str) for s in arr):
            raise DataError(f"{p}: expected a JSON array of strings")
        if i < len(files) - 1 and len(arr) != chunk:
            raise DataError(f"{p}: {len(arr)} outputs, expected {chunk} (every file but the last holds one chunk)")
        outputs.extend(arr)
    return outputs


def load_dss_split(name: str, data_dir: str | Path, split: str) -> SplitData:
    """Gold rows joined with parsed teacher outputs, for one split of one dataset."""
    spec = DSS_DATASETS[name]
    root = Path(data_dir).expanduser() / name
    gold_path = root / f"{name}_{split}.json"
    if not gold_path.is_file():
        raise DataError(f"{gold_path}: file not found")
    rows = read_jsonl(gold_path)
    if not rows:
        raise DataError(f"{gold_path}: empty split (no rows)")
    outputs = read_teacher_outputs(root, split, spec.chunk)
    if len(outputs) != len(rows):
        raise DataError(
            f"{root / 'llm'}/{split}_CoT_*.json: {len(outputs)} teacher outputs for {len(rows)} rows in {gold_path.name}"
        )
    examples, unparsed = [], 0
    for n, (row, out) in enumerate(zip(rows, outputs), start=1):
        try:
            x, y = spec.row(row)
        except KeyError as e:
            key = e.args[0] if e.args else "?"
            raise DataError(f"{gold_path}: line {n}: missing or invalid key '{key}'") from None
        rationale, tlabel = spec.parse(out)
        unparsed += not (rationale and tlabel)
        examples.append(Example(str(x), str(y), rationale, tlabel, spec.kind, name))
    return SplitData(split, examples, unparsed, str(gold_path))


def available_splits(name: str, data_dir: str | Path) -> list[str]:
    root = Path(data_dir).expanduser() / name
    return [s for s in DSS_DATASETS[name].splits if (root / f"{name}_{s}.json").is_file()]


def load_hub_split(name: str, split: str) -> SplitData:  # pragma: no cover - needs the network
    """Gold rows from the hub with ``datasets`` (online only). The teacher outputs are not on the hub,
    so rationales stay empty: ``Config`` allows this source for label-only training only."""
    try:
        import datasets  # noqa: PLC0415
    except ImportError:
        raise DataError("data.source: 'hub' needs the optional extra: pip install 'mmi-ray[hub]'") from None
    spec = DSS_DATASETS[name]
    hub_name, hub_cfg = spec.hub
    hub_split = {"valid": "validation"}.get(split, split)
    if name == "cqa" and split == "test":
        hub_split = "validation"
    if name == "anli1":
        hub_split = {"train": "train_r1", "valid": "dev_r1", "test": "test_r1"}[split]
    ds = datasets.load_dataset(hub_name, hub_cfg, split=hub_split)
    examples = []
    for row in ds:
        if name == "svamp":
            row = {"input": f"{row['Body']}\n{row['Question']}", "label": row["Equation"]}
        x, y = spec.row(row)
        examples.append(Example(x, y, "", "", spec.kind, name))
    return SplitData(split, examples, len(examples), f"hub:{hub_name}")
