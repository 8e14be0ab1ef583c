"""The `seqtune` command line: `seqtune {train,evaluate,predict,data,bench} [flags]`.

Flags come from the typed dataclasses in `seqtune.config` (help generated from their docstrings)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from seqtune.hub import go_offline_if_unreachable

COMMANDS = {
    "train": "fine-tune a model and save it with its metrics",
    "evaluate": "score a fine-tuned model on a labelled split",
    "predict": "predict a split, a file, or one input",
    "data": "show the data: splits, labels, token lengths, padding cost per strategy",
    "bench": "measure training throughput per padding strategy (and against transformers' Trainer)",
    "report": "rebuild the model card and the report (plots + HTML) of a training run: seqtune report DIR",
    "sweep": "train several seeds (mean ± std of every metric) or search hyperparameters with Optuna",
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
    from seqtune.bench import BenchArguments

    return common + [BenchArguments]


def _prescan(argv: list[str]) -> argparse.Namespace:
    """The few flags needed before transformers/datasets are imported (Hub reachability, logging)."""
    pre = argparse.ArgumentParser(add_help=False)
    for flag in ("--model_name_or_path", "--dataset_name", "--task_name", "--train_file"):
        pre.add_argument(flag)
    pre.add_argument("--log_level", default="info")
    pre.add_argument("--debug", action="store_true")
    return pre.parse_known_args(argv)[0]


def _bare_resume_means_latest(args: list[str]) -> list[str]:
    """`--resume_from_checkpoint` without a path (as in transformers' Trainer): the newest checkpoint."""
    args = list(args)
    for i, arg in enumerate(args):
        if arg in ("--resume_from_checkpoint", "--resume-from-checkpoint") and (
                i + 1 == len(args) or args[i + 1].startswith("--")):
            args.insert(i + 1, "latest")
    return args


def _expand_config(args: list[str]) -> list[str]:
    """`--config run.yaml`: its keys become flags placed before the command line's, so the command line wins."""
    if "--config" not in args:
        return args
    i = args.index("--config")
    if i + 1 >= len(args):
        raise SystemExit("seqtune: error: --config needs a YAML file")
    path = args[i + 1]
    import yaml

    try:
        with open(path) as f:
            values = yaml.safe_load(f) or {}
    except OSError as error:
        raise SystemExit(f"seqtune: error: --config {path}: {error.strerror}") from error
    if not isinstance(values, dict):
        raise SystemExit(f"seqtune: error: --config {path} must be a mapping of flag names to values")
    flags = []
    for key, value in values.items():
        if value is None:
            continue
        flags += [f"--{key}", str(value).lower() if isinstance(value, bool) else str(value)]
    return flags + args[:i] + args[i + 2:]


def main(argv: list[str] | None = None) -> int:
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
    command, rest = argv[0], _bare_resume_means_latest(_expand_config(argv[1:]))
    pre = _prescan(rest)
    # under torchrun/accelerate launch only the main process talks; the others report warnings and errors
    is_main = int(os.environ.get("RANK", "0")) == 0
    level = getattr(logging, pre.log_level.upper(), logging.INFO)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        level=level if is_main else max(level, logging.WARNING))
    dataset = pre.dataset_name or ("glue" if pre.task_name and not pre.train_file else None)
    if go_offline_if_unreachable(pre.model_name_or_path, dataset):
        logger.info("The Hugging Face Hub is unreachable: using local files and the local cache only.")
    from seqtune.errors import SeqtuneError

    try:
        return _run(command, rest)
    except SeqtuneError as error:
        if pre.debug:
            raise
        print(f"seqtune {command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"seqtune {command}: interrupted", file=sys.stderr)
        return 130


def _run(command: str, rest: list[str]) -> int:
    from transformers import HfArgumentParser

    from seqtune.errors import SeqtuneError

    if command == "report":
        parser = argparse.ArgumentParser(prog="seqtune report", description=COMMANDS[command])
        parser.add_argument("output_dir", help="A training run's --output_dir.")
        parser.add_argument("--log_level", default="info")
        parser.add_argument("--debug", action="store_true")
        directory = parser.parse_args(rest).output_dir
        if not os.path.isfile(os.path.join(directory, "seqtune_args.json")) and not os.path.isfile(
                os.path.join(directory, "train_log.jsonl")):
            raise SeqtuneError(f"{directory} is not a seqtune training run (no seqtune_args.json or train_log.jsonl).")
        from seqtune.report import build_report, write_model_card

        if os.path.isfile(os.path.join(directory, "seqtune_args.json")):
            print(write_model_card(directory))
        print(build_report(directory))
        return 0

    parser = HfArgumentParser(_dataclasses_for(command), prog=f"seqtune {command}",
                              description=COMMANDS[command])
    parser.add_argument("--log_level", default="info", help="Logging level: debug, info, warning, error.")
    parser.add_argument("--config", help="A YAML file of flags (flag: value); flags on the command line override it.")
    try:
        *parsed, extra = parser.parse_args_into_dataclasses(rest, return_remaining_strings=True)
    except SystemExit as exit_:  # argparse already printed what is wrong
        return int(exit_.code or 0)
    parsed = [p for p in parsed if not isinstance(p, argparse.Namespace)]  # --log_level was read by _prescan
    extra = [x for x in extra if x]
    if extra:
        raise SeqtuneError(f"unknown arguments {extra}: see `seqtune {command} --help`.")
    _quiet_libraries()
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
        if parsed[2].sentence1 is not None:
            print(json.dumps(rows[0]))
    elif command == "data":
        from seqtune.datastats import show_data

        show_data(*parsed)
    elif command == "sweep":
        from seqtune.sweep import sweep

        sweep(*parsed)
    elif command == "bench":
        from seqtune.bench import bench

        bench(*parsed)
    return 0


def _quiet_libraries() -> None:
    """transformers/datasets warnings that do not concern the user of a CLI (e.g. the freshly initialised
    classifier head, which fine-tuning is meant to train)."""
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # "Loading weights" / "Writing model shards" bars
    datasets.logging.set_verbosity_error()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


if __name__ == "__main__":
    sys.exit(main())
