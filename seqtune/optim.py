"""The optimizer and the learning-rate schedule (shared by `seqtune train` and `seqtune bench`)."""

from __future__ import annotations

import math
import re

import torch


def layer_depth(name: str, num_layers: int) -> int:
    """How deep a parameter sits: 0 for the embeddings, i + 1 for encoder layer i, num_layers + 1 for what lies
    above the encoder (pooler, classifier). Names follow transformers' encoders (`...layer.3.`, `...layers.3.`)."""
    match = re.search(r"\.layers?\.(\d+)\.", name)
    if match:
        return int(match.group(1)) + 1
    return 0 if "embeddings" in name else num_layers + 1


def build_optimizer(model, learning_rate: float, weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8,
                    layerwise_lr_decay: float = 1.0, implementation: str = "fused"):
    """AdamW, by default one fused kernel for all parameters (torch has it for CPU and CUDA; `seqtune bench` also
    times "foreach" and "for_loop"), without weight decay on biases
    and norm weights (every parameter with fewer than 2 dimensions). With `layerwise_lr_decay` < 1 each layer
    below the head learns at that factor of the one above it (the head at `learning_rate`, the top encoder layer
    at lr x decay, the embeddings at lr x decay^(layers + 1))."""
    num_layers = getattr(model.config, "num_hidden_layers", 0) if layerwise_lr_decay != 1.0 else 0
    groups: dict[tuple[float, float], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = 0.0 if param.ndim < 2 else weight_decay
        scale = layerwise_lr_decay ** (num_layers + 1 - layer_depth(name, num_layers)) if num_layers else 1.0
        groups.setdefault((scale, decay), []).append(param)
    param_groups = [{"params": params, "weight_decay": decay, "lr": learning_rate * scale}
                    for (scale, decay), params in groups.items()]
    flags = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for_loop": {"foreach": False}}[implementation]
    return torch.optim.AdamW(param_groups, lr=learning_rate, betas=betas, eps=eps, **flags)


def build_scheduler(optimizer, name: str, warmup_ratio: float, max_steps: int, num_processes: int = 1):
    """transformers' `get_scheduler`: warmup over `warmup_ratio` of the steps, then `name` (linear, cosine, ...).
    accelerate's scheduler wrapper steps once per process, so the schedule is counted in process-steps."""
    from transformers import get_scheduler

    return get_scheduler(name, optimizer, num_warmup_steps=math.ceil(warmup_ratio * max_steps) * num_processes,
                         num_training_steps=max_steps * num_processes)
