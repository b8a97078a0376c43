"""Your own rows: JSONL / CSV files, a folder of split files, a ``datasets`` folder or hub name.

``data.dataset: custom`` with ``data.path``; ``data.custom`` names the columns and the label kind.
What ``mmi-ray rationales`` writes (``train.jsonl`` ... with ``input, label, rationale, teacher_answer``
and ``rationales.json``) is such a folder. Errors name the file, the line and the key.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..config import CustomDataConfig, DataConfig
from ..errors import DataError
from ..metrics import normalize_answer, safe_arith
from .dss import read_jsonl
from .examples import Example, SplitData, Splits, carve

SPLIT_NAMES = {"train": "train", "valid": "valid", "validation": "valid", "dev": "valid", "val": "valid",
               "test": "test"}
"""Split words in file names and split columns, and the split each means."""
SUFFIXES = (".jsonl", ".json", ".csv")
META_FILE = "rationales.json"
"""What ``mmi-ray rationales`` records next to its split files (teacher, prompt, label kind, hash)."""
EXAMPLE_KINDS = {"text": "answer", "class": "answer", "choice": "answer", "number": "equation"}
"""Label kind -> how ``metrics.label_correct`` compares: ``answer`` normalised (case, markup, punctuation
around, articles, a choice letter: ``metrics.normalize_answer``), ``number`` by value (``3.0`` equals ``3``)."""
CHOICE_LETTERS = "abcdefghijklmnopqrstuvwxyz"


@dataclass
class Row:
    """One row as read: the line it came from and its columns (strings, lists or numbers)."""

    where: str
    """``FILE: line N`` (or ``row N``): named in every error about the row."""
    values: dict


@dataclass
class Table:
    """A custom dataset's rows by split, before they become examples."""

    splits: dict[str, list[Row]]
    source: str
    meta: dict = field(default_factory=dict)
    """``rationales.json`` when the folder has one."""


# --- reading


def _read_csv(path: Path) -> list[Row]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 ({e.reason} at byte {e.start})") from None
    reader = csv.DictReader(text.splitlines())
    rows = []
    for n, rec in enumerate(reader, start=2):  # line 1 is the header
        if None in rec:
            raise DataError(f"{path}: line {n}: more fields than the header has")
        rows.append(Row(f"{path}: line {n}", dict(rec)))
    return rows


def read_rows(path: Path) -> list[Row]:
    """The rows of one JSONL (``.jsonl`` / ``.json``) or CSV file; a file with none (empty, blank
    lines only, a CSV header alone) is an error, the same for every format."""
    if path.suffix not in (".jsonl", ".json", ".csv"):
        raise DataError(f"{path}: unknown format '{path.suffix}' (a .jsonl, .json or .csv file, or a folder)")
    rows = _read_csv(path) if path.suffix == ".csv" else \
        [Row(f"{path}: line {n}", r) for n, r in read_jsonl(path, numbered=True)]
    if not rows:
        raise DataError(f"{path}: no rows (the file is empty{', or a header alone' if path.suffix == '.csv' else ''})")
    return rows


def split_files(folder: Path) -> dict[str, Path]:
    """``train.jsonl``, ``cqa_valid.json``, ``dev.csv``...: one file per split, found by the split word."""
    found: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if not p.is_file() or p.suffix not in SUFFIXES or p.name == META_FILE:
            continue
        words = re.split(r"[^a-z]+", p.stem.lower())
        hits = {SPLIT_NAMES[w] for w in words if w in SPLIT_NAMES}
        if len(hits) != 1:
            continue
        split = hits.pop()
        if split in found:
            raise DataError(f"{folder}: two files for the {split} split: {found[split].name} and {p.name}")
        found[split] = p
    return found


def _read_datasets(path: str) -> Table:
    try:
        import datasets  # noqa: PLC0415
    except ImportError:
        raise DataError(f"data.path: {path}: a datasets folder or hub name needs: pip install 'mmi-ray[hub]'") from None
    if path.startswith("hf:"):  # pragma: no cover - needs the network
        ds = datasets.load_dataset(path[3:])
    else:
        ds = datasets.load_from_disk(path)
    if isinstance(ds, datasets.Dataset):
        ds = {"train": ds}
    splits: dict[str, list[Row]] = {}
    for name, part in ds.items():
        split = SPLIT_NAMES.get(name.lower())
        if split is None:
            continue
        splits[split] = [Row(f"{path} [{name}]: row {i}", dict(r)) for i, r in enumerate(part)]
    return Table(splits, path)


def read_table(path: str, columns_split: str = "split") -> Table:
    """The rows of ``data.path`` by split (``train`` / ``valid`` / ``test``; absent ones carved later)."""
    if path.startswith("hf:"):
        return _read_datasets(path)
    p = Path(path).expanduser()
    if p.is_dir():
        if (p / "dataset_dict.json").is_file() or (p / "dataset_info.json").is_file():
            return _read_datasets(str(p))
        files = split_files(p)
        meta = {}
        if (p / META_FILE).is_file():
            try:
                meta = json.loads((p / META_FILE).read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise DataError(f"{p / META_FILE}: not valid JSON ({e})") from None
        if not files and (any(p.glob("*.jsonl.partial")) or meta.get("complete") is False):
            # a run of mmi-ray rationales that stopped early (Ctrl-C, a refused key): said so, not "no files"
            raise DataError(f"{p}: the rationales are not complete ({META_FILE} says so; no split finished): run "
                            "the same mmi-ray rationales command again to finish")
        if not files:
            raise DataError(f"{p}: no split files (train / valid / test as .jsonl, .json or .csv)")
        return Table({s: read_rows(f) for s, f in files.items()}, str(p), meta)
    if not p.is_file():
        raise DataError(f"data.path: file or folder not found: {path}")
    rows = read_rows(p)
    if rows and columns_split in rows[0].values:
        splits: dict[str, list[Row]] = {}
        for r in rows:
            word = str(r.values.get(columns_split, "")).strip().lower()
            if word not in SPLIT_NAMES:
                raise DataError(f"{r.where}: {columns_split} '{word}' is not train, valid or test")
            splits.setdefault(SPLIT_NAMES[word], []).append(r)
        return Table(splits, str(p))
    return Table({"train": rows}, str(p))


# --- rows -> examples


def choice_list(value, where: str, key: str) -> list[str]:
    """Options from a JSON list, a JSON-list string, or ``a|b|c``."""
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("["):
            try:
                value = json.loads(s)
            except json.JSONDecodeError:
                raise DataError(f"{where}: '{key}' is not a JSON list") from None
        else:
            value = [c.strip() for c in s.split("|")]
    if not isinstance(value, list) or len(value) < 2 or not all(isinstance(c, str) and c.strip() for c in value):
        raise DataError(f"{where}: '{key}' must list at least two non-empty options")
    if len(value) > len(CHOICE_LETTERS):
        raise DataError(f"{where}: '{key}' has {len(value)} options (at most {len(CHOICE_LETTERS)})")
    return [c.strip() for c in value]


def with_choices(question: str, choices: list[str]) -> str:
    """The input a choice question gets, as the DSS CommonsenseQA rows have it."""
    opts = "\n".join(f"({CHOICE_LETTERS[i]}) {c}" for i, c in enumerate(choices))
    return f"{question}\nAnswer Choices:\n{opts}"


def number_text(value, where: str, key: str) -> str:
    """A number label as text (``"1,234"`` -> ``1234``, ``"( 10.0 * 45.0 )"`` -> ``450``: SVAMP's labels are
    equations, valued by the safe arithmetic parser); anything else is an error naming the row."""
    if isinstance(value, bool):
        raise DataError(f"{where}: '{key}' is not a number (got {value!r})")
    if isinstance(value, (int, float)):
        x = float(value)
    else:
        x = safe_arith(str(value).strip().replace(",", "").lstrip("$"))
        if x is None:
            raise DataError(f"{where}: '{key}' is not a number (got {value!r})")
    if not math.isfinite(x):
        raise DataError(f"{where}: '{key}' is not a finite number (got {value!r})")
    return str(int(x)) if x == int(x) else repr(x)


_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def fill(template: str, values: dict, where: str, what: str) -> str:
    """``{name}`` -> the value of column ``name`` (only names: no attribute or index lookups)."""
    def one(m):
        name = m.group(1)
        if name not in values or values[name] is None:
            raise DataError(f"{where}: {what} needs column '{name}', which the row does not have")
        return str(values[name])

    return _FIELD.sub(one, template.replace("{{", "\0").replace("}}", "\1")).replace("\0", "{").replace("\1", "}")


@dataclass
class Reader:
    """How one custom dataset's rows become examples (its label kind and columns)."""

    spec: CustomDataConfig
    kind: str
    task: str = "custom"

    @classmethod
    def of(cls, spec: CustomDataConfig, meta: dict, source: str) -> Reader:
        recorded = meta.get("label_kind")
        if spec.label_kind and recorded and spec.label_kind != recorded:
            raise DataError(f"data.custom.label_kind: '{spec.label_kind}', but {source}/{META_FILE} was written "
                            f"for '{recorded}'")
        if not spec.classes and meta.get("classes"):
            spec = spec.model_copy(update={"classes": list(meta["classes"])})
        kind = spec.label_kind or recorded or "text"
        if kind == "class" and not spec.classes:
            raise DataError("data.custom.classes: label_kind 'class' needs the closed set of labels")
        return cls(spec, kind, meta.get("task") or "custom")

    def question_of(self, row: Row) -> tuple[str, list[str] | None]:
        """The row's question (input column or template) and, for ``choice``, its options."""
        c, v = self.spec.columns, row.values
        if self.spec.input_template:
            text = fill(self.spec.input_template, v, row.where, "data.custom.input_template")
        else:
            text = self._text(row, c.input, "data.custom.columns.input")
        choices = None
        if self.kind == "choice":
            if c.choices not in v:
                raise DataError(f"{row.where}: missing key '{c.choices}' (data.custom.columns.choices; label_kind choice)")
            choices = choice_list(v[c.choices], row.where, c.choices)
        return text, choices

    def _text(self, row: Row, key: str, setting: str) -> str:
        if key not in row.values:
            have = ", ".join(str(k) for k in row.values)
            raise DataError(f"{row.where}: missing or empty key '{key}' ({setting}; the row has: {have})")
        if row.values[key] is None or str(row.values[key]).strip() == "":
            raise DataError(f"{row.where}: missing or empty key '{key}' ({setting})")
        return str(row.values[key]).strip()

    def label_of(self, value, row: Row, key: str, choices: list[str] | None, *, gold: bool) -> str:
        """A label checked against the kind: a class in the closed set, a choice among the row's
        options (or its letter), a number; ``gold=False`` (the teacher's answer) may be empty."""
        if value is None or str(value).strip() == "":
            if gold:
                raise DataError(f"{row.where}: missing or empty key '{key}' (data.custom.columns.label)")
            return ""
        if gold and self.spec.label_names:
            key_text = str(value).strip()
            if key_text not in self.spec.label_names:
                raise DataError(f"{row.where}: {key} '{key_text}' is not in data.custom.label_names "
                                f"{sorted(self.spec.label_names)}")
            value = self.spec.label_names[key_text]
        text = str(value).strip()
        if self.kind == "number":
            return number_text(value, row.where, key)
        if self.kind == "class" and text not in self.spec.classes:
            match = [c for c in self.spec.classes if normalize_answer(c) == normalize_answer(text)]
            if match:  # "Entailment.", "**neutral**": the class as people write it
                text = match[0]
            elif gold:
                raise DataError(f"{row.where}: {key} '{text}' is not one of data.custom.classes {self.spec.classes}")
        if self.kind == "choice" and text not in choices:
            # a letter, or the option as people write it ("(c) Wooded area", "**wooded area**")
            by_letter = dict(zip(CHOICE_LETTERS, choices))
            match = [c for c in choices if normalize_answer(c) == normalize_answer(text, by_letter)]
            if match:
                text = match[0]
            elif gold:
                raise DataError(f"{row.where}: {key} '{text}' is not one of the row's choices {choices}")
        return text

    def has_gold(self, row: Row) -> bool:
        v = row.values.get(self.spec.columns.label)
        return v is not None and str(v).strip() != ""

    def example(self, row: Row, split: str = "train") -> Example:
        c = self.spec.columns
        question, choices = self.question_of(row)
        text = with_choices(question, choices) if choices else question
        gold = self.has_gold(row) or self.spec.unlabelled != "teacher"
        if gold:
            label = self.label_of(row.values.get(c.label), row, c.label, choices, gold=True)
        elif split != "train":
            raise DataError(f"{row.where}: missing or empty key '{c.label}': a {split} row needs its gold label "
                            "(data.custom.unlabelled: teacher labels training rows only)")
        else:  # no gold: the teacher's answer (its majority over the samples where there are several)
            answer = row.values.get("majority_answer") or row.values.get(c.teacher_answer)
            label = self.label_of(answer, row, c.teacher_answer, choices, gold=False)
            if not label:
                raise DataError(f"{row.where}: no gold label and no teacher answer to label it by "
                                "(data.custom.unlabelled: teacher)")
        rationale = str(row.values.get(c.rationale) or "").strip()
        t_label = self.label_of(row.values.get(c.teacher_answer), row, c.teacher_answer, choices, gold=False)
        if rationale and not t_label and c.teacher_answer not in row.values:
            t_label = label  # rationales given without a teacher answer: the teacher agreed with gold
        if not rationale:
            t_label = ""
        return Example(text, label, rationale, t_label, EXAMPLE_KINDS[self.kind], self.task, gold=gold)


def row_id(line: dict) -> str:
    """The input row a line of ``mmi-ray rationales --samples`` answers: ``train-3`` for ``train-3.2``
    (``sample`` 2) and for ``train-3`` itself (``sample`` 0)."""
    return str(line["id"]).rsplit(".", 1)[0] if line.get("sample") else str(line["id"])


def by_row(lines: list[Row]) -> list[list[Row]]:
    """Lines grouped by the input row they answer, in order: one line a row, or a row's samples
    (``mmi-ray rationales --samples``: ids ``train-3``, ``train-3.1``, ... with ``sample`` 0, 1, ...),
    so that a carve-off never splits a row's samples between train and validation."""
    groups: dict[str, list[Row]] = {}
    for i, r in enumerate(lines):
        groups.setdefault(row_id(r.values) if "sample" in r.values else str(i), []).append(r)
    return [sorted(g, key=lambda r: int(r.values.get("sample") or 0)) for g in groups.values()]


def custom_splits(cfg: DataConfig, table: Table | None = None) -> Splits:
    """Train / validation / test examples of ``data.path`` (or of its ``table``, read already). Validation
    is carved from train (never from test) with ``data.split_seed`` when absent; test only with
    ``data.custom.test_fraction``."""
    table = table or read_table(cfg.path, cfg.custom.columns.split)
    if table.meta and not table.meta.get("complete", True):
        todo = [s for s in ("train", "valid", "test") if s in table.meta.get("splits", {}) and s not in table.splits]
        raise DataError(f"{table.source}/{META_FILE}: the rationales are not complete (split {', '.join(todo) or '?'} "
                        "still being written): run the same mmi-ray rationales command again to finish")
    reader = Reader.of(cfg.custom, table.meta, table.source)
    rows, notes = {k: by_row(v) for k, v in table.splits.items()}, []
    if "train" not in rows:
        raise DataError(f"{table.source}: no train split (a train file, a split column, or one file of rows)")
    # rows without gold (data.custom.unlabelled: teacher) train only: carve-offs take labelled rows
    no_gold = [g for g in rows["train"] if not reader.has_gold(g[0])] if cfg.custom.unlabelled == "teacher" else []
    if no_gold:
        rows["train"] = [g for g in rows["train"] if reader.has_gold(g[0])]
    if "test" not in rows and cfg.custom.test_fraction:
        rows["train"], rows["test"] = carve(rows["train"], cfg.custom.test_fraction, cfg.split_seed + 1, "test",
                                            table.source)
        notes.append(f"test: {len(rows['test'])} rows carved from train with split_seed {cfg.split_seed}")
    if "valid" not in rows:
        rows["train"], rows["valid"] = carve(rows["train"], cfg.valid_fraction, cfg.split_seed, "validation",
                                             table.source)
        notes.append(f"validation: {len(rows['valid'])} rows carved from train with split_seed {cfg.split_seed}")
    if "test" not in rows:
        notes.append("no test split (data.custom.test_fraction carves one from train)")
    if no_gold:
        rows["train"] += no_gold
        notes.append(f"train: {len(no_gold)} rows without a gold label, labelled by the teacher's "
                     f"{'majority ' if any(len(g) > 1 for g in no_gold) else ''}answer (data.custom.unlabelled)")
    per_row = cfg.rationales.per_row
    have = max((len(g) for g in rows["train"]), default=1)
    if per_row > have:
        raise DataError(f"data.rationales.per_row: {per_row}, but {table.source} holds {have} rationale(s) a row "
                        f"(mmi-ray rationales --samples {per_row} writes more)")
    if have > 1:
        notes.append(f"train: {per_row} of the {have} rationales a row (data.rationales.per_row), each an example")
    out = {}
    for name in ("train", "valid", "test"):
        if name not in rows:
            continue
        if not rows[name]:
            raise DataError(f"{table.source}: the {name} split is empty")
        lines = [r for g in rows[name] for r in (g[:per_row] if name == "train" else g[:1])]
        examples = [reader.example(r, name) for r in lines]
        out[name] = SplitData(name, examples, sum(not e.parsed for e in examples), table.source)
    return Splits(out["train"], out["valid"], out.get("test"), notes)
