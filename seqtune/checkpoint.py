"""Checkpoints that survive kills: written to a temporary folder and renamed into place (atomic on one file
system), rotated to the newest N, found again by --resume_from_checkpoint."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil

from seqtune.errors import SeqtuneError

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"
INCOMPLETE_MARKER = "INCOMPLETE"  # present in output_dir while a run has not finished


def checkpoints(output_dir: str) -> list[str]:
    """Complete checkpoints in `output_dir`, oldest first (temporary folders of interrupted saves excluded)."""
    if not os.path.isdir(output_dir):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(output_dir) if (m := CHECKPOINT_RE.match(name))
             and os.path.isfile(os.path.join(output_dir, name, STATE_FILE))]
    return [os.path.join(output_dir, name) for _, name in sorted(found)]


def resolve_resume_path(value: str | None, output_dir: str) -> str | None:
    if value is None:
        return None
    if value == "latest":
        found = checkpoints(output_dir)
        if not found:
            raise SeqtuneError(f"--resume_from_checkpoint: no checkpoint in --output_dir {output_dir} to resume from; "
                               "start without the flag.")
        return found[-1]
    if not os.path.isfile(os.path.join(value, STATE_FILE)):
        raise SeqtuneError(f"--resume_from_checkpoint {value} is not a complete seqtune checkpoint (no {STATE_FILE}).")
    return value


def disk_error(error: OSError, where: str) -> SeqtuneError:
    if error.errno == errno.ENOSPC:
        return SeqtuneError(f"no space left on the device while writing {where}: free some space or choose another "
                            "--output_dir; the run is marked INCOMPLETE and its last checkpoint is intact.")
    return SeqtuneError(f"could not write {where}: {error.strerror or error}.")


def save_checkpoint(accelerator, output_dir: str, step: int, state: dict, limit: int | None) -> str:
    """accelerate's save_state (model, optimizer, scheduler, random states) plus our loop state, atomically."""
    final = os.path.join(output_dir, f"checkpoint-{step}")
    staging = final + ".tmp"
    try:
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(staging)
        accelerator.wait_for_everyone()  # every rank's random states are in the folder before it is renamed
        if accelerator.is_main_process:
            with open(os.path.join(staging, STATE_FILE), "w") as f:
                json.dump(state, f)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(staging, final)
            if limit:
                for old in checkpoints(output_dir)[:-limit]:
                    shutil.rmtree(old, ignore_errors=True)
    except OSError as error:
        if accelerator.is_main_process:
            shutil.rmtree(staging, ignore_errors=True)
        raise disk_error(error, final) from error
    accelerator.wait_for_everyone()
    return final


def load_loop_state(path: str) -> dict:
    with open(os.path.join(path, STATE_FILE)) as f:
        return json.load(f)
