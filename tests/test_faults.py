"""Fault matrix (issue #11): bad input -> exit status 2, ONE message line naming the problem and the fix, no
traceback, and the files around it untouched (nothing created when refused before writing, nothing of the
user's deleted). Each case builds its own bad input in a fresh folder; all of them fail before training, most
before anything heavy loads. Categories: data, flags, config, model folders, predict/evaluate I/O (the
tokenization cache, which is repaired rather than refused, has its own tests below)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import time
import shutil
from dataclasses import dataclass
from typing import Callable

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from seqtune.cli import main
from seqtune.errors import SeqtuneError
from tests.conftest import write_csv

PAIRS = [{"sentence1": f"the mayor bought boat {i}", "sentence2": f"a boat {i % 3} was sold", "label": i % 2}
         for i in range(8)]
TEXTS = [{"text": f"the mayor bought boat {i}", "label": i % 2} for i in range(8)]


def labels(values, rows=TEXTS):
    """`rows` with their labels replaced by `values` (as many rows as values)."""
    return [{**rows[i % len(rows)], "label": v} for i, v in enumerate(values)]


class Work:
    """The case's folder: its input files, a copy of the tiny model to damage, and the output folder."""

    def __init__(self, root: str, tiny_model: str):
        self.root, self.tiny_model = root, tiny_model

    def path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def csv(self, name: str, rows: list[dict]) -> str:
        return write_csv(self.path(name), rows)

    def jsonl(self, name: str, rows: list[dict]) -> str:
        with open(self.path(name), "w") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
        return self.path(name)

    def binary(self, name: str, content: bytes) -> str:
        with open(self.path(name), "wb") as f:
            f.write(content)
        return self.path(name)

    def text(self, name: str, content: str) -> str:
        os.makedirs(os.path.dirname(self.path(name)), exist_ok=True)
        with open(self.path(name), "w") as f:
            f.write(content)
        return self.path(name)

    def model(self, damage: Callable[[str], None]) -> str:
        folder = shutil.copytree(self.tiny_model, self.path("model"))
        damage(folder)
        return folder


def truncate(path: str, keep: float = 0.5) -> None:
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: int(len(data) * keep)])


def remove(folder: str, *names: str) -> None:
    for name in names:
        if os.path.exists(os.path.join(folder, name)):
            os.remove(os.path.join(folder, name))


@dataclass(frozen=True)
class Case:
    id: str
    args: tuple[str, ...]  # after the command; {placeholders}: model, train, validation, out, work + the build's
    expect: str  # a substring of the one message line
    build: Callable[[Work], dict] | None = None
    command: str = "train"
    lines: int = 1  # problems found together are reported together, one line each


TRAIN = ("--model_name_or_path", "{model}", "--train_file", "{train}", "--output_dir", "{out}")
EVAL = ("--model_name_or_path", "{model}", "--validation_file", "{validation}")
PREDICT = ("--model_name_or_path", "{model}")


def data(**files):
    """A build that writes the named files (name -> (writer, file name, rows)) and points the placeholders at them."""
    return lambda w: {key: getattr(w, kind)(name, rows) for key, (kind, name, rows) in files.items()}


DATA = [
    Case("label_json_mixed_types", TRAIN, "mixed or nested types",
         data(train=("jsonl", "t.jsonl", labels([1, "pos", 0, "neg"])))),
    Case("label_csv_numbers_and_names", TRAIN, "mixes numbers and names: row 1 has '1', row 2 has 'pos'",
         data(train=("csv", "t.csv", labels([1, "pos", 0, "neg"])))),
    # (a label column of lists is multi-label since issue #14: tests/test_multilabel.py)
    Case("label_empty_cell", TRAIN, "training split has rows without a label (row 2 of column 'label' is empty)",
         data(train=("csv", "t.csv", labels([1, "", 0, 1])))),
    Case("label_json_null", TRAIN, "training split has rows without a label (row 3",
         data(train=("jsonl", "t.jsonl", labels([1, 0, None, 1])))),
    Case("label_minus_one_in_validation", TRAIN + ("--validation_file", "{v}"),
         "the validation split has rows without a label (row 2",
         data(v=("csv", "v.csv", labels([0, -1, 1], PAIRS)))),
    Case("label_unseen_in_validation", TRAIN + ("--validation_file", "{v}"), "were never seen in training",
         data(train=("csv", "t.csv", labels(["pos", "neg", "pos"], PAIRS)), v=("csv", "v.csv", labels(["meh"], PAIRS)))),
    Case("label_cut_out_by_max_train_samples", TRAIN + ("--validation_file", "{train}", "--max_train_samples", "2"),
         "--max_train_samples 2 kept the training split's first 2 rows, which have none of them",
         data(train=("csv", "t.csv", labels(["neg", "neg", "pos", "pos"], PAIRS)))),
    Case("glue_label_out_of_range", TRAIN + ("--task_name", "mrpc"), "labels [5] in the train split",
         data(train=("csv", "t.csv", labels([0, 1, 5], PAIRS)))),
    Case("glue_label_unknown_name", TRAIN + ("--task_name", "sst2"), "not among the task's labels",
         lambda w: {"train": w.csv("t.csv", [{"sentence": f"s {i}", "label": v} for i, v in
                                            enumerate(["positive", "great", "negative"])])}),
    Case("regression_score_not_a_number", TRAIN + ("--task_name", "stsb"), "must hold numbers for the regression",
         data(train=("csv", "t.csv", labels(["1.5", "x", "2.0"], PAIRS)))),
    Case("regression_score_missing", TRAIN + ("--task_name", "stsb"), "rows without a label (row 2",
         data(train=("csv", "t.csv", labels([1.5, "", 2.0], PAIRS)))),
    Case("regression_nan_score", TRAIN, "rows without a label (row 2",
         data(train=("csv", "t.csv", labels([0.5, "nan", 2.5])))),
    Case("regression_one_row", TRAIN, "the training split has 1 row",
         data(train=("csv", "t.csv", labels([0.5])))),
    Case("classification_one_row", TRAIN, "the training split has 1 row",
         data(train=("csv", "t.csv", labels(["pos"])))),
    Case("regression_one_distinct_score", TRAIN, "a regression needs at least 2 different scores",
         data(train=("csv", "t.csv", labels([0.5, 0.5, 0.5])))),
    Case("tsv_tab_inside_quotes", TRAIN, "a tab inside a text splits its row; save the data as .csv",
         lambda w: {"train": w.text("t.tsv", 'sentence1\tsentence2\tlabel\nhello\tworld\t1\n"a\tb"\tc\t0\n')}),
    Case("classification_one_class", TRAIN, "a classifier needs examples of at least 2 classes",
         data(train=("csv", "t.csv", labels(["pos", "pos", "pos"])))),
    Case("text_column_of_ints", TRAIN, "column 'text' of the train split holds int64, not text (row 1: 0)",
         lambda w: {"train": w.jsonl("t.jsonl", [{"text": i, "label": i % 2} for i in range(4)])}),
    Case("text_pair_column_of_floats", TRAIN, "column 'sentence2' of the train split holds float64, not text",
         lambda w: {"train": w.jsonl("t.jsonl", [{**r, "sentence2": 0.5} for r in PAIRS])}),
    Case("text_empty_cell", TRAIN, "column 'sentence1' has empty (null) text in the train split (row 2)",
         data(train=("csv", "t.csv", [PAIRS[0], {**PAIRS[1], "sentence1": ""}, *PAIRS[2:]]))),
    Case("validation_with_other_columns", TRAIN + ("--validation_file", "{v}"),
         "the data files have different columns (--train_file {train} has ['sentence1', 'sentence2', 'label'], "
         "--validation_file {v} has ['text', 'label'])", data(v=("csv", "v.csv", TEXTS))),
    Case("validation_without_the_pair_column", TRAIN + ("--validation_file", "{v}"),
         "column 'sentence2' has empty (null) text in the validation split (row 1)",
         data(v=("csv", "v.csv", [{"sentence1": "a b", "label": 1}]))),
    Case("max_seq_length_no_room_for_a_pair", TRAIN + ("--max_seq_length", "4"), "leaves no room for the text: a pair"),
    Case("max_seq_length_no_room_for_a_text", TRAIN + ("--max_seq_length", "2"), "leaves no room for the text: a text",
         data(train=("csv", "t.csv", TEXTS))),
    Case("data_file_missing", TRAIN[:2] + ("--train_file", "{work}/nope.csv", "--output_dir", "{out}"),
         "--train_file {work}/nope.csv: no such file"),
    Case("data_file_glob_matches_nothing", TRAIN[:2] + ("--train_file", "{work}/t[12].csv", "--output_dir", "{out}"),
         "no file matches the pattern"),
    Case("dataset_name_and_files", TRAIN + ("--dataset_name", "glue"), "not both"),
    Case("no_data", ("--model_name_or_path", "{model}", "--output_dir", "{out}"), "no data given"),
]

FLAGS = [
    Case("lr_scheduler_unknown", TRAIN + ("--lr_scheduler_type", "cosine_with_min_lr"),
         "--lr_scheduler_type/--lr-scheduler-type: invalid choice: 'cosine_with_min_lr'"),
    Case("eval_batch_size_zero", TRAIN + ("--per_device_eval_batch_size", "0"),
         "--per_device_eval_batch_size must be a positive number, got 0"),
    Case("report_to_unknown", TRAIN + ("--report_to", "comet"),
         "--report_to 'comet' is not valid: use one or more of jsonl, tensorboard, wandb, mlflow"),
    Case("report_to_none_with_others", TRAIN + ("--report_to", "none,jsonl"), "--report_to 'none,jsonl' is not valid"),
    Case("flag_prefix", TRAIN + ("--learning_rat", "1"), "unknown flag --learning_rat (did you mean --learning_rate?)"),
    Case("trainer_flag_lr", TRAIN + ("--lr", "1e-4"), "unknown flag --lr for `seqtune train`: the flag is --learning_rate"),
    Case("trainer_flag_do_train", TRAIN + ("--do_train",), "unknown flag --do_train for `seqtune train`: `seqtune train` "
         "always trains"),
    Case("trainer_flag_best_model", TRAIN + ("--load_best_model_at_end", "true"), "the model saved is the best by "
         "--metric_for_best_model"),
    Case("flag_bad_int", TRAIN + ("--per_device_train_batch_size", "eight"), "invalid int value: 'eight'"),
    Case("flag_missing_value", TRAIN + ("--learning_rate",), "--learning_rate"),
    Case("adam_beta_out_of_range", TRAIN + ("--adam_beta1", "1.5"), "--adam_beta1 must be in [0, 1), got 1.5"),
    Case("seed_negative", TRAIN + ("--seed", "-1"), "--seed must be in [0, 2**32), got -1"),
    Case("weight_decay_negative", TRAIN + ("--weight_decay", "-0.1"), "--weight_decay must be 0 or more"),
    Case("eval_steps_missing", TRAIN + ("--eval_strategy", "steps"), "--eval_strategy steps needs --eval_steps"),
    Case("several_problems_at_once", TRAIN + ("--warmup_ratio", "1", "--max_grad_norm", "-1"),
         "--warmup_ratio must be in [0, 1)", lines=2),
    Case("output_dir_dangling_symlink", TRAIN, "is a symbolic link to",
         lambda w: os.symlink(w.path("gone"), w.path("out")) or {}),
    Case("output_dir_under_a_file", TRAIN[:4] + ("--output_dir", "{work}/notes.txt/run"),
         "cannot be created: {work}/notes.txt is not a folder", lambda w: {"notes": w.text("notes.txt", "mine")}),
    Case("output_dir_is_a_file", TRAIN[:4] + ("--output_dir", "{work}/notes.txt"), "is a file, not a folder",
         lambda w: {"notes": w.text("notes.txt", "mine")}),
    Case("output_dir_not_writable", TRAIN[:4] + ("--output_dir", "/proc/seqtune-run"), "is not writable"),
    Case("output_dir_not_empty", TRAIN, "is not empty: pass --overwrite_output_dir",
         lambda w: {"keep": w.text("out/keep.txt", "precious")}),
    Case("data_command_max_seq_length_zero", ("--model_name_or_path", "{model}", "--train_file", "{train}",
                                              "--max_seq_length", "0"), "--max_seq_length must be a positive number",
         command="data"),
    Case("bench_steps_zero", ("--model_name_or_path", "{model}", "--train_file", "{train}", "--steps", "0"),
         "--steps must be a positive number, got 0", command="bench"),
    Case("cache_dir_under_a_file", TRAIN + ("--cache_dir", "{work}/notes.txt/cache"), "--cache_dir cannot be created",
         lambda w: {"notes": w.text("notes.txt", "mine")}),
    # found by an adversarial pass: these used to exit 1 with "unexpected ..." or to train
    Case("epochs_nan", TRAIN + ("--num_train_epochs", "nan"), "--num_train_epochs must be a positive number"),
    Case("epochs_inf", TRAIN + ("--num_train_epochs", "inf"), "--num_train_epochs must be a positive number"),
    Case("learning_rate_inf", TRAIN + ("--learning_rate", "inf"), "--learning_rate must be a positive finite number"),
    Case("weight_decay_nan", TRAIN + ("--weight_decay", "nan"), "--weight_decay must be"),
    Case("output_dir_empty_string", TRAIN[:4] + ("--output_dir", ""), "--output_dir is empty"),
    Case("output_dir_name_too_long", TRAIN[:4] + ("--output_dir", "{work}/" + "x" * 300),
         "a folder name is longer than 255 bytes"),
]

CONFIG = [
    Case("config_unknown_key", TRAIN + ("--config", "{cfg}"), "unknown key 'learning_rat' (did you mean 'learning_rate'?)",
         lambda w: {"cfg": w.text("run.yaml", "learning_rat: 0.001\n")}),
    Case("config_yaml_syntax", TRAIN + ("--config", "{cfg}"), "is not valid YAML at line 3, column 5",
         lambda w: {"cfg": w.text("run.yaml", "learning_rate: 0.001\nseed: [1, 2\nbf16: false\n")}),
    Case("config_not_a_mapping", TRAIN + ("--config", "{cfg}"), "must be a mapping of flag names to values",
         lambda w: {"cfg": w.text("run.yaml", "- learning_rate\n- 0.001\n")}),
    Case("config_wrong_type", TRAIN + ("--config", "{cfg}"), "per_device_train_batch_size: 4.5 is not a valid int",
         lambda w: {"cfg": w.text("run.yaml", "per_device_train_batch_size: 4.5\n")}),
    Case("config_bad_choice", TRAIN + ("--config", "{cfg}"), "padding: 'bucket' is not one of longest, max_length",
         lambda w: {"cfg": w.text("run.yaml", "padding: bucket\n")}),
    Case("config_list_value", TRAIN + ("--config", "{cfg}"), "seed: expected a single value",
         lambda w: {"cfg": w.text("run.yaml", "seed: [1, 2]\n")}),
    Case("config_key_twice", TRAIN + ("--config", "{cfg}"), "line 3, column 1: the key 'learning_rate' is given twice",
         lambda w: {"cfg": w.text("run.yaml", "learning_rate: 0.001\nseed: 1\nlearning_rate: 0.002\n")}),
    Case("config_key_two_spellings", TRAIN + ("--config", "{cfg}"), "sets learning_rate twice",
         lambda w: {"cfg": w.text("run.yaml", "learning_rate: 0.001\nlearning-rate: 0.002\n")}),
    Case("config_missing_file", TRAIN + ("--config", "{work}/nope.yaml"), "--config {work}/nope.yaml: no such file"),
    Case("config_values_are_validated", TRAIN + ("--config", "{cfg}"), "--report_to 'comet' is not valid",
         lambda w: {"cfg": w.text("run.yaml", "report_to: comet\n")}),
    Case("config_not_utf8", TRAIN + ("--config", "{cfg}"), "is not UTF-8 text",
         lambda w: {"cfg": w.binary("run.yaml", b"\xff\xfe\x00learning_rate: 1\n")}),
]

MODELS = [
    Case("model_without_tokenizer_files", TRAIN, "has no tokenizer files",
         lambda w: {"model": w.model(lambda d: remove(d, "tokenizer.json", "tokenizer_config.json"))}),
    Case("model_truncated_safetensors", TRAIN, "model.safetensors is damaged (truncated",
         lambda w: {"model": w.model(lambda d: truncate(os.path.join(d, "model.safetensors")))}),
    Case("model_garbage_safetensors", TRAIN, "model.safetensors is damaged",
         lambda w: {"model": w.model(lambda d: open(os.path.join(d, "model.safetensors"), "wb").write(b"\0" * 64))}),
    Case("model_corrupt_tokenizer_json", TRAIN, "tokenizer.json is damaged (not valid JSON at line",
         lambda w: {"model": w.model(lambda d: truncate(os.path.join(d, "tokenizer.json")))}),
    Case("model_corrupt_config_json", TRAIN, "config.json is damaged (not valid JSON at line 1",
         lambda w: {"model": w.model(lambda d: open(os.path.join(d, "config.json"), "w").write("{\"model_type\": "))}),
    Case("model_config_json_a_list", TRAIN, "config.json is damaged (a JSON list, not an object)",
         lambda w: {"model": w.model(lambda d: open(os.path.join(d, "config.json"), "w").write("[]"))}),
    Case("evaluate_config_json_a_string", EVAL, "config.json is damaged (a JSON str, not an object)",
         lambda w: {"model": w.model(lambda d: open(os.path.join(d, "config.json"), "w").write('"bert"'))},
         "evaluate"),
    Case("model_folder_missing", TRAIN[:0] + ("--model_name_or_path", "{work}/no-model") + TRAIN[2:], "no such folder"),
    Case("evaluate_model_truncated_safetensors", EVAL, "model.safetensors is damaged",
         lambda w: {"model": w.model(lambda d: truncate(os.path.join(d, "model.safetensors"), 0.9))}, "evaluate"),
]

PREDICT_IO = [
    Case("predict_sentence2_without_sentence1", PREDICT + ("--sentence2", "a b"), "--sentence2 needs --sentence1",
         command="predict"),
    Case("predict_max_seq_length_zero", PREDICT + ("--sentence1", "a b", "--max_seq_length", "0"),
         "--max_seq_length must be a positive number, got 0", command="predict"),
    Case("predict_max_seq_length_no_room", PREDICT + ("--sentence1", "a b", "--sentence2", "c", "--max_seq_length", "3"),
         "leaves no room for the text", command="predict"),
    Case("predict_eval_batch_size_zero", PREDICT + ("--validation_file", "{validation}", "--output_file", "{work}/p.tsv",
                                                    "--per_device_eval_batch_size", "0"),
         "--per_device_eval_batch_size must be a positive number", command="predict"),
    Case("predict_output_not_writable", PREDICT + ("--validation_file", "{validation}", "--output_file",
                                                   "/proc/seqtune-out/p.tsv"), "is not writable", command="predict"),
    Case("predict_output_is_a_folder", PREDICT + ("--validation_file", "{validation}", "--output_file", "{work}/dir.tsv"),
         "--output_file {work}/dir.tsv is a folder", lambda w: os.mkdir(w.path("dir.tsv")) or {}, "predict"),
    Case("predict_output_folder_cannot_be_created", PREDICT + ("--validation_file", "{validation}", "--output_file",
                                                               "{work}/notes.txt/p.tsv"),
         "its folder {work}/notes.txt is a file, not a folder", lambda w: {"n": w.text("notes.txt", "x")}, "predict"),
    Case("predict_output_extension", PREDICT + ("--validation_file", "{validation}", "--output_file", "{work}/p.xlsx"),
         "use a .tsv, .csv or .jsonl file name", command="predict"),
    Case("predict_data_without_output_file", PREDICT + ("--validation_file", "{validation}"),
         "--output_file is required", command="predict"),
    Case("predict_sentence1_with_output_file", PREDICT + ("--sentence1", "a b", "--output_file", "{work}/p.tsv"),
         "--sentence1 classifies one input", command="predict"),
    Case("evaluate_output_folder_cannot_be_created", EVAL + ("--output_file", "{work}/notes.txt/deeper/m.json"),
         "cannot be created: {work}/notes.txt is not a folder", lambda w: {"n": w.text("notes.txt", "x")}, "evaluate"),
    Case("evaluate_output_dangling_link", EVAL + ("--output_file", "{work}/m.json"), "is a symbolic link to",
         lambda w: os.symlink(w.path("gone/m.json"), w.path("m.json")) or {}, "evaluate"),
    Case("evaluate_with_sentence1", EVAL + ("--sentence1", "a b"), "unknown flag --sentence1", command="evaluate"),
    Case("bench_streaming", ("--streaming", "--train_file", "{train}"),
         "unknown flag --streaming for `seqtune bench` (it is another command's)", command="bench"),
    Case("evaluate_without_data", ("--model_name_or_path", "{model}"), "no data given", command="evaluate"),
    Case("evaluate_eval_batch_size_zero", EVAL + ("--per_device_eval_batch_size", "0"),
         "--per_device_eval_batch_size must be a positive number", command="evaluate"),
    Case("predict_output_is_the_input", PREDICT + ("--test_file", "{validation}", "--output_file", "{validation}"),
         "is one of the data files read: it would be overwritten", command="predict"),
    Case("export_output_not_writable", PREDICT + ("--output_dir", "/proc/seqtune-onnx"), "is not writable",
         command="export"),
]

CASES = DATA + FLAGS + CONFIG + MODELS + PREDICT_IO


def snapshot(root: str) -> dict[str, str]:
    """Every entry under `root`: folders, links (their target) and files (a hash of their content)."""
    entries = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(folder, name)
            key = os.path.relpath(path, root)
            if os.path.islink(path):
                entries[key] = "link:" + os.readlink(path)
            elif os.path.isdir(path):
                entries[key] = "dir"
            else:
                entries[key] = hashlib.sha1(open(path, "rb").read()).hexdigest()
    return entries


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fault(case: Case, tiny_model, tmp_path, capsys):
    work = Work(str(tmp_path / "work"), tiny_model)
    os.makedirs(work.root)
    values = {"model": tiny_model, "out": work.path("out"), "work": work.root,
              "train": work.csv("train.csv", PAIRS), "validation": work.csv("validation.csv", PAIRS[:4])}
    values.update((case.build or (lambda w: {}))(work) or {})
    args = [a.format(**values) for a in case.args]
    before = snapshot(work.root)
    capsys.readouterr()
    code = main([case.command, *args, "--log_level", "warning"])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err
    assert len(lines) == case.lines, err
    assert lines[0].startswith(f"seqtune {case.command}: error: "), err
    assert case.expect.format(**values) in "\n".join(lines), err
    assert snapshot(work.root) == before  # nothing created, nothing of the user's changed or removed


def test_the_matrix_covers_each_category():
    assert len(CASES) >= 45 and len({c.id for c in CASES}) == len(CASES)
    assert min(len(DATA), len(FLAGS), len(CONFIG), len(MODELS), len(PREDICT_IO)) >= 5


# ----------------------------------------------------------------------------------------------- error boundary
def test_an_unexpected_error_is_one_line_and_debug_shows_the_traceback(tiny_model, tmp_path, capsys, monkeypatch):
    import seqtune.train

    def broken(*args, **kwargs):
        raise RuntimeError("something inside broke\nsecond line")

    monkeypatch.setattr(seqtune.train, "train", broken)
    args = ["train", "--model_name_or_path", tiny_model, "--train_file", write_csv(str(tmp_path / "t.csv"), PAIRS),
            "--output_dir", str(tmp_path / "out")]
    assert main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["seqtune train: error: unexpected RuntimeError: something inside broke (rerun with --debug for "
                   "the traceback)"]
    with pytest.raises(RuntimeError, match="something inside broke"):
        main(args + ["--debug"])


def test_bare_resume_flag_means_latest():
    from seqtune.cli import _parse

    parsed = _parse("train", ["--output_dir", "x", "--resume_from_checkpoint", "--seed", "3"], None, {})
    assert parsed[2].resume_from_checkpoint == "latest" and parsed[2].seed == 3
    assert _parse("train", ["--resume_from_checkpoint", "x/checkpoint-4"], None, {})[2].resume_from_checkpoint == \
        "x/checkpoint-4"


def test_config_values_are_defaults_the_command_line_overrides(tmp_path):
    from seqtune.cli import _parse, read_config_file

    path = tmp_path / "run.yaml"
    path.write_text("learning_rate: 2e-5\nbf16: false\npadding: max_length\nseed: 7\nmax-steps: 5\n")
    config = read_config_file(str(path))
    data_args, _, args = _parse("train", ["--seed", "9"], str(path), config)
    assert args.learning_rate == 2e-5 and args.bf16 is False and args.seed == 9 and args.max_steps == 5
    assert data_args.padding == "max_length"


# ----------------------------------------------------------------------------------------------- output probes
def test_the_output_dir_probe_leaves_no_trace(tmp_path):
    from seqtune.validation import writable_dir_problem

    assert writable_dir_problem(str(tmp_path / "new" / "run"), "--output_dir") is None
    assert not (tmp_path / "new").exists()  # checked in the nearest existing parent, not created
    (tmp_path / "empty").mkdir()
    assert writable_dir_problem(str(tmp_path / "empty"), "--output_dir") is None
    assert os.listdir(tmp_path / "empty") == []


# ----------------------------------------------------------------------------------------------- data files
def test_a_data_file_name_with_brackets_is_read_literally(tmp_path):
    from seqtune.data import load_raw_datasets

    literal = write_csv(str(tmp_path / "train[1].csv"), PAIRS[:3])
    write_csv(str(tmp_path / "train1.csv"), PAIRS)  # what the name means as a glob pattern
    assert load_raw_datasets(None, None, train_file=literal)["train"].num_rows == 3


# generated label columns: every one either prepares for training or is one SeqtuneError, never another exception
label_value = st.one_of(st.integers(-2, 3), st.integers(-2**70, 2**70), st.booleans(), st.none(),
                        st.sampled_from(["pos", "neg", "1", "", "0.5", " 1", "nan", "inf", "-1", "1e400"]),
                        st.floats(allow_nan=True, allow_infinity=True), st.lists(st.integers(0, 1), max_size=2))


def write_rows(path: str, values: list) -> str:
    rows = [{"sentence": f"the boat {i}", "label": v} for i, v in enumerate(values)]
    if path.endswith(".csv"):
        return write_csv(path, rows)
    with open(path, "w") as f:
        f.writelines(json.dumps(row) + "\n" for row in rows)  # NaN/Infinity: JSON extensions, or errors to report
    return path


@settings(max_examples=int(os.environ.get("SEQTUNE_LABEL_EXAMPLES", 150)), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(train=st.lists(label_value, min_size=1, max_size=8), validation=st.lists(label_value, max_size=4),
       fmt=st.sampled_from(["csv", "jsonl"]), task=st.sampled_from([None, "sst2", "stsb", "mnli"]))
@example(train=[9.223372036854776e18], validation=[], fmt="csv", task="sst2")  # cast to int64: overflow
@example(train=[False], validation=[], fmt="csv", task="stsb")  # bools are names, not scores
@example(train=[0], validation=[16777217.0], fmt="csv", task="stsb")  # int64 -> float32: a safe cast refuses
@example(train=[" 1"], validation=[], fmt="jsonl", task="stsb")  # Arrow does not read " 1" as a number
def test_any_label_column_prepares_or_is_one_user_error(tmp_path_factory, train, validation, fmt, task):
    from seqtune.data import load_raw_datasets, prepare_labels
    from seqtune.source import resolve_task
    from seqtune.datacheck import check_trainable

    folder = tmp_path_factory.mktemp("labels")
    files = {"train_file": write_rows(str(folder / f"train.{fmt}"), train)}
    if validation:
        files["validation_file"] = write_rows(str(folder / f"validation.{fmt}"), validation)
    try:
        raw = load_raw_datasets(None, None, **files)
        mapped, info = prepare_labels(raw, "label", resolve_task(task))
        check_trainable(mapped["train"], "label", info.num_labels, info.is_regression)
    except SeqtuneError:
        return
    assert "train" in info.labelled_splits
    for split in info.labelled_splits:
        prepared = mapped[split]["label"][:]
        if info.is_regression:
            assert all(isinstance(v, float) and math.isfinite(v) for v in prepared)
        else:
            assert info.num_labels >= 2 and all(isinstance(v, int) and 0 <= v < info.num_labels for v in prepared)


# ----------------------------------------------------------------------------------------------- tokenization cache
@pytest.mark.parametrize("damage", ["truncated", "garbage", "half the rows", "zeroed bytes", "overwritten bytes",
                                    "overwritten bytes, checksum deleted"])
def test_a_damaged_cache_file_is_rebuilt_with_a_warning(tiny_model, tmp_path, caplog, damage):
    from datasets import Dataset, DatasetDict
    from transformers import AutoTokenizer

    from seqtune.data import Columns, tokenize_datasets

    raw = DatasetDict({"train": Dataset.from_list(PAIRS * 20)})
    tokenizer, columns, cache = AutoTokenizer.from_pretrained(tiny_model), Columns("sentence1", "sentence2", "label"), \
        str(tmp_path / "cache")
    first = tokenize_datasets(raw, tokenizer, columns, 32, True, cache)["train"]["input_ids"][:]  # read before damage
    (path,) = [os.path.join(cache, "tokenized", n) for n in os.listdir(os.path.join(cache, "tokenized"))
               if n.endswith(".arrow")]
    if damage == "truncated":
        truncate(path, 0.97)
    elif damage == "garbage":
        open(path, "wb").write(b"not an arrow file" * 40)
    elif damage == "half the rows":  # a whole, readable file with other rows: as one written for another split
        Dataset.from_list(PAIRS).map(lambda b: b, batched=True, cache_file_name=path + ".other")
        os.replace(path + ".other", path)
    else:  # bytes in the middle changed, the file's size and layout intact (a bad disk block, a stray write)
        data = bytearray(open(path, "rb").read())
        middle = len(data) // 2
        data[middle:middle + 64] = bytes(64) if damage == "zeroed bytes" else b"A" * 64
        open(path, "wb").write(bytes(data))
        if "checksum deleted" in damage:
            os.remove(path + ".crc32")
    with caplog.at_level(logging.WARNING, logger="seqtune"):
        again = tokenize_datasets(raw, tokenizer, columns, 32, True, cache)["train"]
    assert f"The tokenization cache file {path} is damaged" in caplog.text and "tokenizing the train split again" \
        in caplog.text
    assert again["input_ids"][:] == first


def test_a_temporary_file_a_killed_run_left_in_the_cache_is_removed_once_stale(tiny_model, tmp_path):
    from datasets import Dataset, DatasetDict
    from transformers import AutoTokenizer

    from seqtune.data import Columns, tokenize_datasets

    folder = tmp_path / "cache" / "tokenized"
    folder.mkdir(parents=True)
    stale, live = folder / "tmpa1b2c3d4", folder / "tmpe5f6g7h8"  # as Dataset.map names its files being written
    for path in (stale, live):
        path.write_bytes(b"x" * 1000)
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    tokenize_datasets(DatasetDict({"train": Dataset.from_list(PAIRS)}), AutoTokenizer.from_pretrained(tiny_model),
                      Columns("sentence1", "sentence2", "label"), 32, True, str(tmp_path / "cache"))
    assert not stale.exists() and live.exists()  # a live run's file (written to within the hour) stays


# ----------------------------------------------------------------------------------------------- predict and evaluate
@pytest.fixture(scope="module")
def stream_model(tiny_model):
    from seqtune.config import ModelArguments

    return ModelArguments(model_name_or_path=tiny_model)


@pytest.mark.parametrize("text,expected_rows", [
    ("a b\n\nc d\n", 3), ("\n\n", 2), ("a b\tc d\n\ne f\tg\n", 3), ("\n\na\tb\n", 3), ("one line without newline", 1),
])
def test_every_stdin_line_gives_one_output_line(stream_model, text, expected_rows):
    from seqtune.evaluate import predict_stream

    out = io.StringIO()
    rows = predict_stream(stream_model, io.StringIO(text), out, 32, batch_size=2)
    assert len(rows) == expected_rows == len(out.getvalue().splitlines())


def test_label_names_holding_tabs_or_line_breaks_keep_one_stdin_line_per_input(tiny_model, tmp_path):
    from seqtune.config import ModelArguments
    from seqtune.evaluate import _row_writer, predict_stream

    model = shutil.copytree(tiny_model, str(tmp_path / "model"))
    config = json.load(open(os.path.join(model, "config.json")))
    names = {"0": "a\tb", "1": "c\nd\\e"}
    config.update(id2label=names, label2id={v: int(k) for k, v in names.items()})
    json.dump(config, open(os.path.join(model, "config.json"), "w"))
    out = io.StringIO()
    predict_stream(ModelArguments(model_name_or_path=model), io.StringIO("x y\nz\n"), out, 32, batch_size=2)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and all(len(line.split("\t")) == 2 for line in lines)
    assert {line.split("\t")[0] for line in lines} <= {"a\\tb", "c\\nd\\\\e"}
    path = str(tmp_path / "rows.csv")  # a list cell (a multi-label column of lists) is written as JSON
    _row_writer(path)([{"labels": ["x,y", "z"], "prediction": "a"}])
    assert json.loads(next(csv.DictReader(open(path)))["labels"]) == ["x,y", "z"]


def test_stdin_lines_with_another_number_of_texts_are_named(stream_model):
    from seqtune.evaluate import predict_stream

    with pytest.raises(SeqtuneError, match="standard input line 3 has 1 tab-separated texts but line 1 has 2"):
        predict_stream(stream_model, io.StringIO("a\tb\n\nc\n"), io.StringIO(), 32, batch_size=8)


def test_predict_a_validation_file_without_split_and_into_a_new_folder(tiny_model, tmp_path, capsys):
    unlabelled = write_csv(str(tmp_path / "v.csv"), [{**r, "label": -1} for r in PAIRS[:5]])
    out = tmp_path / "new" / "folder" / "p.tsv"
    assert main(["predict", "--model_name_or_path", tiny_model, "--validation_file", unlabelled, "--output_file",
                 str(out), "--log_level", "warning"]) == 0, capsys.readouterr().err
    assert len(out.read_text().splitlines()) == 1 + 5


@pytest.fixture(scope="module")
def labelled_model(tiny_model, tmp_path_factory) -> str:
    """The tiny model with label names in its config, as a fine-tuned classifier has (its head is still random)."""
    folder = shutil.copytree(tiny_model, str(tmp_path_factory.mktemp("labelled") / "model"))
    config = json.load(open(os.path.join(folder, "config.json")))
    config.update(id2label={"0": "0", "1": "1"}, label2id={"0": 0, "1": 1})
    json.dump(config, open(os.path.join(folder, "config.json"), "w"))
    return folder


def test_evaluate_writes_into_a_new_folder(labelled_model, tmp_path, capsys):
    labelled = write_csv(str(tmp_path / "v.csv"), PAIRS[:6])
    out = tmp_path / "new" / "metrics.json"
    assert main(["evaluate", "--model_name_or_path", labelled_model, "--validation_file", labelled, "--output_file",
                 str(out), "--log_level", "warning"]) == 0, capsys.readouterr().err
    assert {"split", "rows", "f1", "accuracy", "f1_macro", "loss", "per_class"} <= set(json.loads(out.read_text()))


def test_stdin_bytes_that_are_not_utf8_are_named(stream_model):
    """Read with surrogateescape (a C locale), bad bytes arrive as lone surrogates: one message naming the line."""
    from seqtune.evaluate import predict_stream

    text = b"a b\nx\x85y\n".decode("utf-8", errors="surrogateescape")
    with pytest.raises(SeqtuneError, match="standard input line 2 is not UTF-8 text"):
        predict_stream(stream_model, io.StringIO(text), io.StringIO(), 32, batch_size=8)


def test_weights_that_do_not_fit_their_config_are_named_as_such(tiny_model, tmp_path):
    """A config.json edited to list a third label over a two-label head: not transformers' advice about a flag."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from seqtune.config import ModelArguments
    from seqtune.finetuned import load_finetuned

    folder = str(tmp_path / "model")
    AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(folder)
    config = json.load(open(os.path.join(folder, "config.json")))
    config["id2label"], config["label2id"] = {"0": "a", "1": "b", "2": "c"}, {"a": 0, "b": 1, "c": 2}
    json.dump(config, open(os.path.join(folder, "config.json"), "w"))
    with pytest.raises(SeqtuneError, match="weights in .* do not fit its config.json") as raised:
        load_finetuned(ModelArguments(model_name_or_path=folder))
    assert "ignore_mismatched_sizes" not in str(raised.value)


def test_a_full_disk_message_names_no_other_commands_flag_and_no_contradiction():
    import errno

    from seqtune.fileio import disk_error

    full = OSError(errno.ENOSPC, "No space left on device")
    message = str(disk_error(full, "/x/predictions.tsv"))  # predict has no --output_dir
    assert "free some space" in message and "--output_dir" not in message
    message = str(disk_error(full, "/x/checkpoint-6", "/x/checkpoint-6"))  # failed after its rename into place
    assert "the last good checkpoint is" not in message and "/x/checkpoint-6 itself was whole" in message
    assert "the last good checkpoint is /x/checkpoint-4" in str(disk_error(full, "/x/checkpoint-6", "/x/checkpoint-4"))
