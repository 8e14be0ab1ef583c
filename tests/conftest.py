"""Shared fixtures: a tiny random BERT with a WordPiece tokenizer trained here, and small paraphrase files.
Nothing here touches the network (the Makefile also sets HF_HUB_OFFLINE=1)."""

from __future__ import annotations

import csv
import json
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from seqtune.demo_data.generate import make_paraphrase_pairs  # noqa: E402


def build_tiny_bert(folder: str, type_vocab_size: int = 2, max_position_embeddings: int = 128) -> str:
    """A 2-layer, 32-wide random BERT and a WordPiece tokenizer trained on the demo sentences, saved like a
    pre-trained checkpoint (encoder only: loading it for classification adds a fresh head)."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import BertConfig, BertModel, BertTokenizer

    sentences = [r[k] for r in make_paraphrase_pairs(400, seed=123) for k in ("sentence1", "sentence2")]
    wordpiece = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    wordpiece.normalizer = normalizers.BertNormalizer(lowercase=True)
    wordpiece.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    wordpiece.train_from_iterator(sentences, trainers.WordPieceTrainer(
        vocab_size=300, special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]))
    tokenizer = BertTokenizer(vocab=wordpiece.get_vocab(), model_max_length=max_position_embeddings)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=max_position_embeddings,
                        type_vocab_size=type_vocab_size)
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    return build_tiny_bert(str(tmp_path_factory.mktemp("tiny-bert")))


@pytest.fixture(scope="session")
def no_dropout_model(tmp_path_factory) -> str:
    """The tiny BERT without dropout: runs that must match step for step (accumulation, several processes)."""
    folder = build_tiny_bert(str(tmp_path_factory.mktemp("tiny-nodrop")))
    config_path = os.path.join(folder, "config.json")
    with open(config_path) as f:
        config = json.load(f)
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    with open(config_path, "w") as f:
        json.dump(config, f)
    return folder


def write_csv(path: str, rows: list[dict], delimiter: str = ",") -> str:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter=delimiter)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def pair_files(tmp_path_factory) -> dict[str, str]:
    """train (48 rows), validation (16) and test (16, labels -1) CSV files of generated paraphrase pairs."""
    folder = tmp_path_factory.mktemp("pairs")
    rows = make_paraphrase_pairs(80, seed=7)
    test = [{**r, "label": -1} for r in rows[64:]]
    return {"train": write_csv(str(folder / "train.csv"), rows[:48]),
            "validation": write_csv(str(folder / "validation.csv"), rows[48:64]),
            "test": write_csv(str(folder / "test.csv"), test)}


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch) -> str:
    """Each test gets its own tokenization cache."""
    cache = str(tmp_path / "seqtune-cache")
    monkeypatch.setenv("SEQTUNE_CACHE", cache)
    return cache
