"""The tokenized splits' cache files: whole and unchanged, or removed (with a warning) and tokenized again.

`Dataset.map` reuses a cache file by its name alone; a file truncated, overwritten by another split's rows or with
bytes changed in place would load wrong rows or fail mid-run. Each file gets a CRC-32 beside it when written
(NAME.arrow.crc32), checked with its row count before reuse. Hand-written: datasets records no checksum of its
cache files."""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import zlib

from datasets import Dataset

from seqtune.fileio import STALE_SECONDS, atomic_write, untouched_for

logger = logging.getLogger("seqtune")


def cache_files(cache_file: str) -> list[str]:
    """The cached files of one key: NAME.arrow, or with num_proc one file per process (NAME_00000_of_0000N.arrow)."""
    shards = sorted(glob.glob(glob.escape(cache_file[:-len(".arrow")]) + "_*_of_*.arrow"))
    return ([cache_file] if os.path.exists(cache_file) else []) + shards


def whole_cache_exists(cache_file: str, rows: int, split: str) -> bool:
    """Whether the split's tokenized cache exists and is whole. A damaged one (truncated or overwritten by
    something else: unreadable, or not `rows` rows) would make `Dataset.map` fail or load wrong rows, so it is
    removed with a warning naming it, and the split is tokenized again."""
    files = cache_files(cache_file)
    if not files:
        return False
    counts, problem = {}, None
    for path in files:
        try:
            counts[path] = Dataset.from_file(path).num_rows
        except Exception as error:  # pyarrow and datasets raise several types for a damaged file; all mean damaged
            lines = str(error).strip().splitlines()
            problem = (path, lines[0] if lines else type(error).__name__)
            break
        if _checksum(path) != _recorded_checksum(path):  # bytes changed in place: size and layout can be intact
            problem = (path, "its bytes differ from those written, or no checksum was recorded beside it")
            break
    if problem is None:
        sets: dict[str, list[str]] = {}
        for path in files:
            sets.setdefault(path.rsplit("_of_", 1)[-1] if path != cache_file else "whole", []).append(path)
        for group, paths in sets.items():
            whole = group == "whole" or len(paths) == int(group[:-len(".arrow")])
            total = sum(counts[p] for p in paths)
            if whole and total != rows:
                problem = (paths[0], f"{total} rows instead of the split's {rows}")
    if problem is None:
        return True
    logger.warning("The tokenization cache file %s is damaged (%s): removed it; tokenizing the %s split again.",
                   *problem, split)
    for path in files:
        for name in (path, path + CHECKSUM_SUFFIX):
            with contextlib.suppress(OSError):
                os.remove(name)
    return False


CHECKSUM_SUFFIX = ".crc32"


def _checksum(path: str) -> str:
    """CRC-32 of the file (zlib's: about 1 GB/s, for a cache that may be large; it guards against damage, not
    tampering)."""
    value = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            value = zlib.crc32(block, value)
    return f"{value:08x}"


def _recorded_checksum(path: str) -> str | None:
    """The checksum written beside a cache file; None when missing (the file cannot be vouched for: rebuilt)."""
    try:
        with open(path + CHECKSUM_SUFFIX) as f:
            return f.read().strip()
    except FileNotFoundError:
        return None


def record_checksums(paths: list[str]) -> None:
    """NAME.arrow.crc32 beside each freshly written cache file (written atomically: whole or absent)."""
    for path in paths:
        with atomic_write(path + CHECKSUM_SUFFIX) as f:
            f.write(_checksum(path) + "\n")


def remove_stale_temporary_files(cache_dir: str) -> None:
    """`Dataset.map` writes a cache file as tmpXXXXXXXX in the cache folder, then renames it: a run killed while
    tokenizing leaves it behind. Those untouched for an hour are removed (a live run writes to its own as it goes)."""
    for name in os.listdir(cache_dir):
        path = os.path.join(cache_dir, name)
        with contextlib.suppress(OSError):  # (another run may remove it first)
            if name.startswith("tmp") and os.path.isfile(path) and untouched_for(path, STALE_SECONDS):
                os.remove(path)
                logger.info("Removed %s, a temporary file a killed run left in the tokenization cache", path)
