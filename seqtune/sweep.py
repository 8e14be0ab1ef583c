"""`seqtune sweep`: several seeds of one configuration (mean ± std of every metric), or an Optuna search.

    seqtune sweep --seeds 1,2,3,4,5 [train flags]             # one configuration, five seeds
    seqtune sweep --n_trials 12 --seeds 1 [train flags]       # TPE search on the validation split

The search is Optuna's (resumable: its study lives in OUTPUT_DIR/study.db); each trial trains with the
sampled hyperparameters for every seed and scores the mean of the task's metrics (GLUE's score for the task).
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

logger = logging.getLogger("seqtune")


@dataclass
class SweepArguments:
    """How many seeds and trials."""

    seeds: str = field(default="1,2,3", metadata={"help": "Comma-separated seeds each configuration is trained with."})
    n_trials: int = field(default=0, metadata={"help": "Optuna trials; 0 trains just the given flags."})
    study_seed: int = field(default=0, metadata={"help": "Seed of Optuna's TPE sampler (reproducible search)."})
    keep_models: bool = field(default=False, metadata={"help": "Keep every run's model (default: metrics only)."})


SEARCH_SPACE = {  # name -> (kind, low/choices, high)
    "learning_rate": ("log", 2e-5, 3e-4),
    "num_train_epochs": ("int", 1, 4),  # epochs of the training rows (twice MRPC's pairs: both orders)
    "warmup_ratio": ("float", 0.0, 0.2),
    "per_device_train_batch_size": ("cat", [16, 32, 64], None),
    "weight_decay": ("float", 0.0, 0.1),
    "layerwise_lr_decay": ("float", 0.7, 1.0),
}


def summarize(runs: list[dict]) -> dict[str, dict[str, float]]:
    """mean and std (sample) of every eval_* metric and the training time over runs."""
    keys = [k for k in runs[0] if k.startswith("eval_") or k == "train_runtime"]
    summary = {}
    for key in keys:
        values = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
        if values:
            summary[key] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1
                            else 0.0, "n": len(values)}
    return summary


def score(summary: dict, metric_names: list[str]) -> float:
    values = [summary[f"eval_{m}"]["mean"] for m in metric_names if f"eval_{m}" in summary]
    return statistics.fmean(values) if values else -math.inf


def run_seeds(data_args: DataArguments, model_args: ModelArguments, args: TrainingArguments, seeds: list[int],
              out: str, keep_models: bool) -> tuple[list[dict], dict]:
    from seqtune.train import train

    runs = []
    for seed in seeds:
        run_dir = os.path.join(out, f"seed-{seed}")
        results = train(data_args, model_args, replace(args, seed=seed, output_dir=run_dir,
                                                       overwrite_output_dir=True))
        runs.append({"seed": seed, **results})
        if not keep_models:
            for name in os.listdir(run_dir):
                if name.endswith(".safetensors"):
                    os.remove(os.path.join(run_dir, name))
    return runs, summarize(runs)


def sweep(data_args: DataArguments, model_args: ModelArguments, args: TrainingArguments,
          sweep_args: SweepArguments) -> dict:
    from seqtune.prepare import validate_training_args

    seeds = [int(s) for s in sweep_args.seeds.split(",") if s.strip()]
    if not seeds:
        raise SeqtuneError("--seeds needs at least one seed, e.g. --seeds 1,2,3.")
    validate_training_args(data_args, args)
    out = args.output_dir
    os.makedirs(out, exist_ok=True)
    log_path = os.path.join(out, "sweep_results.jsonl")

    def record(entry: dict) -> None:
        with open(log_path, "a") as f:
            f.write(json.dumps(entry) + "\n")

    if sweep_args.n_trials <= 0:
        runs, summary = run_seeds(data_args, model_args, args, seeds, out, sweep_args.keep_models)
        for run in runs:
            record(run)
        report = {"seeds": seeds, "summary": summary}
    else:
        import optuna

        metric_names: list[str] = []

        def objective(trial: "optuna.Trial") -> float:
            params = {}
            for name, (kind, low, high) in SEARCH_SPACE.items():
                if kind == "log":
                    params[name] = trial.suggest_float(name, low, high, log=True)
                elif kind == "int":
                    params[name] = trial.suggest_int(name, low, high)
                elif kind == "float":
                    params[name] = trial.suggest_float(name, low, high)
                else:
                    params[name] = trial.suggest_categorical(name, low)
            trial_dir = os.path.join(out, f"trial-{trial.number}")
            runs, summary = run_seeds(data_args, model_args, replace(args, **params), seeds, trial_dir,
                                      sweep_args.keep_models)
            if not metric_names:
                metric_names.extend(k[5:] for k in runs[0] if k.startswith("eval_"))
            value = score(summary, metric_names)
            record({"trial": trial.number, "params": params, "score": value, "summary": summary})
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
        report = {"seeds": seeds, "best_params": study.best_params, "best_score": study.best_value,
                  "trials": [{"number": t.number, "params": t.params, "score": t.value} for t in study.trials
                             if t.state == optuna.trial.TrialState.COMPLETE]}
    with open(os.path.join(out, "sweep_summary.json"), "w") as f:
        json.dump(report, f, indent=2)
    _print_report(report)
    return report


def _print_report(report: dict) -> None:
    if "summary" in report:
        print(f"seeds {report['seeds']}:")
        for key, s in report["summary"].items():
            print(f"  {key:<24} {s['mean']:.4f} ± {s['std']:.4f}  (n={s['n']})")
    else:
        for t in sorted(report["trials"], key=lambda t: -(t["score"] or -1)):
            print(f"  trial {t['number']:>3}  score {t['score']:.4f}  {t['params']}")
        print(f"best: {report['best_params']} (score {report['best_score']:.4f})")
