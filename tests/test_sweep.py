"""seqtune sweep: several seeds with mean ± std, and a (tiny) reproducible Optuna search."""

from __future__ import annotations

import json
import math
import os
import statistics

import optuna
import pytest
from huggingface_hub import ModelCard

from seqtune.cli import main
from seqtune.errors import SeqtuneError
from seqtune.sweep import parse_seeds, print_report, score, search_space, summarize


def sweep(tiny_model, pair_files, out, *extra):
    return main(["sweep", "--model_name_or_path", tiny_model, "--train_file", pair_files["train"],
                 "--validation_file", pair_files["validation"], "--output_dir", out, "--max_steps", "2",
                 "--per_device_train_batch_size", "8", *extra])


def test_summary_of_fixed_runs_is_pinned(capsys):
    runs = [{"seed": 1, "eval_f1": 0.8, "eval_accuracy": 0.70, "train_runtime": 10.0, "epoch": 1.0},
            {"seed": 2, "eval_f1": 0.9, "eval_accuracy": 0.75, "train_runtime": 12.0, "epoch": 1.0},
            {"seed": 3, "eval_f1": 1.0, "eval_accuracy": float("nan"), "train_runtime": 14.0, "epoch": 1.0}]
    summary = summarize(runs)
    assert set(summary) == {"eval_f1", "eval_accuracy", "train_runtime"}  # not seed or epoch
    assert summary["eval_f1"] == {"mean": pytest.approx(0.9), "std": pytest.approx(0.1), "n": 3}
    assert summary["train_runtime"] == {"mean": pytest.approx(12.0), "std": pytest.approx(2.0), "n": 3}
    # a NaN (constant predictions in one seed) is left out of that metric, not spread into its mean
    assert summary["eval_accuracy"] == {"mean": pytest.approx(0.725), "std": pytest.approx(0.05 / 2 ** 0.5), "n": 2}
    assert summarize(runs[:1])["eval_f1"] == {"mean": 0.8, "std": 0.0, "n": 1}
    assert score(summary, ["f1", "accuracy"]) == pytest.approx((0.9 + 0.725) / 2)
    assert score(summary, ["matthews_correlation"]) == -math.inf
    print_report({"seeds": [1, 2, 3], "summary": summary})
    assert "eval_f1                  0.9000 ± 0.1000  (n=3)" in capsys.readouterr().out


def test_search_space_is_define_by_run():
    params = {"learning_rate": 1e-4, "num_train_epochs": 3, "warmup_ratio": 0.1, "per_device_train_batch_size": 32,
              "weight_decay": 0.01, "layerwise_lr_decay": 0.9}
    assert search_space(optuna.trial.FixedTrial(params)) == params
    with pytest.raises(ValueError):  # outside its range: the space is enforced by Optuna, not by us
        search_space(optuna.trial.FixedTrial({**params, "per_device_train_batch_size": 48}))


def test_seeds_must_be_integers():
    assert parse_seeds("1, 2,3,") == [1, 2, 3]
    for bad in ("", "1,x"):
        with pytest.raises(SeqtuneError, match="--seeds"):
            parse_seeds(bad)


def test_seeds_report_mean_and_std(tiny_model, pair_files, tmp_path, capsys):
    out = str(tmp_path / "seeds")
    assert sweep(tiny_model, pair_files, out, "--seeds", "1,2,3") == 0
    summary = json.load(open(os.path.join(out, "sweep_summary.json")))["summary"]
    runs = [json.loads(line) for line in open(os.path.join(out, "sweep_results.jsonl"))]
    assert [r["seed"] for r in runs] == [1, 2, 3]
    f1 = [r["eval_f1"] for r in runs]
    assert summary["eval_f1"] == {"mean": pytest.approx(statistics.fmean(f1)),
                                  "std": pytest.approx(statistics.stdev(f1)), "n": 3}
    assert f"{summary['eval_f1']['mean']:.4f} ± {summary['eval_f1']['std']:.4f}" in capsys.readouterr().out
    # without --keep_models: the weights and checkpoints are gone, the metrics stay, and the card says so
    seed_dir = os.path.join(out, "seed-1")
    left = os.listdir(seed_dir)
    assert not any(f.endswith(".safetensors") or f.startswith("checkpoint-") for f in left)
    assert json.load(open(os.path.join(seed_dir, "all_results.json")))["eval_f1"] == f1[0]
    card = ModelCard.load(os.path.join(seed_dir, "README.md"))
    assert "holds no model weights" in card.text and "pipeline(" not in card.text
    assert [r.metric_value for r in card.data.eval_results if r.metric_type == "f1"] == [f1[0]]


def test_search_is_reproducible_and_resumable(tiny_model, pair_files, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert sweep(tiny_model, pair_files, a, "--n_trials", "2", "--seeds", "1") == 0
    assert sweep(tiny_model, pair_files, b, "--n_trials", "2", "--seeds", "1") == 0
    params_a = [t["params"] for t in json.load(open(os.path.join(a, "sweep_summary.json")))["trials"]]
    params_b = [t["params"] for t in json.load(open(os.path.join(b, "sweep_summary.json")))["trials"]]
    assert params_a == params_b and len(params_a) == 2  # same study seed, same suggestions
    assert params_a[0] != params_a[1]
    assert sweep(tiny_model, pair_files, a, "--n_trials", "3", "--seeds", "1", "--overwrite_output_dir") == 0
    assert len(json.load(open(os.path.join(a, "sweep_summary.json")))["trials"]) == 3  # resumed: one more trial
