"""One module that runs both task passes and returns every loss term (what DDP wraps)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from transformers import LogitsProcessor, LogitsProcessorList

from .config import LossConfig
from .losses import IGNORE, PassOutput, build_estimator, ce_and_maxpool, token_ce
from .model import d_model_of


@dataclass
class LossTerms:
    loss: Tensor
    label: Tensor
    rationale: Tensor
    mi: Tensor
    mi_estimate: Tensor

    def detached(self) -> dict[str, Tensor]:
        return {k: v.detach() for k, v in self.__dict__.items()}


class FirstStepConfidence(LogitsProcessor):
    """Reads the largest softmax probability of the first generation step's logits and leaves every
    step's logits as they are."""

    def __init__(self):
        self.confidence: Tensor | None = None

    def __call__(self, input_ids: Tensor, scores: Tensor) -> Tensor:
        if self.confidence is None:
            self.confidence = scores.float().softmax(-1).max(-1).values  # [B]
        return scores


class DistillModule(nn.Module):
    """Student + (optional) MI critic. ``forward(batch) -> LossTerms``.

    The label pass runs on ``predict: x``, the rationale pass on ``explain: x``, as two separately
    padded batches. A pass whose every use has weight 0 is skipped, and so is the MI term when
    ``mi_weight`` is 0: then the loss is exactly distilling step-by-step.
    """

    def __init__(self, student: nn.Module, loss_cfg: LossConfig):
        super().__init__()
        self.student = student
        self.cfg = loss_cfg
        self.use_mi = loss_cfg.mi_weight > 0
        self.use_rationale = loss_cfg.rationale_weight > 0 or self.use_mi
        self.estimator = (
            build_estimator(loss_cfg.mi_estimator, d_model_of(student), loss_cfg.critic_size, loss_cfg.detach_label)
            if self.use_mi
            else None
        )

    @property
    def lora(self) -> bool:
        """A student with LoRA adapters (peft): its own weights frozen."""
        return is_lora(self.student)

    def checkpoint_state(self) -> dict[str, Tensor]:
        """What a checkpoint holds: the whole module; with LoRA the trained tensors only (adapters and
        critic): the frozen student is rebuilt from ``model.name`` (the ``tiny`` preset from its seed)."""
        state = self.state_dict()
        if not self.lora:
            return state
        trained = {n for n, p in self.named_parameters() if p.requires_grad}
        return {k: v for k, v in state.items() if k in trained}

    def load_checkpoint_state(self, state: dict[str, Tensor]) -> None:
        """``checkpoint_state``'s tensors back in place; with LoRA every trained tensor must be there."""
        if not self.lora:
            self.load_state_dict(state)
            return
        missing, unexpected = self.load_state_dict(state, strict=False)
        trained = {n for n, p in self.named_parameters() if p.requires_grad}
        lost = sorted(set(missing) & trained)
        if lost or unexpected:
            raise RuntimeError(f"checkpoint does not fit this LoRA student: missing {lost[:3]}, unexpected {unexpected[:3]}")

    @property
    def causal(self) -> bool:
        """A decoder-only student: each task is its prompt followed by its continuation."""
        return is_causal(self.student)

    def _pass(self, input_ids: Tensor, mask: Tensor, labels: Tensor, hidden: bool,
              pool: bool = False) -> tuple[Tensor, PassOutput]:
        if self.causal:
            logits, h = self._causal_pass(input_ids, mask, labels, hidden)
        else:
            dec_in = self.student.prepare_decoder_input_ids_from_labels(labels=labels)
            out = self.student(
                input_ids=input_ids,
                attention_mask=mask,
                decoder_input_ids=dec_in,
                output_hidden_states=hidden,
                use_cache=False,
            )
            logits, h = out.logits, (out.decoder_hidden_states[-1] if hidden else None)  # [B, T, V], [B, T, D]
        return self._terms(logits, labels, h, pool)

    def _causal_pass(self, prompt: Tensor, prompt_mask: Tensor, labels: Tensor, hidden: bool) -> tuple[Tensor, Tensor | None]:
        """The continuation block of a decoder-only pass: ``[B, C, V]`` logits and ``[B, C, D]`` last
        hidden states at the positions that predict the ``C`` target columns, as a seq2seq decoder
        gives them. Prompts are moved to the left (``left_align``), so every continuation starts at
        one column and only those ``C`` positions go through the output layer (no ``[B, T, V]`` over
        the prompt); positions count from each row's first token, so a row's figures do not depend
        on how much padding the batch put before it."""
        pad_id = self.student.config.pad_token_id
        ids, attn, shift = left_align(prompt, prompt_mask, pad_id)
        p, c = ids.size(1), labels.size(1)
        cont = labels.ne(IGNORE)
        ids = torch.cat([ids, labels.masked_fill(~cont, pad_id)], 1)
        attn = torch.cat([attn, cont], 1)
        positions = (torch.arange(p + c, device=ids.device) - shift.unsqueeze(1)).clamp_min(0)
        keep = torch.arange(p - 1, p + c - 1, device=ids.device)  # position p - 1 + k predicts target k
        out = self.student(input_ids=ids, attention_mask=attn.long(), position_ids=positions,
                           output_hidden_states=hidden, use_cache=False, logits_to_keep=keep)
        return out.logits, (out.hidden_states[-1][:, p - 1 : p + c - 1] if hidden else None)

    def _terms(self, logits: Tensor, labels: Tensor, h: Tensor | None, pool: bool) -> tuple[Tensor, PassOutput]:
        if pool:  # the max-pool MI term's pooled softmax, from the cross-entropy's own pass
            ce, pooled = ce_and_maxpool(logits, labels)
            return ce, PassOutput(logits, labels.ne(IGNORE), h, pooled)
        return token_ce(logits, labels), PassOutput(logits, labels.ne(IGNORE), h)

    def forward(self, batch: dict[str, Tensor]) -> LossTerms:
        c = self.cfg
        hidden = self.estimator is not None and self.estimator.needs_hidden
        pool = getattr(self.estimator, "pools", False)
        label_ce, label_out = self._pass(batch["predict_ids"], batch["predict_mask"], batch["label_ids"], hidden, pool)
        zero = label_ce.new_zeros(())
        rat_ce, rat_out = zero, None
        # rows that train the label task only (data.rationales.keep: label_only): their rationale targets
        # ignored and their rows left out of the MI term; a batch with none such has no rationale_rows
        rows = batch.get("rationale_rows")
        some = rows is not None and bool(rows.any())  # a device read, on such batches only
        none = rows is not None and not some  # a batch of label-only rows: every term kept in the graph, weighed 0
        if self.use_rationale:
            targets = batch["rationale_ids"]
            if some:
                targets = targets.masked_fill(~rows.unsqueeze(1), IGNORE)
            rat_ce, rat_out = self._pass(batch["explain_ids"], batch["explain_mask"], targets, hidden, pool)
            if none:
                rat_ce = rat_ce * 0.0
        mi, est = zero, zero.new_full((), float("nan"))
        if self.estimator is not None:
            r = self.estimator(label_out.rows(rows), rat_out.rows(rows)) if some else self.estimator(label_out, rat_out)
            mi, est = (r.loss * 0.0 if none else r.loss), r.estimate  # the estimate stays a number to average
        loss = c.label_weight * label_ce + c.rationale_weight * rat_ce + c.mi_weight * mi
        return LossTerms(loss, label_ce, rat_ce, mi, est)

    @torch.no_grad()
    def predict_labels(self, input_ids: Tensor, mask: Tensor, max_new_tokens: int) -> tuple[Tensor, Tensor]:
        """Greedy label generation: (token ids, confidence), the confidence being the largest softmax
        probability of the first decoder step (the MI paper's calibration measure). Only that step's
        ``[B, V]`` logits are kept (``output_logits`` would hold every step's: 64 x [128, 32128] in
        fp32, about 1 GB, for the first one's sake)."""
        first = FirstStepConfidence()
        out = self.generate(input_ids, mask, max_new_tokens=max_new_tokens, logits_processor=LogitsProcessorList([first]))
        return out, first.confidence

    def generate(self, input_ids: Tensor, mask: Tensor, max_new_tokens: int, **kwargs) -> Tensor:
        return greedy(self.student, input_ids, mask, max_new_tokens, **kwargs)


def is_lora(model: nn.Module) -> bool:
    """A model with peft's LoRA adapters on it."""
    return hasattr(model, "peft_config")


def is_causal(model: nn.Module) -> bool:
    """A decoder-only model (its config says it is not an encoder-decoder)."""
    return not getattr(model.config, "is_encoder_decoder", False)


@torch.no_grad()
def greedy(model: nn.Module, input_ids: Tensor, mask: Tensor, max_new_tokens: int, **kwargs) -> Tensor:
    """Greedy generation from right-padded inputs, as training's evaluation and ``predict`` generate:
    a seq2seq model's decoder output; a decoder-only model's new tokens only, generated from its
    prompts moved to the left, with the KV cache."""
    if not is_causal(model):
        return model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                              do_sample=False, num_beams=1, **kwargs)
    ids, attn, _ = left_align(input_ids, mask, model.config.pad_token_id)
    out = model.generate(input_ids=ids, attention_mask=attn.long(), max_new_tokens=max_new_tokens,
                         do_sample=False, num_beams=1, use_cache=True, pad_token_id=model.config.pad_token_id,
                         **kwargs)
    return out[:, ids.size(1):]


def left_align(ids: Tensor, mask: Tensor, pad_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """Right-padded rows moved to the right edge (padding on the left, as decoder-only generation and
    a shared continuation column need): (ids, mask, each row's left padding)."""
    width = ids.size(1)  # the batch is padded to its longest row: no device-to-host read of the lengths
    shift = width - mask.sum(1)  # [B]
    src = torch.arange(width, device=ids.device).unsqueeze(0) - shift.unsqueeze(1)  # [B, width]
    valid = src.ge(0)
    out = ids.gather(1, src.clamp_min(0)).masked_fill(~valid, pad_id)
    return out, valid, shift
