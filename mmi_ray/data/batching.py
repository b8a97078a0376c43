"""Tokenise once, then cut deterministic, length-bucketed two-task batches.

The batch order of an epoch is a pure function of (seed, epoch), so a restored run that knows its
(epoch, cursor) sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from ..losses import IGNORE
from .examples import Example

LABEL_PREFIX = "predict: "
RATIONALE_PREFIX = "explain: "


@dataclass
class Tokenized:
    """Token id lists, one entry per example (eos included, truncated to the configured lengths)."""

    predict_ids: list[list[int]]
    explain_ids: list[list[int]]
    label_ids: list[list[int]]
    rationale_ids: list[list[int]]
    has_rationale: list[bool] | None = None
    """Per example, whether it trains the rationale task and the MI term (None: every one does)."""

    def __len__(self) -> int:
        return len(self.predict_ids)


def _ids(tokenizer, texts: list[str], max_length: int) -> list[list[int]]:
    if not texts:
        return []
    return tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]


SEPARATOR = "\n"
"""Ends a decoder-only student's prompt (without a chat template): its continuation starts after it."""


@dataclass(frozen=True)
class Prompts:
    """How a task's text becomes the student's token ids: one place for training, evaluation,
    ``predict`` and ``evaluate``.

    A seq2seq student (``causal`` False) reads ``prefix + input`` as its tokenizer encodes it (T5's
    appends EOS) and its targets likewise. A decoder-only student reads a prompt, ``prefix + input``
    and ``SEPARATOR`` as its tokenizer encodes them (a BOS where it adds one), or with ``chat`` the
    tokenizer's chat template around ``prefix + input`` as one user turn with the generation prompt
    after it; its continuation is the target's tokens without special tokens, then EOS, so that
    generation stops where training ended."""

    tokenizer: object
    causal: bool = False
    chat: bool = False

    def inputs(self, prefix: str, texts: list[str], max_length: int) -> list[list[int]]:
        if not texts:
            return []
        tok = self.tokenizer
        if not self.causal:
            return _ids(tok, [prefix + t for t in texts], max_length)
        if self.chat:
            return [tok.apply_chat_template([{"role": "user", "content": prefix + t}], add_generation_prompt=True,
                                            tokenize=True, return_dict=False)[:max_length] for t in texts]
        return _ids(tok, [prefix + t + SEPARATOR for t in texts], max_length)

    def targets(self, texts: list[str], max_length: int) -> list[list[int]]:
        if not texts:
            return []
        if not self.causal:
            return _ids(self.tokenizer, texts, max_length)
        ids = self.tokenizer(texts, add_special_tokens=False, truncation=True, max_length=max_length - 1)["input_ids"]
        return [list(i) + [self.tokenizer.eos_token_id] for i in ids]


def prompts_for(model_cfg, tokenizer) -> Prompts:
    """The encoding of the student ``model_cfg`` names (its kind read as ``build_student`` reads it)."""
    from ..model import student_kind

    return Prompts(tokenizer, causal=student_kind(model_cfg) == "causal", chat=model_cfg.chat_template)


def predict_inputs(examples: list[Example], prompts: Prompts, max_source: int) -> list[list[int]]:
    """Only the label-task inputs (``predict: x``): what evaluation generates from."""
    return prompts.inputs(LABEL_PREFIX, [e.input for e in examples], max_source)


def tokenize(examples: list[Example], prompts: Prompts, max_source: int, max_target: int,
             label_type: str = "gold") -> Tokenized:
    inputs = [e.input for e in examples]
    labels = [e.teacher_label if label_type == "teacher" else e.label for e in examples]
    return Tokenized(
        predict_ids=predict_inputs(examples, prompts, max_source),
        explain_ids=prompts.inputs(RATIONALE_PREFIX, inputs, max_source),
        label_ids=prompts.targets(labels, max_target),
        rationale_ids=prompts.targets([e.rationale for e in examples], max_target),
        has_rationale=None if all(e.teaches_rationale for e in examples) else [e.teaches_rationale for e in examples],
    )


def epoch_batches(tok: Tokenized, batch_size: int, seed: int, epoch: int, bucket: bool,
                  bucket_span: int = 50, group: int = 1) -> list[list[int]]:
    """Full batches of example indices for one epoch (the last partial batch is dropped).

    With ``bucket``, each window of ``bucket_span`` batches is sorted by input length, then by
    rationale length, before it is cut, and the batches are shuffled again afterwards, in runs of
    ``group`` neighbours (the micro-batches of one optimizer step across workers), so that workers
    stepping together get batches of about the same length and none waits for a longer one.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(tok)))
    rng.shuffle(order)
    if bucket:
        window = batch_size * bucket_span
        sorted_order = []
        for start in range(0, len(order), window):
            chunk = order[start : start + window]
            chunk.sort(key=lambda i: (len(tok.explain_ids[i]) // 8, len(tok.rationale_ids[i])))
            sorted_order.extend(chunk)
        order = sorted_order
    batches = [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
    if bucket:
        runs = [batches[i : i + group] for i in range(0, len(batches), group)]
        rng.shuffle(runs)
        batches = [b for run in runs for b in run]
    return batches


def pad(seqs: list[list[int]], value: int) -> torch.Tensor:
    n = max(len(s) for s in seqs)
    out = torch.full((len(seqs), n), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def padded(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs padded on the right, and their attention mask from each row's length: not ``ids !=
    pad_id``, since a tokenizer that pads with its EOS (Llama 3's have no pad token) may hold that
    token in the prompt itself (its chat template ends the user's turn with it)."""
    ids = pad(seqs, pad_id)
    lengths = torch.tensor([len(s) for s in seqs])
    return ids, torch.arange(ids.size(1)).unsqueeze(0) < lengths.unsqueeze(1)


def collate(tok: Tokenized, idx: list[int], pad_id: int, with_rationale: bool = True) -> dict[str, torch.Tensor]:
    """Two separately padded inputs (label and rationale task) and their targets; ``rationale_rows``
    ([B] bool) where some rows train the label task only."""
    pred, pred_mask = padded([tok.predict_ids[i] for i in idx], pad_id)
    batch = {
        "predict_ids": pred,
        "predict_mask": pred_mask,
        "label_ids": pad([tok.label_ids[i] for i in idx], IGNORE),
    }
    if with_rationale:
        expl, expl_mask = padded([tok.explain_ids[i] for i in idx], pad_id)
        batch.update(
            explain_ids=expl,
            explain_mask=expl_mask,
            rationale_ids=pad([tok.rationale_ids[i] for i in idx], IGNORE),
        )
        if tok.has_rationale is not None and not all(tok.has_rationale[i] for i in idx):
            batch["rationale_rows"] = torch.tensor([tok.has_rationale[i] for i in idx])  # only where some lack one
    return batch


class BatchStream:
    """Yields the batches of one worker, step after step, across epochs, resumable.

    Every optimizer step uses ``world * accum`` consecutive batches of the epoch's list; worker
    ``rank`` takes micro-batch ``k`` of the step from position ``k * world + rank``. ``position``
    (epoch, cursor) is what a checkpoint stores.
    """

    def __init__(self, tok: Tokenized, batch_size: int, seed: int, bucket: bool, world: int, rank: int, accum: int):
        self.tok, self.batch_size, self.seed, self.bucket = tok, batch_size, seed, bucket
        self.world, self.rank, self.accum = world, rank, accum
        per_step = world * accum
        n_batches = len(tok) // batch_size
        if n_batches < per_step:
            raise ValueError(
                f"{len(tok)} training examples make {n_batches} batches of {batch_size}, "
                f"but one optimizer step needs {per_step} (workers x grad_accum_steps)"
            )
        self.epoch, self.cursor = 0, 0
        self._batches = self._epoch(0)

    def _epoch(self, epoch: int) -> list[list[int]]:
        return epoch_batches(self.tok, self.batch_size, self.seed, epoch, self.bucket, group=self.world * self.accum)

    @property
    def position(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor}

    def seek(self, epoch: int, cursor: int) -> None:
        self.epoch, self.cursor = epoch, cursor
        self._batches = self._epoch(epoch)

    def next_step(self) -> list[list[int]]:
        """Index lists of this worker's micro-batches for the next optimizer step."""
        per_step = self.world * self.accum
        if self.cursor + per_step > len(self._batches):
            self.seek(self.epoch + 1, 0)
        window = self._batches[self.cursor : self.cursor + per_step]
        self.cursor += per_step
        return [window[k * self.world + self.rank] for k in range(self.accum)]
