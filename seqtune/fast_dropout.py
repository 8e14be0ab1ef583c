"""Dropout for CPU training, 2.6x cheaper than torch's.

torch draws a CPU dropout mask with `bernoulli_`, one random number per element: on the 2-core machine of
BENCHMARKS.md its 20 calls per step took 21 % of a MiniLM training step (torch.profiler), more than any op but the
matrix products. Here one 64-bit draw (`random_`, the same seeded generator) gives four 16-bit lanes, and an
element is kept when its lane is at or above p x 2^16: the same Bernoulli(1 - p) mask, p quantised to 1/65536,
from a quarter of the draws. No library offers this, hence the few lines by hand. GPUs keep torch's fused kernels.

`use_fast_dropout(model)` swaps every `nn.Dropout` of a transformers model for `FastDropout` and routes its
attention through `attention_with_fast_dropout` (registered with transformers' AttentionInterface): with
dropout, the scaled dot-product attention written out, with the fast mask on the probabilities; without
(evaluation), transformers' own SDPA path unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

ATTENTION_NAME = "seqtune_cpu_dropout"


def keep_mask(shape: torch.Size, p: float, device: torch.device | None = None) -> torch.Tensor:
    """A boolean mask, True with probability 1 - p, from 16 random bits per element."""
    n = shape.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-2**63, 2**63 - 1)
    return bits.view(torch.int16)[:n].view(shape) >= round(p * 65536) - 32768


def fast_dropout(x: torch.Tensor, p: float, training: bool = True) -> torch.Tensor:
    if not training or p == 0.0:
        return x
    return x * (keep_mask(x.shape, p, x.device).to(x.dtype) * (1.0 / (1.0 - p)))


class FastDropout(nn.Dropout):
    """nn.Dropout with the fast mask (same `p`, same train/eval switch)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)


def attention_with_fast_dropout(module, query, key, value, attention_mask, dropout: float = 0.0,
                                scaling: float | None = None, **kwargs):
    """transformers' attention-function signature: (batch, heads, tokens, dim) in, (batch, tokens, heads, dim) out."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    causal = kwargs.get("is_causal", getattr(module, "is_causal", False))
    if dropout == 0.0 or causal or query.shape[1] != key.shape[1]:  # evaluation, a decoder's causal mask (often
        # implicit), grouped heads: transformers' own path
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    scores = torch.matmul(query, key.transpose(-1, -2)) * (scaling if scaling is not None else query.shape[-1] ** -0.5)
    if attention_mask is not None:  # SDPA's mask: boolean (True = attend) or additive
        scores = scores.masked_fill(~attention_mask, float("-inf")) if attention_mask.dtype == torch.bool \
            else scores + attention_mask
    probabilities = fast_dropout(torch.softmax(scores, dim=-1), dropout)
    return torch.matmul(probabilities.to(value.dtype), value).transpose(1, 2).contiguous(), None


def use_fast_dropout(model: nn.Module) -> str:
    """Swap the model's dropouts for fast ones, in place; returns what it did, for the log. Attention goes through
    the fast path when the model dispatches through transformers' attention interface with SDPA and is not causal
    (a decoder's causal attention keeps transformers' SDPA)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    swapped = 0
    for module in model.modules():
        for name, child in module.named_children():
            if type(child) is nn.Dropout:
                setattr(module, name, FastDropout(child.p, child.inplace))
                swapped += 1
    implementation = getattr(model.config, "_attn_implementation", None)
    causal = any(getattr(m, "is_causal", False) is True for m in model.modules())
    if implementation == "sdpa" and not causal:
        AttentionInterface.register(ATTENTION_NAME, attention_with_fast_dropout)
        ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION_NAME, sdpa_mask)
        model.set_attn_implementation(ATTENTION_NAME)
        attention = "attention probabilities through the fast mask"
    elif causal:
        attention = "causal attention left to transformers' SDPA (its own dropout)"
    else:
        attention = f"attention left to the family's own {implementation} implementation"
    return f"{swapped} dropout layers swapped; {attention}"
