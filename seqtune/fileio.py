"""Writing files so that a kill, a full disk or a failed write never leaves a half-written file that looks complete.

Every file seqtune writes goes through `atomic_write` (or `write_json`): the content goes to `NAME.tmp.PID`, is
flushed, then renamed over NAME (atomic on one file system); on any failure the temporary file is removed and the
error becomes a one-line `SeqtuneError` naming the file. Folders are staged the same way by their writers
(checkpoints, the saved model) and renamed into place."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil

from seqtune.errors import SeqtuneError

# errors a write can raise that mean "the disk or the folder refused it": torch.save raises RuntimeError with the
# OS message inside ("PytorchStreamWriter failed writing file ...: file write failed"), safetensors its own errors
def _write_errors() -> tuple:
    try:
        from safetensors import SafetensorError  # "Error while serializing: I/O error: No space left on device"
    except ImportError:
        return (OSError, RuntimeError)
    return (OSError, RuntimeError, SafetensorError)


WRITE_ERRORS = _write_errors()
# what torch's zip writer says when a write comes up short (a full disk)
SHORT_WRITE = ("No space left", "file write failed", "unexpected pos", "PytorchStreamWriter failed")


def disk_error(error: BaseException, where: str, last_good: str | None = None) -> SeqtuneError:
    """The one-line message for a failed write: what failed, why, and what is still intact."""
    no_space = getattr(error, "errno", None) == errno.ENOSPC or any(s in str(error) for s in SHORT_WRITE)
    intact = f"; the last good checkpoint is {last_good}" if last_good else ""
    if last_good and os.path.abspath(last_good) == os.path.abspath(where):  # it failed after the rename into place
        intact = f"; {where} itself was whole before the error: resume from it"
    if no_space:
        return SeqtuneError(f"no space left on the device while writing {where}: free some space, or write to another "
                            f"disk; nothing half-written was left behind{intact}.")
    lines = str(error).strip().splitlines()
    reason = getattr(error, "strerror", None) or (lines[0] if lines else type(error).__name__)
    return SeqtuneError(f"could not write {where}: {reason}{intact}.")


@contextlib.contextmanager
def atomic_write(path: str, mode: str = "w", tmp: str | None = None, **open_kwargs):
    """`with atomic_write(path) as f: ...` writes `path` whole or not at all (through `tmp`, by default beside it
    with this process's id)."""
    tmp = tmp or f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, mode, **open_kwargs) as f:
            yield f
            f.flush()
        os.replace(tmp, path)
    except WRITE_ERRORS as error:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise disk_error(error, path) from error
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def write_json(path: str, data, indent: int | None = 2) -> None:
    with atomic_write(path) as f:
        json.dump(data, f, indent=indent)


def read_json(path: str, default=None):
    """A JSON file's content, or `default` when it does not exist."""
    if not os.path.isfile(path):
        return default
    with open(path) as f:
        return json.load(f)


def remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def usual_file_mode(*paths: str) -> None:
    """Give files the mode the rest of the folder has (0644 under the usual umask 022; folders 0755): some writers
    (safetensors, tempfile) create theirs 0600 or 0700, which another user or a serving container then cannot read."""
    umask = os.umask(0)
    os.umask(umask)
    for path in paths:
        if os.path.isfile(path) and not os.path.islink(path):
            os.chmod(path, 0o666 & ~umask)
        elif os.path.isdir(path) and not os.path.islink(path):  # (a folder made by tempfile.mkdtemp is 0700)
            os.chmod(path, 0o777 & ~umask)


STALE_SECONDS = 3600  # a temporary file or folder not written to for an hour belongs to no live run


def untouched_for(path: str, seconds: float) -> bool:
    """Nothing in `path` (a file, or a folder and everything in it) was modified in the last `seconds`: what a run
    killed while writing it leaves, as opposed to a live run's file, which it keeps writing to."""
    import time

    newest = os.path.getmtime(path)
    for root, folders, files in os.walk(path):
        for name in folders + files:
            with contextlib.suppress(OSError):
                newest = max(newest, os.path.getmtime(os.path.join(root, name)))
    return time.time() - newest > seconds
