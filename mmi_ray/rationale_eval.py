"""Rationale quality and faithfulness of a student's own ``explain:`` generations.

Quality: sacreBLEU's corpus BLEU-4 (13a tokenizer, ``effective_order``: n-gram orders that no
rationale is long enough to have are left out, so a right rationale under 4 tokens is not scored 0)
and mean ROUGE-L F1 (torchmetrics) against the teacher's rationales. Faithfulness: does the student's rationale reach the
answer the student itself predicts (``predict:``)? The answer a rationale states is read exactly on
the built-in families, and with the same parsers as the teacher's outputs on the DSS datasets. The
DSS release's rationale targets stop before "So the answer is ...", so a student trained on them
rarely states an answer: ``_rationale_answered`` says how often one could be read at all.
"""

from __future__ import annotations

import re

from .data.dss import DSS_DATASETS
from .metrics import label_correct

_STATED = {"arith": r"The answer is (-?\d+)\.", "choice": r"the answer is (\w+)\.", "nli": r"the answer is (\w+)\."}


def stated_answer(rationale: str, question: str, task: str) -> str | None:
    """The answer a rationale states, or None when it states none that can be read."""
    text = rationale.strip()
    if task == "props":  # "blue, small": the colour, or for "is it big?" whether it says big
        parts = [p.strip() for p in text.split(",")]
        if len(parts) < 2 or not parts[0]:
            return None
        if "color" in question:
            return parts[0]
        return {"big": "yes", "small": "no"}.get(parts[1].split()[0] if parts[1] else "")
    if task in _STATED:
        m = re.search(_STATED[task], text, flags=re.IGNORECASE)
        return m.group(1) if m else None
    if task in DSS_DATASETS:
        _, label = DSS_DATASETS[task].parse(text)
        return label or None
    return None


def score_rationales(records: list[tuple]) -> dict:
    """``records``: (generated rationale, teacher rationale, student's predicted label, gold label,
    kind, task, question). Returns BLEU (0-100), ROUGE-L F1, and the shares of rationales that state
    an answer, that state the gold one (``_true``) and that agree with the student's own label
    (``_faithful``), the last two over all scored examples."""
    from sacrebleu.metrics import BLEU
    from torchmetrics.functional.text.rouge import rouge_score

    if not records:
        return {}
    hyps = [r[0] for r in records]
    refs = [r[1] for r in records]
    out = {"bleu": float(BLEU(tokenize="13a", effective_order=True).corpus_score(hyps, [refs]).score),
           "rougeL": float(rouge_score(hyps, refs, rouge_keys="rougeL")["rougeL_fmeasure"])}
    stated = [stated_answer(h, q, task) for h, _, _, _, _, task, q in records]
    out["answered"] = sum(s is not None for s in stated) / len(records)
    out["true"] = sum(s is not None and label_correct(s, r[3], r[4], r[6]) for s, r in zip(stated, records)) / len(records)
    out["faithful"] = sum(s is not None and label_correct(s, r[2], r[4], r[6]) for s, r in zip(stated, records)) / len(records)
    return out
