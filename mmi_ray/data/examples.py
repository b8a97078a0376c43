"""The one example type every data source produces, and the split container."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ..errors import DataError


@dataclass(frozen=True)
class Example:
    input: str
    """Task input text, without the ``predict: `` / ``explain: `` prefix."""
    label: str
    """Gold label text."""
    rationale: str
    """Teacher rationale; empty when the teacher output did not parse."""
    teacher_label: str
    """Teacher's parsed label; empty when the teacher output did not parse."""
    kind: str = "text"
    """How labels compare: ``text`` (exact match), ``answer`` (normalised: ``metrics.normalize_answer``) or
    ``equation`` (numeric value)."""
    task: str = ""
    """Dataset or task family, for per-task metrics."""
    gold: bool = True
    """Whether ``label`` is the row's gold label (False: the teacher's, ``data.custom.unlabelled``)."""
    teaches_rationale: bool = True
    """False: the row trains the label task only, not the rationale task or the MI term
    (``data.rationales.keep: label_only`` and a wrong teacher answer)."""

    @property
    def parsed(self) -> bool:
        return bool(self.rationale) and bool(self.teacher_label)


def carve(items: list, fraction: float, seed: int, what: str, source: str) -> tuple[list, list]:
    """(kept, carved): ``fraction`` of ``items`` (at least one) drawn with ``seed``, each part in its
    original order; too few items to keep any is an error naming ``source``."""
    idx = list(range(len(items)))
    random.Random(seed).shuffle(idx)
    n = max(1, round(fraction * len(idx)))
    if n >= len(idx):
        raise DataError(f"{source}: {len(idx)} training rows are too few to carve a {what} split from")
    out = set(idx[:n])
    return [x for i, x in enumerate(items) if i not in out], [x for i, x in enumerate(items) if i in out]


@dataclass
class SplitData:
    name: str
    examples: list[Example]
    unparsed: int = 0
    """Teacher outputs that did not parse (their rationale and teacher label are empty)."""
    source: str = ""

    def __len__(self) -> int:
        return len(self.examples)


@dataclass
class Splits:
    train: SplitData
    valid: SplitData
    test: SplitData | None
    notes: list[str] = field(default_factory=list)
    kept: str | None = None
    """What ``data.rationales.keep`` did to train, in a line (None: nothing)."""

    def items(self):
        out = [("train", self.train), ("valid", self.valid)]
        if self.test is not None:
            out.append(("test", self.test))
        return out
