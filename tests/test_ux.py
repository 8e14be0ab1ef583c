"""What a practitioner sees: help for every command, shipped configs, the model card and report, TensorBoard
events, predictions from standard input."""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from seqtune.cli import COMMANDS, main
from seqtune.tasks import GLUE_TASKS
from tests.conftest import write_csv


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command, text in COMMANDS.items():
        assert command in out and text in out


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "report"])
def test_each_command_help_lists_all_its_flags_and_only_its_own(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    from seqtune.cli import HIDDEN_FLAGS, _dataclasses_for, flags_for

    listed = {f for f in re.findall(r"^  --(\w+)", out, re.MULTILINE) if not f.startswith("no_")} - {
        "help", "log_level", "config"}
    assert listed == set(flags_for(command))
    for cls in _dataclasses_for(command):
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"--{f.name} has no help text"
    for flag in HIDDEN_FLAGS.get(command, ()):  # training's flags are not evaluate's, predict's or data's
        assert f"--{flag} " not in out and f"--{flag}\n" not in out
    assert "--config" in out
    if command in ("evaluate", "predict"):
        assert "--padding" not in out and "--group_by_length" not in out and "--reinit_pooler" not in out


def test_report_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["report", "--help"])
    assert exit_.value.code == 0
    assert "output_dir" in capsys.readouterr().out


def _task_rows(task, n):
    spec = GLUE_TASKS[task]
    rows = []
    for i in range(n):
        row = {spec.text_column: f"the mayor bought boat number {i}"}
        if spec.text_pair_column:
            row[spec.text_pair_column] = f"a boat {i % 3} was bought"
        row["label"] = float(i % 5) if spec.is_regression else i % len(spec.label_names)
        rows.append(row)
    return rows


@pytest.mark.parametrize("path", sorted(glob.glob("configs/*.yaml")))
def test_shipped_config_runs_a_few_steps(path, tiny_model, tmp_path, capsys):
    first_line = open(path).readline()
    assert first_line.startswith(f"# seqtune train --config {path}")  # each config starts with its command
    values = yaml.safe_load(open(path))
    task = values["task_name"]
    train = write_csv(str(tmp_path / "train.csv"), _task_rows(task, 16))
    val = write_csv(str(tmp_path / "validation.csv"), _task_rows(task, 8))
    out = str(tmp_path / "out")
    assert main(["train", "--config", path, "--model_name_or_path", tiny_model, "--train_file", train,
                 "--validation_file", val, "--output_dir", out, "--max_steps", "2", "--eval_strategy", "epoch",
                 "--save_steps", "1"]) == 0
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert results["global_step"] == 2
    assert set(f"eval_{m}" for m in GLUE_TASKS[task].metrics) <= set(results)
    # the same file drives evaluate, which ignores training's keys (output_dir)
    assert "# then: seqtune evaluate --config" in open(path).read()
    assert main(["evaluate", "--config", path, "--model_name_or_path", out, "--train_file", train,
                 "--validation_file", val]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["rows"] == 8 and set(GLUE_TASKS[task].metrics) <= set(evaluated)


def test_config_values_are_overridden_by_the_command_line(tiny_model, pair_files, tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("learning_rate: 0.5\nper_device_train_batch_size: 4\nbf16: false\nmax_steps: 3\n")
    out = str(tmp_path / "out")
    assert main(["train", "--config", str(cfg), "--model_name_or_path", tiny_model, "--train_file",
                 pair_files["train"], "--output_dir", out, "--learning_rate", "1e-3", "--eval_strategy", "no"]) == 0
    args = json.load(open(os.path.join(out, "seqtune_args.json")))["training"]
    assert args["learning_rate"] == 1e-3 and args["per_device_train_batch_size"] == 4
    assert args["bf16"] is False and args["max_steps"] == 3


def test_a_run_leaves_model_card_report_and_tensorboard_events(tiny_model, pair_files, tmp_path):
    out = str(tmp_path / "run")
    assert main(["train", "--model_name_or_path", tiny_model, "--train_file", pair_files["train"],
                 "--validation_file", pair_files["validation"], "--output_dir", out, "--num_train_epochs", "2",
                 "--per_device_train_batch_size", "8", "--logging_steps", "2",
                 "--report_to", "jsonl,tensorboard"]) == 0
    card = open(os.path.join(out, "README.md")).read()
    for part in ("## Labels", "## Results", "## Hyperparameters", "## How to use", "## Limitations", "f1"):
        assert part in card
    page = open(os.path.join(out, "report", "index.html")).read()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert set(images) == {"loss_lr.png", "metrics.png", "confusion.png", "lengths.png"}
    for image in images:
        assert open(os.path.join(out, "report", image), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert glob.glob(os.path.join(out, "runs", "events.out.tfevents.*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(os.path.join(out, "runs"))
    events.Reload()
    assert {"train/loss", "train/learning_rate", "train/grad_norm", "train/samples_per_second", "eval/f1"} <= set(
        events.Tags()["scalars"])
    # seqtune report rebuilds the same page; a model card a user edited stays, a missing one is written again
    os.remove(os.path.join(out, "report", "index.html"))
    card = os.path.join(out, "README.md")
    edited = open(card).read() + "\nMy own notes.\n"
    open(card, "w").write(edited)
    assert main(["report", out]) == 0
    assert open(os.path.join(out, "report", "index.html")).read() == page
    assert open(card).read() == edited
    os.remove(card)
    assert main(["report", out]) == 0 and "library_name: transformers" in open(card).read()


def test_predict_reads_pairs_from_standard_input(tiny_model, pair_files, tmp_path):
    out = str(tmp_path / "run")
    assert main(["train", "--model_name_or_path", tiny_model, "--train_file", pair_files["train"], "--output_dir",
                 out, "--max_steps", "2", "--eval_strategy", "no"]) == 0
    lines = "the mayor bought the boat.\tthe boat was bought by the mayor.\na dog ran.\tthe cat sat.\n"
    result = subprocess.run([sys.executable, "-m", "seqtune", "predict", "--model_name_or_path", out,
                             "--log_level", "warning"], input=lines, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = [line.split("\t") for line in result.stdout.strip().splitlines()]
    assert len(rows) == 2 and all(r[0] in ("0", "1") and 0.5 <= float(r[1]) <= 1 for r in rows)
