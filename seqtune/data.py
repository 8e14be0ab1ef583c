"""Data: load a DatasetDict, find its text and label columns, map labels to ids, tokenize with a disk cache."""

from __future__ import annotations

import collections
from collections.abc import Collection
import glob
import json
import logging
import os
import re
from dataclasses import dataclass

from datasets import ClassLabel, Dataset, DatasetDict, Features, IterableDatasetDict, Value, load_dataset
from datasets.fingerprint import Hasher

from seqtune.datacheck import as_float32, check_label_columns, is_unlabelled, label_kind
from seqtune.config import MAX_SEQ_LENGTH
from seqtune.errors import SeqtuneError, UnseenLabels
from seqtune.hub import is_local, offline_hint
from seqtune.tasks import TaskSpec
from seqtune.token_cache import cache_files, record_checksums, remove_stale_temporary_files, whole_cache_exists

logger = logging.getLogger("seqtune")

# Extension -> (datasets builder, extra loading arguments). TSV is CSV with tabs and no quoting: GLUE's TSVs
# hold unbalanced quotes inside sentences.
FILE_BUILDERS = {
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"delimiter": "\t", "quoting": 3}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
}
# (text, text pair) column names, tried in order when the user names none.
COMMON_PAIR_COLUMNS = [
    ("sentence1", "sentence2"), ("text", "text_pair"), ("question1", "question2"), ("premise", "hypothesis"),
    ("question", "sentence"), ("query", "passage"), ("text_a", "text_b"), ("sentence_a", "sentence_b"),
]
COMMON_TEXT_COLUMNS = ["sentence", "text", "sentence1", "content", "review", "document"]
COMMON_LABEL_COLUMNS = ["label", "labels", "score", "target"]
SEQTUNE_CACHE_VERSION = 1  # bump when the tokenized layout changes


# ----------------------------------------------------------------------------------------------- loading
def load_raw_datasets(
    dataset_name: str | None,
    dataset_config_name: str | None,
    train_file: str | None = None,
    validation_file: str | None = None,
    test_file: str | None = None,
    streaming: bool = False,
    label_columns: Collection[str] = tuple(COMMON_LABEL_COLUMNS),
) -> DatasetDict | IterableDatasetDict:
    """`load_dataset(name, config)` for the Hub or a local folder, or one builder over local data files (a file
    name may be a glob pattern, e.g. shards/train-*.parquet). With `streaming`, the splits are IterableDatasets
    read as they are iterated (nothing downloaded or converted up front). CSV and TSV files keep every column but
    `label_columns` as the text written (`_csv_options`)."""
    files = {s: f for s, f in (("train", train_file), ("validation", validation_file), ("test", test_file)) if f}
    if files and dataset_name:
        raise SeqtuneError("give either --dataset_name or --train_file/--validation_file/--test_file, not both.")
    if files:
        return _load_files(files, streaming, label_columns)
    if not dataset_name:
        raise SeqtuneError(
            "no data given: pass --task_name (e.g. mrpc), --dataset_name (a Hub id or a local folder) with "
            "--dataset_config_name, or --train_file/--validation_file/--test_file."
        )
    try:
        raw = load_dataset(dataset_name, dataset_config_name, streaming=streaming)
    except (ConnectionError, OSError) as error:
        if is_local(dataset_name):
            raise SeqtuneError(f"could not read dataset folder '{dataset_name}': {error}") from error
        raise SeqtuneError(offline_hint("dataset", dataset_name)) from error
    except ValueError as error:  # e.g. a missing or unknown config name: datasets lists the valid ones
        raise SeqtuneError(f"--dataset_name {dataset_name} --dataset_config_name {dataset_config_name}: "
                           f"{str(error).splitlines()[0]}") from error
    if not isinstance(raw, (DatasetDict, IterableDatasetDict)):
        raw = (IterableDatasetDict if streaming else DatasetDict)({"train": raw})
    return raw


def _utf8_problem(split: str, path: str) -> str | None:
    """Text files must be UTF-8; say where they are not (the parsers' own errors bury it). Streams the file."""
    if path.lower().endswith(".parquet"):
        return None
    import codecs

    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = line = 0
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as error:
                position = offset + error.start
                line += chunk[: error.start].count(b"\n")
                return (f"--{split}_file {path} is not UTF-8 text (byte {position}, line {line + 1}): re-save it as "
                        "UTF-8.")
            offset += len(chunk)
            line += chunk.count(b"\n")
    return None


class DuplicateKeyError(ValueError):
    """A JSON object that names a field (`key`) twice."""

    def __init__(self, key: str):
        super().__init__(f'it names the field "{key[:100]}" twice')
        self.key = key


def unique_keys(pairs: list[tuple]) -> dict:
    """`json.loads`' object_pairs_hook: a JSON object, refused when it names a field twice (json keeps the last
    silently). Linear: a 4 MiB request may hold half a million keys."""
    seen = set()
    for key, _ in pairs:
        if key in seen:
            raise DuplicateKeyError(key)
        seen.add(key)
    return dict(pairs)


def duplicate_columns_problem(where: str, names: list[str]) -> str | None:
    """A file that names a column twice (Parquet allows it; datasets and pyarrow then fail obscurely)."""
    twice = sorted(name for name, count in collections.Counter(names).items() if count > 1)
    return f"{where} names the column(s) {', '.join(twice)} twice: give each column its own name." if twice else None


def _json_lines_problem(paths: dict[str, list[str]]) -> str | None:
    """The first line of a JSON Lines file that is not one JSON object, or that names a field twice: read when
    datasets could not parse the files (only then, as it reads the files whole)."""
    for flag, split_paths in paths.items():
        for path in split_paths:
            if not path.lower().endswith(".jsonl"):
                continue
            with open(path, encoding="utf-8", errors="replace") as f:
                for number, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        json.loads(line, object_pairs_hook=unique_keys)
                    except ValueError as error:
                        return f"--{flag}_file {path} line {number}: {error}. Give one JSON object per line."
    return None


def _layout_problem(flag: str, path: str) -> str | None:
    """What datasets would report obscurely, named with its fix: a Parquet file naming a column twice; a CSV or TSV
    file with a header and no rows (next to another file, datasets fails on the empty file's column types)."""
    extension = os.path.splitext(path)[1].lower()
    if extension == ".parquet":
        import pyarrow.parquet as pq

        try:
            names = pq.read_schema(path).names
        except Exception:  # noqa: BLE001 - a damaged file: datasets' own error names it
            return None
        return duplicate_columns_problem(f"--{flag}_file {path}", names)
    if extension in (".csv", ".tsv"):
        with open(path, "rb") as f:
            lines = (line for line in f if line.strip())
            next(lines, None)  # the header
            if next(lines, None) is None:
                return f"--{flag}_file {path}: no rows (only a header?). Add data rows."
    return None


def data_file_paths(pattern: str) -> list[str]:
    """The files a --*_file value names: the file itself when it exists (its name may hold glob characters such as
    `[`), else the files its glob pattern matches."""
    if os.path.exists(pattern):
        return [pattern]
    return sorted(glob.glob(pattern)) if glob.has_magic(pattern) else []


def label_column_candidates(data_args) -> list[str]:
    """The columns that may hold labels: the one named, else every common label name not named as a text column;
    and multi-label 0/1 columns."""
    texts = (data_args.text_column, data_args.text_pair_column)
    named = [data_args.label_column] if data_args.label_column else [c for c in COMMON_LABEL_COLUMNS if c not in texts]
    return named + list(data_args.label_columns or [])


def _csv_options(paths: list[str], kwargs: dict, label_columns: Collection[str]) -> dict:
    """pandas' CSV reading, made to keep texts as written, as --predictions_dir reads them: every column but the
    label columns is read as a string (a text reading `NA`, `None` or `nan` stays that text, `007` stays `007`) and
    only an empty cell is missing; label columns keep pandas' typing (numbers, its missing-value strings)."""
    import pandas as pd
    from pandas._libs.parsers import STR_NA_VALUES  # pandas' default missing-value strings; no public name holds them

    names = pd.read_csv(paths[0], nrows=0, **kwargs).columns
    return {**kwargs, "keep_default_na": False, "converters": {n: str for n in names if n not in label_columns},
            "na_values": {n: sorted(STR_NA_VALUES) if n in label_columns else [""] for n in names}}


def _file_problems(files: dict[str, str]) -> tuple[dict[str, list[str]], list[str]]:
    """The files each split names (a glob pattern names several: shards), and what is wrong with them."""
    problems = []
    paths = {}
    for flag, pattern in files.items():
        paths[flag] = data_file_paths(pattern)
        if not paths[flag]:
            problems.append(f"--{flag}_file {pattern}: "
                            + ("no file matches the pattern." if glob.has_magic(pattern) else "no such file."))
        for path in paths[flag]:
            if os.path.isdir(path):
                problems.append(f"--{flag}_file {path} is a folder: name its files, e.g. \"{path}/*.csv\" (quoted), "
                                "or pass the folder as --dataset_name.")
            elif not os.path.isfile(path):
                problems.append(f"--{flag}_file {path}: no such file.")
            elif os.path.getsize(path) == 0:
                problems.append(f"--{flag}_file {path}: the file is empty.")
    extensions = {os.path.splitext(p)[1].lower() for split in paths.values() for p in split if not os.path.isdir(p)}
    unknown = extensions - set(FILE_BUILDERS)
    if unknown:
        problems.append(f"unsupported data file type {', '.join(sorted(unknown))}: use .csv, .tsv, .json, .jsonl or "
                        ".parquet.")
    elif len({FILE_BUILDERS[e][0] for e in extensions} | {str(FILE_BUILDERS[e][1]) for e in extensions}) > 2:
        problems.append(f"data files mix formats ({', '.join(sorted(extensions))}): give all splits in one format.")
    if not problems:
        problems += [p for flag, split in paths.items() for path in split if (p := _utf8_problem(flag, path))]
    if not problems:
        problems += [p for flag, split in paths.items() for path in split if (p := _layout_problem(flag, path))]
    return paths, problems


def _load_files(files: dict[str, str], streaming: bool = False,
                label_columns: Collection[str] = tuple(COMMON_LABEL_COLUMNS)) -> DatasetDict | IterableDatasetDict:
    paths, problems = _file_problems(files)
    if problems:
        raise SeqtuneError(*problems)
    builder, kwargs = FILE_BUILDERS[os.path.splitext(next(iter(paths.values()))[0])[1].lower()]
    if builder == "parquet":
        paths = _without_empty_parquet(paths, files)
    try:
        if builder == "csv":
            kwargs = _csv_options(next(iter(paths.values())), kwargs, label_columns)
        # datasets reads data_files as glob patterns: escape the names found above (one may hold `[`)
        escaped = {split: [glob.escape(p) for p in split_paths] for split, split_paths in paths.items()}
        raw = load_dataset(builder, data_files=escaped, streaming=streaming, **kwargs)
    except Exception as error:  # datasets wraps the parser's error; its cause says what is wrong
        cause = error
        while cause.__cause__ or cause.__context__:
            if isinstance(cause, UnicodeDecodeError):
                break
            cause = cause.__cause__ or cause.__context__
        if isinstance(cause, UnicodeDecodeError):
            raise SeqtuneError(f"a data file in {sorted(files.values())} is not UTF-8 text ({cause.reason} at byte "
                               f"{cause.start}): re-save it as UTF-8.") from error
        if builder == "json" and (problem := _json_lines_problem(paths)):  # (pandas' "Trailing data" hides it)
            raise SeqtuneError(problem) from error
        text = str(cause).strip().splitlines()
        empty = re.search(r'Instruction "(\w+)" corresponds to no data', str(error))
        if empty:
            split = empty.group(1)
            raise SeqtuneError(f"--{split}_file {files.get(split, '')}: no rows (only a header?). Add data rows.") from error
        if "column names don't match" in str(cause) and len(escaped) > 1:
            raise SeqtuneError(_columns_differ(builder, kwargs, escaped, files)) from error
        hint = ""
        if "fields in line" in str(cause):  # a row with more fields than the header
            hint = (" (TSV is read as GLUE writes it, without quotes: a tab inside a text splits its row; save the "
                    "data as .csv, whose quoted fields may hold tabs)" if kwargs.get("delimiter") == "\t" else
                    " (quote a text that holds a comma)")
        elif "as a scalar of type" in str(cause):  # the first file typed a column the next one does not fit
            hint = (" (a column holds numbers in one file and text in another, such as integer labels in one split "
                    "and label names in the other: give every file the same kind of values)")
        raise SeqtuneError(f"could not parse the data files {sorted(files.values())}: "
                           f"{text[-1] if text else type(cause).__name__}{hint}") from error
    for split, ds in raw.items():
        if not streaming and len(ds) == 0:
            raise SeqtuneError(f"--{split}_file {files[split]}: no rows (only a header?). Add data rows.")
    return raw


def _without_empty_parquet(paths: dict[str, list[str]], files: dict[str, str]) -> dict[str, list[str]]:
    """Parquet shards without rows (Spark writes one per empty partition) left out: datasets' reader fails on
    them ("BatchSize must be greater than 0"), as --predictions_dir reads past them."""
    import pyarrow.parquet as pq

    def has_rows(path: str) -> bool:
        try:
            return pq.read_metadata(path).num_rows > 0
        except Exception:  # not Parquet after all: datasets' reader names what is wrong
            return True

    kept = {split: [p for p in split_paths if has_rows(p)] for split, split_paths in paths.items()}
    for split, split_paths in kept.items():
        if not split_paths:
            raise SeqtuneError(f"--{split}_file {files[split]}: no rows (its Parquet files hold none). Add data rows.")
    return kept


def _columns_differ(builder: str, kwargs: dict, data_files: dict[str, list[str]], files: dict[str, str]) -> str:
    """The message for splits whose files have different columns: each split's columns (read one split at a time,
    only once loading them together has failed)."""
    columns = {}
    for split, split_files in data_files.items():
        try:
            columns[split] = load_dataset(builder, data_files={split: split_files}, split=split, **kwargs).column_names
        except Exception:  # this split alone does not load either: its own error is reported when it is fixed
            columns[split] = "unreadable"
    listed = ", ".join(f"--{split}_file {files[split]} has {names}" for split, names in columns.items())
    return f"the data files have different columns ({listed}): give every split the same columns."


# ----------------------------------------------------------------------------------------------- columns
@dataclass(frozen=True)
class Columns:
    text: str
    text_pair: str | None
    label: str | None  # None: no labels at all (prediction-only data)


def resolve_columns(
    column_names: list[str],
    task: TaskSpec | None,
    text_column: str | None = None,
    text_pair_column: str | None = None,
    label_column: str | None = None,
) -> Columns:
    """The text, text-pair and label columns: named by the user, by the task, or inferred from common names."""
    if task is not None:
        text_column = text_column or task.text_column
        text_pair_column = text_pair_column or task.text_pair_column
    if text_column is None:
        pair = next(((a, b) for a, b in COMMON_PAIR_COLUMNS if a in column_names and b in column_names), None)
        if pair is not None:
            text_column, inferred_pair = pair
            text_pair_column = text_pair_column or inferred_pair
        else:
            text_column = next((c for c in COMMON_TEXT_COLUMNS if c in column_names), None)
        if text_column is not None:
            logger.info("Inferred text column(s): %s%s", text_column,
                        f" + {text_pair_column}" if text_pair_column else "")
    if label_column is None:
        label_column = next((c for c in COMMON_LABEL_COLUMNS if c in column_names
                             and c not in (text_column, text_pair_column)), None)
        if label_column is not None and task is None:
            logger.info("Inferred label column: %s", label_column)
    problems = []
    hint = (" The data has a single column: is its delimiter right (.csv is comma-separated, .tsv tab-separated)?"
            if len(column_names) == 1 else "")
    if text_column is None:
        problems.append(f"no text column found among {column_names}: name it with --text_column (and "
                        f"--text_pair_column for pairs).{hint}")
    for flag, name in (("--text_column", text_column), ("--text_pair_column", text_pair_column),
                       ("--label_column", label_column)):
        if name is not None and name not in column_names:
            problems.append(f"{flag} '{name}' is not a column of the data; its columns are {column_names}.{hint}")
    if problems:
        raise SeqtuneError(*problems)
    return Columns(text_column, text_pair_column, label_column)


# ----------------------------------------------------------------------------------------------- labels
@dataclass(frozen=True)
class LabelInfo:
    names: tuple[str, ...] | None  # None: regression
    labelled_splits: tuple[str, ...]  # splits whose labels can be scored; the others are prediction-only
    mapping: tuple[tuple[object, int], ...] = ()  # (value in the data, label id) where the ids are not the values
    multi_label: bool = False  # any number of labels per row (multi-hot labels, a sigmoid per label)

    @property
    def num_labels(self) -> int:
        return 1 if self.names is None else len(self.names)

    @property
    def is_regression(self) -> bool:
        return self.names is None


def prepare_labels(raw: DatasetDict, label_column: str | None, task: TaskSpec | None,
                   train_split: str = "train", model_labels: tuple[str, ...] | None = None,
                   model_is_regression: bool = False) -> tuple[DatasetDict, LabelInfo]:
    """Map every split's labels to ids 0..K-1 (or floats for regression) and name them.

    ClassLabel names become the label names; string labels are sorted so the mapping is deterministic;
    integer labels keep their order; a float column means regression; a task's labels are its ids or its names.
    A split whose labels are all -1 (or missing) is prediction-only. Mixed types, rows without a label, scores
    that are not numbers, labels outside a task's set and labels seen outside the training split but not in it
    are errors naming the split and a row (`seqtune.datacheck`). Without a training split (evaluating a
    fine-tuned model) the model's own label names (`model_labels`) name them.
    """
    if label_column is not None and train_split not in raw and model_labels and task is None:
        return _labels_from_model(raw, label_column, model_labels)
    if label_column is not None and train_split not in raw and model_is_regression and task is None:
        return _scores_for_model(raw, label_column)
    if label_column is None or train_split not in raw:
        if task is not None:
            return raw, LabelInfo(task.label_names, ())
        if train_split in raw:
            raise SeqtuneError(f"no label column found among {raw[train_split].column_names}: name it with "
                               "--label_column.")
        return raw, LabelInfo(None, ())
    raw = check_label_columns(raw, label_column, task, train_split)
    labelled = tuple(s for s, ds in raw.items() if label_column in ds.column_names
                     and not is_unlabelled(ds, label_column))
    if train_split not in labelled:
        raise SeqtuneError(f"the training split has no labels (column '{label_column}' is all -1 or empty): "
                           "train on labelled data.")
    feature = raw[train_split].features[label_column]
    if isinstance(feature, ClassLabel):
        names = tuple(task.label_names) if task and task.label_names else tuple(feature.names)
        bad = {s: sorted(v for v in raw[s].unique(label_column) if not 0 <= v < len(names)) for s in labelled}
        _raise_unseen({s: v for s, v in bad.items() if v}, label_column)
        return raw, LabelInfo(names, labelled)
    if task is not None and task.is_regression or label_kind(feature) == "float":
        raw = DatasetDict({s: as_float32(ds, label_column) if s in labelled else ds for s, ds in raw.items()})
        return raw, LabelInfo(None, labelled)
    return _map_class_labels(raw, label_column, task, labelled, train_split)


def _map_class_labels(raw: DatasetDict, label_column: str, task: TaskSpec | None, labelled: tuple[str, ...],
                      train_split: str) -> tuple[DatasetDict, LabelInfo]:
    """Integer or string labels to ids: a task's ids or names (checked by check_label_columns), else the training
    split's values in order (numbers first, then strings)."""
    train_values = raw[train_split].unique(label_column)
    if task is not None and task.label_names:
        names = task.label_names
        ints = all(isinstance(v, int) for v in train_values)
        to_id = {i: i for i in range(len(names))} if ints else {name: i for i, name in enumerate(names)}
    else:
        ordered = sorted(train_values, key=lambda v: (not isinstance(v, (int, float)), v))
        names = tuple(str(v) for v in ordered)
        to_id = {v: i for i, v in enumerate(ordered)}
    unseen = {s: sorted(map(str, set(raw[s].unique(label_column)) - set(to_id))) for s in labelled if s != train_split}
    _raise_unseen({s: v for s, v in unseen.items() if v}, label_column)
    remapped = any(k != v for k, v in to_id.items())
    if remapped:
        logger.info("Label mapping: %s", {str(k): v for k, v in to_id.items()})

        def to_ids(batch):
            return {label_column: [to_id.get(v, -1) for v in batch[label_column]]}
        features = {s: ds.features.copy() for s, ds in raw.items()}
        for s in features:
            if label_column in features[s]:
                features[s][label_column] = ClassLabel(names=list(names))
        raw = DatasetDict({
            s: ds.map(to_ids, batched=True, features=features[s]) if s in labelled else ds for s, ds in raw.items()
        })
    return raw, LabelInfo(tuple(names), labelled, tuple(to_id.items()) if remapped else ())


def _scores_for_model(raw: DatasetDict, label_column: str) -> tuple[DatasetDict, LabelInfo]:
    """Scores of data scored by a fine-tuned regression model: every split with scores is labelled, as floats."""
    labelled = tuple(s for s, ds in raw.items() if label_column in ds.column_names
                     and not is_unlabelled(ds, label_column))
    try:
        raw = DatasetDict({s: ds.cast_column(label_column, Value("float32")) if s in labelled else ds
                           for s, ds in raw.items()})
    except (ValueError, TypeError) as error:
        raise SeqtuneError(f"column '{label_column}' holds values that are not numbers, but the model predicts a "
                           f"score: {str(error).splitlines()[0]}") from error
    return raw, LabelInfo(None, labelled)


def _labels_from_model(raw: DatasetDict, label_column: str, names: tuple[str, ...]) -> tuple[DatasetDict, LabelInfo]:
    """Labels of data scored by a fine-tuned model: label names map to the model's ids (integers too, when the model
    was trained on integer labels: it names each by its value, so labels 1..5 are ids 0..4); other integers are ids."""
    raw = check_label_columns(raw, label_column, None)
    labelled = tuple(s for s, ds in raw.items() if label_column in ds.column_names
                     and not is_unlabelled(ds, label_column))
    to_id = {name: i for i, name in enumerate(names)}
    by_value = bool(names) and all(re.fullmatch(r"-?\d+", name) for name in names)  # integer labels, named by value
    unseen, mapped = {}, {}
    for split in labelled:
        ds = raw[split]
        feature = ds.features[label_column]
        if isinstance(feature, ClassLabel):  # its ids follow its own names, which may be ordered otherwise
            ds = ds.cast_column(label_column, Value("string"))
        values = ds.unique(label_column)
        plain_ints = all(isinstance(v, int) and not isinstance(v, bool) for v in values)
        as_ids = all(isinstance(v, int) for v in values) and not (by_value and plain_ints)
        key = (lambda v: v) if as_ids or not by_value else str  # (a label 2 is the name "2")
        bad = sorted(str(v) for v in values if not (0 <= v < len(names) if as_ids else key(v) in to_id))
        if bad:
            unseen[split] = bad
        elif not as_ids:  # names to the model's ids
            ds = ds.map(lambda batch: {label_column: [to_id[key(v)] for v in batch[label_column]]}, batched=True,
                        features=Features({**ds.features, label_column: ClassLabel(names=list(names))}))
        mapped[split] = ds
    if unseen:
        raise SeqtuneError(*[f"labels {values} in the {split} split are not among the model's labels {list(names)} "
                             f"(column '{label_column}'): use a model fine-tuned on these labels."
                             for split, values in unseen.items()])
    return DatasetDict({s: mapped.get(s, ds) for s, ds in raw.items()}), LabelInfo(tuple(names), labelled)


def _raise_unseen(unseen: dict[str, list], label_column: str) -> None:
    problems = [f"labels {values} in the {split} split were never seen in training (column '{label_column}'): "
                "fix the data or add examples of them to the training split." for split, values in unseen.items()]
    if problems:
        raise UnseenLabels(*problems)


def swap_pair(text_column: str, text_pair_column: str):
    """Batched map to the (text_pair, text) order of each pair (symmetric tasks)."""

    def swap(batch):
        return {text_column: batch[text_pair_column], text_pair_column: batch[text_column]}

    return swap


# ----------------------------------------------------------------------------------------------- tokenizing
def default_cache_dir() -> str:
    return os.environ.get("SEQTUNE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "seqtune")


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of what decides the token ids: the tokenizer's definition, not its transient call state."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return Hasher.hash(tokenizer)
    definition = json.loads(backend.to_str())
    definition.pop("truncation", None)  # set by each call with truncation=True; does not change the ids
    definition.pop("padding", None)
    return Hasher.hash((type(tokenizer).__name__, definition, tokenizer.model_input_names))


def make_tokenize_fn(tokenizer, text_column: str, text_pair_column: str | None, max_length: int,
                     keep_token_type_ids: bool, label_column: str | None):
    """The batched function for `Dataset.map`: pairs go in as text/text_pair, truncated to max_length."""

    def tokenize(batch):
        texts = batch[text_column]
        pairs = batch[text_pair_column] if text_pair_column else None
        for column, values in ((text_column, texts), (text_pair_column, pairs)):  # streams: not checked before
            if values is not None and any(v is None for v in values):
                raise SeqtuneError(f"column '{column}' has empty (null) text: remove or fill those rows.")
            if values is not None and any(not isinstance(v, str) for v in values):
                kind = type(next(v for v in values if not isinstance(v, str))).__name__
                raise SeqtuneError(f"column '{column}' holds {kind} values, not text: name the text columns with "
                                   "--text_column / --text_pair_column, or store the values as text.")
        encoded = tokenizer(texts, pairs, truncation=True, max_length=max_length,
                            return_token_type_ids=keep_token_type_ids)
        encoded["length"] = [len(ids) for ids in encoded["input_ids"]]  # for length grouping and token budgets
        if label_column is not None and label_column in batch:
            encoded["labels"] = batch[label_column]
        return encoded

    return tokenize


def tokenize_datasets(
    raw: DatasetDict,
    tokenizer,
    columns: Columns,
    max_length: int,
    keep_token_type_ids: bool,
    cache_dir: str | None = None,
    num_proc: int | None = None,
    what: str = "",
) -> DatasetDict:
    """Tokenize every split with `Dataset.map(batched=True)`, cached on disk under a key of everything that
    changes the result (data fingerprint, tokenizer definition, max length, columns), so an identical second
    run reuses it and any change does not."""
    cache_dir = os.path.join(cache_dir or default_cache_dir(), "tokenized")
    os.makedirs(cache_dir, exist_ok=True)
    remove_stale_temporary_files(cache_dir)
    tok_hash = tokenizer_fingerprint(tokenizer)
    tokenized = {}
    for split, ds in raw.items():
        label_column = columns.label if columns.label in ds.column_names else None
        key = Hasher.hash((SEQTUNE_CACHE_VERSION, ds._fingerprint, tok_hash, max_length, keep_token_type_ids,
                           columns.text, columns.text_pair, label_column, str(ds.features)))
        cache_file = os.path.join(cache_dir, f"{split}-{key}.arrow")
        reused = whole_cache_exists(cache_file, len(ds), split)
        logger.info("%s the %s split%s (%d rows): %s", "Reusing tokenized cache for" if reused else "Tokenizing",
                    split, f" {what}" if what else "", len(ds), cache_file)
        tokenized[split] = ds.map(
            make_tokenize_fn(tokenizer, columns.text, columns.text_pair, max_length, keep_token_type_ids,
                             label_column),
            batched=True,
            num_proc=num_proc,
            remove_columns=ds.column_names,
            cache_file_name=cache_file,
            load_from_cache_file=True,
            new_fingerprint=key,
            desc=f"Tokenizing {split}{f' {what}' if what else ''}",
        )
        if not reused:
            record_checksums(cache_files(cache_file))
    return DatasetDict(tokenized)


def check_max_length(tokenizer, model_config, max_length: int, pair: bool, pad_to_multiple_of: int | None = None
                     ) -> None:
    """--max_seq_length within the model's position limit, also once --pad_to_multiple_of rounds a batch of the
    longest rows up, and with room for the text (see `check_room_for_text`)."""
    limit = min(getattr(model_config, "max_position_embeddings", None) or 10**9, tokenizer.model_max_length)
    if max_length > limit:
        raise SeqtuneError(f"--max_seq_length {max_length} is above the model's limit of {limit} tokens: use "
                           f"--max_seq_length {min(limit, 512)} or less.")
    multiple = pad_to_multiple_of or 1
    padded = -(-max_length // multiple) * multiple
    if padded > limit:
        raise SeqtuneError(f"padding to a multiple of {multiple} tokens (--pad_to_multiple_of) rounds rows of "
                           f"--max_seq_length {max_length} up to {padded}, above the model's limit of {limit}: use "
                           f"--max_seq_length {limit // multiple * multiple} or less.")
    check_room_for_text(tokenizer, max_length, pair)


def trained_max_seq_length(model_config) -> int:
    """The --max_seq_length a model seqtune fine-tuned was trained with (recorded in its config), else 128."""
    value = getattr(model_config, "seqtune_max_seq_length", None)
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else MAX_SEQ_LENGTH


def input_kind_problem(model_config, pairs: bool, given: str, fix: str) -> str | None:
    """What is wrong when a model seqtune fine-tuned on text pairs is given single texts, or one fine-tuned on single
    texts is given pairs (either scores without a sign that the numbers mean nothing), else None. Models without
    the record (another tool's, or seqtune's before it) are not checked."""
    trained = getattr(model_config, "seqtune_text_pairs", None)
    if not isinstance(trained, bool) or trained == pairs:
        return None
    kind, other = ("text pairs", "single texts") if trained else ("single texts", "text pairs")
    return f"this model was fine-tuned on {kind}, but {given} holds {other}: {fix}."


def check_input_kind(model_config, pairs: bool, given: str, fix_pairs: str, fix_single: str) -> None:
    """`input_kind_problem` as an error (exit 2); `fix_pairs` says how to give pairs, `fix_single` single texts."""
    problem = input_kind_problem(model_config, pairs, given, fix_pairs if not pairs else fix_single)
    if problem:
        raise SeqtuneError(problem[0].upper() + problem[1:])


def check_room_for_text(tokenizer, max_length: int, pair: bool) -> None:
    """--max_seq_length must leave room for at least one token of each text beside the special tokens."""
    specials = tokenizer.num_special_tokens_to_add(pair=pair)
    needed = specials + (2 if pair else 1)
    if max_length < needed:
        raise SeqtuneError(f"--max_seq_length {max_length} leaves no room for the text: {'a pair' if pair else 'a text'}"
                           f" takes {specials} special tokens plus at least one token of "
                           f"{'each text' if pair else 'text'}; use --max_seq_length {needed} or more (128 is usual).")


def length_stats(lengths) -> dict[str, float]:
    import numpy as np

    lengths = np.asarray(lengths)
    return {"mean": float(lengths.mean()), "p50": float(np.percentile(lengths, 50)),
            "p95": float(np.percentile(lengths, 95)), "max": int(lengths.max())}
