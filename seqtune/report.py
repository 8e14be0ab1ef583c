"""What a run leaves for people: a model card (README.md) and a report (PNG plots + an HTML page embedding them).

`seqtune report DIR` rebuilds both from the files a training run wrote: seqtune_args.json, all_results.json,
config.json, train_log.jsonl, eval_predictions.json and token_lengths.json. Any of them may be missing, partial
or hold NaN metrics (an interrupted or diverged run): both writers render what they can and never raise on it.
Label names and other user text are shown literally: code spans in the card, escaped HTML, no mathtext in plots."""

from __future__ import annotations

import html
import json
import logging
import math
import os
import re

from seqtune.fileio import atomic_write, read_json
from seqtune.hub import is_local
from seqtune.modeling import EMBEDDED_ALIASES
from seqtune.modelfiles import has_weights

logger = logging.getLogger("seqtune")

REPORT_DIR = "report"
EMBEDDED_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"  # the Hub id of the packaged default model
GLUE_DATASET = "nyu-mll/glue"  # GLUE's Hub id ("glue" redirects to it)
HYPERPARAMETERS = {  # seqtune_args.json section -> the flags the card lists
    "training": ("learning_rate", "num_train_epochs", "max_steps", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "warmup_ratio", "weight_decay", "lr_scheduler_type", "bf16", "seed",
                 "data_seed"),
    "data": ("max_seq_length", "padding", "group_by_length", "max_tokens_per_batch"),
}


# --- reading what a run wrote, whatever state it is in

def _read_dict(output_dir: str, name: str) -> dict:
    """A JSON object written by the run, or {} when it is missing, unreadable or not an object."""
    path = os.path.join(output_dir, name)
    try:
        value = read_json(path, {})
    except (OSError, ValueError, UnicodeDecodeError) as error:
        logger.warning("%s is unreadable (%s): the report leaves it out.", path, error)
        return {}
    return value if isinstance(value, dict) else {}


def _read_log(output_dir: str) -> list[dict]:
    """The records of train_log.jsonl; a line cut short by a kill is skipped."""
    path = os.path.join(output_dir, "train_log.jsonl")
    records = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict) and _is_number(record.get("step")):
                    records.append(record)
    except OSError:
        return []
    return records


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value) -> bool:
    return _is_number(value) and math.isfinite(value)


def _fmt(value) -> str:
    if isinstance(value, dict):  # e.g. phase_seconds: {"training": 146.0, ...}
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _before_the_report(results: dict) -> dict:
    """all_results.json as it was when the run made this page: the report's own time, the total and the share not
    training are written after it (so `seqtune report` rebuilds the same page)."""
    phases = results.get("phase_seconds")
    if not isinstance(phases, dict):
        return results
    after = ("report", "total", "not_training_fraction")
    return {**results, "phase_seconds": {k: v for k, v in phases.items() if k not in after}}


def _num(value, spec: str) -> str:
    """A number formatted with `spec`, or "?" where the run did not record one."""
    return format(value, spec) if _finite(value) else "?"


def _code(text) -> str:
    """A Markdown code span, so a label such as `$x^2$`, `a_b` or `<b>` shows literally (no math, emphasis or HTML)."""
    text = str(text).replace("\n", " ")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _label_names(config: dict, predictions: dict) -> dict[str, str]:
    """id -> name of a classifier's labels (config.json's id2label, else eval_predictions.json's names)."""
    if config.get("problem_type") == "regression":
        return {}
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        return {str(i): str(name) for i, name in id2label.items()}
    names = predictions.get("label_names")
    return {str(i): str(name) for i, name in enumerate(names)} if isinstance(names, list) else {}


# --- the model card

def _base_model_id(model: dict) -> str | None:
    """The base model's Hub id (front matter takes Hub ids only): None for a local folder."""
    if not model:  # no seqtune_args.json: the base model is not known
        return None
    name = model.get("model_name_or_path")
    if not isinstance(name, str) or name.lower() in EMBEDDED_ALIASES:
        return EMBEDDED_BASE_MODEL
    return None if is_local(name) else name


def _base_license(model: dict) -> str | None:
    """The license in the base model's own card (local folder, or the Hub cache: never the network)."""
    from huggingface_hub import metadata_load, try_to_load_from_cache

    source = model.get("resolved") or model.get("model_name_or_path")
    if not isinstance(source, str):
        return None
    try:
        readme = (os.path.join(source, "README.md") if os.path.isdir(source)
                  else try_to_load_from_cache(source, "README.md"))
        meta = metadata_load(readme) if isinstance(readme, str) and os.path.isfile(readme) else None
    except Exception as error:  # an odd repo id or a malformed card: the license is just not known
        logger.debug("no license from %s: %s", source, error)
        return None
    license_ = (meta or {}).get("license")
    return license_ if isinstance(license_, str) else None


def _dataset(data: dict) -> tuple[str | None, str | None, str]:
    """(Hub dataset id or None for local data, its configuration, a human description of the data)."""
    name, config, task = data.get("dataset_name"), data.get("dataset_config_name"), data.get("task_name")
    if task or (isinstance(name, str) and os.path.basename(os.path.normpath(name)) == "glue"):
        config = config or task
        return GLUE_DATASET, config, f"GLUE {str(config).upper()}" if config else "GLUE"
    if isinstance(name, str) and name:
        described = name + (f", config {config}" if config else "")
        return (None if is_local(name) else name), config, described
    files = [f for f in (data.get("train_file"), data.get("validation_file")) if isinstance(f, str)]
    return None, None, ", ".join(files) or "unknown data"


def _card_data(output_dir: str, args: dict, results: dict):
    """The card's front matter: Hub metadata and a model-index of the evaluation results."""
    from huggingface_hub import EvalResult, ModelCardData

    model = args.get("model") if isinstance(args.get("model"), dict) else {}
    dataset_id, config, described = _dataset(args.get("data") if isinstance(args.get("data"), dict) else {})
    metrics = {k[5:]: v for k, v in results.items() if k.startswith("eval_") and _finite(v)}
    split = results.get("evaluated_split")
    evals = [EvalResult(task_type="text-classification", task_name="Text Classification",
                        dataset_type=dataset_id or "local", dataset_name=described, dataset_config=config,
                        dataset_split=split, metric_type=name, metric_value=float(value))
             for name, value in metrics.items()] if isinstance(split, str) else []
    return ModelCardData(
        base_model=_base_model_id(model), datasets=[dataset_id] if dataset_id else None,
        library_name="transformers", pipeline_tag="text-classification", tags=["seqtune", "text-classification"],
        license=_base_license(model), metrics=list(metrics) or None,
        model_name=os.path.basename(os.path.abspath(output_dir)) if evals else None, eval_results=evals or None)


def _usage(output_dir: str, pair: str | None, symmetric: bool, threshold=None) -> str:
    import shlex

    inputs = '{"text": "first text", "text_pair": "second text"}' if pair else '"a text"'
    sentences = '--sentence1 "..." --sentence2 "..."' if pair else '--sentence1 "..."'
    note = ("\nThe scores above average both orders of each pair, as `seqtune predict` does; the pipeline scores "
            "one order." if symmetric else "")
    if _finite(threshold):  # multi-label: a sigmoid per label, and the validation split's threshold
        inputs += ", top_k=None"
        note += (f"\nMulti-label: the pipeline gives every label's sigmoid probability; the labels at or above "
                 f"{threshold:g} (the threshold chosen on the validation split, `seqtune_threshold` in config.json) "
                 "are the prediction, as `seqtune predict` reports them.")
    if os.path.isfile(os.path.join(output_dir, "adapter_config.json")):  # --save_adapter_only
        return (f"`seqtune predict --model_name_or_path {shlex.quote(output_dir)} {sentences}` (also `evaluate`, "
                "`serve`, `export`). This folder holds a LoRA adapter and the trained head, not a whole model: "
                "`from_pretrained` alone does not load it; peft's `AutoPeftModelForSequenceClassification"
                f".from_pretrained({json.dumps(output_dir)})` does (with the base model's label names).{note}")
    return (f'```python\nfrom transformers import pipeline\n'
            f'classify = pipeline("text-classification", model={json.dumps(output_dir)})\nclassify({inputs})\n```\n'
            f"or `seqtune predict --model_name_or_path {shlex.quote(output_dir)} {sentences}`.{note}")


def _card_text(output_dir: str, args: dict, results: dict, config: dict) -> str:
    """The card's sections for people: labels, results, hyperparameters, usage, limitations."""
    sections = {key: args.get(key) if isinstance(args.get(key), dict) else {} for key in ("data", "model", "training")}
    base = sections["model"].get("model_name_or_path") or (
        "all-MiniLM-L6-v2 (embedded in seqtune)" if sections["model"] else "an unrecorded base model")
    text, pair = args.get("text_column"), args.get("text_pair_column")
    labels = _label_names(config, {})
    label_text = (", ".join(f"`{i}` = {_code(n)}" for i, n in labels.items()) if labels else
                  "regression: one score" if config.get("problem_type") == "regression" else "not recorded")
    columns = (f"text pairs: {_code(text)} + {_code(pair)}" if pair else f"single texts: {_code(text)}" if text
               else "columns not recorded")
    epochs = "streamed" if results.get("epoch") is None else f"{_num(results.get('epoch'), 'g')} epochs"
    training = (f"Training: {results.get('global_step')} steps, {epochs}, "
                f"{_num(results.get('train_runtime'), '.0f')} s "
                f"({_num(results.get('train_samples_per_second'), '.1f')} samples/s)." if results else
                "Training: no results recorded (an unfinished run).")
    symmetric = bool(config.get("seqtune_symmetric_pairs"))
    hyper = {k: sections[part].get(k) for part, keys in HYPERPARAMETERS.items() for k in keys}
    if hyper.get("data_seed") is None:  # the batches followed --seed
        hyper.pop("data_seed")
    hyper["symmetric pairs (trained on both orders, predictions average both)"] = symmetric
    metrics = "\n".join(f"| {_code(k[5:])} | {_fmt(v)} |" for k, v in results.items() if k.startswith("eval_"))
    small = not _is_number(results.get("train_samples")) or results["train_samples"] < 20000
    variance = " of a few hundred rows: expect several points of variance between seeds" if small else ""
    split = _code(results.get("evaluated_split", "validation"))
    chosen = _code(results.get("main_metric", "the task's main metric"))
    table = _per_class(_read_dict(output_dir, "eval_predictions.json"))
    classes = ("\nPer class:\n\n| label | precision | recall | F1 | support |\n| --- | --- | --- | --- | --- |\n"
               + "\n".join(f"| {_code(c['label'])} | {c['precision']:.4f} | {c['recall']:.4f} | {c['f1']:.4f} | "
                           f"{c['support']} |" for c in table) + "\n") if table else ""
    usage = (_usage(output_dir, pair, symmetric, config.get("seqtune_threshold")) if has_weights(output_dir) else
             "This folder holds no model weights (`seqtune sweep` keeps only each run's metrics unless "
             "`--keep_models`): this card and `all_results.json` record its results only.")
    return f"""
# {os.path.basename(os.path.abspath(output_dir))}

A sequence classifier fine-tuned with seqtune from {_code(base)} on {_code(_dataset(sections['data'])[2])}
({columns}).

## Labels
{label_text}

## Results on the {split} split (best checkpoint, step {results.get('best_step')}, chosen by {chosen})
| metric | value |
| --- | --- |
{metrics or '| (no evaluation split) | |'}
{classes}
{training}

## Hyperparameters
{chr(10).join(f'- {k}: {v}' for k, v in hyper.items() if v is not None)}

## How to use
{usage}

## Limitations
Scores are measured on one validation split{variance}.
The model inherits the biases of its base model and of its training data, and only knows the labels above; texts
longer than {sections['data'].get('max_seq_length', 128)} tokens were truncated in training.
"""


def write_model_card(output_dir: str) -> str:
    """README.md for the model in `output_dir`: huggingface_hub `ModelCardData` front matter (base model, data,
    license when the base model's card names one, a model-index of the evaluation results) and the human sections."""
    from huggingface_hub import ModelCard

    args = _read_dict(output_dir, "seqtune_args.json")
    results = _read_dict(output_dir, "all_results.json")
    config = _read_dict(output_dir, "config.json")
    data = _card_data(output_dir, args, results)
    card = ModelCard(f"---\n{data.to_yaml()}\n---\n{_card_text(output_dir, args, results, config)}")
    path = os.path.join(output_dir, "README.md")
    with atomic_write(path, encoding="utf-8") as f:
        f.write(str(card))
    return path


# --- the report: PNG plots and an HTML page

def _numbers(records: list[dict], key: str) -> list[float]:
    return [float(r[key]) if _is_number(r.get(key)) else math.nan for r in records]


def _plot_loss_lr(log: list[dict]):
    from matplotlib.figure import Figure

    steps = [r for r in log if _is_number(r.get("loss"))]
    if not steps:
        return None
    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    ax.plot(_numbers(steps, "step"), _numbers(steps, "loss"), color="#4c72b0", label="training loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    evals = [r for r in log if _is_number(r.get("eval_loss"))]
    if evals:  # the validation loss on the same axis: overfitting shows as the two curves parting
        ax.plot(_numbers(evals, "step"), _numbers(evals, "eval_loss"), color="#c44e52", marker="o",
                label="validation loss")
    ax2 = ax.twinx()
    ax2.plot(_numbers(steps, "step"), _numbers(steps, "learning_rate"), color="#dd8452", label="learning rate")
    ax2.set_ylabel("learning rate")
    lines = ax.get_lines() + ax2.get_lines()
    ax.legend(lines, [line.get_label() for line in lines], loc="upper right")
    ax.set_title("Training and validation loss, learning rate per step")
    return fig


def _plot_metrics(log: list[dict]):
    from matplotlib.figure import Figure

    evals = [r for r in log if any(k.startswith("eval_") for k in r)]
    keys = list(dict.fromkeys(k for r in evals for k in r if k.startswith("eval_") and k != "eval_loss"))
    if not keys:
        return None
    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    for key in keys:
        ax.plot(_numbers(evals, "step"), _numbers(evals, key), marker="o", label=key[5:])
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("validation metric")
    ax.legend()
    ax.set_title("Metrics per evaluation")
    return fig


def _plot_confusion(predictions: dict):
    from matplotlib.figure import Figure
    from sklearn.metrics import ConfusionMatrixDisplay

    names = [str(n) for n in predictions.get("label_names") or []]
    pairs = [(y, p) for y, p in zip(predictions.get("labels") or [], predictions.get("predictions") or [])
             if isinstance(y, int) and isinstance(p, int) and 0 <= y < len(names) and 0 <= p < len(names)]
    if not pairs:
        return None
    fig = Figure(figsize=(4.5 + 0.3 * len(names), 4 + 0.3 * len(names)))
    ax = fig.subplots()
    ConfusionMatrixDisplay.from_predictions([y for y, _ in pairs], [p for _, p in pairs], labels=range(len(names)),
                                            display_labels=names, ax=ax, cmap="Blues", colorbar=False,
                                            xticks_rotation=30)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"Confusion matrix ({predictions.get('split', 'validation')})")
    return fig


def _plot_lengths(lengths: dict):
    from matplotlib.figure import Figure

    histogram = lengths.get("histogram")
    if not isinstance(histogram, list) or not histogram:
        return None
    fig = Figure(figsize=(7, 3.5))
    ax = fig.subplots()
    ax.bar(range(len(histogram)), histogram, width=1.0, color="#55a868")
    ax.set_xlabel("tokens per training row")
    ax.set_ylabel("rows")
    pads = lengths.get("pad_fraction") if isinstance(lengths.get("pad_fraction"), dict) else {}
    costs = ", ".join(f"{k} {v:.0%}" for k, v in pads.items() if _finite(v))
    ax.set_title(f"Token lengths of the training rows\npadding per strategy: {costs}", fontsize=9)
    return fig


UNITS = {"train_runtime": ("training time", "s"), "train_samples_per_second": ("throughput", "samples/s"),
         "train_tokens_per_second": ("throughput", "tokens/s"), "train_samples": ("rows seen in training", "rows")}


def _summary(args: dict, results: dict) -> list[tuple[str, str]]:
    """The run in words and units: base model, data, what picked the saved model, how long it took."""
    sections = {key: args.get(key) if isinstance(args.get(key), dict) else {} for key in ("data", "model", "training")}
    model = sections["model"]
    base = model.get("model_name_or_path") or ("all-MiniLM-L6-v2 (embedded in seqtune)" if model else "not recorded")
    rows = [("base model", str(base)), ("data", _dataset(sections["data"])[2])]
    if results:
        split, best = results.get("evaluated_split"), results.get("best_step")
        direction = "higher" if results.get("greater_is_better", True) else "lower"
        rows += [("evaluated on", f"the {split} split" if split else "no evaluation split"),
                 ("saved model", f"step {best} of {results.get('global_step')} (epoch "
                  f"{_num(results.get('epoch'), 'g')}), chosen by {results.get('main_metric', '?')} ({direction} is "
                  "better)" + (", stopped early" if results.get("stopped_early") else ""))]
        for key, (name, unit) in UNITS.items():
            if _finite(results.get(key)):
                rows.append((name, f"{results[key]:,.1f} {unit}" if isinstance(results[key], float) else
                             f"{results[key]:,} {unit}"))
        phases = results.get("phase_seconds")
        if isinstance(phases, dict):
            rows.append(("time per phase", ", ".join(f"{k} {_num(v, '.1f')} s" for k, v in phases.items())))
    return rows


def _hyperparameters(args: dict) -> list[tuple[str, str]]:
    keys = {**HYPERPARAMETERS, "training": HYPERPARAMETERS["training"] + (
        "class_weights", "metric_for_best_model", "early_stopping_patience", "ema_decay", "rdrop_alpha",
        "label_smoothing_factor")}
    sections = {key: args.get(key) if isinstance(args.get(key), dict) else {} for key in keys}
    off = {"rdrop_alpha": 0.0, "label_smoothing_factor": 0.0}  # a lever at its "off" value is not listed
    return [(k, str(sections[part][k])) for part, names in keys.items() for k in names
            if sections[part].get(k) is not None and off.get(k, object()) != sections[part].get(k)]


def _per_class(predictions: dict) -> list[dict]:
    """Precision, recall, F1 and support per label of the saved model's evaluation (empty when not recorded)."""
    from seqtune.metrics import per_class

    names, labels, predicted = (predictions.get(k) for k in ("label_names", "labels", "predictions"))
    if not (isinstance(names, list) and isinstance(labels, list) and isinstance(predicted, list) and labels
            and len(labels) == len(predicted)):
        return []
    try:
        return per_class(predicted, labels, [str(n) for n in names])
    except (ValueError, TypeError) as error:  # odd values: the table is left out, the page is not
        logger.warning("report: per-class table left out: %s", error)
        return []


def _table(rows, header=None) -> str:
    esc = html.escape
    head = "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>" if header else ""
    return "<table>" + head + "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>"
                                      for row in rows) + "</table>"


def _html_page(output_dir: str, figures: list[tuple[str, str]], results: dict, labels: dict[str, str],
               args: dict | None = None, classes: list[dict] | None = None) -> str:
    esc = html.escape
    args = args or {}
    title = esc(os.path.basename(os.path.abspath(output_dir)))
    metrics = [(k[5:], _fmt(v)) for k, v in results.items() if k.startswith("eval_")]
    other = [(k, _fmt(v)) for k, v in results.items() if not k.startswith("eval_")]
    label_rows = "".join(f"<tr><td>{esc(i)}</td><td><code>{esc(n)}</code></td></tr>" for i, n in labels.items())
    class_table = _table([(c["label"], f"{c['precision']:.4f}", f"{c['recall']:.4f}", f"{c['f1']:.4f}",
                           c["support"]) for c in classes or []], ("label", "precision", "recall", "F1", "support"))
    images = "".join(f'<figure><img src="{esc(name)}" alt="{esc(caption)}"><figcaption>{esc(caption)}'
                     "</figcaption></figure>" for name, caption in figures)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>seqtune report: {title}</title>
<style>body{{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:left}}img{{max-width:100%}}figure{{margin:1.5em 0}}
details{{margin:1em 0}}</style></head>
<body><h1>seqtune run: {esc(os.path.abspath(output_dir))}</h1>
<h2>Summary</h2>{_table(_summary(args, results))}
<h2>Metrics of the saved model</h2>{_table(metrics, ("metric", "value")) if metrics else
                                     '<p>no results yet (unfinished run)</p>'}
{f'<h2>Per class</h2>{class_table}' if classes else ''}
<h2>Labels</h2>{f'<table>{label_rows}</table>' if label_rows else '<p>regression, or no labels recorded.</p>'}
<h2>Hyperparameters</h2>{_table(_hyperparameters(args)) if _hyperparameters(args) else '<p>not recorded.</p>'}
<h2>Plots</h2>{images or '<p>No training log.</p>'}
<details><summary>all_results.json</summary>{_table(other)}</details>
</body></html>
"""


def build_report(output_dir: str) -> str:
    """PNG plots and report/index.html for a finished or interrupted run. Odd input (missing, partial or
    unreadable files, empty logs, NaN metrics) never raises: what cannot be drawn is left out, with a warning."""
    import matplotlib

    folder = os.path.join(output_dir, REPORT_DIR)
    os.makedirs(folder, exist_ok=True)
    log = _read_log(output_dir)
    predictions = _read_dict(output_dir, "eval_predictions.json")
    plots = [("loss_lr.png", "Training and validation loss, learning rate", _plot_loss_lr, log),
             ("metrics.png", "Validation metrics per evaluation", _plot_metrics, log),
             ("confusion.png", "Confusion matrix of the saved model", _plot_confusion, predictions),
             ("lengths.png", "Token length histogram and the padding each strategy costs", _plot_lengths,
              _read_dict(output_dir, "token_lengths.json"))]
    figures = []
    # label names and user text are drawn as written: "$x^2$" or "50% $off" must not be parsed as mathtext
    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        for name, caption, plot, source in plots:
            try:
                fig = plot(source)
                if fig is None:
                    continue
                fig.tight_layout()
                with atomic_write(os.path.join(folder, name), "wb") as f:
                    fig.savefig(f, format="png", dpi=90)
            except Exception as error:  # one plot that cannot be drawn must not cost the others, or the run
                logger.warning("report: %s left out: %s", name, error)
                continue
            figures.append((name, caption))
    labels = _label_names(_read_dict(output_dir, "config.json"), predictions)
    page = _html_page(output_dir, figures, _before_the_report(_read_dict(output_dir, "all_results.json")), labels,
                      _read_dict(output_dir, "seqtune_args.json"), _per_class(predictions))
    path = os.path.join(folder, "index.html")
    with atomic_write(path, encoding="utf-8") as f:
        f.write(page)
    return path
