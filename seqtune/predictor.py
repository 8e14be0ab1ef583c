"""A fine-tuned classifier ready for inference on lists of texts: tokenize, batch by length, run (torch or ONNX
Runtime), average both orders of a symmetric pair, and turn logits into labels and probabilities. Used by the
server, by chunked batch prediction and by one-input / standard-input prediction."""

from __future__ import annotations

import contextlib
import logging

import numpy as np

from seqtune.data import check_max_length, trained_max_seq_length
from seqtune.errors import SeqtuneError
from seqtune.inference import logits_to_predictions
from seqtune.model_family import model_inputs

logger = logging.getLogger("seqtune")


class Predictor:
    """`logits(texts, pairs)` in the input order; rows are tokenized without padding, sorted longest first and
    padded per batch of `batch_size` (little padding, as evaluation does)."""

    def __init__(self, tokenizer, config, model, max_length: int | None, batch_size: int = 64, bf16: bool = False):
        self.tokenizer, self.config, self.model = tokenizer, config, model
        max_length = max_length or trained_max_seq_length(config)  # None: the length the model was trained with
        self.max_length, self.batch_size, self.bf16 = max_length, batch_size, bf16
        self.inputs = list(model_inputs(tokenizer, config))
        self.symmetric = bool(getattr(config, "seqtune_symmetric_pairs", False))
        check_max_length(tokenizer, config, max_length, pair=False)
        model.eval()
        if bf16:
            _linear_weights_in_bf16(model)

    def logits(self, texts: list[str], pairs: list[str] | None = None) -> np.ndarray:
        if pairs is None or not self.symmetric:
            return self._logits(texts, pairs)
        # as the model was trained and evaluated: the mean of both orders, both in one length-sorted pass
        both = self._logits(list(texts) + list(pairs), list(pairs) + list(texts))
        return (both[:len(texts)] + both[len(texts):]) / 2

    def _logits(self, texts: list[str], pairs: list[str] | None) -> np.ndarray:
        import torch

        encoded = self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length)
        columns = [name for name in self.inputs if name in encoded]
        order = np.argsort([-len(ids) for ids in encoded["input_ids"]], kind="stable")
        out = np.zeros((len(texts), self.config.num_labels), np.float32)
        device = _device_of(self.model)
        with torch.inference_mode(), inference_autocast(self.model, self.bf16):
            for start in range(0, len(order), self.batch_size):
                rows = order[start:start + self.batch_size]
                batch = self.tokenizer.pad({k: [encoded[k][i] for i in rows] for k in columns}, return_tensors="pt")
                batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
                out[rows] = self.model(**batch).logits.float().cpu().numpy()
        return out

    def predict(self, texts: list[str], pairs: list[str] | None = None) -> list[dict]:
        """The prediction file's fields per row (see `prediction_fields`)."""
        return prediction_fields(self.logits(texts, pairs), self.config)

    def answer(self, texts: list[str], pairs: list[str] | None = None) -> list[dict]:
        """The server's answer per row: label name and id with its probability and every label's probability;
        the labels at or above the threshold for multi-label; the score for regression."""
        return answer_fields(self.logits(texts, pairs), self.config)


def compile_for_inference(predictor: Predictor, max_rows: int) -> bool:
    """torch.compile with dynamic shapes, warmed up over the batch sizes and lengths a server sees, so that no
    request pays for compilation. Where compilation fails the eager model stays (False, with a warning)."""
    import torch

    eager = predictor.model
    try:
        predictor.model = torch.compile(eager, dynamic=True)
        for rows in sorted({1, 2, max_rows}):
            for words in (3, 30):
                predictor.logits(["word " * words] * rows, ["other words"] * rows)
                predictor.logits(["word " * words] * rows)  # single texts: other batch sizes for symmetric models
    except Exception as error:  # inductor needs a C++ compiler and supports most, not all, models
        logger.warning("torch.compile failed (%s: %s); serving the eager model.", type(error).__name__,
                       str(error).strip().splitlines()[0][:200] if str(error).strip() else "")
        predictor.model = eager
        return False
    return True


def inference_autocast(model, bf16: bool):
    """bfloat16 autocast on the model's device for --bf16 (a torch model; ONNX Runtime runs its graph as exported)."""
    import torch

    if not bf16 or not isinstance(model, torch.nn.Module):
        return contextlib.nullcontext()
    return torch.autocast(device_type=_device_of(model).type, dtype=torch.bfloat16)


def eval_bf16(requested: bool | None, config, model) -> bool:
    """--bf16 of evaluate and predict: as asked; else as the model was evaluated while it trained (seqtune records
    it in config.json: bfloat16 autocast when it trained with --bf16), so `evaluate` repeats the run's figures;
    float32 for any other model, and for ONNX Runtime, which runs its graph as exported."""
    import torch

    if requested and not isinstance(model, torch.nn.Module):
        raise SeqtuneError("--bf16 is bfloat16 autocast for the torch backend; this model runs on ONNX Runtime as "
                           "it was exported: leave out --bf16, or use the model's torch folder.")
    if requested is not None:
        return requested
    return isinstance(model, torch.nn.Module) and evaluated_in_bf16(config)


def evaluated_in_bf16(config) -> bool:
    """Whether seqtune evaluated this model in bfloat16 while training it, and bfloat16 is fast here too (where it
    is emulated, float32: faster, and the figures differ from training's in the last digits only)."""
    if not getattr(config, "seqtune_eval_bf16", False):
        return False
    if not fast_bf16_here():
        logger.info("The model was evaluated in bfloat16 while training; bfloat16 is emulated here, so it runs in "
                    "float32 (--bf16 to match training's figures to the last digit)")
        return False
    return True


def fast_bf16_here() -> bool:
    """Whether bfloat16 is fast where a model would run here: a GPU that supports it, or a CPU with AVX-512 BF16 or
    AMX (elsewhere autocast emulates it, slower than float32)."""
    import torch

    if torch.cuda.is_available():  # Ampere or later: older GPUs emulate bfloat16
        return torch.cuda.get_device_capability()[0] >= 8
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def _linear_weights_in_bf16(model) -> None:
    """Autocast casts each linear layer's float32 weight to bfloat16 on every call (for a small model that copy
    costs as much as the product at batch 1); stored in bfloat16 once, autocast finds them cast. The numbers are
    autocast's: layer norms, softmax and the rest still run in float32."""
    import torch

    if isinstance(model, torch.nn.Module):
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.to(torch.bfloat16)


def to_local_device(model) -> None:
    """On a machine with GPUs, the GPU of this process (LOCAL_RANK under torchrun); on CPUs the model stays."""
    import os

    import torch

    if isinstance(model, torch.nn.Module) and torch.cuda.is_available():
        model.to(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")


def _device_of(model):
    return next(model.parameters()).device


def _label_names(config) -> list[str]:
    return [str(config.id2label[i]) for i in range(config.num_labels)]


def prediction_fields(logits: np.ndarray, config) -> list[dict]:
    """Per row: the label name and id with its probability; for multi-label, the names and ids of the labels at or
    above the model's threshold and every label's probability; for regression, the score."""
    multi_label = getattr(config, "problem_type", None) == "multi_label_classification"
    threshold = getattr(config, "seqtune_threshold", None) or 0.5
    predictions, probabilities = logits_to_predictions(logits, config.num_labels == 1, multi_label, threshold)
    if config.num_labels == 1:
        return [{"score": float(p)} for p in predictions]
    if multi_label:
        names = _label_names(config)
        return [{"prediction": ",".join(n for n, on in zip(names, row) if on),
                 "prediction_id": ",".join(str(i) for i, on in enumerate(row) if on),
                 "probabilities": ",".join(f"{q:.6f}" for q in probs)}
                for row, probs in zip(predictions, probabilities)]
    return [{"prediction": config.id2label[int(p)], "prediction_id": int(p), "probability": round(float(q), 6)}
            for p, q in zip(predictions, probabilities)]


def answer_fields(logits: np.ndarray, config) -> list[dict]:
    if config.num_labels == 1:
        return [{"score": float(row[0])} for row in logits]
    names = _label_names(config)
    if getattr(config, "problem_type", None) == "multi_label_classification":
        threshold = getattr(config, "seqtune_threshold", None) or 0.5
        chosen, probabilities = logits_to_predictions(logits, False, True, threshold)
        return [{"labels": [n for n, on in zip(names, row) if on], "label_ids": [i for i, on in enumerate(row) if on],
                 "probabilities": dict(zip(names, map(float, probs)))} for row, probs in zip(chosen, probabilities)]
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=-1, keepdims=True)
    return [{"label": names[int(p.argmax())], "label_id": int(p.argmax()), "probability": float(p.max()),
             "probabilities": dict(zip(names, map(float, p)))} for p in probabilities]
