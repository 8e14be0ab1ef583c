"""What a local model folder must hold, and which of its files is damaged: checked before the weights load, so a
folder without tokenizer files (transformers would silently build an empty tokenizer from the config) or with a
truncated `model.safetensors` is one message naming the folder and the file."""

from __future__ import annotations

import json
import os
import struct

from seqtune.errors import SeqtuneError

# Files that define a tokenizer's vocabulary: the fast tokenizer's definition, or the vocabulary a slow one reads
# (WordPiece, BPE, SentencePiece). tokenizer_config.json alone only configures one.
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model",
                   "tokenizer.model", "sentencepiece.model", "source.spm", "vocab.model")
# Files that hold a saved model's weights: a whole model (safetensors, sharded with an index, or pickled) or the
# LoRA adapter of a --save_adapter_only run
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "adapter_model.safetensors")
JSON_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
              "added_tokens.json", "vocab.json", "model.safetensors.index.json")


def weight_shards(index: str) -> list[str]:
    """The shard files a model.safetensors.index.json names ([] when it cannot be read)."""
    try:
        with open(index) as f:
            weight_map = json.load(f).get("weight_map")
    except (OSError, ValueError, AttributeError):
        return []
    return sorted(set(weight_map.values())) if isinstance(weight_map, dict) else []


def has_weights(folder: str) -> bool:
    """`folder` holds a saved model's weights: a whole model (a sharded one with every shard its index names) or a
    LoRA adapter. Whether they are damaged is `safetensors_problem`'s question."""
    index = os.path.join(folder, "model.safetensors.index.json")
    if os.path.isfile(index):
        shards = weight_shards(index)
        return bool(shards) and all(os.path.isfile(os.path.join(folder, shard)) for shard in shards)
    return any(os.path.isfile(os.path.join(folder, name)) for name in WEIGHT_FILES)


def check_model_folder(path: str) -> None:
    """A local model folder has tokenizer files and whole safetensors weights; raises SeqtuneError naming what
    is missing or damaged. Names of Hub models are not checked here (the Hub's files are)."""
    if not os.path.isdir(path):
        return
    names = set(os.listdir(path))
    if "trainer_state.json" in names:
        raise SeqtuneError(f"--model_name_or_path {path} is a training checkpoint, not a saved model: use the run's "
                           "--output_dir once the run has finished, or resume the run with --resume_from_checkpoint.")
    if "INCOMPLETE" in names:
        raise SeqtuneError(f"--model_name_or_path {path} is a training run that has not finished (it holds an "
                           "INCOMPLETE marker): resume it with `seqtune train ... --resume_from_checkpoint`, then use "
                           "it.")
    if not names & set(TOKENIZER_FILES):
        raise SeqtuneError(f"--model_name_or_path {path} has no tokenizer files (none of {', '.join(TOKENIZER_FILES[:3])}"
                           f", ...): save the tokenizer into it (tokenizer.save_pretrained(\"{path}\")) or copy "
                           "those files from the model it was fine-tuned from.")
    problem = _damaged_weights(path)
    if problem:
        raise SeqtuneError(problem)


def _damaged_weights(path: str) -> str | None:
    for name in sorted(n for n in os.listdir(path) if n.endswith(".safetensors")):
        problem = safetensors_problem(os.path.join(path, name))
        if problem:
            return f"--model_name_or_path {path}: {name} is damaged ({problem}): save or download the model again."
    return None


def safetensors_problem(path: str) -> str | None:
    """What is wrong with a .safetensors file's layout (8-byte header length, JSON header, tensors covering the
    rest of the file exactly), or None. Reads only the header: cheap for any model size."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"{size} bytes, shorter than its header"
        (header_size,) = struct.unpack("<Q", head)
        if header_size > size - 8:
            return f"truncated or not safetensors: its header claims {header_size} bytes, the file has {size - 8}"
        try:
            header = json.loads(f.read(header_size))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return "its header is not valid JSON"
    ends = [t["data_offsets"][1] for k, t in header.items() if k != "__metadata__" and isinstance(t, dict)
            and "data_offsets" in t]
    expected = 8 + header_size + max(ends, default=0)
    if expected != size:
        return f"truncated: {size} bytes where its tensors need {expected}" if size < expected else \
            f"{size - expected} bytes more than its tensors"
    return None


def damaged_file_problem(path: str) -> str | None:
    """The first file of a local model folder that cannot be read: JSON that does not parse, safetensors weights
    that do not cover their file, or a tokenizer.json the tokenizers library rejects. Called after a load failed,
    to name the file."""
    if not os.path.isdir(path):
        return None
    for name in JSON_FILES:
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            continue
        try:
            with open(file, encoding="utf-8") as f:
                value = json.load(f)
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            where = f" at line {error.lineno}, column {error.colno}" if isinstance(error, json.JSONDecodeError) else ""
            return f"--model_name_or_path {path}: {name} is damaged (not valid JSON{where}): save or download the " \
                   "model again."
        if not isinstance(value, dict):  # every one of these files holds a JSON object
            return f"--model_name_or_path {path}: {name} is damaged (a JSON {type(value).__name__}, not an object): " \
                   "save or download the model again."
    weights = _damaged_weights(path)
    if weights:
        return weights
    tokenizer_file = os.path.join(path, "tokenizer.json")
    if os.path.isfile(tokenizer_file):
        from tokenizers import Tokenizer

        try:
            Tokenizer.from_file(tokenizer_file)
        except Exception as error:  # tokenizers raises a bare Exception for a definition it cannot read
            return f"--model_name_or_path {path}: tokenizer.json is damaged ({str(error).splitlines()[0]}): save or " \
                   "download the model again."
    return None
