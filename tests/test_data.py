"""Data layer: loading formats, column inference, label mapping, token_type_ids, the tokenization cache."""

from __future__ import annotations

import json
import logging
import os
import shutil

import pytest
from datasets import ClassLabel, Dataset, DatasetDict, Value
from transformers import AutoConfig, AutoTokenizer

from seqtune.data import Columns, load_raw_datasets, prepare_labels, resolve_columns, tokenize_datasets
from seqtune.demo_data.generate import make_paraphrase_pairs
from seqtune.errors import SeqtuneError
from seqtune.model_family import uses_token_type_ids
from seqtune.tasks import GLUE_TASKS
from tests.conftest import build_tiny_bert, write_csv

ROWS = make_paraphrase_pairs(12, seed=1)


@pytest.mark.parametrize("ext", [".csv", ".tsv", ".json", ".jsonl", ".parquet"])
def test_load_each_file_format(tmp_path, ext):
    path = str(tmp_path / f"train{ext}")
    if ext in (".csv", ".tsv"):
        write_csv(path, ROWS, delimiter="\t" if ext == ".tsv" else ",")
    elif ext == ".parquet":
        Dataset.from_list(ROWS).to_parquet(path)
    else:
        with open(path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in ROWS)
    raw = load_raw_datasets(None, None, train_file=path)
    assert isinstance(raw, DatasetDict) and list(raw) == ["train"]
    assert raw["train"].num_rows == 12
    assert raw["train"][0]["sentence1"] == ROWS[0]["sentence1"]


def test_csv_texts_stay_as_written_and_label_columns_keep_their_types(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,text,label,score,toxic\n007,NA,1,0.5,0\n008,None,,1.5,1\n009,123,0,NA,0\n")
    raw = load_raw_datasets(None, None, train_file=str(path), label_columns=["label", "score", "toxic"])["train"]
    assert raw["id"] == ["007", "008", "009"] and raw["text"] == ["NA", "None", "123"]
    assert raw["label"][0] == 1 and raw["label"][1] is None and raw["score"][2] is None  # pandas' missing values
    assert raw.features["score"].dtype == "float64" and raw.features["toxic"].dtype == "int64"
    raw = load_raw_datasets(None, None, train_file=str(path), label_columns=["score"])["train"]
    assert raw["label"] == ["1", None, "0"]  # not a label column here: text, only the empty cell missing
    from seqtune.config import DataArguments
    from seqtune.data import label_column_candidates

    assert "target" not in label_column_candidates(DataArguments(text_column="target"))  # a text column named so
    assert label_column_candidates(DataArguments(label_column="y", label_columns=["a"])) == ["y", "a"]


def test_load_local_folder_like_the_hub():
    raw = load_raw_datasets("seqtune/demo_data/paraphrase", None)
    assert list(raw) == ["train", "validation", "test"]
    assert raw["train"].features["label"].names == ["not_equivalent", "equivalent"]


def test_columns_inferred_for_pairs_and_single_sentences(caplog):
    with caplog.at_level(logging.INFO, logger="seqtune"):
        assert resolve_columns(["idx", "sentence1", "sentence2", "label"], None) == Columns("sentence1", "sentence2",
                                                                                            "label")
    assert "Inferred text column(s): sentence1 + sentence2" in caplog.text
    assert resolve_columns(["text", "label"], None) == Columns("text", None, "label")
    assert resolve_columns(["question", "sentence", "label"], None) == Columns("question", "sentence", "label")
    assert resolve_columns(["a", "b", "y"], None, "a", "b", "y") == Columns("a", "b", "y")
    assert resolve_columns(["premise", "hypothesis", "label"], GLUE_TASKS["mnli"]) == Columns("premise", "hypothesis",
                                                                                             "label")


def test_missing_columns_are_named():
    with pytest.raises(SeqtuneError) as error:
        resolve_columns(["foo", "bar"], None, label_column="gold")
    message = str(error.value)
    assert "no text column found among ['foo', 'bar']" in message and "--text_column" in message
    assert "--label_column 'gold' is not a column" in message


def _dd(**splits) -> DatasetDict:
    return DatasetDict({k: Dataset.from_dict(v) for k, v in splits.items()})


def test_classlabel_names_and_prediction_only_split():
    feature = ClassLabel(names=["no", "yes"])
    raw = DatasetDict({
        "train": Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]}).cast_column("label", feature),
        "test": Dataset.from_dict({"text": ["c"], "label": [-1]}).cast_column("label", Value("int64")),
    })
    _, info = prepare_labels(raw, "label", None)
    assert info.names == ("no", "yes") and info.labelled_splits == ("train",)


def test_string_labels_map_deterministically():
    raw = _dd(train={"text": ["a", "b", "c"], "label": ["pos", "neg", "pos"]},
              validation={"text": ["d"], "label": ["neg"]})
    mapped, info = prepare_labels(raw, "label", None)
    assert info.names == ("neg", "pos")
    assert mapped["train"]["label"] == [1, 0, 1] and mapped["validation"]["label"] == [0]


def test_float_labels_mean_regression():
    raw = _dd(train={"text": ["a", "b"], "label": [0.5, 4.25]})
    mapped, info = prepare_labels(raw, "label", None)
    assert info.is_regression and info.num_labels == 1
    assert mapped["train"].features["label"].dtype == "float32"


def test_labels_unseen_in_train_are_named():
    raw = _dd(train={"text": ["a", "b"], "label": ["pos", "neg"]},
              validation={"text": ["c", "d"], "label": ["neutral", "pos"]})
    with pytest.raises(SeqtuneError, match=r"labels \['neutral'\] in the validation split were never seen"):
        prepare_labels(raw, "label", None)


def test_unlabelled_training_rows_are_refused():
    raw = _dd(train={"text": ["a", "b", "c"], "label": [0, -1, 1]})
    with pytest.raises(SeqtuneError, match="training split has rows without a label"):
        prepare_labels(raw, "label", None)


def _tokenize(raw, model_dir, max_length=64, **kwargs):
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    config = AutoConfig.from_pretrained(model_dir)
    columns = resolve_columns(raw["train"].column_names, None)
    return tokenize_datasets(raw, tokenizer, columns, max_length, uses_token_type_ids(tokenizer, config), **kwargs)


def test_pairs_get_token_type_ids_on_bert(tiny_model):
    raw = DatasetDict({"train": Dataset.from_list(ROWS)})
    tokenized = _tokenize(raw, tiny_model)["train"]
    assert set(tokenized.column_names) == {"input_ids", "token_type_ids", "attention_mask", "length", "labels"}
    row = tokenized[0]
    assert row["token_type_ids"][0] == 0 and row["token_type_ids"][-1] == 1  # second sentence is segment 1
    assert row["length"] == len(row["input_ids"])
    assert tokenized["labels"] == [r["label"] for r in ROWS]


def test_token_type_ids_dropped_where_the_model_has_none(tmp_path):
    model_dir = build_tiny_bert(str(tmp_path / "single-type"), type_vocab_size=1)
    raw = DatasetDict({"train": Dataset.from_list(ROWS)})
    assert "token_type_ids" not in _tokenize(raw, model_dir)["train"].column_names


def test_single_sentences_and_truncation(tiny_model):
    raw = DatasetDict({"train": Dataset.from_dict({"text": [r["sentence1"] * 5 for r in ROWS], "label": [0] * 12})})
    tokenized = _tokenize(raw, tiny_model, max_length=16)["train"]
    assert max(tokenized["length"]) == 16
    assert all(set(t) == {0} for t in tokenized["token_type_ids"])


def test_cache_reuse_is_reported_with_several_workers(tiny_model, tmp_path, caplog):
    raw = DatasetDict({"train": Dataset.from_list(make_paraphrase_pairs(40, seed=2))})
    cache = str(tmp_path / "cache")
    with caplog.at_level(logging.INFO, logger="seqtune"):
        first = _tokenize(raw, tiny_model, cache_dir=cache, num_proc=2)
        caplog.clear()
        second = _tokenize(raw, tiny_model, cache_dir=cache, num_proc=2)
    assert "Reusing tokenized cache for the train split" in caplog.text
    assert second["train"]["input_ids"] == first["train"]["input_ids"]


def test_cache_reused_and_invalidated(tiny_model, tmp_path, caplog):
    raw = DatasetDict({"train": Dataset.from_list(ROWS)})
    cache = str(tmp_path / "cache")
    with caplog.at_level(logging.INFO, logger="seqtune"):
        _tokenize(raw, tiny_model, cache_dir=cache)
        assert "Tokenizing the train split" in caplog.text
        caplog.clear()
        _tokenize(raw, tiny_model, cache_dir=cache)  # identical: reused
        assert "Reusing tokenized cache for the train split" in caplog.text
        caplog.clear()
        _tokenize(raw, tiny_model, max_length=32, cache_dir=cache)  # other max length: redone
        assert "Tokenizing the train split" in caplog.text
        caplog.clear()
        changed = DatasetDict({"train": Dataset.from_list([{**ROWS[0], "sentence2": "changed"}] + ROWS[1:])})
        _tokenize(changed, tiny_model, cache_dir=cache)  # other data: redone
        assert "Tokenizing the train split" in caplog.text
        caplog.clear()
        copy = shutil.copytree(tiny_model, str(tmp_path / "copy"))
        # the same tokenizer from another folder: the key is its content, not its path, so the cache is reused...
        _tokenize(raw, copy, cache_dir=cache)
        assert "Reusing" in caplog.text
    # ...while a different vocabulary is a different tokenizer
    tok = AutoTokenizer.from_pretrained(tiny_model)
    vocab = dict(tok.get_vocab())
    vocab["zzzz"] = len(vocab)
    from transformers import BertTokenizer
    BertTokenizer(vocab=vocab).save_pretrained(str(tmp_path / "bigger-vocab"))
    AutoConfig.from_pretrained(tiny_model).save_pretrained(str(tmp_path / "bigger-vocab"))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="seqtune"):
        _tokenize(raw, str(tmp_path / "bigger-vocab"), cache_dir=cache)
    assert "Tokenizing the train split" in caplog.text
    names = os.listdir(os.path.join(cache, "tokenized"))
    assert len([n for n in names if n.endswith(".arrow")]) == 4
    assert sorted(n + ".crc32" for n in names if n.endswith(".arrow")) == sorted(n for n in names if n.endswith(".crc32"))
