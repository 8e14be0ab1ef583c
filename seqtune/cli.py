"""The `seqtune` command line: `seqtune {train,evaluate,predict,data,bench,report,sweep,export,serve} [flags]`.

Flags come from the typed dataclasses in `seqtune.config` (help generated from their docstrings)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import signal
import sys
import threading
import warnings

from seqtune.errors import SeqtuneError, StoppedBySignal, Terminated
from seqtune.hub import go_offline_if_unreachable

COMMANDS = {
    "train": "fine-tune a model and save it with its metrics",
    "evaluate": "score a fine-tuned model on a labelled split",
    "predict": "predict a split, a file, or one input",
    "data": "show the data: splits, labels, token lengths, padding cost per strategy",
    "bench": "measure training throughput per padding strategy (and against transformers' Trainer)",
    "report": "rebuild the model card and the report (plots + HTML) of a training run: seqtune report DIR",
    "sweep": "train several seeds (mean ± std of every metric) or search hyperparameters with Optuna",
    "export": "export a fine-tuned model to ONNX (optionally int8-quantized) for ONNX Runtime",
    "serve": "serve a fine-tuned model over HTTP (dynamic batching, /predict, /health, /metadata)",
}
logger = logging.getLogger("seqtune")


def _dataclasses_for(command: str):
    from seqtune import config

    common = [config.DataArguments, config.ModelArguments]
    if command == "train":
        return common + [config.TrainingArguments]
    if command in ("evaluate", "predict"):
        return common + [config.EvalArguments]
    if command == "data":
        return common + [config.DataStatsArguments]
    if command == "sweep":
        from seqtune.sweep import SweepArguments

        return common + [config.TrainingArguments, SweepArguments]
    if command == "export":
        from seqtune.onnx_export import ExportArguments

        return [config.ModelArguments, ExportArguments]
    if command == "serve":
        from seqtune.serve import ServeArguments

        return [config.ModelArguments, ServeArguments]
    from seqtune.bench import BenchArguments

    return common + [BenchArguments]


# flags of the shared dataclasses that only training reads: evaluate, predict and data neither list nor take them
TRAINING_ONLY = ("streaming", "max_train_samples", "padding", "pad_to_multiple_of", "group_by_length",
                 "max_tokens_per_batch", "reinit_pooler", "reinit_top_layers", "ignore_mismatched_sizes",
                 "preprocessing_num_workers")
INFERENCE_ONLY = ("reinit_pooler", "reinit_top_layers", "ignore_mismatched_sizes")
HIDDEN_FLAGS = {
    "evaluate": TRAINING_ONLY + ("max_predict_samples", "keep_columns", "sentence1", "sentence2", "predictions_dir",
                                 "rows_per_shard"),
    "predict": TRAINING_ONLY + ("max_eval_samples",),
    "export": INFERENCE_ONLY + ("torch_dtype",),
    "serve": INFERENCE_ONLY,
    "bench": ("streaming",),  # (it times steps over the tokenized split in memory)
    "data": ("streaming", "reinit_pooler", "reinit_top_layers", "ignore_mismatched_sizes", "allow_pickle_weights", "max_predict_samples",
             "torch_dtype"),
}


def flags_for(command: str) -> list[str]:
    """The flag names (without --) `seqtune COMMAND` takes, from its dataclasses."""
    import dataclasses

    hidden = HIDDEN_FLAGS.get(command, ())
    return [f.name for cls in _dataclasses_for(command) for f in dataclasses.fields(cls) if f.name not in hidden]


def all_flags() -> set[str]:
    """Every flag of every command: the keys a shared YAML config may hold."""
    return {name for command in COMMANDS if command != "report" for name in flags_for(command)} | {"log_level"}


class _ReportingParser:
    """argparse prints its whole usage and exits on a bad flag; seqtune reports one line naming it (see `main`)."""

    def error(self, message):
        raise SeqtuneError(f"{message} (see `{self.prog} --help`).")


class _ArgumentParser(_ReportingParser, argparse.ArgumentParser):
    pass


def _debug_flag(argv: list[str]) -> bool | None:
    """--debug, --debug false, --debug=no ... (the dataclass flag takes an optional value); None when absent. Not
    an argparse option here: `seqtune report --debug DIR` must not read DIR as its value."""
    for i, arg in enumerate(argv):
        name, _, value = arg.partition("=")
        if name == "--debug":
            value = value or (argv[i + 1] if i + 1 < len(argv) else "")
            return value.lower() not in ("false", "no", "f", "n", "0")
    return None


def _prescan(command: str, argv: list[str], config: dict | None = None) -> argparse.Namespace:
    """The few flags needed before transformers/datasets are imported (Hub reachability, logging, --config), with
    the config file's values as defaults."""
    pre = _ArgumentParser(prog=f"seqtune {command}", add_help=False, allow_abbrev=False)
    for flag in ("--model_name_or_path", "--dataset_name", "--task_name", "--train_file", "--config"):
        pre.add_argument(flag)
    pre.add_argument("--log_level", default="info")
    known = {action.dest for action in pre._actions}
    pre.set_defaults(**{key: value for key, value in (config or {}).items() if key in known and key != "config"})
    pre_args = pre.parse_known_args(argv)[0]
    debug = _debug_flag(argv)
    pre_args.debug = bool((config or {}).get("debug", False)) if debug is None else debug
    return pre_args


def read_config_file(path: str) -> dict:
    """A YAML file of `flag: value` lines, as a dict; its syntax errors name the line and column."""
    import yaml

    try:
        with open(path) as f:
            values = yaml.load(f, Loader=_unique_keys_loader(yaml))
    except OSError as error:
        raise SeqtuneError(f"--config {path}: {error.strerror.lower() if error.strerror else error}.") from error
    except UnicodeDecodeError as error:
        raise SeqtuneError(f"--config {path} is not UTF-8 text (byte {error.start}): save it as UTF-8 YAML.") from error
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise SeqtuneError(f"--config {path} is not valid YAML{where}: {problem}. Each line is `flag_name: value`."
                           ) from error
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise SeqtuneError(f"--config {path} must be a mapping of flag names to values (`learning_rate: 2e-5`), "
                           f"not a {type(values).__name__}.")
    # the command line spells flags with - or _; a key is the flag's name without the leading --
    names = [str(key).replace("-", "_") for key in values]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise SeqtuneError(f"--config {path} sets {', '.join(twice)} twice (as - and _ spellings): keep one.")
    return {name: value for name, value in zip(names, values.values()) if value is not None}


def _unique_keys_loader(yaml):
    """PyYAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last silently)."""
    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(None, None, f"the key '{key}' is given twice",
                                                            key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep)

    return UniqueKeyLoader


def apply_config_defaults(parser: argparse.ArgumentParser, path: str, values: dict) -> None:
    """The config file's values become the parser's defaults (so the command line overrides them), each checked
    against the flag it sets: its name exactly (no prefixes), its type and its choices."""
    import difflib

    actions = {a.dest: a for a in parser._actions if f"--{a.dest}" in a.option_strings and a.dest not in
               ("help", "config")}
    problems, defaults, others = [], {}, []
    shared = all_flags()
    for key, value in values.items():
        action = actions.get(key)
        if action is None and key in shared:  # another command's key in a config the whole workflow shares
            others.append(key)
            continue
        if action is None:
            close = difflib.get_close_matches(key, list(actions), n=1) or difflib.get_close_matches(
                key, sorted(shared), n=1)
            problems.append(f"--config {path}: unknown key '{key}'" + (f" (did you mean '{close[0]}'?)" if close
                                                                        else "") + "; keys are flag names.")
            continue
        try:
            defaults[key] = _config_value(action, value)
        except (TypeError, ValueError, argparse.ArgumentTypeError) as error:
            problems.append(f"--config {path}: {key}: {str(error).rstrip('.')}.")
    if problems:
        raise SeqtuneError(*problems)
    if others:
        logger.info("--config %s: ignoring the keys of other commands: %s", path, ", ".join(others))
    parser.set_defaults(**defaults)


def _config_value(action: argparse.Action, value):
    """A YAML value as the flag's own type would read it from the command line (a list for a list flag)."""
    if action.nargs in ("+", "*"):
        items = value if isinstance(value, list) else [value]
        single = argparse.Action(action.option_strings, action.dest, type=action.type, choices=action.choices)
        return [_config_value(single, item) for item in items]
    if isinstance(value, (list, dict)):
        raise ValueError(f"expected a single value, got {type(value).__name__} {value!r}")
    text = value if isinstance(value, str) else str(value).lower() if isinstance(value, bool) else str(value)
    try:
        converted = action.type(text) if action.type is not None else text
    except (TypeError, ValueError) as error:
        kind = getattr(action.type, "__name__", "value")
        raise ValueError(f"{value!r} is not a valid {kind}") from error
    if action.choices is not None and converted not in action.choices:
        raise ValueError(f"{value!r} is not one of {', '.join(map(str, action.choices))}")
    return converted


def main(argv: list[str] | None = None) -> int:
    """The command line's error boundary: a user error is one line and exit 2, anything else one line naming the
    exception and exit 1 (--debug re-raises both with their traceback), Ctrl-C exit 130."""
    from seqtune.phases import command_started, take_start_up

    command_started()  # the run's phase table counts its start-up (imports, flags) from here
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: seqtune {" + ",".join(COMMANDS) + "} [flags]   (seqtune COMMAND --help for its flags)\n")
        print("Fine-tune pre-trained transformer encoders for text and text-pair classification.\n")
        for name, text in COMMANDS.items():
            print(f"  {name:<9} {text}")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"\nseqtune: error: unknown command '{argv[0]}'", file=sys.stderr)
            return 2
        return 0
    command, rest = argv[0], argv[1:]
    options = argparse.Namespace(debug=bool(_debug_flag(rest)))  # until the flags are read
    previous = _terminate_like_ctrl_c()
    try:
        return _main(command, rest, options)
    except StoppedBySignal as stopped:  # SIGTERM/SIGINT during training: a checkpoint was written
        print(f"seqtune {command}: {stopped}; {_how_to_continue(command, rest, stopped.finished)}", file=sys.stderr)
        return stopped.exit_code
    except SeqtuneError as error:
        if options.debug:
            raise
        print(f"seqtune {command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        terminated = isinstance(interrupt, Terminated)
        again = f"; {SWEEP_AGAIN}" if command == "sweep" else ""
        print(f"seqtune {command}: {'terminated' if terminated else 'interrupted'}{again}", file=sys.stderr)
        return 143 if terminated else 130
    except Exception as error:  # a bug or an unforeseen failure: still one line, the traceback on request
        if options.debug:
            raise
        lines = str(error).strip().splitlines()
        print(f"seqtune {command}: error: unexpected {type(error).__name__}: {lines[0] if lines else ''} "
              "(rerun with --debug for the traceback)", file=sys.stderr)
        return 1
    finally:
        take_start_up()  # a command that trained nothing leaves no start-up behind for a later library call
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


SWEEP_AGAIN = ("run the same command again to continue: finished runs (and their soup or ensemble) are reused, "
               "an interrupted run starts over")


def _how_to_continue(command: str, rest: list[str], finished: bool) -> str:
    """The command that continues a run stopped by a signal (a sweep continues by being run again)."""
    if command == "sweep":
        return SWEEP_AGAIN
    if finished:
        return "nothing to resume"
    return "resume with: " + shlex.join(["seqtune", command, *[a for a in rest if a != "--resume_from_checkpoint"],
                                         "--resume_from_checkpoint"])


def _terminate_like_ctrl_c():
    """SIGTERM raises `Terminated` (a KeyboardInterrupt) until training installs its own graceful handler."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def terminate(signum, frame):
        raise Terminated()

    return signal.signal(signal.SIGTERM, terminate)


def _main(command: str, rest: list[str], options: argparse.Namespace) -> int:
    pre = _prescan(command, rest)
    config = read_config_file(pre.config) if pre.config else {}
    if config:
        pre = _prescan(command, rest, config)
    options.debug = pre.debug
    # under torchrun/accelerate launch only the main process talks; the others report warnings and errors
    is_main = int(os.environ.get("RANK", "0")) == 0
    level = getattr(logging, str(pre.log_level).upper(), logging.INFO)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        level=level if is_main else max(level, logging.WARNING))
    from seqtune.source import dataset_source

    dataset, _ = dataset_source(pre.task_name, pre.dataset_name, None, bool(pre.train_file))
    if go_offline_if_unreachable(pre.model_name_or_path, dataset):
        logger.info("The Hugging Face Hub is unreachable: using local files and the local cache only.")
    if command == "report":
        return _report(rest)
    return _run(command, rest, pre.config, config, progress_bars=level <= logging.INFO)


def _report(rest: list[str]) -> int:
    parser = _ArgumentParser(prog="seqtune report", description=COMMANDS["report"], allow_abbrev=False)
    parser.add_argument("output_dir", help="A training run's --output_dir.")
    parser.add_argument("--log_level", default="info")
    parser.add_argument("--debug", action="store_true")
    directory = parser.parse_args(rest).output_dir
    if not os.path.isfile(os.path.join(directory, "seqtune_args.json")) and not os.path.isfile(
            os.path.join(directory, "train_log.jsonl")):
        raise SeqtuneError(f"{directory} is not a seqtune training run (no seqtune_args.json or train_log.jsonl).")
    from seqtune.report import build_report, write_model_card

    from seqtune.output_dir import MANIFEST_FILE, OutputDir

    owned = OutputDir(directory) if os.path.isfile(os.path.join(directory, MANIFEST_FILE)) else None
    if owned:  # a run's own folder: the card and report are seqtune's, for a later resume or overwrite
        owned.record("README.md", "report")
    card = os.path.join(directory, "README.md")
    if os.path.lexists(card):  # a card there may hold a user's edits: never written over
        logger.info("Kept %s (delete it for a new model card).", card)
    elif os.path.isfile(os.path.join(directory, "seqtune_args.json")):
        print(write_model_card(directory))
    print(build_report(directory))
    if owned:
        owned.record_tree("report")
    return 0


# transformers' Trainer / run_glue.py flags seqtune does not take, with what does their job here (difflib's closest
# flag is no help for these: --lr would suggest --lora_r)
TRAINER_FLAGS = {
    "do_train": "`seqtune train` always trains, evaluates on the validation split (--eval_strategy) and saves",
    "do_eval": "`seqtune train` evaluates with --eval_strategy; `seqtune evaluate` scores a saved model",
    "do_predict": "`seqtune predict` predicts a split, a file or one text",
    "evaluation_strategy": "the flag is --eval_strategy (its name in transformers too, since 4.41)",
    "save_strategy": "a checkpoint is written at the end of each epoch, and every --save_steps steps if given",
    "load_best_model_at_end": "the model saved is the best by --metric_for_best_model (without evaluation, the last)",
    "fp16": "use --bf16 (the default where it is fast); float16 would need a loss scaler",
    "lr": "the flag is --learning_rate",
    "per_gpu_train_batch_size": "the flag is --per_device_train_batch_size",
    "per_gpu_eval_batch_size": "the flag is --per_device_eval_batch_size",
    "batch_size": "the flag is --per_device_train_batch_size",
    "epochs": "the flag is --num_train_epochs",
    "logging_dir": "--report_to tensorboard writes to OUTPUT_DIR/runs",
}


def _unknown_arguments(extra: list[str], parser: argparse.ArgumentParser, command: str) -> SeqtuneError:
    """Flags are matched by their exact names (no prefixes): name the unknown ones and the closest real flag."""
    import difflib

    flags = [opt for action in parser._actions for opt in action.option_strings if opt.startswith("--")]
    problems = []
    for arg in [x for x in extra if x.startswith("-")] or extra:
        name = arg.split("=", 1)[0]
        if name.lstrip("-").replace("-", "_") in HIDDEN_FLAGS.get(command, ()):
            problems.append(f"unknown flag {name} for `seqtune {command}` (it is another command's): leave it out.")
            continue
        advice = TRAINER_FLAGS.get(name.lstrip("-").replace("-", "_")) if name.startswith("-") else None
        if advice and f"--{name.lstrip('-').replace('-', '_')}" not in flags:
            problems.append(f"unknown flag {name} for `seqtune {command}`: {advice}.")
            continue
        close = difflib.get_close_matches(name, flags, n=1) if name.startswith("-") else []
        problems.append(f"unknown {'flag' if name.startswith('-') else 'argument'} {name}"
                        + (f" (did you mean {close[0]}?)" if close else "")
                        + f": see `seqtune {command} --help`.")
    return SeqtuneError(*problems)


def _parse(command: str, rest: list[str], config_path: str | None, config: dict) -> list:
    from transformers import HfArgumentParser

    class Parser(_ReportingParser, HfArgumentParser):
        pass

    parser = Parser(_dataclasses_for(command), prog=f"seqtune {command}", description=COMMANDS[command],
                    allow_abbrev=False)
    hidden = set(HIDDEN_FLAGS.get(command, ()))
    for action in [a for a in parser._actions if a.dest in hidden]:  # training's flags: not this command's
        if f"--{action.dest}" in action.option_strings:  # (not --no_X) the field keeps its default
            parser.set_defaults(**{action.dest: action.default})
        parser._remove_action(action)
        for option in action.option_strings:
            parser._option_string_actions.pop(option, None)
        for group in parser._action_groups:
            if action in group._group_actions:
                group._group_actions.remove(action)
    for action in parser._actions:  # a yes/no flag whose default is decided later (None) also works bare: --bf16
        if getattr(action.type, "__name__", "") == "string_to_bool" and action.nargs is None:
            action.nargs, action.const = "?", True
    parser.add_argument("--log_level", default="info", help="Logging level: debug, info, warning, error.")
    parser.add_argument("--config", help="A YAML file of flags (flag: value) shared by the commands: each takes its "
                        "own keys and ignores the others'; flags on the command line override it.")
    if command in ("evaluate", "predict"):  # left out: the length the model was trained with (its config says)
        parser.set_defaults(max_seq_length=None)
    if config:
        apply_config_defaults(parser, config_path, config)
    # look_for_args_file=False: no flags from a stray `<script>.args` file next to the entry point
    *parsed, extra = parser.parse_args_into_dataclasses(rest, return_remaining_strings=True,
                                                        look_for_args_file=False)
    extra = [x for x in extra if x]
    if extra:
        raise _unknown_arguments(extra, parser, command)
    return [p for p in parsed if not isinstance(p, argparse.Namespace)]  # --log_level was read by _prescan


def _run(command: str, rest: list[str], config_path: str | None = None, config: dict | None = None,
         progress_bars: bool = True) -> int:
    try:
        parsed = _parse(command, rest, config_path, config or {})
    except SystemExit as exit_:  # --help
        return int(exit_.code or 0)
    _quiet_libraries(progress_bars)
    from seqtune.validation import validate_data_args  # train, evaluate and predict validate in their recipes
    if command == "train":
        from seqtune.train import train

        results = train(*parsed)
        if int(os.environ.get("RANK", "0")) == 0:
            print(json.dumps(results))
    elif command == "evaluate":
        from seqtune.evaluate import evaluate

        print(json.dumps(evaluate(*parsed)))
    elif command == "predict":
        from seqtune.evaluate import predict

        rows = predict(*parsed)
        if parsed[2].sentence1 is not None or parsed[2].predictions_dir:  # one input's answer, or the summary
            print(json.dumps(rows[0]))
    elif command == "data":
        from seqtune.datastats import show_data

        data_args, _, stats = parsed
        validate_data_args(data_args, {"--per_device_train_batch_size": stats.per_device_train_batch_size,
                                       "--max_tokens_per_batch_stats": stats.max_tokens_per_batch_stats}, {})
        show_data(*parsed)
    elif command == "sweep":
        from seqtune.sweep import sweep

        sweep(*parsed)
    elif command == "export":
        from seqtune.onnx_export import export

        print(json.dumps(export(*parsed)))
    elif command == "serve":
        from seqtune.serve import serve

        serve(*parsed)
    elif command == "bench":
        from seqtune.bench import bench

        data_args, _, options = parsed
        validate_data_args(data_args, {"--steps": options.steps,
                                       "--per_device_train_batch_size": options.per_device_train_batch_size},
                           {"--output_file": options.output_file, "--chart": options.chart})
        bench(*parsed)
    return 0


def _quiet_libraries(progress_bars: bool = True) -> None:
    """transformers/datasets warnings that do not concern the user of a CLI (e.g. the freshly initialised
    classifier head, which fine-tuning is meant to train). Above --log_level info, datasets' progress bars
    ("Generating train split", "Tokenizing") are hidden too, as seqtune's own are; so they are when standard error
    is not a terminal (a log file gets lines, not bars redrawn with escape codes). accelerate's line per file of a
    checkpoint is shown at --log_level debug only."""
    import datasets
    import transformers

    progress_bars = progress_bars and sys.stderr.isatty()
    if not logging.getLogger("seqtune").isEnabledFor(logging.DEBUG):
        for name in ("accelerate.checkpointing", "accelerate.accelerator"):
            logging.getLogger(name).setLevel(logging.WARNING)

    transformers.logging.set_verbosity_error()
    # peft asks a transformers 5 model for `is_gradient_checkpointing`, which warns of its own rename: not the user's
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    transformers.logging.disable_progress_bar()  # "Loading weights" / "Writing model shards" bars
    # datasets logs a parser's failure at ERROR before raising it; seqtune turns the exception into its one line
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)
    (datasets.enable_progress_bars if progress_bars else datasets.disable_progress_bars)()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


if __name__ == "__main__":
    sys.exit(main())
