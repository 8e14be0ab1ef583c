"""Uniform model soups (`seqtune sweep --soup`; Wortsman et al., 2022): the weights of fine-tuned runs averaged
into one model. A soup costs one model's inference (a seed ensemble costs one pass per member) and is an ordinary
model folder that `from_pretrained`, `evaluate`, `predict`, `serve` and `export` load.

Averaging only makes sense for runs that start from one point: the same checkpoint and the same freshly initialised
head (and pooler), i.e. one --seed, differing in the order of their batches (--data_seed). Runs with other seeds
have unrelated heads, whose mean is no classifier: those are refused (average their logits instead, --ensemble).

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


def check_soup_members(run_dirs: list[str]) -> None:
    """Refused unless every run recorded one base model and one --seed (one initialisation of the head)."""
    if len(run_dirs) < 2:
        raise SeqtuneError(f"A soup averages at least 2 runs; got {len(run_dirs)}.")
    starts = {}
    for run in run_dirs:
        flags = read_json(os.path.join(run, "seqtune_args.json")) or {}
        model = (flags.get("model") or {}).get("model_name_or_path")
        seed = (flags.get("training") or {}).get("seed")
        if model is None or seed is None:
            raise SeqtuneError(f"{run} holds no seqtune_args.json naming its base model and --seed: a soup needs "
                               "runs that `seqtune train` wrote, to check that they share one initialisation.")
        starts[run] = (model, seed)
    if len(set(starts.values())) > 1:
        listed = ", ".join(f"{os.path.basename(r.rstrip(os.sep))}: {m} --seed {s}" for r, (m, s) in starts.items())
        raise SeqtuneError(f"A soup averages runs that share one base model and one --seed (one head "
                           f"initialisation; vary --data_seed instead). These differ: {listed}. Runs with other "
                           "seeds can be combined as a seed ensemble (--ensemble).")


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

    check_soup_members(run_dirs)

    def load(run: str):
        return load_finetuned(ModelArguments(model_name_or_path=run, trust_remote_code=trust_remote_code),
                              backend="torch")

    tokenizer, _, model = load(run_dirs[0])
    weights = WeightSum(model)
    for run in run_dirs[1:]:  # one more model in memory at a time
        other = load(run)[2]
        if other.config.id2label != model.config.id2label:
            raise SeqtuneError(f"{run} predicts the labels {list(other.config.id2label.values())}, {run_dirs[0]} "
                               f"{list(model.config.id2label.values())}: a soup averages runs of one label set.")
        weights.add(other)
    model.load_state_dict(weights.mean())
    staging = os.path.join(os.path.dirname(os.path.abspath(folder)), f".{os.path.basename(folder)}.saving")
    remove_tree(staging)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    usual_file_mode(*[os.path.join(root, f) for root, _, files in os.walk(staging) for f in files])
    remove_tree(folder)
    os.replace(staging, folder)
    logger.info("A soup of %d runs' weights in %s", len(run_dirs), folder)
    return folder
