"""--rdrop_alpha (R-Drop): each training row passes the model twice in one forward pass and the loss adds the two
predictions' disagreement; evaluation, the saved model and other flags' losses are unchanged."""

from __future__ import annotations

import json
import os

import pytest
import torch

from seqtune.cli import main
from seqtune.losses import consistency, use_rdrop, use_task_loss


def test_consistency_is_the_symmetric_divergence_by_its_formula():
    torch.manual_seed(0)
    a, b = torch.randn(5, 3), torch.randn(5, 3)
    kl = torch.nn.functional.kl_div  # kl_div(log q, log p, log_target) = KL(p || q)
    log_p, log_q = a.log_softmax(-1), b.log_softmax(-1)
    both = kl(log_q, log_p, log_target=True, reduction="batchmean") + \
        kl(log_p, log_q, log_target=True, reduction="batchmean")
    assert consistency(a, b, "single").item() == pytest.approx(both.item() / 2, rel=1e-5)
    assert consistency(a, a, "single").item() == pytest.approx(0.0, abs=1e-7)
    p, q = torch.sigmoid(a), torch.sigmoid(b)
    bernoulli = (p * (p / q).log() + (1 - p) * ((1 - p) / (1 - q)).log() +
                 q * (q / p).log() + (1 - q) * ((1 - q) / (1 - p)).log())
    assert consistency(a, b, "multi").item() == pytest.approx(bernoulli.mean().item() / 2, rel=1e-5)
    assert consistency(a[:, :1], b[:, :1], "regression").item() == pytest.approx(
        (a[:, 0] - b[:, 0]).pow(2).mean().item(), rel=1e-6)


def _model_and_batch(tiny_model):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    batch = dict(tokenizer(["the mayor bought the boat", "a dog ran", "the cat sat down", "boats"], padding=True,
                           return_tensors="pt"), labels=torch.tensor([0, 1, 1, 0]))
    return model, batch


@pytest.mark.parametrize("weights", [None, [1.0, 3.0]])
def test_the_training_loss_is_both_passes_plus_alpha_times_their_disagreement(tiny_model, weights):
    model, batch = _model_and_batch(tiny_model)
    model.train()
    doubled = {k: torch.cat([v, v]) for k, v in batch.items()}
    torch.manual_seed(1)
    logits = model(**doubled).logits  # the reference: the batch stacked on itself, no hooks
    labels = doubled["labels"]
    task = torch.nn.functional.cross_entropy(logits, labels, weight=None if weights is None else torch.tensor(weights))
    first, second = logits.chunk(2)
    assert not torch.allclose(first, second)  # two dropout masks: the halves differ, or R-Drop would do nothing
    expected = task + 0.7 * consistency(first, second, "single")
    if weights:
        use_task_loss(model, weights, 0.0, multi_label=False)
    handles = use_rdrop(model, 0.7, "single")  # (after the weights, as training registers them)
    torch.manual_seed(1)
    out = model(**batch)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.logits.shape[0] == 8
    model.eval()  # evaluation: one pass per row, the loss without R-Drop's term
    with torch.no_grad():
        evaluated = model(**batch)
        for handle in handles:
            handle.remove()
        plain = model(**batch)
    assert evaluated.logits.shape[0] == 4 and evaluated.loss.item() == pytest.approx(plain.loss.item(), abs=1e-6)


def test_a_run_with_rdrop_trains_saves_and_records_it(tiny_model, pair_files, tmp_path, capsys):
    data = ["--train_file", pair_files["train"], "--validation_file", pair_files["validation"]]
    results = {}
    for name, extra in (("plain", []), ("rdrop", ["--rdrop_alpha", "1.0"])):
        out = str(tmp_path / name)
        assert main(["train", "--model_name_or_path", tiny_model, *data, "--output_dir", out, "--max_steps", "3",
                     "--per_device_train_batch_size", "8", "--logging_steps", "1", "--seed", "5", *extra]) == 0
        log = [json.loads(line) for line in open(os.path.join(out, "train_log.jsonl"))]
        results[name] = [r["loss"] for r in log if "loss" in r and "eval_loss" not in r]
        assert "rdrop" not in open(os.path.join(out, "config.json")).read()  # the saved model has no trace
    assert results["plain"][0] != results["rdrop"][0]
    args = json.load(open(os.path.join(tmp_path / "rdrop", "seqtune_args.json")))
    assert args["training"]["rdrop_alpha"] == 1.0
    capsys.readouterr()
    assert main(["evaluate", "--model_name_or_path", str(tmp_path / "rdrop"), *data]) == 0
    saved = json.load(open(os.path.join(tmp_path / "rdrop", "all_results.json")))
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["f1"] == saved["eval_f1"]


@pytest.mark.parametrize("value", ["-1", "inf", "nan"])
def test_a_negative_or_infinite_weight_is_refused(tiny_model, pair_files, tmp_path, capsys, value):
    code = main(["train", "--model_name_or_path", tiny_model, "--train_file", pair_files["train"], "--output_dir",
                 str(tmp_path / "x"), "--rdrop_alpha", value])
    assert code == 2 and "--rdrop_alpha must be 0 or more" in capsys.readouterr().err


def test_inputs_it_does_not_double_are_left_alone(tiny_model):
    model, batch = _model_and_batch(tiny_model)
    model.train()
    use_rdrop(model, 1.0, "single")
    embeds = model.get_input_embeddings()(batch["input_ids"])
    out = model(inputs_embeds=embeds, attention_mask=batch["attention_mask"], labels=batch["labels"])
    assert out.logits.shape[0] == 4 and torch.isfinite(out.loss)  # one pass: no halves to compare
