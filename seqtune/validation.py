"""One pass over every flag before anything heavy is loaded or anything is written: choices, ranges, combinations,
data files that must exist, folders and files that must be writable. Every problem found is reported at once
(`SeqtuneError(*problems)`), each naming the flag, what was given and the fix."""

from __future__ import annotations

import glob
import importlib.util
import math
import os
import tempfile

from seqtune.batching import Batching, validate_batching
from seqtune.compiling import compile_problems
from seqtune.config import LR_SCHEDULERS, MAX_SEQ_LENGTH, DataArguments, EvalArguments, TrainingArguments
from seqtune.data import data_file_paths, default_cache_dir
from seqtune.errors import SeqtuneError
from seqtune.tasks import GLUE_TASKS

REPORTERS = ("jsonl", "tensorboard", "wandb", "mlflow")  # --report_to values besides "none"
PREDICTION_FORMATS = (".tsv", ".csv", ".jsonl")


def validate_training_args(data_args: DataArguments, args: TrainingArguments, reinit_top_layers: int = 0) -> None:
    """Every problem with `seqtune train`'s flags, reported at once, before anything is loaded or written."""
    problems = _data_problems(data_args, needs_data=True) + _training_problems(data_args, args)
    if reinit_top_layers < 0:
        problems.append(f"--reinit_top_layers must be a number of layers (0 for none), got {reinit_top_layers}.")
    if args.output_dir is None:
        problems.append("--output_dir is required: the folder that receives the model, metrics and logs.")
    else:
        problems += _output_dir_problems(args)
    if problems:
        raise SeqtuneError(*problems)


def validate_eval_args(data_args: DataArguments, eval_args: EvalArguments, command: str) -> None:
    """Every problem with `seqtune evaluate` / `seqtune predict` flags, reported at once, before the model loads."""
    one_input = eval_args.sentence1 is not None
    problems = _data_problems(data_args, needs_data=command == "evaluate", reads_data=not one_input)
    problems += _positive({"--per_device_eval_batch_size": eval_args.per_device_eval_batch_size})
    if eval_args.bf16 and eval_args.backend == "onnx":
        problems.append("--bf16 is bfloat16 autocast for the torch backend; an ONNX model runs as it was exported "
                        "(int8 with `seqtune export --quantize`).")
    if command == "evaluate":
        if one_input or eval_args.sentence2 is not None:
            problems.append("--sentence1/--sentence2 are for `seqtune predict`; evaluate scores a labelled split.")
    else:
        problems += _predict_problems(data_args, eval_args)
    if eval_args.output_file and not one_input:
        problem = writable_file_problem(eval_args.output_file, "--output_file") or _input_file_problem(
            eval_args.output_file, data_args)
        if problem:
            problems.append(problem)
    if problems:
        raise SeqtuneError(*problems)


def _input_file_problem(output_file: str, data_args: DataArguments) -> str | None:
    """--output_file naming one of the data files it is written from would replace the user's data."""
    import glob

    given = [data_args.train_file, data_args.validation_file, data_args.test_file]
    inputs = {os.path.realpath(p) for pattern in given if pattern
              for p in (glob.glob(pattern) if glob.has_magic(pattern) else [pattern])}
    if os.path.realpath(output_file) in inputs:
        return f"--output_file {output_file} is one of the data files read: it would be overwritten; choose another name."
    return None


def validate_data_args(data_args: DataArguments, sizes: dict[str, float], output_files: dict[str, str | None]
                       ) -> None:
    """`seqtune data` / `seqtune bench`: the data flags, the command's own sizes (flag -> value, must be positive)
    and the files it writes (flag -> path), all reported at once."""
    problems = _data_problems(data_args, needs_data=True) + _positive(sizes)
    problems += [p for flag, path in output_files.items() if path and (p := writable_file_problem(path, flag))]
    if problems:
        raise SeqtuneError(*problems)


def has_data(data_args: DataArguments) -> bool:
    return bool(data_args.dataset_name or data_args.task_name or data_args.train_file or data_args.validation_file
                or data_args.test_file)


def _predict_problems(data_args: DataArguments, eval_args: EvalArguments) -> list[str]:
    problems = []
    if eval_args.sentence2 is not None and eval_args.sentence1 is None:
        problems.append("--sentence2 needs --sentence1: give the first text of the pair with --sentence1.")
    if eval_args.sentence1 is not None and (has_data(data_args) or eval_args.output_file
                                            or eval_args.predictions_dir):
        problems.append("--sentence1 classifies one input and prints the result: leave out the data flags and "
                        "--output_file, or leave out --sentence1 to predict the data into --output_file.")
    output = eval_args.output_file
    if output and os.path.splitext(output)[1].lower() not in PREDICTION_FORMATS:
        problems.append(f"--output_file {output}: use a .tsv, .csv or .jsonl file name.")
    if eval_args.sentence1 is None and has_data(data_args) and not output and not eval_args.predictions_dir:
        problems.append("--output_file is required to predict a split or file (.tsv, .csv or .jsonl); or give "
                        "--sentence1 \"...\" [--sentence2 \"...\"] for one input.")
    return problems + _shard_problems(data_args, eval_args)


def _shard_problems(data_args: DataArguments, eval_args: EvalArguments) -> list[str]:
    """predict --predictions_dir: reads --test_file (files or a glob) chunk by chunk."""
    problems = _positive({"--rows_per_shard": eval_args.rows_per_shard})
    if not eval_args.predictions_dir:
        return problems
    if eval_args.output_file:
        problems.append("give either --output_file (one file, predicted in memory) or --predictions_dir (Parquet "
                        "shards, chunk by chunk), not both.")
    if not data_args.test_file or data_args.dataset_name or data_args.task_name:
        problems.append("--predictions_dir reads the rows to predict from --test_file (a file or a glob pattern of "
                        "shards: \"data/*.parquet\").")
    if data_args.max_predict_samples is not None:
        problems.append("--max_predict_samples is for the in-memory prediction; --predictions_dir predicts every row "
                        "of --test_file (give it fewer files or rows).")
    if data_args.train_file or data_args.validation_file or eval_args.split:
        problems.append("--predictions_dir predicts --test_file only: leave out --train_file, --validation_file "
                        "and --split.")
    problem = writable_dir_problem(eval_args.predictions_dir, f"--predictions_dir {eval_args.predictions_dir}")
    return problems + ([problem] if problem else [])


def _data_problems(data_args: DataArguments, needs_data: bool, reads_data: bool = True) -> list[str]:
    """Flags of DataArguments: ranges, the task, the batching strategy, the data files and the cache folder."""
    problems = validate_batching(Batching(data_args.padding, data_args.pad_to_multiple_of,
                                          data_args.group_by_length, data_args.max_tokens_per_batch),
                                 data_args.max_seq_length or MAX_SEQ_LENGTH)  # (None: evaluate/predict: the model's)
    if data_args.task_name is not None and data_args.task_name.lower() not in GLUE_TASKS:
        problems.append(f"--task_name '{data_args.task_name}' is not a known task; choose one of: "
                        f"{', '.join(GLUE_TASKS)}.")
    sizes = {"--max_seq_length": data_args.max_seq_length} if data_args.max_seq_length is not None else {}
    for flag in ("max_train_samples", "max_eval_samples", "max_predict_samples", "preprocessing_num_workers"):
        if getattr(data_args, flag) is not None:
            sizes[f"--{flag}"] = getattr(data_args, flag)
    problems += _positive(sizes)
    files = [(f"--{s}_file", getattr(data_args, f"{s}_file")) for s in ("train", "validation", "test")]
    files = [(flag, path) for flag, path in files if path]
    if files and data_args.dataset_name:
        problems.append("give either --dataset_name or --train_file/--validation_file/--test_file, not both.")
    if needs_data and not has_data(data_args):
        problems.append("no data given: pass --task_name (e.g. mrpc), --dataset_name (a Hub id or a local folder) "
                        "with --dataset_config_name, or --train_file/--validation_file/--test_file.")
    problems += [f"{flag} {path}: " + ("no file matches the pattern." if glob.has_magic(path) else "no such file.")
                 for flag, path in files if not data_file_paths(path)]
    if reads_data and has_data(data_args):  # the tokenization cache is written under --cache_dir
        problem = writable_dir_problem(data_args.cache_dir or default_cache_dir(), "--cache_dir")
        if problem:
            problems.append(problem)
    return problems


def _lora_problems(args: TrainingArguments) -> list[str]:
    problems = []
    if not 0 <= args.lora_r < 2**16:
        problems.append(f"--lora_r must be 0 (full fine-tuning) or a positive rank, got {args.lora_r}.")
    if args.lora_alpha is not None and not 0 < args.lora_alpha < math.inf:
        problems.append(f"--lora_alpha must be a positive finite number, got {args.lora_alpha}.")
    if not 0 <= args.lora_dropout < 1:
        problems.append(f"--lora_dropout must be in [0, 1), got {args.lora_dropout}.")
    if not args.lora_r:
        lora_only = [flag for flag, given in (("--save_adapter_only", args.save_adapter_only),
                                              ("--lora_target_modules", args.lora_target_modules),
                                              ("--lora_alpha", args.lora_alpha is not None)) if given]
        problems += [f"{flag} needs --lora_r (the rank of the LoRA adapters, e.g. --lora_r 8)." for flag in lora_only]
    return problems


def _training_problems(data_args: DataArguments, args: TrainingArguments) -> list[str]:
    problems = _positive({
        **({"--per_device_train_batch_size": args.per_device_train_batch_size}
           if args.per_device_train_batch_size is not None else {}),
        "--per_device_eval_batch_size": args.per_device_eval_batch_size,
        "--gradient_accumulation_steps": args.gradient_accumulation_steps, "--logging_steps": args.logging_steps,
        **{f"--{flag}": getattr(args, flag) for flag in ("eval_steps", "save_steps", "save_total_limit",
                                                          "num_threads") if getattr(args, flag) is not None}})
    if args.max_steps <= 0 and args.num_train_epochs is not None and not 0 < args.num_train_epochs < 1e6:
        problems.append(f"--num_train_epochs must be a positive number of passes (got {args.num_train_epochs}), "
                        "or set --max_steps.")
    if args.learning_rate is not None and not 0 < args.learning_rate < math.inf:
        problems.append(f"--learning_rate must be a positive finite number, got {args.learning_rate}.")
    problems += _lora_problems(args)
    infinite = [f"--{name}" for name in ("weight_decay", "max_grad_norm", "adam_epsilon")
                if math.isinf(getattr(args, name))]  # (NaN fails the range checks below)
    problems += [f"{flag} must be a finite number." for flag in infinite]
    if not args.adam_epsilon > 0:
        problems.append(f"--adam_epsilon must be positive, got {args.adam_epsilon}.")
    for flag, value in (("--weight_decay", args.weight_decay), ("--max_grad_norm", args.max_grad_norm)):
        if not value >= 0:
            problems.append(f"{flag} must be 0 or more, got {value}.")
    for flag, value in (("--warmup_ratio", args.warmup_ratio), ("--adam_beta1", args.adam_beta1),
                        ("--adam_beta2", args.adam_beta2), ("--label_smoothing_factor", args.label_smoothing_factor)):
        if not 0 <= value < 1:
            problems.append(f"{flag} must be in [0, 1), got {value}.")
    if not (math.isfinite(args.rdrop_alpha) and args.rdrop_alpha >= 0):
        problems.append(f"--rdrop_alpha must be 0 or more, e.g. 1.0, got {args.rdrop_alpha}.")
    if args.ema_decay is not None and not 0 < args.ema_decay < 1:
        problems.append(f"--ema_decay must be in (0, 1), e.g. 0.99, got {args.ema_decay}.")
    if not 0 < args.layerwise_lr_decay <= 1:
        problems.append(f"--layerwise_lr_decay must be in (0, 1], got {args.layerwise_lr_decay}.")
    if not 0 <= args.seed < 2**32:
        problems.append(f"--seed must be in [0, 2**32), got {args.seed}.")
    if args.data_seed is not None and not 0 <= args.data_seed < 2**32:
        problems.append(f"--data_seed must be in [0, 2**32), got {args.data_seed}.")
    if args.lr_scheduler_type not in LR_SCHEDULERS:
        problems.append(f"--lr_scheduler_type '{args.lr_scheduler_type}' is unknown: use one of "
                        f"{', '.join(LR_SCHEDULERS)}.")
    problems += _report_to_problems(args.report_to)
    if args.eval_strategy == "steps" and args.eval_steps is None:
        problems.append("--eval_strategy steps needs --eval_steps N.")
    problems += _selection_problems(args)
    if data_args.streaming and data_args.label_columns:
        problems.append("--label_columns (multi-label) needs the whole dataset; leave out --streaming.")
    if data_args.streaming and args.max_steps <= 0:
        problems.append("--streaming needs --max_steps N: a stream's length is not known before it is read.")
    if args.dataloader_num_workers is not None and args.dataloader_num_workers < 0:
        problems.append(f"--dataloader_num_workers must be 0 or more, got {args.dataloader_num_workers}.")
    problems += compile_problems(args)
    if data_args.streaming and args.dataloader_num_workers:
        problems.append("--dataloader_num_workers: a stream is read in order by the training loop itself; leave it "
                        "out with --streaming.")
    if data_args.streaming and data_args.max_tokens_per_batch:
        problems.append("--max_tokens_per_batch needs the whole dataset's lengths; with --streaming use "
                        "--per_device_train_batch_size.")
    return problems


def _report_to_problems(report_to: list[str]) -> list[str]:
    from seqtune.config import comma_items

    values = comma_items(report_to)
    unknown = [v for v in values if v not in (*REPORTERS, "none")]
    if unknown or not values or ("none" in values and len(values) > 1):
        given = " ".join(report_to) if isinstance(report_to, (list, tuple)) else str(report_to)
        return [f"--report_to '{given}' is not valid: use one or more of {', '.join(REPORTERS)} (--report_to jsonl "
                "tensorboard), or none."]
    missing = [name for name, module in (("wandb", "wandb"), ("mlflow", "mlflow")) if name in values
               and importlib.util.find_spec(module) is None]
    return [f"--report_to {name} needs the {name} package: pip install 'seqtune[{name}]'." for name in missing]


def _selection_problems(args: TrainingArguments) -> list[str]:
    """--metric_for_best_model, --early_stopping_patience and --class_weights, as far as the data is not needed."""
    from seqtune.metrics import KNOWN_METRICS

    problems = []
    metric = args.metric_for_best_model
    if metric is not None and metric.removeprefix("eval_") not in KNOWN_METRICS:
        problems.append(f"--metric_for_best_model '{metric}' is not a metric seqtune computes; choose one of "
                        f"{', '.join(KNOWN_METRICS)}.")
    elif metric is not None:
        args.metric_for_best_model = metric.removeprefix("eval_")  # transformers' spelling works too
    if args.early_stopping_patience is not None:
        if args.early_stopping_patience <= 0:
            problems.append(f"--early_stopping_patience must be a positive number of evaluations, got "
                            f"{args.early_stopping_patience}.")
        if args.eval_strategy == "no":
            problems.append("--early_stopping_patience needs evaluations: leave --eval_strategy at epoch, or use "
                            "steps with --eval_steps N.")
    weights = args.class_weights
    if weights is not None and weights.strip().lower() != "auto":
        try:
            bad = not all(math.isfinite(w) and w > 0 for w in (float(x) for x in weights.split(",")))
        except ValueError:
            bad = True
        if bad:
            problems.append(f"--class_weights {weights}: give auto or one positive number per label in id order "
                            "(e.g. --class_weights 1,4).")
    return problems


def _positive(values: dict[str, float]) -> list[str]:
    return [f"{flag} must be a positive number, got {value}." for flag, value in values.items() if value <= 0]


def _output_dir_problems(args: TrainingArguments) -> list[str]:
    from seqtune.output_dir import LOCK_FILE

    output_dir = args.output_dir
    if not output_dir.strip():
        return ["--output_dir is empty: name the folder that receives the model, metrics and logs."]
    if any(len(part.encode()) > 255 for part in os.path.abspath(output_dir).split(os.sep)):
        return [f"--output_dir {output_dir[:60]}...: a folder name is longer than 255 bytes; choose a shorter one."]
    # a run killed before it wrote anything leaves only its (unlocked) lock file: the folder is still empty
    if os.path.isdir(output_dir) and set(os.listdir(output_dir)) - {LOCK_FILE} and not args.overwrite_output_dir \
            and not args.resume_from_checkpoint:
        return [f"--output_dir {output_dir} is not empty: pass --overwrite_output_dir to write into it, or choose "
                "another folder."]
    problem = writable_dir_problem(output_dir, f"--output_dir {output_dir}")
    return [problem] if problem else []


def writable_dir_problem(path: str, subject: str) -> str | None:
    """Whether `path` is, or can be created as, a folder this process can write in, tried for real: a probe file is
    written in the folder or, while the folder does not exist yet, in its nearest existing parent, then removed.
    Nothing is created or left behind, and each process probes with its own file name (ranks probe at once).
    `subject` starts the message (e.g. "--output_dir runs/x")."""
    target = os.path.abspath(os.path.expanduser(path))
    if os.path.islink(target) and not os.path.exists(target):
        return (f"{subject} is a symbolic link to {os.readlink(target)}, which does not exist: create that folder, "
                "remove the link, or choose another path.")
    if os.path.exists(target) and not os.path.isdir(target):
        return f"{subject} is a file, not a folder: choose a folder."
    existing = target
    while not os.path.isdir(existing):
        if os.path.lexists(existing):  # a file or a broken link where a folder would have to be created
            return f"{subject} cannot be created: {existing} is not a folder."
        existing = os.path.dirname(existing)
    try:
        fd, probe = tempfile.mkstemp(prefix=".seqtune-write-probe-", dir=existing)
        try:
            os.write(fd, b"probe")
        finally:
            os.close(fd)
            os.remove(probe)
    except OSError as error:
        where = "" if existing == target else f" (it would be created in {existing})"
        return (f"{subject} is not writable{where}: {error.strerror or error}; choose another folder or fix its "
                "permissions.")
    return None


def writable_file_problem(path: str, flag: str) -> str | None:
    """Whether the file `path` can be written (replaced if it exists); its folder is created when written."""
    target = os.path.abspath(os.path.expanduser(path))
    if os.path.isdir(target):
        return f"{flag} {path} is a folder: give a file name."
    if os.path.islink(target) and not os.path.exists(target):
        return f"{flag} {path} is a symbolic link to {os.readlink(target)}, which does not exist: remove the link."
    if os.path.exists(target) and not os.path.isfile(target):
        return f"{flag} {path} is not a regular file: give a file name."
    if os.path.exists(target) and not os.access(target, os.W_OK):
        return f"{flag} {path} is read-only: make it writable or choose another file."
    folder = os.path.dirname(target)
    return writable_dir_problem(folder, f"{flag} {path}: its folder {os.path.dirname(path) or '.'}")
