"""The phase table: every second of the run in one row, the rows adding up to the total."""

from __future__ import annotations

import json
import os
import time

import pytest

import seqtune.phases as phases
from seqtune.cli import main


def test_marks_split_the_time_and_inside_parts_get_their_own_rows(monkeypatch):
    now = [100.0]
    monkeypatch.setattr(phases.time, "perf_counter", lambda: now[0])
    phases.command_started()
    now[0] = 102.0
    clock = phases.PhaseClock()  # start-up: 2 s since the command started
    now[0] = 105.0
    clock.mark("data", inside={"tokenization": 1.0})
    now[0] = 115.0
    clock.mark("training", inside={"evaluation": 2.5, "checkpoints": 0.5})
    now[0] = 116.0
    clock.mark("data")  # a phase met again adds up
    table = clock.table()
    assert table == {"start-up": 2.0, "data": 3.0, "tokenization": 1.0, "training": 7.0, "evaluation": 2.5,
                     "checkpoints": 0.5, "total": 16.0, "not_training_fraction": pytest.approx(1 - 7 / 16, abs=1e-4)}
    assert phases.PhaseClock().seconds["start-up"] == 0.0  # the start-up is counted once per command
    assert "total 16.0 s, 56% not training" in clock.line()


def test_a_run_records_its_phases_and_they_add_up(tiny_model, pair_files, tmp_path, caplog):
    out = str(tmp_path / "run")
    started = time.perf_counter()
    with caplog.at_level("INFO", logger="seqtune"):
        assert main(["train", "--model_name_or_path", tiny_model, "--train_file", pair_files["train"],
                     "--validation_file", pair_files["validation"], "--output_dir", out, "--num_train_epochs", "2",
                     "--per_device_train_batch_size", "8"]) == 0
    wall = time.perf_counter() - started
    table = json.load(open(os.path.join(out, "all_results.json")))["phase_seconds"]
    rows = {k: v for k, v in table.items() if k not in ("total", "not_training_fraction")}
    assert list(rows) == ["start-up", "model", "data", "tokenization", "training", "evaluation", "checkpoints",
                          "saving", "report"]
    assert all(v >= 0 for v in rows.values()) and rows["evaluation"] > 0 and rows["training"] > 0
    assert sum(rows.values()) == pytest.approx(table["total"], abs=0.05)
    assert 0.9 * wall < table["total"] <= wall + 0.01  # the rows cover the command's time (rounded to 0.01 s)
    # The fraction comes from the unrounded seconds; the rows are rounded to 0.01 s, so a ratio of them differs by
    # up to about 0.01 / total (a 0.6 s tiny run: almost 2 points).
    assert table["not_training_fraction"] == pytest.approx(1 - rows["training"] / table["total"],
                                                           abs=0.011 / table["total"])
    line = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Phases")][-1]
    assert "start-up" in line and "% not training" in line
