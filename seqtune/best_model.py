"""Evaluation during training, and the best model it keeps: in memory, as a CPU copy of the weights (not saved,
reloaded and saved again), with the predictions that scored it (the report's confusion matrix needs no second
pass over the evaluation split). The metric that picks it is --metric_for_best_model (the task's main metric by
default); --early_stopping_patience stops the run after that many evaluations without improvement."""

from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from seqtune.inference import predict_logits
from seqtune.loop import LoopState
from seqtune.metrics import LOWER_IS_BETTER, is_improvement, score_logits

logger = logging.getLogger("seqtune")


@dataclass(frozen=True)
class Selection:
    """Which evaluation wins: its metric, its direction, and how many evaluations without improvement end a run."""

    metric: str
    greater_is_better: bool
    patience: int | None = None  # None: never stop early

    @classmethod
    def of(cls, metric: str, greater_is_better: bool | None, patience: int | None) -> "Selection":
        greater = metric not in LOWER_IS_BETTER if greater_is_better is None else greater_is_better
        return cls(metric, greater, patience)


def evaluate_model(model, dataset, collator, batch_size: int, metric_names, space: str, accelerator=None,
                   swapped=None, progress: bool = True, threshold: float | None = None
                   ) -> tuple[dict[str, float], np.ndarray, float | None, np.ndarray]:
    """The metrics (with the loss) of `model` on a labelled tokenized split, its predictions (ids, 0/1 rows for
    multi-label, scores for regression), the multi-label threshold and the logits."""
    logits = predict_logits(model, dataset, collator, batch_size, accelerator, swapped, progress)
    labels = np.asarray(dataset.with_format(None)["labels"])
    return (*score_logits(logits, labels, metric_names, space, threshold), logits)


def cpu_copy(model) -> dict:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}


class BestModel:
    """The evaluation hook of `fit`: scores the model, logs the metrics, keeps the best weights (main process),
    and asks the loop to stop once the patience is spent."""

    def __init__(self, accelerator, model, dataset, swapped, collator, batch_size: int, metric_names, space: str,
                 log, epoch_at, progress: bool, selection: Selection, bf16: bool = False, ema=None):
        self.accelerator, self.model = accelerator, model
        self.dataset, self.swapped, self.collator, self.batch_size = dataset, swapped, collator, batch_size
        self.metric_names, self.space = tuple(metric_names), space
        self.log, self.epoch_at, self.progress, self.selection = log, epoch_at, progress, selection
        self.weights: dict | None = None  # the best evaluation's weights (main process)
        # evaluated at the training's precision (as Trainer does): bfloat16 autocast under --bf16, 3x faster than
        # float32 here; the saved config records it, so `seqtune evaluate` repeats these figures
        self.autocast = torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=bf16)
        self.ema = ema  # --ema_decay: the average of the weights is what is scored and kept

    def __call__(self, state: LoopState) -> None:
        if self.dataset is None:
            return
        model = self.accelerator.unwrap_model(self.model)
        with self.ema.applied() if self.ema else contextlib.nullcontext():
            self._score(model, state)

    def _score(self, model, state: LoopState) -> None:
        with self.autocast:
            metrics, predictions, threshold, logits = evaluate_model(
                model, self.dataset, self.collator, self.batch_size, self.metric_names, self.space, self.accelerator,
                self.swapped, self.progress)
        epoch = self.epoch_at(state.step)
        self.log({"step": state.step, "epoch": epoch, **{f"eval_{k}": v for k, v in metrics.items()}})
        logger.info("eval step %d%s: %s", state.step, "" if epoch is None else f" epoch {epoch:.2f}",
                    " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        value = metrics[self.selection.metric]
        if not math.isfinite(value):  # NaN (constant outputs) never wins
            value = -math.inf if self.selection.greater_is_better else math.inf
        if is_improvement(value, state.best_metric, self.selection.greater_is_better):
            state.best_metric, state.best_step, state.best_metrics = value, state.step, metrics
            state.best_predictions = None if self.space == "regression" else predictions.tolist()
            state.best_logits = None if self.space == "regression" else np.round(logits, 6).tolist()
            state.best_threshold, state.evals_without_improvement = threshold, 0
            if self.accelerator.is_main_process:  # only the main process saves the model
                self.weights = cpu_copy(model)
        else:
            state.evals_without_improvement += 1
        patience = self.selection.patience
        if patience and state.evals_without_improvement >= patience and not state.stopped_early:
            state.stopped_early = True
            logger.info("Early stopping at step %d: %s has not improved for %d evaluations (best %.4f at step %d)",
                        state.step, self.selection.metric, patience, state.best_metric, state.best_step)

    def apart_from(self, step: int, state: LoopState) -> dict | None:
        """The best weights, for a checkpoint at `step`, when they are not that checkpoint's model itself (with
        --ema_decay never: the checkpoint's model is the live weights, the best is an average)."""
        apart = state.best_step != step or self.ema is not None
        return self.weights if state.best_step is not None and apart else None
