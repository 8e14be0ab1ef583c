"""Multi-label classification end to end through the real CLI: a label column of lists, or several 0/1 columns;
sigmoid + BCE; the threshold chosen on the validation split; train -> evaluate -> predict, each pinned to the
others (evaluate gives back training's figures; predict's rows are the saved model's sigmoid at the threshold)."""

from __future__ import annotations

import csv
import json
import os
import random

import numpy as np
import pytest
import torch

from seqtune.cli import main
from tests.conftest import write_csv

TOPICS = {"boat": "water", "ship": "water", "dog": "animal", "cat": "animal", "car": "road", "bus": "road"}
FILLER = ["the", "a", "big", "small", "red", "old", "new", "mayor", "saw", "bought"]


def rows(n: int, seed: int) -> list[dict]:
    """Texts naming one or two things; their labels are the topics of those things (any subset of 3 labels)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        things = rng.sample(list(TOPICS), rng.choice([1, 2]))
        out.append({"idx": i, "text": " ".join(rng.sample(FILLER, 3) + things + rng.sample(FILLER, 2)),
                    "labels": sorted({TOPICS[t] for t in things})})
    return out


def write_jsonl(path, items) -> str:
    with open(path, "w") as f:
        f.writelines(json.dumps(item) + "\n" for item in items)
    return str(path)


@pytest.fixture
def list_files(tmp_path):
    return {split: write_jsonl(tmp_path / f"{split}.jsonl", rows(n, seed))
            for split, n, seed in (("train", 64, 0), ("validation", 24, 1), ("test", 8, 2))}


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_multi_label_train_evaluate_predict(tiny_model, list_files, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--model_name_or_path", tiny_model, "--train_file", list_files["train"],
                 "--validation_file", list_files["validation"], "--output_dir", out, "--num_train_epochs", "10",
                 "--per_device_train_batch_size", "8", "--learning_rate", "1e-2", "--no_bf16", "--seed", "1"]) == 0
    results = last_json(capsys)
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["problem_type"] == "multi_label_classification"
    assert config["id2label"] == {"0": "animal", "1": "road", "2": "water"}
    threshold = config["seqtune_threshold"]
    assert 0.05 <= threshold <= 0.95 and results["main_metric"] == "f1_micro"
    # it learns: above the micro F1 of predicting every label for every row (80 steps at lr 1e-2 amplify thread
    # scheduling's last bits, so the figures are not pinned here; test_metrics pins them on fixed logits)
    truth = np.array([[t in r["labels"] for t in ("animal", "road", "water")] for r in rows(24, 1)])
    every_label = 2 * truth.mean() / (truth.mean() + 1)
    assert results["eval_f1_micro"] > every_label + 0.05 and results["eval_subset_accuracy"] > 0.2

    # evaluate scores the validation split at the saved threshold: the training-time figures
    assert main(["evaluate", "--model_name_or_path", out, "--validation_file", list_files["validation"]]) == 0
    evaluated = last_json(capsys)
    assert evaluated["split"] == "validation" and evaluated["rows"] == 24
    for key in ("f1_micro", "f1_macro", "subset_accuracy", "loss"):
        assert evaluated[key] == pytest.approx(results[f"eval_{key}"], abs=1e-6)
    assert [row["label"] for row in evaluated["per_class"]] == ["animal", "road", "water"]
    assert [row["support"] for row in evaluated["per_class"]] == truth.sum(0).tolist()

    # predict: the input columns, the labels at or above the threshold by name and id, every probability
    pred = str(tmp_path / "pred.csv")
    assert main(["predict", "--model_name_or_path", out, "--test_file", list_files["test"], "--output_file",
                 pred]) == 0
    written = list(csv.DictReader(open(pred)))
    assert list(written[0]) == ["idx", "text", "labels", "prediction", "prediction_id", "probabilities"]
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model, tokenizer = AutoModelForSequenceClassification.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    texts = [r["text"] for r in rows(8, 2)]
    with torch.no_grad():
        probabilities = torch.sigmoid(model(**tokenizer(texts, padding=True, return_tensors="pt")).logits).numpy()
    for row, p in zip(written, probabilities):
        on = [i for i in range(3) if p[i] >= threshold]
        assert row["prediction_id"] == ",".join(map(str, on))
        assert row["prediction"] == ",".join(model.config.id2label[i] for i in on)
        np.testing.assert_allclose([float(x) for x in row["probabilities"].split(",")], p, atol=1e-5)


def test_several_binary_columns_are_multi_label(tiny_model, tmp_path, capsys):
    def as_columns(items):
        return [{"text": r["text"], **{t: int(t in r["labels"]) for t in ("water", "animal", "road")}}
                for r in items]

    train = write_csv(str(tmp_path / "train.csv"), as_columns(rows(32, 0)))
    validation = write_csv(str(tmp_path / "validation.csv"), as_columns(rows(12, 1)))
    out = str(tmp_path / "run")
    assert main(["train", "--model_name_or_path", tiny_model, "--train_file", train, "--validation_file", validation,
                 "--label_columns", "water", "animal", "road", "--output_dir", out, "--max_steps", "4",
                 "--class_weights", "auto", "--no_bf16"]) == 0
    results = last_json(capsys)
    assert {"eval_f1_micro", "eval_f1_macro", "eval_subset_accuracy", "eval_loss"} <= set(results)
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["id2label"] == {"0": "water", "1": "animal", "2": "road"}  # the columns' order
    assert main(["evaluate", "--model_name_or_path", out, "--validation_file", validation, "--label_columns",
                 "water", "animal", "road"]) == 0
    in_order = last_json(capsys)
    assert in_order["rows"] == 12
    # the columns named in another order are read in the model's order: the same figures, the same names
    assert main(["evaluate", "--model_name_or_path", out, "--validation_file", validation, "--label_columns",
                 "animal", "road", "water"]) == 0
    assert last_json(capsys) == in_order
    # left out: the model's labels are the data's columns, so they are its label columns
    assert main(["evaluate", "--model_name_or_path", out, "--validation_file", validation]) == 0
    assert last_json(capsys) == in_order
    assert main(["evaluate", "--model_name_or_path", out, "--validation_file", validation, "--label_columns",
                 "animal", "road"]) == 2
    assert "the model was fine-tuned on the columns water animal road" in capsys.readouterr().err
    # predict needs no label columns: a file without them, the YAML's --label_columns still given
    unlabelled = write_csv(str(tmp_path / "new.csv"), [{"text": r["text"]} for r in rows(4, 3)])
    assert main(["predict", "--model_name_or_path", out, "--test_file", unlabelled, "--label_columns", "water",
                 "animal", "road", "--output_file", str(tmp_path / "p.csv")]) == 0
    bad = write_csv(str(tmp_path / "bad.csv"), [{"text": "a", "water": 2, "animal": 0, "road": 1}] * 4)
    code = main(["train", "--model_name_or_path", tiny_model, "--train_file", bad, "--label_columns", "water",
                 "animal", "road", "--output_dir", str(tmp_path / "bad")])
    assert code == 2 and "column 'water' of the train split holds [2]" in capsys.readouterr().err



def test_a_multi_label_base_model_does_not_make_training_multi_label(tiny_model, pair_files, tmp_path):
    """Fine-tuning from a checkpoint whose head was multi-label (a toxicity classifier, an earlier run): the data
    decides, here single-label pairs."""
    import shutil

    base = str(tmp_path / "base")
    shutil.copytree(tiny_model, base)
    config_path = os.path.join(base, "config.json")
    json.dump({**json.load(open(config_path)), "problem_type": "multi_label_classification"}, open(config_path, "w"))
    out = str(tmp_path / "run")
    assert main(["train", "--model_name_or_path", base, "--train_file", pair_files["train"], "--validation_file",
                 pair_files["validation"], "--output_dir", out, "--max_steps", "2"]) == 0
    assert json.load(open(os.path.join(out, "config.json"))).get("problem_type") != "multi_label_classification"


def test_a_soup_or_ensemble_of_multi_label_runs_takes_their_mean_threshold(tiny_model, list_files, tmp_path):
    import shutil

    from seqtune.ensemble import write_ensemble
    from seqtune.soup import write_soup

    run = str(tmp_path / "run")
    assert main(["train", "--model_name_or_path", tiny_model, "--train_file", list_files["train"],
                 "--validation_file", list_files["validation"], "--output_dir", run, "--max_steps", "2",
                 "--per_device_train_batch_size", "8", "--no_bf16"]) == 0
    members = []
    for name, threshold in (("a", 0.3), ("b", 0.5)):  # two runs that chose other thresholds
        member = shutil.copytree(run, str(tmp_path / name / "seed-1"))
        config = json.load(open(os.path.join(member, "config.json")))
        json.dump({**config, "seqtune_threshold": threshold}, open(os.path.join(member, "config.json"), "w"))
        members.append(member)
    for folder in (write_soup(members, str(tmp_path / "soup")), write_ensemble(members, str(tmp_path / "ens"))):
        assert json.load(open(os.path.join(folder, "config.json")))["seqtune_threshold"] == pytest.approx(0.4)


def test_a_null_label_list_is_refused_and_an_all_null_split_is_prediction_only(tiny_model, list_files, tmp_path,
                                                                                capsys):
    items = rows(24, 5)
    items[6]["labels"] = None
    train = write_jsonl(tmp_path / "t.jsonl", items)
    out = str(tmp_path / "run")
    assert main(["train", "--model_name_or_path", tiny_model, "--train_file", train, "--output_dir", out]) == 2
    assert "the training split has rows without labels (row 7 of column 'labels' is empty)" in capsys.readouterr().err
    assert not os.path.exists(out)
    items[6]["labels"] = []  # a row with none of the labels: trained as such
    write_jsonl(tmp_path / "t.jsonl", items)
    unlabelled = write_jsonl(tmp_path / "u.jsonl", [{**r, "labels": None} for r in rows(6, 9)])
    assert main(["train", "--model_name_or_path", tiny_model, "--train_file", train, "--output_dir", out,
                 "--max_steps", "2", "--eval_strategy", "no"]) == 0
    capsys.readouterr()
    assert main(["evaluate", "--model_name_or_path", out, "--validation_file", unlabelled]) == 2
    assert "has no labels" in capsys.readouterr().err  # not scored as six rows of no labels
    predictions = str(tmp_path / "p.jsonl")
    assert main(["predict", "--model_name_or_path", out, "--test_file", unlabelled, "--output_file", predictions]) == 0
    assert len(open(predictions).readlines()) == 6
