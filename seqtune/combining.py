"""A sweep's runs combined into one model — a soup (`--soup`) or an ensemble (`--ensemble`) — built, scored on the
split the runs were scored on, and recorded.

The record (`soup_scores.json`, `ensemble_scores.json`, beside the folder) keeps the score with a digest of each
member's `all_results.json` and of every file of the kept folder. A sweep run again (after an interruption, or
finished) finds the combination made from these very runs and reuses it: the runs' weights, dropped once combined,
are not needed again, so nothing is trained twice. A member trained again (other flags, a damaged run), a kept folder
changed or damaged, or an unreadable record: the combination is made anew."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, replace

from seqtune.config import DataArguments, EvalArguments, ModelArguments
from seqtune.errors import SeqtuneError, UnscorableSplit
from seqtune.fileio import read_json, remove_tree, write_json

logger = logging.getLogger("seqtune")


@dataclass(frozen=True)
class Combination:
    what: str  # "soup" or "ensemble"
    folder: str  # where it is written
    keep: bool  # keep its weights after scoring (a fold's soup is only scored)

    @property
    def record(self) -> str:
        return os.path.join(os.path.dirname(self.folder), f"{self.what}_scores.json")


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_digest(folder: str) -> dict[str, str]:
    """Every file under `folder` (relative path -> SHA-256): a kept soup or ensemble as it was recorded."""
    return {os.path.relpath(os.path.join(root, name), folder): _sha256(os.path.join(root, name))
            for root, _, names in os.walk(folder) for name in names}


def members_digest(run_dirs: list[str]) -> dict[str, str] | None:
    """Each run's folder name -> the SHA-256 of its all_results.json; None when a run has none (unfinished)."""
    digests = {}
    for run in run_dirs:
        try:
            digests[os.path.basename(run.rstrip(os.sep))] = _sha256(os.path.join(run, "all_results.json"))
        except OSError:
            return None
    return digests


def recorded_score(combination: Combination, run_dirs: list[str]) -> dict | None:
    """The recorded score of `combination` if it was made from these very runs (and its folder, when kept, is
    still whole), else None."""
    try:
        record = read_json(combination.record) if os.path.isfile(combination.record) else None
    except (OSError, ValueError):  # cut short or damaged: made anew
        return None
    if not isinstance(record, dict) or record.get("members") != members_digest(run_dirs):
        return None
    if combination.keep and record.get("files") != folder_digest(combination.folder):
        return None  # the kept folder is gone, changed or damaged since it was scored
    if combination.what == "ensemble" and combination.keep and not _members_whole(combination.folder):
        return None  # recorded by a version that left adapter runs' members without their weights
    return record.get("result")


def combine(combination: Combination, data_args: DataArguments, model_args: ModelArguments,
            run_dirs: list[str], recorded: dict | None = None) -> dict:
    """The combination's score: `recorded` (its recorded_score, looked up by the caller), or built from the runs
    (which must hold their weights), scored as `seqtune evaluate` scores it, and recorded."""
    if recorded is not None:
        logger.info("Reusing the %s of %s", combination.what, ", ".join(os.path.basename(r) for r in run_dirs))
        return recorded
    try:
        build(combination, run_dirs, model_args.trust_remote_code)
    except SeqtuneError as error:
        raise SeqtuneError(f"making the {combination.what} of {', '.join(run_dirs)}: {error} (delete a damaged run's "
                           "folder and run the same sweep again: that run is trained anew)") from error
    result = {"members": len(run_dirs), **({"folder": combination.folder} if combination.keep else {})}
    try:
        result.update(_score(combination.folder, data_args, model_args))
    except UnscorableSplit as error:  # no labelled validation split: saved, not scored
        logger.warning("The %s in %s was not scored: %s", combination.what, combination.folder, error)
    except SeqtuneError as error:  # it does not load, or cannot be scored: stopped before the runs' weights go
        raise SeqtuneError(f"scoring the {combination.what} made of {', '.join(run_dirs)} (as `seqtune evaluate` "
                           f"scores it) failed: {error} The runs keep their weights: once that is fixed, the same "
                           "sweep makes it again without training them.") from error
    if not combination.keep:
        remove_tree(combination.folder)
    write_json(combination.record, {"members": members_digest(run_dirs), "result": result,
                                    "files": folder_digest(combination.folder) if combination.keep else None})
    return result


def _members_whole(folder: str) -> bool:
    from seqtune.ensemble import ensemble_members

    try:
        ensemble_members(folder)
    except SeqtuneError:
        return False
    return True


def build(combination: Combination, run_dirs: list[str], trust_remote_code: bool) -> None:
    from seqtune.ensemble import write_ensemble
    from seqtune.soup import write_soup

    if combination.what == "soup":
        write_soup(run_dirs, combination.folder, trust_remote_code)
    else:
        write_ensemble(run_dirs, combination.folder)


def _score(folder: str, data_args: DataArguments, model_args: ModelArguments) -> dict:
    from seqtune.evaluate import evaluate

    result = evaluate(replace(data_args, test_file=None), ModelArguments(
        model_name_or_path=folder, trust_remote_code=model_args.trust_remote_code), EvalArguments())
    result.pop("per_class", None)
    return result
