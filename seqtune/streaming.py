"""`--streaming`: train on data read while it is iterated, for training sets too large to download or convert.

The training split stays an `IterableDataset` from end to end: labels mapped, pairs swapped (symmetric tasks) and
rows tokenized on the fly with the same function as `Dataset.map`, then shuffled in a buffer and split across
processes with `split_dataset_by_node`, batched by the same collators. The evaluation and test splits are read
into memory (they are small and must be scored in full). Labels are named from the task, a ClassLabel feature, or
the first PEEK_ROWS training rows together with the evaluation split; a later label outside them stops training
with its value named.
"""

from __future__ import annotations

import itertools
import logging

from datasets import Dataset, DatasetDict, IterableDataset, IterableDatasetDict

from seqtune.data import Columns, LabelInfo, make_tokenize_fn, swap_pair
from seqtune.errors import SeqtuneError

logger = logging.getLogger("seqtune")

PEEK_ROWS = 10_000  # training rows read up front to find the columns and name the labels


def split_streams(raw: IterableDatasetDict, limits: dict[str, int | None]
                  ) -> tuple[DatasetDict, IterableDataset | None]:
    """Read every split but train into memory (at most `limits[split]` rows); return them and the train stream
    (its first `limits['train']` rows when given) with its first rows in memory as the stream's 'train' sample."""
    splits = DatasetDict()
    for split, stream in raw.items():
        if split != "train":
            rows = stream.take(limits[split]) if limits.get(split) is not None else stream
            splits[split] = Dataset.from_list(list(rows), features=stream.features)
    train = raw.get("train")
    if train is not None and limits.get("train") is not None:
        train = train.take(limits["train"])
    if train is not None:
        sample = list(train.take(PEEK_ROWS))
        if not sample:
            raise SeqtuneError("the training stream has no rows: check --train_file / --dataset_name.")
        splits["train"] = Dataset.from_list(sample, features=train.features)
    return splits, train


def label_fn(label_column: str, labels: LabelInfo):
    """Batched map from the stream's label values to label ids (floats for regression), with the sample's mapping;
    a value outside it is an error that names it (the sample could not see the whole stream)."""
    to_id = dict(labels.mapping)

    def to_ids(batch):
        if labels.is_regression:
            return {label_column: [float(v) for v in batch[label_column]]}
        ids = []
        for value in batch[label_column]:
            label = to_id.get(value, value) if to_id else value
            if not isinstance(label, int) or not 0 <= label < labels.num_labels:
                raise SeqtuneError(
                    f"the training stream has the label {value!r} (column '{label_column}'), which is none of the "
                    f"labels {list(labels.names)} found in its first {PEEK_ROWS} rows and the evaluation split: "
                    "shuffle the files so every label appears early, or give the column a ClassLabel type.")
            ids.append(label)
        return {label_column: ids}

    return to_ids


def with_swapped_pairs(text_column: str, text_pair_column: str):
    """Batched map that adds each pair in (text_pair, text) order after the batch (symmetric tasks)."""

    swap = swap_pair(text_column, text_pair_column)

    def add(batch):
        swapped = {**batch, **swap(batch)}
        return {key: list(values) + list(swapped[key]) for key, values in batch.items()}

    return add


def tokenized_train_stream(stream: IterableDataset, column_names: list[str], columns: Columns, labels: LabelInfo,
                           tokenizer, max_length: int, keep_token_type_ids: bool, symmetric: bool) -> IterableDataset:
    """The training stream as model inputs, computed row by row as it is read."""
    if columns.label:
        stream = stream.map(label_fn(columns.label, labels), batched=True)
    if symmetric:
        stream = stream.map(with_swapped_pairs(columns.text, columns.text_pair), batched=True)
        logger.info("Symmetric pairs: training on both orders of each streamed pair")
    tokenize = make_tokenize_fn(tokenizer, columns.text, columns.text_pair, max_length, keep_token_type_ids,
                                columns.label)
    return stream.map(tokenize, batched=True, remove_columns=column_names)


class EndlessBatches:
    """Batches of a training stream, pass after pass (each pass shuffled anew through `set_epoch`), so a
    `--max_steps` run never waits on a stream's end and every process takes the same number of steps."""

    def __init__(self, loader):
        self.loader = loader

    def __iter__(self):
        for stream_pass in itertools.count():
            self.loader.dataset.set_epoch(stream_pass)
            empty = True
            for batch in self.loader:
                empty = False
                yield batch
            if empty:
                raise SeqtuneError("this process's part of the training stream has no rows: give the stream more "
                                   "rows (or shards) than there are processes.")

    def skip(self, batches: int):
        """The batches after the first `batches` (resuming a run: the stream is re-read up to that point)."""
        return itertools.islice(iter(self), batches, None)
