"""What a run leaves for people: a model card (README.md) and a report (PNG plots + an HTML page embedding them).

`seqtune report DIR` rebuilds both from the files a training run wrote: seqtune_args.json, all_results.json,
train_log.jsonl, eval_predictions.json and token_lengths.json."""

from __future__ import annotations

import html
import json
import os

REPORT_DIR = "report"


def _read_json(path: str, default=None):
    if not os.path.isfile(path):
        return default
    with open(path) as f:
        return json.load(f)


def _read_log(output_dir: str) -> list[dict]:
    path = os.path.join(output_dir, "train_log.jsonl")
    if not os.path.isfile(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_model_card(output_dir: str) -> str:
    args = _read_json(os.path.join(output_dir, "seqtune_args.json"), {})
    results = _read_json(os.path.join(output_dir, "all_results.json"), {})
    config = _read_json(os.path.join(output_dir, "config.json"), {})
    data, model, training = args.get("data", {}), args.get("model", {}), args.get("training", {})
    base = model.get("model_name_or_path") or "all-MiniLM-L6-v2 (embedded in seqtune)"
    if data.get("task_name"):
        source = f"GLUE {data['task_name'].upper()}"
    elif data.get("dataset_name"):
        source = data["dataset_name"] + (f", config {data['dataset_config_name']}" if data.get("dataset_config_name")
                                         else "")
    else:
        source = ", ".join(f for f in (data.get("train_file"), data.get("validation_file")) if f)
    labels = config.get("id2label", {})
    metrics = "\n".join(f"| {k[5:]} | {v:.4f} |" for k, v in results.items() if k.startswith("eval_"))
    epochs = "streamed" if results.get("epoch") is None else f"{results.get('epoch')} epochs"
    hyper = {k: training.get(k) for k in ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                                          "gradient_accumulation_steps", "warmup_ratio", "weight_decay",
                                          "lr_scheduler_type", "bf16", "seed")}
    hyper.update({k: data.get(k) for k in ("max_seq_length", "padding", "group_by_length", "max_tokens_per_batch")})
    symmetric = bool(config.get("seqtune_symmetric_pairs"))
    hyper["symmetric pairs (trained on both orders, predictions average both)"] = symmetric
    pair = args.get("text_pair_column")
    example = ('"first text", "second text"' if pair else '"a text"')
    card = f"""---
library_name: transformers
pipeline_tag: text-classification
tags: [seqtune, text-classification]
---
# {os.path.basename(os.path.abspath(output_dir))}

A sequence classifier fine-tuned with seqtune from **{base}** on **{source}**
({'text pairs: ' + args.get('text_column', '?') + ' + ' + pair if pair else 'single texts: ' + str(args.get('text_column'))}).

## Labels
{', '.join(f'`{i}` = {n}' for i, n in labels.items()) if labels and config.get('problem_type') != 'regression'
 else 'regression: one score'}

## Results on the {results.get('evaluated_split', 'validation')} split (best checkpoint, step {results.get('best_step')})
| metric | value |
| --- | --- |
{metrics or '| (no evaluation split) | |'}

Training: {results.get('global_step')} steps, {epochs}, {results.get('train_runtime', 0):.0f} s
({results.get('train_samples_per_second', 0):.1f} samples/s).

## Hyperparameters
{chr(10).join(f'- {k}: {v}' for k, v in hyper.items() if v is not None)}

## How to use
```python
from transformers import pipeline
classify = pipeline("text-classification", model="{output_dir}")
classify({{"text": {example.split(', ')[0]}{', "text_pair": ' + example.split(', ')[1] if pair else ''}}})
```
or `seqtune predict --model_name_or_path {output_dir} --sentence1 "..."{' --sentence2 "..."' if pair else ''}`.
{'The scores above average both orders of each pair, as `seqtune predict` does; the pipeline scores one order.'
 if symmetric else ''}

## Limitations
Scores are measured on one validation split{' of a few hundred rows: expect several points of variance between seeds' if (results.get('train_samples') or 0) < 20000 else ''}.
The model inherits the biases of its base model and of its training data, and only knows the labels above; texts
longer than {data.get('max_seq_length', 128)} tokens were truncated in training.
"""
    path = os.path.join(output_dir, "README.md")
    with open(path, "w") as f:
        f.write(card)
    return path


def build_report(output_dir: str) -> str:
    """PNG plots and report/index.html for a finished (or interrupted) run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    folder = os.path.join(output_dir, REPORT_DIR)
    os.makedirs(folder, exist_ok=True)
    log = _read_log(output_dir)
    steps = [r for r in log if "loss" in r]
    evals = [r for r in log if any(k.startswith("eval_") for k in r)]
    figures: list[tuple[str, str]] = []

    if steps:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], color="#4c72b0", label="training loss")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("loss")
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in steps], [r["learning_rate"] for r in steps], color="#dd8452", label="learning rate")
        ax2.set_ylabel("learning rate")
        lines = ax.get_lines() + ax2.get_lines()
        ax.legend(lines, [line.get_label() for line in lines], loc="upper right")
        ax.set_title("Loss and learning rate per step")
        figures.append(("loss_lr.png", "Training loss and learning rate"))
        _save(fig, folder, "loss_lr.png", plt)
    if evals:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for key in [k for k in evals[0] if k.startswith("eval_")]:
            ax.plot([r["step"] for r in evals], [r[key] for r in evals], marker="o", label=key[5:])
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("validation metric")
        ax.legend()
        ax.set_title("Metrics per evaluation")
        figures.append(("metrics.png", "Validation metrics per evaluation"))
        _save(fig, folder, "metrics.png", plt)
    predictions = _read_json(os.path.join(output_dir, "eval_predictions.json"))
    if predictions and predictions.get("label_names"):
        names = predictions["label_names"]
        matrix = np.zeros((len(names), len(names)), dtype=int)
        for y, p in zip(predictions["labels"], predictions["predictions"]):
            matrix[y, p] += 1
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.imshow(matrix, cmap="Blues")
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, str(count), ha="center", va="center",
                    color="white" if count > matrix.max() / 2 else "black")
        ax.set_title(f"Confusion matrix ({predictions.get('split', 'validation')})")
        figures.append(("confusion.png", "Confusion matrix of the saved model"))
        _save(fig, folder, "confusion.png", plt)
    lengths = _read_json(os.path.join(output_dir, "token_lengths.json"))
    if lengths:
        fig, ax = plt.subplots(figsize=(7, 3.5))
        ax.bar(range(len(lengths["histogram"])), lengths["histogram"], width=1.0, color="#55a868")
        ax.set_xlabel("tokens per training row")
        ax.set_ylabel("rows")
        costs = ", ".join(f"{k} {v:.0%}" for k, v in lengths["pad_fraction"].items())
        ax.set_title(f"Token lengths of the training rows\npadding per strategy: {costs}", fontsize=9)
        figures.append(("lengths.png", "Token length histogram and the padding each strategy costs"))
        _save(fig, folder, "lengths.png", plt)

    results = _read_json(os.path.join(output_dir, "all_results.json"), {})
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(_fmt(v))}</td></tr>" for k, v in
                   results.items())
    images = "".join(f'<figure><img src="{name}" alt="{html.escape(caption)}"><figcaption>{html.escape(caption)}'
                     "</figcaption></figure>" for name, caption in figures)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>seqtune report: {html.escape(os.path.basename(os.path.abspath(output_dir)))}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}}table{{border-collapse:collapse}}
td{{border:1px solid #ccc;padding:.2em .6em}}img{{max-width:100%}}figure{{margin:1.5em 0}}</style></head>
<body><h1>seqtune run: {html.escape(os.path.abspath(output_dir))}</h1>
<h2>Results</h2><table>{rows or '<tr><td>no results yet (unfinished run)</td></tr>'}</table>
<h2>Plots</h2>{images or '<p>No training log.</p>'}
</body></html>
"""
    path = os.path.join(folder, "index.html")
    with open(path, "w") as f:
        f.write(page)
    return path


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _save(fig, folder: str, name: str, plt) -> None:
    fig.tight_layout()
    fig.savefig(os.path.join(folder, name), dpi=90)
    plt.close(fig)
