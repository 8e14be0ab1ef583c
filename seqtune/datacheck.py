"""Checks of the data's content before it is tokenized: label columns (their type, missing labels, a task's label
set, the scores of a regression), text columns, and whether a training split can be trained on. Each problem names
the column, the split, a row (data rows counted from 1, after any header) and the fix. Checks run on Arrow columns,
so they cost little on large splits; rows are looked up only once a problem is known."""

from __future__ import annotations

import math

import pyarrow as pa
import pyarrow.compute as pc
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from seqtune.errors import SeqtuneError
from seqtune.tasks import TaskSpec

TEXT_DTYPES = ("string", "large_string")
FLOAT32_MAX = 3.4028234663852886e38


def split_name(split: str, train_split: str = "train") -> str:
    return "training" if split == train_split else split


def label_kind(feature) -> str:
    """classlabel, int, float, string, bool, null (no value at all), or other (mixed types, lists, ...)."""
    if isinstance(feature, ClassLabel):
        return "classlabel"
    dtype = getattr(feature, "dtype", None) if isinstance(feature, Value) else None
    if dtype is None:
        return "other"
    if dtype in TEXT_DTYPES:
        return "string"
    if dtype.startswith(("int", "uint")):
        return "int"
    return {"bool": "bool", "null": "null"}.get(dtype, "float" if dtype.startswith("float") else "other")


def _column(ds: Dataset, column: str) -> pa.ChunkedArray:
    return ds.with_format("arrow")[column]


def row_of(ds: Dataset, column: str, value) -> int:
    """The 1-based row of the first occurrence of `value` (None and NaN included) in the column."""
    values = _column(ds, column)
    if value is None:
        mask = pc.is_null(values)
    elif isinstance(value, float) and math.isnan(value):
        mask = pc.fill_null(pc.is_nan(values), False)
    else:
        mask = pc.fill_null(pc.equal(values, pa.scalar(value, values.type)), False)
    return int(pc.index(mask, True).as_py()) + 1


def is_missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def is_number(value: str) -> bool:
    try:
        return math.isfinite(float(value))
    except ValueError:
        return False


def is_unlabelled(ds: Dataset, column: str) -> bool:
    """A split whose labels are all missing or -1 is prediction-only (GLUE's test splits)."""
    if label_kind(ds.features[column]) == "other":
        return False
    return all(is_missing(v) or v == -1 for v in ds.unique(column))


def check_label_columns(raw: DatasetDict, column: str, task: TaskSpec | None, train_split: str = "train"
                        ) -> DatasetDict:
    """Every split's label column checked and given one type seqtune maps: bool becomes text, whole-number floats
    of a classification task (a CSV column with an empty cell) become integers, number strings of a regression
    become floats. Raises SeqtuneError for mixed types, missing labels, non-numeric scores, labels outside a task's
    label set."""
    checked = {}
    for split, ds in raw.items():
        if column in ds.column_names:
            ds = _typed_labels(ds, split, column, task)
            if not is_unlabelled(ds, column):
                _check_missing(ds, split, column, task, train_split)
                _check_task_labels(ds, split, column, task)
                kind = label_kind(ds.features[column])
                if (task.is_regression if task is not None else kind == "float") and kind in ("int", "float"):
                    _check_scores(ds, split, column)
        checked[split] = ds
    return DatasetDict(checked)


def _check_scores(ds: Dataset, split: str, column: str) -> None:
    """Regression scores become float32 (the model's dtype): each must be a finite number within its range (ints
    beyond 2**53 cannot even pass through float64 exactly)."""
    limit = 2**53 if label_kind(ds.features[column]) == "int" else FLOAT32_MAX
    bad = next((v for v in ds.unique(column) if not is_missing(v) and not abs(v) <= limit), None)
    if bad is not None:
        raise SeqtuneError(f"column '{column}' of the {split} split has the score {bad} (row {row_of(ds, column, bad)}),"
                           f" which is not a finite number of at most {limit:.3g} in size: fix or remove the row.")


def as_float32(ds: Dataset, column: str) -> Dataset:
    """Regression scores as float32; ints pass through float64 (a safe cast from int64 refuses ints above 2**24)."""
    if label_kind(ds.features[column]) == "int":
        ds = ds.cast_column(column, Value("float64"))
    return ds.cast_column(column, Value("float32"))


def _typed_labels(ds: Dataset, split: str, column: str, task: TaskSpec | None) -> Dataset:
    where = f"column '{column}' of the {split} split"
    kind = label_kind(ds.features[column])
    if kind == "other":
        values = ds[column][:2]
        shown = f" (its first rows hold {', '.join(repr(v) for v in values)})" if values else ""
        raise SeqtuneError(f"{where} does not hold one label per row: its values are of mixed or nested types"
                           f"{shown}. Make every label a name (e.g. pos, neg) or every label a number.")
    if kind == "bool":  # true/false: label names (and not numbers, for a regression)
        ds, kind = ds.cast_column(column, Value("string")), "string"
    regression = task is not None and task.is_regression
    values = [v for v in ds.unique(column) if not is_missing(v)]
    if kind == "float" and task is not None and not regression:
        # a task's ids read as floats (a CSV column with an empty cell): back to ints when they all are ids; other
        # values are reported by _check_missing and _check_task_labels
        ids = all(float(v).is_integer() and -1 <= v < len(task.label_names) for v in values)
        return ds.cast_column(column, Value("int64")) if ids and len(values) == len(ds.unique(column)) else ds
    if kind != "string":
        return ds
    numbers = [v for v in values if is_number(v)]
    if regression:
        names = [v for v in values if not is_number(v)]
        if names:
            raise SeqtuneError(f"{where} must hold numbers for the regression task: row {row_of(ds, column, names[0])}"
                               f" has {names[0]!r}. Fix the score or remove the row.")
        # Python's float() reads what a person writes (" 1", "1_000"); Arrow's string cast does not
        return ds.map(lambda batch: {column: [None if v is None else float(v) for v in batch[column]]},
                      batched=True, features=Features({**ds.features, column: Value("float64")}))
    if numbers and len(numbers) < len(values):
        name = next(v for v in values if not is_number(v))
        raise SeqtuneError(f"{where} mixes numbers and names: row {row_of(ds, column, numbers[0])} has "
                           f"{numbers[0]!r}, row {row_of(ds, column, name)} has {name!r}. Make every label a name "
                           "(e.g. pos, neg) or every label a number.")
    return ds


def _check_missing(ds: Dataset, split: str, column: str, task: TaskSpec | None, train_split: str) -> None:
    """Rows without a label in a labelled split: None, NaN, or -1 (GLUE's "no label") where labels are classes."""
    kind = label_kind(ds.features[column])
    classes = kind in ("classlabel", "int", "string") and not (task is not None and task.is_regression)
    values = ds.unique(column)
    missing = next((v for v in values if is_missing(v) or (classes and v == -1)), "none")
    if missing == "none":
        return
    shown = "empty" if is_missing(missing) else repr(missing)
    raise SeqtuneError(f"the {split_name(split, train_split)} split has rows without a label (row "
                       f"{row_of(ds, column, missing)} of column '{column}' is {shown}): fill them in, remove them, "
                       "or put them in the test split.")


def _check_task_labels(ds: Dataset, split: str, column: str, task: TaskSpec | None) -> None:
    """A classification task's labels are its ids 0..K-1 or its label names."""
    if task is None or task.is_regression or not task.label_names:
        return
    kind = label_kind(ds.features[column])
    names = task.label_names
    if kind == "int":
        bad = sorted(v for v in ds.unique(column) if not 0 <= v < len(names))
    elif kind == "string":
        bad = sorted(v for v in ds.unique(column) if v not in names)
    elif kind == "float":
        bad = sorted(v for v in ds.unique(column) if not is_missing(v) and v not in range(len(names)))
    else:
        return
    if bad:
        raise SeqtuneError(f"labels {bad[:5]} in the {split} split (column '{column}', row "
                           f"{row_of(ds, column, bad[0])}) are not among the task's labels: use 0..{len(names) - 1} or "
                           f"the names {', '.join(names)}, or leave out --task_name for other labels.")


def check_trainable(train: Dataset, column: str | None, num_labels: int, is_regression: bool) -> None:
    """A training split too small to learn anything from: fewer than 2 rows, one class, or one score."""
    if len(train) < 2:
        rows = f"{len(train)} row{'s' if len(train) != 1 else ''}"
        raise SeqtuneError(f"the training split has {rows}: training needs at least 2 rows (and a classifier "
                           "examples of at least 2 classes); add data.")
    if column is None or column not in train.column_names:
        return
    if is_regression:
        scores = [v for v in train.unique(column) if not is_missing(v)]
        if len(scores) < 2:
            raise SeqtuneError(f"every score in the training split is {scores[0] if scores else 'missing'} "
                               f"(column '{column}'): a regression needs at least 2 different scores; add data, "
                               "or give class labels (integers or names) for classification.")
    elif num_labels < 2:
        raise SeqtuneError(f"the training split has a single label (column '{column}'): a classifier needs examples "
                           "of at least 2 classes; add rows of another class.")


def check_text_columns(raw: DatasetDict, text_columns: tuple[str | None, ...]) -> None:
    """Each split has the text columns, and they hold text in every row (a column of numbers is a wrong column)."""
    for split, ds in raw.items():
        for column in (c for c in text_columns if c):
            if column not in ds.column_names:
                raise SeqtuneError(f"the {split} split has no column '{column}' (its columns are {ds.column_names}): "
                                   "give every split the same columns.")
            values = _column(ds, column)
            dtype = getattr(ds.features[column], "dtype", None)
            if dtype not in TEXT_DTYPES and dtype != "null" and values.null_count < len(values):  # (all empty: below)
                first = next((v for v in values.to_pylist()[:1]), None)
                raise SeqtuneError(f"column '{column}' of the {split} split holds {dtype or 'structured values'}, not "
                                   f"text (row 1: {first!r}): name the text columns with --text_column / "
                                   "--text_pair_column, or store the values as text.")
            if values.null_count:
                raise SeqtuneError(f"column '{column}' has empty (null) text in the {split} split (row "
                                   f"{row_of(ds, column, None)}): fill those rows in or remove them.")
