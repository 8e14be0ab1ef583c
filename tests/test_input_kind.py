"""A model fine-tuned on text pairs is refused single texts, and one fine-tuned on single texts is refused pairs, in
every way of giving it input (--sentence1/--sentence2, standard input, a data file, Parquet shards): either would
score without a sign that the numbers mean nothing. The refusal names the fix, leaves nothing behind that blocks
the fixed command, and models without the record (another tool's) are not checked."""

from __future__ import annotations

import io
import json
import os

import pytest

from seqtune.cli import main
from seqtune.config import ModelArguments
from seqtune.errors import SeqtuneError
from tests.conftest import write_csv


def _train(tiny_model, train_file, out, *extra) -> str:
    assert main(["train", "--model_name_or_path", tiny_model, "--train_file", train_file, "--output_dir", out,
                 "--max_steps", "2", "--eval_strategy", "no", "--disable_tqdm", "--report_to", "none", *extra]) == 0
    return out


@pytest.fixture(scope="module")
def pair_model(tiny_model, pair_files, tmp_path_factory) -> str:
    return _train(tiny_model, pair_files["train"], str(tmp_path_factory.mktemp("kind") / "pairs"))


@pytest.fixture(scope="module")
def single_model(tiny_model, pair_files, tmp_path_factory) -> str:
    """Trained on the pair file's first column alone."""
    return _train(tiny_model, pair_files["train"], str(tmp_path_factory.mktemp("kind") / "single"),
                  "--text_column", "sentence1")


def test_the_saved_config_records_the_kind(pair_model, single_model):
    assert json.load(open(os.path.join(pair_model, "config.json")))["seqtune_text_pairs"] is True
    assert json.load(open(os.path.join(single_model, "config.json")))["seqtune_text_pairs"] is False


def test_one_input_of_the_other_kind_is_refused_with_its_fix(pair_model, single_model, capsys):
    assert main(["predict", "--model_name_or_path", pair_model, "--sentence1", "a boat"]) == 2
    err = capsys.readouterr().err
    assert "fine-tuned on text pairs, but --sentence1 alone holds single texts" in err and "--sentence2" in err
    assert main(["predict", "--model_name_or_path", single_model, "--sentence1", "a", "--sentence2", "b"]) == 2
    assert "leave out --sentence2" in capsys.readouterr().err
    assert main(["predict", "--model_name_or_path", pair_model, "--sentence1", "a", "--sentence2", "b"]) == 0
    assert main(["predict", "--model_name_or_path", single_model, "--sentence1", "a"]) == 0


def test_standard_input_of_the_other_kind_is_refused(pair_model, single_model):
    from seqtune.evaluate import predict_stream

    with pytest.raises(SeqtuneError, match="fine-tuned on text pairs, but standard input holds single texts"):
        predict_stream(ModelArguments(model_name_or_path=pair_model), io.StringIO("a\nb\n"), io.StringIO(), 32, 8)
    with pytest.raises(SeqtuneError, match="one text on each line, without tabs"):
        predict_stream(ModelArguments(model_name_or_path=single_model), io.StringIO("a\tb\n"), io.StringIO(), 32, 8)
    # empty lines before the first text take the model's kind: a pair model reads them as empty pairs
    out = io.StringIO()
    rows = predict_stream(ModelArguments(model_name_or_path=pair_model), io.StringIO("\n\na\tb\n"), out, 32, 2)
    assert len(rows) == 3 == len(out.getvalue().splitlines())


def test_a_data_file_of_the_other_kind_is_refused_and_the_named_fix_works(single_model, pair_files, tmp_path,
                                                                         capsys):
    out = str(tmp_path / "p.jsonl")
    data = ["--model_name_or_path", single_model, "--validation_file", pair_files["validation"]]
    assert main(["evaluate", *data]) == 2
    assert "fine-tuned on single texts, but the data holds text pairs" in capsys.readouterr().err
    assert main(["predict", *data, "--output_file", out]) == 2
    assert "--text_column" in capsys.readouterr().err and not os.path.exists(out)
    assert main(["evaluate", *data, "--text_column", "sentence1"]) == 0
    assert main(["predict", *data, "--output_file", out, "--text_column", "sentence1"]) == 0


def test_a_single_text_file_given_to_a_pair_model_is_refused(pair_model, tmp_path, capsys):
    rows = [{"text": f"the boat {i}", "label": i % 2} for i in range(6)]
    single = write_csv(str(tmp_path / "single.csv"), rows)
    assert main(["evaluate", "--model_name_or_path", pair_model, "--validation_file", single]) == 2
    assert "--text_pair_column" in capsys.readouterr().err


def test_parquet_shards_of_the_other_kind_leave_no_record_that_blocks_the_fix(single_model, pair_files, tmp_path,
                                                                             capsys):
    import pandas as pd

    shard = str(tmp_path / "in.parquet")
    pd.read_csv(pair_files["test"]).to_parquet(shard)
    out = str(tmp_path / "shards")
    command = ["predict", "--model_name_or_path", single_model, "--test_file", shard, "--predictions_dir", out]
    assert main(command) == 2
    assert "fine-tuned on single texts" in capsys.readouterr().err
    assert main([*command, "--text_column", "sentence1"]) == 0  # not "a run with other settings"
    assert sum(len(pd.read_parquet(os.path.join(out, f))) for f in os.listdir(out) if f.endswith(".parquet")) == 16


def test_a_model_without_the_record_is_not_checked(pair_model, tmp_path):
    import shutil

    old = str(tmp_path / "old")
    shutil.copytree(pair_model, old)
    config = json.load(open(os.path.join(old, "config.json")))
    del config["seqtune_text_pairs"]  # as seqtune wrote it before the record, or another tool
    json.dump(config, open(os.path.join(old, "config.json"), "w"))
    assert main(["predict", "--model_name_or_path", old, "--sentence1", "a boat"]) == 0


def test_evaluate_and_predict_truncate_as_training_did_unless_told(tiny_model, tmp_path, capsys):
    """A model trained with --max_seq_length 8 on rows whose signal sits in their first words: evaluate, predict and
    the stdin stream left without the flag truncate at 8 as training did (and repeat its figures); given the flag,
    they use it."""
    import random

    rng = random.Random(0)
    filler = ["the", "a", "mayor", "saw", "boat", "dog", "ran", "old", "red", "new"]
    rows = [{"text": " ".join([("good great" if i % 2 else "bad awful")] + rng.choices(filler, k=rng.randint(20, 40))),
             "label": i % 2} for i in range(96)]
    train, validation = write_csv(str(tmp_path / "t.csv"), rows[:64]), write_csv(str(tmp_path / "v.csv"), rows[64:])
    out = str(tmp_path / "run")
    assert main(["train", "--model_name_or_path", tiny_model, "--train_file", train, "--validation_file", validation,
                 "--output_dir", out, "--max_steps", "24", "--max_seq_length", "8", "--learning_rate", "3e-3",
                 "--no_bf16", "--disable_tqdm", "--report_to", "none"]) == 0
    assert json.load(open(os.path.join(out, "config.json")))["seqtune_max_seq_length"] == 8
    saved = json.load(open(os.path.join(out, "all_results.json")))
    capsys.readouterr()
    assert main(["evaluate", "--model_name_or_path", out, "--validation_file", validation]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["loss"] == pytest.approx(saved["eval_loss"], abs=1e-5)
    assert main(["evaluate", "--model_name_or_path", out, "--validation_file", validation, "--max_seq_length",
                 "128"]) == 0
    longer = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert abs(longer["loss"] - saved["eval_loss"]) > 1e-2  # the flag, when given, is obeyed
    from seqtune.evaluate import predict_stream

    text = rows[64]["text"]
    streamed = predict_stream(ModelArguments(model_name_or_path=out), io.StringIO(text + "\n"), io.StringIO(), None, 8)
    assert main(["predict", "--model_name_or_path", out, "--sentence1", text, "--max_seq_length", "8"]) == 0
    told = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["predict", "--model_name_or_path", out, "--sentence1", text]) == 0
    left_out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert left_out["probability"] == told["probability"] == streamed[0]["probability"]


def test_an_unlabelled_validation_file_is_refused_with_a_fix_that_applies(pair_model, pair_files, capsys):
    assert main(["evaluate", "--model_name_or_path", pair_model, "--validation_file", pair_files["test"]]) == 2
    err = capsys.readouterr().err
    assert "has no labels" in err and "seqtune predict" in err and "--split validation" not in err
