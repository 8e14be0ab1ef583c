"""Multi-label data: one text, any number of labels. From a column holding lists (of label names or ids) or from
several 0/1 columns (`--label_columns`), each split gets one column of multi-hot float vectors (what
`problem_type="multi_label_classification"` trains on: a sigmoid per label and binary cross-entropy)."""

from __future__ import annotations

import logging

from datasets import DatasetDict, Features, List, Value

from seqtune.data import LabelInfo
from seqtune.errors import SeqtuneError

logger = logging.getLogger("seqtune")
MULTI_LABEL_COLUMN = "seqtune_multi_labels"  # the multi-hot column each split gets


def is_list_column(raw: DatasetDict, column: str | None) -> bool:
    """Whether `column` holds lists (a list column is multi-label)."""
    if column is None:
        return False
    for ds in raw.values():
        if column in ds.column_names:
            feature = ds.features[column]
            return isinstance(feature, (List, list)) or type(feature).__name__ in ("List", "LargeList", "Sequence")
    return False


def _holds_lists(ds, split: str, column: str, train_split: str) -> bool:
    """Whether a split's label column holds lists to score: all null is a prediction-only split (as -1 labels are
    for one label a row); some null rows are refused, as rows without a label are ([] is a row with no label)."""
    from seqtune.datacheck import row_of, split_name

    nulls = ds.with_format("arrow")[column].null_count
    if nulls in (0, len(ds)):
        return nulls == 0
    raise SeqtuneError(f"the {split_name(split, train_split)} split has rows without labels (row "
                       f"{row_of(ds, column, None)} of column '{column}' is empty): give [] for a row with none of "
                       "the labels, fill them in, remove them, or put them in the test split.")


def prepare_multi_label(raw: DatasetDict, label_column: str | None, label_columns: list[str] | None,
                        model_labels: tuple[str, ...] | None = None, train_split: str = "train"
                        ) -> tuple[DatasetDict, LabelInfo]:
    """Multi-hot labels in `MULTI_LABEL_COLUMN` for every split that has labels; their names: the 0/1 columns, a
    fine-tuned model's labels, or the sorted values of the training split's lists."""
    if label_columns:
        if model_labels is not None and set(model_labels) == set(label_columns):
            label_columns = list(model_labels)  # the model's order: its outputs are these columns in that order
        elif model_labels is not None:
            raise SeqtuneError(f"--label_columns {' '.join(label_columns)}: the model was fine-tuned on the columns "
                               f"{' '.join(model_labels)}: name those.")
        names = tuple(label_columns)
        labelled = tuple(s for s, ds in raw.items() if all(c in ds.column_names for c in label_columns))
        _check_binary_columns(raw, label_columns, labelled)

        def encode(batch):
            return {MULTI_LABEL_COLUMN: [[float(batch[c][i]) for c in label_columns]
                                         for i in range(len(batch[label_columns[0]]))]}
    else:
        labelled = tuple(s for s, ds in raw.items() if label_column in ds.column_names
                         and _holds_lists(ds, s, label_column, train_split))
        names = model_labels or _names_from_lists(raw, label_column, train_split)
        to_id = {name: i for i, name in enumerate(names)}

        def encode(batch):
            rows = []
            for values in batch[label_column]:
                row = [0.0] * len(names)
                for value in values or []:
                    index = int(value) if isinstance(value, int) else to_id.get(str(value))
                    if index is None or not 0 <= index < len(names):
                        raise SeqtuneError(f"label {value!r} in column '{label_column}' is not among the labels "
                                           f"{list(names)}: fix the data or add examples of it to the training "
                                           "split.")
                    row[index] = 1.0
                rows.append(row)
            return {MULTI_LABEL_COLUMN: rows}
    if train_split in raw and train_split not in labelled:
        raise SeqtuneError("the training split has no multi-label labels: give --label_columns that every split "
                           "has, or a label column of lists.")
    feature = List(Value("float32"), length=len(names))
    encoded = DatasetDict({s: ds.map(encode, batched=True, features=Features({**ds.features, MULTI_LABEL_COLUMN: feature}))
                           if s in labelled else ds for s, ds in raw.items()})
    logger.info("Multi-label classification: %d labels (%s)", len(names), ", ".join(names))
    return encoded, LabelInfo(names, labelled, multi_label=True)


def _names_from_lists(raw: DatasetDict, column: str, train_split: str) -> tuple[str, ...]:
    if train_split not in raw:
        raise SeqtuneError(f"column '{column}' holds lists (multi-label) but there is no training split to name "
                           "the labels: use a model fine-tuned on these labels.")
    feature = raw[train_split].features[column]
    inner = getattr(feature, "feature", None)
    if inner is not None and hasattr(inner, "names"):  # a list of ClassLabel ids: the ClassLabel names them
        return tuple(inner.names)
    values = {v for row in raw[train_split][column] for v in (row or [])}
    if not values:
        raise SeqtuneError(f"column '{column}' holds only empty lists in the training split: no label to learn.")
    ordered = sorted(values, key=lambda v: (not isinstance(v, (int, float)), v))
    if all(isinstance(v, int) for v in ordered):
        return tuple(str(i) for i in range(max(ordered) + 1))
    return tuple(str(v) for v in ordered)


def _check_binary_columns(raw: DatasetDict, columns: list[str], labelled: tuple[str, ...]) -> None:
    for split in labelled:
        for column in columns:
            bad = [v for v in raw[split].unique(column) if v not in (0, 1, True, False, 0.0, 1.0)]
            if bad:
                raise SeqtuneError(f"--label_columns: column '{column}' of the {split} split holds {bad[:3]}; each "
                                   "label column must hold 0 or 1.")


def members_threshold(run_dirs: list[str]) -> float | None:
    """A soup's or ensemble's decision threshold: the mean of its multi-label members' (each chosen on the split
    they were scored on), not one member's, and never tuned again on the split the combination is scored on. None
    for members without one (single-label runs)."""
    import os

    from seqtune.fileio import read_json

    thresholds = [float(t) for run in run_dirs
                  if (t := read_json(os.path.join(run, "config.json"), {}).get("seqtune_threshold")) is not None]
    return sum(thresholds) / len(thresholds) if thresholds else None
