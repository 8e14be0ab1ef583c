"""Parameter counts and an estimate of the memory a training step needs, logged before training so a user knows
before an out-of-memory error. An estimate, not a measurement: BENCHMARKS.md compares it with peak RSS."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class MemoryEstimate:
    parameters: int
    trainable: int
    weights: int  # bytes
    gradients: int
    optimizer: int
    activations: int | None  # None: an architecture whose shape the estimate does not know

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + (self.activations or 0)

    def describe(self, rows: int, tokens: int) -> str:
        activations = f"activations {_size(self.activations)} at {rows} rows x {tokens} tokens" \
            if self.activations is not None else "activations not estimated for this architecture"
        return (f"{_count(self.parameters)} parameters, {_count(self.trainable)} trainable; training memory about "
                f"{_size(self.total)} (weights {_size(self.weights)}, gradients {_size(self.gradients)}, AdamW "
                f"{_size(self.optimizer)}, {activations})")


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n:,}"


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def _shape(config) -> tuple[int, int, int] | None:
    """(layers, hidden size, attention heads) under the names the families use; None for an architecture that
    has none of them (FNet has no attention heads)."""
    config = config.get_text_config() if hasattr(config, "get_text_config") else config

    def first(*names):
        return next((getattr(config, k) for k in names if isinstance(getattr(config, k, None), int)), None)

    shape = (first("num_hidden_layers", "n_layer", "n_layers"), first("hidden_size", "n_embd", "dim", "d_model"),
             first("num_attention_heads", "n_head", "n_heads"))
    return None if None in shape else shape


def estimate_training_memory(model, rows: int, tokens: int, autocast_bf16: bool,
                             gradient_checkpointing: bool) -> MemoryEstimate:
    """Weights and gradients in the parameters' dtype, AdamW's two moments per trainable parameter, and the
    activations a transformer layer keeps for its backward pass (Korthikanti et al. 2022, "Reducing Activation
    Recomputation": s*b*h*34 + 5*a*s^2*b bytes per layer at 16 bits; twice that at 32), or only each layer's input
    under gradient checkpointing (plus one layer recomputed)."""
    params = list(model.parameters())
    parameters = sum(p.numel() for p in params)
    trainable = [p for p in params if p.requires_grad]
    weights = sum(p.numel() * p.element_size() for p in params)
    gradients = sum(p.numel() * p.element_size() for p in trainable)
    return MemoryEstimate(parameters, sum(p.numel() for p in trainable), weights, gradients, 2 * gradients,
                          _activations(model.config, rows, tokens, autocast_bf16, gradient_checkpointing))


def _activations(config, rows: int, tokens: int, autocast_bf16: bool, gradient_checkpointing: bool) -> int | None:
    shape = _shape(config)
    if shape is None:
        return None
    layers, hidden, heads = shape
    scale = 1 if autocast_bf16 else 2  # 16-bit activations under autocast, 32-bit without
    per_layer = scale * (tokens * rows * hidden * 34 + 5 * heads * tokens * tokens * rows)
    return (layers * 2 * scale * tokens * rows * hidden + per_layer) if gradient_checkpointing else layers * per_layer

