"""Metrics computed offline with scikit-learn and scipy (the `evaluate` library needs the network): the task's own,
the per-class table, the validation loss, the multi-label threshold, and the warning for collapsed predictions."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import (accuracy_score, f1_score, matthews_corrcoef, precision_recall_fscore_support,
                             precision_score, recall_score)

# predictions and labels: class ids (single-label), 0/1 matrices (multi-label) or scores (regression)
METRIC_FUNCTIONS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": lambda p, y: accuracy_score(y, p),
    "f1": lambda p, y: f1_score(y, p, zero_division=0),  # binary F1 of the positive class (label 1), as GLUE
    "precision": lambda p, y: precision_score(y, p, zero_division=0),  # of the positive class
    "recall": lambda p, y: recall_score(y, p, zero_division=0),
    "f1_macro": lambda p, y: f1_score(y, p, average="macro", zero_division=0),  # every class counts the same
    "precision_macro": lambda p, y: precision_score(y, p, average="macro", zero_division=0),
    "recall_macro": lambda p, y: recall_score(y, p, average="macro", zero_division=0),
    "f1_micro": lambda p, y: f1_score(y, p, average="micro", zero_division=0),
    "precision_micro": lambda p, y: precision_score(y, p, average="micro", zero_division=0),
    "recall_micro": lambda p, y: recall_score(y, p, average="micro", zero_division=0),
    "subset_accuracy": lambda p, y: accuracy_score(y, p),  # multi-label: every label of a row right
    "matthews_correlation": lambda p, y: matthews_corrcoef(y, p),
    "pearson": lambda p, y: pearsonr(p, y)[0],
    "spearmanr": lambda p, y: spearmanr(p, y)[0],
}
# beside the task's metrics, by label space (the task's main metric still comes first)
EXTRA_METRICS = {
    "binary": ("precision", "recall", "f1_macro"),
    "multiclass": ("f1_macro", "precision_macro", "recall_macro"),
    "multi_label": ("f1_micro", "f1_macro", "subset_accuracy", "precision_micro", "recall_micro"),
    "regression": (),
}
LOWER_IS_BETTER = ("loss",)  # --metric_for_best_model names whose smaller value is better
KNOWN_METRICS = (*METRIC_FUNCTIONS, "loss")


def compute_metrics(metric_names: Sequence[str], predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Each named metric of `predictions` against `labels`."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    return {name: float(METRIC_FUNCTIONS[name](predictions, labels)) for name in metric_names}


def label_space(num_labels: int, multi_label: bool) -> str:
    if multi_label:
        return "multi_label"
    return "regression" if num_labels == 1 else "binary" if num_labels == 2 else "multiclass"


def with_extras(task_metrics: Sequence[str], space: str) -> tuple[str, ...]:
    """The task's metrics, then the extra ones of its label space (no repeats)."""
    return tuple(dict.fromkeys((*task_metrics, *EXTRA_METRICS[space])))


def loss_of(logits: np.ndarray, labels: np.ndarray, space: str) -> float:
    """The mean loss the model trains on (unweighted): cross-entropy, binary cross-entropy per label, or MSE."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    if space == "regression":
        return float(np.mean((logits[:, 0] - labels) ** 2))
    if space == "multi_label":  # log(1 + e^x) - y x, stably
        return float(np.mean(np.logaddexp(0, logits) - labels * logits))
    shifted = logits - logits.max(axis=-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels.astype(int)].mean())


def per_class(predictions: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> list[dict]:
    """Precision, recall, F1 and support (true rows) of every label (ids, or columns of 0/1 matrices)."""
    precision, recall, f1, support = precision_recall_fscore_support(
        np.asarray(labels), np.asarray(predictions), labels=list(range(len(names))), zero_division=0)
    return [{"label": str(name), "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(names, precision, recall, f1, support)]


def collapse_warning(predictions: np.ndarray, labels: np.ndarray, names: Sequence[str], split: str) -> str | None:
    """A message when every row gets the same prediction although the labels differ: the model has collapsed to
    one answer, and metrics such as F1 of the majority class can still look good."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if len(predictions) < 2:
        return None
    if predictions.ndim == 2:  # multi-label: the same set of labels for every row
        if (predictions == predictions[0]).all() and not (labels == labels[0]).all():
            chosen = [str(n) for n, on in zip(names, predictions[0]) if on] or ["no label"]
            return (f"every one of the {len(predictions)} rows of the {split} split is predicted as "
                    f"{', '.join(chosen)}: the model has collapsed to one answer; train longer, lower the learning "
                    "rate or try --class_weights auto.")
        return None
    if len(np.unique(predictions)) == 1 and len(np.unique(labels)) > 1:
        name = names[int(predictions[0])] if 0 <= int(predictions[0]) < len(names) else predictions[0]
        return (f"every one of the {len(predictions)} rows of the {split} split is predicted '{name}': the model "
                "has collapsed to one class, and metrics such as the F1 of that class can still look good; train "
                "longer, lower the learning rate or try --class_weights auto.")
    return None


def best_threshold(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Multi-label: the probability threshold with the best micro F1 on a labelled split (0.05 to 0.95 by 0.05;
    the lowest of equal ones)."""
    candidates = np.round(np.arange(0.05, 0.951, 0.05), 2)
    scores = [f1_score(labels, (probabilities >= t).astype(int), average="micro", zero_division=0)
              for t in candidates]
    return float(candidates[int(np.argmax(scores))])


def is_improvement(value: float, best: float | None, greater_is_better: bool) -> bool:
    """Whether `value` beats `best` (None: nothing yet); NaN never wins."""
    if best is None:
        return True
    return value > best if greater_is_better else value < best


def score_logits(logits: np.ndarray, labels: np.ndarray, metric_names: Sequence[str], space: str,
                 threshold: float | None = None) -> tuple[dict[str, float], np.ndarray, float | None]:
    """(metrics with the loss, predictions, multi-label threshold) of a model's logits on a labelled split. A
    multi-label model uses `threshold`, or the one with the best micro F1 on these rows when None."""
    from seqtune.inference import logits_to_predictions

    labels = np.asarray(labels)
    if space == "multi_label":
        probabilities = logits_to_predictions(logits, False, multi_label=True)[1]
        labels = labels.astype(int)
        threshold = best_threshold(probabilities, labels) if threshold is None else threshold
        predictions = (probabilities >= threshold).astype(int)
    else:
        predictions = logits_to_predictions(logits, space == "regression")[0]
        threshold = None
    metrics = compute_metrics(metric_names, predictions, labels)
    metrics["loss"] = loss_of(logits, labels, space)
    return metrics, predictions, threshold
