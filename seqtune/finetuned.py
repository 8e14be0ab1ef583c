"""Loading a fine-tuned model for inference: a saved model, a LoRA adapter folder (merged onto its base) or an
exported ONNX folder (`seqtune export`), with its tokenizer and config."""

from __future__ import annotations

import logging

from seqtune.config import ModelArguments
from seqtune.ensemble import is_ensemble_folder, load_ensemble
from seqtune.errors import SeqtuneError
from seqtune.lora import adapter_base, is_adapter_folder, load_adapter
from seqtune.model_family import match_model_to_tokenizer
from seqtune.modeling import load_config, load_model, load_tokenizer, resolve_model_path
from seqtune.onnx_export import OnnxClassifier, is_onnx_folder

logger = logging.getLogger("seqtune")


def pick_backend(path: str, backend: str | None) -> str:
    """--backend, else onnx for a folder that holds only an ONNX model, else torch."""
    onnx_folder = is_onnx_folder(path)
    if backend is None:
        return "onnx" if onnx_folder and not _has_torch_weights(path) else "torch"
    if backend == "onnx" and not onnx_folder:
        raise SeqtuneError(f"--backend onnx: {path} holds no model.onnx; make one with `seqtune export "
                           f"--model_name_or_path {path} --output_dir DIR`, then pass that DIR.")
    return backend


def _has_torch_weights(path: str) -> bool:
    import os

    return any(os.path.isfile(os.path.join(path, name)) for name in
               ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "adapter_config.json"))


def load_finetuned(model_args: ModelArguments, backend: str | None = None):
    """(tokenizer, config, model). The tokenizer loads first: it checks the model folder's files (a damaged or
    missing one is named before the weights load)."""
    path = resolve_model_path(model_args.model_name_or_path)
    tokenizer = load_tokenizer(path, model_args.trust_remote_code)
    config = load_config(path, model_args.trust_remote_code)
    if pick_backend(path, backend) == "onnx":
        logger.info("Backend: ONNX Runtime (%s)", path)
        return tokenizer, config, OnnxClassifier(path, config)
    if is_ensemble_folder(path):  # `seqtune sweep --ensemble`: the members' logits averaged
        def member(folder: str):
            model = _load_torch_model(folder, load_config(folder, model_args.trust_remote_code), model_args)
            match_model_to_tokenizer(model, tokenizer)
            return model

        ensemble = load_ensemble(path, member)
        logger.info("An ensemble of %d models (%s): their logits are averaged", len(ensemble.members), path)
        return tokenizer, config, ensemble
    model = _load_torch_model(path, config, model_args)
    match_model_to_tokenizer(model, tokenizer)
    return tokenizer, config, model


def _load_torch_model(path: str, config, model_args: ModelArguments):
    """A saved model, or a LoRA adapter folder's base model with the adapter merged in."""
    if is_adapter_folder(path):  # --save_adapter_only: the base may differ in shape (another head, embeddings grown
        # by a pad token): the adapter holds those trained weights
        return load_adapter(load_model(adapter_base(path), config, model_args.trust_remote_code,
                                       model_args.allow_pickle_weights, ignore_mismatched_sizes=True,
                                       dtype=model_args.torch_dtype), path)
    return load_model(path, config, model_args.trust_remote_code, model_args.allow_pickle_weights,
                      dtype=model_args.torch_dtype)
