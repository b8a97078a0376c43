"""Dropout that costs less on CPU, with the same semantics as ``torch.nn.functional.dropout``.

On CPU, drawing a dropout mask is the single largest cost of a small student's training step
(``bernoulli_`` was 40% of a tiny T5 step on CQA, mostly the attention-probability masks). Here
each element's keep/drop draw takes 16 random bits instead of a float draw: one 64-bit random word
gives four masks. An element is dropped with probability ``round(p * 2**16) / 2**16`` (within
2**-17 of ``p``) and kept ones are scaled by the inverse of the keep probability, so the output is
unbiased, as with ``F.dropout``. Draws come from torch's default generator, so seeding it
(``torch.manual_seed``) makes masks reproducible. On other devices, and in eval mode, this is
``F.dropout`` itself.

``install(model)`` swaps a transformers model's ``nn.Dropout`` modules for :class:`Dropout` and
routes a T5-family model's attention through :func:`attention` (transformers' eager attention with
this dropout). The training loop installs it for CPU runs only (``model.fast_dropout``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

_SCALE = 1 << 16
ATTENTION_NAME = "mmi_cpu_dropout"
T5_FAMILY = ("t5", "mt5", "umt5")  # attention signature with position_bias, as in modeling_t5


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """``F.dropout(x, p, training)`` with masks drawn 16 bits per element on CPU."""
    if not training or p <= 0.0:
        return x
    if x.device.type != "cpu" or not x.is_floating_point():
        return F.dropout(x, p, True)
    drop = round(p * _SCALE)
    if drop == 0:
        return x
    if drop >= _SCALE:
        return x * 0.0
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), 2**63 - 1)
    bits = words.view(torch.int16)[:n].view(x.shape)  # uniform over [-2**15, 2**15)
    keep = (bits >= drop - _SCALE // 2).to(x.dtype).mul_(_SCALE / (_SCALE - drop))
    return x * keep


_dropout = dropout  # for the functions below whose arguments are named "dropout"


class Dropout(nn.Module):
    """Drop-in for ``nn.Dropout`` (same ``p``, same train/eval behaviour)."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        self.p = p

    def forward(self, x: Tensor) -> Tensor:
        return _dropout(x, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}"


def attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
              scaling: float | None = None, dropout: float = 0.0, position_bias: Tensor | None = None, **kwargs):
    """transformers' eager T5 attention (scores + position bias + additive mask, softmax, dropout,
    values) with this module's :func:`dropout` in place of ``F.dropout``."""
    if not (dropout > 0.0 and module.training):
        from transformers.models.t5.modeling_t5 import eager_attention_forward

        return eager_attention_forward(module, query, key, value, attention_mask, scaling=scaling, dropout=0.0,
                                       position_bias=position_bias, **kwargs)
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if position_bias is not None:
        weights = weights + position_bias
    if attention_mask is not None:
        weights = weights + attention_mask
    weights = _dropout(F.softmax(weights, dim=-1), dropout, True)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def install(model: nn.Module) -> int:
    """Swap ``model``'s dropouts for :class:`Dropout` and, for T5-family models, its attention for
    :func:`attention` (eager attention and eager masks: for CPU training, where SDPA would draw its
    dropout masks with ``bernoulli_`` anyway). Returns how many dropout modules were swapped."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Dropout:
                setattr(parent, name, Dropout(child.p))
                swapped += 1
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) in T5_FAMILY:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, eager_mask

        AttentionInterface.register(ATTENTION_NAME, attention)
        AttentionMaskInterface.register(ATTENTION_NAME, eager_mask)  # unregistered names get no mask at all
        for sub in model.modules():  # every config object the model holds (encoder, decoder copies)
            c = getattr(sub, "config", None)
            if c is not None and hasattr(c, "_attn_implementation"):
                c._attn_implementation = ATTENTION_NAME
    return swapped
