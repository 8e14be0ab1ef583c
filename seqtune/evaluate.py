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
from seqtune.errors import SeqtuneError
from seqtune.inference import logits_to_predictions, predict_logits
from seqtune.metrics import compute_metrics
from seqtune.modeling import load_config, load_model, load_tokenizer, resolve_model_path
from seqtune.prepare import prepare_data

logger = logging.getLogger("seqtune")


def _load_finetuned(model_args: ModelArguments):
    path = resolve_model_path(model_args.model_name_or_path)
    config = load_config(path, model_args.trust_remote_code)
    model = load_model(path, config, model_args.trust_remote_code, model_args.allow_pickle_weights)
    return load_tokenizer(path, model_args.trust_remote_code), config, model


def _check_label_space(config, data) -> None:
    if config.num_labels != data.labels.num_labels:
        raise SeqtuneError(f"the model has {config.num_labels} output label(s) but the data has "
                           f"{data.labels.num_labels}: use a model fine-tuned on this task.")


def _pick_split(data, requested: str | None, default: str) -> str:
    split = requested or default
    if split not in data.tokenized:
        raise SeqtuneError(f"--split {split}: the data has no such split; its splits are {list(data.tokenized)}.")
    return split


def evaluate(data_args: DataArguments, model_args: ModelArguments, eval_args: EvalArguments) -> dict[str, float]:
    """Score a fine-tuned model on a labelled split with the task's metrics."""
    tokenizer, config, model = _load_finetuned(model_args)
    data = prepare_data(data_args, tokenizer, config, splits=[eval_args.split] if eval_args.split else None)
    _check_label_space(config, data)
    split = _pick_split(data, eval_args.split, data.eval_split or "validation")
    if split not in data.labels.labelled_splits:
        raise SeqtuneError(f"the {split} split has no labels (all -1 or missing), so it cannot be scored: use "
                           "`seqtune predict` for it, or --split validation.")
    collator = build_collator(tokenizer, "longest", data_args.max_seq_length)
    logits = predict_logits(model, data.tokenized[split], collator, eval_args.per_device_eval_batch_size,
                            swapped=data.swapped.get(split))
    predictions, _ = logits_to_predictions(logits, data.labels.is_regression)
    metrics = compute_metrics(data.metrics, predictions, np.asarray(data.tokenized[split]["labels"]))
    if eval_args.output_file:
        with open(eval_args.output_file, "w") as f:
            json.dump(metrics, f, indent=2)
    return metrics


def predict(data_args: DataArguments, model_args: ModelArguments, eval_args: EvalArguments) -> list[dict]:
    """Predict a split (default test) or a file and write one row per example; or classify one input."""
    if eval_args.sentence1 is not None:
        return [predict_one(model_args, eval_args.sentence1, eval_args.sentence2, data_args.max_seq_length)]
    has_data = data_args.dataset_name or data_args.task_name or data_args.train_file or data_args.validation_file \
        or data_args.test_file
    if not has_data and not sys.stdin.isatty():
        return predict_stream(model_args, sys.stdin, sys.stdout, data_args.max_seq_length,
                              eval_args.per_device_eval_batch_size)
    if not eval_args.output_file:
        raise SeqtuneError("--output_file is required to predict a split or file (.tsv, .csv or .jsonl); or give "
                           "--sentence1 \"...\" [--sentence2 \"...\"] for one input.")
    writer = _row_writer(eval_args.output_file)  # checks the extension before the work
    tokenizer, config, model = _load_finetuned(model_args)
    data = prepare_data(data_args, tokenizer, config, splits=[eval_args.split] if eval_args.split else None)
    split = _pick_split(data, eval_args.split, "test" if "test" in data.tokenized else data.eval_split or "train")
    collator = build_collator(tokenizer, "longest", data_args.max_seq_length)
    logits = predict_logits(model, data.tokenized[split], collator, eval_args.per_device_eval_batch_size,
                            swapped=data.swapped.get(split))
    predictions, probabilities = logits_to_predictions(logits, config.num_labels == 1)
    raw = data.raw[split]
    ids = raw["idx"] if "idx" in raw.column_names else range(len(raw))
    rows = []
    for idx, prediction, probability in zip(ids, predictions, probabilities):
        if config.num_labels == 1:
            rows.append({"idx": idx, "score": float(prediction)})
        else:
            rows.append({"idx": idx, "prediction": config.id2label[int(prediction)],
                         "probability": round(float(probability), 6)})
    writer(rows)
    logger.info("Wrote %d predictions for the %s split to %s", len(rows), split, eval_args.output_file)
    return rows


def _classify(tokenizer, config, model, texts: list[str], pairs: list[str] | None, max_length: int) -> list[dict]:
    import torch

    def logits_for(first, second):
        batch = tokenizer(first, second, truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        batch = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")
                 and (k != "token_type_ids" or getattr(config, "type_vocab_size", 0) > 1)}
        with torch.inference_mode():
            return model(**batch).logits.float().numpy()

    logits = logits_for(texts, pairs)
    if pairs is not None and getattr(config, "seqtune_symmetric_pairs", False):  # as the model was evaluated
        logits = (logits + logits_for(pairs, texts)) / 2
    predictions, probabilities = logits_to_predictions(logits, config.num_labels == 1)
    if config.num_labels == 1:
        return [{"score": float(p)} for p in predictions]
    return [{"prediction": config.id2label[int(p)], "probability": round(float(q), 6)}
            for p, q in zip(predictions, probabilities)]


def predict_one(model_args: ModelArguments, sentence1: str, sentence2: str | None, max_length: int) -> dict:
    tokenizer, config, model = _load_finetuned(model_args)
    model.eval()
    return _classify(tokenizer, config, model, [sentence1], [sentence2] if sentence2 is not None else None,
                     max_length)[0]


def predict_stream(model_args: ModelArguments, lines, out, max_length: int, batch_size: int) -> list[dict]:
    """Shell pipelines: read `text[<TAB>text_pair]` lines, write `prediction<TAB>probability` lines (or the score
    for regression), in order, batch by batch."""
    tokenizer, config, model = _load_finetuned(model_args)
    model.eval()
    rows: list[dict] = []

    def flush(chunk: list[list[str]]) -> None:
        if not chunk:
            return
        if len({len(parts) for parts in chunk}) > 1 or len(chunk[0]) > 2:
            raise SeqtuneError("standard input must have one text, or two tab-separated texts, on every line.")
        pairs = [p[1] for p in chunk] if len(chunk[0]) == 2 else None
        for row in _classify(tokenizer, config, model, [p[0] for p in chunk], pairs, max_length):
            out.write("\t".join(str(v) for v in row.values()) + "\n")
            rows.append(row)
        out.flush()

    chunk: list[list[str]] = []
    for line in lines:
        line = line.rstrip("\n")
        if line:
            chunk.append(line.split("\t"))
        if len(chunk) == batch_size:
            flush(chunk)
            chunk = []
    flush(chunk)
    return rows


def _row_writer(path: str):
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".tsv", ".csv", ".jsonl"):
        raise SeqtuneError(f"--output_file {path}: use a .tsv, .csv or .jsonl file name.")

    def write(rows: list[dict]) -> None:
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w", newline="") as f:
            if ext == ".jsonl":
                f.writelines(json.dumps(row) + "\n" for row in rows)
            else:
                fields = list(rows[0]) if rows else ["idx", "prediction", "probability"]
                w = csv.DictWriter(f, fieldnames=fields, delimiter="\t" if ext == ".tsv" else ",")
                w.writeheader()
                w.writerows(rows)
        os.replace(tmp, path)

    return write
