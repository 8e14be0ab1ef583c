"""Metrics on fixed predictions: values pinned by hand."""

import pytest

from seqtune.metrics import compute_metrics

PREDICTIONS = [1, 0, 1, 1, 0, 1, 0, 0]
LABELS = [1, 0, 0, 1, 0, 1, 1, 0]


def test_accuracy_and_f1():
    metrics = compute_metrics(("accuracy", "f1"), PREDICTIONS, LABELS)
    assert metrics["accuracy"] == pytest.approx(6 / 8)
    assert metrics["f1"] == pytest.approx(0.75)  # tp 3, fp 1, fn 1


def test_matthews_correlation():
    assert compute_metrics(("matthews_correlation",), PREDICTIONS, LABELS)["matthews_correlation"] == pytest.approx(0.5)


def test_pearson_and_spearman():
    metrics = compute_metrics(("pearson", "spearmanr"), [0.1, 0.4, 0.35, 0.8], [0.0, 0.5, 0.3, 1.0])
    assert metrics["pearson"] == pytest.approx(0.3625 / (0.251875 * 0.53) ** 0.5)  # by hand
    assert metrics["spearmanr"] == pytest.approx(1.0)
