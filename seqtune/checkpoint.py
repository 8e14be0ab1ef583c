"""Checkpoints that survive kills and resume exactly, or refuse.

A checkpoint is accelerate's `save_state` (model, optimizer, schedule, every process's random states) plus the
loop state (`trainer_state.json`: step, epoch, position in the data, best metric so far), the settings that
determine the run, and the best model's weights when they are not the checkpoint's own. It is written into
`checkpoint-N.tmp` and renamed into place, so a kill never leaves a half-written checkpoint that looks complete
(hand-written because accelerate writes in place)."""

from __future__ import annotations

import logging
import os
import re

from seqtune.ema import EMA_FILE
from seqtune.errors import SeqtuneError
from seqtune.fileio import WRITE_ERRORS, disk_error, read_json, remove_tree, usual_file_mode, write_json

logger = logging.getLogger("seqtune")
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"
BEST_WEIGHTS_FILE = "best_model.safetensors"  # the best evaluation's weights, when not this checkpoint's own


def checkpoints(output_dir: str) -> list[str]:
    """Complete checkpoints in `output_dir`, oldest first (temporary folders of interrupted saves excluded)."""
    if not os.path.isdir(output_dir):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(output_dir) if (m := CHECKPOINT_RE.match(name))
             and os.path.isfile(os.path.join(output_dir, name, STATE_FILE))]
    return [os.path.join(output_dir, name) for _, name in sorted(found)]


def resolve_resume_path(value: str | None, output_dir: str | None) -> str | None:
    if value is None:
        return None
    if value == "latest":
        found = checkpoints(output_dir) if output_dir else []
        if not found:
            raise SeqtuneError(f"--resume_from_checkpoint: no checkpoint in --output_dir {output_dir} to resume from; "
                               "start without the flag.")
        return found[-1]
    if not os.path.isfile(os.path.join(value, STATE_FILE)):
        raise SeqtuneError(f"--resume_from_checkpoint {value} is not a complete seqtune checkpoint (no {STATE_FILE}).")
    return value


def previous_checkpoint(path: str) -> str | None:
    folder = os.path.dirname(os.path.abspath(path))
    older = [c for c in checkpoints(folder) if os.path.abspath(c) != os.path.abspath(path)
             and int(c.rsplit("-", 1)[1]) < int(path.rstrip("/").rsplit("-", 1)[1])]
    return older[-1] if older else None


# ----------------------------------------------------------------------------------------------- saving
def save_checkpoint(accelerator, output_dir: str, step: int, state: dict, best_weights=None,
                    keep: list[str] | None = None, ema_weights=None, install=None) -> str:
    """Write checkpoint-`step` into a staging folder, then put it in place: `install(staging, final)`, by default a
    rename over any earlier folder. `best_weights` (a CPU state dict) are stored beside the model when the best
    evaluation was not at this step. Returns the checkpoint's path. Every process must call it."""
    final = os.path.join(output_dir, f"checkpoint-{step}")
    staging = final + ".tmp"
    failure = None
    try:
        if accelerator.is_main_process:
            remove_tree(staging)
        accelerator.wait_for_everyone()
        accelerator.save_state(staging)
    except WRITE_ERRORS as error:  # torch.save reports a full disk as RuntimeError
        failure = error
    # accelerate's save_state has no closing barrier: every rank's random states are in the folder before renaming
    accelerator.wait_for_everyone()
    if accelerator.is_main_process and failure is None:
        try:
            if best_weights is not None:
                from safetensors.torch import save_file

                save_file(best_weights, os.path.join(staging, BEST_WEIGHTS_FILE))
            if ema_weights is not None:  # --ema_decay: the average so far
                from safetensors.torch import save_file

                save_file(ema_weights, os.path.join(staging, EMA_FILE))
            write_json(os.path.join(staging, STATE_FILE), state, indent=None)
            usual_file_mode(*[os.path.join(staging, name) for name in os.listdir(staging)])
            (install or _replace_folder)(staging, final)
        except (*WRITE_ERRORS, SeqtuneError) as error:
            failure = error
    if failure is not None:
        if accelerator.is_main_process:
            remove_tree(staging)
        found = checkpoints(output_dir)
        raise disk_error(failure, final, found[-1] if found else None) from failure
    accelerator.wait_for_everyone()
    return final


def _replace_folder(staging: str, final: str) -> None:
    remove_tree(final)
    os.replace(staging, final)


def rotate_checkpoints(output_dir: str, limit: int | None, owned, remove) -> None:
    """Keep the newest `limit` checkpoints that this output folder's runs wrote (`owned(name)`); `remove(name)`
    deletes what seqtune wrote in one."""
    if not limit:
        return
    for old in [c for c in checkpoints(output_dir) if owned(os.path.basename(c))][:-limit]:
        remove(os.path.basename(old))


# ----------------------------------------------------------------------------------------------- resuming
def load_loop_state(path: str) -> dict:
    from seqtune.loop import LoopState

    try:
        state = read_json(os.path.join(path, STATE_FILE))
        if not isinstance(state, dict):
            raise ValueError("not a seqtune loop state")
        if problem := LoopState.problem(state):
            raise ValueError(f"not a seqtune loop state: {problem}")
        return state
    except (OSError, ValueError) as error:
        raise damaged(path, STATE_FILE, error) from error


def verify_checkpoint(path: str, num_processes: int) -> None:
    """Every part a resume needs is there and readable, before accelerate loads any of it (accelerate skips an
    unreadable random-state file with an INFO line, and the run would silently stop being exact)."""
    from accelerate.utils.other import load
    from safetensors import safe_open

    parts = ["model.safetensors", "optimizer.bin", "scheduler.bin"] + [f"random_states_{rank}.pkl"
                                                                       for rank in range(num_processes)]
    for name in parts:
        file = os.path.join(path, name)
        try:
            if not os.path.isfile(file):
                raise FileNotFoundError("missing")
            if name.endswith(".safetensors"):
                with safe_open(file, framework="pt") as f:
                    f.keys()
            else:
                load(file, map_location="cpu", weights_only=not name.startswith("random_states"))
        except Exception as error:  # noqa: BLE001 - any failure to read a part means the same to the user
            raise damaged(path, name, error) from error
    state = load_loop_state(path)
    if (state.get("settings") or {}).get("ema_decay"):
        _check_safetensors(path, EMA_FILE)
    best_apart = state.get("best_step") is not None and state.get("best_step") != state.get("step")
    if best_apart or os.path.exists(os.path.join(path, BEST_WEIGHTS_FILE)):  # the best evaluation's weights
        _check_safetensors(path, BEST_WEIGHTS_FILE)


def damaged(path: str, part: str, error: BaseException) -> SeqtuneError:
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    previous = previous_checkpoint(path)
    fix = (f"resume from the previous checkpoint with --resume_from_checkpoint {previous}" if previous
           else "start again without --resume_from_checkpoint")
    return SeqtuneError(f"checkpoint {path} is damaged: {part} cannot be read ({reason}): {fix}.")


def _check_safetensors(path: str, name: str) -> None:
    from safetensors import safe_open

    try:
        with safe_open(os.path.join(path, name), framework="pt") as f:
            f.keys()
    except Exception as error:  # noqa: BLE001 - any failure to read a part means the same to the user
        raise damaged(path, name, error) from error


def load_ema_weights(path: str) -> dict:
    from safetensors.torch import load_file

    return load_file(os.path.join(path, EMA_FILE))


def load_best_weights(path: str) -> dict | None:
    file = os.path.join(path, BEST_WEIGHTS_FILE)
    if not os.path.isfile(file):
        return None
    from safetensors.torch import load_file

    return load_file(file)


def settings_differences(saved: dict | None, current: dict) -> list[str]:
    """The settings that determine a run and differ between a checkpoint and this command."""
    if saved is None:
        return ["the checkpoint records no settings (written by an older seqtune)"]
    return [f"{key}: checkpoint {saved.get(key)!r}, now {value!r}" for key, value in current.items()
            if saved.get(key) != value]


def check_resume_settings(path: str, saved: dict | None, current: dict, allow: bool) -> None:
    differences = settings_differences(saved, current)
    if not differences:
        return
    if not allow:
        # since the batch defaults depend on the device, a run started with them may resolve otherwise now
        batch = any(d.split(":")[0] in ("batching", "learning_rate", "per_device_train_batch_size")
                    for d in differences)
        raise SeqtuneError(f"--resume_from_checkpoint {path} was written by a run with other settings, so resuming "
                           f"would not continue it exactly ({'; '.join(differences)}): resume with the checkpoint's "
                           "settings" + (" (give its --per_device_train_batch_size or --max_tokens_per_batch and "
                                         "its --learning_rate: left out, they follow the device)" if batch else "") +
                           ", start a new run in another --output_dir, or pass --allow_inexact_resume to "
                           "continue anyway.")
    logger.warning("Resuming from %s with other settings (--allow_inexact_resume): the run is NOT an exact "
                   "continuation. %s", path, "; ".join(differences))
