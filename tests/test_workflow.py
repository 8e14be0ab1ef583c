"""The workflow around a run: one YAML config for every command, prediction files that keep their inputs, what a
finished run keeps, file modes, the console while training, and the trackers --report_to reaches."""

from __future__ import annotations

import csv
import json
import logging
import os
import stat

import pytest

from seqtune.cli import main
from tests.conftest import write_csv


def train(tiny_model, pair_files, out, *extra):
    return main(["train", "--model_name_or_path", tiny_model, "--train_file", pair_files["train"], "--validation_file",
                 pair_files["validation"], "--output_dir", out, "--per_device_train_batch_size", "8", "--max_steps",
                 "4", "--logging_steps", "2", "--disable_tqdm", *extra])


def test_one_yaml_drives_data_train_evaluate_predict(tiny_model, pair_files, tmp_path, capsys, caplog):
    out, predictions = str(tmp_path / "run"), str(tmp_path / "predictions.tsv")
    config = tmp_path / "workflow.yaml"
    config.write_text(f"train_file: {pair_files['train']}\nvalidation_file: {pair_files['validation']}\n"
                      f"test_file: {pair_files['test']}\nmax_seq_length: 64\n"
                      # training-only keys, and one of predict's: the other commands ignore them
                      "learning_rate: 0.001\nmax_steps: 3\npadding: longest\nper_device_train_batch_size: 8\n"
                      "early_stopping_patience: 2\nkeep_columns: [idx]\nseeds: [1, 2]\n")
    with caplog.at_level(logging.INFO, logger="seqtune"):
        assert main(["data", "--config", str(config), "--model_name_or_path", tiny_model]) == 0
        assert main(["train", "--config", str(config), "--model_name_or_path", tiny_model, "--output_dir", out]) == 0
        assert json.load(open(os.path.join(out, "all_results.json")))["global_step"] == 3
        assert main(["evaluate", "--config", str(config), "--model_name_or_path", out]) == 0
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["rows"] == 16
        assert main(["predict", "--config", str(config), "--model_name_or_path", out, "--output_file",
                     predictions]) == 0
    assert list(csv.DictReader(open(predictions), delimiter="\t"))[0].keys() == {"idx", "prediction",
                                                                                  "prediction_id", "probability"}
    ignored = [r.getMessage() for r in caplog.records if "ignoring the keys of other commands" in r.getMessage()]
    assert len(ignored) == 4  # once per command that ignored some
    assert "learning_rate" in ignored[2] and "padding" in ignored[2] and "keep_columns" in ignored[2]  # evaluate's
    # a key no command knows is still an error
    config.write_text("learning_rat: 0.1\n")
    assert main(["evaluate", "--config", str(config), "--model_name_or_path", out]) == 2
    assert "unknown key 'learning_rat' (did you mean 'learning_rate'?)" in capsys.readouterr().err


def test_evaluate_and_predict_refuse_training_flags(tiny_model, pair_files, tmp_path, capsys):
    code = main(["evaluate", "--model_name_or_path", tiny_model, "--validation_file", pair_files["validation"],
                 "--padding", "max_length"])
    assert code == 2 and "unknown flag --padding" in capsys.readouterr().err


@pytest.fixture(scope="module")
def finished(tiny_model, pair_files, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("finished") / "run")
    old = os.umask(0o022)
    try:
        assert train(tiny_model, pair_files, out) == 0
    finally:
        os.umask(old)
    return out


def test_prediction_files_keep_the_input_columns(finished, pair_files, tmp_path, capsys):
    test_rows = list(csv.DictReader(open(pair_files["test"])))
    every = str(tmp_path / "every.jsonl")
    assert main(["predict", "--model_name_or_path", finished, "--test_file", pair_files["test"], "--output_file",
                 every]) == 0
    rows = [json.loads(line) for line in open(every)]
    assert list(rows[0]) == ["sentence1", "sentence2", "label", "idx", "prediction", "prediction_id", "probability"]
    assert [r["sentence2"] for r in rows] == [r["sentence2"] for r in test_rows]
    assert all(r["prediction"] == str(r["prediction_id"]) for r in rows)  # labels 0/1 are named "0"/"1"
    chosen = str(tmp_path / "chosen.csv")
    assert main(["predict", "--model_name_or_path", finished, "--test_file", pair_files["test"], "--output_file",
                 chosen, "--keep_columns", "idx"]) == 0
    assert list(next(csv.DictReader(open(chosen)))) == ["idx", "prediction", "prediction_id", "probability"]
    assert main(["predict", "--model_name_or_path", finished, "--test_file", pair_files["test"], "--output_file",
                 chosen, "--keep_columns", "none"]) == 0
    assert list(next(csv.DictReader(open(chosen)))) == ["prediction", "prediction_id", "probability"]
    code = main(["predict", "--model_name_or_path", finished, "--test_file", pair_files["test"], "--output_file",
                 chosen, "--keep_columns", "id"])
    assert code == 2 and "--keep_columns id: not columns of the data" in capsys.readouterr().err


def test_prediction_files_copy_the_label_column_as_the_file_writes_it(tiny_model, tmp_path):
    """Labels given as names (or with a float's digits) are copied as written, not as the ids they were mapped to,
    by every output format and by --predictions_dir alike."""
    import pandas as pd

    rows = [{"text": f"words {i} here", "label": ["neg", "pos"][i % 2]} for i in range(12)]
    path = write_csv(str(tmp_path / "named.csv"), rows)
    out = str(tmp_path / "run")
    assert main(["train", "--model_name_or_path", tiny_model, "--train_file", path, "--output_dir", out,
                 "--max_steps", "2", "--disable_tqdm", "--report_to", "none"]) == 0
    for suffix in (".csv", ".tsv", ".jsonl"):
        written = str(tmp_path / f"p{suffix}")
        assert main(["predict", "--model_name_or_path", out, "--test_file", path, "--output_file", written]) == 0
        frame = (pd.read_json(written, lines=True) if suffix == ".jsonl"
                 else pd.read_csv(written, sep="\t" if suffix == ".tsv" else ","))
        assert frame["label"].tolist() == [r["label"] for r in rows], suffix
    assert main(["predict", "--model_name_or_path", out, "--test_file", path, "--predictions_dir",
                 str(tmp_path / "shards")]) == 0
    assert pd.read_parquet(str(tmp_path / "shards"))["label"].tolist() == [r["label"] for r in rows]
    # a column the model cannot read as its labels (a float `score` with gaps, a label it never saw) is data to copy
    odd = write_csv(str(tmp_path / "odd.csv"), [{"text": "a b", "score": 0.5, "label": "maybe"},
                                                {"text": "c d", "score": "", "label": "pos"}])
    written = str(tmp_path / "odd.jsonl")
    assert main(["predict", "--model_name_or_path", out, "--test_file", odd, "--output_file", written]) == 0
    frame = pd.read_json(written, lines=True)
    assert frame["score"].tolist()[0] == 0.5 and pd.isna(frame["score"].tolist()[1])
    assert frame["label"].tolist() == ["maybe", "pos"] and set(frame["prediction"]) <= {"neg", "pos"}


@pytest.mark.parametrize("label_set", [(1, 2), (-2, 0, 1), (1, 2, 3, 4, 5)])
def test_evaluate_reads_integer_labels_as_training_named_them(tiny_model, tmp_path, capsys, label_set):
    """Integer labels other than 0..K-1 (star ratings 1..5, {1, 2}, {-2, 0, 1}): training names each by its value,
    so evaluate maps a label 2 to the name "2", not to id 2; it repeats training's figures, and a file of one class
    is scored on that class."""
    rows = [{"text": f"words {i} {'good' if i % 2 else 'bad'}", "label": label_set[i % len(label_set)]}
            for i in range(30)]
    path = write_csv(str(tmp_path / "ints.csv"), rows)
    out = str(tmp_path / "run")
    assert main(["train", "--model_name_or_path", tiny_model, "--train_file", path, "--validation_file", path,
                 "--output_dir", out, "--max_steps", "3", "--no_bf16", "--disable_tqdm", "--report_to", "none"]) == 0
    trained = json.load(open(os.path.join(out, "all_results.json")))
    capsys.readouterr()
    assert main(["evaluate", "--model_name_or_path", out, "--validation_file", path, "--bf16", "false"]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["accuracy"] == pytest.approx(trained["eval_accuracy"])
    assert evaluated["loss"] == pytest.approx(trained["eval_loss"], abs=1e-4)
    last = write_csv(str(tmp_path / "last.csv"), [r for r in rows if r["label"] == label_set[-1]])
    assert main(["evaluate", "--model_name_or_path", out, "--validation_file", last, "--bf16", "false"]) == 0
    per_class = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["per_class"]
    expected = len([r for r in rows if r["label"] == label_set[-1]])
    assert {c["label"]: c["support"] for c in per_class if c["support"]} == {str(label_set[-1]): expected}


def test_a_finished_run_keeps_what_a_user_needs(finished, tiny_model, pair_files, tmp_path):
    assert not [n for n in os.listdir(finished) if n.startswith("checkpoint-")]  # no optimizer state left
    for name in ("model.safetensors", "config.json", "tokenizer.json", "all_results.json", "train_log.jsonl",
                 "README.md"):
        assert os.path.isfile(os.path.join(finished, name)), name
    kept = str(tmp_path / "kept")
    assert train(tiny_model, pair_files, kept, "--save_optimizer_state_on_finish") == 0
    assert os.path.isfile(os.path.join(kept, "checkpoint-4", "optimizer.bin"))  # resumable, as asked


def test_saved_files_have_the_folders_usual_mode(finished):
    for name in ("model.safetensors", "config.json", "all_results.json"):
        assert stat.S_IMODE(os.stat(os.path.join(finished, name)).st_mode) == 0o644, name


def test_console_loss_lines_when_the_bar_is_off_and_quiet_checkpoints(tiny_model, pair_files, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        assert train(tiny_model, pair_files, str(tmp_path / "run"), "--save_steps", "2") == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "seqtune"]
    assert [line.split(":")[0] for line in lines if line.startswith("step ")] == ["step 2/4", "step 4/4"]
    assert not [r for r in caplog.records if r.name.startswith("accelerate")]  # a line per file: debug only


def test_report_to_wandb_offline_through_accelerate(tiny_model, pair_files, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = str(tmp_path / "run")
    assert train(tiny_model, pair_files, out, "--report_to", "jsonl", "wandb") == 0
    runs = [n for n in os.listdir(os.path.join(out, "wandb")) if n.startswith("offline-run-")]
    assert len(runs) == 1 and any(f.endswith(".wandb") for f in os.listdir(os.path.join(out, "wandb", runs[0])))


def test_report_to_mlflow_file_store(tiny_model, pair_files, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")  # a local store: offline
    assert train(tiny_model, pair_files, str(tmp_path / "run"), "--report_to", "mlflow") == 0
    runs = mlflow.search_runs(experiment_names=["seqtune"])
    assert len(runs) == 1 and runs["metrics.loss"].notna().all() and "params.training.learning_rate" in runs


def test_evaluate_and_predict_tokenize_only_the_split_they_use(finished, pair_files, tmp_path, caplog):
    data = ["--train_file", pair_files["train"], "--validation_file", pair_files["validation"], "--test_file",
            pair_files["test"]]
    with caplog.at_level(logging.INFO, logger="seqtune"):
        assert main(["evaluate", "--model_name_or_path", finished, *data]) == 0
        assert main(["predict", "--model_name_or_path", finished, *data, "--output_file",
                     str(tmp_path / "p.tsv")]) == 0
    tokenized = [r.getMessage().split(" (")[0] for r in caplog.records if " split " in r.getMessage()
                 and ("Tokenizing" in r.getMessage() or "Reusing" in r.getMessage())]
    assert tokenized == ["Tokenizing the validation split", "Tokenizing the test split"]
    assert not [r for r in caplog.records if "Evaluating" in r.getMessage()]


@pytest.mark.parametrize("split_flags", [["--split", "tset"], []])
def test_evaluate_names_the_splits_when_the_wanted_one_is_missing(tiny_model, pair_files, tmp_path, capsys,
                                                                  split_flags):
    """A --split typo, or data with train and test but no validation: exit 2 listing the splits (was a bare
    StopIteration, exit 1)."""
    out = str(tmp_path / "run")
    assert main(["train", "--model_name_or_path", tiny_model, "--train_file", pair_files["train"],
                 "--validation_file", pair_files["validation"], "--output_dir", out, "--max_steps", "2"]) == 0
    capsys.readouterr()
    code = main(["evaluate", "--model_name_or_path", out, "--train_file", pair_files["train"], "--test_file",
                 pair_files["test"], *split_flags])
    err = capsys.readouterr().err
    assert code == 2 and "no such split" in err and "StopIteration" not in err


def test_evaluate_on_data_without_labels_says_so(finished, tmp_path, capsys):
    data = write_csv(str(tmp_path / "nolabel.csv"), [{"sentence1": f"a {i}", "sentence2": f"b {i}"} for i in range(4)])
    capsys.readouterr()
    assert main(["evaluate", "--model_name_or_path", finished, "--validation_file", data]) == 2
    assert "the data has no label column (its columns: sentence1, sentence2)" in capsys.readouterr().err
