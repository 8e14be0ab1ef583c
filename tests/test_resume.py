"""Exact resume on the default configuration (symmetric pairs, length grouping, per-epoch evaluation, fast dropout,
bf16): a run killed at an awkward moment (mid-epoch, right after the epoch boundary, during an evaluation, by
SIGTERM) and resumed ends bitwise equal to the run that was never stopped. Also: settings that change the run are
refused on resume, damaged checkpoints are named, and the best model survives resumes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from safetensors.torch import load_file

from seqtune.checkpoint import checkpoints
from seqtune.cli import main
from seqtune.demo_data.generate import make_paraphrase_pairs
from seqtune.output_dir import INCOMPLETE_MARKER
from tests.conftest import write_csv

# 240 pairs x 2 orders = 480 rows, batch 8: 60 steps per epoch, 2 epochs (the default when pairs are doubled);
# a checkpoint every 25 steps and at each epoch end: 25, 50, 60, 75, 100, 120. 480 rows are more than one of the
# length-grouped sampler's mega-batches (50 batches), so each epoch's order depends on its seed.
STEPS_PER_EPOCH, TOTAL = 60, 120


@pytest.fixture(scope="module")
def pair_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume-pairs")
    rows = make_paraphrase_pairs(260, seed=21)
    return {"train": write_csv(str(folder / "train.csv"), rows[:240]),
            "validation": write_csv(str(folder / "validation.csv"), rows[240:])}


def defaults_cmd(model, files, out, *extra):
    return ["train", "--model_name_or_path", model, "--train_file", files["train"], "--validation_file",
            files["validation"], "--output_dir", out, "--symmetric_pairs", "true", "--per_device_train_batch_size",
            "8", "--save_steps", "25", "--save_total_limit", "3", "--logging_steps", "7", "--seed", "3",
            "--disable_tqdm", "--save_optimizer_state_on_finish", *extra]  # these runs are resumed and compared


# The real CLI in a child process, which stops at a chosen point and tells the test through a file: after writing
# a checkpoint, inside an evaluation, or by sending itself SIGTERM after a step.
CHILD = textwrap.dedent("""
    import os, signal, sys, time
    import seqtune.train as t, seqtune.best_model as b
    flag, where, at = sys.argv[1], sys.argv[2], int(sys.argv[3])
    def stall():
        open(flag, "w").close()
        time.sleep(600)
    if where == "after_checkpoint":
        original = t.write_checkpoint
        def write_checkpoint(accelerator, out, state, *a, **k):
            path = original(accelerator, out, state, *a, **k)
            if state.step == at:
                stall()
            return path
        t.write_checkpoint = write_checkpoint
    elif where == "during_eval":
        original_eval = b.BestModel.__call__
        def evaluate(self, state):
            if state.step == at:
                stall()
            return original_eval(self, state)
        b.BestModel.__call__ = evaluate
    elif where == "sigterm_in_eval":  # the signal arrives while the epoch end is evaluated
        original_eval = b.BestModel.__call__
        def evaluate(self, state):
            if state.step == at:
                os.kill(os.getpid(), signal.SIGTERM)
            return original_eval(self, state)
        b.BestModel.__call__ = evaluate
    elif where in ("sigterm", "ctrl_c", "group_sigterm"):  # to the whole process group, as a terminal or SLURM
        def send():
            if where == "sigterm":
                return os.kill(os.getpid(), signal.SIGTERM)
            import multiprocessing
            print(f"loader workers: {len(multiprocessing.active_children())}", file=sys.stderr, flush=True)
            os.killpg(os.getpgrp(), signal.SIGINT if where == "ctrl_c" else signal.SIGTERM)
        original_fit = t.fit
        def fit(*a, **k):
            hooks = a[7]
            hooks.after_step.append(lambda s: send() if s.step == at else None)
            return original_fit(*a, **k)
        t.fit = fit
    from seqtune.cli import main
    sys.exit(main(sys.argv[4:]))
""")


def run_child(tmp_path, where, at, args, kill=True):
    flag = str(tmp_path / f"stopped-{where}-{at}")
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    child = subprocess.Popen([sys.executable, "-c", CHILD, flag, where, str(at), *args], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)  # its own process group: a group signal stays in it
    if not kill:
        out, err = child.communicate(timeout=300)
        return child.returncode, err
    deadline = time.time() + 240
    while not os.path.exists(flag) and child.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert os.path.exists(flag), f"the child never reached {where} {at}: {child.communicate()[1][-2000:]}"
    child.send_signal(signal.SIGKILL)
    child.communicate()
    return -9, ""


def assert_same_weights(expected_dir, observed_dir, same_log=True):
    """The saved (best) model, the last checkpoint's model and every logged loss are bitwise the same: the best
    model alone could predate the point where a resumed run diverges."""
    for model in ("model.safetensors", f"checkpoint-{TOTAL}/model.safetensors"):
        expected, observed = (load_file(os.path.join(d, model)) for d in (expected_dir, observed_dir))
        assert expected.keys() == observed.keys()
        for name in expected:
            assert expected[name].equal(observed[name]), f"{model}: {name}"
    if same_log:
        expected, observed = ([(r["step"], r.get("loss"), r.get("eval_f1")) for r in map(json.loads, open(
            os.path.join(d, "train_log.jsonl")))] for d in (expected_dir, observed_dir))
        assert observed == expected


@pytest.fixture(scope="module")
def reference(tiny_model, pair_files, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("reference") / "run")
    assert main(defaults_cmd(tiny_model, pair_files, out)) == 0
    return out


@pytest.mark.parametrize("where,at,resumes_from", [
    ("after_checkpoint", 50, 50),  # mid-epoch 0: the resumed run crosses the epoch boundary
    ("after_checkpoint", 60, 60),  # right at the epoch boundary (evaluated, checkpointed)
    ("after_checkpoint", 75, 75),  # in epoch 1
    ("during_eval", 60, 50),  # killed while evaluating at the epoch end: its checkpoint was never written
    ("after_checkpoint", 120, 120),  # after the last checkpoint, before the model was saved
])
def test_killed_and_resumed_equals_uninterrupted(reference, tiny_model, pair_files, tmp_path, where, at,
                                                 resumes_from):
    out = str(tmp_path / "run")
    run_child(tmp_path, where, at, defaults_cmd(tiny_model, pair_files, out))
    assert os.path.exists(os.path.join(out, INCOMPLETE_MARKER))
    assert os.path.basename(checkpoints(out)[-1]) == f"checkpoint-{resumes_from}"
    assert main(defaults_cmd(tiny_model, pair_files, out, "--resume_from_checkpoint")) == 0
    assert_same_weights(reference, out)
    expected, observed = (json.load(open(os.path.join(d, "all_results.json"))) for d in (reference, out))
    for key in ("eval_f1", "eval_accuracy", "best_step", "global_step", "train_samples"):
        assert observed[key] == expected[key], key
    log = [json.loads(line) for line in open(os.path.join(out, "train_log.jsonl"))]
    # every 7 steps and the last: losses not yet logged at a checkpoint travel with it, none is logged twice
    assert [r["step"] for r in log if "loss" in r] == list(range(7, TOTAL + 1, 7)) + [TOTAL]
    assert [r["step"] for r in log if "eval_f1" in r] == [STEPS_PER_EPOCH, TOTAL]


@pytest.mark.parametrize("where,name,code", [("ctrl_c", "SIGINT", 130), ("group_sigterm", "SIGTERM", 143)])
def test_group_signal_with_loader_workers_then_resume_is_exact(reference, tiny_model, pair_files, tmp_path, where,
                                                               name, code):
    """--dataloader_num_workers (a GPU's default) changes who collates, not what. A signal to the whole process
    group (Ctrl-C in a terminal, SIGTERM from SLURM) reaches the workers too: they leave it to the training process,
    which says so once, checkpoints and exits, leaving no worker behind; resumed with two workers (whose first
    epoch is the rest of one, on its own loader), the run ends bitwise equal to the uninterrupted run collated by
    the loop itself, and stops its workers when it ends."""
    import multiprocessing

    out = str(tmp_path / "run")
    workers = ("--dataloader_num_workers", "2")
    returncode, err = run_child(tmp_path, where, 33, defaults_cmd(tiny_model, pair_files, out, *workers), kill=False)
    assert returncode == code and "Traceback" not in err, err[-2000:]
    assert "loader workers: 2" in err and err.count(f"{name} received") == 1, err[-2000:]
    assert os.path.basename(checkpoints(out)[-1]) == "checkpoint-33"
    assert main(defaults_cmd(tiny_model, pair_files, out, *workers, "--resume_from_checkpoint")) == 0
    assert_same_weights(reference, out)
    assert multiprocessing.active_children() == []  # both loaders' workers stopped with the run


@pytest.mark.parametrize("where,at", [("sigterm", 33), ("sigterm_in_eval", 60)])
def test_sigterm_checkpoints_and_says_how_to_resume(reference, tiny_model, pair_files, tmp_path, where, at):
    """After a step, or during the epoch end's evaluation (then the epoch's own checkpoint is the last one)."""
    out = str(tmp_path / "run")
    code, err = run_child(tmp_path, where, at, defaults_cmd(tiny_model, pair_files, out), kill=False)
    assert code == 143, err[-2000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert "stopped by SIGTERM after writing" in last and f"checkpoint-{at}; resume with: seqtune train" in last
    assert last.endswith("--resume_from_checkpoint")
    assert os.path.basename(checkpoints(out)[-1]) == f"checkpoint-{at}"
    assert os.path.exists(os.path.join(out, INCOMPLETE_MARKER))
    assert main(defaults_cmd(tiny_model, pair_files, out, "--resume_from_checkpoint")) == 0
    assert_same_weights(reference, out)


def test_resume_with_other_settings_is_refused_or_logged(reference, tiny_model, pair_files, tmp_path, capsys,
                                                         caplog):
    out = str(tmp_path / "run")
    shutil.copytree(reference, out)
    shutil.rmtree(os.path.join(out, "checkpoint-120"))  # resume from checkpoint-100
    before = sorted(os.listdir(out))
    code = main(defaults_cmd(tiny_model, pair_files, out, "--resume_from_checkpoint",
                             "--per_device_train_batch_size", "4", "--learning_rate", "3e-4"))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "per_device_train_batch_size: checkpoint 8, now 4" in err and "learning_rate" in err
    assert "--allow_inexact_resume" in err
    assert sorted(os.listdir(out)) == before  # nothing written or removed
    code = main(defaults_cmd(tiny_model, pair_files, out, "--resume_from_checkpoint", "--learning_rate", "3e-4",
                             "--allow_inexact_resume"))
    assert code == 0 and "NOT an exact continuation" in caplog.text


def test_a_finished_run_resumed_ships_its_best_step(reference, tiny_model, pair_files, tmp_path, capsys):
    """Resuming a finished run, or extending it with a larger --max_steps, keeps the weights of the best step."""
    out = str(tmp_path / "run")
    # a learning rate high enough that the last epoch is not the best one
    args = defaults_cmd(tiny_model, pair_files, out, "--learning_rate", "3e-2", "--eval_strategy", "steps",
                        "--eval_steps", "20")
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    weights = load_file(os.path.join(out, "model.safetensors"))
    assert main(args + ["--resume_from_checkpoint"]) == 0  # resumes the finished run: nothing to train
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["best_step"] == first["best_step"] and again["eval_f1"] == first["eval_f1"]
    for name, tensor in load_file(os.path.join(out, "model.safetensors")).items():
        assert tensor.equal(weights[name]), name
    assert main(args + ["--resume_from_checkpoint", "--max_steps", "140", "--allow_inexact_resume"]) == 0
    extended = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert extended["global_step"] == 140
    log = [json.loads(line) for line in open(os.path.join(out, "train_log.jsonl"))]
    evals = {r["step"]: r["eval_f1"] for r in log if "eval_f1" in r}
    best_step = max(evals, key=lambda s: (evals[s], -s))  # the first evaluation with the best value wins
    assert extended["best_step"] == best_step and extended["eval_f1"] == evals[best_step]
    if best_step == first["best_step"]:  # the best is still from before the extension: its weights are kept
        for name, tensor in load_file(os.path.join(out, "model.safetensors")).items():
            assert tensor.equal(weights[name]), name
    else:
        assert best_step > TOTAL


def test_lora_killed_and_resumed_equals_uninterrupted(tiny_model, pair_files, tmp_path):
    """LoRA (peft) checkpoints carry the adapters, the heads and their optimizer state: a run killed in epoch 1 and
    resumed ends bit for bit where the uninterrupted one does."""
    reference_dir, out = str(tmp_path / "reference"), str(tmp_path / "run")
    assert main(defaults_cmd(tiny_model, pair_files, reference_dir, "--lora_r", "4")) == 0
    run_child(tmp_path, "after_checkpoint", 75, defaults_cmd(tiny_model, pair_files, out, "--lora_r", "4"))
    assert main(defaults_cmd(tiny_model, pair_files, out, "--lora_r", "4", "--resume_from_checkpoint")) == 0
    assert_same_weights(reference_dir, out)


def test_a_resumed_run_with_a_weight_average_ends_bitwise_equal(tiny_model, pair_files, tmp_path):
    """--ema_decay: the average is in every checkpoint (ema.safetensors) and the best model is the average, so a
    run killed at the epoch boundary and resumed saves the same model, live weights and average."""
    expected, observed = str(tmp_path / "reference"), str(tmp_path / "resumed")
    assert main(defaults_cmd(tiny_model, pair_files, expected, "--ema_decay", "0.9")) == 0
    run_child(tmp_path, "after_checkpoint", 60, defaults_cmd(tiny_model, pair_files, observed, "--ema_decay", "0.9"))
    assert main(defaults_cmd(tiny_model, pair_files, observed, "--ema_decay", "0.9", "--resume_from_checkpoint",
                             "latest")) == 0
    assert_same_weights(expected, observed)
    averages = [load_file(os.path.join(d, f"checkpoint-{TOTAL}", "ema.safetensors")) for d in (expected, observed)]
    assert averages[0].keys() == averages[1].keys() and all(averages[0][k].equal(averages[1][k]) for k in averages[0])
    live = load_file(os.path.join(expected, f"checkpoint-{TOTAL}", "model.safetensors"))
    assert any(not averages[0][k].equal(live[k]) for k in averages[0])  # the average is not the live weights
    # a resume without the flag is another run: refused
    code = main(defaults_cmd(tiny_model, pair_files, observed, "--resume_from_checkpoint", "latest",
                             "--max_steps", "130"))
    assert code == 2
