"""Label metrics: exact match for the DSS text labels (as the papers' code scores them), answers
matched as people mean them for your own data (``answer``), numeric equality for equations.

Equations are evaluated by a small arithmetic parser over Python's ``ast`` (numbers, + - * / // %
**, parentheses); nothing is ever executed, so model output such as ``__import__('os')`` is simply
a wrong answer. Arithmetic is in floats, and a value that leaves the finite floats is a wrong
answer at once: any text scores in microseconds and never raises (``99999**64``, or towers such as
``(((9**64)**64)**64)**64``, which exact integers would take seconds and gigabytes to compute).
"""

from __future__ import annotations

import ast
import math
import operator
import re
import warnings
from collections.abc import Sequence

_BINOPS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}
MAX_EQUATION_CHARS = 500
MAX_EXPONENT = 64


class _Reject(Exception):
    pass


def _finite(value) -> float:
    if isinstance(value, complex) or not math.isfinite(value):
        raise _Reject("not a finite real number")
    return value


def _eval_node(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _eval_node(node.body)
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _finite(float(node.value))  # a 400-digit integer raises OverflowError: rejected
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left, right = _eval_node(node.left), _eval_node(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > MAX_EXPONENT:
            raise _Reject("exponent too large")
        return _finite(_BINOPS[type(node.op)](left, right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval_node(node.operand))
    raise _Reject(type(node).__name__)


def safe_arith(text: str) -> float | None:
    """The value of an arithmetic expression, or None if it is anything else (or fails)."""
    if not isinstance(text, str):
        return None
    text = text.strip()
    if not text or len(text) > MAX_EQUATION_CHARS:
        return None
    try:
        with warnings.catch_warnings():  # e.g. SyntaxWarning on "1 is 1": still just not an equation
            warnings.simplefilter("ignore")
            tree = ast.parse(text, mode="eval")
        return float(_eval_node(tree))
    except (SyntaxError, ValueError, TypeError, ZeroDivisionError, OverflowError, RecursionError, MemoryError,
            _Reject):
        return None


def equation_equal(pred: str, gold: str) -> bool:
    """True when both parse to the same number (a failed parse on either side is wrong)."""
    a, b = safe_arith(pred), safe_arith(gold)
    if a is None or b is None:
        return False
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def text_equal(pred: str, gold: str) -> bool:
    return pred.strip() == gold.strip()


_INLINE_CHOICE = re.compile(r"(?:^|\s)\(([a-z])\)\s*(.+?)(?=\s+\([a-z]\)\s|\s*\n|\s*$)", re.I | re.M)
_MARKUP = re.compile(r"[*_`]")
_LETTER_ALONE = re.compile(r"\(?([a-z])\)?[.:]?")
_LETTER_FIRST = re.compile(r"(?:\(([a-z])\)|([a-z])[).:])\s+(.+)", re.S)
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_AROUND = " \t\n.,;:!?\"'()[]{}"


def inline_choices(question: str) -> dict[str, str]:
    """The options a question lists inline, by letter: ``(a) ignore (b) enforce`` or one per line
    (as ``data.custom`` writes choice questions). Fewer than two, or letters not from ``a`` in
    order: none (a stray ``(b)`` in a question is not a list)."""
    found = [(m.group(1).lower(), m.group(2).strip()) for m in _INLINE_CHOICE.finditer(question or "")]
    letters = [k for k, _ in found]
    if len(found) < 2 or letters != [chr(ord("a") + i) for i in range(len(found))]:
        return {}
    return dict(found)


def normalize_answer(text: str, choices: dict[str, str] | None = None) -> str:
    """An answer as question-answering benchmarks compare it (SQuAD's rule, plus markup and choice
    letters): markup (``**``, ``__``, ``*``, ``_``, backticks) removed; lower case; a choice letter
    alone (``c``, ``(c)``, ``C.``) becomes that option's text where the question lists options
    inline; a letter before the text (``(c) wooded area``, ``c) wooded area``) is dropped;
    punctuation around the answer stripped; the articles a / an / the removed; whitespace collapsed."""
    s = _MARKUP.sub("", text or "").strip().lower()
    if choices and (m := _LETTER_ALONE.fullmatch(s)) and m.group(1) in choices:
        s = _MARKUP.sub("", choices[m.group(1)]).strip().lower()
    elif (m := _LETTER_FIRST.fullmatch(s)) and (not choices or (m.group(1) or m.group(2)) in choices):
        s = m.group(3)
    s = s.strip(_AROUND)
    return " ".join(_ARTICLES.sub(" ", s).split())


def answer_equal(pred: str, gold: str, question: str = "") -> bool:
    """Equal once normalised (``normalize_answer``), the question's inline options mapping a letter."""
    choices = inline_choices(question)
    return normalize_answer(pred, choices) == normalize_answer(gold, choices)


LABEL_KINDS = ("text", "answer", "equation")
"""``text``: exact match (the DSS datasets, as the papers' code scores them); ``answer``: normalised
(your own data's text, class and choice labels); ``equation``: by value."""


def label_correct(pred: str, gold: str, kind: str, question: str = "") -> bool:
    """Whether ``pred`` answers as ``gold`` under the label kind; ``question`` (the example's input)
    lets an ``answer`` map a choice letter to the option the question lists."""
    if kind == "equation":
        return equation_equal(pred, gold)
    if kind == "answer":
        return answer_equal(pred, gold, question)
    return text_equal(pred, gold)


def accuracy(preds: Sequence[str], golds: Sequence[str], kinds: Sequence[str] | str) -> float:
    """Share of correct predictions; ``kinds`` is one kind for all or one per example."""
    if len(preds) != len(golds):
        raise ValueError(f"{len(preds)} predictions for {len(golds)} labels")
    if not golds:
        return float("nan")
    if isinstance(kinds, str):
        kinds = [kinds] * len(golds)
    return sum(label_correct(p, g, k) for p, g, k in zip(preds, golds, kinds)) / len(golds)


def ece_equal_mass(confidences: Sequence[float], correct: Sequence[bool], preds: Sequence[str] = (),
                   golds: Sequence[str] = (), bins: int = 100) -> float:
    """Expected calibration error as the MI paper's released code defines it (``calib_metrics.
    ece_equal_mass``): examples sorted by confidence (then prediction, then gold, as its tuple sort
    does) into ``bins`` bins of ``ceil(N / bins)`` examples, ``sum |accuracy - mean confidence| x
    size / N``. Below 100 examples every bin holds one. (The released code scores a first-token id
    against the whole tokenised label, which never matches; here ``correct`` is whether the full
    greedy answer is right.)"""
    n = len(confidences)
    if n == 0:
        return float("nan")
    preds = list(preds) or [""] * n
    golds = list(golds) or [""] * n
    rows = sorted(zip(confidences, preds, golds, correct), key=lambda r: (r[0], r[1], r[2]))
    per_bin = math.ceil(n / bins)
    total = 0.0
    for start in range(0, n, per_bin):
        chunk = rows[start:start + per_bin]
        acc = sum(bool(r[3]) for r in chunk) / len(chunk)
        conf = sum(r[0] for r in chunk) / len(chunk)
        total += abs(acc - conf) * len(chunk)
    return total / n


def ece_equal_width(confidences: Sequence[float], correct: Sequence[bool], bins: int = 15) -> float:
    """The usual equal-width ECE (15 bins, L1), binned exactly as torchmetrics' binary calibration
    error bins (``[b_i, b_i+1)`` over ``linspace(0, 1, bins + 1)``, 1.0 in a bin of its own; a test
    holds the two equal). Not torchmetrics itself: importing it costs every trial process ~5 s."""
    import numpy as np

    if len(confidences) == 0:
        return float("nan")
    conf = np.asarray(confidences, dtype=np.float64)
    ok = np.asarray([bool(c) for c in correct], dtype=np.float64)
    idx = np.searchsorted(np.linspace(0.0, 1.0, bins + 1), conf, side="right") - 1
    total = 0.0
    for b in np.unique(idx):
        sel = idx == b
        total += sel.sum() * abs(ok[sel].mean() - conf[sel].mean())
    return float(total / len(conf))
