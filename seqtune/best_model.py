"""Evaluation during training, and the best model it keeps: in memory, as a CPU copy of the weights (not saved,
reloaded and saved again), with the predictions that scored it (the report's confusion matrix needs no second
pass over the evaluation split)."""

from __future__ import annotations

import logging
import math

import numpy as np

from seqtune.inference import logits_to_predictions, predict_logits
from seqtune.loop import LoopState
from seqtune.metrics import compute_metrics

logger = logging.getLogger("seqtune")


def evaluate_model(model, dataset, collator, batch_size: int, metric_names, is_regression: bool,
                   accelerator=None, swapped=None, progress: bool = True) -> tuple[dict[str, float], np.ndarray]:
    """The metrics of `model` on a labelled tokenized split, and its predictions (ids, or scores for regression)."""
    logits = predict_logits(model, dataset, collator, batch_size, accelerator, swapped, progress)
    predictions, _ = logits_to_predictions(logits, is_regression)
    labels = np.asarray(dataset.with_format(None)["labels"])
    return compute_metrics(metric_names, predictions, labels), predictions


def cpu_copy(model) -> dict:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}


class BestModel:
    """The evaluation hook of `fit`: scores the model, logs the metrics, keeps the best weights (main process)."""

    def __init__(self, accelerator, model, dataset, swapped, collator, batch_size: int, metric_names,
                 is_regression: bool, log, epoch_at, progress: bool):
        self.accelerator, self.model = accelerator, model
        self.dataset, self.swapped, self.collator, self.batch_size = dataset, swapped, collator, batch_size
        self.metric_names, self.is_regression = tuple(metric_names), is_regression
        self.log, self.epoch_at, self.progress = log, epoch_at, progress
        self.weights: dict | None = None  # the best evaluation's weights (main process)

    def __call__(self, state: LoopState) -> None:
        if self.dataset is None:
            return
        model = self.accelerator.unwrap_model(self.model)
        metrics, predictions = evaluate_model(model, self.dataset, self.collator, self.batch_size, self.metric_names,
                                              self.is_regression, self.accelerator, self.swapped, self.progress)
        epoch = self.epoch_at(state.step)
        self.log({"step": state.step, "epoch": epoch, **{f"eval_{k}": v for k, v in metrics.items()}})
        logger.info("eval step %d%s: %s", state.step, "" if epoch is None else f" epoch {epoch:.2f}",
                    " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        value = metrics[self.metric_names[0]]
        if state.best_metric is None or value > state.best_metric:  # NaN (constant outputs) never wins
            state.best_metric = value if math.isfinite(value) else -math.inf
            state.best_step, state.best_metrics = state.step, metrics
            state.best_predictions = None if self.is_regression else predictions.tolist()
            if self.accelerator.is_main_process:  # only the main process saves the model
                self.weights = cpu_copy(model)

    def apart_from(self, step: int, state: LoopState) -> dict | None:
        """The best weights, for a checkpoint at `step`, when they are not that checkpoint's model itself."""
        return self.weights if state.best_step is not None and state.best_step != step else None
