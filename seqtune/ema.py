"""--ema_decay: an exponential moving average of the trainable weights, updated after every optimizer step;
evaluation scores the average and the saved model is the average.

Hand-written (about 30 lines) rather than torch.optim.swa_utils.AveragedModel: that keeps a deep copy of the whole
module (a second model, buffers and all, wrapped again under DDP), while this keeps one tensor per trainable
weight, swaps them in for evaluation and is saved in checkpoints as a plain safetensors file."""

from __future__ import annotations

import contextlib

import torch

EMA_FILE = "ema.safetensors"  # in a checkpoint: the average so far, for an exact resume


class WeightEMA:
    """average <- decay_t * average + (1 - decay_t) * weight after each step, with decay_t = min(decay,
    (1 + t) / (10 + t)) at step t: early steps are not dominated by the pre-trained weights (as timm and
    TensorFlow's ExponentialMovingAverage with num_updates)."""

    def __init__(self, model, decay: float):
        self.decay = decay
        self.names = [name for name, p in model.named_parameters() if p.requires_grad]
        self.weights = [p for p in model.parameters() if p.requires_grad]
        self.restart()

    def restart(self) -> None:
        """The average starts from the weights as they are, in float32 whatever their dtype (a bfloat16 average
        would round away updates of (1 - decay) x a step)."""
        self.average = [p.detach().float().clone() for p in self.weights]

    @torch.no_grad()
    def update(self, step: int) -> None:
        """Fold in the weights after optimizer step `step` (1 for the first)."""
        decay = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(self.average, [p.detach().float() for p in self.weights], 1 - decay)

    @contextlib.contextmanager
    def applied(self):
        """The average in place of the weights inside the block (evaluation, a copy of the best model)."""
        kept = [p.detach().clone() for p in self.weights]
        self._copy(self.average)
        try:
            yield
        finally:
            self._copy(kept)

    def apply(self) -> None:
        """The average becomes the weights (the end of a run with nothing to evaluate: it is what is saved)."""
        self._copy(self.average)

    @torch.no_grad()
    def _copy(self, values: list[torch.Tensor]) -> None:
        torch._foreach_copy_([p.data for p in self.weights], values)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: tensor.detach().to("cpu", copy=True).contiguous() for name, tensor in
                zip(self.names, self.average)}

    def load_state_dict(self, values: dict[str, torch.Tensor]) -> None:
        missing = [name for name in self.names if name not in values]
        if missing:
            raise KeyError(f"the saved average has no {missing[0]}")
        with torch.no_grad():
            for name, tensor in zip(self.names, self.average):
                tensor.copy_(values[name])
