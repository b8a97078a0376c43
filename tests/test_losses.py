import math

import pytest
import torch
import torch.nn.functional as F

from mmi_ray.config import LossConfig, ModelConfig
from mmi_ray.data.batching import Prompts, collate, tokenize
from mmi_ray.data.builtin import generate
from mmi_ray.distill import DistillModule
from mmi_ray.losses import MI_ESTIMATORS, NWJMI, InfoNCEMI, PassOutput, maxpool_ce, token_ce
from mmi_ray.model import build_seq2seq, build_tokenizer


def _hand_maxpool(P, E):
    """method.md section 2, written with plain Python loops."""
    B, _, V = P.shape
    total = 0.0
    for b in range(B):
        p1 = [max(math.exp(P[b, t, v]) / sum(math.exp(P[b, t, u]) for u in range(V)) for t in range(P.shape[1]))
              for v in range(V)]
        e1 = [max(math.exp(E[b, t, v]) / sum(math.exp(E[b, t, u]) for u in range(V)) for t in range(E.shape[1]))
              for v in range(V)]
        log_norm = math.log(sum(math.exp(x) for x in e1))
        total += -sum(p1[v] * (e1[v] - log_norm) for v in range(V))
    return total / B


def test_maxpool_ce_matches_hand_computation():
    g = torch.Generator().manual_seed(0)
    P = torch.randn(2, 3, 5, generator=g, dtype=torch.float64)
    E = torch.randn(2, 4, 5, generator=g, dtype=torch.float64)
    assert maxpool_ce(P, E).item() == pytest.approx(_hand_maxpool(P, E), rel=1e-6)


def test_maxpool_ce_known_value_with_uniform_logits():
    # all-zero logits: p1 = e1 = 1/V everywhere; CE(e1 as logits, p1) = sum(p1) * ln V = ln V
    V = 7
    val = maxpool_ce(torch.zeros(3, 2, V), torch.zeros(3, 5, V))
    assert val.item() == pytest.approx(math.log(V), rel=1e-6)


def test_maxpool_ce_reference_magnitude_at_t5_vocab():
    # method.md: with V = 32128 the term is about ln(V) * sum(p1), around 40 for short labels
    torch.manual_seed(0)
    P = torch.randn(2, 4, 32128) * 0.1
    E = torch.randn(2, 30, 32128) * 0.1
    p1_sum = torch.softmax(P, -1).max(1).values.sum(-1).mean().item()
    assert maxpool_ce(P, E).item() == pytest.approx(math.log(32128) * p1_sum, rel=0.01)


def test_maxpool_label_side_gets_no_gradient_and_padding_is_not_masked():
    P = torch.randn(2, 3, 6, requires_grad=True)
    E = torch.randn(2, 4, 6, requires_grad=True)
    maxpool_ce(P, E).backward()
    assert P.grad is None
    assert E.grad is not None and E.grad.abs().sum() > 0
    # the quirk: a change at a (would-be) padded last position still changes the value
    E2 = E.detach().clone()
    E2[:, -1, 0] += 20.0
    assert maxpool_ce(P.detach(), E2).item() != pytest.approx(maxpool_ce(P.detach(), E.detach()).item())


def _tiny_module(loss_cfg: LossConfig, seed: int = 0):
    mcfg = ModelConfig(d_model=32, d_ff=64, num_layers=1, num_heads=2, max_source_length=256, max_target_length=128)
    tok = build_tokenizer(mcfg)
    module = DistillModule(build_seq2seq(mcfg, tok, seed), loss_cfg)
    exs = generate(4, seed=1, tasks=["arith", "choice", "nli"], error_rate=0.0)
    t = tokenize(exs, Prompts(tok), 256, 128)
    return module, collate(t, list(range(4)), tok.pad_token_id)


@pytest.mark.parametrize("estimator", ["maxpool", "infonce"])
def test_label_only_rows_leave_the_rationale_task_and_the_mi_term_and_nothing_else(estimator):
    """data.rationales.keep: label_only marks rows (``rationale_rows``): the label term is the whole
    batch's; the rationale term is the cross-entropy over the other rows' rationale tokens and the MI
    term the estimator over those rows alone, from the same passes; a batch of such rows only keeps
    every term in the graph (DDP needs each parameter's gradient) at weight 0."""
    module, batch = _tiny_module(LossConfig(mi_weight=0.5, mi_estimator=estimator, critic_size=16))
    module.eval()
    rows = torch.tensor([True, False, True, False])
    terms = module({**batch, "rationale_rows": rows})
    assert torch.equal(terms.label, module(batch).label)
    with torch.no_grad():
        hidden = module.estimator.needs_hidden
        _, lab = module._pass(batch["predict_ids"], batch["predict_mask"], batch["label_ids"], hidden, False)
        _, rat = module._pass(batch["explain_ids"], batch["explain_mask"], batch["rationale_ids"], hidden, False)
    assert terms.rationale.item() == pytest.approx(token_ce(rat.logits[rows], batch["rationale_ids"][rows]).item(),
                                                   rel=1e-6)
    if estimator == "maxpool":
        assert terms.mi.item() == pytest.approx(maxpool_ce(lab.logits[rows], rat.logits[rows]).item(), rel=1e-6)
    else:  # the critic's negatives are the kept rows' only
        assert terms.mi.item() == pytest.approx(module.estimator(lab.rows(rows), rat.rows(rows)).loss.item(), rel=1e-6)
        assert terms.mi.item() != pytest.approx(module(batch).mi.item(), rel=1e-3)
    none = module({**batch, "rationale_rows": torch.zeros(4, dtype=torch.bool)})
    assert none.rationale.item() == 0.0 and none.mi.item() == 0.0 and math.isfinite(none.mi_estimate.item())
    assert none.loss.item() == pytest.approx(module.cfg.label_weight * none.label.item(), rel=1e-6)
    module.train()
    module({**batch, "rationale_rows": torch.zeros(4, dtype=torch.bool)}).loss.backward()
    assert all(p.grad is not None for p in module.parameters() if p.requires_grad)


def test_mi_weight_zero_is_dss_to_the_bit():
    module, batch = _tiny_module(LossConfig(mi_weight=0.0))
    module.eval()
    terms = module(batch)
    s = module.student
    out_l = s(input_ids=batch["predict_ids"], attention_mask=batch["predict_mask"], labels=batch["label_ids"])
    out_r = s(input_ids=batch["explain_ids"], attention_mask=batch["explain_mask"], labels=batch["rationale_ids"])
    dss = 0.5 * out_l.loss + 0.5 * out_r.loss
    assert torch.equal(terms.loss, dss)
    assert module.estimator is None and terms.mi.item() == 0.0


def test_label_only_skips_the_rationale_pass():
    module, batch = _tiny_module(LossConfig(rationale_weight=0.0, mi_weight=0.0, label_weight=1.0))
    module.eval()
    del batch["explain_ids"]  # would raise if the rationale pass ran
    terms = module(batch)
    assert torch.equal(terms.loss, terms.label) and terms.rationale.item() == 0.0


@pytest.mark.parametrize("name", ["infonce", "nwj"])
def test_learned_estimators_train_critic_and_student(name):
    module, batch = _tiny_module(LossConfig(mi_weight=1.0, mi_estimator=name, critic_size=16))
    terms = module(batch)
    terms.mi.backward()  # the MI term alone
    critic_grads = [p.grad for p in module.estimator.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in critic_grads)
    dec = module.student.decoder.block[0].layer[0].SelfAttention.q.weight.grad
    assert dec is not None and dec.abs().sum() > 0
    assert torch.isfinite(terms.mi_estimate)


@pytest.mark.parametrize("name", sorted(MI_ESTIMATORS))
def test_every_estimator_returns_loss_and_estimate(name):
    module, batch = _tiny_module(LossConfig(mi_weight=0.5, mi_estimator=name))
    terms = module(batch)
    assert terms.mi.dim() == 0 and torch.isfinite(terms.mi)
    assert not terms.mi_estimate.requires_grad and torch.isfinite(terms.mi_estimate)
    assert terms.loss.item() == pytest.approx((0.5 * terms.label + 0.5 * terms.rationale + 0.5 * terms.mi).item(), rel=1e-6)


def _fit_critic(est, dependent: bool, steps=300):
    torch.manual_seed(0)
    opt = torch.optim.Adam(est.parameters(), lr=3e-3)
    for _ in range(steps):
        z_l = torch.randn(64, 1, 8)
        z_r = z_l + 0.1 * torch.randn_like(z_l) if dependent else torch.randn_like(z_l)
        mask = torch.ones(64, 1, dtype=torch.bool)
        r = est(PassOutput(torch.zeros(64, 1, 2), mask, z_l), PassOutput(torch.zeros(64, 1, 2), mask, z_r))
        opt.zero_grad()
        r.loss.backward()
        opt.step()
    return r.estimate.item()


@pytest.mark.parametrize("cls", [InfoNCEMI, NWJMI])
def test_learned_bounds_see_dependence_and_not_independence(cls):
    dep = _fit_critic(cls(8, 32), dependent=True)
    ind = _fit_critic(cls(8, 32), dependent=False)
    assert dep > 1.5  # strongly dependent 8-d Gaussians: true MI is ~37 nats; InfoNCE caps at ln 64 = 4.16
    assert ind < 0.3
    if cls is InfoNCEMI:
        assert dep <= math.log(64) + 1e-6


def test_masked_variant_ignores_padding():
    est = MI_ESTIMATORS["maxpool_masked"]()
    P = torch.randn(2, 3, 6)
    E = torch.randn(2, 4, 6)
    mask_l = torch.tensor([[1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    mask_r = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.bool)
    a = est(PassOutput(P, mask_l), PassOutput(E, mask_r)).loss
    P2, E2 = P.clone(), E.clone()
    P2[0, 2] += 50.0
    E2[1, 3] -= 50.0
    b = est(PassOutput(P2, mask_l), PassOutput(E2, mask_r)).loss
    assert a.item() == pytest.approx(b.item(), rel=1e-6)
    # and it is a true cross-entropy of normalised distributions: >= 0
    assert a.item() >= 0 and F.softmax(P, -1).sum().item() > 0


@pytest.mark.parametrize("chunk", [1 << 25, 40])  # one slice, and a slice per batch row
def test_fused_cross_entropy_and_max_pool_equal_the_two_computed_apart(chunk, monkeypatch):
    """ce_and_maxpool: the cross-entropy, the pooled softmax, and the gradients of any mix of the two
    (the MI term's soft-target CE on the pooled values included) equal the released formula's."""
    import mmi_ray.losses as losses

    monkeypatch.setattr(losses, "CHUNK_ELEMENTS", chunk)
    g = torch.Generator().manual_seed(3)
    B, Tl, Tr, V = 5, 3, 9, 13
    xl = (3 * torch.randn(B, Tl, V, generator=g)).requires_grad_()
    xr = (3 * torch.randn(B, Tr, V, generator=g)).requires_grad_()
    yl, yr = torch.randint(0, V, (B, Tl), generator=g), torch.randint(0, V, (B, Tr), generator=g)
    yl[0, 2], yr[:, 6:] = -100, -100  # padding: not in the cross-entropy, still in the max-pool (released quirk)
    ref = 0.5 * losses.token_ce(xl, yl) + 0.7 * losses.token_ce(xr, yr) + 0.3 * maxpool_ce(xl, xr)
    ref_grads = torch.autograd.grad(ref, [xl, xr])
    ce_l, pool_l = losses.ce_and_maxpool(xl, yl)
    ce_r, pool_r = losses.ce_and_maxpool(xr, yr)
    assert torch.allclose(pool_r, torch.softmax(xr, -1).max(1).values, atol=1e-6)
    assert torch.allclose(ce_r, F.cross_entropy(xr.reshape(-1, V), yr.reshape(-1), ignore_index=-100), atol=1e-6)
    fused = 0.5 * ce_l + 0.7 * ce_r + 0.3 * torch.nn.CrossEntropyLoss()(pool_r, pool_l.detach())
    assert fused.item() == pytest.approx(ref.item(), abs=1e-6)
    for a, b in zip(ref_grads, torch.autograd.grad(fused, [xl, xr])):
        assert torch.allclose(a, b, atol=1e-6), (a - b).abs().max()
    # each output alone: the cross-entropy's gradient, and the pooled values' gradient
    _, pool_only = losses.ce_and_maxpool(xr, yr)
    w = torch.randn(B, V, generator=g)
    (ga,) = torch.autograd.grad((pool_only * w).sum(), [xr])
    (gb,) = torch.autograd.grad((torch.softmax(xr, -1).max(1).values * w).sum(), [xr])
    assert torch.allclose(ga, gb, atol=1e-6)


def test_maxpool_module_uses_the_fused_pass_and_gives_the_released_loss_and_gradients():
    """DistillModule with maxpool pools inside the cross-entropy pass; the loss, MI estimate and every
    parameter gradient equal the estimator computing the released formula from the logits."""
    cfg = LossConfig(mi_weight=0.5, mi_estimator="maxpool")
    module, batch = _tiny_module(cfg)
    module.eval()
    fused = module(batch)
    fused.loss.backward()
    fused_grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
    module.zero_grad()
    est = module.estimator
    module.estimator = type("Plain", (torch.nn.Module,), {"needs_hidden": False, "forward": lambda self, lab, rat: est(
        PassOutput(lab.logits, lab.mask), PassOutput(rat.logits, rat.mask))})()  # no pooled: the released formula
    plain = module(batch)
    plain.loss.backward()
    assert fused.loss.item() == pytest.approx(plain.loss.item(), rel=1e-6)
    assert fused.mi.item() == pytest.approx(plain.mi.item(), rel=1e-6)
    assert fused.mi_estimate.item() == pytest.approx(plain.mi_estimate.item(), abs=1e-5)
    for n, p in module.named_parameters():
        if p.grad is not None:
            assert torch.allclose(p.grad, fused_grads[n], atol=1e-6, rtol=1e-4), n
