"""Which task and which dataset a command's flags name: one place for the rules (--task_name alone means GLUE's
copy of that task; a local folder named `glue` with a task's config name is that task)."""

from __future__ import annotations

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
