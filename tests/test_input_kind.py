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
