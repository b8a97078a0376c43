"""Loss terms of MI chain-of-thought distillation, and the MI estimator registry.

``L = label_weight * CE(label) + rationale_weight * CE(rationale) + mi_weight * L_mi``.
Every estimator maps the two passes' outputs to ``MIResult(loss, estimate)``: the term to
minimise and an MI estimate in nats (a lower bound for the contrastive/learned ones).
Plain PyTorch: unit tests call it without Ray.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

IGNORE = -100


@dataclass
class PassOutput:
    """What one forward pass (label or rationale task) gives the estimators."""

    logits: Tensor  # [B, T, V] decoder logits
    mask: Tensor  # [B, T] bool, True at real (non-padded) target positions
    hidden: Tensor | None = None  # [B, T, D] last decoder hidden state (learned critics only)
    pooled: Tensor | None = None  # [B, V] max over positions of the softmax (``maxpool``, from ce_and_maxpool)

    def rows(self, keep: Tensor) -> PassOutput:
        """The rows a ``[B]`` bool marks."""
        pick = lambda t: None if t is None else t[keep]  # noqa: E731
        return PassOutput(self.logits[keep], self.mask[keep], pick(self.hidden), pick(self.pooled))


@dataclass
class MIResult:
    loss: Tensor  # scalar, to be minimised
    estimate: Tensor  # scalar, MI estimate in nats (detached)


def token_ce(logits: Tensor, labels: Tensor) -> Tensor:
    """T5's token-level cross-entropy: mean over non-padded target positions."""
    return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=IGNORE)


def soft_ce(logits: Tensor, target: Tensor) -> Tensor:
    """``nn.CrossEntropyLoss()(logits, target)`` with probability targets (mean over the batch): the
    same value and gradient, but summed over classes row by row first, so the value does not depend on
    the thread count (torch's own sums all ``[B, V]`` products at once, and a CPU sum that long is
    split by thread: 1, 2 and 4 threads gave three last bits)."""
    return -(target * torch.log_softmax(logits, dim=-1)).sum(-1).mean()  # [B] -> []


def maxpool_ce(label_logits: Tensor, rationale_logits: Tensor) -> Tensor:
    """The MI term as the authors' released code computes it, quirks included.

    Label side detached; softmax then max-pool over ALL target positions (padding not masked);
    the pooled rationale probabilities are fed to ``CrossEntropyLoss`` as logits with the pooled
    (unnormalised) label probabilities as soft targets, averaged over the batch.
    """
    p = torch.softmax(label_logits.detach().float(), dim=-1)  # [B, Tl, V]
    e = torch.softmax(rationale_logits.float(), dim=-1)  # [B, Tr, V]
    p1 = p.max(dim=1).values  # [B, V]
    e1 = e.max(dim=1).values  # [B, V]
    return soft_ce(e1, p1)  # CrossEntropyLoss()(e1, p1), as released


CHUNK_ELEMENTS = 1 << 25
"""Largest ``[b, T, V]`` slice the fused CE + max-pool works on at once (128 MB in float32)."""


class _CEMaxPool(torch.autograd.Function):
    """Token cross-entropy and the max-pooled softmax ``max_t softmax(x)[b, t, :]`` from one pass.

    Forward: per batch slice, ``log p = x - logsumexp(x)`` (what the cross-entropy computes anyway),
    the cross-entropy from it, and the max over positions of ``log p`` (its argmax kept): the pooled
    probabilities are ``exp`` of that ``[B, V]`` maximum, so no ``[B, T, V]`` softmax is kept, or
    made twice. Saved for backward: the logits (alive for the cross-entropy anyway), the ``[B, T]``
    log-normalisers and the ``[B, V]`` argmax.

    Backward: with ``s = softmax(x)`` recomputed once per slice, the gradient is
    ``s * (c_ce - sum_w) - onehot_ce + w``, where the pooled term's ``w`` is non-zero only at each
    ``(b, argmax_t, v)``: ``g_pool * pooled``, scattered, and ``sum_w`` its ``[B, T]`` sums. The same
    work as the cross-entropy's own backward, plus two scatters of ``[B, V]`` and ``[B, T]``.
    """

    @staticmethod
    def forward(ctx, logits: Tensor, labels: Tensor):
        b_, t_, v_ = logits.shape
        valid = labels.ne(IGNORE)
        target = labels.clamp_min(0)
        lse = logits.new_empty((b_, t_), dtype=torch.float32)
        log_pooled = logits.new_empty((b_, v_), dtype=torch.float32)
        arg = torch.empty((b_, v_), dtype=torch.long, device=logits.device)
        nll = logits.new_zeros((), dtype=torch.float32)
        step = max(1, CHUNK_ELEMENTS // max(1, t_ * v_))
        for b0 in range(0, b_, step):
            sl = slice(b0, b0 + step)
            x = logits[sl].float()
            logp = torch.log_softmax(x, dim=-1)  # [b, T, V]
            at = target[sl].unsqueeze(-1)
            picked = logp.gather(-1, at).squeeze(-1)  # log p of the target token
            lse[sl] = x.gather(-1, at).squeeze(-1) - picked  # logsumexp(x), read off at the target
            nll -= (picked * valid[sl]).sum(-1).sum()  # by row first: the same at any thread count
            log_pooled[sl], arg[sl] = logp.max(dim=1)
        n = valid.sum().clamp_min(1)
        ctx.save_for_backward(logits, labels, lse, arg, log_pooled)
        ctx.set_materialize_grads(False)
        return nll / n, log_pooled.exp()

    @staticmethod
    def backward(ctx, g_ce: Tensor | None, g_pool: Tensor | None):
        logits, labels, lse, arg, log_pooled = ctx.saved_tensors
        if g_ce is None and g_pool is None:
            return None, None
        b_, t_, v_ = logits.shape
        valid = labels.ne(IGNORE)
        target = labels.clamp_min(0)
        c_ce = (valid * (g_ce.float() / valid.sum().clamp_min(1)) if g_ce is not None
                else torch.zeros((b_, t_), dtype=torch.float32, device=logits.device))  # g / n where counted
        coef = c_ce
        w = None
        if g_pool is not None:
            w = g_pool.float() * log_pooled.exp()  # [B, V]: the pooled term's gradient at each argmax
            coef = coef.scatter_add(1, arg, -w)  # minus sum_w[b, t]
        # written in place, slice by slice, into one buffer of the logits' own dtype: each fresh [B, T, V]
        # tensor costs a pass of page faults, and a bf16 student then holds no float32 [B, T, V] copy
        # beside its bf16 gradient (one float32 slice at a time, at most CHUNK_ELEMENTS)
        grad = torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)
        in_place = logits.dtype == torch.float32
        step = max(1, CHUNK_ELEMENTS // max(1, t_ * v_))
        for b0 in range(0, b_, step):
            sl = slice(b0, b0 + step)
            g = grad[sl] if in_place else torch.empty(grad[sl].shape, dtype=torch.float32, device=logits.device)
            torch.sub(logits[sl], lse[sl].unsqueeze(-1), out=g)
            g.exp_().mul_(coef[sl].unsqueeze(-1))  # s * (c_ce - sum_w)
            if g_ce is not None:  # - onehot at the target, for the positions the cross-entropy counts
                g.scatter_add_(-1, target[sl].unsqueeze(-1), -c_ce[sl].unsqueeze(-1))
            if w is not None:  # + w at (b, argmax_t, v)
                g.scatter_add_(1, arg[sl].unsqueeze(1), w[sl].unsqueeze(1))
            if not in_place:
                grad[sl].copy_(g)  # rounded to the logits' dtype as .to() rounds
        return grad, None


def ce_and_maxpool(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """(``token_ce(logits, labels)``, ``softmax(logits).max(dim=1).values``) from one pass over the
    ``[B, T, V]`` logits; values and gradients equal those of the two computed apart."""
    return _CEMaxPool.apply(logits, labels)


def _contrastive_estimate(scores: Tensor) -> Tensor:
    """InfoNCE bound ``log B - CE(scores, diagonal)`` for a [B, B] score matrix (rows: rationale i,
    columns: label j)."""
    b = scores.size(0)
    target = torch.arange(b, device=scores.device)
    return math.log(b) - F.cross_entropy(scores.float(), target)


def masked_mean(hidden: Tensor, mask: Tensor) -> Tensor:
    m = mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1.0)  # [B, D]


class MaxPoolMI(nn.Module):
    """``maxpool``: the released estimator, exactly. Its estimate contrasts the same score
    (``-CE(e1_i, p1_j)``) over the batch, i.e. an InfoNCE bound with that fixed critic. When the
    passes bring their pooled probabilities (``PassOutput.pooled``, from ``ce_and_maxpool``), no
    ``[B, T, V]`` softmax is computed here at all."""

    learned = False
    needs_hidden = False
    pools = True
    """The passes may compute ``pooled`` with their cross-entropy (mmi_ray/distill.py)."""

    def forward(self, label: PassOutput, rationale: PassOutput) -> MIResult:
        if label.pooled is None or rationale.pooled is None:  # the released formula, as written
            loss = maxpool_ce(label.logits, rationale.logits)
            with torch.no_grad():
                p1 = torch.softmax(label.logits.float(), -1).max(1).values  # [B, V]
                e1 = torch.softmax(rationale.logits.float(), -1).max(1).values  # [B, V]
        else:
            p1, e1 = label.pooled.detach(), rationale.pooled
            loss = soft_ce(e1, p1)  # the pooled probabilities as logits, as released
            e1 = e1.detach()
        with torch.no_grad():
            scores = torch.log_softmax(e1, -1) @ p1.T  # [B, B]: sum_v p1_j[v] log_softmax(e1_i)[v]
            est = _contrastive_estimate(scores)
        return MIResult(loss, est)


class MaskedMaxPoolMI(nn.Module):
    """``maxpool_masked``: the corrected variant. Padding excluded from the pooling, pooled
    distributions renormalised, and a true cross-entropy ``-sum p_hat log e_hat``."""

    learned = False
    needs_hidden = False

    @staticmethod
    def _pooled_log(logits: Tensor, mask: Tensor) -> Tensor:
        logp = torch.log_softmax(logits.float(), -1)  # [B, T, V]
        logp = logp.masked_fill(~mask.unsqueeze(-1), float("-inf"))
        pooled = logp.max(dim=1).values  # [B, V] log of max-pooled probabilities
        return pooled - torch.logsumexp(pooled, -1, keepdim=True)  # renormalised

    def forward(self, label: PassOutput, rationale: PassOutput) -> MIResult:
        log_p = self._pooled_log(label.logits.detach(), label.mask)  # [B, V]
        log_e = self._pooled_log(rationale.logits, rationale.mask)  # [B, V]
        p = log_p.exp()
        loss = -(p * log_e).sum(-1).mean()
        with torch.no_grad():
            est = _contrastive_estimate(log_e @ p.T)
        return MIResult(loss, est)


def _mlp(d_in: int, hidden: int, d_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))


class InfoNCEMI(nn.Module):
    """``infonce``: separable learned critic ``f(z_r, z_l) = g(z_r) . h(z_l)`` on mask-aware mean-
    pooled decoder states, contrasted over the batch. ``log B - L_nce`` bounds the MI from below."""

    learned = True
    needs_hidden = True

    def __init__(self, d_model: int, critic_size: int, detach_label: bool = True):
        super().__init__()
        self.g = _mlp(d_model, critic_size, critic_size)
        self.h = _mlp(d_model, critic_size, critic_size)
        self.detach_label = detach_label

    def forward(self, label: PassOutput, rationale: PassOutput) -> MIResult:
        z_l = masked_mean(label.hidden.float(), label.mask)  # [B, D]
        if self.detach_label:
            z_l = z_l.detach()
        z_r = masked_mean(rationale.hidden.float(), rationale.mask)  # [B, D]
        scores = self.g(z_r) @ self.h(z_l).T / math.sqrt(self.g[-1].out_features)  # [B, B]
        target = torch.arange(scores.size(0), device=scores.device)
        loss = F.cross_entropy(scores, target)
        return MIResult(loss, (math.log(scores.size(0)) - loss).detach())


class NWJMI(nn.Module):
    """``nwj``: joint learned critic ``T(z_r, z_l)`` (an MLP on the concatenation) with the
    Nguyen-Wainwright-Jordan bound ``E_joint[T] - e^-1 E_marginal[e^T]`` over all batch pairs."""

    learned = True
    needs_hidden = True

    def __init__(self, d_model: int, critic_size: int, detach_label: bool = True):
        super().__init__()
        self.t = _mlp(2 * d_model, critic_size, 1)
        self.detach_label = detach_label

    def forward(self, label: PassOutput, rationale: PassOutput) -> MIResult:
        z_l = masked_mean(label.hidden.float(), label.mask)  # [B, D]
        if self.detach_label:
            z_l = z_l.detach()
        z_r = masked_mean(rationale.hidden.float(), rationale.mask)  # [B, D]
        b = z_r.size(0)
        pairs = torch.cat([z_r.unsqueeze(1).expand(b, b, -1), z_l.unsqueeze(0).expand(b, b, -1)], -1)
        t = self.t(pairs).squeeze(-1)  # [B, B]: T(z_r_i, z_l_j)
        joint = t.diagonal().mean()
        if b > 1:
            off = ~torch.eye(b, dtype=torch.bool, device=t.device)
            marginal = torch.exp(t[off].clamp(max=30.0) - 1.0).mean()
        else:
            marginal = torch.exp(t.clamp(max=30.0) - 1.0).mean()
        bound = joint - marginal
        return MIResult(-bound, bound.detach())


MI_ESTIMATORS = {
    "maxpool": MaxPoolMI,
    "maxpool_masked": MaskedMaxPoolMI,
    "infonce": InfoNCEMI,
    "nwj": NWJMI,
}


def build_estimator(name: str, d_model: int, critic_size: int, detach_label: bool = True) -> nn.Module:
    cls = MI_ESTIMATORS[name]
    if cls.learned:
        return cls(d_model, critic_size, detach_label)
    return cls()
