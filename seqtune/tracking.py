"""Where step metrics go during training: `train_log.jsonl` (one JSON record a line), TensorBoard events, and
Weights & Biases or MLflow through accelerate's trackers (offline: WANDB_MODE=offline; a local MLflow store such as
MLFLOW_TRACKING_URI=sqlite:///mlflow.db)."""

from __future__ import annotations

import json
import logging
import os

logger = logging.getLogger("seqtune")
TRACKER_SINKS = ("wandb", "mlflow")  # the sinks accelerate's trackers write


class StepLog:
    """`log(record)` writes a record (a dict with `step`) to every sink asked for; only the main process writes."""

    def __init__(self, output_dir: str, sinks: set[str], resume_step: int | None = None, enabled: bool = True,
                 config: dict | None = None):
        """`resume_step`: continue the log of a resumed run from its checkpoint's step; `config`: the run's flags,
        for the trackers' run configuration."""
        self.jsonl = None
        self.tensorboard = None
        self.trackers = []
        self.sinks = set(sinks)
        if not enabled:
            return
        self.trackers = start_trackers(sinks, output_dir, config or {})
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
        values = {k: v for k, v in record.items() if k != "step" and isinstance(v, (int, float))}
        for tracker in self.trackers:
            tracker.log(values, step=record["step"])

    def close(self) -> None:
        for tracker in self.trackers:
            tracker.finish()
        self.trackers = []
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


def start_trackers(sinks: set[str], output_dir: str, config: dict) -> list:
    """accelerate's W&B and MLflow trackers for the sinks asked for, started, with the run's flags as config."""
    from accelerate.tracking import MLflowTracker, WandBTracker

    run = os.path.basename(os.path.abspath(output_dir))
    trackers = []
    if "wandb" in sinks:
        trackers.append(WandBTracker("seqtune", name=run, dir=output_dir))
    if "mlflow" in sinks:
        trackers.append(MLflowTracker("seqtune", run_name=run))
    flat = {f"{section}.{key}": value for section, values in config.items() if isinstance(values, dict)
            for key, value in values.items() if isinstance(value, (int, float, str, bool)) or value is None}
    for tracker in trackers:
        if hasattr(tracker, "start"):
            tracker.start()
        tracker.store_init_configuration(flat)
        logger.info("Reporting to %s", tracker.name)
    return trackers


def with_console_lines(log, max_steps: int):
    """`log` that also puts each training record on the console (when no progress bar shows the loss)."""

    def log_and_show(record: dict) -> None:
        log(record)
        if "loss" in record:
            logger.info("step %d/%d: loss %.4f, learning rate %.3g, %s samples/s", record["step"], max_steps,
                        record["loss"], record.get("learning_rate") or 0.0, record.get("samples_per_second"))

    return log_and_show
