"""Which evaluation wins and when a run stops: --metric_for_best_model (with --greater_is_better),
--early_stopping_patience, and --class_weights (the loss, by hand)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from seqtune.cli import main


def run(tiny_model, pair_files, out, *extra) -> dict:
    assert main(["train", "--model_name_or_path", tiny_model, "--train_file", pair_files["train"],
                 "--validation_file", pair_files["validation"], "--output_dir", out, "--per_device_train_batch_size",
                 "8", "--no_bf16", "--logging_steps", "2", *extra]) == 0
    return json.load(open(os.path.join(out, "all_results.json")))


def evaluations(out) -> list[dict]:
    return [r for r in map(json.loads, open(os.path.join(out, "train_log.jsonl"))) if "eval_loss" in r]


@pytest.mark.parametrize("greater", ["false", "true"])
def test_the_chosen_metric_picks_the_saved_model(tiny_model, pair_files, tmp_path, capsys, greater):
    out = str(tmp_path / "run")
    results = run(tiny_model, pair_files, out, "--num_train_epochs", "4", "--learning_rate", "3e-3",
                  "--metric_for_best_model", "eval_loss", "--greater_is_better", greater)
    evals = evaluations(out)
    losses = [r["eval_loss"] for r in evals]
    assert len(set(losses)) == 4  # the evaluations differ, so the choice matters
    pick = np.argmax(losses) if greater == "true" else np.argmin(losses)
    assert results["best_step"] == evals[pick]["step"] and results["eval_loss"] == losses[pick]
    assert results["main_metric"] == "loss" and results["greater_is_better"] is (greater == "true")
    # the saved model is that evaluation's: evaluate gives its loss back
    capsys.readouterr()
    assert main(["evaluate", "--model_name_or_path", out, "--validation_file", pair_files["validation"]]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["loss"] == pytest.approx(losses[pick],
                                                                                              abs=1e-6)


def test_a_metric_the_data_has_not_is_refused(tiny_model, pair_files, tmp_path, capsys):
    code = main(["train", "--model_name_or_path", tiny_model, "--train_file", pair_files["train"], "--output_dir",
                 str(tmp_path / "a"), "--metric_for_best_model", "bleu"])
    assert code == 2 and "--metric_for_best_model 'bleu' is not a metric seqtune computes" in capsys.readouterr().err
    code = main(["train", "--model_name_or_path", tiny_model, "--train_file", pair_files["train"], "--validation_file",
                 pair_files["validation"], "--output_dir", str(tmp_path / "b"), "--metric_for_best_model",
                 "subset_accuracy"])  # a multi-label metric, on single-label data
    assert code == 2 and "not computed for this data; choose one of f1, accuracy" in capsys.readouterr().err


def test_early_stopping_stops_at_the_evaluation_that_spends_the_patience(tiny_model, pair_files, tmp_path):
    out = str(tmp_path / "run")
    # a learning rate too small to change any prediction: the first evaluation stays the best
    results = run(tiny_model, pair_files, out, "--num_train_epochs", "10", "--learning_rate", "1e-9",
                  "--early_stopping_patience", "2")
    assert [r["step"] for r in evaluations(out)] == [6, 12, 18]  # 48 rows / 8 = 6 steps an epoch
    assert results["global_step"] == 18 and results["stopped_early"] is True and results["best_step"] == 6
    steps = run(tiny_model, pair_files, str(tmp_path / "steps"), "--max_steps", "40", "--learning_rate", "1e-9",
                "--eval_strategy", "steps", "--eval_steps", "4", "--early_stopping_patience", "3")
    assert steps["global_step"] == 16 and steps["best_step"] == 4  # evaluations at 4, 8, 12, 16


def test_early_stopping_needs_evaluations(tiny_model, pair_files, tmp_path, capsys):
    code = main(["train", "--model_name_or_path", tiny_model, "--train_file", pair_files["train"], "--output_dir",
                 str(tmp_path / "a"), "--early_stopping_patience", "0", "--eval_strategy", "no"])
    err = capsys.readouterr().err
    assert code == 2 and "--early_stopping_patience must be a positive number" in err
    assert "--early_stopping_patience needs evaluations" in err


def test_class_weights_change_the_loss_as_computed_by_hand(tiny_model):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from seqtune.losses import use_task_loss

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2).eval()
    batch = tokenizer(["the mayor bought the boat", "a dog ran", "the cat sat down", "boats"], padding=True,
                      return_tensors="pt")
    labels = torch.tensor([0, 1, 1, 0])
    with torch.no_grad():
        plain = model(**batch, labels=labels).loss
        handle = use_task_loss(model, [1.0, 3.0], 0.0, multi_label=False)
        weighted = model(**batch, labels=labels).loss
        log_p = torch.log_softmax(model(**batch).logits, -1)[torch.arange(4), labels]
    w = torch.tensor([1.0, 3.0, 3.0, 1.0])
    assert weighted.item() == pytest.approx((-(w * log_p).sum() / w.sum()).item(), abs=1e-6)
    assert plain.item() == pytest.approx(-log_p.mean().item(), abs=1e-6)
    assert abs(weighted.item() - plain.item()) > 1e-4
    handle.remove()


def test_auto_class_weights_are_balanced():
    from seqtune.losses import class_weights

    assert class_weights("auto", [0, 0, 0, 1], 2, False) == pytest.approx([4 / 6, 2.0])  # n / (classes x count)
    assert class_weights("auto", [[1, 0], [0, 0], [1, 1], [0, 0]], 2, True) == pytest.approx([1.0, 3.0])  # neg/pos
    assert class_weights("1,4", [0, 1], 2, False) == [1.0, 4.0]
    with pytest.raises(Exception, match="give 3 positive numbers"):
        class_weights("1,4", [0, 1, 2], 3, False)


def test_class_weights_weigh_the_training_loss(tiny_model, pair_files, tmp_path):
    plain = run(tiny_model, pair_files, str(tmp_path / "a"), "--max_steps", "2", "--eval_strategy", "no",
                "--logging_steps", "1", "--seed", "3")
    weighted = run(tiny_model, pair_files, str(tmp_path / "b"), "--max_steps", "2", "--eval_strategy", "no",
                   "--logging_steps", "1", "--seed", "3", "--class_weights", "1,5")
    first = [json.loads(open(os.path.join(tmp_path, d, "train_log.jsonl")).readline())["loss"] for d in "ab"]
    assert plain["global_step"] == weighted["global_step"] == 2 and abs(first[0] - first[1]) > 1e-4
    args = json.load(open(os.path.join(tmp_path, "b", "seqtune_args.json")))
    assert args["training"]["class_weights"] == "1,5"


@pytest.mark.parametrize("strategy", [["--num_train_epochs", "10"],
                                      ["--max_steps", "40", "--eval_strategy", "steps", "--eval_steps", "4"]])
def test_a_run_that_stopped_early_stays_finished_when_resumed(tiny_model, pair_files, tmp_path, strategy):
    """Resuming an early-stopped run trains nothing: its last checkpoint says it finished."""
    out = str(tmp_path / "run")
    flags = [*strategy, "--learning_rate", "1e-9", "--early_stopping_patience", "2",
             "--save_optimizer_state_on_finish"]
    first = run(tiny_model, pair_files, out, *flags)
    log = open(os.path.join(out, "train_log.jsonl")).read()
    again = run(tiny_model, pair_files, out, *flags, "--resume_from_checkpoint")
    assert again["global_step"] == first["global_step"] and again["best_step"] == first["best_step"]
    assert open(os.path.join(out, "train_log.jsonl")).read() == log  # no step trained, nothing evaluated
