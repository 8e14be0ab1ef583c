"""`seqtune evaluate` and `seqtune predict`: a fine-tuned model over a split, a file, or one input."""

from __future__ import annotations

import csv
import json
import logging
import os
import sys

import numpy as np

from seqtune.batching import build_collator
from seqtune.config import DataArguments, EvalArguments, ModelArguments
from seqtune.data import check_room_for_text
from seqtune.errors import SeqtuneError
from seqtune.fileio import atomic_write, disk_error, write_json
from seqtune.inference import logits_to_predictions, predict_logits
from seqtune.lora import adapter_base, is_adapter_folder, load_adapter
from seqtune.metrics import collapse_warning, per_class, score_logits
from seqtune.model_family import match_model_to_tokenizer, model_inputs
from seqtune.modeling import load_config, load_model, load_tokenizer, resolve_model_path
from seqtune.prepare import prepare_data
from seqtune.validation import has_data, validate_eval_args

logger = logging.getLogger("seqtune")


def _load_finetuned(model_args: ModelArguments):
    """Tokenizer first: it checks the model folder's files (a damaged or missing one is named before the weights
    load)."""
    path = resolve_model_path(model_args.model_name_or_path)
    tokenizer = load_tokenizer(path, model_args.trust_remote_code)
    config = load_config(path, model_args.trust_remote_code)
    if is_adapter_folder(path):  # --save_adapter_only: the base model, its adapter merged in. The base may differ
        # in shape (another head, embeddings grown by a pad token): the adapter holds those trained weights
        model = load_adapter(load_model(adapter_base(path), config, model_args.trust_remote_code,
                                        model_args.allow_pickle_weights, ignore_mismatched_sizes=True,
                                        dtype=model_args.torch_dtype), path)
    else:
        model = load_model(path, config, model_args.trust_remote_code, model_args.allow_pickle_weights,
                           dtype=model_args.torch_dtype)
    match_model_to_tokenizer(model, tokenizer)
    return tokenizer, config, model


def _check_label_space(config, data) -> None:
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
        raise SeqtuneError(f"--split {requested}: the data has no such split; its splits are {list(data.tokenized)}.")
    return requested


def evaluate(data_args: DataArguments, model_args: ModelArguments, eval_args: EvalArguments) -> dict:
    """Score a fine-tuned model on a labelled split: the split, its number of rows, the metrics (with the loss) and,
    for a classifier, the per-class table; a warning when every row gets the same prediction."""
    validate_eval_args(data_args, eval_args, "evaluate")
    tokenizer, config, model = _load_finetuned(model_args)
    data = prepare_data(data_args, tokenizer, config, first_only=True,
                        splits=_splits_to_read(eval_args.split, ("validation", "validation_matched")))
    _check_label_space(config, data)
    split = _pick_split(data, eval_args.split, (data.eval_split or "validation",))
    if split not in data.labels.labelled_splits:
        raise SeqtuneError(f"the {split} split has no labels (all -1 or missing), so it cannot be scored: use "
                           "`seqtune predict` for it, or --split validation.")
    collator = build_collator(tokenizer, "longest", data_args.max_seq_length)
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
        return [predict_one(model_args, eval_args.sentence1, eval_args.sentence2, data_args.max_seq_length)]
    if not has_data(data_args) and not sys.stdin.isatty():
        return predict_stream(model_args, sys.stdin, sys.stdout, data_args.max_seq_length,
                              eval_args.per_device_eval_batch_size)
    if not eval_args.output_file:
        raise SeqtuneError("--output_file is required to predict a split or file (.tsv, .csv or .jsonl); or give "
                           "--sentence1 \"...\" [--sentence2 \"...\"] for one input.")
    writer = _row_writer(eval_args.output_file)
    tokenizer, config, model = _load_finetuned(model_args)
    data = prepare_data(data_args, tokenizer, config, splits=_splits_to_read(
        eval_args.split, ("test", "test_matched", "validation", "validation_matched")), first_only=True)
    split = _pick_split(data, eval_args.split, ("test", data.eval_split, "validation", "train"))
    collator = build_collator(tokenizer, "longest", data_args.max_seq_length)
    logits = predict_logits(model, data.tokenized[split], collator, eval_args.per_device_eval_batch_size,
                            swapped=data.swapped.get(split), progress=False)
    raw = data.raw[split]
    kept = _kept_columns(raw.column_names, eval_args.keep_columns)
    inputs = raw.select_columns(kept).to_list() if kept else [{} for _ in range(len(raw))]
    rows = [{**row, **output} for row, output in zip(inputs, prediction_fields(logits, config))]
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


def prediction_fields(logits: np.ndarray, config) -> list[dict]:
    """Per row: the label name and id with its probability; for multi-label, the names and ids of the labels at or
    above the model's threshold and every label's probability; for regression, the score."""
    multi_label = getattr(config, "problem_type", None) == "multi_label_classification"
    threshold = getattr(config, "seqtune_threshold", None) or 0.5
    predictions, probabilities = logits_to_predictions(logits, config.num_labels == 1, multi_label, threshold)
    if config.num_labels == 1:
        return [{"score": float(p)} for p in predictions]
    if multi_label:
        names = [config.id2label[i] for i in range(config.num_labels)]
        return [{"prediction": ",".join(n for n, on in zip(names, row) if on),
                 "prediction_id": ",".join(str(i) for i, on in enumerate(row) if on),
                 "probabilities": ",".join(f"{q:.6f}" for q in probs)}
                for row, probs in zip(predictions, probabilities)]
    return [{"prediction": config.id2label[int(p)], "prediction_id": int(p), "probability": round(float(q), 6)}
            for p, q in zip(predictions, probabilities)]


def _classify(tokenizer, config, model, texts: list[str], pairs: list[str] | None, max_length: int) -> list[dict]:
    import torch

    def logits_for(first, second):
        batch = tokenizer(first, second, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        batch = {k: v for k, v in batch.items() if k in model_inputs(tokenizer, config)}
        with torch.inference_mode():
            return model(**batch).logits.float().numpy()

    logits = logits_for(texts, pairs)
    if pairs is not None and getattr(config, "seqtune_symmetric_pairs", False):  # as the model was evaluated
        logits = (logits + logits_for(pairs, texts)) / 2
    # one line per input: the label (or labels) and its probability (or theirs), or the score
    return [{k: v for k, v in row.items() if k != "prediction_id"} for row in prediction_fields(logits, config)]


def predict_one(model_args: ModelArguments, sentence1: str, sentence2: str | None, max_length: int) -> dict:
    tokenizer, config, model = _load_finetuned(model_args)
    check_room_for_text(tokenizer, max_length, sentence2 is not None)
    model.eval()
    return _classify(tokenizer, config, model, [sentence1], [sentence2] if sentence2 is not None else None,
                     max_length)[0]


def predict_stream(model_args: ModelArguments, lines, out, max_length: int, batch_size: int) -> list[dict]:
    """Shell pipelines: read `text[<TAB>text_pair]` lines, write `prediction<TAB>probability` lines (or the score
    for regression), in order, batch by batch: exactly one output line per input line (an empty line is an empty
    text, or an empty pair once the input has shown it holds pairs)."""
    tokenizer, config, model = _load_finetuned(model_args)
    model.eval()
    rows: list[dict] = []
    width, first = None, None  # texts per line (1 or 2), set by the first non-empty line (number `first`)

    def flush(chunk: list[list[str]]) -> None:
        if not chunk:
            return
        parts = [p if p != [""] else [""] * (width or 1) for p in chunk]
        pairs = [p[1] for p in parts] if width == 2 else None
        check_room_for_text(tokenizer, max_length, pairs is not None)
        for row in _classify(tokenizer, config, model, [p[0] for p in parts], pairs, max_length):
            out.write("\t".join(str(v) for v in row.values()) + "\n")
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
                w.writerows(rows)

    return write
