"""LoRA fine-tuning through peft: which layers get adapters, which train fully, and how the result is saved (merged
into a plain transformers model, or as the adapter alone) and loaded again."""

from __future__ import annotations

import json
import logging
import os

from seqtune.errors import SeqtuneError

logger = logging.getLogger("seqtune")

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_FILES = (ADAPTER_CONFIG, "adapter_model.safetensors")


def head_modules(model) -> list[str]:
    """What the classifier adds on top of the pre-trained model (classifier, score, pre_classifier, ModernBERT's
    head, DeBERTa's pooler) and the encoder's own [CLS] pooler: these train fully, as in full fine-tuning."""
    heads = [name for name, child in model.named_children()
             if name != model.base_model_prefix and next(child.parameters(), None) is not None]
    base = getattr(model, model.base_model_prefix, None)
    if base is not None and getattr(base, "pooler", None) is not None:
        heads.append(f"{model.base_model_prefix}.pooler")
    return heads


def linear_layers(model, heads: list[str]) -> list[str]:
    """Every linear projection of the pre-trained body (attention and MLP; GPT-2's Conv1D too), by full name: the
    default LoRA targets, the same rule for every family instead of a table of names."""
    import torch
    from transformers.pytorch_utils import Conv1D

    return [name for name, module in model.named_modules()
            if isinstance(module, (torch.nn.Linear, Conv1D)) and not any(
                name == head or name.startswith(head + ".") for head in heads)]


def apply_lora(model, r: int, alpha: float | None, dropout: float, target_modules: list[str] | None):
    """The model wrapped by peft with LoRA adapters (rank r, scale alpha/r) on `target_modules` (default: every
    linear layer of the body); the heads train fully, everything else is frozen."""
    from peft import LoraConfig, TaskType, get_peft_model

    heads = head_modules(model)
    targets = target_modules or linear_layers(model, heads)
    if not targets:
        raise SeqtuneError(f"{type(model).__name__} has no linear layers for LoRA: name the layers to adapt with "
                           "--lora_target_modules, or fine-tune fully (no --lora_r).")
    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=r, lora_alpha=alpha if alpha is not None else 2 * r,
                        lora_dropout=dropout, target_modules=targets, modules_to_save=list(heads))
    try:
        model = get_peft_model(model, config)
    except (ValueError, TypeError) as error:  # names that match nothing, or a head
        names = sorted({name.rsplit(".", 1)[-1] for name in linear_layers(model, heads)})
        raise SeqtuneError(f"--lora_target_modules {' '.join(target_modules or [])}: peft could not adapt them "
                           f"({str(error).splitlines()[0]}). The linear layers of {type(model).__name__} are named: "
                           f"{', '.join(names)}.") from error
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("LoRA: rank %d, alpha %s, dropout %s on %d layers (%s); trained fully: %s; %s trainable parameters",
                r, config.lora_alpha, dropout, len(model.targeted_module_names),
                ", ".join(sorted({n.rsplit(".", 1)[-1] for n in model.targeted_module_names})), ", ".join(heads),
                f"{trainable:,}")
    return model


def is_peft_model(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def merged_model(model):
    """A plain transformers model with the adapters folded into the weights (what `from_pretrained` reloads), in
    float32: added to bfloat16 weights, the adapters' small updates would round away."""
    import torch

    if any(p.dtype != torch.float32 for p in model.parameters()):
        logger.info("Merging the adapters in float32 (the model is saved in float32, not in its loaded dtype)")
        model = model.float()
    return model.merge_and_unload()


def save_adapter(model, folder: str) -> None:
    """Only the adapter and the fully trained heads (adapter_model.safetensors + adapter_config.json), naming a
    local base model by its absolute path (it is loaded from there, whatever the working directory then)."""
    for config in model.peft_config.values():
        if config.base_model_name_or_path and os.path.isdir(config.base_model_name_or_path):
            config.base_model_name_or_path = os.path.abspath(config.base_model_name_or_path)
    model.save_pretrained(folder, safe_serialization=True)
    card = os.path.join(folder, "README.md")  # peft's own card: seqtune writes the run's model card
    if os.path.exists(card):
        os.remove(card)


def is_adapter_folder(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, ADAPTER_CONFIG))


def adapter_base(path: str) -> str:
    """The model the adapter was trained on (a Hub id or a local folder), which must still be there."""
    try:
        with open(os.path.join(path, ADAPTER_CONFIG)) as f:
            base = json.load(f)["base_model_name_or_path"]
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise SeqtuneError(f"{path}/{ADAPTER_CONFIG} is damaged ({type(error).__name__}: {error}): save the adapter "
                           "again.") from error
    if os.path.isabs(base) and not os.path.isdir(base):
        raise SeqtuneError(f"{path} holds a LoRA adapter for the base model {base}, which is no longer there: put the "
                           f"base model back, or write its new place into {path}/{ADAPTER_CONFIG} "
                           "(base_model_name_or_path).")
    return base


def refuse_adapter_as_base(path: str) -> None:
    """Fine-tuning starts from a whole model; an adapter folder is only a difference to its base."""
    if is_adapter_folder(path):
        raise SeqtuneError(f"--model_name_or_path {path} holds only a LoRA adapter (saved with --save_adapter_only): "
                           f"fine-tune its base model ({adapter_base(path)}) instead, or save runs merged (without "
                           "--save_adapter_only) to fine-tune them further.")


def load_adapter(base_model, path: str):
    """The base model with the saved adapter, merged for inference speed."""
    from peft import PeftModel

    return PeftModel.from_pretrained(base_model, path).merge_and_unload()
