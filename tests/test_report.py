"""The model card and the report, built from run folders written by hand: Hub metadata that loads back with
huggingface_hub, label names shown literally, and odd or missing files that never make the report raise."""

from __future__ import annotations

import json
import os

import pytest
from huggingface_hub import ModelCard

from seqtune.report import build_report, write_model_card

PNG = b"\x89PNG\r\n\x1a\n"
ODD_LABELS = ["$x^2$", "a_b\\c", "<b>", "50% $off", "$\\oops$"]  # the last is invalid mathtext: it raises if parsed


def _write(folder, name: str, content) -> None:
    with open(os.path.join(folder, name), "w") as f:
        f.write(content if isinstance(content, str) else json.dumps(content))


def _run_folder(folder, model: dict, data: dict, labels: list[str], weights: bool = True) -> str:
    """What a finished classification run leaves, with two evaluations and a NaN metric."""
    os.makedirs(folder)
    _write(folder, "seqtune_args.json", {"data": {"max_seq_length": 64, **data}, "model": model,
                                         "training": {"learning_rate": 1e-4, "seed": 3},
                                         "text_column": "sentence1", "text_pair_column": "sentence2"})
    _write(folder, "all_results.json", {"eval_f1": 0.875, "eval_accuracy": 0.8125, "eval_pearson": float("nan"),
                                        "best_step": 12, "epoch": 2.0, "global_step": 12, "train_runtime": 3.5,
                                        "train_samples_per_second": 27.4, "train_samples": 96,
                                        "evaluated_split": "validation"})
    _write(folder, "config.json", {"id2label": {str(i): n for i, n in enumerate(labels)},
                                   "seqtune_symmetric_pairs": True})
    _write(folder, "eval_predictions.json", {"split": "validation", "label_names": labels,
                                             "labels": list(range(len(labels))) * 2,
                                             "predictions": list(range(len(labels)))[::-1] * 2})
    _write(folder, "train_log.jsonl", '{"step": 6, "loss": 0.69, "learning_rate": 1e-4}\n'
                                      '{"step": 6, "epoch": 1.0, "eval_f1": NaN, "eval_accuracy": 0.5}\n'
                                      '{"step": 12, "loss": 0.41, "learning_rate": 0.0}\n'
                                      '{"step": 12, "epoch": 2.0, "eval_f1": 0.875, "eval_accuracy": 0.8125}\n'
                                      '{"step": 13, "lo')  # the last line cut short by a kill
    _write(folder, "token_lengths.json", {"histogram": [0, 0, 4, 9, 3], "pad_fraction": {"dynamic": 0.21}})
    if weights:
        _write(folder, "model.safetensors", "")
    return str(folder)


def test_card_front_matter_and_model_index_load_back(tmp_path):
    from seqtune.modeling import resolve_model_path

    out = _run_folder(tmp_path / "mrpc-run", {"model_name_or_path": None, "resolved": resolve_model_path(None)},
                      {"task_name": "mrpc"}, ["not_equivalent", "equivalent"])
    card = ModelCard.load(write_model_card(out))
    data = card.data
    assert data.base_model == "sentence-transformers/all-MiniLM-L6-v2"
    assert data.license == "apache-2.0"  # from the embedded base model's own card
    assert (data.datasets, data.library_name, data.pipeline_tag) == (["nyu-mll/glue"], "transformers",
                                                                     "text-classification")
    assert data.tags == ["seqtune", "text-classification"] and data.model_name == "mrpc-run"
    results = [(r.task_type, r.dataset_type, r.dataset_name, r.dataset_config, r.dataset_split, r.metric_type,
                r.metric_value) for r in data.eval_results]
    assert results == [("text-classification", "nyu-mll/glue", "GLUE MRPC", "mrpc", "validation", "f1", 0.875),
                       ("text-classification", "nyu-mll/glue", "GLUE MRPC", "mrpc", "validation", "accuracy",
                        0.8125)]  # the NaN pearson is not a result
    for section in ("## Labels", "## Results", "## Hyperparameters", "## How to use", "## Limitations"):
        assert section in card.text
    assert "`0` = `not_equivalent`, `1` = `equivalent`" in card.text
    assert f'pipeline("text-classification", model={json.dumps(out)})' in card.text
    assert "average both orders of each pair" in card.text and "- learning_rate: 0.0001" in card.text


def test_card_of_a_local_base_model_and_local_files(tmp_path, tiny_model):
    out = _run_folder(tmp_path / "run", {"model_name_or_path": tiny_model, "resolved": tiny_model},
                      {"train_file": "train.csv", "validation_file": "dev.csv"}, ODD_LABELS, weights=False)
    card = ModelCard.load(write_model_card(out))
    assert card.data.base_model is None and card.data.license is None  # a local folder is no Hub id
    assert card.data.datasets is None
    assert {r.dataset_type for r in card.data.eval_results} == {"local"}
    assert "`4` = `$\\oops$`" in card.text and "`2` = `<b>`" in card.text  # code spans: shown as written
    assert "holds no model weights" in card.text and "pipeline(" not in card.text


def test_report_shows_odd_label_names_literally(tmp_path):
    out = _run_folder(tmp_path / "run", {"model_name_or_path": None}, {"task_name": None}, ODD_LABELS)
    page = open(build_report(out)).read()
    for name in ("loss_lr.png", "metrics.png", "confusion.png", "lengths.png"):
        assert f'<img src="{name}"' in page
        assert open(os.path.join(out, "report", name), "rb").read(8) == PNG
    assert "<code>&lt;b&gt;</code>" in page and "<b>" not in page
    for name in ("$x^2$", "a_b\\c", "50% $off", "$\\oops$"):
        assert f"<code>{name}</code>" in page


def test_report_and_card_of_broken_or_empty_folders_do_not_raise(tmp_path):
    empty = str(tmp_path / "empty")
    os.makedirs(empty)
    page = open(build_report(empty)).read()
    assert "No training log." in page and "no results yet" in page
    assert ModelCard.load(write_model_card(empty)).data.eval_results is None

    broken = str(tmp_path / "broken")
    os.makedirs(broken)
    _write(broken, "all_results.json", '{"eval_f1": 0.5, "ev')  # cut short
    _write(broken, "seqtune_args.json", "[1, 2]")  # not an object
    _write(broken, "train_log.jsonl", "")
    _write(broken, "eval_predictions.json", {"label_names": ["a"], "labels": [0, 7], "predictions": [None, 0]})
    _write(broken, "token_lengths.json", {"histogram": "none"})
    page = open(build_report(broken)).read()
    assert "<img" not in page
    assert "## Labels" in open(write_model_card(broken)).read()


@pytest.mark.parametrize("missing", ["train_log.jsonl", "eval_predictions.json", "token_lengths.json"])
def test_report_leaves_out_only_the_plot_whose_file_is_missing(tmp_path, missing):
    out = _run_folder(tmp_path / "run", {"model_name_or_path": None}, {}, ["no", "yes"])
    os.remove(os.path.join(out, missing))
    images = {"train_log.jsonl": {"confusion.png", "lengths.png"},
              "eval_predictions.json": {"loss_lr.png", "metrics.png", "lengths.png"},
              "token_lengths.json": {"loss_lr.png", "metrics.png", "confusion.png"}}[missing]
    page = open(build_report(out)).read()
    assert {name for name in ("loss_lr.png", "metrics.png", "confusion.png", "lengths.png")
            if f'<img src="{name}"' in page} == images


def test_report_summary_units_hyperparameters_per_class_and_validation_loss(tmp_path):
    from seqtune.report import _plot_loss_lr, _read_log

    out = _run_folder(tmp_path / "run", {"model_name_or_path": "bert-base-uncased"}, {"task_name": "mrpc"},
                      ["not_equivalent", "equivalent"])
    _write(out, "all_results.json", {"eval_f1": 0.875, "eval_loss": 0.41, "best_step": 12, "global_step": 18,
                                     "epoch": 3.0, "train_runtime": 103.564, "train_samples_per_second": 27.4,
                                     "main_metric": "loss", "greater_is_better": False, "stopped_early": True,
                                     "evaluated_split": "validation", "phase_seconds": {"training": 103.6}})
    with open(os.path.join(out, "train_log.jsonl"), "a") as f:
        f.write('\n{"step": 6, "epoch": 1.0, "eval_loss": 0.6}\n{"step": 12, "epoch": 2.0, "eval_loss": 0.41}\n')
    page = open(build_report(out)).read()
    for text in ("<td>base model</td><td>bert-base-uncased</td>", "<td>data</td><td>GLUE MRPC</td>",
                 "<td>training time</td><td>103.6 s</td>", "<td>throughput</td><td>27.4 samples/s</td>",
                 "step 12 of 18 (epoch 3), chosen by loss (lower is better), stopped early",
                 "<td>time per phase</td><td>training 103.6 s</td>", "<td>learning_rate</td><td>0.0001</td>",
                 "<th>precision</th>", "<td>max_seq_length</td><td>64</td>"):
        assert text in page, text
    # every row of the fixture's evaluation is predicted as the other label: per-class precision 0, support 2
    assert page.count("<td>0.0000</td><td>0.0000</td><td>0.0000</td><td>2</td>") == 2
    figure = _plot_loss_lr(_read_log(out))
    labels = [line.get_label() for ax in figure.axes for line in ax.get_lines()]
    assert labels == ["training loss", "validation loss", "learning rate"]


def test_card_has_the_per_class_table_and_front_matter_that_validates(tmp_path):
    from huggingface_hub import ModelCardData

    out = _run_folder(tmp_path / "run", {"model_name_or_path": "bert-base-uncased"}, {"task_name": "mrpc"},
                      ["not_equivalent", "equivalent"])
    card = ModelCard.load(write_model_card(out))
    assert "| `not_equivalent` | 0.0000 | 0.0000 | 0.0000 | 2 |" in card.text
    data = card.data.to_dict()
    assert data["base_model"] == "bert-base-uncased" and data["datasets"] == ["nyu-mll/glue"]
    assert data["metrics"] == ["f1", "accuracy"]  # finite ones only (the fixture's pearson is NaN)
    # the model-index the Hub reads parses back into evaluation results
    again = ModelCardData(**data)
    assert [(r.metric_type, r.metric_value, r.dataset_split) for r in again.eval_results] == [
        ("f1", 0.875, "validation"), ("accuracy", 0.8125, "validation")]
