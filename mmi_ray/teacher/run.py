"""``mmi-ray rationales``: a dataset's rows -> few-shot prompts -> teacher replies -> parsed rationales.

Writes ``OUT/{split}.jsonl`` (``id, input, choices, label, rationale, teacher_answer, parsed,
teacher_output``) and ``OUT/rationales.json`` (teacher, sampling, prompt and its hash, label kind,
counts, teacher accuracy, a hash of the rows), the folder ``data.dataset: custom`` reads. Replies
are appended to ``OUT/{split}.jsonl.partial`` as they arrive; a rerun asks only the rows not there
(a crash or Ctrl-C loses the requests in flight), and a split's file appears when all its rows are in.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..config import DataConfig
from ..data.custom import EXAMPLE_KINDS, META_FILE, Reader, Row, read_table, row_id, with_choices
from ..errors import ConfigError, DataError
from ..metrics import label_correct
from ..reuse import code_version, data_fingerprint
from .parse import parse_reply
from .prompts import Prompt

FORMAT = 1
PARTIAL = ".partial"
SPLIT_ORDER = ("train", "valid", "test")


@dataclass
class Task:
    """One row to ask about: what the output keeps, and the prompt that asks."""

    id: str
    split: str
    question: str
    choices: list[str] | None
    label: str
    prompt: str
    sample: int | None = None
    """With ``--samples N``: which of the row's N replies (0 .. N-1); None: the one reply."""


def _asked(row: dict) -> str:
    """The question as the teacher saw it, its options inline (a choice letter maps to its option)."""
    return with_choices(row["input"], row["choices"]) if row.get("choices") else row["input"]


@dataclass
class SplitReport:
    rows: int = 0
    """Lines written: one a row, or one a sample of a row (``--samples``)."""
    parsed: int = 0
    correct: int = 0
    labelled: int | None = None
    """Lines whose row has a gold label (the teacher's accuracy is over these); None: all."""
    tokens_in: int = 0
    """Prompt tokens of the requests that answered the split's rows (as the server counted them, or the
    teacher's tokenizer for ``ray-data``), every run that wrote them; ``tokens_out`` the replies'."""
    tokens_out: int = 0
    majority_correct: int | None = None
    """With samples: input rows whose majority answer over the samples (self-consistency) is right."""

    @property
    def accuracy(self) -> float:
        n = self.rows if self.labelled is None else self.labelled
        return self.correct / n if n else 0.0


@dataclass
class Report:
    out: str
    splits: dict[str, SplitReport] = field(default_factory=dict)
    asked: int = 0
    """Requests sent (a greedy teacher is asked once per distinct prompt), each of our retries counted."""
    http_requests: int = 0
    """HTTP requests that reached the wire this run, the client's own retries (429, 5xx) included."""
    answered: int = 0
    """Rows written this run."""
    reused: int = 0
    failed: int = 0
    last_error: str = ""
    complete: bool = False
    wall_s: float = 0.0
    """Seconds spent asking the teacher this run."""
    meta: dict = field(default_factory=dict)
    rows: int = 0
    """Rows this command was asked for (every split it covers)."""


def build_tasks(data: DataConfig, prompt: Prompt, splits: list[str] | None, limit: int | None,
                samples: int = 1) -> tuple[list[Task], Reader, dict]:
    """The rows of ``data.path`` as prompts, checked (a bad row names its file and line before any
    request); with ``samples`` > 1, each row asked that many times (ids ``train-3``, ``train-3.1``, ...)."""
    table = read_table(data.path, data.custom.columns.split)
    spec = data.custom
    if prompt.kind and not spec.label_kind:
        spec = spec.model_copy(update={"label_kind": prompt.kind})
    if prompt.classes and not spec.classes:
        spec = spec.model_copy(update={"classes": list(prompt.classes)})
    reader = Reader.of(spec, {}, table.source)
    if prompt.kind and prompt.kind != reader.kind:
        raise ConfigError(prompt.source, f"kind: the prompt is written for '{prompt.kind}' answers, the data's "
                                         f"label kind is '{reader.kind}' (data.custom.label_kind)")
    wanted = splits or [s for s in SPLIT_ORDER if s in table.splits]
    tasks: list[Task] = []
    for split in wanted:
        rows: list[Row] = table.splits.get(split, [])
        if not rows:
            raise DataError(f"{table.source}: the {split} split is empty" + ("" if split in table.splits else " (no such split)"))
        for i, row in enumerate(rows[:limit] if limit else rows):
            question, choices = reader.question_of(row)
            label = (reader.label_of(row.values.get(spec.columns.label), row, spec.columns.label, choices, gold=True)
                     if reader.has_gold(row) or spec.unlabelled != "teacher" else "")  # "": no gold, asked all the same
            full = with_choices(question, choices) if choices else question
            values = {**{k: v for k, v in row.values.items() if isinstance(k, str)}, "input": full, "question": question,
                      "choices": "\n".join(f"({chr(97 + j)}) {c}" for j, c in enumerate(choices or [])),
                      "classes": ", ".join(reader.spec.classes or [])}
            text = prompt.render(values, row.where)
            if samples == 1:
                tasks.append(Task(f"{split}-{i}", split, question, choices, label, text))
            else:
                tasks += [Task(f"{split}-{i}" + (f".{k}" if k else ""), split, question, choices, label, text, k)
                          for k in range(samples)]
    return tasks, reader, {"source": table.source, "source_sha": data_fingerprint(data)}


def settings_sha(teacher: dict, prompt: Prompt) -> str:
    """What makes a reply: the teacher and its sampling, the prompt template. A row written under
    another is not reused (``--force`` starts over)."""
    blob = json.dumps({"teacher": {k: v for k, v in teacher.items() if k != "base_url"}, "prompt": prompt.sha},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_partial(path: Path) -> dict[str, dict]:
    """Rows written so far, by id; a torn last line (a crash mid-write) is dropped, not an error."""
    if not path.is_file():
        return {}
    rows = {}
    lines = path.read_bytes().splitlines()
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):
                continue
            raise DataError(f"{path}: line {n}: invalid JSON (not written by mmi-ray rationales?)") from None
        rows[obj["id"]] = obj
    return rows


class Writer:
    """Appends each reply to its split's ``.partial`` file and flushes it to disk."""

    def __init__(self, out: Path, reader: Reader, prompt: Prompt, settings: str, tasks: dict[str, Task]):
        self.out, self.reader, self.prompt, self.settings, self.tasks = out, reader, prompt, settings, tasks
        self.files: dict[str, object] = {}
        self.written = 0

    def row(self, task: Task, text: str, tokens: tuple[int, int] | None = None) -> dict:
        p = parse_reply(text, self.reader.kind, marker=self.prompt.marker, choices=task.choices,
                        classes=self.reader.spec.classes)
        row = {"id": task.id, "input": task.question, "label": task.label, "rationale": p.rationale,
               "teacher_answer": p.answer, "parsed": p.ok, "teacher_output": text, "settings": self.settings}
        if task.choices:
            row["choices"] = task.choices
        if task.sample is not None:
            row["sample"] = task.sample
        if tokens is not None:  # the request that answered this row (rows sharing a greedy reply: the first)
            row["tokens_in"], row["tokens_out"] = int(tokens[0]), int(tokens[1])
        return row

    def __call__(self, rid: str, text: str, tokens: tuple[int, int] | None = None) -> None:
        task = self.tasks[rid]
        f = self.files.get(task.split)
        if f is None:
            f = self.files[task.split] = open(self.out / f"{task.split}.jsonl{PARTIAL}", "a", encoding="utf-8")  # noqa: SIM115
        f.write(json.dumps(self.row(task, text, tokens), ensure_ascii=False) + "\n")
        f.flush()
        self.written += 1
        if self.written % 64 == 0:
            os.fsync(f.fileno())

    def close(self) -> None:
        for f in self.files.values():
            f.flush()
            os.fsync(f.fileno())
            f.close()
        self.files = {}


def majority_vote(rows: list[dict], kind: str) -> int:
    """Each line gets its row's majority answer over the samples (``majority_answer``: the parsed
    answers compared as evaluation compares them; a tie goes to the answer seen first); returns the
    rows whose majority answer is right."""
    from collections import Counter

    from ..metrics import normalize_answer, safe_arith

    def same(a: str):  # what label_correct compares: the value of an equation, else the normalised text
        return (safe_arith(a) if safe_arith(a) is not None else a) if kind == "equation" else normalize_answer(a)

    by_row: dict[str, list[dict]] = {}
    for r in rows:
        by_row.setdefault(row_id(r), []).append(r)
    right = 0
    for lines in by_row.values():
        first = {}  # each answer class's first spelling, in the order seen (Counter keeps it: ties go first)
        for a in (r["teacher_answer"] for r in lines if r["parsed"]):
            first.setdefault(same(a), a)
        counts = Counter(same(r["teacher_answer"]) for r in lines if r["parsed"])
        best = first[counts.most_common(1)[0][0]] if counts else ""
        for r in lines:
            r["majority_answer"] = best
        right += bool(best) and bool(lines[0]["label"]) and label_correct(best, lines[0]["label"], kind, _asked(lines[0]))
    return right


def written(out: Path, tasks: list[Task], settings: str, force: bool) -> dict[str, dict]:
    """The rows of ``tasks`` already written in ``out`` under the same settings (by id); rows written
    for another input or under other settings are refused unless ``force`` (then: none)."""
    by_id = {t.id: t for t in tasks}
    split_names = [s for s in SPLIT_ORDER if any(t.split == s for t in tasks)]
    have: dict[str, dict] = {}
    for split in split_names:
        for path in (out / f"{split}.jsonl", out / f"{split}.jsonl{PARTIAL}"):
            for rid, row in read_partial(path).items():
                if rid not in by_id:
                    continue
                if row.get("input") != by_id[rid].question and not force:
                    raise ConfigError(str(path), f"row {rid} was written for another input ({row.get('input')!r}, "
                                                 f"now {by_id[rid].question!r}): the data changed; use another --out, "
                                                 "or --force to ask every row again")
                if row.get("settings") != settings:
                    if not force:
                        raise ConfigError(str(path), f"rows written with other teacher settings or another prompt "
                                                     f"(settings {row.get('settings')}, now {settings}); use another "
                                                     "--out, or --force to ask every row again")
                    continue
                have[rid] = row
    if force:
        for split in split_names:
            for path in (out / f"{split}.jsonl", out / f"{split}.jsonl{PARTIAL}"):
                if path.is_file() and any(r.get("settings") != settings for r in read_partial(path).values()):
                    path.unlink()
        have = {}
    return have


def request_groups(tasks: list[Task], have: dict[str, dict], greedy: bool) -> tuple[dict[str, list[str]], dict[str, str]]:
    """(request key -> the ids of the rows it answers, key -> a reply already written). Greedy
    replies depend on the prompt alone: each distinct prompt is asked once (and not at all when a row
    written before had it); sampled replies are asked per row."""
    by_id = {t.id: t for t in tasks}
    key_of = (lambda t: hashlib.sha256(t.prompt.encode()).hexdigest()) if greedy else (lambda t: t.id)
    groups: dict[str, list[str]] = {}
    for t in tasks:
        if t.id not in have:
            groups.setdefault(key_of(t), []).append(t.id)
    known = {key_of(by_id[rid]): row["teacher_output"] for rid, row in have.items()} if greedy else {}
    return groups, known


def pending_prompts(data: DataConfig, prompt: Prompt, backend, out: str | Path, *, splits: list[str] | None = None,
                    limit: int | None = None, force: bool = False, samples: int = 1) -> tuple[int, list[str]]:
    """(rows still to answer, the prompts of the requests that would answer them): what ``generate``
    would ask, asking nothing and writing nothing."""
    tasks, _, _ = build_tasks(data, prompt, splits, limit, samples)
    teacher = backend.describe()
    out = Path(out).expanduser()
    have = written(out, tasks, settings_sha(teacher, prompt), force) if out.is_dir() and not force else {}
    groups, known = request_groups(tasks, have, teacher["sampling"]["temperature"] == 0)
    by_id = {t.id: t for t in tasks}
    return sum(len(ids) for k, ids in groups.items() if k not in known), \
        [by_id[ids[0]].prompt for k, ids in groups.items() if k not in known]


def generate(data: DataConfig, prompt: Prompt, backend, out: str | Path, *, splits: list[str] | None = None,
             limit: int | None = None, force: bool = False, progress=None, samples: int = 1) -> Report:
    """Ask the teacher about every row not yet answered under the same settings (``samples`` replies
    a row, each resumable on its own), then write the splits that are complete and ``rationales.json``."""
    out = Path(out).expanduser()
    tasks, reader, source = build_tasks(data, prompt, splits, limit, samples)
    teacher = backend.describe()
    settings = settings_sha(teacher, prompt)
    out.mkdir(parents=True, exist_ok=True)
    by_id = {t.id: t for t in tasks}
    split_names = [s for s in SPLIT_ORDER if any(t.split == s for t in tasks)]
    have = written(out, tasks, settings, force)
    report = Report(str(out), reused=len(have), rows=len(tasks))
    writer = Writer(out, reader, prompt, settings, by_id)
    groups, known = request_groups(tasks, have, teacher["sampling"]["temperature"] == 0)

    def done(key: str, text: str, tokens: tuple[int, int] | None = None) -> None:
        for i, rid in enumerate(groups[key]):
            writer(rid, text, tokens if i == 0 else None)  # a request's tokens counted once
        if progress is not None:
            progress(len(groups[key]))

    stopped: BaseException | None = None
    t0 = time.perf_counter()
    try:
        for key in [k for k in groups if k in known]:
            done(key, known[key])
        # a sample's own seed: a server that honours seeds would give every sample the same reply
        todo = [(k, by_id[ids[0]].prompt, by_id[ids[0]].sample or 0) for k, ids in groups.items() if k not in known]
        outcome = backend.run(todo, done)
        report.asked, report.failed, report.last_error = outcome.asked, outcome.failed, outcome.last_error
        report.http_requests = outcome.http_requests
    except (Exception, KeyboardInterrupt) as e:  # a fatal teacher error or Ctrl-C: what is written is kept, and said
        stopped = e
    finally:
        writer.close()
    report.answered = writer.written
    report.wall_s = time.perf_counter() - t0
    # the complete splits: rows in the input's order, replacing the partial file in one rename
    rows_all = {**have}
    for split in split_names:
        rows_all.update({rid: r for rid, r in read_partial(out / f"{split}.jsonl{PARTIAL}").items()
                         if r.get("settings") == settings})
    complete = True
    for split in split_names:
        ids = [t.id for t in tasks if t.split == split]
        rows = [rows_all[i] for i in ids if i in rows_all]
        report.splits[split] = SplitReport(len(rows), sum(r["parsed"] for r in rows),
                                                sum(bool(r["parsed"]) and label_correct(r["teacher_answer"], r["label"],
                                                                                       EXAMPLE_KINDS[reader.kind],
                                                                                       _asked(r))
                                                    for r in rows),
                                           tokens_in=sum(r.get("tokens_in", 0) for r in rows),
                                           tokens_out=sum(r.get("tokens_out", 0) for r in rows))
        if any(not r["label"] for r in rows):
            report.splits[split].labelled = sum(bool(r["label"]) for r in rows)
        if len(rows) < len(ids):
            complete = False
            continue
        if samples > 1:
            report.splits[split].majority_correct = majority_vote(rows, EXAMPLE_KINDS[reader.kind])
        final = out / f"{split}.jsonl"
        tmp = out / f".{split}.jsonl.tmp"
        tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        os.replace(tmp, final)
        (out / f"{split}.jsonl{PARTIAL}").unlink(missing_ok=True)
    report.complete = complete and stopped is None
    report.meta = write_meta(out, report, reader, prompt, teacher, settings, source, limit, samples)
    if stopped is not None:
        stopped.report = report  # what was kept, for the command's closing line (Ctrl-C)
        raise stopped
    return report


def write_meta(out: Path, report: Report, reader: Reader, prompt: Prompt, teacher: dict, settings: str,
               source: dict, limit: int | None, samples: int = 1) -> dict:
    h = hashlib.sha256()
    for split in SPLIT_ORDER:
        f = out / f"{split}.jsonl"
        if f.is_file() and split in report.splits:
            h.update(split.encode())
            h.update(f.read_bytes())
    meta = {
        "format": FORMAT,
        "complete": report.complete,
        "label_kind": reader.kind,
        "classes": reader.spec.classes,
        "task": Path(source["source"]).stem,
        "source": source["source"],
        "source_sha": source["source_sha"],
        "limit_per_split": limit,
        "teacher": teacher,
        "prompt": {"name": prompt.name, "file": prompt.source, "sha": prompt.sha, "marker": prompt.marker,
                   "template": prompt.text},
        "settings": settings,
        "splits": {s: {"rows": r.rows, "parsed": r.parsed, "teacher_correct": r.correct,
                       **({"labelled": r.labelled} if r.labelled is not None else {}),
                       "teacher_accuracy": round(r.accuracy, 6), "tokens_in": r.tokens_in, "tokens_out": r.tokens_out,
                       **({"majority_correct": r.majority_correct} if r.majority_correct is not None else {})}
                   for s, r in report.splits.items()},
        **({"samples_per_row": samples} if samples > 1 else {}),
        "rows_sha": h.hexdigest()[:16],
        "code": code_version(),
    }
    tmp = out / f".{META_FILE}.tmp"
    tmp.write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, out / META_FILE)
    return meta
