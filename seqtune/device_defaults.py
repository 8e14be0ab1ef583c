"""What a training run does when the batch flags are left out, by device.

On a CPU, 32 rows grouped by length per batch: fastest per sample there, and what every quality figure uses. A GPU
runs batches of 32 MRPC rows (~50 tokens) launch-bound at 2-3 % MFU (BENCHMARKS.md), so there a batch is sized by a
token budget instead (lengths rounded up to multiples of 8: a few shapes repeat, for tensor cores and compiled
graphs), and the default learning rate grows with the batch by the square-root rule for Adam. The batches do not
depend on the device, so the GPU defaults' quality is measured on any machine with the same flags
(`--max_tokens_per_batch 4096 --pad_to_multiple_of 8`): on MRPC, 4,096 tokens kept the CPU defaults' accuracy over
3 seeds and 8,192 lost 1.9 points (BENCHMARKS.md section 14)."""

from __future__ import annotations

import logging
import math

import numpy as np

logger = logging.getLogger("seqtune")

BATCH_ROWS = 32  # --per_device_train_batch_size when left out (on a GPU only with a token budget given by hand)
GPU_TOKEN_BUDGET = 4096  # --max_tokens_per_batch on a GPU when no batch flag is given (the largest that kept quality)
GPU_PAD_MULTIPLE = 8
# the budget only for a training split that makes at least this many of its batches an epoch: on MRPC 4,096 tokens
# (~102 batches an epoch) kept the 32-row defaults' quality over 3 seeds; 8,192 tokens (~51) lost 1.9 points; on
# MRPC's CV folds (~81) 4,096 tokens lost 1.5 points (one seed); on 500 pairs (15) a point of accuracy and 8.7 of
# macro-F1 (BENCHMARKS.md sections 13 and 14)
MIN_BUDGET_BATCHES = 100
# --dataloader_num_workers on a GPU: loading a 4,096-token batch (collate, pin, copy) took 8.2 ms on the loop's own
# thread beside a bert-base step of 45 ms on an H100 (BENCHMARKS.md section 15); two workers collate meanwhile
GPU_LOADER_WORKERS = 2
# the batch the default learning rates were chosen at, in tokens: 32 rows of ~64 tokens
REFERENCE_BATCH_TOKENS = BATCH_ROWS * 64


def apply_device_defaults(data_args, args, device_type: str, budget_batches: float | None = None) -> bool:
    """Fill in the batch flags left out (in place): on a GPU a token budget and two loader workers, elsewhere 32
    rows collated by the loop itself. `budget_batches`: about how many batches of the GPU's budget the training
    split makes an epoch (`budget_batches_per_epoch`; None: not known, taken as enough); fewer than
    MIN_BUDGET_BATCHES get 32 rows on a GPU too. Returns whether the GPU's token budget was chosen."""
    rows_left_out = args.per_device_train_batch_size is None
    if rows_left_out:
        args.per_device_train_batch_size = BATCH_ROWS  # (ignored by a token budget, which sizes batches itself)
    enough_data = budget_batches is None or budget_batches >= MIN_BUDGET_BATCHES
    budget = (device_type == "cuda" and rows_left_out and data_args.max_tokens_per_batch is None
              and not data_args.streaming and data_args.padding == "longest" and data_args.group_by_length
              and data_args.max_seq_length <= GPU_TOKEN_BUDGET  # (a budget groups by length: not if refused)
              and enough_data)
    if budget:
        data_args.max_tokens_per_batch = GPU_TOKEN_BUDGET
        if data_args.max_seq_length % GPU_PAD_MULTIPLE == 0:  # rounding never passes --max_seq_length (checked
            # against the model's positions); another length is the user's choice, padded to itself
            data_args.pad_to_multiple_of = data_args.pad_to_multiple_of or GPU_PAD_MULTIPLE
    if args.dataloader_num_workers is None:  # (a stream is read by the loop itself)
        gpu = device_type == "cuda" and not data_args.streaming
        args.dataloader_num_workers = GPU_LOADER_WORKERS if gpu else 0
    return budget


def budget_batches_per_epoch(lengths) -> float:
    """About how many batches of the GPU's token budget rows of these lengths make: their lengths rounded up to
    multiples of 8, summed, over the budget (the sampler's own count is within a few percent of it)."""
    lengths = np.asarray(lengths)
    padded = -(-lengths // GPU_PAD_MULTIPLE) * GPU_PAD_MULTIPLE
    return float(padded.sum()) / GPU_TOKEN_BUDGET


def split_budget_batches(dataset, symmetric_copies: int = 1) -> float | None:
    """`budget_batches_per_epoch` of a tokenized split (its `length` column), counted `symmetric_copies` times;
    None for a split without lengths (a stream, whose size is not known)."""
    if "length" not in (dataset.column_names or []):
        return None
    return budget_batches_per_epoch(dataset.with_format("numpy", columns=["length"])["length"]) * symmetric_copies


def token_budget_lr_scale(max_tokens_per_batch: int | None) -> float:
    """The default learning rate's factor for batches of this many tokens: sqrt(tokens / 2,048), the square-root
    rule for Adam against the batch the defaults were chosen at; 1 for batches of rows."""
    return math.sqrt(max_tokens_per_batch / REFERENCE_BATCH_TOKENS) if max_tokens_per_batch else 1.0


def log_small_data(budget_batches: float) -> None:
    logger.info("GPU defaults: the training split makes about %d batches of %d tokens an epoch, fewer than %d: "
                "batches of %d rows instead (a token budget would leave too few optimizer steps)", budget_batches,
                GPU_TOKEN_BUDGET, MIN_BUDGET_BATCHES, BATCH_ROWS)


def log_gpu_defaults(data_args, learning_rate: float) -> None:
    logger.info("GPU defaults: batches of up to %d tokens (--max_tokens_per_batch), lengths padded to multiples of "
                "%d, learning rate %.3g (the square-root rule for the larger batch); --per_device_train_batch_size N "
                "for batches of N rows", data_args.max_tokens_per_batch, data_args.pad_to_multiple_of, learning_rate)
