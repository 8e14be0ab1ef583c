"""seqtune sweep: several seeds with mean ± std, and a (tiny) reproducible Optuna search."""

from __future__ import annotations

import json
import os

from seqtune.cli import main


def sweep(tiny_model, pair_files, out, *extra):
    return main(["sweep", "--model_name_or_path", tiny_model, "--train_file", pair_files["train"],
                 "--validation_file", pair_files["validation"], "--output_dir", out, "--max_steps", "2",
                 "--per_device_train_batch_size", "8", *extra])


def test_seeds_report_mean_and_std(tiny_model, pair_files, tmp_path, capsys):
    out = str(tmp_path / "seeds")
    assert sweep(tiny_model, pair_files, out, "--seeds", "1,2,3") == 0
    summary = json.load(open(os.path.join(out, "sweep_summary.json")))["summary"]
    assert summary["eval_f1"]["n"] == 3 and summary["eval_accuracy"]["std"] >= 0
    runs = [json.loads(line) for line in open(os.path.join(out, "sweep_results.jsonl"))]
    assert [r["seed"] for r in runs] == [1, 2, 3]
    assert "eval_f1" in capsys.readouterr().out
    assert not any(f.endswith(".safetensors") for f in os.listdir(os.path.join(out, "seed-1")))


def test_search_is_reproducible_and_resumable(tiny_model, pair_files, tmp_path):
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert sweep(tiny_model, pair_files, a, "--n_trials", "2", "--seeds", "1") == 0
    assert sweep(tiny_model, pair_files, b, "--n_trials", "2", "--seeds", "1") == 0
    params_a = [t["params"] for t in json.load(open(os.path.join(a, "sweep_summary.json")))["trials"]]
    params_b = [t["params"] for t in json.load(open(os.path.join(b, "sweep_summary.json")))["trials"]]
    assert params_a == params_b and len(params_a) == 2  # same study seed, same suggestions
    assert sweep(tiny_model, pair_files, a, "--n_trials", "3", "--seeds", "1", "--overwrite_output_dir") == 0
    assert len(json.load(open(os.path.join(a, "sweep_summary.json")))["trials"]) == 3  # resumed: one more trial
