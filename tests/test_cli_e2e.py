"""The whole workflow through the real CLI: train -> evaluate -> predict, on a tiny model and a few dozen rows."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from seqtune.cli import main


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_train_evaluate_predict(tiny_model, pair_files, tmp_path, capsys):
    out = str(tmp_path / "run")
    data = ["--train_file", pair_files["train"], "--validation_file", pair_files["validation"],
            "--test_file", pair_files["test"]]
    assert main(["train", "--model_name_or_path", tiny_model, *data, "--output_dir", out, "--num_train_epochs", "2",
                 "--per_device_train_batch_size", "8", "--learning_rate", "1e-3", "--logging_steps", "2"]) == 0
    results = last_json(capsys.readouterr().out)

    # what train wrote
    for name in ("config.json", "model.safetensors", "tokenizer.json", "all_results.json", "train_log.jsonl"):
        assert os.path.isfile(os.path.join(out, name)), name
    with open(os.path.join(out, "all_results.json")) as f:
        saved = json.load(f)
    assert saved == results
    for key in ("eval_f1", "eval_accuracy", "train_runtime", "train_samples_per_second", "epoch"):
        assert key in saved, key
    assert saved["epoch"] == 2.0 and saved["global_step"] == 12  # 48 rows / 8 = 6 steps per epoch
    log = [json.loads(line) for line in open(os.path.join(out, "train_log.jsonl"))]
    assert [r["step"] for r in log if "loss" in r] == [2, 4, 6, 8, 10, 12]
    assert all(np.isfinite(r["loss"]) for r in log if "loss" in r)
    assert len([r for r in log if "eval_f1" in r]) == 2  # one evaluation per epoch

    # the saved model reloads with its label names
    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model.config.id2label == {0: "0", 1: "1"}  # integer labels keep their values as names

    # evaluate reproduces the metrics of the best checkpoint
    assert main(["evaluate", "--model_name_or_path", out, *data]) == 0
    metrics = last_json(capsys.readouterr().out)
    assert metrics["split"] == "validation" and metrics["rows"] == 16
    assert {k: metrics[k] for k in ("f1", "accuracy", "f1_macro", "loss")} == {
        k: saved[f"eval_{k}"] for k in ("f1", "accuracy", "f1_macro", "loss")}
    assert [row["label"] for row in metrics["per_class"]] == ["0", "1"]
    assert sum(row["support"] for row in metrics["per_class"]) == 16

    # predict writes one row per test example, and a reload of the model reproduces them
    pred_file = str(tmp_path / "pred.tsv")
    # (in float32, as the reference below: by default predict runs as the model was evaluated, here bfloat16)
    assert main(["predict", "--model_name_or_path", out, *data, "--output_file", pred_file, "--bf16", "false"]) == 0
    rows = list(csv.DictReader(open(pred_file), delimiter="\t"))
    # the input columns a user joins on, then the label name, its id and its probability
    assert len(rows) == 16 and list(rows[0]) == ["sentence1", "sentence2", "label", "idx", "prediction",
                                                 "prediction_id", "probability"]
    tokenizer = AutoTokenizer.from_pretrained(out)
    test_rows = list(csv.DictReader(open(pair_files["test"])))
    batch = tokenizer([r["sentence1"] for r in test_rows], [r["sentence2"] for r in test_rows], padding=True,
                      return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(model(**batch).logits, -1).numpy()
    expected = [model.config.id2label[i] for i in probs.argmax(-1)]
    assert [r["prediction"] for r in rows] == expected
    assert [int(r["prediction_id"]) for r in rows] == list(probs.argmax(-1))
    assert [r["sentence1"] for r in rows] == [r["sentence1"] for r in test_rows]
    np.testing.assert_allclose([float(r["probability"]) for r in rows], probs.max(-1), atol=1e-5)
    assert [int(r["idx"]) for r in rows] == [int(r["idx"]) for r in test_rows]

    # one pair from the command line
    assert main(["predict", "--model_name_or_path", out, "--sentence1", test_rows[0]["sentence1"],
                 "--sentence2", test_rows[0]["sentence2"], "--bf16", "false"]) == 0
    one = last_json(capsys.readouterr().out)
    assert one["prediction"] == expected[0]
    assert abs(one["probability"] - probs[0].max()) < 1e-5


def test_console_entry_point_help():
    result = subprocess.run([sys.executable, "-m", "seqtune", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    for command in ("train", "evaluate", "predict", "data", "bench"):
        assert command in result.stdout


def test_evaluate_and_predict_run_at_the_precision_training_evaluated_in(tiny_model, pair_files, tmp_path, capsys):
    """Training evaluates in bfloat16 autocast under --bf16 (its default) and records it: evaluate then repeats the
    run's figures by default; a model trained in float32 is evaluated in float32; --bf16 false/true overrides."""
    from types import SimpleNamespace

    from seqtune.predictor import eval_bf16

    module = torch.nn.Linear(2, 2)
    assert eval_bf16(None, SimpleNamespace(seqtune_eval_bf16=True), module) is True
    assert eval_bf16(None, SimpleNamespace(), module) is False  # a model seqtune did not train: float32
    assert eval_bf16(False, SimpleNamespace(seqtune_eval_bf16=True), module) is False
    assert eval_bf16(None, SimpleNamespace(seqtune_eval_bf16=True), object()) is False  # ONNX Runtime: as exported
    data = ["--train_file", pair_files["train"], "--validation_file", pair_files["validation"]]
    for flag, recorded in (("--bf16", True), ("--no_bf16", False)):
        out = str(tmp_path / flag)
        assert main(["train", "--model_name_or_path", tiny_model, *data, "--output_dir", out, "--max_steps", "6",
                     "--per_device_train_batch_size", "8", "--learning_rate", "3e-3", flag]) == 0
        saved = json.load(open(os.path.join(out, "all_results.json")))
        assert json.load(open(os.path.join(out, "config.json")))["seqtune_eval_bf16"] is recorded
        capsys.readouterr()
        scores = {}
        for precision in ([], ["--bf16", "false"], ["--bf16"]):
            assert main(["evaluate", "--model_name_or_path", out, *data, *precision]) == 0
            scores[tuple(precision)] = last_json(capsys.readouterr().out)["loss"]
        assert scores[()] == pytest.approx(saved["eval_loss"], abs=1e-4)  # the default repeats the run's evaluation
        assert scores[("--bf16",) if recorded else ("--bf16", "false")] == scores[()]
        assert scores[("--bf16", "false") if recorded else ("--bf16",)] != scores[()]  # the other precision differs
