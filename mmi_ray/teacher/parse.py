"""A teacher's chain-of-thought text -> (rationale, answer), per label kind.

The DSS style: ``<rationale> So the answer is <answer>.`` (the marker is the prompt's). What follows
the answer (a few-shot model often writes the next ``Q:``) is cut at the first blank line. A reply
that does not parse gives ``("", "")``: counted, kept in the output with its raw text, never
guessed. Nothing here raises on any string (tests/test_teacher.py fuzzes it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..metrics import safe_arith

DEFAULT_MARKER = "So the answer is"
_NUMBER = re.compile(r"[-+]?\$?\d[\d,]*(?:\.\d+)?|[-+]?\.\d+")


@dataclass(frozen=True)
class Parsed:
    rationale: str
    answer: str

    @property
    def ok(self) -> bool:
        return bool(self.rationale) and bool(self.answer)


NOT_PARSED = Parsed("", "")


def split_reply(text: str, marker: str = DEFAULT_MARKER) -> tuple[str, str] | None:
    """(rationale, the answer's text up to the end of its line), at the first marker; None without one."""
    if not isinstance(text, str):
        return None
    at = text.find(marker)
    if at < 0:
        return None
    rationale = text[:at].strip()
    rest = text[at + len(marker):].lstrip(" :\t")
    answer = rest.split("\n", 1)[0].strip()
    return rationale, answer


def _strip_end(answer: str) -> str:
    answer = answer.strip()
    while answer and answer[-1] in ".!":
        answer = answer[:-1].rstrip()
    return answer


def number_of(answer: str) -> str | None:
    """A numeric answer as text: an arithmetic expression's value (``(10 * 45)``: SVAMP's teacher writes
    those; evaluated by the safe parser, never executed), else the first number in the text."""
    answer = _strip_end(answer)
    value = safe_arith(answer)
    if value is None:
        m = _NUMBER.search(answer)
        if m is None:
            return None
        value = safe_arith(m.group(0).replace(",", "").replace("$", ""))
        if value is None:
            return None
    return str(int(value)) if value == int(value) and abs(value) < 1e15 else repr(value)


def choice_of(answer: str, choices: list[str]) -> str | None:
    """The option an answer names: ``(c) wooded area``, ``(c)``, ``c`` or the option's text."""
    answer = _strip_end(answer)
    m = re.match(r"\(([a-zA-Z])\)", answer) or re.fullmatch(r"([a-zA-Z])", answer)
    if m:
        i = ord(m.group(1).lower()) - ord("a")
        return choices[i] if 0 <= i < len(choices) else None
    lowered = [c.lower() for c in choices]
    if answer.lower() in lowered:
        return choices[lowered.index(answer.lower())]
    return None


def class_of(answer: str, classes: list[str]) -> str | None:
    """The one class the answer names (whole words, any case); None for none or several."""
    answer = _strip_end(answer)
    for c in classes:
        if answer.lower() == c.lower():
            return c
    named = [c for c in classes if re.search(rf"(?<!\w){re.escape(c.lower())}(?!\w)", answer.lower())]
    return named[0] if len(named) == 1 else None


def parse_reply(text: str, kind: str, *, marker: str = DEFAULT_MARKER, choices: list[str] | None = None,
                classes: list[str] | None = None) -> Parsed:
    """The rationale and the answer in the label kind's form, or ``NOT_PARSED``."""
    got = split_reply(text, marker)
    if got is None:
        return NOT_PARSED
    rationale, answer = got
    if kind == "number":
        value = number_of(answer)
    elif kind == "choice":
        value = choice_of(answer, choices or [])
    elif kind == "class":
        value = class_of(answer, classes or [])
    else:
        value = _strip_end(answer) or None
    if not rationale or not value:
        return NOT_PARSED
    return Parsed(rationale, value)
