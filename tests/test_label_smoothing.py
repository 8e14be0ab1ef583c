"""--label_smoothing_factor: Trainer's label smoothing. The training loss is the one Trainer's LabelSmoother computes
(with class weights, torch's weighted form; for multi-label data, BCE against targets moved towards 1/2); the
evaluation loss, the saved model and a run without the flag are unchanged."""

from __future__ import annotations

import json
import os

import pytest
import torch

from seqtune.cli import main
from seqtune.losses import task_loss, use_task_loss
from tests.conftest import write_csv


def _model_and_batch(tiny_model, num_labels=2, **kwargs):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=num_labels, **kwargs)
    batch = tokenizer(["the mayor bought the boat", "a dog ran", "the cat sat down", "boats"], padding=True,
                      return_tensors="pt")
    return model, dict(batch)


def test_the_training_loss_is_trainers_label_smoother_and_evaluation_is_plain(tiny_model):
    from transformers.trainer_pt_utils import LabelSmoother

    model, batch = _model_and_batch(tiny_model, num_labels=3)
    labels = torch.tensor([0, 2, 1, 2])
    with torch.no_grad():
        model.classifier.weight.mul_(300)  # confident logits: smoothing moves the loss visibly
    model.train()
    torch.manual_seed(1)
    reference = model(**batch, labels=labels)  # no hook: transformers' own (plain) loss
    expected = LabelSmoother(epsilon=0.2)(reference, labels)
    handle = use_task_loss(model, None, 0.2, multi_label=False)
    torch.manual_seed(1)  # the same dropout masks
    smoothed = model(**batch, labels=labels)
    assert torch.equal(smoothed.logits, reference.logits)
    assert smoothed.loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert abs(smoothed.loss.item() - reference.loss.item()) > 1e-2
    model.eval()
    with torch.no_grad():
        evaluated = model(**batch, labels=labels).loss
        handle.remove()
        plain = model(**batch, labels=labels).loss
    assert evaluated.item() == pytest.approx(plain.item(), abs=1e-7)


def test_smoothing_with_class_weights_and_for_multi_label_targets_by_their_formulas():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 1, 0])
    weights = torch.tensor([1.0, 2.0, 0.5])
    log_p = logits.log_softmax(-1)
    targets = torch.full((6, 3), 0.3 / 3) + 0.7 * torch.nn.functional.one_hot(labels, 3)
    per_row = -(targets * log_p * weights).sum(-1)  # torch's weighted smoothing: each class term has its weight
    expected = (per_row.sum() / weights[labels].sum()).item()
    assert task_loss(logits, labels, weights, False, 0.3).item() == pytest.approx(expected, rel=1e-6)
    multi = torch.tensor([[1, 0, 1], [0, 0, 1], [1, 1, 0], [0, 0, 0], [1, 1, 1], [0, 1, 0]])
    soft = multi.float() * 0.8 + 0.1  # 1 -> 0.9, 0 -> 0.1
    p = torch.sigmoid(logits)
    bce = -(soft * p.log() + (1 - soft) * (1 - p).log()).mean()
    assert task_loss(logits, multi, None, True, 0.2).item() == pytest.approx(bce.item(), rel=1e-5)
    assert task_loss(logits, multi, None, True, 0.0).item() == pytest.approx(
        torch.nn.functional.binary_cross_entropy_with_logits(logits, multi.float()).item(), rel=1e-6)


def test_a_run_with_smoothing_trains_records_it_and_evaluates_as_it_reported(tiny_model, pair_files, tmp_path,
                                                                              capsys):
    data = ["--train_file", pair_files["train"], "--validation_file", pair_files["validation"]]
    losses = {}
    for name, extra in (("plain", []), ("smoothed", ["--label_smoothing_factor", "0.1"])):
        out = str(tmp_path / name)
        assert main(["train", "--model_name_or_path", tiny_model, *data, "--output_dir", out, "--max_steps", "3",
                     "--per_device_train_batch_size", "8", "--logging_steps", "1", "--seed", "5", *extra]) == 0
        log = [json.loads(line) for line in open(os.path.join(out, "train_log.jsonl"))]
        losses[name] = [r["loss"] for r in log if "loss" in r and "eval_loss" not in r]
        assert "smoothing" not in open(os.path.join(out, "config.json")).read()  # the saved model has no trace
    assert losses["plain"][0] != losses["smoothed"][0]
    recorded = json.load(open(tmp_path / "smoothed" / "seqtune_args.json"))
    assert recorded["training"]["label_smoothing_factor"] == 0.1
    assert "label_smoothing_factor" in open(tmp_path / "smoothed" / "report" / "index.html").read()
    assert "label_smoothing_factor" not in open(tmp_path / "plain" / "report" / "index.html").read()
    capsys.readouterr()
    assert main(["evaluate", "--model_name_or_path", str(tmp_path / "smoothed"), *data]) == 0
    saved = json.load(open(tmp_path / "smoothed" / "all_results.json"))
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["f1"] == saved["eval_f1"]
    assert evaluated["loss"] == pytest.approx(saved["eval_loss"], abs=1e-3)  # the plain loss, as training scored


def test_resuming_with_another_smoothing_is_refused(tiny_model, pair_files, tmp_path, capsys):
    out = str(tmp_path / "run")
    base = ["train", "--model_name_or_path", tiny_model, "--train_file", pair_files["train"], "--output_dir", out,
            "--max_steps", "4", "--save_steps", "2", "--per_device_train_batch_size", "8",
            "--save_optimizer_state_on_finish", "--label_smoothing_factor", "0.1"]
    assert main(base) == 0
    capsys.readouterr()
    code = main([*base[:-1], "0.2", "--resume_from_checkpoint", os.path.join(out, "checkpoint-2"),
                 "--overwrite_output_dir"])
    err = capsys.readouterr().err
    assert code == 2 and "(label_smoothing_factor: checkpoint 0.1, now 0.2)" in err


@pytest.mark.parametrize("value", ["-0.1", "1", "nan"])
def test_a_factor_outside_0_to_1_is_refused(tiny_model, pair_files, tmp_path, capsys, value):
    code = main(["train", "--model_name_or_path", tiny_model, "--train_file", pair_files["train"], "--output_dir",
                 str(tmp_path / "x"), "--label_smoothing_factor", value])
    assert code == 2 and "--label_smoothing_factor must be in [0, 1)" in capsys.readouterr().err


def test_scores_are_not_smoothed_and_say_so(tiny_model, tmp_path, caplog):
    rows = [{"sentence": f"the boat number {i}", "label": float(i % 5) / 4} for i in range(24)]
    train = write_csv(str(tmp_path / "train.csv"), rows)
    with caplog.at_level("WARNING", logger="seqtune"):
        assert main(["train", "--model_name_or_path", tiny_model, "--train_file", train, "--output_dir",
                     str(tmp_path / "run"), "--max_steps", "2", "--eval_strategy", "no",
                     "--label_smoothing_factor", "0.1"]) == 0
    assert "--label_smoothing_factor ignored: the labels are numbers" in caplog.text
    # it had no effect, so a resume without it is the same run
    out = str(tmp_path / "resumable")
    base = ["train", "--model_name_or_path", tiny_model, "--train_file", train, "--output_dir", out, "--eval_strategy",
            "no", "--save_optimizer_state_on_finish", "--per_device_train_batch_size", "8"]
    assert main([*base, "--max_steps", "2", "--label_smoothing_factor", "0.1"]) == 0
    assert main([*base, "--max_steps", "2", "--resume_from_checkpoint", "--overwrite_output_dir"]) == 0
