"""Running a model over a DataLoader without gradients, and turning logits into predictions."""

from __future__ import annotations

import logging
import sys

import numpy as np
import torch
from tqdm.auto import tqdm

from seqtune.batching import build_eval_dataloader, restore_order

logger = logging.getLogger("seqtune")


def predict_logits(model, dataset, collator, batch_size: int, accelerator=None, swapped=None,
                   progress: bool = True) -> np.ndarray:
    """Logits for every row of `dataset`, in dataset order; with `swapped` (the same rows as (text_pair, text)),
    the mean of both orders' logits, for symmetric pair tasks. `progress=False` hides the progress bar."""
    logits = _logits(model, dataset, collator, batch_size, accelerator, progress)
    if swapped is not None:
        logits = (logits + _logits(model, swapped, collator, batch_size, accelerator, progress)) / 2
    return logits


@torch.inference_mode()
def _logits(model, dataset, collator, batch_size: int, accelerator=None, progress: bool = True) -> np.ndarray:
    """Rows are batched longest first (little padding); under several processes each rank scores its share and
    `gather_for_metrics` drops the duplicates."""
    loader, order = build_eval_dataloader(dataset, collator, batch_size)
    if accelerator is not None:  # the module-level function: Accelerator.prepare_data_loader would register
        # every evaluation's loader for save_state, and each checkpoint would carry their sampler states
        from accelerate.data_loader import prepare_data_loader

        loader = prepare_data_loader(loader, accelerator.device, num_processes=accelerator.num_processes,
                                     process_index=accelerator.process_index, put_on_device=True)
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs = []
    quiet = (not progress or (accelerator is not None and not accelerator.is_main_process)
             or logger.getEffectiveLevel() > logging.INFO or not sys.stderr.isatty())  # a log file gets no bar
    for batch in tqdm(loader, desc="Evaluating", unit="batch", leave=False, disable=quiet or len(loader) < 4,
                      mininterval=0.5 if sys.stderr.isatty() else 30):
        batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
        logits = model(**batch).logits.float()
        if accelerator is not None:
            logits = accelerator.gather_for_metrics(logits)
        outputs.append(logits.cpu())
    model.train(was_training)
    logits = torch.cat(outputs).numpy() if outputs else np.zeros((0, model.config.num_labels), np.float32)
    return restore_order(logits, order)


def logits_to_predictions(logits: np.ndarray, is_regression: bool, multi_label: bool = False,
                          threshold: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(predicted ids, their probabilities) for classification; (scores, scores) for regression; for multi-label,
    (0/1 matrix of the labels whose sigmoid reaches `threshold`, the matrix of probabilities)."""
    if is_regression:
        scores = logits[:, 0]
        return scores, scores
    if multi_label:
        probabilities = 1 / (1 + np.exp(-np.asarray(logits, dtype=np.float64)))
        return (probabilities >= threshold).astype(int), probabilities
    shifted = logits - logits.max(axis=-1, keepdims=True)
    probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=-1, keepdims=True)
    predictions = probabilities.argmax(axis=-1)
    return predictions, probabilities[np.arange(len(predictions)), predictions]
