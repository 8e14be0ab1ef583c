"""Reliability: kill and resume bitwise, atomic checkpoints, non-finite loss, full disk, bad files, pickle refusal,
concurrent cache writers."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from safetensors.torch import load_file

from seqtune.checkpoint import checkpoints, resolve_resume_path
from seqtune.output_dir import INCOMPLETE_MARKER
from seqtune.cli import main
from seqtune.errors import SeqtuneError
from tests.conftest import write_csv


def train_cmd(tiny_model, pair_files, out, *extra):
    return ["train", "--model_name_or_path", tiny_model, "--train_file", pair_files["train"],
            "--validation_file", pair_files["validation"], "--output_dir", out, "--per_device_train_batch_size", "4",
            "--num_train_epochs", "2", "--save_steps", "4", "--learning_rate", "1e-3", "--logging_steps", "2",
            "--seed", "11", "--save_optimizer_state_on_finish", *extra]


# Runs the real CLI in a child process, which stalls right after writing checkpoint-6 (mid-epoch: 12 steps per
# epoch) and signals the test through a file, so the test can SIGKILL it at a known point.
STALLING_CHILD = textwrap.dedent("""
    import sys, time
    import seqtune.train as t
    original = t.write_checkpoint
    def stalling(accelerator, out, state, *a, **k):
        path = original(accelerator, out, state, *a, **k)
        if state.step == {kill_after}:
            open(sys.argv[1], "w").close()
            time.sleep(600)
        return path
    t.write_checkpoint = stalling
    from seqtune.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def test_sigkill_then_resume_equals_an_uninterrupted_run(tiny_model, pair_files, tmp_path, capsys):
    reference, killed = str(tmp_path / "reference"), str(tmp_path / "killed")
    assert main(train_cmd(tiny_model, pair_files, reference, "--save_steps", "2")) == 0
    expected = json.loads(capsys.readouterr().out.strip().splitlines()[-1])

    flag = str(tmp_path / "stalled")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    child = subprocess.Popen([sys.executable, "-c", STALLING_CHILD.format(kill_after=6), flag,
                              *train_cmd(tiny_model, pair_files, killed, "--save_steps", "2")], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not os.path.exists(flag) and child.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert os.path.exists(flag), "the child never reached checkpoint-6"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert os.path.exists(os.path.join(killed, INCOMPLETE_MARKER))  # clearly unfinished
    assert not os.path.exists(os.path.join(killed, "all_results.json"))
    assert [os.path.basename(c) for c in checkpoints(killed)] == ["checkpoint-4", "checkpoint-6"]  # limit 2

    assert main(train_cmd(tiny_model, pair_files, killed, "--save_steps", "2", "--resume_from_checkpoint")) == 0
    resumed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert not os.path.exists(os.path.join(killed, INCOMPLETE_MARKER))
    # bitwise on CPU with the same thread count: same data order, same dropout masks, same optimizer state
    want, got = load_file(os.path.join(reference, "model.safetensors")), load_file(os.path.join(killed,
                                                                                             "model.safetensors"))
    assert want.keys() == got.keys()
    for name in want:
        assert want[name].equal(got[name]), name
    for key in ("eval_f1", "eval_accuracy", "global_step", "best_step", "train_samples"):
        assert resumed[key] == expected[key], key
    log = [json.loads(line) for line in open(os.path.join(killed, "train_log.jsonl"))]
    assert [r["step"] for r in log if "loss" in r] == list(range(2, 25, 2))  # the log continues where it stopped


def test_resume_skips_interrupted_checkpoint_writes(tmp_path):
    out = tmp_path / "run"
    (out / "checkpoint-4").mkdir(parents=True)
    (out / "checkpoint-4" / "trainer_state.json").write_text("{}")
    (out / "checkpoint-8.tmp").mkdir()  # killed while writing: never renamed into place
    (out / "checkpoint-6").mkdir()  # no trainer_state.json: not complete
    assert resolve_resume_path("latest", str(out)) == str(out / "checkpoint-4")
    with pytest.raises(SeqtuneError, match="no checkpoint in --output_dir"):
        resolve_resume_path("latest", str(tmp_path / "empty"))


def test_non_finite_loss_stops_and_names_the_step(tiny_model, tmp_path, capsys):
    # an infinite label is refused with the data; a learning rate of 1e30 makes the loss overflow in training
    rows = [{"sentence1": f"the cat {i}", "sentence2": f"a dog {i}", "label": float(i % 3)} for i in range(16)]
    train = write_csv(str(tmp_path / "train.csv"), rows)
    out = str(tmp_path / "run")
    code = main(["train", "--model_name_or_path", tiny_model, "--train_file", train, "--output_dir", out,
                 "--per_device_train_batch_size", "4", "--max_steps", "8", "--logging_steps", "1", "--no_bf16",
                 "--learning_rate", "1e30", "--warmup_ratio", "0", "--max_grad_norm", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert re.search(r"the training loss became (inf|nan) at step [2-8] \(epoch", err) and "--learning_rate" in err
    assert os.path.exists(os.path.join(out, INCOMPLETE_MARKER))
    assert not os.path.exists(os.path.join(out, "model.safetensors"))


def test_full_disk_while_saving(tiny_model, pair_files, tmp_path, capsys, monkeypatch):
    import transformers

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(transformers.PreTrainedModel, "save_pretrained", no_space)
    out = str(tmp_path / "run")
    code = main(train_cmd(tiny_model, pair_files, out, "--num_train_epochs", "1"))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "no space left on the device while writing" in err and "free some space, or write to another disk" in err
    assert os.path.exists(os.path.join(out, INCOMPLETE_MARKER))
    assert not os.path.exists(os.path.join(out, "model.safetensors"))
    assert not [n for n in os.listdir(out) if n.endswith(".saving")]  # no half-written model left behind
    assert checkpoints(out)  # the checkpoints written before are intact


def run_error(capsys, args, out):
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert not os.path.exists(out)
    return err


def bad_file_train(tiny_model, path, out, *extra):
    return ["train", "--model_name_or_path", tiny_model, "--train_file", path, "--output_dir", out, *extra]


def test_empty_and_header_only_files(tiny_model, tmp_path, capsys):
    empty, header = tmp_path / "empty.csv", tmp_path / "header.csv"
    empty.write_text("")
    header.write_text("sentence1,sentence2,label\n")
    out = str(tmp_path / "out")
    assert "the file is empty" in run_error(capsys, bad_file_train(tiny_model, str(empty), out), out)
    assert "no rows (only a header?)" in run_error(capsys, bad_file_train(tiny_model, str(header), out), out)
    # beside a file with rows, either way round (datasets alone fails there on the empty file's column types)
    good = tmp_path / "good.csv"
    good.write_text("sentence1,sentence2,label\na b,c d,1\ne f,g h,0\n")
    for train, validation in ((header, good), (good, header)):
        err = run_error(capsys, bad_file_train(tiny_model, str(train), out, "--validation_file", str(validation)), out)
        assert f"{header}: no rows (only a header?)" in err


def test_parquet_shards_without_rows_are_read_past(tiny_model, tmp_path, capsys):
    """A shard folder with an empty part file (Spark writes one per empty partition) reads as its other shards;
    only empty shards are no rows, said so."""
    import pandas as pd

    frame = pd.DataFrame({"sentence1": ["a b", "c d", "e f"], "sentence2": ["g", "h", "i"], "label": [0, 1, 0]})
    (tmp_path / "shards").mkdir()
    frame.iloc[:0].to_parquet(tmp_path / "shards" / "part-0.parquet")
    frame.to_parquet(tmp_path / "shards" / "part-1.parquet")
    assert main(["data", "--model_name_or_path", tiny_model, "--train_file", str(tmp_path / "shards" / "*.parquet")]
                ) == 0
    assert "num_rows: 3" in capsys.readouterr().out
    (tmp_path / "shards" / "part-1.parquet").unlink()
    out = str(tmp_path / "out")
    err = run_error(capsys, bad_file_train(tiny_model, str(tmp_path / "shards" / "*.parquet"), out), out)
    assert "no rows (its Parquet files hold none)" in err


def test_a_folder_given_as_a_file_and_labels_of_two_kinds_are_named_with_the_fix(tiny_model, tmp_path, capsys):
    out = str(tmp_path / "out")
    (tmp_path / "data").mkdir()
    err = run_error(capsys, bad_file_train(tiny_model, str(tmp_path / "data"), out), out)
    assert "is a folder: name its files" in err and "unsupported" not in err
    numbers, names = tmp_path / "numbers.csv", tmp_path / "names.csv"
    numbers.write_text("sentence1,sentence2,label\na b,c d,1\ne f,g h,0\n")
    names.write_text("sentence1,sentence2,label\na b,c d,one\ne f,g h,zero\n")
    err = run_error(capsys, bad_file_train(tiny_model, str(numbers), out, "--validation_file", str(names)), out)
    assert "integer labels in one split and label names in the other" in err


def test_non_utf8_bytes(tiny_model, tmp_path, capsys):
    path = tmp_path / "latin1.csv"
    path.write_bytes("sentence1,sentence2,label\ncaf\xe9 au lait,un caf\xe9,1\n".encode("latin-1"))
    out = str(tmp_path / "out")
    assert "is not UTF-8 text" in run_error(capsys, bad_file_train(tiny_model, str(path), out), out)


def test_wrong_delimiter(tiny_model, tmp_path, capsys):
    path = write_csv(str(tmp_path / "tabs.csv"), [{"sentence1": "a b", "sentence2": "c d", "label": 1}],
                     delimiter="\t")
    out = str(tmp_path / "out")
    err = run_error(capsys, bad_file_train(tiny_model, path, out), out)
    assert "single column" in err and "delimiter" in err


def test_missing_label_column(tiny_model, tmp_path, capsys):
    path = write_csv(str(tmp_path / "nolabel.csv"), [{"sentence1": "a b", "sentence2": "c d"}])
    out = str(tmp_path / "out")
    assert "no label column found" in run_error(capsys, bad_file_train(tiny_model, path, out), out)


def test_empty_text(tiny_model, tmp_path, capsys):
    path = write_csv(str(tmp_path / "blank.csv"), [{"sentence1": "a b", "sentence2": "c d", "label": 1},
                                                   {"sentence1": "", "sentence2": "e f", "label": 0}])
    out = str(tmp_path / "out")
    assert "column 'sentence1' has empty (null) text" in run_error(capsys, bad_file_train(tiny_model, path, out),
                                                                   out)


def test_minus_one_labels_in_train(tiny_model, tmp_path, capsys):
    path = write_csv(str(tmp_path / "m1.csv"), [{"text": "a b", "label": 1}, {"text": "c d", "label": -1}])
    out = str(tmp_path / "out")
    assert "rows without a label" in run_error(capsys, bad_file_train(tiny_model, path, out), out)


def test_negative_sizes(tiny_model, pair_files, tmp_path, capsys):
    out = str(tmp_path / "out")
    err = run_error(capsys, bad_file_train(tiny_model, pair_files["train"], out, "--max_seq_length", "-5",
                                           "--gradient_accumulation_steps", "0", "--save_steps", "-1"), out)
    for flag in ("--max_seq_length", "--gradient_accumulation_steps", "--save_steps"):
        assert f"{flag} must be a positive number" in err


def test_head_with_another_number_of_labels(tiny_model, pair_files, tmp_path, capsys):
    two_labels = str(tmp_path / "two")
    assert main(["train", "--model_name_or_path", tiny_model, "--train_file", pair_files["train"], "--output_dir",
                 two_labels, "--max_steps", "1", "--eval_strategy", "no"]) == 0
    three = write_csv(str(tmp_path / "three.csv"), [{"text": f"w{i} x", "label": ["a", "b", "c"][i % 3]}
                                                    for i in range(9)])
    out = str(tmp_path / "out")
    err = run_error(capsys, bad_file_train(two_labels, three, out), out)
    assert "has a classification head with 2 labels but the data has 3" in err and "--ignore_mismatched_sizes" in err
    assert main(bad_file_train(two_labels, three, out, "--ignore_mismatched_sizes", "--max_steps", "1")) == 0


def test_pickle_weights_refused_unless_trusted(tiny_model, tmp_path, capsys):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    folder = str(tmp_path / "pickled")
    AutoModelForSequenceClassification.from_pretrained(tiny_model).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(folder)
    state = load_file(os.path.join(folder, "model.safetensors"))
    os.remove(os.path.join(folder, "model.safetensors"))
    torch.save(state, os.path.join(folder, "pytorch_model.bin"))
    capsys.readouterr()
    code = main(["predict", "--model_name_or_path", folder, "--sentence1", "the cat"])
    err = capsys.readouterr().err
    assert code == 2 and "pickled (.bin) weights" in err and "--allow_pickle_weights" in err
    assert main(["predict", "--model_name_or_path", folder, "--sentence1", "the cat", "--allow_pickle_weights"]) == 0


CACHE_WRITER = textwrap.dedent("""
    import sys
    from datasets import Dataset, DatasetDict
    from transformers import AutoTokenizer
    from seqtune.data import Columns, tokenize_datasets
    from seqtune.demo_data.generate import make_paraphrase_pairs
    raw = DatasetDict({"train": Dataset.from_list(make_paraphrase_pairs(3000, seed=5))})
    out = tokenize_datasets(raw, AutoTokenizer.from_pretrained(sys.argv[1]), Columns("sentence1", "sentence2", "label"),
                            64, True, sys.argv[2])
    print(len(out["train"]), sum(out["train"]["length"]))
""")


def test_two_runs_sharing_a_cache_do_not_corrupt_it(tiny_model, tmp_path):
    cache = str(tmp_path / "shared-cache")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    writers = [subprocess.Popen([sys.executable, "-c", CACHE_WRITER, tiny_model, cache], env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) for _ in range(2)]
    outputs = [w.communicate(timeout=300)[0].strip() for w in writers]
    assert all(w.returncode == 0 for w in writers)
    assert outputs[0] == outputs[1] != ""
    # and a third reader finds a complete, loadable cache file
    reader = subprocess.run([sys.executable, "-c", CACHE_WRITER, tiny_model, cache], env=env, capture_output=True,
                            text=True, timeout=300)
    assert reader.stdout.strip() == outputs[0]


def test_a_json_lines_file_naming_a_field_twice_or_with_a_broken_line_is_named(tiny_model, tmp_path, capsys):
    out = str(tmp_path / "out")
    twice = tmp_path / "twice.jsonl"
    twice.write_text('{"text": "a b", "label": 1}\n{"text": "c d", "text": "e f", "label": 0}\n')
    err = run_error(capsys, bad_file_train(tiny_model, str(twice), out), out)
    assert f"{twice} line 2: it names the field \"text\" twice" in err
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"text": "a b", "label": 1}\n{"text": "c d", "label": 0}\n{"text": "e f", "label": \n')
    assert f"{broken} line 3: " in run_error(capsys, bad_file_train(tiny_model, str(broken), out), out)
