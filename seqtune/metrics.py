"""Task metrics computed offline with scikit-learn and scipy (the `evaluate` library needs the network)."""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

METRIC_FUNCTIONS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": lambda p, y: accuracy_score(y, p),
    "f1": lambda p, y: f1_score(y, p),  # binary F1 of the positive class (label 1), as GLUE reports it
    "matthews_correlation": lambda p, y: matthews_corrcoef(y, p),
    "pearson": lambda p, y: pearsonr(p, y)[0],
    "spearmanr": lambda p, y: spearmanr(p, y)[0],
}


def compute_metrics(metric_names: Sequence[str], predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Each named metric of `predictions` (class ids, or scores for regression) against `labels`."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    return {name: float(METRIC_FUNCTIONS[name](predictions, labels)) for name in metric_names}
