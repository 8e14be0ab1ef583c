"""K-fold cross-validation folds of the training split, for `seqtune sweep --cv K`.

A choice judged on a small validation split is judged on noise (MRPC's 408 rows: one seed moves accuracy by about a
point). Cross-validation scores every training row once per seed: fold k trains on the other K-1 parts and is
scored on part k. The folds are stratified by label (scikit-learn's StratifiedKFold; plain KFold for scores and
multi-label rows), shuffled with --cv_seed, and written as Parquet files (`OUT/cv_folds/fold-k/`), so each fold is an
ordinary `seqtune train --train_file ... --validation_file ...` run and can be inspected or rerun by hand."""

from __future__ import annotations

import logging
import os
from dataclasses import replace

import numpy as np

from seqtune.config import DataArguments
from seqtune.errors import SeqtuneError

logger = logging.getLogger("seqtune")
FOLDS_DIR = "cv_folds"


def training_rows(data_args: DataArguments):
    """The training split as loaded (labels as the user gave them), its label column and the task's name."""
    from seqtune.data import label_column_candidates, load_raw_datasets, resolve_columns
    from seqtune.source import dataset_source, task_for
    from seqtune.tasks import GLUE_TASKS

    if data_args.streaming:
        raise SeqtuneError("--cv splits the training split into folds, which needs it in memory: leave out "
                           "--streaming.")
    task = task_for(data_args.task_name, data_args.dataset_name, data_args.dataset_config_name)
    files = data_args.train_file or data_args.validation_file or data_args.test_file
    name, config = dataset_source(data_args.task_name, data_args.dataset_name, data_args.dataset_config_name,
                                  bool(files))
    raw = load_raw_datasets(name, config, data_args.train_file, data_args.validation_file, data_args.test_file,
                            label_columns=label_column_candidates(data_args))
    if "train" not in raw:
        raise SeqtuneError(f"--cv needs a training split to cut into folds; the data has {list(raw)}.")
    train = raw["train"]
    if data_args.max_train_samples is not None:
        train = train.select(range(min(data_args.max_train_samples, len(train))))
    columns = resolve_columns(train.column_names, task, data_args.text_column, data_args.text_pair_column,
                              data_args.label_column)
    task_name = next((key for key, spec in GLUE_TASKS.items() if spec is task), None)
    return train, columns.label, task_name


def stratification(train, label_column: str | None, data_args: DataArguments, k: int) -> np.ndarray | None:
    """The labels to stratify by (as text), or None for scores and multi-label rows; refused when a class has fewer
    rows than folds (some fold would train without it)."""
    from seqtune.datacheck import label_kind

    if data_args.label_columns or label_column is None or label_column not in train.column_names:
        return None
    if label_kind(train.features[label_column]) not in ("classlabel", "int", "string", "bool"):
        return None  # scores (regression), lists (multi-label), mixed values: datacheck names those when training
    values = train[label_column]
    labels = np.asarray([str(v) for v in values])
    names, counts = np.unique(labels, return_counts=True)
    if counts.min() < k:
        rare = ", ".join(f"{n} ({c})" for n, c in zip(names, counts) if c < k)
        raise SeqtuneError(f"--cv {k}: the label(s) {rare} have fewer training rows than folds, so some fold could "
                           f"not learn them; use --cv {max(2, int(counts.min()))} or fewer.")
    return labels


def make_folds(data_args: DataArguments, k: int, seed: int, out: str) -> list[DataArguments]:
    """Write K folds under OUT/cv_folds and return the data flags of each (train on the rest, score the fold)."""
    from datasets.fingerprint import Hasher
    from sklearn.model_selection import KFold, StratifiedKFold

    if k < 2:
        raise SeqtuneError(f"--cv {k}: cross-validation needs at least 2 folds (5 is usual).")
    train, label_column, task_name = training_rows(data_args)
    if len(train) < 2 * k:
        fix = f"use --cv {len(train) // 2} or fewer" if len(train) >= 4 else "add rows"
        raise SeqtuneError(f"--cv {k}: the training split has {len(train)} rows, too few for {k} folds (each needs 2 "
                           f"rows or more); {fix}.")
    labels = stratification(train, label_column, data_args, k)
    splitter = (StratifiedKFold if labels is not None else KFold)(n_splits=k, shuffle=True, random_state=seed)
    # the files are named by what decides their rows (the data, K, the seed): other folds are other files, so a
    # continued sweep never reuses a run trained on folds of other data or another --cv/--cv_seed
    key = Hasher.hash((train._fingerprint, k, seed, labels is not None))[:12]
    folds = []
    for number, (rest, held_out) in enumerate(splitter.split(np.zeros(len(train)), labels)):
        folder = os.path.join(out, FOLDS_DIR, f"fold-{number}")
        paths = {part: os.path.join(folder, f"{part}-{key}.parquet") for part in ("train", "validation")}
        _write_parquet(train.select(np.sort(rest)), paths["train"])
        _write_parquet(train.select(np.sort(held_out)), paths["validation"])
        folds.append(replace(data_args, dataset_name=None, dataset_config_name=None, task_name=task_name,
                             train_file=paths["train"], validation_file=paths["validation"], test_file=None,
                             max_train_samples=None, max_eval_samples=None, max_predict_samples=None))
    logger.info("Cross-validation: %d folds of %d training rows (%s, seed %d) in %s", k, len(train),
                "stratified by label" if labels is not None else "not stratified", seed, os.path.join(out, FOLDS_DIR))
    return folds


def _write_parquet(dataset, path: str) -> None:
    """Parquet keeps the column types and label names (datasets stores its features in the file); written under a
    temporary name and renamed, so a fold file is whole or absent (a damaged one is written again)."""
    import filecmp

    os.makedirs(os.path.dirname(path), exist_ok=True)
    partial = f"{path}.{os.getpid()}.partial"
    dataset.to_parquet(partial)
    if os.path.isfile(path) and filecmp.cmp(partial, path, shallow=False):
        os.remove(partial)  # the same bytes: the file keeps its time, which a sweep compares before reusing a run
    else:
        os.replace(partial, path)
