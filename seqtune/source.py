"""Which task and which dataset a command's flags name: one place for the rules (--task_name alone means GLUE's
copy of that task; a local folder named `glue` with a task's config name is that task)."""

from __future__ import annotations

import contextlib
import logging
import os

from seqtune.errors import SeqtuneError
from seqtune.tasks import GLUE_TASKS, TaskSpec

logger = logging.getLogger("seqtune")


def resolve_task(task_name: str | None) -> TaskSpec | None:
    if task_name is None:
        return None
    if task_name.lower() not in GLUE_TASKS:
        raise SeqtuneError(f"--task_name '{task_name}' is not a known task; choose one of: {', '.join(GLUE_TASKS)}.")
    return GLUE_TASKS[task_name.lower()]


def dataset_source(task_name: str | None, dataset_name: str | None, dataset_config_name: str | None,
                   has_files: bool) -> tuple[str | None, str | None]:
    """(dataset name, config name) to load: --task_name alone is --dataset_name glue --dataset_config_name TASK."""
    if task_name and not dataset_name and not has_files:
        return "glue", task_name.lower()
    return dataset_name, dataset_config_name


def task_for(task_name: str | None, dataset_name: str | None, dataset_config_name: str | None) -> TaskSpec | None:
    """--task_name, or a GLUE task named by --dataset_name glue (or a local copy of it) --dataset_config_name."""
    if task_name:
        return resolve_task(task_name)
    name, config = dataset_name, dataset_config_name
    if name and config and os.path.basename(os.path.normpath(name)) == "glue" and config.lower() in GLUE_TASKS:
        logger.info("Task: GLUE %s (from --dataset_config_name)", config.lower())
        return GLUE_TASKS[config.lower()]
    return None


def local_data_stamp(data_args) -> dict[str, list[int]]:
    """Size and modification time of every local file the data flags read (--train_file, --validation_file,
    --test_file and the shards of their glob patterns, a local --dataset_name folder): a sweep reuses a finished run
    only while these are unchanged (the flags name paths; the contents behind them may change). Hub datasets are
    not stamped."""
    from seqtune.data import data_file_paths

    paths = [path for pattern in (data_args.train_file, data_args.validation_file, data_args.test_file) if pattern
             for path in data_file_paths(pattern)]  # a glob pattern's shards, each (one more is a change too)
    if data_args.dataset_name and os.path.isdir(data_args.dataset_name):
        paths += _files_under(data_args.dataset_name)
    return _stamp(paths)


def local_model_stamp(model_path: str) -> dict[str, list[int]]:
    """Size and modification time of every file of a local model folder (the base model a run starts from): a
    sweep reuses a finished run only while they are unchanged. A Hub model is not stamped."""
    return _stamp(_files_under(model_path)) if os.path.isdir(model_path) else {}


def _files_under(folder: str) -> list[str]:
    return sorted(os.path.join(root, name) for root, dirs, names in os.walk(folder) for name in names
                  if not name.startswith("."))


def _stamp(paths: list[str]) -> dict[str, list[int]]:
    stamp = {}
    for path in paths:
        with contextlib.suppress(OSError):
            info = os.stat(path)
            stamp[os.path.abspath(path)] = [info.st_size, info.st_mtime_ns]
    return stamp
