"""`seqtune evaluate` and `seqtune predict`: a fine-tuned model over a split, a file, or one input."""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
from dataclasses import replace

import numpy as np

from seqtune.batching import build_collator
from seqtune.config import DataArguments, EvalArguments, ModelArguments
from seqtune.data import check_input_kind, check_room_for_text, trained_max_seq_length
from seqtune.errors import SeqtuneError, UnscorableSplit
from seqtune.fileio import atomic_write, disk_error, write_json
from seqtune.finetuned import load_finetuned
from seqtune.inference import predict_logits
from seqtune.metrics import collapse_warning, per_class, score_logits
from seqtune.predictor import Predictor, eval_bf16, inference_autocast, prediction_fields
from seqtune.prepare import prepare_data
from seqtune.validation import has_data, validate_eval_args

logger = logging.getLogger("seqtune")


def _check_label_space(config, data) -> None:
    if data.columns.label is None:  # nothing to score against (not a model of another label count)
        columns = next(iter(data.raw.values())).column_names
        raise UnscorableSplit(f"the data has no label column (its columns: {', '.join(columns)}): name it "
                              "with --label_column, or use `seqtune predict` for data without labels.")
    if config.num_labels != data.labels.num_labels:
        raise SeqtuneError(f"the model has {config.num_labels} output label(s) but the data has "
                           f"{data.labels.num_labels}: use a model fine-tuned on this task.")


def _pick_split(data, requested: str | None, preferred: tuple[str | None, ...]) -> str:
    """--split, else the first of `preferred` the data has, else its only split."""
    if requested is None:
        present = [s for s in preferred if s in data.tokenized]
        if present or len(data.tokenized) != 1:
            requested = present[0] if present else preferred[0]
        else:
            requested = next(iter(data.tokenized))
    if requested not in data.tokenized:
        raise UnscorableSplit(f"--split {requested}: the data has no such split; its splits are {list(data.tokenized)}.")
    return requested


def evaluate(data_args: DataArguments, model_args: ModelArguments, eval_args: EvalArguments) -> dict:
    """Score a fine-tuned model on a labelled split: the split, its number of rows, the metrics (with the loss) and,
    for a classifier, the per-class table; a warning when every row gets the same prediction."""
    validate_eval_args(data_args, eval_args, "evaluate")
    tokenizer, config, model = load_finetuned(model_args, eval_args.backend)
    data_args = with_trained_length(data_args, config)
    data = prepare_data(data_args, tokenizer, config, first_only=True,
                        splits=_splits_to_read(eval_args.split, ("validation", "validation_matched")))
    check_data_kind(config, data.columns.text_pair is not None)
    _check_label_space(config, data)
    split = _pick_split(data, eval_args.split, (data.eval_split or "validation",))
    if split not in data.labels.labelled_splits:
        other = [s for s in data.labels.labelled_splits if s != split and s in data.raw]
        raise UnscorableSplit(f"the {split} split has no labels (all -1 or missing), so it cannot be scored: use "
                           "`seqtune predict` for it" + (f", or --split {other[0]}." if other else
                                                         ", or give labelled data."))
    collator = build_collator(tokenizer, "longest", data_args.max_seq_length)
    with inference_autocast(model, eval_bf16(eval_args.bf16, config, model)):
        logits = predict_logits(model, data.tokenized[split], collator, eval_args.per_device_eval_batch_size,
                                swapped=data.swapped.get(split))
    labels = np.asarray(data.tokenized[split]["labels"])
    # the model's saved threshold, else predict's 0.5: never one tuned on the split being scored
    metrics, predictions, _ = score_logits(logits, labels, data.all_metrics, data.space,
                                           getattr(config, "seqtune_threshold", None) or 0.5)
    result = {"split": split, "rows": len(labels), **metrics}
    if not data.labels.is_regression:
        names = data.labels.names
        result["per_class"] = per_class(predictions, labels.astype(int), names)
        warning = collapse_warning(predictions, labels.astype(int), names, split)
        if warning:
            logger.warning(warning)
    logger.info("Evaluated the %s split (%d rows): %s", split, len(labels),
                " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    if "per_class" in result:
        logger.info("Per class:\n%s", per_class_text(result["per_class"]))
    if eval_args.output_file:
        _make_folder_of(eval_args.output_file)
        write_json(eval_args.output_file, result)
    return result


def per_class_text(table: list[dict]) -> str:
    """The per-class table as aligned text lines."""
    width = max([len("label")] + [len(row["label"]) for row in table])
    lines = [f"  {'label':<{width}}  precision  recall     f1  support"]
    lines += [f"  {row['label']:<{width}}  {row['precision']:9.4f}  {row['recall']:6.4f}  {row['f1']:.4f}  "
              f"{row['support']:7d}" for row in table]
    return "\n".join(lines)


def _splits_to_read(requested: str | None, preferred: tuple[str, ...]) -> list[str]:
    """The splits a command tokenizes: --split, else its preferred ones (never a training split it does not use;
    `prepare_data` falls back to every split when the data has none of them)."""
    return [requested] if requested else [*preferred, "dev"]


def predict(data_args: DataArguments, model_args: ModelArguments, eval_args: EvalArguments) -> list[dict]:
    """Predict a split (default test) or a file and write one row per example, with its input columns; or classify
    one input."""
    validate_eval_args(data_args, eval_args, "predict")
    if eval_args.sentence1 is not None:
        return [predict_one(model_args, eval_args, data_args.max_seq_length)]
    if not has_data(data_args) and not sys.stdin.isatty():
        return predict_stream(model_args, sys.stdin, sys.stdout, data_args.max_seq_length,
                              eval_args.per_device_eval_batch_size, eval_args.backend, eval_args.bf16)
    if eval_args.predictions_dir:  # large inputs: chunk by chunk into Parquet shards, in constant memory
        from seqtune.batch_predict import predict_shards

        return predict_shards(data_args, model_args, eval_args)
    if not eval_args.output_file:
        raise SeqtuneError("--output_file is required to predict a split or file (.tsv, .csv or .jsonl); or give "
                           "--sentence1 \"...\" [--sentence2 \"...\"] for one input.")
    writer = _row_writer(eval_args.output_file)
    tokenizer, config, model = load_finetuned(model_args, eval_args.backend)
    data_args = with_trained_length(data_args, config)
    data = prepare_data(data_args, tokenizer, config, splits=_splits_to_read(
        eval_args.split, ("test", "test_matched", "validation", "validation_matched")), first_only=True,
        labels_optional=True)
    check_data_kind(config, data.columns.text_pair is not None)
    split = _pick_split(data, eval_args.split, ("test", data.eval_split, "validation", "train"))
    collator = build_collator(tokenizer, "longest", data_args.max_seq_length)
    with inference_autocast(model, eval_bf16(eval_args.bf16, config, model)):
        logits = predict_logits(model, data.tokenized[split], collator, eval_args.per_device_eval_batch_size,
                                swapped=data.swapped.get(split), progress=False)
    raw = data.raw[split]
    kept = _kept_columns(raw.column_names, eval_args.keep_columns)
    inputs = raw.select_columns(kept).to_list() if kept else [{} for _ in range(len(raw))]
    if data.columns.label in kept and split in data.given_labels:  # the labels as the file has them, not their ids
        for row, given in zip(inputs, data.given_labels[split].to_list()):
            row.update(given)
    names = input_names(kept, config)
    rows = [{**{names[k]: v for k, v in row.items()}, **output}
            for row, output in zip(inputs, prediction_fields(logits, config))]
    writer(rows)
    logger.info("Wrote %d predictions for the %s split to %s", len(rows), split, eval_args.output_file)
    return rows


def _kept_columns(columns: list[str], wanted: list[str] | None) -> list[str]:
    """--keep_columns: the input columns copied into the prediction file (default all; `none` for none)."""
    from seqtune.multilabel import MULTI_LABEL_COLUMN

    columns = [c for c in columns if c != MULTI_LABEL_COLUMN]
    if wanted is None:
        return columns
    wanted = [c for c in wanted if c.lower() != "none"]
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise SeqtuneError(f"--keep_columns {' '.join(missing)}: not columns of the data; its columns are {columns}.")
    return wanted


def input_names(kept: list[str], config) -> dict[str, str]:
    """The kept input columns' names in the prediction file: one named like a prediction field (a regression label
    `score`, a column `prediction`) is kept as `<name>_input`, never written over by the prediction."""
    outputs = prediction_fields(np.zeros((1, config.num_labels), dtype=np.float32), config)[0]
    renamed = {c: f"{c}_input" for c in kept if c in outputs}
    taken = [new for new in renamed.values() if new in kept]
    if taken:
        raise SeqtuneError(f"the data's columns {sorted(renamed)} have the names of prediction fields and "
                           f"{taken} are taken too: rename them, or leave them out with --keep_columns.")
    for old, new in renamed.items():
        logger.warning("The data's column '%s' has the name of a prediction field: kept as '%s'.", old, new)
    return {c: renamed.get(c, c) for c in kept}


def with_trained_length(data_args: DataArguments, config) -> DataArguments:
    """--max_seq_length left out (None): the length the model was trained with, as its config records it."""
    return replace(data_args, max_seq_length=data_args.max_seq_length or trained_max_seq_length(config))


def check_data_kind(config, pairs: bool) -> None:
    """The data's text columns are the kind the model was fine-tuned on (one text, or a pair)."""
    check_input_kind(config, pairs, "the data", fix_pairs="name its second text column with --text_pair_column",
                     fix_single="name its one text column with --text_column")


def load_predictor(model_args: ModelArguments, max_length: int | None, batch_size: int, backend: str | None = None,
                   bf16: bool | None = None) -> Predictor:
    tokenizer, config, model = load_finetuned(model_args, backend)
    return Predictor(tokenizer, config, model, max_length, batch_size, eval_bf16(bf16, config, model))


def _one_line(fields: dict) -> dict:
    """One input's printed result: the label (or labels) and its probability (or theirs), or the score."""
    return {k: v for k, v in fields.items() if k != "prediction_id"}


def predict_one(model_args: ModelArguments, eval_args: EvalArguments, max_length: int | None) -> dict:
    predictor = load_predictor(model_args, max_length, 1, eval_args.backend, eval_args.bf16)
    pair = eval_args.sentence2 is not None
    check_input_kind(predictor.config, pair, "--sentence1" + (" with --sentence2" if pair else " alone"),
                     fix_pairs="give the pair's second text with --sentence2", fix_single="leave out --sentence2")
    check_room_for_text(predictor.tokenizer, predictor.max_length, pair)
    return _one_line(predictor.predict([eval_args.sentence1], [eval_args.sentence2] if pair else None)[0])


def predict_stream(model_args: ModelArguments, lines, out, max_length: int | None, batch_size: int,
                   backend: str | None = None, bf16: bool | None = None) -> list[dict]:
    """Shell pipelines: read `text[<TAB>text_pair]` lines, write `prediction<TAB>probability` lines (or the score
    for regression), in order, batch by batch: exactly one output line per input line (an empty line is an empty
    text, or an empty pair once the input has shown it holds pairs)."""
    predictor = load_predictor(model_args, max_length, batch_size, backend, bf16)
    rows: list[dict] = []
    width, first = None, None  # texts per line (1 or 2), set by the first non-empty line (number `first`)
    trained_width = 2 if getattr(predictor.config, "seqtune_text_pairs", None) is True else 1  # before that line

    def flush(chunk: list[list[str]]) -> None:
        if not chunk:
            return
        parts = [p if p != [""] else [""] * (width or trained_width) for p in chunk]
        pairs = [p[1] for p in parts] if (width or trained_width) == 2 else None
        check_input_kind(predictor.config, pairs is not None, "standard input",
                         fix_pairs="give two tab-separated texts on each line",
                         fix_single="give one text on each line, without tabs")
        check_room_for_text(predictor.tokenizer, predictor.max_length, pairs is not None)
        for row in map(_one_line, predictor.predict([p[0] for p in parts], pairs)):
            out.write("\t".join(_tsv_field(v) for v in row.values()) + "\n")
            rows.append(row)
        out.flush()

    chunk: list[list[str]] = []
    for number, line in enumerate(_decoded(lines), 1):
        parts = line.rstrip("\r\n").split("\t")
        if parts != [""]:
            width, first = width or len(parts), first or number
            if len(parts) != width or width > 2:
                seen = f" but line {first} has {width}" if number != first else ""
                raise SeqtuneError(f"standard input line {number} has {len(parts)} tab-separated texts{seen}: give "
                                   "one text, or two tab-separated texts, on every line.")
        chunk.append(parts)
        if len(chunk) == batch_size:
            flush(chunk)
            chunk = []
    flush(chunk)
    return rows


def _decoded(lines):
    """The lines of a text stream; bytes that are not UTF-8 are one error naming the line, not a traceback."""
    number = 0
    try:
        for number, line in enumerate(lines, 1):
            line.encode("utf-8")  # a stream read with surrogateescape holds the bad bytes as lone surrogates
            yield line
    except UnicodeEncodeError as error:
        raise SeqtuneError(f"standard input line {number} is not UTF-8 text (character {error.start + 1}): convert "
                           "it to UTF-8.") from error
    except UnicodeDecodeError as error:
        raise SeqtuneError(f"standard input is not UTF-8 text (after line {number}: {error.reason}): convert it "
                           "to UTF-8.") from error


def _make_folder_of(path: str) -> None:
    """evaluate's and predict's --output_file: a missing folder is created (validation checked it can be)."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as error:
        raise disk_error(error, folder) from error


def _tsv_field(value) -> str:
    """One field of a `label<TAB>probability` line: a backslash, tab or line break inside a label name escaped
    (`\\`, `\\t`, `\\n`, `\\r`, as PostgreSQL's text format does), so each input line gets one output line."""
    return str(value).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def _cell(value):
    """A CSV/TSV cell: lists and mappings (a multi-label column of lists) as JSON, not Python's repr."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, (list, dict)) else value


def _row_writer(path: str):
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".tsv", ".csv", ".jsonl"):
        raise SeqtuneError(f"--output_file {path}: use a .tsv, .csv or .jsonl file name.")

    def write(rows: list[dict]) -> None:
        _make_folder_of(path)
        with atomic_write(path, newline="") as f:
            if ext == ".jsonl":
                f.writelines(json.dumps(row, default=str) + "\n" for row in rows)
            else:
                fields = list(rows[0]) if rows else ["prediction", "prediction_id", "probability"]
                w = csv.DictWriter(f, fieldnames=fields, delimiter="\t" if ext == ".tsv" else ",")
                w.writeheader()
                w.writerows({k: _cell(v) for k, v in row.items()} for row in rows)

    return write
