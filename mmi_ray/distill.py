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

    def _pass(self, input_ids: Tensor, mask: Tensor, labels: Tensor, hidden: bool,
              pool: bool = False) -> tuple[Tensor, PassOutput]:
        dec_in = self.student.prepare_decoder_input_ids_from_labels(labels=labels)
        out = self.student(
            input_ids=input_ids,
            attention_mask=mask,
            decoder_input_ids=dec_in,
            output_hidden_states=hidden,
            use_cache=False,
        )
        h = out.decoder_hidden_states[-1] if hidden else None  # [B, T, D]
        if pool:  # the max-pool MI term's pooled softmax, from the cross-entropy's own pass
            ce, pooled = ce_and_maxpool(out.logits, labels)
            return ce, PassOutput(out.logits, labels.ne(IGNORE), h, pooled)
        return token_ce(out.logits, labels), PassOutput(out.logits, labels.ne(IGNORE), h)

    def forward(self, batch: dict[str, Tensor]) -> LossTerms:
        c = self.cfg
        hidden = self.estimator is not None and self.estimator.needs_hidden
        pool = getattr(self.estimator, "pools", False)
        label_ce, label_out = self._pass(batch["predict_ids"], batch["predict_mask"], batch["label_ids"], hidden, pool)
        zero = label_ce.new_zeros(())
        rat_ce, rat_out = zero, None
        if self.use_rationale:
            rat_ce, rat_out = self._pass(batch["explain_ids"], batch["explain_mask"], batch["rationale_ids"], hidden,
                                         pool)
        mi, est = zero, zero.new_full((), float("nan"))
        if self.estimator is not None:
            r = self.estimator(label_out, rat_out)
            mi, est = r.loss, r.estimate
        loss = c.label_weight * label_ce + c.rationale_weight * rat_ce + c.mi_weight * mi
        return LossTerms(loss, label_ce, rat_ce, mi, est)

    @torch.no_grad()
    def predict_labels(self, input_ids: Tensor, mask: Tensor, max_new_tokens: int) -> tuple[Tensor, Tensor]:
        """Greedy label generation: (token ids, confidence), the confidence being the largest softmax
        probability of the first decoder step (the MI paper's calibration measure). Only that step's
        ``[B, V]`` logits are kept (``output_logits`` would hold every step's: 64 x [128, 32128] in
        fp32, about 1 GB, for the first one's sake)."""
        first = FirstStepConfidence()
        out = self.student.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                    do_sample=False, num_beams=1, logits_processor=LogitsProcessorList([first]))
        return out, first.confidence
