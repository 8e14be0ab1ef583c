"""Seed ensembles (`seqtune sweep --seeds 1 2 3 --ensemble`): the members' logits averaged, saved as one folder
that `evaluate`, `predict` and `serve` load like a model.

    OUTPUT_DIR/ensemble/
        ensemble.json          {"members": ["member-1", ...]}
        config.json, tokenizer files      (the first member's: labels, symmetric pairs, precision; a
                                          multi-label threshold the members' mean)
        member-1/config.json, member-1/model.safetensors, ...

Hand-written (a 20-line module): transformers has no classifier that averages several checkpoints, and
`from_pretrained` cannot load this folder (load one member's subfolder for that)."""

from __future__ import annotations

import os
import shutil

import torch

from seqtune.errors import SeqtuneError
from seqtune.fileio import read_json, remove_tree, usual_file_mode, write_json
from seqtune.lora import ADAPTER_CONFIG
from seqtune.modelfiles import WEIGHT_FILES, has_weights, weight_shards

ENSEMBLE_FILE = "ensemble.json"
# a member's files: its config and a whole model's weights (a sharded one's shards too), or a --save_adapter_only
# run's adapter (whose base model stays where the run found it)
MEMBER_FILES = ("config.json", *WEIGHT_FILES, ADAPTER_CONFIG)


def is_ensemble_folder(path: str) -> bool:
    return os.path.isfile(os.path.join(path, ENSEMBLE_FILE))


class EnsembleClassifier(torch.nn.Module):
    """The mean of the members' logits: a classifier's averaged logits (probabilities from them, as one model's),
    a regressor's averaged score."""

    def __init__(self, members: list):
        super().__init__()
        self.members = torch.nn.ModuleList(members)
        self.config = members[0].config

    def forward(self, **batch):
        from transformers.modeling_outputs import SequenceClassifierOutput

        logits = torch.stack([member(**batch).logits.float() for member in self.members]).mean(0)
        return SequenceClassifierOutput(logits=logits)


def load_ensemble(path: str, load_member) -> EnsembleClassifier:
    """The ensemble in `path`; `load_member(folder)` loads one member's model."""
    return EnsembleClassifier([load_member(os.path.join(path, name)) for name in ensemble_members(path)])


def ensemble_members(path: str) -> list[str]:
    """The member folders `path`/ensemble.json names, each checked to hold a config and weights."""
    again = "make the ensemble again with `seqtune sweep --ensemble` (the same command reuses its runs)"
    try:
        record = read_json(os.path.join(path, ENSEMBLE_FILE))
    except (OSError, ValueError) as error:
        raise SeqtuneError(f"{path}/{ENSEMBLE_FILE} cannot be read ({error}): {again}.") from error
    names = record.get("members") if isinstance(record, dict) else None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise SeqtuneError(f"{path}/{ENSEMBLE_FILE} does not list its members' folders ({{\"members\": "
                           f"[\"member-1\", ...]}}): {again}.")
    missing = [n for n in names if os.sep in n or n in (".", "..")  # (only folders inside the ensemble's own)
               or not os.path.isfile(os.path.join(path, n, "config.json")) or not has_weights(os.path.join(path, n))]
    if missing:
        raise SeqtuneError(f"{path}/{ENSEMBLE_FILE} names member {missing[0]}, which is not a model folder (a config "
                           f"and weights) inside {path}: {again}.")
    return names


def _check_member(run: str) -> None:
    """A run fit to be a member: whole tokenizer and weights files (see check_model_folder), and weights at all."""
    from seqtune.modelfiles import check_model_folder

    check_model_folder(run)  # a member whose weights are damaged is named, not copied into the ensemble
    if not has_weights(run):
        raise SeqtuneError(f"{run} holds no weights (model.safetensors with every shard its index names, or a LoRA "
                           "adapter_model.safetensors): it cannot be an ensemble's member.")


def _copy_member(run: str, member: str) -> None:
    """The run's config and weights (its whole model, with its shards, or its LoRA adapter) into `member`."""
    os.makedirs(member)
    index = os.path.join(run, "model.safetensors.index.json")
    shards = weight_shards(index) if os.path.isfile(index) else []
    for file in [f for f in MEMBER_FILES if os.path.isfile(os.path.join(run, f))] + shards:
        shutil.copy2(os.path.join(run, file), os.path.join(member, file))


def _member_names(run_dirs: list[str]) -> list[str]:
    """member-N for a run in OUT/seed-N (else the run's folder name), made unique (runs in folders of one name)."""
    names: list[str] = []
    for number, run in enumerate(run_dirs):
        name = base = f"member-{os.path.basename(run.rstrip(os.sep)).removeprefix('seed-') or number}"
        while name in names:
            name = f"{base}-{number}" if name == base else f"{name}-{number}"
        names.append(name)
    return names


def write_ensemble(run_dirs: list[str], folder: str) -> str:
    """Copy the finished runs' models into `folder` (built in a hidden staging folder beside it, then renamed: an
    ensemble is whole or absent), with the first run's config and tokenizer at the top."""
    for run in run_dirs:  # every run checked before anything is copied
        _check_member(run)
    staging = os.path.join(os.path.dirname(os.path.abspath(folder)), f".{os.path.basename(folder)}.saving")
    remove_tree(staging)
    os.makedirs(staging)
    names = _member_names(run_dirs)
    for run, name in zip(run_dirs, names):
        _copy_member(run, os.path.join(staging, name))
    from transformers import AutoTokenizer

    from seqtune.multilabel import members_threshold

    first = run_dirs[0]  # its tokenizer (every member's: one base model) and the config that names the labels
    AutoTokenizer.from_pretrained(first).save_pretrained(staging)
    config = read_json(os.path.join(first, "config.json"))
    threshold = members_threshold(run_dirs)
    if threshold is not None:  # multi-label: the members' mean, not the first one's
        config["seqtune_threshold"] = threshold
    write_json(os.path.join(staging, "config.json"), config)
    write_json(os.path.join(staging, ENSEMBLE_FILE), {"members": names})
    usual_file_mode(*[os.path.join(root, f) for root, _, files in os.walk(staging) for f in files])
    remove_tree(folder)
    os.replace(staging, folder)
    return folder
