"""LoRA through peft, gradient checkpointing, loading in bfloat16, and the memory estimate: what they change and
what they must not."""

from __future__ import annotations

import json
import os
import warnings

import pytest
import torch
from tests.families import build_family
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from seqtune.cli import main
from seqtune.lora import apply_lora
from seqtune.model_size import estimate_training_memory


def lora_cmd(model, files, out, *extra):
    return ["train", "--model_name_or_path", model, "--train_file", files["train"], "--validation_file",
            files["validation"], "--output_dir", out, "--per_device_train_batch_size", "8", "--max_steps", "6",
            "--lora_r", "4", "--disable_tqdm", "--seed", "3", "--save_optimizer_state_on_finish", *extra]


def test_lora_changes_only_the_adapters_and_the_head(tiny_model, pair_files, tmp_path):
    out = str(tmp_path / "run")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(lora_cmd(tiny_model, pair_files, out)) == 0
    # peft's question to transformers about a renamed attribute is no concern of the user's
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
    trained = load_file(os.path.join(out, "checkpoint-6", "model.safetensors"))
    fresh = apply_lora(AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2), 4, None, 0.1,
                       None).state_dict()
    assert trained.keys() == fresh.keys()
    frozen = [k for k in trained if not any(part in k for part in ("lora_", "modules_to_save", "original_module"))]
    assert any("base_layer" in k for k in frozen) and any("embeddings" in k for k in frozen)
    for key in frozen:  # the pre-trained weights, bit for bit
        assert trained[key].equal(fresh[key]), key
    adapters = [k for k in trained if "lora_B" in k]  # peft starts B at zero: any change is training
    assert adapters and all(trained[k].abs().sum() > 0 for k in adapters)
    heads = [k for k in trained if "modules_to_save" in k]
    assert {k.split(".modules_to_save")[0] for k in heads} == {"base_model.model.classifier",
                                                              "base_model.model.bert.pooler"}
    assert all(not trained[k].equal(trained[k.replace("modules_to_save.default", "original_module")]) for k in heads)


def test_merged_model_reproduces_the_adapter_model(tiny_model, pair_files, tmp_path, capsys):
    """The default save (merged into a plain transformers model) and --save_adapter_only give the same logits; the
    adapter folder is what evaluate and predict load, onto its base model."""
    from peft import PeftModel

    merged_dir, adapter_dir = str(tmp_path / "merged"), str(tmp_path / "adapter")
    assert main(lora_cmd(tiny_model, pair_files, merged_dir)) == 0
    assert main(lora_cmd(tiny_model, pair_files, adapter_dir, "--save_adapter_only")) == 0
    assert not os.path.exists(os.path.join(merged_dir, "adapter_config.json"))
    assert os.path.getsize(os.path.join(adapter_dir, "adapter_model.safetensors")) < \
        os.path.getsize(os.path.join(merged_dir, "model.safetensors"))
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    batch = tokenizer(["a man buys a boat", "the cat sat"], ["a boat is bought", "the dog ran"], padding=True,
                      return_tensors="pt")
    merged = AutoModelForSequenceClassification.from_pretrained(merged_dir).eval()
    base = AutoModelForSequenceClassification.from_pretrained(tiny_model, config=merged.config)
    adapter = PeftModel.from_pretrained(base, adapter_dir).eval()
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, adapter(**batch).logits, atol=1e-5, rtol=1e-4)
    capsys.readouterr()
    for folder in (merged_dir, adapter_dir):
        assert main(["evaluate", "--model_name_or_path", folder, "--validation_file", pair_files["validation"]]) == 0
    merged_metrics, adapter_metrics = (json.loads(line) for line in capsys.readouterr().out.strip().splitlines())
    for key in ("f1", "accuracy", "rows", "split"):
        assert merged_metrics[key] == adapter_metrics[key], key
    # each card says how its folder loads (the adapter folder is not one `from_pretrained` loads alone)
    assert 'pipeline("text-classification"' in open(os.path.join(merged_dir, "README.md")).read()
    card = open(os.path.join(adapter_dir, "README.md")).read()
    assert "AutoPeftModelForSequenceClassification" in card and "holds no model weights" not in card


def test_gradient_checkpointing_gives_the_same_training(tiny_model, pair_files, tmp_path):
    """Recomputed activations replay the same dropout masks (torch restores the RNG state): the same losses."""
    losses = []
    for name, extra in (("plain", []), ("checkpointed", ["--gradient_checkpointing"])):
        out = str(tmp_path / name)
        assert main(lora_cmd(tiny_model, pair_files, out, "--logging_steps", "1", *extra)) == 0
        losses.append([r["loss"] for r in map(json.loads, open(os.path.join(out, "train_log.jsonl"))) if "loss" in r])
    assert len(losses[0]) == 6
    assert losses[1] == pytest.approx(losses[0], abs=1e-6)


def test_bfloat16_weights_with_float32_adapters_merge_without_rounding(tmp_path, pair_files):
    """Adapters trained over bfloat16 weights are merged in float32: the saved model gives the adapter model's
    logits (added to bfloat16 weights, the small updates would round away)."""
    from peft import PeftModel

    model = build_family("llama", str(tmp_path / "llama"))
    merged_dir, adapter_dir = str(tmp_path / "merged"), str(tmp_path / "adapter")
    flags = ["--torch_dtype", "bfloat16", "--lora_dropout", "0", "--learning_rate", "3e-3"]
    assert main(lora_cmd(model, pair_files, merged_dir, *flags)) == 0
    assert main(lora_cmd(model, pair_files, adapter_dir, *flags, "--save_adapter_only")) == 0
    weights = load_file(os.path.join(merged_dir, "checkpoint-6", "model.safetensors"))
    assert {t.dtype for k, t in weights.items() if "base_layer" in k} == {torch.bfloat16}
    assert {t.dtype for k, t in weights.items() if "lora_" in k} == {torch.float32}
    assert {t.dtype for t in load_file(os.path.join(merged_dir, "model.safetensors")).values()} == {torch.float32}
    merged = AutoModelForSequenceClassification.from_pretrained(merged_dir).eval()
    base = AutoModelForSequenceClassification.from_pretrained(model, config=merged.config, dtype=torch.bfloat16)
    adapter = PeftModel.from_pretrained(base.float(), adapter_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    batch = tokenizer(["a man buys a boat", "the cat sat"], ["a boat is bought", "the dog ran"], padding=True,
                      return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, adapter(**batch).logits, atol=1e-5, rtol=1e-4)


def test_adapter_only_with_a_grown_vocabulary_evaluates_as_trained(tmp_path, pair_files, capsys):
    """A tokenizer with neither pad nor EOS token gets a new one: the adapter carries the grown embeddings, and
    evaluate loads the base (one row short) with them."""
    from tests.families import build_model, build_tokenizer

    folder = str(tmp_path / "gpt2-no-eos")
    tokenizer = build_tokenizer("gpt2")
    build_model("gpt2", tokenizer).save_pretrained(folder)
    tokenizer.eos_token = tokenizer.bos_token = tokenizer.unk_token = None
    tokenizer.save_pretrained(folder)
    out = str(tmp_path / "run")
    assert main(lora_cmd(folder, pair_files, out, "--save_adapter_only")) == 0
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["evaluate", "--model_name_or_path", out, "--validation_file", pair_files["validation"]]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (metrics["f1"], metrics["accuracy"]) == (results["eval_f1"], results["eval_accuracy"])


def test_memory_estimate_counts_what_trains(tiny_model):
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    total = sum(p.numel() for p in model.parameters())
    full = estimate_training_memory(model, rows=32, tokens=64, autocast_bf16=True, gradient_checkpointing=False)
    assert full.parameters == full.trainable == total
    assert full.weights == full.gradients == 4 * total and full.optimizer == 8 * total
    lora = apply_lora(model, 4, None, 0.1, None)
    small = estimate_training_memory(lora, rows=32, tokens=64, autocast_bf16=True, gradient_checkpointing=False)
    trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert small.trainable == trainable < total and small.optimizer == 8 * trainable
    saved = estimate_training_memory(lora, rows=32, tokens=64, autocast_bf16=True, gradient_checkpointing=True)
    assert saved.activations < small.activations


def test_memory_estimate_of_an_architecture_without_attention_heads():
    """FNet mixes tokens with Fourier transforms: no heads, no activation estimate, and no error."""
    from transformers import FNetConfig, FNetForSequenceClassification

    model = FNetForSequenceClassification(FNetConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1,
                                                     intermediate_size=20, num_labels=2))
    estimate = estimate_training_memory(model, rows=8, tokens=16, autocast_bf16=True, gradient_checkpointing=False)
    assert estimate.activations is None and "activations not estimated" in estimate.describe(8, 16)


@pytest.mark.parametrize("extra,message", [
    (["--lora_target_modules", "no_such_layer"], "The linear layers of"),
    (["--lora_target_modules", "classifier"], "peft could not adapt them"),
])
def test_lora_on_layers_peft_cannot_adapt_exits_2(tiny_model, pair_files, tmp_path, capsys, extra, message):
    assert main(lora_cmd(tiny_model, pair_files, str(tmp_path / "run"), *extra)) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


@pytest.mark.parametrize("flag", [["--save_adapter_only"], ["--lora_alpha", "16"], ["--lora_target_modules", "query"]])
def test_lora_flags_without_a_rank_exit_2(tiny_model, pair_files, tmp_path, capsys, flag):
    cmd = [a for a in lora_cmd(tiny_model, pair_files, str(tmp_path / "run"), *flag) if a not in ("--lora_r",)]
    cmd.remove("4")  # the rank's value
    assert main(cmd) == 2
    assert "needs --lora_r" in capsys.readouterr().err


def test_gradient_checkpointing_on_a_model_without_it_exits_2(tiny_model, pair_files, tmp_path, capsys,
                                                              monkeypatch):
    from transformers import BertPreTrainedModel

    monkeypatch.setattr(BertPreTrainedModel, "supports_gradient_checkpointing", False)
    assert main(lora_cmd(tiny_model, pair_files, str(tmp_path / "run"), "--gradient_checkpointing")) == 2
    err = capsys.readouterr().err
    assert "does not support gradient checkpointing: drop --gradient_checkpointing" in err


def test_an_adapter_folder_is_named_as_such(tiny_model, pair_files, tmp_path, capsys):
    """Fine-tuning from an adapter folder, or scoring one whose base model has moved: exit 2 naming the base."""
    adapter = str(tmp_path / "adapter")
    assert main(lora_cmd(tiny_model, pair_files, adapter, "--save_adapter_only")) == 0
    capsys.readouterr()
    assert main(["train", "--model_name_or_path", adapter, "--train_file", pair_files["train"], "--output_dir",
                 str(tmp_path / "again"), "--max_steps", "2"]) == 2
    err = capsys.readouterr().err
    assert "holds only a LoRA adapter" in err and tiny_model in err
    config_path = os.path.join(adapter, "adapter_config.json")
    config = json.load(open(config_path))
    json.dump({**config, "base_model_name_or_path": str(tmp_path / "moved")}, open(config_path, "w"))
    assert main(["evaluate", "--model_name_or_path", adapter, "--validation_file", pair_files["validation"]]) == 2
    assert "which is no longer there" in capsys.readouterr().err
