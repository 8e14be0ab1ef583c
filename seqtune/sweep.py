"""`seqtune sweep`: several seeds of one configuration (mean ± std of every metric), or an Optuna search.

    seqtune sweep --seeds 1,2,3,4,5 [train flags]             # one configuration, five seeds
    seqtune sweep --n_trials 12 --seeds 1 [train flags]       # TPE search on the validation split

The search is Optuna's (resumable: its study lives in OUTPUT_DIR/study.db); each trial trains with the
hyperparameters `search_space` samples, for every seed, and scores the mean of the task's metrics (GLUE's score
for the task). Unless --keep_models, each run's folder keeps its metrics, log, report and a card that says the
weights were not kept; its weights and checkpoints are deleted.
"""

from __future__ import annotations

import json
import logging
import math
import os
import statistics
from dataclasses import dataclass, field, replace

from seqtune.config import DataArguments, ModelArguments, TrainingArguments
from seqtune.errors import SeqtuneError
from seqtune.fileio import atomic_write, remove_tree, write_json

logger = logging.getLogger("seqtune")


@dataclass
class SweepArguments:
    """How many seeds and trials."""

    seeds: list[str] = field(default_factory=lambda: ["1", "2", "3"], metadata={
        "help": "The seeds each configuration is trained with: --seeds 1 2 3 (or 1,2,3)."})
    n_trials: int = field(default=0, metadata={"help": "Optuna trials; 0 trains just the given flags."})
    study_seed: int = field(default=0, metadata={"help": "Seed of Optuna's TPE sampler (reproducible search)."})
    keep_models: bool = field(default=False, metadata={"help": "Keep every run's model (default: metrics only)."})


def search_space(trial) -> dict:
    """The training flags a trial samples (Optuna's define-by-run). Names and ranges are part of a study:
    changing them makes an existing OUTPUT_DIR/study.db resume a different search."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 2e-5, 3e-4, log=True),
        # epochs of the training rows (with symmetric pairs, twice the pairs: both orders)
        "num_train_epochs": trial.suggest_int("num_train_epochs", 1, 4),
        "warmup_ratio": trial.suggest_float("warmup_ratio", 0.0, 0.2),
        "per_device_train_batch_size": trial.suggest_categorical("per_device_train_batch_size", [16, 32, 64]),
        "weight_decay": trial.suggest_float("weight_decay", 0.0, 0.1),
        "layerwise_lr_decay": trial.suggest_float("layerwise_lr_decay", 0.7, 1.0),
    }


def parse_seeds(values) -> list[int]:
    """--seeds 1 2 3 or --seeds 1,2,3 as integers."""
    from seqtune.config import comma_items

    items = comma_items(values)
    try:
        seeds = [int(s) for s in items]
    except ValueError as error:
        raise SeqtuneError(f"--seeds '{' '.join(items)}' is not a list of integers, e.g. --seeds 1 2 3.") from error
    if not seeds:
        raise SeqtuneError("--seeds needs at least one seed, e.g. --seeds 1 2 3.")
    return seeds


def summarize(runs: list[dict]) -> dict[str, dict[str, float]]:
    """Mean and (sample) std of every eval_* metric and the training time over runs; a run where a metric is
    missing or not finite (NaN: constant predictions) is left out of that metric's n."""
    keys = dict.fromkeys(k for run in runs for k in run if k.startswith("eval_") or k == "train_runtime")
    summary = {}
    for key in keys:
        values = [float(r[key]) for r in runs if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        if values:
            summary[key] = {"mean": statistics.fmean(values),
                            "std": statistics.stdev(values) if len(values) > 1 else 0.0, "n": len(values)}
    return summary


def score(summary: dict, metric_names: list[str]) -> float:
    """A search's objective: the mean over the task's metrics of their mean over seeds (-inf when none)."""
    values = [summary[f"eval_{m}"]["mean"] for m in metric_names if f"eval_{m}" in summary]
    return statistics.fmean(values) if values else -math.inf


def drop_model(run_dir: str) -> None:
    """Delete a finished run's weights and checkpoints, keep its metrics, and rewrite its card to say so
    (a card must not point at a model that is gone)."""
    from seqtune.checkpoint import checkpoints
    from seqtune.report import write_model_card

    for path in checkpoints(run_dir):
        remove_tree(path)
    for name in os.listdir(run_dir):
        path = os.path.join(run_dir, name)
        if name.endswith(".safetensors") or name == "model.safetensors.index.json" or (
                name.startswith("pytorch_model") and name.endswith(".bin")):
            os.remove(path)
    write_model_card(run_dir)


def run_seeds(data_args: DataArguments, model_args: ModelArguments, args: TrainingArguments, seeds: list[int],
              out: str, keep_models: bool) -> tuple[list[dict], dict]:
    """Train one configuration once per seed (into OUT/seed-N); the runs' results and their summary."""
    from seqtune.train import train

    runs = []
    for seed in seeds:
        run_dir = os.path.join(out, f"seed-{seed}")
        results = train(data_args, model_args, replace(args, seed=seed, output_dir=run_dir,
                                                       overwrite_output_dir=True))
        runs.append({"seed": seed, **results})
        if not keep_models:
            drop_model(run_dir)
    return runs, summarize(runs)


def _record(out: str, entry: dict) -> None:
    """One line more in OUT/sweep_results.jsonl (the file is rewritten whole: atomic, like every write)."""
    path = os.path.join(out, "sweep_results.jsonl")
    previous = open(path).read() if os.path.isfile(path) else ""
    with atomic_write(path) as f:
        f.write(previous + json.dumps(entry) + "\n")


def search(data_args: DataArguments, model_args: ModelArguments, args: TrainingArguments,
           sweep_args: SweepArguments, seeds: list[int]) -> dict:
    """Optuna TPE search over `search_space`, resumable from OUTPUT_DIR/study.db; each trial trains every seed."""
    import optuna

    out = args.output_dir
    metric_names: list[str] = []

    def objective(trial: optuna.Trial) -> float:
        params = search_space(trial)
        runs, summary = run_seeds(data_args, model_args, replace(args, **params), seeds,
                                  os.path.join(out, f"trial-{trial.number}"), sweep_args.keep_models)
        if not metric_names:
            metric_names.extend(runs[0].get("task_metrics") or [k[5:] for k in runs[0] if k.startswith("eval_")])
        value = score(summary, metric_names)
        _record(out, {"trial": trial.number, "params": params, "score": value, "summary": summary})
        logger.info("trial %d: score %.4f with %s", trial.number, value, params)
        return value

    study = optuna.create_study(
        direction="maximize", study_name="seqtune", load_if_exists=True,
        storage=f"sqlite:///{os.path.abspath(os.path.join(out, 'study.db'))}",
        # TPE's default of 10 random trials before it models anything would leave a 12-trial search random
        sampler=optuna.samplers.TPESampler(seed=sweep_args.study_seed,
                                           n_startup_trials=min(10, max(3, sweep_args.n_trials // 3))))
    remaining = sweep_args.n_trials - len([t for t in study.trials if t.state.is_finished()])
    if remaining > 0:
        study.optimize(objective, n_trials=remaining)
    return {"seeds": seeds, "best_params": study.best_params, "best_score": study.best_value,
            "trials": [{"number": t.number, "params": t.params, "score": t.value} for t in study.trials
                       if t.state == optuna.trial.TrialState.COMPLETE]}


def sweep(data_args: DataArguments, model_args: ModelArguments, args: TrainingArguments,
          sweep_args: SweepArguments) -> dict:
    """`seqtune sweep`: seeds of the given flags (--n_trials 0) or a search; writes OUTPUT_DIR/sweep_summary.json."""
    from seqtune.validation import validate_training_args

    seeds = parse_seeds(sweep_args.seeds)
    validate_training_args(data_args, args)
    os.makedirs(args.output_dir, exist_ok=True)
    if sweep_args.n_trials <= 0:
        runs, summary = run_seeds(data_args, model_args, args, seeds, args.output_dir, sweep_args.keep_models)
        for run in runs:
            _record(args.output_dir, run)
        report = {"seeds": seeds, "summary": summary}
    else:
        report = search(data_args, model_args, args, sweep_args, seeds)
    write_json(os.path.join(args.output_dir, "sweep_summary.json"), report)
    print_report(report)
    return report


def print_report(report: dict) -> None:
    if "summary" in report:
        print(f"seeds {report['seeds']}:")
        for key, s in report["summary"].items():
            print(f"  {key:<24} {s['mean']:.4f} ± {s['std']:.4f}  (n={s['n']})")
    else:
        for t in sorted(report["trials"], key=lambda t: -(t["score"] or -1)):
            print(f"  trial {t['number']:>3}  score {t['score']:.4f}  {t['params']}")
        print(f"best: {report['best_params']} (score {report['best_score']:.4f})")
