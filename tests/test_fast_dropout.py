"""The fast CPU dropout: the same Bernoulli masks, attention equal to SDPA's, training runs deterministic."""

from __future__ import annotations

import torch
from transformers import AutoConfig

from seqtune.fast_dropout import FastDropout, attention_with_fast_dropout, fast_dropout, keep_mask, use_fast_dropout


def test_keep_mask_is_bernoulli_with_the_asked_rate():
    torch.manual_seed(0)
    for p in (0.1, 0.5):
        mask = keep_mask(torch.Size([400, 1000]), p)
        assert abs(mask.float().mean().item() - (1 - p)) < 0.005
        # neighbouring elements (lanes of one 64-bit draw) are independent
        both = (mask[:, 0::2] & mask[:, 1::2]).float().mean().item()
        assert abs(both - (1 - p) ** 2) < 0.005


def test_fast_dropout_scales_kept_values_and_is_seeded():
    x = torch.ones(64, 128)
    torch.manual_seed(3)
    y = fast_dropout(x, 0.25)
    assert torch.unique(y).tolist() == [0.0, torch.tensor(4 / 3).item()]
    torch.manual_seed(3)
    assert torch.equal(fast_dropout(x, 0.25), y)
    assert torch.equal(fast_dropout(x, 0.25, training=False), x)
    assert abs(y.mean().item() - 1) < 0.05  # the expectation is kept


def test_attention_equals_sdpa_when_nothing_is_dropped():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(0)
    module = torch.nn.Module()
    module.is_causal = False
    q, k, v = (torch.randn(2, 4, 7, 8) for _ in range(3))
    mask = torch.ones(2, 1, 7, 7, dtype=torch.bool)
    mask[0, :, :, 5:] = False  # padding in the first row
    expected, _ = sdpa_attention_forward(module, q, k, v, mask, dropout=0.0, scaling=0.3)
    observed, _ = attention_with_fast_dropout(module, q, k, v, mask, dropout=1e-9, scaling=0.3)  # nothing dropped
    torch.testing.assert_close(observed, expected, rtol=1e-5, atol=1e-5)
    # a decoder's causal attention (no mask tensor: SDPA's is_causal) is left to transformers' own path
    module.is_causal = True
    causal, _ = sdpa_attention_forward(module, q, k, v, None, dropout=0.0, scaling=0.3)
    observed, _ = attention_with_fast_dropout(module, q, k, v, None, dropout=1e-9, scaling=0.3)
    torch.testing.assert_close(observed, causal, rtol=1e-4, atol=1e-4)


def test_use_fast_dropout_swaps_every_dropout_and_keeps_evaluation_unchanged(tiny_model, tmp_path):
    from seqtune import load_model, resolve_model_path

    checkpoint = resolve_model_path(tiny_model)
    config = AutoConfig.from_pretrained(checkpoint, num_labels=2)
    torch.manual_seed(0)
    plain = load_model(checkpoint, config)
    fast = load_model(checkpoint, config)
    fast.load_state_dict(plain.state_dict())
    swapped = sum(isinstance(m, torch.nn.Dropout) for m in plain.modules())
    assert use_fast_dropout(fast) == f"{swapped} dropout layers swapped; attention probabilities through the fast mask"
    assert not [m for m in fast.modules() if type(m) is torch.nn.Dropout]
    assert all(isinstance(m, FastDropout) for m in fast.modules() if isinstance(m, torch.nn.Dropout))
    batch = {"input_ids": torch.randint(5, 100, (3, 9)), "attention_mask": torch.ones(3, 9, dtype=torch.long)}
    batch["attention_mask"][0, 6:] = 0
    plain.eval(), fast.eval()
    torch.testing.assert_close(fast(**batch).logits, plain(**batch).logits)
    fast.train()
    torch.manual_seed(1)
    first = fast(**batch).logits
    torch.manual_seed(1)
    assert torch.equal(fast(**batch).logits, first)  # dropout draws from the seeded generator
    assert not torch.allclose(fast(**batch).logits, first)  # and differs from draw to draw
    fast.save_pretrained(str(tmp_path / "saved"))
    assert "seqtune" not in open(tmp_path / "saved" / "config.json").read()  # a plain model on disk
