"""Uniform model soups (`seqtune sweep --soup`; Wortsman et al., 2022): the weights of fine-tuned runs averaged
into one model. A soup costs one model's inference (a seed ensemble costs one pass per member) and is an ordinary
model folder that `from_pretrained`, `evaluate`, `predict`, `serve` and `export` load.

Averaging only makes sense for runs that start from one point: the same checkpoint and the same freshly initialised
head (and pooler), i.e. one --seed, differing in the order of their batches (--data_seed). Runs with other seeds
have unrelated heads, whose mean is no classifier: those are refused (average their logits instead, --ensemble).

A multi-label soup's decision threshold (`seqtune_threshold` in its config) is the mean of its runs'.

Hand-written (a running float32 sum over the state dict): torch's AveragedModel keeps a deep copy of the module
(see ema.py), and no library averages Hugging Face checkpoints short of mergekit, a CLI for LLM merges."""

from __future__ import annotations

import logging
import os

import torch

from seqtune.config import ModelArguments
from seqtune.errors import SeqtuneError
from seqtune.fileio import read_json, remove_tree, usual_file_mode

logger = logging.getLogger("seqtune")


# what sets a run's starting point: its base model (as resolved), the pieces re-initialised, LoRA's adapters, --seed
START_FLAGS = {"model": ("resolved", "reinit_pooler", "reinit_top_layers", "ignore_mismatched_sizes", "torch_dtype"),
               "training": ("seed", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules")}


def starting_point(run: str) -> dict:
    """The flags of `run` (its seqtune_args.json) that set where its training started."""
    flags = read_json(os.path.join(run, "seqtune_args.json")) if os.path.isfile(
        os.path.join(run, "seqtune_args.json")) else None
    if not isinstance(flags, dict) or (flags.get("training") or {}).get("seed") is None:
        raise SeqtuneError(f"{run} holds no seqtune_args.json naming its base model and --seed: a soup needs "
                           "runs that `seqtune train` wrote, to check that they share one initialisation.")
    start = {f"{part}.{key}": (flags.get(part) or {}).get(key) for part, keys in START_FLAGS.items() for key in keys}
    model = start["model.resolved"] or (flags.get("model") or {}).get("model_name_or_path")
    start["model.resolved"] = os.path.normpath(model) if isinstance(model, str) and os.path.isdir(model) else model
    return start


def check_soup_members(run_dirs: list[str]) -> None:
    """Refused unless every run started from one point: one base model, one --seed (one initialisation of the
    head), the same layers re-initialised and the same LoRA adapters."""
    if len(run_dirs) < 2:
        raise SeqtuneError(f"A soup averages at least 2 runs; got {len(run_dirs)}.")
    first = starting_point(run_dirs[0])
    for run in run_dirs[1:]:
        other = starting_point(run)
        differ = [f"{key.split('.')[1].replace('resolved', 'base model')}: {first[key]!r} / {other[key]!r}"
                  for key in first if first[key] != other[key]]
        if differ:
            raise SeqtuneError(f"A soup averages runs that start from one point (one base model and one --seed, so "
                               f"one head initialisation; vary --data_seed instead). {run_dirs[0]} and {run} differ "
                               f"in {'; '.join(differ)}. Runs with other seeds can be combined as a seed ensemble "
                               "(--ensemble).")


class WeightSum:
    """The running float32 sum of several models' floating-point weights (a bfloat16 sum would round the small
    differences between runs away); `mean()` in each weight's own dtype, other tensors as the first model's."""

    def __init__(self, first):
        self.first = first.state_dict()
        self.sums = {k: v.detach().float().clone() for k, v in self.first.items() if v.is_floating_point()}
        self.count = 1

    def add(self, model) -> None:
        state = model.state_dict()
        if state.keys() != self.first.keys() or any(state[k].shape != self.first[k].shape for k in self.first):
            raise SeqtuneError("The runs' models differ in their layers or shapes; a soup averages runs of one "
                               "architecture and label set.")
        for key, total in self.sums.items():
            total += state[key].detach().float()
        self.count += 1

    def mean(self) -> dict[str, torch.Tensor]:
        return {k: (self.sums[k] / self.count).to(v.dtype) if k in self.sums else v for k, v in self.first.items()}


def write_soup(run_dirs: list[str], folder: str, trust_remote_code: bool = False) -> str:
    """Average the finished runs' models into `folder` (built in a hidden staging folder beside it, then renamed: a
    soup is whole or absent), with the first run's tokenizer and config. LoRA runs are averaged merged."""
    from seqtune.finetuned import load_finetuned
    from seqtune.multilabel import members_threshold

    check_soup_members(run_dirs)

    dtype = starting_point(run_dirs[0])["model.torch_dtype"]  # the runs' own (--torch_dtype): the soup keeps it

    def load(run: str):
        return load_finetuned(ModelArguments(model_name_or_path=run, trust_remote_code=trust_remote_code,
                                             torch_dtype=dtype), backend="torch")

    tokenizer, _, model = load(run_dirs[0])
    weights = WeightSum(model)
    for run in run_dirs[1:]:  # one more model in memory at a time
        other = load(run)[2]
        if other.config.id2label != model.config.id2label:
            raise SeqtuneError(f"{run} predicts the labels {list(other.config.id2label.values())}, {run_dirs[0]} "
                               f"{list(model.config.id2label.values())}: a soup averages runs of one label set.")
        weights.add(other)
    model.load_state_dict(weights.mean())
    threshold = members_threshold(run_dirs)
    if threshold is not None:
        model.config.seqtune_threshold = threshold
    staging = os.path.join(os.path.dirname(os.path.abspath(folder)), f".{os.path.basename(folder)}.saving")
    remove_tree(staging)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    usual_file_mode(*[os.path.join(root, f) for root, _, files in os.walk(staging) for f in files])
    remove_tree(folder)
    os.replace(staging, folder)
    logger.info("A soup of %d runs' weights in %s", len(run_dirs), folder)
    return folder
