"""The Hub: real loading code for users with a network, one clear line for those without."""

from __future__ import annotations

import os
import socket

HUB_HOST = "huggingface.co"


def is_local(name_or_path: str | None) -> bool:
    return name_or_path is None or os.path.exists(os.path.expanduser(name_or_path))


def hub_reachable(timeout_s: float = 3.0) -> bool:
    """Whether the Hub answers a TCP connection; False at once on a machine without DNS or network."""
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout_s):
            return True
    except OSError:
        return False


def go_offline_if_unreachable(*names: str | None) -> bool:
    """Before datasets/transformers are imported: when a name refers to the Hub and the Hub cannot be
    reached, switch the libraries to offline mode, so they use their local cache at once instead of
    retrying the network for a minute. Returns True when offline mode was switched on here."""
    if os.environ.get("HF_HUB_OFFLINE") or all(is_local(name) for name in names):
        return False
    if hub_reachable():
        return False
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    return True


def offline_hint(kind: str, name: str) -> str:
    """The fix for a Hub load that failed, naming the local alternatives."""
    if kind == "dataset":
        return (
            f"could not load dataset '{name}' from the Hugging Face Hub ({HUB_HOST} is unreachable and it is not in "
            "the local cache). Use local data instead: --dataset_name PATH/TO/FOLDER (laid out like a Hub dataset, "
            "e.g. a copy of glue with --dataset_config_name mrpc) or --train_file/--validation_file/--test_file "
            "(CSV, TSV, JSON, JSONL, Parquet)."
        )
    return (
        f"could not load model '{name}' from the Hugging Face Hub ({HUB_HOST} is unreachable and it is not in the "
        "local cache). Use a local model instead: --model_name_or_path PATH/TO/FOLDER (a saved model), or leave "
        "--model_name_or_path out to use the embedded all-MiniLM-L6-v2."
    )
