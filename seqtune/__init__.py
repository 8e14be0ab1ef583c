"""seqtune: fine-tune pre-trained transformers (encoders, decoder LMs, LoRA) for text and text-pair classification.

The public pieces are importable from here; they load lazily so that `seqtune --help` is fast and the CLI can
switch the Hub libraries to offline mode before they are imported."""

from importlib import import_module

__version__ = "0.1.0"

_EXPORTS = {
    "Batching": "batching", "build_collator": "batching", "build_train_dataloader": "batching",
    "padding_strategies": "batching", "pad_fraction": "batching",
    "DataArguments": "config", "EvalArguments": "config", "ModelArguments": "config", "TrainingArguments": "config",
    "load_raw_datasets": "data", "make_tokenize_fn": "data", "prepare_labels": "data", "resolve_columns": "data",
    "tokenize_datasets": "data", "uses_token_type_ids": "model_family",
    "SeqtuneError": "errors", "compute_metrics": "metrics",
    "build_optimizer": "optim", "train": "train", "evaluate": "evaluate", "predict": "evaluate",
    "load_model": "modeling", "load_tokenizer": "modeling", "load_config": "modeling",
    "resolve_model_path": "modeling", "GLUE_TASKS": "tasks", "TaskSpec": "tasks",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(f"seqtune.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'seqtune' has no attribute {name!r}")
