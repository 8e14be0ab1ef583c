"""Bad input: a non-zero exit, one message naming the problem and the fix, no traceback, nothing written."""

from __future__ import annotations

import os

import pytest

from seqtune.cli import main
from tests.conftest import write_csv


def run_error(capsys, args, out=None):
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    if out is not None:
        assert not os.path.exists(out), "nothing may be written before the inputs are validated"
    return err


def train_args(tiny_model, pair_files, out, *extra):
    return ["train", "--model_name_or_path", tiny_model, "--train_file", pair_files["train"],
            "--validation_file", pair_files["validation"], "--output_dir", out, *extra]


def test_non_empty_output_dir_is_refused(tiny_model, pair_files, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    err = run_error(capsys, train_args(tiny_model, pair_files, str(out)))
    assert "is not empty: pass --overwrite_output_dir" in err
    assert os.listdir(out) == ["keep.txt"]


def test_every_flag_problem_reported_at_once(tiny_model, pair_files, tmp_path, capsys):
    out = str(tmp_path / "out")
    err = run_error(capsys, train_args(tiny_model, pair_files, out, "--per_device_train_batch_size", "0",
                                       "--learning_rate", "-1", "--task_name", "mrpx", "--dataloader_num_workers",
                                       "-1"), out)
    assert "--dataloader_num_workers must be 0 or more, got -1" in err
    assert "--per_device_train_batch_size must be a positive number, got 0" in err
    assert "--learning_rate must be a positive finite number, got -1.0" in err
    assert "--task_name 'mrpx' is not a known task; choose one of: cola, sst2, mrpc" in err


def test_loader_workers_with_a_stream_are_refused(tiny_model, pair_files, tmp_path, capsys):
    out = str(tmp_path / "out")
    err = run_error(capsys, train_args(tiny_model, pair_files, out, "--streaming", "--max_steps", "5",
                                       "--dataloader_num_workers", "2"), out)
    assert "--dataloader_num_workers: a stream is read in order by the training loop itself" in err


def test_missing_file(tiny_model, pair_files, tmp_path, capsys):
    out = str(tmp_path / "out")
    err = run_error(capsys, ["train", "--model_name_or_path", tiny_model, "--train_file", str(tmp_path / "nope.csv"),
                             "--output_dir", out], out)
    assert "--train_file" in err and "no such file" in err


def test_unknown_padding_strategy(tiny_model, pair_files, tmp_path, capsys):
    out = str(tmp_path / "out")
    err = run_error(capsys, train_args(tiny_model, pair_files, out, "--padding", "bucket"), out)
    assert "--padding" in err and "invalid choice" in err


def test_missing_text_column_names_the_flag(tiny_model, pair_files, tmp_path, capsys):
    out = str(tmp_path / "out")
    err = run_error(capsys, train_args(tiny_model, pair_files, out, "--text_column", "body"), out)
    assert "--text_column 'body' is not a column of the data" in err


def test_labels_unseen_in_train(tiny_model, tmp_path, capsys):
    train = write_csv(str(tmp_path / "train.csv"), [{"text": "a b", "label": "pos"}, {"text": "c d", "label": "neg"}])
    val = write_csv(str(tmp_path / "val.csv"), [{"text": "e f", "label": "meh"}])
    out = str(tmp_path / "out")
    err = run_error(capsys, ["train", "--model_name_or_path", tiny_model, "--train_file", train,
                             "--validation_file", val, "--output_dir", out], out)
    assert "labels ['meh'] in the validation split were never seen in training" in err


def test_max_seq_length_above_the_model_limit(tiny_model, pair_files, tmp_path, capsys):
    out = str(tmp_path / "out")
    err = run_error(capsys, train_args(tiny_model, pair_files, out, "--max_seq_length", "4096"), out)
    assert "--max_seq_length 4096 is above the model's limit of 128 tokens" in err


def test_padding_rounded_past_the_model_limit_is_refused_before_training(tiny_model, pair_files, tmp_path, capsys):
    """--pad_to_multiple_of 10 would pad rows of 127 tokens to 130 positions of a 128-position model: a crash in
    the middle of training, caught before anything is written."""
    out = str(tmp_path / "out")
    err = run_error(capsys, train_args(tiny_model, pair_files, out, "--max_seq_length", "127",
                                       "--pad_to_multiple_of", "10"), out)
    assert "rounds rows of --max_seq_length 127 up to 130, above the model's limit of 128" in err
    assert "--max_seq_length 120 or less" in err


@pytest.mark.parametrize("flag,name", [("--dataset_name", "someone/not-a-local-dataset"),
                                       ("--model_name_or_path", "someone/not-a-local-model")])
def test_hub_unreachable_is_one_line_with_local_alternatives(tiny_model, pair_files, tmp_path, capsys, flag, name):
    # HF_HUB_OFFLINE=1 (conftest) stands for "no network": the libraries answer at once from the empty cache
    out = str(tmp_path / "out")
    if flag == "--dataset_name":
        args = ["train", "--model_name_or_path", tiny_model, "--dataset_name", name, "--output_dir", out]
    else:
        args = ["train", "--model_name_or_path", name, "--train_file", pair_files["train"], "--output_dir", out]
    err = run_error(capsys, args, out)
    assert len(err.strip().splitlines()) == 1
    assert f"'{name}' from the Hugging Face Hub" in err and "PATH/TO/FOLDER" in err


def test_debug_shows_the_traceback(tiny_model, pair_files, tmp_path):
    from seqtune.errors import SeqtuneError

    with pytest.raises(SeqtuneError):
        main(train_args(tiny_model, pair_files, str(tmp_path / "o"), "--text_column", "body", "--debug"))


def test_evaluate_an_unlabelled_split(tiny_model, pair_files, tmp_path, capsys):
    err = run_error(capsys, ["evaluate", "--model_name_or_path", tiny_model, "--train_file", pair_files["train"],
                             "--test_file", pair_files["test"], "--split", "test"])
    assert "has no labels" in err and "seqtune predict" in err
