"""`seqtune sweep`: several seeds of one configuration (mean ± std of every metric), or an Optuna search; on the
validation split, or cross-validated on the training split.

    seqtune sweep --seeds 1,2,3,4,5 [train flags]             # one configuration, five seeds
    seqtune sweep --cv 5 --seeds 1,2 [train flags]            # 5-fold CV x 2 seeds, then the validation check
    seqtune sweep --n_trials 12 --seeds 1 [--cv 5] [train flags]  # TPE search (on CV folds with --cv)

The search is Optuna's (resumable: its study lives in OUTPUT_DIR/study.db); each trial trains with the
hyperparameters `search_space` samples, for every seed, and scores the mean of the task's metrics (GLUE's score
for the task). Unless --keep_models, each run's folder keeps its metrics, log, report and a card that says the
weights were not kept; its weights and checkpoints are deleted. A run whose folder already holds the finished
results of the same flags is not trained again: an interrupted sweep continues with the same command.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import re
import statistics
from dataclasses import dataclass, field, replace

from seqtune.combining import Combination, combine, recorded_score
from seqtune.config import DataArguments, ModelArguments, TrainingArguments
from seqtune.errors import SeqtuneError, StoppedBySignal
from seqtune.fileio import atomic_write, remove_tree, write_json
from seqtune.output_dir import folder_locked

logger = logging.getLogger("seqtune")


@dataclass
class SweepArguments:
    """How many seeds and trials."""

    seeds: list[str] = field(default_factory=lambda: ["1", "2", "3"], metadata={
        "help": "The seeds each configuration is trained with: --seeds 1 2 3 (or 1,2,3)."})
    n_trials: int = field(default=0, metadata={"help": "Optuna trials; 0 trains just the given flags."})
    study_seed: int = field(default=0, metadata={"help": "Seed of Optuna's TPE sampler (reproducible search)."})
    keep_models: bool = field(default=False, metadata={"help": "Keep every run's model (default: metrics only)."})
    cv: int = field(default=0, metadata={
        "help": "K-fold cross-validation on the training split (stratified by label): each fold trains on the other "
                "K-1 parts and scores its own; metrics are mean ± std over folds x seeds. 0: score the validation "
                "split only."})
    cv_seed: int = field(default=0, metadata={"help": "Seed of the fold assignment (the same folds for every "
                                                      "configuration compared)."})
    ensemble: bool = field(default=False, metadata={
        "help": "Save the seeds' models (trained on the whole training split) as one ensemble in "
                "OUTPUT_DIR/ensemble, scored on the validation split: evaluate, predict and serve load it and average "
                "the members' logits (N times the inference cost of one model)."})
    soup: bool = field(default=False, metadata={
        "help": "A uniform model soup: every run keeps the training flags' --seed (one initialisation: the same "
                "head) and takes each of --seeds as its --data_seed (another order of batches); their weights are "
                "averaged into one model, OUTPUT_DIR/soup (one model's inference cost), scored on the validation "
                "split; with --cv also one soup per fold (its score in the summary). With --ensemble, the ensemble "
                "is of these runs."})
    cv_validation: bool = field(default=True, metadata={
        "help": "With --cv (no search): also train each seed on the whole training split and score the validation "
                "split, the final check on rows no fold saw; --cv_validation false to skip it."})


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
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:  # one folder per seed: a repeated seed would be one run counted twice
        raise SeqtuneError(f"--seeds lists {', '.join(map(str, twice))} more than once; give each seed once.")
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


# in a run's folder: its weights were kept by --keep_models, and a later sweep without it must not drop them
KEPT_MARKER = ".seqtune_kept"


def run_folder(out: str, seed: int, soup: bool = False) -> str:
    """OUT/seed-N, or OUT/data_seed-N for a soup's runs (one --seed, the sweep's seeds as --data_seed)."""
    return os.path.join(out, f"{'data_seed' if soup else 'seed'}-{seed}")


def run_seeds(data_args: DataArguments, model_args: ModelArguments, args: TrainingArguments, seeds: list[int],
              out: str, keep_models: bool, soup: bool = False, need_weights: bool | None = None
              ) -> tuple[list[dict], dict]:
    """Train one configuration once per seed (into OUT/seed-N, or with `soup` once per --data_seed into
    OUT/data_seed-N), keeping the weights of the runs it trains when `keep_models`. A run finished earlier with the
    same flags is reused, if it still holds its weights when `need_weights` (default: `keep_models`). The runs'
    results and their summary."""
    from seqtune.train import train

    runs = []
    for seed in seeds:
        varied = {"data_seed": seed} if soup else {"seed": seed}
        run_args = replace(args, **varied, output_dir=run_folder(out, seed, soup), overwrite_output_dir=True)
        results = None if args.overwrite_output_dir else finished_results(data_args, model_args, run_args)
        if results is not None and (keep_models if need_weights is None else need_weights) and not _has_weights(
                run_args.output_dir):
            results = None  # its weights were dropped: train it again to keep them
        if results is None:
            with contextlib.suppress(FileNotFoundError):  # the weights it kept are about to be replaced
                os.remove(os.path.join(run_args.output_dir, KEPT_MARKER))
            results = train(data_args, model_args, run_args)
            if not keep_models:
                drop_model(run_args.output_dir)
        else:
            logger.info("Reusing the finished run in %s", run_args.output_dir)
        runs.append({"data_seed" if soup else "seed": seed, **results})
    return runs, summarize(runs)


def finished_results(data_args: DataArguments, model_args: ModelArguments, args: TrainingArguments) -> dict | None:
    """all_results.json of a run that finished in args.output_dir with these very flags, else None."""
    from seqtune.fileio import read_json
    from seqtune.output_dir import INCOMPLETE_MARKER

    folder = args.output_dir
    try:
        if os.path.exists(os.path.join(folder, INCOMPLETE_MARKER)):
            return None
        flags = read_json(os.path.join(folder, "seqtune_args.json"))
        results = read_json(os.path.join(folder, "all_results.json"))
    except (OSError, ValueError):  # unreadable or cut short: train again
        return None
    if not isinstance(flags, dict) or not isinstance(results, dict):
        return None
    from seqtune.modeling import resolve_model_path
    from seqtune.source import local_data_stamp, local_model_stamp

    stamp = local_data_stamp(data_args)
    if flags.get("data_files", stamp) != stamp:  # (a run recorded before stamps: as before, by its flags)
        return None  # a data file behind the same flags changed (or moved) since: train again
    model_stamp = local_model_stamp(resolve_model_path(model_args.model_name_or_path))
    if flags.get("model_files", model_stamp) != model_stamp:
        return None  # the base model's files changed since: train again
    import torch

    from seqtune.config import default_learning_rate
    from seqtune.compiling import resolve_fast_dropout
    from seqtune.device_defaults import apply_device_defaults

    model = {k: v for k, v in flags.get("model", {}).items() if k != "resolved"}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # resolved as `train` resolves and records them; on a GPU that depends on the training split's size, which the
    # recorded data (compared too) fixed: the run matches one of the two resolutions or neither
    for budget_batches in (None, 0):
        resolved_data, resolved = replace(data_args), replace(args)
        apply_device_defaults(resolved_data, resolved, device, budget_batches)
        resolve_fast_dropout(resolved, on_cpu=device == "cpu")
        metric = resolved.metric_for_best_model
        resolved = replace(resolved, learning_rate=default_learning_rate(resolved, resolved_data.max_tokens_per_batch),
                           metric_for_best_model=metric.removeprefix("eval_") if metric else metric)
        if (_same_flags(resolved_data, flags.get("data")) and _same_flags(model_args, model)
                and _same_flags(resolved, flags.get("training"))):
            return results
    return None


# flags that change how a run is computed, not its results (tested bitwise): a run recorded with another value counts
SAME_RESULTS_FLAGS = {"dataloader_num_workers"}


def _same_flags(current, recorded) -> bool:
    """The recorded flags are these; a flag the record lacks (added to seqtune after that run) counts as equal
    when it has its default now: the run ran as the default does. (This holds while a new flag's default keeps
    the behaviour before it, as every flag's has so far; a new flag whose default changes training must not rely
    on it.)"""
    if not isinstance(recorded, dict):
        return False
    values = {k: v for k, v in _as_json(vars(current)).items() if k not in SAME_RESULTS_FLAGS}
    recorded = {k: v for k, v in recorded.items() if k not in SAME_RESULTS_FLAGS}
    defaults = _as_json({f.name: f.default for f in dataclasses.fields(current) if f.default is not dataclasses.MISSING})
    missing = {k for k in values if k not in recorded and k in defaults and values[k] == defaults[k]}
    return {k: v for k, v in values.items() if k not in missing} == recorded


def _has_weights(folder: str) -> bool:
    """The run holds its weights, whole (a truncated file counts as none: the run is trained again when needed)."""
    from seqtune.modelfiles import has_weights, safetensors_problem

    return has_weights(folder) and not any(safetensors_problem(os.path.join(folder, name))
                                           for name in os.listdir(folder) if name.endswith(".safetensors"))


def _as_json(values: dict) -> dict:
    return json.loads(json.dumps(values, default=str))


def run_configuration(data_args: DataArguments, model_args: ModelArguments, args: TrainingArguments,
                      seeds: list[int], out: str, sweep_args: SweepArguments,
                      folds: list[DataArguments] | None = None) -> tuple[list[dict], dict, list[dict]]:
    """Every seed on the validation split (into OUT/seed-N), or with `folds` every seed on every fold (into
    OUT/fold-K/seed-N; OUT/fold-K/data_seed-N with --soup): the runs (fold numbered), their summary, and with
    --soup each fold's soup scored on the fold."""
    if not folds:
        runs, summary, _ = run_and_combine(data_args, model_args, args, seeds, out, sweep_args, [])
        return runs, summary, []
    runs, soups = [], []
    for number, fold in enumerate(folds):
        fold_out = os.path.join(out, f"fold-{number}")
        soup = [Combination("soup", os.path.join(fold_out, "soup"), keep=sweep_args.keep_models)]
        fold_runs, _, combined = run_and_combine(fold, model_args, args, seeds, fold_out, sweep_args,
                                                 soup if sweep_args.soup else [])
        runs += [{"fold": number, **run} for run in fold_runs]
        if "soup" in combined:  # its metrics named as the runs' are (eval_*): the folds' soups summarize alike
            soups.append({"fold": number, **{k if k in ("folder", "members", "split", "rows") else f"eval_{k}": v
                                             for k, v in combined["soup"].items()}})
    return runs, summarize(runs), soups


def run_and_combine(data_args: DataArguments, model_args: ModelArguments, args: TrainingArguments,
                    seeds: list[int], out: str, sweep_args: SweepArguments, combinations: list[Combination]
                    ) -> tuple[list[dict], dict, dict]:
    """The seeds' runs in OUT, then their `combinations` (a soup, an ensemble) built and scored, or reused when
    recorded from these very runs; then the runs' weights are dropped unless --keep_models. The runs, their summary
    and {what: score} of each combination."""
    soup, keep = sweep_args.soup, sweep_args.keep_models
    runs, summary = run_seeds(data_args, model_args, args, seeds, out, keep or bool(combinations), soup,
                              need_weights=keep)
    members = [run_folder(out, seed, soup) for seed in seeds]
    recorded = {c.what: recorded_score(c, members) for c in combinations}  # (hashes a kept folder's files: once)
    if None in recorded.values() and not all(map(_has_weights, members)):
        # a combination to make from runs reused without their weights (dropped after an earlier combination)
        runs, summary = run_seeds(data_args, model_args, args, seeds, out, True, soup, need_weights=True)
        recorded = {c.what: recorded_score(c, members) for c in combinations}  # of the runs as they are now
    combined = {c.what: combine(c, data_args, model_args, members, recorded[c.what]) for c in combinations}
    for run in members:
        if keep and _has_weights(run):
            with atomic_write(os.path.join(run, KEPT_MARKER)) as f:
                f.write("kept by a sweep run with --keep_models\n")
        elif combinations and not keep and not os.path.exists(os.path.join(run, KEPT_MARKER)):
            drop_model(run)  # (also those dropped before: a kill mid-drop may have left a card naming weights)
    return runs, summary, combined


def whole_split_combinations(out: str, sweep_args: SweepArguments) -> list[Combination]:
    """OUT/soup and OUT/ensemble (kept: they are the sweep's models) as asked for."""
    return [Combination(what, os.path.join(out, what), keep=True) for what in ("soup", "ensemble")
            if getattr(sweep_args, what)]


def _record(out: str, entry: dict) -> None:
    """One line more in OUT/sweep_results.jsonl (the file is rewritten whole: atomic, like every write)."""
    path = os.path.join(out, "sweep_results.jsonl")
    previous = open(path).read() if os.path.isfile(path) else ""
    with atomic_write(path) as f:
        f.write(previous + json.dumps(entry) + "\n")


def search(data_args: DataArguments, model_args: ModelArguments, args: TrainingArguments,
           sweep_args: SweepArguments, seeds: list[int], folds: list[DataArguments] | None = None) -> dict:
    """Optuna TPE search over `search_space`, resumable from OUTPUT_DIR/study.db; each trial trains every seed
    (on every fold with --cv) and scores their mean."""
    import optuna

    out = args.output_dir
    metric_names: list[str] = []

    def objective(trial: optuna.Trial) -> float:
        params = search_space(trial)
        folder = trial.user_attrs.get("folder", f"trial-{trial.number}")  # an interrupted trial's: its runs reused
        try:
            runs, summary, _ = run_configuration(data_args, model_args, replace(args, **params), seeds,
                                                 os.path.join(out, folder), sweep_args, folds)
        except StoppedBySignal:
            raise  # (a stopped trial runs again; `requeue_interrupted`)
        except Exception:
            trial.set_user_attr("failed", True)  # its own failure (a loss gone non-finite): it counts as run
            raise
        if not metric_names:
            metric_names.extend(runs[0].get("task_metrics") or [k[5:] for k in runs[0] if k.startswith("eval_")])
        value = score(summary, metric_names)
        _record(out, {"trial": trial.number, "folder": folder, "params": params, "score": value, "summary": summary})
        logger.info("trial %d (%s): score %.4f with %s", trial.number, folder, value, params)
        return value

    study = optuna.create_study(direction="maximize", study_name="seqtune", load_if_exists=True,
                                storage=f"sqlite:///{os.path.abspath(os.path.join(out, 'study.db'))}")
    requeue_interrupted(study)
    # TPE's default of 10 random trials before it models anything would leave a 12-trial search random. Seeded by
    # the trials already in the study: a resumed search draws new parameters, not its first trials' again
    study.sampler = optuna.samplers.TPESampler(seed=(sweep_args.study_seed + len(study.trials)) % 2**32,
                                               n_startup_trials=min(10, max(3, sweep_args.n_trials // 3)))
    remaining = sweep_args.n_trials - len([t for t in study.trials if is_finished(t)])
    with _optuna_quiet():
        if remaining > 0:
            study.optimize(objective, n_trials=remaining)
    return {"seeds": seeds, "cv": len(folds or []), "best_params": study.best_params, "best_score": study.best_value,
            "trials": [{"number": t.number, "folder": t.user_attrs.get("folder", f"trial-{t.number}"),
                        "params": t.params, "score": t.value} for t in study.trials
                       if t.state == optuna.trial.TrialState.COMPLETE]}


@contextlib.contextmanager
def _optuna_quiet():
    """seqtune logs each trial; optuna's own lines would repeat them, and print a traceback for a stopped trial or a
    user error that the CLI reports in one line. Its level is restored after (a library user's setting)."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def is_finished(trial) -> bool:
    """Completed, or failed on its own (it counts toward --n_trials); not stopped by a signal or a kill."""
    from optuna.trial import TrialState

    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and trial.user_attrs.get("failed", False))


def requeue_interrupted(study) -> None:
    """Trials that a signal stopped (FAIL) or a kill left RUNNING (the folder lock rules out a live sweep) run again
    first, with their parameters and their folder (so their finished runs are reused), each once per stop."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    requeued = {t.user_attrs.get("rerun_of") for t in trials}
    for trial in trials:
        if trial.state == TrialState.RUNNING:
            study.tell(trial.number, state=TrialState.FAIL)
        if trial.state in (TrialState.RUNNING, TrialState.FAIL) and not is_finished(trial) and trial.params and \
                trial.number not in requeued:
            study.enqueue_trial(trial.params, user_attrs={
                "rerun_of": trial.number, "folder": trial.user_attrs.get("folder", f"trial-{trial.number}")})


def sweep(data_args: DataArguments, model_args: ModelArguments, args: TrainingArguments,
          sweep_args: SweepArguments) -> dict:
    """`seqtune sweep`: seeds of the given flags (--n_trials 0) or a search, on the validation split or on --cv
    folds (then each seed once more on the validation split); writes OUTPUT_DIR/sweep_summary.json."""
    from seqtune.validation import validate_training_args

    seeds = parse_seeds(sweep_args.seeds)
    check_sweep_args(sweep_args, args, seeds)
    # a folder holding only an earlier sweep's files is continued (its finished runs reused); another needs
    # --overwrite_output_dir, which also trains every run again
    validate_training_args(data_args, replace(args, overwrite_output_dir=args.overwrite_output_dir or bool(
        args.output_dir and is_sweep_folder(args.output_dir))))
    os.makedirs(args.output_dir, exist_ok=True)
    with folder_locked(args.output_dir):  # a second sweep into this folder is refused, naming this one
        report = run_sweep(data_args, model_args, args, sweep_args, seeds)
        write_json(os.path.join(args.output_dir, "sweep_summary.json"), report)
    print_report(report)
    return report


def run_sweep(data_args: DataArguments, model_args: ModelArguments, args: TrainingArguments,
              sweep_args: SweepArguments, seeds: list[int]) -> dict:
    """The sweep's runs in OUTPUT_DIR: a search, seeds under CV, or seeds on the validation split; its report."""
    folds = None
    if sweep_args.cv:
        from seqtune.cv import make_folds

        folds = make_folds(data_args, sweep_args.cv, sweep_args.cv_seed, args.output_dir)
    if sweep_args.n_trials > 0:
        return search(data_args, model_args, args, sweep_args, seeds, folds)
    if folds:
        return cross_validate(data_args, model_args, args, sweep_args, seeds, folds)
    runs, summary, combined = run_and_combine(data_args, model_args, args, seeds, args.output_dir, sweep_args,
                                              whole_split_combinations(args.output_dir, sweep_args))
    _record_runs(args.output_dir, runs)
    return {"seeds": seeds, "summary": summary, **combined}


def check_sweep_args(sweep_args: SweepArguments, args: TrainingArguments, seeds: list[int]) -> None:
    """--ensemble and --soup combine runs on the whole training split (--soup also per fold): refused with a
    search, and with fewer than 2 runs to combine."""
    for flag in ("ensemble", "soup"):
        if not getattr(sweep_args, flag):
            continue
        if sweep_args.n_trials > 0:
            raise SeqtuneError(f"--{flag} combines the runs of one configuration: leave out --n_trials.")
        if len(set(seeds)) < 2:
            raise SeqtuneError(f"--{flag} combines several runs: give at least 2 --seeds, e.g. --seeds 1 2 3.")
    if sweep_args.soup and args.data_seed is not None:
        raise SeqtuneError("--soup gives each run one of --seeds as its --data_seed: leave out --data_seed (--seed "
                           "sets the one initialisation the runs share).")
    if sweep_args.ensemble and sweep_args.cv and not sweep_args.cv_validation:
        raise SeqtuneError("--ensemble saves the seeds' models trained on the whole training split: leave out "
                           "--cv_validation false with --cv.")


SWEEP_FILES = {"sweep_summary.json", "sweep_results.jsonl", "study.db", "validation", "ensemble", ".ensemble.saving",
               "soup", ".soup.saving", "soup_scores.json", "ensemble_scores.json"}
SWEEP_FOLDER_RE = re.compile(r"^(seed|data_seed|fold|trial)-\d+$")



def is_sweep_folder(path: str) -> bool:
    """Whether `path` holds nothing but what `seqtune sweep` writes (so the same command may continue in it)."""
    from seqtune.cv import FOLDS_DIR
    from seqtune.output_dir import LOCK_FILE

    names = set(os.listdir(path)) - {LOCK_FILE} if os.path.isdir(path) else set()
    return bool(names) and all(n in SWEEP_FILES or n == FOLDS_DIR or SWEEP_FOLDER_RE.match(n) for n in names)


def cross_validate(data_args: DataArguments, model_args: ModelArguments, args: TrainingArguments,
                   sweep_args: SweepArguments, seeds: list[int], folds: list[DataArguments]) -> dict:
    """Every seed on every fold (OUT/fold-K/seed-N), with --soup each fold's soup scored on it, then, unless
    --cv_validation false, every seed on the whole training split scored on the validation split
    (OUT/validation/seed-N), with its soup or ensemble."""
    out = args.output_dir
    runs, summary, soups = run_configuration(data_args, model_args, args, seeds, out, sweep_args, folds)
    report = {"seeds": seeds, "cv": len(folds), "cv_seed": sweep_args.cv_seed, "summary": summary,
              "per_fold": {str(k): summarize([r for r in runs if r["fold"] == k]) for k in range(len(folds))}}
    if soups:
        report["soup_per_fold"], report["soup_summary"] = soups, summarize(soups)
    if sweep_args.cv_validation:
        checks, report["validation"], combined = run_and_combine(
            data_args, model_args, args, seeds, os.path.join(out, "validation"), sweep_args,
            whole_split_combinations(out, sweep_args))
        runs += [{"fold": "validation", **run} for run in checks]
        report.update(combined)
    _record_runs(out, runs)
    return report


def _record_runs(out: str, runs: list[dict]) -> None:
    """OUT/sweep_results.jsonl: one line per run of this sweep (rewritten whole: a continued sweep lists each once)."""
    with atomic_write(os.path.join(out, "sweep_results.jsonl")) as f:
        f.writelines(json.dumps(run) + "\n" for run in runs)


def print_report(report: dict) -> None:
    if "summary" in report:
        where = f"{report['cv']}-fold cross-validation, " if report.get("cv") else ""
        print(f"{where}seeds {report['seeds']}:")
        _print_summary(report["summary"])
        if "validation" in report:
            print(f"validation split, seeds {report['seeds']}:")
            _print_summary(report["validation"])
        if "soup_summary" in report:
            print(f"{report['cv']}-fold cross-validation, a soup of the {len(report['seeds'])} runs of each fold:")
            _print_summary(report["soup_summary"])
        for what in ("soup", "ensemble"):
            if what in report:
                scores = {k: v for k, v in report[what].items() if isinstance(v, float)}
                print(f"{what} of {report[what]['members']} in {report[what]['folder']}: "
                      + " ".join(f"{k}={v:.4f}" for k, v in scores.items()))
    else:
        for t in sorted(report["trials"], key=lambda t: -(t["score"] or -1)):
            folder = t.get("folder", f"trial-{t['number']}")
            moved = f" (in {folder})" if folder != f"trial-{t['number']}" else ""  # a stopped trial's rerun
            print(f"  trial {t['number']:>3}  score {t['score']:.4f}  {t['params']}{moved}")
        print(f"best: {report['best_params']} (score {report['best_score']:.4f})")


def _print_summary(summary: dict) -> None:
    for key, s in summary.items():
        print(f"  {key:<24} {s['mean']:.4f} ± {s['std']:.4f}  (n={s['n']})")
