"""Every model family practitioners fine-tune goes through the whole CLI workflow: train, evaluate, predict a file
and one pair, and the saved folder reloads in transformers with the same predictions. Decoders are saved without a
pad token, as released; their classifier pools the last real token, whatever the padding."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch
from tests.families import DECODERS, FAMILIES, build_family
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

from seqtune.cli import main
from seqtune.fast_dropout import use_fast_dropout
from seqtune.model_family import match_model_to_tokenizer, model_inputs
from seqtune.modeling import load_tokenizer

_BUILT: dict[str, str] = {}


@pytest.fixture
def family_model(request, tmp_path_factory) -> str:
    family = request.param
    if family not in _BUILT:
        _BUILT[family] = build_family(family, str(tmp_path_factory.mktemp(f"family-{family}")))
    return _BUILT[family]


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def reference_predictions(folder: str, rows: list[dict]) -> tuple[list[str], np.ndarray]:
    """What transformers itself predicts with the saved folder: the labels and their probabilities."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    batch = tokenizer([r["sentence1"] for r in rows], [r["sentence2"] for r in rows], padding=True,
                      return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(model(**{k: batch[k] for k in model_inputs(tokenizer, model.config)}).logits,
                              -1).numpy()
    return [model.config.id2label[i] for i in probs.argmax(-1)], probs.max(-1)


@pytest.mark.parametrize("family_model", FAMILIES, indirect=True, ids=FAMILIES)
def test_family_trains_evaluates_predicts_and_reloads(family_model, pair_files, tmp_path, capsys):
    out = str(tmp_path / "run")
    data = ["--train_file", pair_files["train"], "--validation_file", pair_files["validation"],
            "--test_file", pair_files["test"]]
    assert main(["train", "--model_name_or_path", family_model, *data, "--output_dir", out, "--max_steps", "6",
                 "--per_device_train_batch_size", "8", "--learning_rate", "1e-3", "--disable_tqdm"]) == 0
    results = last_json(capsys.readouterr().out)
    assert results["global_step"] == 6 and np.isfinite(results["eval_accuracy"])
    log = [json.loads(line) for line in open(os.path.join(out, "train_log.jsonl"))]
    assert all(np.isfinite(r["loss"]) for r in log if "loss" in r)

    assert main(["evaluate", "--model_name_or_path", out, *data]) == 0
    metrics = last_json(capsys.readouterr().out)
    assert (metrics["f1"], metrics["accuracy"]) == (results["eval_f1"], results["eval_accuracy"])

    pred_file = str(tmp_path / "pred.tsv")
    assert main(["predict", "--model_name_or_path", out, *data, "--output_file", pred_file, "--bf16", "false"]) == 0
    rows = list(csv.DictReader(open(pred_file), delimiter="\t"))
    test_rows = list(csv.DictReader(open(pair_files["test"])))
    labels, probabilities = reference_predictions(out, test_rows)  # (float32, as predict --bf16 false)
    assert [r["prediction"] for r in rows] == labels
    np.testing.assert_allclose([float(r["probability"]) for r in rows], probabilities, atol=1e-4)

    assert main(["predict", "--model_name_or_path", out, "--sentence1", test_rows[0]["sentence1"],
                 "--sentence2", test_rows[0]["sentence2"], "--bf16", "false"]) == 0
    one = last_json(capsys.readouterr().out)
    assert one["prediction"] == labels[0] and abs(one["probability"] - probabilities[0]) < 1e-4


@pytest.mark.parametrize("family_model", DECODERS, indirect=True, ids=DECODERS)
def test_decoder_gets_a_pad_token_and_pools_the_last_real_token(family_model):
    assert AutoTokenizer.from_pretrained(family_model).pad_token is None  # as released
    tokenizer = load_tokenizer(family_model)
    assert tokenizer.pad_token == tokenizer.eos_token and tokenizer.padding_side == "right"
    pair = tokenizer("The mayor bought a boat.", "He purchased it.")["input_ids"]
    assert tokenizer.eos_token_id in pair[1:-1]  # the pair's texts are not run together
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(family_model, num_labels=2).eval()
    match_model_to_tokenizer(model, tokenizer)  # what every command does
    assert model.config.pad_token_id == tokenizer.pad_token_id
    short, long = "A short one.", "A much longer sentence that needs many more tokens than the first one does."
    alone = tokenizer([short], return_tensors="pt")
    padded = tokenizer([short, long], padding=True, return_tensors="pt")
    assert padded["attention_mask"][0].sum() < padded["attention_mask"].shape[1]  # the short row is padded
    with torch.no_grad():
        torch.testing.assert_close(model(**padded).logits[0], model(**alone).logits[0], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family_model", ["gpt2", "llama"], indirect=True, ids=["gpt2", "llama"])
def test_fast_dropout_keeps_a_decoder_causal(family_model):
    """With dropout on, position i's state must not depend on tokens after i (same seed = same masks)."""
    config = AutoConfig.from_pretrained(family_model, num_labels=2, attention_dropout=0.2, attn_pdrop=0.2,
                                        resid_pdrop=0.2, embd_pdrop=0.2)
    model = AutoModelForSequenceClassification.from_pretrained(family_model, config=config)
    assert "causal attention left to transformers' SDPA" in use_fast_dropout(model)
    model.train()
    ids = torch.randint(3, 200, (2, 12))
    changed = ids.clone()
    changed[:, 8:] = torch.randint(3, 200, (2, 4))
    states = []
    for batch in (ids, changed):
        torch.manual_seed(5)
        states.append(model.base_model(input_ids=batch).last_hidden_state[:, :8])
    torch.testing.assert_close(states[0], states[1])


def test_one_token_type_rule_for_every_family(tmp_path):
    """Segment ids reach the model only where it embeds two or more types (BERT, ELECTRA)."""
    wanted = {"bert": True, "electra": True, "distilbert": False, "roberta": False, "deberta-v2": False,
              "xlm-roberta": False, "modernbert": False, "gpt2": False}
    for family, uses in wanted.items():
        folder = _BUILT.get(family) or build_family(family, str(tmp_path / family))
        tokenizer, config = load_tokenizer(folder), AutoConfig.from_pretrained(folder)
        assert ("token_type_ids" in model_inputs(tokenizer, config)) is uses, family


@pytest.mark.parametrize("family_model", FAMILIES, indirect=True, ids=FAMILIES)
def test_family_with_lora_and_gradient_checkpointing(family_model, pair_files, tmp_path, capsys):
    """LoRA's default targets (every linear layer of the body) and gradient checkpointing on every family; the
    merged model is a plain transformers model that evaluate scores as the run did."""
    out = str(tmp_path / "run")
    assert main(["train", "--model_name_or_path", family_model, "--train_file", pair_files["train"],
                 "--validation_file", pair_files["validation"], "--output_dir", out, "--max_steps", "3",
                 "--per_device_train_batch_size", "8", "--lora_r", "4", "--gradient_checkpointing",
                 "--disable_tqdm"]) == 0
    results = last_json(capsys.readouterr().out)
    AutoModelForSequenceClassification.from_pretrained(out)
    assert main(["evaluate", "--model_name_or_path", out, "--validation_file", pair_files["validation"]]) == 0
    metrics = last_json(capsys.readouterr().out)
    assert (metrics["f1"], metrics["accuracy"]) == (results["eval_f1"], results["eval_accuracy"])


def test_a_tokenizer_without_pad_or_eos_gets_a_new_pad_token(pair_files, tmp_path, capsys, caplog):
    """No EOS to pad with either: a new '<pad>' token, the embeddings grow by one row, and the saved model and
    tokenizer agree (transformers reloads them and predicts as seqtune did)."""
    from tests.families import build_model, build_tokenizer

    folder = str(tmp_path / "gpt2-no-eos")
    tokenizer = build_tokenizer("gpt2")
    model = build_model("gpt2", tokenizer)
    tokenizer.eos_token = tokenizer.bos_token = tokenizer.unk_token = None
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    out = str(tmp_path / "run")
    with caplog.at_level("INFO", logger="seqtune"):
        assert main(["train", "--model_name_or_path", folder, "--train_file", pair_files["train"],
                     "--validation_file", pair_files["validation"], "--output_dir", out, "--max_steps", "3",
                     "--per_device_train_batch_size", "8", "--disable_tqdm"]) == 0
    assert "added a new pad token '<pad>'" in caplog.text and "Resizing the token embeddings" in caplog.text
    rows = list(csv.DictReader(open(pair_files["validation"])))
    reloaded = AutoTokenizer.from_pretrained(out)
    assert reloaded.pad_token == "<pad>" and reloaded.pad_token_id == len(reloaded) - 1
    saved = AutoModelForSequenceClassification.from_pretrained(out)
    assert saved.get_input_embeddings().num_embeddings == len(reloaded)
    assert saved.config.pad_token_id == reloaded.pad_token_id
    labels, _ = reference_predictions(out, rows)
    predictions = json.load(open(os.path.join(out, "eval_predictions.json")))["predictions"]
    assert [saved.config.id2label[p] for p in predictions] == labels


def test_a_tokenizer_with_a_pad_token_keeps_its_padding_side(tmp_path):
    """XLNet pads on the left and classifies from the last position: seqtune leaves it so, and its logits do not
    change when padding is added."""
    folder = build_family("xlnet", str(tmp_path / "xlnet"))
    tokenizer = load_tokenizer(folder)
    assert tokenizer.padding_side == "left" and not getattr(tokenizer, "seqtune_added_pad", False)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2).eval()
    before = model.config.pad_token_id
    match_model_to_tokenizer(model, tokenizer)
    assert model.config.pad_token_id == before
    short, long = "A short one.", "A much longer sentence that needs many more tokens than the first one does."
    with torch.no_grad():
        alone = model(**tokenizer([short], return_tensors="pt")).logits[0]
        padded = model(**tokenizer([short, long], padding=True, return_tensors="pt")).logits[0]
    torch.testing.assert_close(padded, alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family_model", ["bert", "gpt2", "llama"], indirect=True)
def test_the_top_layers_are_reinitialised_and_nothing_else(family_model, pair_files, tmp_path, capsys):
    from seqtune.modeling import encoder_layers, reinit_top_layers

    model = AutoModelForSequenceClassification.from_pretrained(family_model, num_labels=2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    layers = encoder_layers(model)
    assert layers is not None and len(layers) == model.config.num_hidden_layers
    assert reinit_top_layers(model, 1) == 1
    top = {id(p) for p in layers[-1].parameters()}
    top_names = {n for n, p in model.named_parameters() if id(p) in top}
    changed = {n for n, p in model.named_parameters() if not p.detach().equal(before[n])}
    assert changed and changed <= top_names  # the top layer, nothing below it, not the head
    assert {n for n in top_names if p_dim(model, n) == 2} <= changed  # every matrix of the layer, GPT-2's Conv1D too
    assert reinit_top_layers(model, 0) == 0
    code = main(["train", "--model_name_or_path", family_model, "--train_file", pair_files["train"], "--output_dir",
                 str(tmp_path / "x"), "--reinit_top_layers", "-1"])
    assert code == 2 and "--reinit_top_layers must be a number of layers" in capsys.readouterr().err
    assert main(["train", "--model_name_or_path", family_model, "--train_file", pair_files["train"], "--output_dir",
                 str(tmp_path / "run"), "--reinit_top_layers", "2", "--max_steps", "2",
                 "--per_device_train_batch_size", "8"]) == 0


def p_dim(model, name: str) -> int:
    return dict(model.named_parameters())[name].dim()
