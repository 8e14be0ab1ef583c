"""Several processes (torchrun, gloo on CPU) give the same training and evaluation as one."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from tests.test_streaming import parquet_shards  # noqa: F401 (a fixture)

TORCHRUN = [os.path.join(os.path.dirname(sys.executable), "torchrun"), "--nproc_per_node", "2",
            "--master_port", "29533"]
needs_torchrun = pytest.mark.skipif(shutil.which("torchrun", path=os.path.dirname(sys.executable)) is None,
                                    reason="torchrun is not installed beside this Python")


def run(launcher, model, files, out, batch, *extra):
    cmd = [*launcher, "-m", "seqtune", "train", "--model_name_or_path", model, "--train_file", files["train"],
           "--validation_file", files["validation"], "--output_dir", out, "--per_device_train_batch_size", str(batch),
           "--max_steps", "5", "--logging_steps", "1", "--no_bf16", "--learning_rate", "1e-3", "--disable_tqdm",
           "--seed", "5", "--no_group_by_length", "--max_eval_samples", "13", "--per_device_eval_batch_size", "4",  # uneven shards
           "--save_optimizer_state_on_finish", *extra]
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    log = [json.loads(line) for line in open(os.path.join(out, "train_log.jsonl"))]
    return result, log


@needs_torchrun
def test_two_processes_batch_4_match_one_process_batch_8(no_dropout_model, pair_files, tmp_path):
    single, single_log = run([sys.executable], no_dropout_model, pair_files, str(tmp_path / "one"), 8)
    double, double_log = run(TORCHRUN, no_dropout_model, pair_files, str(tmp_path / "two"), 4)
    assert "global batch 8 = 4 per device x 2 processes x 1 accumulation" in double.stderr
    # both ranks see the same rows as the single process: DDP averages two 4-row means into the 8-row mean.
    # Tolerance 1e-5: gloo's all-reduce sums in another order than one 8-row backward.
    single_losses = [r["loss"] for r in single_log if "loss" in r]
    double_losses = [r["loss"] for r in double_log if "loss" in r]
    assert len(single_losses) == len(double_losses) == 5
    assert double_losses == pytest.approx(single_losses, abs=1e-5)
    # evaluation gathers both ranks' predictions without duplicates: the metrics are exactly the single-process ones
    single_eval = [r for r in single_log if "eval_f1" in r]
    double_eval = [r for r in double_log if "eval_f1" in r]
    # (the loss, a mean over float logits from other batch shapes, agrees to float precision)
    assert [{k: v for k, v in r.items() if k != "eval_loss"} for r in double_eval] == [
        {k: v for k, v in r.items() if k != "eval_loss"} for r in single_eval]
    assert [r["eval_loss"] for r in double_eval] == pytest.approx([r["eval_loss"] for r in single_eval], abs=1e-6)
    # only the main process prints the results line
    assert len([line for line in double.stdout.splitlines() if line.startswith("{")]) == 1


@needs_torchrun
def test_resume_under_two_processes_equals_the_uninterrupted_run(tiny_model, pair_files, tmp_path):
    """A 2-process run resumed from its mid-epoch checkpoint ends with the weights of the run that was not stopped
    (dropout on: every rank's RNG state and data position are restored)."""
    full = str(tmp_path / "full")
    run(TORCHRUN, tiny_model, pair_files, full, 4, "--save_steps", "3", "--max_steps", "6", "--eval_strategy", "no")
    resumed = str(tmp_path / "resumed")
    os.makedirs(resumed)
    shutil.copytree(os.path.join(full, "checkpoint-3"), os.path.join(resumed, "checkpoint-3"))
    result, log = run(TORCHRUN, tiny_model, pair_files, resumed, 4, "--save_steps", "3", "--max_steps", "6",
                      "--eval_strategy", "no", "--resume_from_checkpoint")
    assert "Resumed from" in result.stderr and [r["step"] for r in log] == [4, 5, 6]
    expected, observed = (load_file(os.path.join(d, "model.safetensors")) for d in (full, resumed))
    assert expected.keys() == observed.keys()
    for name in expected:
        torch.testing.assert_close(observed[name], expected[name], rtol=0, atol=1e-6, msg=name)


@needs_torchrun
def test_streaming_over_two_processes_trains_and_evaluates(tiny_model, parquet_shards, tmp_path):  # noqa: F811
    out = str(tmp_path / "stream")
    result, log = run(TORCHRUN, tiny_model, parquet_shards, out, 4, "--streaming", "--eval_strategy", "steps",
                      "--eval_steps", "5")
    assert "global batch 8 = 4 per device x 2 processes" in result.stderr
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4, 5]
    results = json.load(open(os.path.join(out, "all_results.json")))
    assert results["train_samples"] == 40
    assert results["eval_accuracy"] == [r for r in log if "eval_accuracy" in r][-1]["eval_accuracy"]


@needs_torchrun
def test_two_processes_resume_across_the_epoch_boundary_on_the_defaults(tiny_model, pair_files, tmp_path):
    """The default configuration (symmetric pairs, length grouping, per-epoch evaluation, fast dropout, bf16) under
    2 processes, resumed from a checkpoint in epoch 0: the resumed run crosses the epoch boundary and ends with the
    uninterrupted run's weights, bit for bit."""
    def train(out, *extra):
        cmd = [*TORCHRUN, "-m", "seqtune", "train", "--model_name_or_path", tiny_model, "--train_file",
               pair_files["train"], "--validation_file", pair_files["validation"], "--output_dir", out,
               "--symmetric_pairs", "true", "--per_device_train_batch_size", "4", "--save_steps", "5",
               "--save_total_limit", "5", "--seed", "9", "--disable_tqdm", "--save_optimizer_state_on_finish", *extra]
        env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stderr[-3000:]
        return result

    full = str(tmp_path / "full")
    train(full)  # 96 rows / (4 x 2) = 12 steps per epoch, 2 epochs
    resumed = str(tmp_path / "resumed")
    os.makedirs(resumed)
    shutil.copytree(os.path.join(full, "checkpoint-10"), os.path.join(resumed, "checkpoint-10"))
    result = train(resumed, "--resume_from_checkpoint")
    assert "Resumed from" in result.stderr
    for model in ("model.safetensors", "checkpoint-24/model.safetensors"):  # the best and the last step's
        expected, observed = (load_file(os.path.join(d, model)) for d in (full, resumed))
        for name in expected:
            assert observed[name].equal(expected[name]), f"{model}: {name}"
    results = [json.load(open(os.path.join(d, "all_results.json"))) for d in (full, resumed)]
    assert results[0]["eval_f1"] == results[1]["eval_f1"] and results[0]["global_step"] == 24


@needs_torchrun
def test_lora_decoder_under_two_processes_matches_one(pair_files, tmp_path):
    """A Llama-style decoder (no pad token, as released) with LoRA adapters: 2 processes x 4 rows train as 1 x 8."""
    from tests.families import build_family

    model = build_family("llama", str(tmp_path / "llama"))
    lora = ["--lora_r", "4", "--lora_dropout", "0"]  # the tiny Llama has no dropout: runs comparable step by step
    _, single_log = run([sys.executable], model, pair_files, str(tmp_path / "one"), 8, *lora)
    double, double_log = run(TORCHRUN, model, pair_files, str(tmp_path / "two"), 4, *lora)
    assert "LoRA: rank 4" in double.stderr
    single_losses, double_losses = ([r["loss"] for r in log if "loss" in r] for log in (single_log, double_log))
    assert len(single_losses) == 5 and double_losses == pytest.approx(single_losses, abs=1e-5)
    evals = [[r for r in log if "eval_f1" in r] for log in (single_log, double_log)]
    assert [{k: v for k, v in r.items() if k != "eval_loss"} for r in evals[1]] == \
        [{k: v for k, v in r.items() if k != "eval_loss"} for r in evals[0]]
    assert [r["eval_loss"] for r in evals[1]] == pytest.approx([r["eval_loss"] for r in evals[0]], abs=1e-6)
    assert "model.safetensors" in os.listdir(str(tmp_path / "two"))  # merged
