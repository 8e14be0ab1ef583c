"""--ema_decay: the average of the weights is what is evaluated, kept and saved, and it survives a resume."""

from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

from seqtune.cli import main
from seqtune.ema import WeightEMA


def test_the_average_follows_its_formula_and_swaps_in_and_out():
    model = torch.nn.Linear(3, 2)
    model.bias.requires_grad_(False)  # frozen weights are not averaged
    start = model.weight.detach().clone()
    ema = WeightEMA(model, 0.9)
    assert ema.names == ["weight"]
    expected = start.clone()
    for step in (1, 2, 3, 40):
        with torch.no_grad():
            model.weight.add_(1.0)
        ema.update(step)
        decay = min(0.9, (1 + step) / (10 + step))  # the warm-up: 0.18, 0.25, 0.31, then 0.9
        expected = decay * expected + (1 - decay) * model.weight.detach()
        torch.testing.assert_close(ema.average[0], expected)
    live = model.weight.detach().clone()
    with ema.applied():
        torch.testing.assert_close(model.weight.detach(), expected)
    assert model.weight.detach().equal(live)  # back to the trained weights after the block
    other = torch.nn.Linear(3, 2)
    other.bias.requires_grad_(False)
    copy = WeightEMA(other, 0.9)
    copy.load_state_dict(ema.state_dict())
    torch.testing.assert_close(copy.average[0], expected)
    with pytest.raises(KeyError):
        copy.load_state_dict({})


def test_the_saved_model_is_the_evaluated_average(tiny_model, pair_files, tmp_path, capsys):
    data = ["--train_file", pair_files["train"], "--validation_file", pair_files["validation"]]
    runs = {}
    for name, extra in (("plain", []), ("ema", ["--ema_decay", "0.8"])):
        out = str(tmp_path / name)
        assert main(["train", "--model_name_or_path", tiny_model, *data, "--output_dir", out, "--num_train_epochs",
                     "2", "--per_device_train_batch_size", "8", "--learning_rate", "2e-3", "--seed", "5",
                     *extra]) == 0
        runs[name] = out
    saved = json.load(open(os.path.join(runs["ema"], "all_results.json")))
    capsys.readouterr()
    assert main(["evaluate", "--model_name_or_path", runs["ema"], *data]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert metrics["loss"] == saved["eval_loss"]  # what was scored during training is what was saved
    plain, averaged = (load_file(os.path.join(runs[n], "model.safetensors")) for n in ("plain", "ema"))
    assert any(not plain[k].equal(averaged[k]) for k in plain)  # (same seed: only the average differs)
    assert json.load(open(os.path.join(runs["plain"], "all_results.json")))["eval_loss"] != saved["eval_loss"]


def test_without_an_evaluation_split_the_average_is_saved(tiny_model, pair_files, tmp_path):
    import seqtune.train as recipe

    seen = {}
    original = recipe.WeightEMA.apply

    def apply(self):
        seen["average"] = {n: t.clone() for n, t in zip(self.names, self.average)}
        return original(self)

    recipe.WeightEMA.apply = apply
    try:
        out = str(tmp_path / "run")
        assert main(["train", "--model_name_or_path", tiny_model, "--train_file", pair_files["train"],
                     "--output_dir", out, "--max_steps", "5", "--per_device_train_batch_size", "8",
                     "--ema_decay", "0.5"]) == 0
    finally:
        recipe.WeightEMA.apply = original
    saved = load_file(os.path.join(out, "model.safetensors"))
    for name, tensor in seen["average"].items():
        assert saved[name].equal(tensor), name


def test_a_bad_decay_is_refused(tiny_model, pair_files, tmp_path, capsys):
    for value in ("1", "0", "-0.5"):
        code = main(["train", "--model_name_or_path", tiny_model, "--train_file", pair_files["train"], "--output_dir",
                     str(tmp_path / "x"), "--ema_decay", value])
        assert code == 2 and "--ema_decay must be in (0, 1)" in capsys.readouterr().err


def test_a_bfloat16_model_keeps_a_float32_average_that_still_moves():
    """With --torch_dtype bfloat16 a bfloat16 average would round away (1 - decay) x a small step: it is float32
    and follows the average computed by hand in float64."""
    model = torch.nn.Linear(4, 4).to(torch.bfloat16)
    with torch.no_grad():
        model.weight.zero_()
    ema = WeightEMA(model, 0.99)
    assert all(a.dtype == torch.float32 for a in ema.average)
    reference = torch.zeros(4, 4, dtype=torch.float64)
    for step in range(1, 200):
        with torch.no_grad():
            model.weight.add_(2 ** -8)  # exact in bfloat16 up to 1.0
        ema.update(step)
        decay = min(0.99, (1 + step) / (10 + step))
        reference = decay * reference + (1 - decay) * model.weight.detach().double()
    torch.testing.assert_close(ema.average[0].double(), reference, atol=1e-5, rtol=1e-5)
    with ema.applied():
        assert model.weight.dtype == torch.bfloat16
        torch.testing.assert_close(model.weight.double(), reference, atol=4e-3, rtol=4e-3)
