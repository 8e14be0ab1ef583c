"""Training behaviour: pinned loss, gradient accumulation, regression, single sentences, token budgets, data view."""

from __future__ import annotations

import json
import os

import pytest
import torch

from seqtune.cli import main
from tests.conftest import write_csv


def read_log(out):
    return [json.loads(line) for line in open(os.path.join(out, "train_log.jsonl"))]


def losses(out):
    return [r["loss"] for r in read_log(out) if "loss" in r]


def train(model, files, out, *extra):
    args = ["train", "--model_name_or_path", model, "--train_file", files["train"], "--output_dir", out,
            "--no_bf16", "--logging_steps", "1", "--eval_strategy", "no", *extra]
    if "validation" in files:
        args += ["--validation_file", files["validation"]]
    assert main(args) == 0


def test_loss_after_four_steps_is_pinned(no_dropout_model, pair_files, tmp_path):
    out = str(tmp_path / "run")
    train(no_dropout_model, {"train": pair_files["train"]}, out, "--max_steps", "4", "--per_device_train_batch_size",
          "8", "--learning_rate", "1e-3", "--seed", "0", "--warmup_ratio", "0")
    observed = losses(out)
    assert len(observed) == 4
    # pinned on this machine (x86-64, float32, 2 threads); thread scheduling moves the 6th decimal
    assert observed == pytest.approx([0.689411, 0.676843, 0.693763, 0.683690], abs=2e-4)


def test_gradient_accumulation_matches_a_larger_batch(no_dropout_model, pair_files, tmp_path):
    """Batch 4 x 2 accumulation steps = batch 8, from the first step (no off-by-one)."""
    common = ["--max_steps", "5", "--learning_rate", "1e-3", "--seed", "3", "--weight_decay", "0", "--no_group_by_length"]
    train(no_dropout_model, {"train": pair_files["train"]}, str(tmp_path / "b8"), "--per_device_train_batch_size",
          "8", *common)
    train(no_dropout_model, {"train": pair_files["train"]}, str(tmp_path / "b4x2"),
          "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "2", *common)
    assert len(losses(str(tmp_path / "b4x2"))) == 5
    assert losses(str(tmp_path / "b4x2")) == pytest.approx(losses(str(tmp_path / "b8")), abs=1e-5)
    from safetensors.torch import load_file

    w8 = load_file(os.path.join(tmp_path, "b8", "model.safetensors"))
    w4 = load_file(os.path.join(tmp_path, "b4x2", "model.safetensors"))
    for name in w8:
        torch.testing.assert_close(w8[name], w4[name], atol=1e-5, rtol=1e-4)


def test_regression_with_float_labels(tiny_model, tmp_path, capsys):
    rows = [{"sentence1": f"the cat {i}", "sentence2": f"a dog {i % 3}", "label": float(i % 5)} for i in range(24)]
    files = {"train": write_csv(str(tmp_path / "train.csv"), rows[:16]),
             "validation": write_csv(str(tmp_path / "val.csv"), rows[16:])}
    out = str(tmp_path / "run")
    train(tiny_model, files, out, "--max_steps", "3", "--eval_strategy", "epoch")
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"eval_pearson", "eval_spearmanr"} <= set(results)
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["num_labels"] == 1 if "num_labels" in config else len(config["id2label"]) == 1


def test_single_sentences_with_string_labels_and_token_budget(tiny_model, tmp_path, capsys):
    rows = [{"text": f"the cat sat on the mat {'very ' * (i % 7)}happily", "label": ["neg", "pos"][i % 2]}
            for i in range(40)]
    files = {"train": write_csv(str(tmp_path / "train.csv"), rows[:32]),
             "validation": write_csv(str(tmp_path / "val.csv"), rows[32:])}
    out = str(tmp_path / "run")
    train(tiny_model, files, out, "--num_train_epochs", "1", "--max_tokens_per_batch", "128",
          "--pad_to_multiple_of", "8", "--eval_strategy", "epoch", "--bf16")
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert results["train_samples"] == 32  # every row once in one epoch
    assert {"eval_f1", "eval_accuracy"} <= set(results)
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["id2label"] == {"0": "neg", "1": "pos"}


def test_data_command_shows_splits_labels_lengths_and_padding(tiny_model, pair_files, capsys):
    assert main(["data", "--model_name_or_path", tiny_model, "--train_file", pair_files["train"],
                 "--validation_file", pair_files["validation"], "--per_device_train_batch_size", "8"]) == 0
    out = capsys.readouterr().out
    assert "DatasetDict({" in out and "num_rows: 48" in out
    assert "text: sentence1 + sentence2; label: label; metrics: f1, accuracy" in out
    assert "labels: 0=0, 1=1" in out
    header = next(line for line in out.splitlines() if line.startswith("split"))
    for column in ("mean", "p50", "p95", "max", "max_length", "dynamic", "grouped", "token_budget"):
        assert column in header


def test_bench_reports_every_strategy(tiny_model, pair_files, tmp_path, capsys):
    report_file = str(tmp_path / "bench.json")
    assert main(["bench", "--model_name_or_path", tiny_model, "--train_file", pair_files["train"], "--steps", "2",
                 "--warmup_steps", "1", "--per_device_train_batch_size", "8", "--output_file", report_file,
                 "--chart", str(tmp_path / "bench.png")]) == 0
    report = json.load(open(report_file))
    assert [r["config"] for r in report["results"]] == ["max_length", "dynamic", "grouped", "token_budget", "default"]
    for r in report["results"]:
        assert r["samples_per_second"] > 0 and 0 <= r["pad_fraction"] < 1 and 0 < r["mfu"] < 1
    assert next(r for r in report["results"] if r["config"] == "max_length")["pad_fraction"] > 0.5
    assert os.path.getsize(tmp_path / "bench.png") > 1000


def test_bench_compares_with_the_course_recipe_and_the_fair_peer(tiny_model, pair_files, tmp_path, capsys):
    report_file = str(tmp_path / "bench.json")
    assert main(["bench", "--model_name_or_path", tiny_model, "--train_file", pair_files["train"], "--steps", "2",
                 "--warmup_steps", "1", "--strategies", "default", "--compare", "trainer", "--trainer_samples", "32",
                 "--output_file", report_file]) == 0
    report = json.load(open(report_file))
    # the course recipe (batch 8) and the same Trainer given seqtune's levers (batch 32): about 32 samples each
    assert report["trainer"]["samples"] == 32 and report["trainer_fair_peer"]["samples"] == 32
    for peer in ("trainer", "trainer_fair_peer"):
        expected = report["results"][0]["samples_per_second"] / report[peer]["samples_per_second"]
        assert report[f"speedup_vs_{peer}"]["default"] == pytest.approx(expected, abs=0.01)
    printed = capsys.readouterr().out
    assert "vs fair" in printed and "fair peer: bf16, grouped by length, seqtune's default batch and lr; batch 32" in printed


def test_readme_library_snippet(tiny_model):
    from transformers import AutoConfig

    from seqtune import build_collator, build_optimizer, load_model, load_tokenizer, resolve_model_path

    checkpoint = resolve_model_path(tiny_model)
    tokenizer = load_tokenizer(checkpoint)
    model = load_model(checkpoint, AutoConfig.from_pretrained(checkpoint, num_labels=2))
    sequences = ["the mayor bought the boat.", "the boat was purchased by the mayor on monday."]
    features = [dict(tokenizer(s, truncation=True), labels=1) for s in sequences]
    batch = build_collator(tokenizer, "longest", max_length=128)(features)
    assert batch["input_ids"].shape[0] == 2
    optimizer = build_optimizer(model, learning_rate=5e-5, weight_decay=0.01)
    before = model.classifier.weight.detach().clone()
    loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    assert not torch.equal(before, model.classifier.weight)


def test_symmetric_pairs_train_on_both_orders_and_average_both_at_prediction(tiny_model, pair_files, tmp_path,
                                                                              capsys):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    out = str(tmp_path / "run")
    train(tiny_model, pair_files, out, "--max_steps", "3", "--per_device_train_batch_size", "8", "--symmetric_pairs", "true",
          "--eval_strategy", "epoch", "--learning_rate", "1e-3")
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert results["train_samples"] == 24  # 3 steps x 8 rows, drawn from the 96 rows of both orders
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["seqtune_symmetric_pairs"] is True
    # evaluate reproduces the training-time metrics, which average both orders
    assert main(["evaluate", "--model_name_or_path", out, "--train_file", pair_files["train"],
                 "--validation_file", pair_files["validation"]]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {k: metrics[k] for k in ("f1", "accuracy")} == {"f1": results["eval_f1"], "accuracy": results["eval_accuracy"]}
    # in bfloat16 the training model's attention (fast dropout's path) and the reloaded one's round differently
    assert metrics["loss"] == pytest.approx(results["eval_loss"], abs=1e-4)
    # one pair: the probability is the softmax of the mean of both orders' logits
    a, b = "the mayor bought the boat.", "the boat was bought by the mayor on monday."
    assert main(["predict", "--model_name_or_path", out, "--sentence1", a, "--sentence2", b]) == 0
    one = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    model, tokenizer = AutoModelForSequenceClassification.from_pretrained(out).eval(), AutoTokenizer.from_pretrained(out)
    with torch.no_grad():
        logits = (model(**tokenizer(a, b, return_tensors="pt")).logits
                  + model(**tokenizer(b, a, return_tensors="pt")).logits) / 2
    assert one["probability"] == pytest.approx(torch.softmax(logits, -1).max().item(), abs=1e-5)


def test_layerwise_lr_decay_gives_each_layer_its_rate(tiny_model):
    from transformers import AutoConfig

    from seqtune import build_optimizer, load_model, resolve_model_path

    checkpoint = resolve_model_path(tiny_model)
    model = load_model(checkpoint, AutoConfig.from_pretrained(checkpoint, num_labels=2))
    layers = model.config.num_hidden_layers
    optimizer = build_optimizer(model, learning_rate=1e-3, weight_decay=0.01, layerwise_lr_decay=0.5)
    rate = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert rate[id(named["classifier.weight"])] == (1e-3, 0.01)
    assert rate[id(named[f"bert.encoder.layer.{layers - 1}.output.dense.weight"])] == (1e-3 * 0.5, 0.01)
    assert rate[id(named["bert.encoder.layer.0.attention.output.LayerNorm.weight"])] == (1e-3 * 0.5 ** layers, 0.0)
    assert rate[id(named["bert.embeddings.word_embeddings.weight"])] == (1e-3 * 0.5 ** (layers + 1), 0.01)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(named)
    plain = build_optimizer(model, learning_rate=1e-3, weight_decay=0.01)
    assert {g["lr"] for g in plain.param_groups} == {1e-3} and len(plain.param_groups) == 2


def test_data_seed_orders_the_batches_and_nothing_else(no_dropout_model, pair_files, tmp_path):
    from safetensors.torch import load_file

    def run(name, *extra):
        out = str(tmp_path / name)
        train(no_dropout_model, {"train": pair_files["train"]}, out, "--max_steps", "4",
              "--per_device_train_batch_size", "8", "--seed", "7", *extra)
        return losses(out), load_file(os.path.join(out, "model.safetensors"))

    plain, same, other = run("plain"), run("same", "--data_seed", "7"), run("other", "--data_seed", "8")
    assert plain[0] == same[0] and all(torch.equal(plain[1][k], same[1][k]) for k in plain[1])  # default: --seed
    assert other[0] != plain[0]  # other batches
    # at a learning rate of 1e-30 the weights stay where training started (within 1e-29: zero biases move by
    # about lr), so one --seed is one initialisation (the new head too), whatever the --data_seed
    still = [run(f"lr0-{d}", "--learning_rate", "1e-30", "--data_seed", d)[1] for d in ("1", "2")]
    assert all(torch.allclose(still[0][k], still[1][k], rtol=0, atol=1e-29) for k in still[0])
    changed = run("lr0-seed", "--learning_rate", "1e-30", "--seed", "8")[1]
    assert not torch.equal(changed["classifier.weight"], still[0]["classifier.weight"])
