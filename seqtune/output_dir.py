"""The training run's --output_dir: owned, locked and marked while a run writes into it.

- A lock (filelock) stops a second run from writing into a folder in use; the lock file names the holder.
- A manifest records every top-level entry a seqtune run wrote, so --overwrite_output_dir removes only those
  (never a user's own files or folders, whatever their names).
- An INCOMPLETE marker stays until the run has finished."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import sys
import time

from seqtune.errors import SeqtuneError
from seqtune.fileio import atomic_write, read_json, remove_tree, write_json

LOCK_FILE = ".seqtune.lock"
MANIFEST_FILE = ".seqtune_manifest.json"
INCOMPLETE_MARKER = "INCOMPLETE"  # present in output_dir while a run has not finished
BOOKKEEPING = {LOCK_FILE, MANIFEST_FILE}
# what a training run writes at the top of its folder (checkpoint-N folders are checked as they are written)
RUN_OUTPUTS = ("README.md", "config.json", "generation_config.json", "model.safetensors",
               "model.safetensors.index.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
               "added_tokens.json", "vocab.txt", "vocab.json", "merges.txt", "spiece.model", "chat_template.jinja",
               "sentencepiece.bpe.model", "all_results.json", "eval_predictions.json", "seqtune_args.json",
               "token_lengths.json", "train_log.jsonl", "runs", "report", INCOMPLETE_MARKER)


class OutputDir:
    """The main process's handle on --output_dir. Other processes get one with `is_main=False`: it does nothing."""

    def __init__(self, path: str, is_main: bool = True):
        self.path, self.is_main = path, is_main
        self._lock = None
        self._created = False
        self._before_loop = False  # a fresh run between `start` and its loop: a signal there leaves nothing behind
        self._there_at_start: set[str] = set()

    # ------------------------------------------------------------------ lifetime
    def open(self) -> "OutputDir":
        """Lock the folder (creating it if needed). Nothing else is written until `start`."""
        if not self.is_main:
            return self
        self._created = not os.path.isdir(self.path)
        os.makedirs(self.path, exist_ok=True)
        self._acquire_lock()
        return self

    def refuse_foreign(self) -> None:
        """Entries a run would write over that seqtune did not write (a user's README.md, runs/, ...) stop the run
        before anything heavy: they are never overwritten or, later, removed as seqtune's own."""
        if not self.is_main:
            return
        owned = set(self.owned())
        foreign = [n for n in RUN_OUTPUTS if os.path.lexists(os.path.join(self.path, n)) and n not in owned]
        if foreign:
            raise SeqtuneError(f"--output_dir {self.path} holds {', '.join(foreign)}, which this run would write over "
                               "and which seqtune did not write: move them away, or choose another --output_dir.")

    def start(self, overwrite: bool, fresh: bool = True) -> None:
        """Training is about to write: with `overwrite`, remove what earlier runs wrote here; mark INCOMPLETE.
        `fresh`: not a resume (a resumed run's folder is never discarded)."""
        if not self.is_main:
            return
        self.mark_incomplete()  # first: a folder half cleaned by a kill below must not look finished
        if overwrite:
            for name in self.owned():
                if name != INCOMPLETE_MARKER:
                    self.remove_owned(name)
        self._there_at_start = set(os.listdir(self.path))
        self._before_loop = fresh

    def loop_begins(self) -> None:
        """From here a signal writes a checkpoint (and a second one stops at once): the folder stays."""
        self._before_loop = False

    def discard(self) -> None:
        """Remove what this fresh run wrote before its loop began: its recorded entries, and all of a folder it
        created since `start` (a TensorBoard folder's files are recorded only at the end)."""
        if not self.is_main:
            return
        for name in self.owned():
            path = os.path.join(self.path, name)
            if name not in self._there_at_start and os.path.isdir(path) and not os.path.islink(path):
                self.record_tree(name)
            self.remove_owned(name)

    def close(self, keep_if_empty: bool = True) -> None:
        """Release the lock; a folder this run created and left with nothing in it is removed again."""
        if not self.is_main or self._lock is None:
            return
        self._lock.release()
        self._lock = None
        _remove(os.path.join(self.path, LOCK_FILE))
        leftovers = set(os.listdir(self.path)) - BOOKKEEPING if os.path.isdir(self.path) else set()
        if self._created and not leftovers and not keep_if_empty:
            remove_tree(self.path)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if self._before_loop and exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self.discard()  # Ctrl-C or SIGTERM (Terminated) before training began: "nothing left behind"
        self.close(keep_if_empty=exc_type is None)

    # ------------------------------------------------------------------ what the runs wrote
    def owned(self) -> list[str]:
        return list(self._manifest().get("written_by_seqtune", []))

    def _manifest(self) -> dict:
        manifest = read_json(self._manifest_path(), {})
        return manifest if isinstance(manifest, dict) else {}

    def _write_manifest(self, names: list[str], files: list[str]) -> None:
        write_json(self._manifest_path(), {"written_by_seqtune": names, "files": sorted(set(files))})

    def record_tree(self, name: str, source: str | None = None) -> None:
        """Record the files now inside the folder `name` (or inside `source`, which becomes `name`) as seqtune's; a
        user's files put there later are not."""
        if not self.is_main:
            return
        root = source or os.path.join(self.path, name)
        found = [os.path.join(name, os.path.relpath(os.path.join(d, f), root)) for d, _, files in os.walk(root)
                 for f in files]
        manifest = self._manifest()
        names = list(manifest.get("written_by_seqtune", []))
        self._write_manifest(names + [name] * (name not in names), manifest.get("files", []) + found)

    def remove_owned(self, name: str) -> None:
        """Remove what seqtune wrote under the top-level entry `name`: a file, or the recorded files of a folder
        (then the folders left empty). Anything else in such a folder, a user's file, stays, and so does the folder."""
        manifest = self._manifest()
        target = os.path.join(self.path, name)
        files = manifest.get("files", [])
        inside = [f for f in files if f.startswith(name + os.sep)]
        if os.path.isdir(target) and not os.path.islink(target):
            for relative in inside:
                _remove(os.path.join(self.path, relative))
            for folder, _, _ in sorted(os.walk(target), key=lambda entry: -len(entry[0])):
                with contextlib.suppress(OSError):
                    os.rmdir(folder)  # only empty folders go
        else:
            _remove(target)
        kept = os.path.lexists(target)
        names = [n for n in manifest.get("written_by_seqtune", []) if n != name or kept]
        self._write_manifest(names, [f for f in files if f not in inside])

    def install(self, staging: str, name: str, last: str | None = None) -> None:
        """Put the folder `staging` in place as the entry `name`, its files recorded first (a kill right after the
        move leaves nothing unrecorded). What runs wrote under `name` goes; a user's file there stays: then the
        staged files move in one by one, `last` last (a checkpoint counts once its state file is there)."""
        target = os.path.join(self.path, name)
        if os.path.lexists(target):
            self.remove_owned(name)
        self.record_tree(name, source=staging)
        if not os.path.lexists(target):
            os.replace(staging, target)
            return
        files = sorted((os.path.relpath(os.path.join(d, f), staging) for d, _, names in os.walk(staging)
                        for f in names), key=lambda relative: relative == last)
        for relative in files:
            os.makedirs(os.path.dirname(os.path.join(target, relative)), exist_ok=True)
            os.replace(os.path.join(staging, relative), os.path.join(target, relative))
        remove_tree(staging)

    def is_owned(self, name: str) -> bool:
        return name in self.owned()

    def record(self, *names: str) -> None:
        """Add top-level entries (file or folder names) to the manifest before they are written."""
        if not self.is_main:
            return
        manifest = self._manifest()
        owned = list(manifest.get("written_by_seqtune", []))
        new = [n for n in names if n not in owned]
        if new:
            self._write_manifest(owned + new, manifest.get("files", []))

    def file(self, name: str) -> str:
        """The path of a file this run writes, recorded as seqtune's."""
        self.record(name.split(os.sep)[0])
        return os.path.join(self.path, name)

    def mark_incomplete(self) -> None:
        if self.is_main:
            with atomic_write(self.file(INCOMPLETE_MARKER)) as f:
                f.write("This run has not finished: the model here may be missing or partial. Resume it with "
                        "--resume_from_checkpoint.\n")

    def mark_complete(self) -> None:
        if self.is_main:
            _remove(os.path.join(self.path, INCOMPLETE_MARKER))

    # ------------------------------------------------------------------ internals
    def _manifest_path(self) -> str:
        return os.path.join(self.path, MANIFEST_FILE)

    def _acquire_lock(self) -> None:
        self._lock = acquire_lock(self.path)


def acquire_lock(folder: str):
    """The folder's lock (filelock) for this process, or SeqtuneError naming the process that holds it. The lock
    file says who holds it."""
    from filelock import FileLock, Timeout

    path = os.path.join(folder, LOCK_FILE)
    lock = FileLock(path, timeout=0, is_singleton=False)
    try:
        lock.acquire()
    except Timeout:
        raise SeqtuneError(f"--output_dir {folder} is in use by another seqtune run ({_holder(path)}): wait for "
                           "it to finish, or choose another --output_dir.") from None
    with open(path, "w") as f:  # the file stays locked; it says who holds it
        json.dump({"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                   "command": shlex.join(["seqtune", *sys.argv[1:]])}, f)
    return lock


@contextlib.contextmanager
def folder_locked(folder: str):
    """`with folder_locked(path):` one command at a time in `folder` (a sweep's folder); the lock file goes after.
    Under torchrun only rank 0 locks (its other processes belong to the same command)."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    lock = acquire_lock(folder)
    try:
        yield
    finally:
        lock.release()
        _remove(os.path.join(folder, LOCK_FILE))


def _holder(lock_path: str) -> str:
    try:
        with open(lock_path) as f:
            info = json.load(f)
        return f"process {info['pid']} on {info['host']}, started {info['started']}: {info['command']}"
    except (OSError, ValueError, KeyError):
        return "a process that has not said which"


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
