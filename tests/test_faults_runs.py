"""Fault matrix, the run side: output folders (ownership, locks, two runs at once), disks that fill up, damaged
checkpoints, resumes that would not be exact, signals. Each case asserts the exit code, a one-line message without
a traceback, and the output folder's contents before and after (nothing of the user's deleted)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from seqtune.cli import main
from seqtune.output_dir import INCOMPLETE_MARKER, LOCK_FILE, MANIFEST_FILE
from tests.conftest import write_csv


def cmd(model, files, out, *extra):
    return ["train", "--model_name_or_path", model, "--train_file", files["train"], "--validation_file",
            files["validation"], "--output_dir", out, "--per_device_train_batch_size", "8", "--num_train_epochs",
            "2", "--save_steps", "2", "--logging_steps", "1", "--seed", "1", "--disable_tqdm",
            "--save_optimizer_state_on_finish", *extra]  # finished runs resumed from their checkpoints


def tree(folder) -> set[str]:
    """Every path under `folder`, relative to it."""
    found = set()
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            found.add(os.path.relpath(os.path.join(root, name), folder))
    return found


def one_line_error(capsys, code_expected=2) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.strip().splitlines() if line.startswith("seqtune train")]
    assert "Traceback" not in captured.err, captured.err[-2000:]
    assert len(lines) == 1, captured.err[-2000:]
    return lines[0]


@pytest.fixture()
def finished_run(tiny_model, pair_files, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("finished") / "run")
    assert main(cmd(tiny_model, pair_files, out)) == 0
    return out


# ----------------------------------------------------------------------------------------------- output folders
def test_overwrite_removes_only_what_seqtune_wrote(finished_run, tiny_model, pair_files, tmp_path, capsys):
    out = str(tmp_path / "run")
    shutil.copytree(finished_run, out)
    os.makedirs(os.path.join(out, "checkpoint-old"))
    user_files = {"checkpoint-old/notes.txt": "mine", "best_model_ideas.txt": "mine", "data.csv": "a,b\n",
                  "checkpoint-99/keep.txt": "not a seqtune checkpoint"}
    for name, text in user_files.items():
        os.makedirs(os.path.dirname(os.path.join(out, name)), exist_ok=True)
        with open(os.path.join(out, name), "w") as f:
            f.write(text)
    assert main(cmd(tiny_model, pair_files, out, "--overwrite_output_dir", "--max_steps", "3")) == 0
    for name, text in user_files.items():
        assert open(os.path.join(out, name)).read() == text, name
    results = json.load(open(os.path.join(out, "all_results.json")))
    assert results["global_step"] == 3  # the new run's, not the old one's
    assert not os.path.exists(os.path.join(out, "checkpoint-12"))  # the earlier run's checkpoints are gone


def test_a_user_folder_named_like_a_checkpoint_is_not_replaced(tiny_model, pair_files, tmp_path, capsys):
    out = tmp_path / "run"
    (out / "checkpoint-2").mkdir(parents=True)
    (out / "checkpoint-2" / "mine.txt").write_text("mine")
    before = tree(out)
    code = main(cmd(tiny_model, pair_files, str(out), "--overwrite_output_dir"))
    line = one_line_error(capsys)
    assert code == 2 and "checkpoint-2 exists and was not written by seqtune" in line
    assert (out / "checkpoint-2" / "mine.txt").read_text() == "mine"
    assert before <= tree(out)


def test_a_refused_run_leaves_no_folder_behind(tiny_model, tmp_path, capsys):
    train = write_csv(str(tmp_path / "train.csv"), [{"text": "only one row", "label": 0.5}])
    out = tmp_path / "new-folder"
    code = main(["train", "--model_name_or_path", tiny_model, "--train_file", train, "--output_dir", str(out)])
    assert code == 2 and "Traceback" not in capsys.readouterr().err
    assert not out.exists()  # created for the lock, removed again: the run wrote nothing


def test_an_empty_folder_stays_empty_when_refused(tiny_model, tmp_path, capsys):
    train = write_csv(str(tmp_path / "train.csv"), [{"text": "only one row", "label": 0.5}])
    out = tmp_path / "empty"
    out.mkdir()
    code = main(["train", "--model_name_or_path", tiny_model, "--train_file", train, "--output_dir", str(out)])
    assert code == 2 and os.listdir(out) == []


HOLDER = textwrap.dedent("""
    import sys, time
    import seqtune.train as t
    original = t.write_checkpoint
    def write_checkpoint(accelerator, out, state, *a, **k):
        path = original(accelerator, out, state, *a, **k)
        open(sys.argv[1], "w").close()
        time.sleep(600)
    t.write_checkpoint = write_checkpoint
    from seqtune.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def test_two_runs_into_one_folder(tiny_model, pair_files, tmp_path, capsys):
    out = str(tmp_path / "run")
    flag = str(tmp_path / "holding")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    first = subprocess.Popen([sys.executable, "-c", HOLDER, flag, *cmd(tiny_model, pair_files, out)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not os.path.exists(flag) and first.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert os.path.exists(flag), "the first run never wrote its first checkpoint"
        before = tree(out)
        code = main(cmd(tiny_model, pair_files, out, "--overwrite_output_dir"))
        line = one_line_error(capsys)
        assert code == 2 and f"in use by another seqtune run (process {first.pid}" in line
        assert tree(out) == before  # the second run deleted none of the first one's files
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the lock dies with its holder: a resume takes over the folder
    assert main(cmd(tiny_model, pair_files, out, "--resume_from_checkpoint")) == 0
    assert not os.path.exists(os.path.join(out, LOCK_FILE))


# ----------------------------------------------------------------------------------------------- full disk
def failing_torch_save(monkeypatch, fail_on_call: int, error: Exception):
    import torch

    original, calls = torch.save, {"n": 0}

    def save(obj, f, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= fail_on_call:
            if isinstance(f, (str, os.PathLike)):
                with open(f, "wb") as partial:
                    partial.write(b"half")  # what a full disk leaves
            raise error
        return original(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)


@pytest.mark.parametrize("error", [
    RuntimeError("[enforce fail at inline_container.cc:664] . PytorchStreamWriter failed writing file data/3: file "
                 "write failed"),
    OSError(errno.ENOSPC, "No space left on device"),
], ids=["torch-runtime-error", "enospc"])
def test_disk_full_while_writing_a_checkpoint(tiny_model, pair_files, tmp_path, capsys, monkeypatch, error):
    out = str(tmp_path / "run")
    failing_torch_save(monkeypatch, fail_on_call=5, error=error)  # the first checkpoint: 3-4 files, then the second
    code = main(cmd(tiny_model, pair_files, out))
    line = one_line_error(capsys)
    assert code == 2 and "no space left on the device while writing" in line
    assert "the last good checkpoint is" in line and "checkpoint-2" in line
    names = os.listdir(out)
    assert not [n for n in names if n.endswith(".tmp")]  # the partial checkpoint was removed
    assert "checkpoint-2" in names and INCOMPLETE_MARKER in names
    assert "model.safetensors" not in names


def test_disk_full_while_writing_the_loop_state(tiny_model, pair_files, tmp_path, capsys, monkeypatch):
    import seqtune.checkpoint as checkpoint

    def no_space(path, data, indent=2):
        raise checkpoint.disk_error(OSError(errno.ENOSPC, "No space left on device"), path)

    monkeypatch.setattr(checkpoint, "write_json", no_space)
    out = str(tmp_path / "run")
    code = main(cmd(tiny_model, pair_files, out))
    line = one_line_error(capsys)
    assert code == 2 and "no space left on the device" in line
    assert not [n for n in os.listdir(out) if n.startswith("checkpoint-")]


# ----------------------------------------------------------------------------------------------- damaged checkpoints
def damage(path: str, how: str) -> None:
    if how == "remove":
        os.remove(path)
    elif how.startswith("field "):  # a JSON field of the wrong type, or gone
        _, name, value = how.split(" ")
        state = json.load(open(path))
        state.pop(name) if value == "gone" else state.update({name: json.loads(value)})
        json.dump(state, open(path, "w"))
    elif how == "truncate":
        with open(path, "r+b") as f:
            f.truncate(max(1, os.path.getsize(path) // 3))
    else:
        with open(path, "wb") as f:
            f.write(b"\x00garbage\xff" * 10)


@pytest.mark.parametrize("part,how", [
    ("model.safetensors", "remove"), ("model.safetensors", "truncate"), ("optimizer.bin", "truncate"),
    ("optimizer.bin", "remove"), ("scheduler.bin", "garbage"), ("random_states_0.pkl", "garbage"),
    ("random_states_0.pkl", "remove"), ("trainer_state.json", "garbage"),
    ("trainer_state.json", 'field step "x"'), ("trainer_state.json", "field epoch gone"),
    ("trainer_state.json", "field best_metrics [1]"),
])
def test_a_damaged_checkpoint_is_named_with_the_previous_one(finished_run, tiny_model, pair_files, tmp_path, capsys,
                                                             part, how):
    out = str(tmp_path / "run")
    shutil.copytree(finished_run, out)
    damage(os.path.join(out, "checkpoint-12", part), how)
    before = tree(out)
    code = main(cmd(tiny_model, pair_files, out, "--resume_from_checkpoint", os.path.join(out, "checkpoint-12")))
    line = one_line_error(capsys)
    assert code == 2 and f"checkpoint-12 is damaged: {part} cannot be read" in line
    assert "--resume_from_checkpoint" in line and "checkpoint-10" in line  # the previous one
    assert tree(out) == before


def test_a_damaged_checkpoint_resumed_with_other_settings_is_named_damaged_first(finished_run, tiny_model, pair_files,
                                                                                 tmp_path, capsys):
    """Damage no flag gets past is named before the settings: --allow_inexact_resume would not help."""
    out = str(tmp_path / "run")
    shutil.copytree(finished_run, out)
    damage(os.path.join(out, "checkpoint-12", "optimizer.bin"), "truncate")
    code = main(cmd(tiny_model, pair_files, out, "--resume_from_checkpoint", os.path.join(out, "checkpoint-12"),
                    "--learning_rate", "9e-4"))
    line = one_line_error(capsys)
    assert code == 2 and "checkpoint-12 is damaged: optimizer.bin cannot be read" in line
    assert "--allow_inexact_resume" not in line


@pytest.mark.parametrize("how", ["truncate", "remove"])
def test_damaged_best_weights_are_named(tiny_model, pair_files, tmp_path, capsys, how):
    out = str(tmp_path / "run")
    # a tiny learning rate: the best evaluation is not the last step's, so the checkpoint carries its weights
    args = cmd(tiny_model, pair_files, out, "--learning_rate", "3e-2", "--eval_strategy", "steps", "--eval_steps", "2")
    assert main(args) == 0
    capsys.readouterr()
    carrying = [c for c in os.listdir(out) if c.startswith("checkpoint-")
                and os.path.exists(os.path.join(out, c, "best_model.safetensors"))]
    if not carrying:
        pytest.skip("the last step was the best one: no separate best weights to damage")
    damage(os.path.join(out, carrying[-1], "best_model.safetensors"), how)
    before = tree(out)
    code = main(args + ["--resume_from_checkpoint", os.path.join(out, carrying[-1])])
    line = one_line_error(capsys)
    assert code == 2 and "best_model.safetensors cannot be read" in line and "--resume_from_checkpoint" in line
    assert tree(out) == before


# ----------------------------------------------------------------------------------------------- resume hazards
@pytest.mark.parametrize("change,expected", [
    (["--per_device_train_batch_size", "4"], "per_device_train_batch_size: checkpoint 8, now 4"),
    (["--gradient_accumulation_steps", "2"], "gradient_accumulation_steps"),
    (["--seed", "2"], "seed: checkpoint 1, now 2"),
    (["--max_seq_length", "64"], "max_seq_length"),
    (["--no_group_by_length"], "batching"),
    (["--lr_scheduler_type", "cosine"], "lr_scheduler_type"),
    (["--num_train_epochs", "3"], "max_steps: checkpoint 12, now 18"),
], ids=["batch", "accumulation", "seed", "max-length", "batching", "schedule", "epochs"])
def test_resume_with_settings_that_change_the_run_is_refused(finished_run, tiny_model, pair_files, tmp_path, capsys,
                                                             change, expected):
    out = str(tmp_path / "run")
    shutil.copytree(finished_run, out)
    before = tree(out)
    code = main(cmd(tiny_model, pair_files, out, "--resume_from_checkpoint", *change))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and expected in err and "--allow_inexact_resume" in err
    assert tree(out) == before


def test_resume_on_other_data_or_labels_is_refused(finished_run, tiny_model, pair_files, tmp_path, capsys):
    out = str(tmp_path / "run")
    shutil.copytree(finished_run, out)
    rows = [{"sentence1": f"a {i}", "sentence2": f"b {i}", "label": ["x", "y", "z"][i % 3]} for i in range(30)]
    other = write_csv(str(tmp_path / "other.csv"), rows)
    code = main(["train", "--model_name_or_path", tiny_model, "--train_file", other, "--output_dir", out,
                 "--per_device_train_batch_size", "8", "--resume_from_checkpoint", "--disable_tqdm"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "data: checkpoint" in err and "labels: checkpoint ['0', '1'], now ['x', 'y', 'z']" in err


def test_resume_without_a_checkpoint(tiny_model, pair_files, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    code = main(cmd(tiny_model, pair_files, str(out), "--resume_from_checkpoint"))
    line = one_line_error(capsys)
    assert code == 2 and "no checkpoint in --output_dir" in line and os.listdir(out) == []
    code = main(cmd(tiny_model, pair_files, str(out), "--resume_from_checkpoint", str(tmp_path / "nowhere")))
    line = one_line_error(capsys)
    assert code == 2 and "is not a complete seqtune checkpoint" in line


def test_an_interrupted_checkpoint_write_is_never_resumed(finished_run, tiny_model, pair_files, tmp_path):
    out = str(tmp_path / "run")
    shutil.copytree(finished_run, out)
    os.rename(os.path.join(out, "checkpoint-12"), os.path.join(out, "checkpoint-12.tmp"))  # killed mid-write
    assert main(cmd(tiny_model, pair_files, out, "--resume_from_checkpoint")) == 0  # from checkpoint-10
    assert json.load(open(os.path.join(out, "all_results.json")))["global_step"] == 12


# ----------------------------------------------------------------------------------------------- signals
SIGNALLER = textwrap.dedent("""
    import os, signal, sys
    import seqtune.train as t
    original_fit = t.fit
    def fit(*a, **k):
        a[7].after_step.append(lambda s: os.kill(os.getpid(), int(sys.argv[1])) if s.step == 3 else None)
        return original_fit(*a, **k)
    t.fit = fit
    from seqtune.cli import main
    sys.exit(main(sys.argv[2:]))
""")


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_a_signal_writes_a_checkpoint_and_exits(tiny_model, pair_files, tmp_path, sig, code):
    out = str(tmp_path / "run")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    result = subprocess.run([sys.executable, "-c", SIGNALLER, str(int(sig)), *cmd(tiny_model, pair_files, out,
                                                                                 "--save_steps", "100")],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == code, result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert f"stopped by {sig.name} after writing" in result.stderr.strip().splitlines()[-1]
    assert "checkpoint-3" in os.listdir(out) and INCOMPLETE_MARKER in os.listdir(out)
    assert MANIFEST_FILE in os.listdir(out) and LOCK_FILE not in os.listdir(out)


def test_a_run_killed_during_setup_leaves_a_folder_the_next_run_takes(tiny_model, pair_files, tmp_path, capsys):
    """SIGKILL before anything was written leaves the folder with only its (no longer locked) lock file."""
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_FILE).write_text('{"pid": 999999}')
    assert main(cmd(tiny_model, pair_files, str(out), "--max_steps", "2")) == 0
    assert not (out / LOCK_FILE).exists() and (out / "model.safetensors").exists()


@pytest.fixture()
def small_disk(tmp_path):
    """A real full disk: a tmpfs of a few hundred KB (needs root and mount; skipped where not permitted)."""
    mounts = []

    def make(size: str) -> str:
        folder = tmp_path / f"disk-{size}"
        folder.mkdir()
        result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                                capture_output=True)
        if result.returncode != 0:
            pytest.skip("cannot mount a tmpfs here")
        mounts.append(str(folder))
        return str(folder)

    yield make
    for folder in mounts:
        subprocess.run(["umount", "-l", folder], capture_output=True)


@pytest.mark.parametrize("size", ["60k", "450k", "1000k", "1400k"])
def test_a_real_full_disk(tiny_model, pair_files, small_disk, capsys, size):
    """Whatever write the disk fills up in (step log, checkpoint parts, the model), the run stops with the promised
    message, leaves no half-written checkpoint, and names the last good one when there is one."""
    out = os.path.join(small_disk(size), "run")
    code = main(cmd(tiny_model, pair_files, out, "--report_to", "jsonl"))
    if code == 0:
        pytest.skip(f"the run fitted in {size}")
    line = one_line_error(capsys)
    assert code == 2 and "no space left on the device" in line, line
    names = os.listdir(out)
    assert not [n for n in names if n.endswith(".tmp") or ".tmp." in n], names
    good = [n for n in names if n.startswith("checkpoint-")]
    if good:
        assert f"the last good checkpoint is {os.path.join(out, sorted(good, key=lambda n: int(n[11:]))[-1])}" in line


@pytest.mark.parametrize("name,is_dir", [("README.md", False), ("runs", True), ("config.json", False),
                                         ("report", True)])
def test_a_user_file_with_a_name_seqtune_writes_is_not_overwritten(tiny_model, pair_files, tmp_path, capsys, name,
                                                                    is_dir):
    out = tmp_path / "run"
    target = out / name
    if is_dir:
        target.mkdir(parents=True)
        (target / "my_experiment.txt").write_text("mine")
    else:
        out.mkdir()
        target.write_text("mine")
    before = tree(out)
    code = main(cmd(tiny_model, pair_files, str(out), "--overwrite_output_dir"))
    line = one_line_error(capsys)
    assert code == 2 and f"holds {name}, which this run would write over" in line
    assert tree(out) == before
    assert (target / "my_experiment.txt" if is_dir else target).read_text() == "mine"


# ----------------------------------------------------------------------------------------------- second adversarial pass
def test_a_report_of_a_stopped_run_does_not_block_its_resume(tiny_model, pair_files, tmp_path, capsys):
    out = str(tmp_path / "run")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    stopped = subprocess.run([sys.executable, "-c", SIGNALLER, str(int(signal.SIGTERM)),
                              *cmd(tiny_model, pair_files, out, "--save_steps", "100")],
                             env=env, capture_output=True, text=True, timeout=300)
    assert stopped.returncode == 143, stopped.stderr[-2000:]
    assert main(["report", out]) == 0  # writes README.md and report/ into the unfinished run
    assert main(cmd(tiny_model, pair_files, out, "--save_steps", "100", "--resume_from_checkpoint")) == 0


def test_overwrite_keeps_user_files_inside_seqtunes_folders(finished_run, tiny_model, pair_files, tmp_path):
    out = str(tmp_path / "run")
    shutil.copytree(finished_run, out)
    mine = ["report/notes.txt", "checkpoint-12/keep.txt", "runs/my_notes.txt"]
    for name in mine:
        with open(os.path.join(out, name), "w") as f:
            f.write("mine")
    assert main(cmd(tiny_model, pair_files, out, "--overwrite_output_dir", "--max_steps", "3",
                    "--save_total_limit", "1", "--report_to", "none")) == 0
    for name in mine:
        assert open(os.path.join(out, name)).read() == "mine", name
    assert not os.path.exists(os.path.join(out, "checkpoint-12", "model.safetensors"))  # seqtune's own went
    assert json.load(open(os.path.join(out, "all_results.json")))["global_step"] == 3


SETUP_SIGNAL = textwrap.dedent("""
    import os, signal, sys
    import seqtune.train as t
    original = t.setup_data
    def setup_data(*a, **k):
        os.kill(os.getpid(), signal.SIGTERM)
        return original(*a, **k)
    t.setup_data = setup_data
    from seqtune.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_sigterm_before_training_is_one_line_and_leaves_no_folder(tiny_model, pair_files, tmp_path):
    out = str(tmp_path / "run")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    result = subprocess.run([sys.executable, "-c", SETUP_SIGNAL, *cmd(tiny_model, pair_files, out)], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 143 and result.stderr.strip().splitlines()[-1] == "seqtune train: terminated"
    assert "Traceback" not in result.stderr and not os.path.exists(out)


AFTER_STAGE_SIGNAL = textwrap.dedent("""
    import os, signal, sys
    import seqtune.train as t
    stage, signame, calls = sys.argv[1], sys.argv[2], [0]
    original = getattr(t, stage)
    def stopped(*a, **k):
        result = original(*a, **k)
        calls[0] += 1
        if calls[0] == int(os.environ.get("AT_CALL", "1")):
            os.kill(os.getpid(), getattr(signal, signame))
        return result
    setattr(t, stage, stopped)
    from seqtune.cli import main
    sys.exit(main(sys.argv[3:]))
""")


def after_stage(stage: str, signame: str, argv: list[str], at_call: int = 1):
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "AT_CALL": str(at_call)}
    return subprocess.run([sys.executable, "-c", AFTER_STAGE_SIGNAL, stage, signame, *argv], env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("stage, signame, code", [("setup_tracking", "SIGTERM", 143), ("loop_hooks", "SIGINT", 130)])
def test_a_signal_after_the_run_began_writing_but_before_its_loop_leaves_nothing_behind(
        tiny_model, pair_files, tmp_path, stage, signame, code):
    """The step log's files, the token lengths, INCOMPLETE: written before the loop, removed again."""
    out = str(tmp_path / "run")
    result = after_stage(stage, signame, cmd(tiny_model, pair_files, out))
    assert result.returncode == code and "Traceback" not in result.stderr and not os.path.exists(out)
    # in a folder that was there before (a user's file in it): that file stays, and the same command then runs
    os.makedirs(out)
    open(os.path.join(out, "notes.txt"), "w").write("mine")
    argv = cmd(tiny_model, pair_files, out, "--overwrite_output_dir")
    assert after_stage(stage, signame, argv).returncode == code
    assert sorted(os.listdir(out)) == [MANIFEST_FILE, "notes.txt"]
    assert main(argv) == 0 and open(os.path.join(out, "notes.txt")).read() == "mine"


def test_a_sweep_killed_as_a_run_opens_its_log_continues_with_the_same_command(tiny_model, pair_files, tmp_path):
    """SIGKILL just after the second run created its step log: that run's files are seqtune's, not foreign."""
    out = str(tmp_path / "sweep")
    argv = ["sweep", *cmd(tiny_model, pair_files, out, "--max_steps", "2")[1:], "--seeds", "1,2"]
    assert after_stage("StepLog", "SIGKILL", argv, at_call=2).returncode == -signal.SIGKILL
    assert main(argv) == 0
    assert all(os.path.isfile(os.path.join(out, f"seed-{s}", "all_results.json")) for s in (1, 2))


def test_evaluate_scores_a_regression_model(tiny_model, tmp_path, capsys):
    rows = [{"sentence1": f"the cat {i}", "sentence2": f"a dog {i % 5}", "label": (i % 7) * 0.5} for i in range(40)]
    train, validation = (write_csv(str(tmp_path / f"{s}.csv"), part) for s, part in (("t", rows[:32]), ("v", rows[32:])))
    out = str(tmp_path / "run")
    assert main(["train", "--model_name_or_path", tiny_model, "--train_file", train, "--validation_file", validation,
                 "--output_dir", out, "--max_steps", "8", "--learning_rate", "1e-3", "--no_bf16", "--disable_tqdm"]) == 0
    trained = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(["evaluate", "--model_name_or_path", out, "--validation_file", validation]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # scored as training scored it (a tiny model's scores may be constant, and then both are NaN)
    assert {"pearson", "spearmanr"} <= set(evaluated)
    assert evaluated["pearson"] == pytest.approx(trained["eval_pearson"], abs=1e-5, nan_ok=True)


def test_a_checkpoint_or_unfinished_run_is_not_a_model(finished_run, tmp_path, capsys):
    code = main(["predict", "--model_name_or_path", os.path.join(finished_run, "checkpoint-12"), "--sentence1", "a"])
    assert code == 2 and "is a training checkpoint, not a saved model" in capsys.readouterr().err
    unfinished = str(tmp_path / "unfinished")
    shutil.copytree(finished_run, unfinished)
    open(os.path.join(unfinished, INCOMPLETE_MARKER), "w").close()
    code = main(["predict", "--model_name_or_path", unfinished, "--sentence1", "a"])
    assert code == 2 and "is a training run that has not finished" in capsys.readouterr().err


@pytest.mark.parametrize("content", ["", "[1]", '{"members": [1]}', '{"members": "member-1"}', '{"members": []}',
                                     '{"members": ["../run"]}', '{"members": ["member-9"]}'])
def test_a_damaged_ensemble_file_is_exit_2_naming_it_and_the_fix(finished_run, pair_files, tmp_path, capsys,
                                                                 content):
    from seqtune.ensemble import write_ensemble

    folder = write_ensemble([finished_run], str(tmp_path / "ensemble"))
    open(os.path.join(folder, "ensemble.json"), "w").write(content)
    capsys.readouterr()
    assert main(["evaluate", "--model_name_or_path", folder, "--validation_file", pair_files["validation"]]) == 2
    err = capsys.readouterr().err
    assert "ensemble.json" in err and "seqtune sweep --ensemble" in err and "unexpected" not in err


def test_evaluating_labels_the_model_does_not_know_is_exit_2(finished_run, pair_files, tmp_path, capsys):
    rows = [{"sentence1": "a cat", "sentence2": "the cat", "label": label} for label in ("yes", "no", "maybe")]
    validation = write_csv(str(tmp_path / "named.csv"), rows)
    capsys.readouterr()
    assert main(["evaluate", "--model_name_or_path", finished_run, "--validation_file", validation]) == 2
    assert "are not among the model's labels" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- kills at awkward points
# The real CLI in a child process that SIGKILLs itself at the N-th call of module.function, before or after the call.
KILLED_AT = textwrap.dedent("""
    import importlib, os, signal, sys
    module_name, attribute, nth, when = sys.argv[1].split(":")
    owner = importlib.import_module(module_name)
    path = attribute.split(".")
    holder = getattr(owner, path[0]) if len(path) == 2 else owner
    original, calls = getattr(holder, path[-1]), []
    def killing(*a, **k):
        calls.append(1)
        if len(calls) == int(nth) and when == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        result = original(*a, **k)
        if len(calls) == int(nth) and when == "after":
            os.kill(os.getpid(), signal.SIGKILL)
        return result
    setattr(holder, path[-1], killing)
    from seqtune.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def killed_at(where: str, command: list[str]) -> None:
    child = subprocess.run([sys.executable, "-c", KILLED_AT, where, *command], capture_output=True, text=True,
                           env={**os.environ, "PYTHONPATH": os.getcwd()}, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]


def without_kept_state(command: list[str]) -> list[str]:
    return [part for part in command if part != "--save_optimizer_state_on_finish"]


def test_a_run_killed_while_its_report_renders_resumes_to_the_same_model(finished_run, tiny_model, pair_files,
                                                                         tmp_path):
    """The finished run's checkpoints go only once it is whole: a kill before leaves the last one to resume from."""
    out = str(tmp_path / "run")
    command = without_kept_state(cmd(tiny_model, pair_files, out))
    killed_at("seqtune.report:build_report:1:before", command)
    assert os.path.exists(os.path.join(out, INCOMPLETE_MARKER))
    assert main(command + ["--resume_from_checkpoint"]) == 0
    assert not os.path.exists(os.path.join(out, INCOMPLETE_MARKER))
    assert not [n for n in os.listdir(out) if n.startswith("checkpoint-")]
    with open(os.path.join(out, "model.safetensors"), "rb") as a, \
            open(os.path.join(finished_run, "model.safetensors"), "rb") as b:
        assert a.read() == b.read()


def test_a_kill_right_after_a_checkpoint_is_in_place_leaves_nothing_unrecorded(tiny_model, pair_files, tmp_path):
    """The checkpoint's files are recorded before it is moved into place, so the next run removes them all."""
    out = str(tmp_path / "run")
    killed_at("seqtune.output_dir:OutputDir.install:1:after", cmd(tiny_model, pair_files, out))
    assert os.path.isfile(os.path.join(out, "checkpoint-2", "optimizer.bin"))
    assert main(without_kept_state(cmd(tiny_model, pair_files, out, "--overwrite_output_dir", "--max_steps",
                                       "1"))) == 0
    assert not [n for n in os.listdir(out) if n.startswith("checkpoint-")]


def test_a_folder_half_cleaned_by_a_killed_overwrite_is_marked_incomplete(finished_run, tiny_model, pair_files,
                                                                          tmp_path):
    out = str(tmp_path / "run")
    shutil.copytree(finished_run, out)
    killed_at("seqtune.output_dir:OutputDir.remove_owned:3:before",
              cmd(tiny_model, pair_files, out, "--overwrite_output_dir"))
    assert os.path.exists(os.path.join(out, INCOMPLETE_MARKER))
    assert main(cmd(tiny_model, pair_files, out, "--overwrite_output_dir")) == 0
    assert not os.path.exists(os.path.join(out, INCOMPLETE_MARKER))


def test_a_checkpoint_saved_again_keeps_a_users_file_inside_it(finished_run, tiny_model, pair_files, tmp_path):
    out = str(tmp_path / "run")
    shutil.copytree(finished_run, out)
    with open(os.path.join(out, "checkpoint-12", "notes.txt"), "w") as f:
        f.write("mine")
    assert main(cmd(tiny_model, pair_files, out, "--overwrite_output_dir")) == 0  # writes checkpoint-12 again
    assert open(os.path.join(out, "checkpoint-12", "notes.txt")).read() == "mine"
    assert os.path.isfile(os.path.join(out, "checkpoint-12", "optimizer.bin"))
    manifest = json.load(open(os.path.join(out, MANIFEST_FILE)))
    assert "checkpoint-12/notes.txt" not in manifest["files"]
    assert main(cmd(tiny_model, pair_files, out, "--overwrite_output_dir", "--max_steps", "2")) == 0
    assert os.listdir(os.path.join(out, "checkpoint-12")) == ["notes.txt"]
