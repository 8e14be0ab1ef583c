"""Task facts as data: one row per GLUE task (run_glue's `task_to_keys`, with labels and metrics added)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TaskSpec:
    """What seqtune needs to know about a task; everything else is derived from the data."""

    text_column: str
    text_pair_column: str | None
    label_names: tuple[str, ...] | None  # None: regression (one float output)
    metrics: tuple[str, ...]  # the first one is the main metric: it picks the best checkpoint
    eval_split: str = "validation"
    symmetric: bool = False  # (a, b) means the same as (b, a): train on both orders, average both at prediction

    @property
    def is_regression(self) -> bool:
        return self.label_names is None


GLUE_TASKS: dict[str, TaskSpec] = {
    "cola": TaskSpec("sentence", None, ("unacceptable", "acceptable"), ("matthews_correlation",)),
    "sst2": TaskSpec("sentence", None, ("negative", "positive"), ("accuracy",)),
    "mrpc": TaskSpec("sentence1", "sentence2", ("not_equivalent", "equivalent"), ("f1", "accuracy"), symmetric=True),
    "qqp": TaskSpec("question1", "question2", ("not_duplicate", "duplicate"), ("f1", "accuracy"), symmetric=True),
    "stsb": TaskSpec("sentence1", "sentence2", None, ("pearson", "spearmanr"), symmetric=True),
    "mnli": TaskSpec(
        "premise", "hypothesis", ("entailment", "neutral", "contradiction"), ("accuracy",), "validation_matched"
    ),
    "qnli": TaskSpec("question", "sentence", ("entailment", "not_entailment"), ("accuracy",)),
    "rte": TaskSpec("sentence1", "sentence2", ("entailment", "not_entailment"), ("accuracy",)),
    "wnli": TaskSpec("sentence1", "sentence2", ("not_entailment", "entailment"), ("accuracy",)),
}

# Metrics for data that is not a GLUE task: classification reports accuracy, and F1 when it is binary.
DEFAULT_CLASSIFICATION_METRICS = ("accuracy",)
DEFAULT_BINARY_METRICS = ("f1", "accuracy")
DEFAULT_REGRESSION_METRICS = ("pearson", "spearmanr")
DEFAULT_MULTI_LABEL_METRICS = ("f1_micro", "f1_macro", "subset_accuracy")


def default_metrics(num_labels: int, multi_label: bool = False) -> tuple[str, ...]:
    """Metrics for a dataset without a task row, by its label space."""
    if multi_label:
        return DEFAULT_MULTI_LABEL_METRICS
    if num_labels == 1:
        return DEFAULT_REGRESSION_METRICS
    return DEFAULT_BINARY_METRICS if num_labels == 2 else DEFAULT_CLASSIFICATION_METRICS
