"""The data stages every recipe shares: load -> columns -> labels -> tokenize (flag checks: seqtune.validation)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace

from datasets import DatasetDict, IterableDataset, concatenate_datasets

from seqtune.batching import Batching
from seqtune.config import MAX_SEQ_LENGTH, DataArguments
from seqtune.data import (Columns, LabelInfo, check_max_length, label_column_candidates, load_raw_datasets,
                          prepare_labels, resolve_columns, swap_pair, tokenize_datasets)
from seqtune.datacheck import check_text_columns, check_trainable
from seqtune.errors import SeqtuneError, UnseenLabels
from seqtune.metrics import label_space, with_extras
from seqtune.model_family import uses_token_type_ids
from seqtune.multilabel import MULTI_LABEL_COLUMN, is_list_column, prepare_multi_label
from seqtune.source import dataset_source, task_for
from seqtune.streaming import split_streams, tokenized_train_stream
from seqtune.tasks import TaskSpec, default_metrics

logger = logging.getLogger("seqtune")
MULTI_LABEL_PROBLEM = "multi_label_classification"  # transformers' problem_type: a sigmoid per label, BCE


@dataclass
class PreparedData:
    raw: DatasetDict
    tokenized: DatasetDict
    columns: Columns
    labels: LabelInfo
    metrics: tuple[str, ...]
    task: TaskSpec | None
    symmetric: bool = False
    swapped: dict = field(default_factory=dict)  # split -> tokenized (text_pair, text) rows, for symmetric pairs
    train_stream: IterableDataset | None = None  # --streaming: the tokenized training rows, read as iterated
    collator: object = None  # set by the recipe that batches the data
    tokenize_seconds: float = 0.0  # time spent tokenizing (or reading the tokenized cache): the phase table's row
    max_seq_length: int = MAX_SEQ_LENGTH  # what the rows were truncated to
    given_labels: dict = field(default_factory=dict)  # split -> its label column as the data gave it (not ids)

    @property
    def space(self) -> str:
        """binary, multiclass, multi_label or regression (which extra metrics and which loss apply)."""
        return label_space(self.labels.num_labels, self.labels.multi_label)

    @property
    def all_metrics(self) -> tuple[str, ...]:
        """The task's metrics (its main one first), then the extra ones of the label space (macro F1, ...)."""
        return with_extras(self.metrics, self.space)

    @property
    def streaming(self) -> bool:
        return self.train_stream is not None

    @property
    def train(self):
        """The tokenized training rows: the stream with --streaming, else the training split (None: none)."""
        return self.train_stream if self.streaming else self.tokenized.get("train")

    @property
    def fingerprint(self) -> str | None:
        """Identifies the training rows as tokenized (datasets' fingerprint; for a stream, its source)."""
        return getattr(self.train, "_fingerprint", None)

    @property
    def eval_split(self) -> str | None:
        preferred = self.task.eval_split if self.task else "validation"
        for split in (preferred, "validation", "validation_matched", "dev"):
            if split in self.tokenized and split in self.labels.labelled_splits:
                return split
        return None


def load_data(data_args: DataArguments, model_labels: tuple[str, ...] | None = None,
              model_is_regression: bool = False, model_multi_label: bool = False, labels_optional: bool = False
              ) -> tuple[DatasetDict, Columns, LabelInfo, TaskSpec | None, IterableDataset | None, dict]:
    """Load the raw splits, find the columns and map the labels (no tokenizer needed; a fine-tuned model's
    `model_labels` name the labels of data without a training split). Several 0/1 label columns, a label column of
    lists or a multi-label model make the labels multi-hot (`seqtune.multilabel`). With --streaming, the returned
    'train' split is the stream's first rows and the stream itself comes next; last, each split's label column as
    the data gave it (before its values became ids: prediction files copy it). With `labels_optional` (predict), a
    column the model cannot read as its labels is an input column like any other."""
    task = task_for(data_args.task_name, data_args.dataset_name, data_args.dataset_config_name)
    files = data_args.train_file or data_args.validation_file or data_args.test_file
    name, config = dataset_source(data_args.task_name, data_args.dataset_name, data_args.dataset_config_name,
                                  bool(files))
    raw = load_raw_datasets(name, config, data_args.train_file, data_args.validation_file, data_args.test_file,
                            data_args.streaming,  # (a multi-label model's labels may be 0/1 columns: numbers)
                            label_column_candidates(data_args) + list(model_multi_label and model_labels or ()))
    limits = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples,
              "test": data_args.max_predict_samples}
    stream = None
    if data_args.streaming:
        raw, stream = split_streams(raw, limits)
    else:
        for split, limit in limits.items():
            if limit is not None and split in raw:
                raw[split] = raw[split].select(range(min(limit, len(raw[split]))))
    first = next(iter(raw.values()))
    columns = resolve_columns(first.column_names, task, data_args.text_column, data_args.text_pair_column,
                              data_args.label_column)
    lists = is_list_column(raw, columns.label)
    if data_args.label_columns or model_multi_label or lists:
        if stream is not None:
            raise SeqtuneError("multi-label data needs the whole training split in memory: leave out --streaming.")
        label_columns = data_args.label_columns or (None if lists else _model_label_columns(first.column_names,
                                                                                           model_labels))
        missing = [c for c in label_columns or [] if c not in first.column_names]
        if missing and not model_multi_label:  # a multi-label model's predict needs no label columns
            raise SeqtuneError(f"--label_columns {' '.join(missing)}: not columns of the data; its columns are "
                               f"{first.column_names}.")
        raw, labels = prepare_multi_label(raw, columns.label, label_columns,
                                          model_labels if model_multi_label else None)
        return raw, Columns(columns.text, columns.text_pair, MULTI_LABEL_COLUMN), labels, task, stream, {}
    given = {s: ds.select_columns([columns.label]) for s, ds in raw.items() if columns.label in ds.column_names}
    try:
        raw, labels = prepare_labels(raw, columns.label, task, model_labels=model_labels,
                                     model_is_regression=model_is_regression)
    except SeqtuneError as error:
        cut = data_args.max_train_samples
        if isinstance(error, UnseenLabels) and cut is not None and len(raw.get("train", ())) == cut:
            raise SeqtuneError(f"{error} --max_train_samples {cut} kept the training split's first {cut} rows, "
                               "which have none of them: raise it, or shuffle the training file.") from error
        if not labels_optional or columns.label is None:
            raise
        logger.info("Column '%s' is not read as labels (%s): predicted as unlabelled data.", columns.label, error)
        columns, given = replace(columns, label=None), {}
        raw, labels = prepare_labels(raw, None, task, model_labels=model_labels)
    return raw, columns, labels, task, stream, given


def _model_label_columns(column_names: list[str], model_labels: tuple[str, ...] | None) -> list[str] | None:
    """A multi-label model fine-tuned on 0/1 columns, given data with a column for each of its labels: those are
    the label columns (as if --label_columns named them)."""
    if model_labels and all(name in column_names for name in model_labels):
        logger.info("Label columns: %s (the model's labels)", " ".join(model_labels))
        return list(model_labels)
    return None


def fine_tuned_labels(model_config) -> tuple[str, ...] | None:
    """The label names a fine-tuned classifier was trained with (not transformers' placeholder LABEL_i)."""
    id2label = getattr(model_config, "id2label", None) or {}
    names = tuple(str(id2label[i]) for i in sorted(id2label, key=int))
    placeholders = all(n == f"LABEL_{i}" for i, n in enumerate(names))
    if getattr(model_config, "problem_type", None) == "regression" or placeholders:
        return None
    return names


def prepare_data(data_args: DataArguments, tokenizer, model_config, splits: list[str] | None = None,
                 augment_train: bool = False, first_only: bool = False, labels_optional: bool = False
                 ) -> PreparedData:
    """Load, label and tokenize `splits` (default, or when the data has none of them: all; `first_only`: the first
    of them the data has). Symmetric pair data (--symmetric_pairs, else the model's
    own setting, else the task's fact) also gets each split tokenized in (text_pair, text) order; with
    `augment_train`, the training split is doubled with its swapped rows."""
    # a fine-tuned regression model (one output) scores the split's numbers even without a training split
    is_regression = getattr(model_config, "problem_type", None) == "regression"
    # a fine-tuned multi-label model scores and predicts as such; a base model's own head does not decide how a
    # new one is trained (the data does: 0/1 columns or a list column)
    multi_label = getattr(model_config, "problem_type", None) == MULTI_LABEL_PROBLEM and not augment_train
    raw, columns, labels, task, stream, given = load_data(data_args, fine_tuned_labels(model_config), is_regression,
                                                          multi_label, labels_optional)
    check_max_length(tokenizer, model_config, data_args.max_seq_length, columns.text_pair is not None,
                     data_args.pad_to_multiple_of)
    if augment_train and "train" in raw and not labels.multi_label:  # training: something to learn from
        check_trainable(raw["train"], columns.label, labels.num_labels, labels.is_regression)
    symmetric = data_args.symmetric_pairs
    if symmetric is None:
        symmetric = getattr(model_config, "seqtune_symmetric_pairs", None)
    if symmetric is None:
        symmetric = bool(task and task.symmetric)
    symmetric = bool(symmetric and columns.text_pair)
    wanted = DatasetDict({s: ds for s, ds in raw.items() if splits is None or s in splits}) or DatasetDict(raw)
    if first_only and len(wanted) > 1 and splits is not None:  # the first of `splits` the data has
        first = next((s for s in splits if s in wanted), None)  # none: `_pick_split` names the splits there are
        if first is not None:
            wanted = DatasetDict({first: wanted[first]})
    check_text_columns(wanted, (columns.text, columns.text_pair))
    keep_token_types = uses_token_type_ids(tokenizer, model_config)
    train_stream = None
    if stream is not None and "train" in wanted:  # the rows in memory were a sample of the stream, for the labels
        train_stream = tokenized_train_stream(stream, wanted.pop("train").column_names, columns, labels, tokenizer,
                                              data_args.max_seq_length, keep_token_types, symmetric and augment_train)
    swapped_raw = DatasetDict()
    if symmetric:
        swap = swap_pair(columns.text, columns.text_pair)
        swapped_raw = DatasetDict({s: ds.map(swap, batched=True) for s, ds in wanted.items() if s != "train"})
        if augment_train and "train" in wanted:
            wanted["train"] = concatenate_datasets([wanted["train"], wanted["train"].map(swap, batched=True)])
            logger.info("Symmetric pairs: training on both orders (%d rows); predictions average both orders",
                        len(wanted["train"]))
    started = time.perf_counter()
    tokenized = tokenize_datasets(wanted, tokenizer, columns, data_args.max_seq_length, keep_token_types,
                                  data_args.cache_dir, data_args.preprocessing_num_workers)
    swapped = dict(tokenize_datasets(swapped_raw, tokenizer, columns, data_args.max_seq_length, keep_token_types,
                                     data_args.cache_dir, data_args.preprocessing_num_workers,
                                     what="in swapped pair order")) if swapped_raw else {}
    metrics = task.metrics if task else default_metrics(labels.num_labels, labels.multi_label)
    return PreparedData(raw, tokenized, columns, labels, metrics, task, symmetric, swapped, train_stream,
                        tokenize_seconds=time.perf_counter() - started, max_seq_length=data_args.max_seq_length,
                        given_labels=given)


def batching_from_args(data_args: DataArguments) -> Batching:
    return Batching(data_args.padding, data_args.pad_to_multiple_of, data_args.group_by_length,
                    data_args.max_tokens_per_batch)
