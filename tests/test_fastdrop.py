"""The cheaper CPU dropout keeps F.dropout's semantics, and the model with it installed computes
what the stock model computes."""

import pytest
import torch

from mmi_ray import fastdrop


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_drop_rate_and_scale_match_dropout(p):
    x = torch.ones(2000, 1000)
    y = fastdrop.dropout(x, p)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < 0.002  # 2M draws: the standard error is ~3e-4
    kept = y[y != 0]
    assert torch.allclose(kept, torch.full_like(kept, 1 / (1 - p)), rtol=1e-4)
    assert abs(y.mean().item() - 1.0) < 0.003  # unbiased, like F.dropout


def test_masks_are_independent_across_elements_and_seeded():
    x = torch.ones(1000, 1000)
    torch.manual_seed(3)
    a = fastdrop.dropout(x, 0.5) == 0
    torch.manual_seed(3)
    b = fastdrop.dropout(x, 0.5) == 0
    assert torch.equal(a, b), "the default generator's seed fixes the masks"
    # neighbours (same 64-bit word) are independent: P(both dropped) ~ 0.25
    both = (a[:, 0::2] & a[:, 1::2]).float().mean().item()
    assert abs(both - 0.25) < 0.005


def test_eval_mode_and_p_zero_are_identity():
    x = torch.randn(5, 7)
    assert fastdrop.dropout(x, 0.3, training=False) is x and fastdrop.dropout(x, 0.0) is x
    m = fastdrop.Dropout(0.3).eval()
    assert torch.equal(m(x), x)


def _pair():
    from transformers import T5Config, T5ForConditionalGeneration

    c = T5Config(d_model=32, d_ff=64, num_layers=2, num_heads=4, d_kv=8, vocab_size=300, dropout_rate=0.1,
                 decoder_start_token_id=0)
    torch.manual_seed(0)
    a = T5ForConditionalGeneration(c)
    torch.manual_seed(0)
    b = T5ForConditionalGeneration(c)
    assert fastdrop.install(b) > 0
    ids = torch.randint(3, 300, (3, 20))
    mask = torch.ones_like(ids)
    mask[0, 12:] = 0  # padding must still be masked
    labels = torch.randint(3, 300, (3, 9))
    return a, b, ids, mask, labels


def test_installed_model_equals_stock_model_in_eval_and_generation():
    a, b, ids, mask, labels = _pair()
    a.eval()
    b.eval()
    la = a(input_ids=ids, attention_mask=mask, labels=labels).logits
    lb = b(input_ids=ids, attention_mask=mask, labels=labels).logits
    assert torch.allclose(la, lb, atol=1e-5)
    ga = a.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
    gb = b.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, do_sample=False)
    assert torch.equal(ga, gb)


def test_installed_model_trains_like_stock_model_without_dropout_noise():
    """With p ~ 0 no element is dropped: the training-mode forward and gradients match the stock model
    (masks, causal decoder attention and position bias all as in transformers' own code)."""
    a, b, ids, mask, labels = _pair()
    for m in (a, b):
        m.train()
        for mod in m.modules():
            if hasattr(mod, "p"):
                mod.p = 1e-9
            if isinstance(getattr(mod, "dropout", None), float):
                mod.dropout = 1e-9
    la = a(input_ids=ids, attention_mask=mask, labels=labels).loss
    lb = b(input_ids=ids, attention_mask=mask, labels=labels).loss
    la.backward()
    lb.backward()
    assert torch.allclose(la, lb, atol=1e-6)
    ga, gb = a.shared.weight.grad, b.shared.weight.grad
    assert torch.allclose(ga, gb, atol=1e-6)
