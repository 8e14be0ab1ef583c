"""The batch flags left out: 32 rows on a CPU; on a GPU a token budget with lengths in multiples of 8 and the
learning rate scaled by the square-root rule. A flag the user gives always wins."""

from __future__ import annotations

import json
import os

import pytest

from seqtune.cli import main
from seqtune.config import DataArguments, TrainingArguments, default_learning_rate
from seqtune.device_defaults import (GPU_TOKEN_BUDGET, MIN_BUDGET_BATCHES, apply_device_defaults,
                                     budget_batches_per_epoch)


def resolved(device: str, data: dict | None = None, training: dict | None = None):
    data_args, args = DataArguments(**(data or {})), TrainingArguments(**(training or {}))
    budget = apply_device_defaults(data_args, args, device)
    return budget, data_args, args


def test_a_cpu_gets_rows_and_a_gpu_a_token_budget():
    budget, data_args, args = resolved("cpu")
    assert not budget and args.per_device_train_batch_size == 32 and data_args.max_tokens_per_batch is None
    assert args.dataloader_num_workers == 0  # workers would take the cores training uses
    assert default_learning_rate(args, data_args.max_tokens_per_batch) == 1e-4
    budget, data_args, args = resolved("cuda")
    assert budget and data_args.max_tokens_per_batch == GPU_TOKEN_BUDGET == 4096 and data_args.pad_to_multiple_of == 8
    assert args.dataloader_num_workers == 2  # the loop waits on the CPU there: collate beside it
    assert resolved("cuda", {"streaming": True}, {"max_steps": 5})[2].dataloader_num_workers == 0  # read in order
    assert resolved("cuda", training={"dataloader_num_workers": 0})[2].dataloader_num_workers == 0  # given wins
    assert resolved("cpu", training={"dataloader_num_workers": 3})[2].dataloader_num_workers == 3
    assert default_learning_rate(args, data_args.max_tokens_per_batch) == pytest.approx(1e-4 * 2 ** 0.5)  # 1e-4 x sqrt(4096 / 2048)
    assert default_learning_rate(TrainingArguments(lora_r=8), 8192) == pytest.approx(1e-3)
    # a --max_seq_length that is not a multiple of 8 is not rounded past (it may be the model's position limit)
    budget, data_args, _ = resolved("cuda", {"max_seq_length": 100})
    assert budget and data_args.pad_to_multiple_of is None


@pytest.mark.parametrize("data, training", [
    ({}, {"per_device_train_batch_size": 16}),  # rows asked for
    ({"max_tokens_per_batch": 4096}, {}),  # another budget asked for
    ({"streaming": True}, {"max_steps": 5}),  # a stream's batches are rows
    ({"padding": "max_length"}, {}),  # fixed shapes asked for
    ({"group_by_length": False}, {}),  # random batches asked for (a budget groups by length)
    ({"max_seq_length": 16384}, {}),  # rows longer than the budget
])
def test_what_the_user_gives_wins_on_a_gpu(data, training):
    budget, data_args, args = resolved("cuda", data, training)
    assert not budget
    assert data_args.max_tokens_per_batch == data.get("max_tokens_per_batch")
    assert args.per_device_train_batch_size == training.get("per_device_train_batch_size", 32)
    assert default_learning_rate(TrainingArguments(learning_rate=3e-5), 8192) == 3e-5


def test_a_run_on_a_gpu_records_its_budget_and_rate(tiny_model, pair_files, tmp_path, monkeypatch, caplog):
    import seqtune.train as train_module
    from seqtune.device_defaults import apply_device_defaults as real

    # the recipe asks for the defaults of the device it runs on: answer as a GPU would (the batches are the same)
    # (and as if the training split were large enough for the budget: these 48 pairs are not)
    monkeypatch.setattr(train_module, "apply_device_defaults",
                        lambda d, a, _device, size: real(d, a, "cuda", max(size, MIN_BUDGET_BATCHES)))
    out = str(tmp_path / "gpu")
    with caplog.at_level("INFO", logger="seqtune"):
        assert main(["train", "--model_name_or_path", tiny_model, "--train_file", pair_files["train"],
                     "--validation_file", pair_files["validation"], "--output_dir", out, "--num_train_epochs", "1",
                     "--disable_tqdm"]) == 0
    flags = json.load(open(os.path.join(out, "seqtune_args.json")))
    assert flags["data"]["max_tokens_per_batch"] == 4096 and flags["data"]["pad_to_multiple_of"] == 8
    assert flags["training"]["learning_rate"] == pytest.approx(1e-4 * 2 ** 0.5)
    assert flags["training"]["dataloader_num_workers"] == 2  # (the run's batches collated by two processes)
    assert any("GPU defaults: batches of up to 4096 tokens" in r.getMessage() for r in caplog.records)
    steps = [json.loads(line) for line in open(os.path.join(out, "train_log.jsonl")) if '"loss"' in line]
    assert steps[-1]["step"] == 1  # the 96 training rows (both orders of 48 pairs) fit one budget batch


def test_a_gpu_keeps_rows_for_a_small_training_split(tiny_model, pair_files, tmp_path, monkeypatch):
    """Few budget batches an epoch mean few optimizer steps (on 500 MRPC pairs 4,096-token batches lost a point of
    accuracy): below MIN_BUDGET_BATCHES a GPU gets 32 rows, the default learning rate and says why."""
    import seqtune.train as train_module
    from seqtune.device_defaults import apply_device_defaults as real

    assert budget_batches_per_epoch([5, 8, 9]) == (8 + 8 + 16) / 4096
    data_args, args = DataArguments(), TrainingArguments()
    assert not apply_device_defaults(data_args, args, "cuda", MIN_BUDGET_BATCHES - 1)
    assert args.per_device_train_batch_size == 32 and data_args.max_tokens_per_batch is None
    assert args.dataloader_num_workers == 2
    assert apply_device_defaults(DataArguments(), TrainingArguments(), "cuda", MIN_BUDGET_BATCHES)
    monkeypatch.setattr(train_module, "apply_device_defaults", lambda d, a, _device, size: real(d, a, "cuda", size))
    out = str(tmp_path / "small")
    assert main(["train", "--model_name_or_path", tiny_model, "--train_file", pair_files["train"],
                 "--validation_file", pair_files["validation"], "--output_dir", out, "--num_train_epochs", "1",
                 "--dataloader_num_workers", "0", "--disable_tqdm"]) == 0
    flags = json.load(open(os.path.join(out, "seqtune_args.json")))
    assert flags["data"]["max_tokens_per_batch"] is None and flags["training"]["per_device_train_batch_size"] == 32
    assert flags["training"]["learning_rate"] == 1e-4


def test_a_sweep_reuses_a_run_recorded_with_the_resolved_batch(tmp_path, monkeypatch):
    import torch

    from seqtune.sweep import _as_json, finished_results

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the record is a CPU run's: resolve as a CPU

    data_args, args = DataArguments(train_file="t.csv"), TrainingArguments(output_dir=str(tmp_path), seed=3)
    from seqtune.config import ModelArguments

    model_args = ModelArguments()
    recorded = TrainingArguments(output_dir=str(tmp_path), seed=3, per_device_train_batch_size=32,
                                 learning_rate=1e-4,  # what `train` records on a CPU,
                                 dataloader_num_workers=2)  # collated by workers (the same batches: still reused)
    with open(tmp_path / "seqtune_args.json", "w") as f:
        json.dump({"data": _as_json(vars(data_args)), "model": _as_json(vars(model_args)),
                   "training": _as_json(vars(recorded))}, f)
    with open(tmp_path / "all_results.json", "w") as f:
        json.dump({"eval_f1": 0.5}, f)
    assert finished_results(data_args, model_args, args) == {"eval_f1": 0.5}
    args.per_device_train_batch_size = 16
    assert finished_results(data_args, model_args, args) is None


def test_train_leaves_the_callers_arguments_as_given(tiny_model, pair_files, tmp_path):
    """The library call resolves the left-out flags on its own copies: arguments reused for a second run (another
    device, another data set) are still left out there."""
    from seqtune.config import ModelArguments
    from seqtune.train import train

    data_args = DataArguments(train_file=pair_files["train"], validation_file=pair_files["validation"])
    args = TrainingArguments(output_dir=str(tmp_path / "run"), num_train_epochs=1, disable_tqdm=True)
    before = (repr(data_args), repr(args))
    results = train(data_args, ModelArguments(model_name_or_path=tiny_model), args)
    assert results["global_step"] > 0
    assert (repr(data_args), repr(args)) == before
    assert args.per_device_train_batch_size is None and args.learning_rate is None


def test_the_small_split_fallback_says_why(caplog):
    from datasets import Dataset

    from seqtune.train import resolve_batch_defaults

    data_args, args = DataArguments(), TrainingArguments()
    with caplog.at_level("INFO", logger="seqtune"):
        resolve_batch_defaults(data_args, args, "cuda", Dataset.from_dict({"length": [50] * 1000}))  # ~14 batches
    assert data_args.max_tokens_per_batch is None and args.per_device_train_batch_size == 32
    assert any("about 13 batches of 4096 tokens an epoch, fewer than 100" in r.getMessage() for r in caplog.records)
    data_args, args = DataArguments(), TrainingArguments()
    resolve_batch_defaults(data_args, args, "cuda", Dataset.from_dict({"length": [50] * 8000}))  # ~109 batches
    assert data_args.max_tokens_per_batch == 4096 and args.learning_rate == pytest.approx(1e-4 * 2 ** 0.5)
