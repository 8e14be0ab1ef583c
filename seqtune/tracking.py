"""Where step metrics go during training: `train_log.jsonl` (one JSON record a line) and TensorBoard events."""

from __future__ import annotations

import json
import os


class StepLog:
    """`log(record)` writes a record (a dict with `step`) to every sink asked for; only the main process writes."""

    def __init__(self, output_dir: str, sinks: set[str], resume_step: int | None = None, enabled: bool = True):
        """`resume_step`: continue the log of a resumed run from its checkpoint's step."""
        self.jsonl = None
        self.tensorboard = None
        if not enabled:
            return
        if resume_step is not None:
            truncate_log(output_dir, resume_step)
        if "jsonl" in sinks:
            self.jsonl = open(os.path.join(output_dir, "train_log.jsonl"), "w" if resume_step is None else "a")
        if "tensorboard" in sinks:
            from torch.utils.tensorboard import SummaryWriter

            self.tensorboard = SummaryWriter(os.path.join(output_dir, "runs"))

    def log(self, record: dict) -> None:
        if self.jsonl:
            try:
                self.jsonl.write(json.dumps(record) + "\n")
                self.jsonl.flush()
            except OSError as error:
                from seqtune.fileio import disk_error

                raise disk_error(error, self.jsonl.name) from error
        if self.tensorboard:
            for key, value in record.items():
                if key not in ("step", "epoch") and isinstance(value, (int, float)):
                    tag = key.replace("eval_", "eval/") if key.startswith("eval_") else f"train/{key}"
                    self.tensorboard.add_scalar(tag, value, record["step"])

    def close(self) -> None:
        if self.jsonl:
            self.jsonl.close()
        if self.tensorboard:
            self.tensorboard.close()
        self.jsonl = self.tensorboard = None


def sink_names(report_to) -> set[str]:
    """`--report_to` as a set of sink names ("none" = none)."""
    from seqtune.config import comma_items

    return set(comma_items(report_to)) - {"none"}


def truncate_log(output_dir: str, step: int) -> None:
    """A resumed run continues the step log from its checkpoint: drop records written after it (a run killed after
    its last checkpoint had logged steps that will be trained again)."""
    path = os.path.join(output_dir, "train_log.jsonl")
    if not os.path.isfile(path):
        return
    from seqtune.fileio import atomic_write

    with open(path) as f:
        kept = [line for line in f if line.strip() and _step_of(line) <= step]
    with atomic_write(path) as f:
        f.writelines(kept)


def _step_of(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 0
