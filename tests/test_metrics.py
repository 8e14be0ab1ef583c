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


def test_macro_precision_recall_and_the_positive_class():
    from seqtune.metrics import EXTRA_METRICS

    metrics = compute_metrics(("f1_macro", "precision", "recall", "precision_macro", "recall_macro"), PREDICTIONS,
                              LABELS)
    # both classes have tp 3, fp 1, fn 1: every per-class figure is 0.75
    assert metrics == pytest.approx({"f1_macro": 0.75, "precision": 0.75, "recall": 0.75, "precision_macro": 0.75,
                                     "recall_macro": 0.75})
    skewed = compute_metrics(("accuracy", "f1", "f1_macro"), [1, 1, 1, 1], [1, 1, 1, 0])
    assert skewed == pytest.approx({"accuracy": 0.75, "f1": 6 / 7, "f1_macro": 3 / 7})  # (6/7 + 0) / 2
    assert EXTRA_METRICS["binary"] == ("precision", "recall", "f1_macro")


def test_per_class_table_and_collapse_warning():
    from seqtune.metrics import collapse_warning, per_class

    table = per_class([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0], ["a", "b", "c"])
    assert table == [
        {"label": "a", "precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2},
        {"label": "b", "precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2},
        {"label": "c", "precision": pytest.approx(2 / 3), "recall": 1.0, "f1": 0.8, "support": 2}]
    message = collapse_warning([1, 1, 1], [1, 0, 1], ["no", "yes"], "validation")
    assert "every one of the 3 rows of the validation split is predicted 'yes'" in message
    assert collapse_warning([1, 0, 1], [1, 0, 1], ["no", "yes"], "validation") is None
    assert collapse_warning([1, 1], [1, 1], ["no", "yes"], "validation") is None  # one class in the labels too
    assert "predicted as b" in collapse_warning([[0, 1], [0, 1]], [[1, 0], [0, 1]], ["a", "b"], "test")


def test_multi_label_metrics_loss_and_threshold_pinned():
    import numpy as np

    from seqtune.metrics import best_threshold, loss_of, score_logits

    labels = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    logits = np.array([[2.0, -1.0, 0.5], [-2.0, 0.2, -0.5], [1.0, -0.1, -2.0], [-1.0, -3.0, -0.4]])
    probabilities = 1 / (1 + np.exp(-logits))
    assert best_threshold(probabilities, labels) == 0.4  # the lowest threshold that gets all 6 positives
    metrics, predictions, threshold = score_logits(logits, labels, ("f1_micro", "f1_macro", "subset_accuracy"),
                                                   "multi_label")
    assert threshold == 0.4 and predictions.tolist() == [[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert metrics["f1_micro"] == metrics["f1_macro"] == metrics["subset_accuracy"] == 1.0
    at_half = score_logits(logits, labels, ("f1_micro", "subset_accuracy"), "multi_label", threshold=0.5)[0]
    assert at_half["f1_micro"] == pytest.approx(2 * 4 / (2 * 4 + 2))  # tp 4, fn 2 (0.45 and 0.40 fall below)
    assert at_half["subset_accuracy"] == pytest.approx(0.5)
    by_hand = np.mean(np.log1p(np.exp(logits)) - labels * logits)  # BCE with logits
    assert loss_of(logits, labels, "multi_label") == pytest.approx(by_hand)
    assert loss_of(np.array([[0.0, np.log(3)]]), np.array([1]), "binary") == pytest.approx(-np.log(0.75))
