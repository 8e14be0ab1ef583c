"""Batching: the padding strategy is chosen here, in one place, so train, evaluate and bench share it.

Strategies by name (`PADDING_STRATEGIES`), each a `Batching`:
  max_length    every batch padded to --max_seq_length (fixed shapes: TPU/XLA, compiled graphs)
  dynamic       rows in random order, each batch padded to its longest row (the course's default)
  grouped       rows of similar length batched together, group order shuffled (less padding)
  token_budget  like grouped, but each batch holds as many rows as fit a token budget
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler
from transformers import DataCollatorWithPadding
from transformers.trainer_pt_utils import LengthGroupedSampler

# batches in page-locked memory where a GPU reads them: copies to the device then overlap the step (non_blocking)
PIN_MEMORY = torch.cuda.is_available()


@dataclass(frozen=True)
class Batching:
    """How training rows are grouped into batches and padded."""

    padding: str = "longest"  # "longest" (dynamic) or "max_length"
    pad_to_multiple_of: int | None = None
    group_by_length: bool = False
    max_tokens_per_batch: int | None = None


def padding_strategies(max_seq_length: int, max_tokens_per_batch: int = 4096) -> dict[str, Batching]:
    """The named strategies a benchmark sweeps."""
    return {
        "max_length": Batching(padding="max_length"),
        "dynamic": Batching(),
        "grouped": Batching(group_by_length=True),
        "token_budget": Batching(max_tokens_per_batch=max_tokens_per_batch, pad_to_multiple_of=8),
    }


def validate_batching(batching: Batching, max_seq_length: int) -> list[str]:
    problems = []
    if batching.padding not in ("longest", "max_length"):
        problems.append(f"--padding '{batching.padding}' is unknown: use longest (dynamic, the default) or "
                        "max_length (fixed shapes).")
    if batching.pad_to_multiple_of is not None and batching.pad_to_multiple_of <= 0:
        problems.append(f"--pad_to_multiple_of must be a positive number of tokens, got {batching.pad_to_multiple_of}.")
    if batching.max_tokens_per_batch is not None and batching.max_tokens_per_batch < max_seq_length:
        problems.append(f"--max_tokens_per_batch {batching.max_tokens_per_batch} is below --max_seq_length "
                        f"{max_seq_length}: a single longest row would not fit; raise it or leave it out.")
    return problems


def build_collator(tokenizer, padding: str, max_length: int, pad_to_multiple_of: int | None = None):
    """`DataCollatorWithPadding`, dynamic ("longest") or to a fixed length ("max_length")."""
    return DataCollatorWithPadding(
        tokenizer=tokenizer,
        padding=padding,
        max_length=max_length if padding == "max_length" else None,
        pad_to_multiple_of=pad_to_multiple_of,
    )


def padded_length(longest: int, padding: str, max_length: int, pad_to_multiple_of: int | None) -> int:
    """The length a batch whose longest row is `longest` is padded to (what the collator will do)."""
    length = max_length if padding == "max_length" else longest
    if pad_to_multiple_of:
        length = math.ceil(length / pad_to_multiple_of) * pad_to_multiple_of
    return length


class TokenBudgetBatchSampler(Sampler[list[int]]):
    """Batches sized by tokens: each holds as many rows of similar length as fit `max_tokens` once padded.

    Written by hand because no kept library offers it for PyTorch DataLoaders (fairseq's `batch_by_size` is the
    model). Rows are shuffled, cut into mega-batches of ~64 batches' worth, sorted by length inside each, then
    packed greedily; the order of the batches is shuffled again so lengths do not come in a trend.
    """

    def __init__(self, lengths: Sequence[int], max_tokens: int, pad_to_multiple_of: int | None = None, seed: int = 0):
        self.lengths = np.asarray(lengths)
        self.max_tokens = max_tokens
        self.pad_to_multiple_of = pad_to_multiple_of
        self.seed = seed
        self.epoch = 0
        self._batches = self._make_batches(self.epoch)

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self.epoch = epoch
            self._batches = self._make_batches(epoch)

    def _make_batches(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.lengths))
        mean_rows = max(1, self.max_tokens // max(1, int(self.lengths.mean())))
        mega = max(1, 64 * mean_rows)
        batches = []
        for start in range(0, len(order), mega):
            chunk = order[start:start + mega]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batch, longest = [], 0
            for index in chunk:
                new_longest = max(longest, int(self.lengths[index]))
                cost = (len(batch) + 1) * padded_length(new_longest, "longest", 0, self.pad_to_multiple_of)
                if batch and cost > self.max_tokens:
                    batches.append(batch)
                    batch, new_longest = [], int(self.lengths[index])
                batch.append(int(index))
                longest = new_longest
            if batch:
                batches.append(batch)
        rng.shuffle(batches)
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)


class _EpochRandomSampler(Sampler[int]):
    """A seeded random permutation per epoch (`set_epoch`), so a run is reproducible and resumable."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())

    def __len__(self) -> int:
        return self.n


class _EpochLengthGroupedSampler(LengthGroupedSampler):
    """transformers' `LengthGroupedSampler` with a per-epoch seed."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int):
        super().__init__(batch_size, lengths=lengths, generator=torch.Generator())
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator.manual_seed(self.seed + self.epoch)
        return super().__iter__()


def model_columns(dataset) -> list[str]:
    """The columns the model and collator consume: drop bookkeeping such as `length`."""
    return [c for c in dataset.column_names if c != "length"]


def build_train_dataloader(dataset, collator, batching: Batching, batch_size: int, seed: int,
                           num_workers: int = 0) -> DataLoader:
    """The training DataLoader for a strategy: rows, grouped rows, or token-budget batches; with `num_workers`,
    collated by that many processes kept across epochs (the order is drawn in this process: the same batches)."""
    dataset = dataset.with_format(columns=model_columns(dataset))
    num_workers = num_workers or 0  # (None: collated here)
    lengths = None
    if batching.group_by_length or batching.max_tokens_per_batch:
        lengths = dataset.with_format(None)["length"] if "length" in dataset.column_names else None
    # a private generator: iterating a DataLoader draws a worker seed from it, which must not shift the global
    # RNG that dropout uses (or a resumed run would differ from an uninterrupted one)
    common = dict(collate_fn=collator, generator=torch.Generator().manual_seed(seed), pin_memory=PIN_MEMORY,
                  num_workers=num_workers, persistent_workers=num_workers > 0, worker_init_fn=_leave_signals_to_loop,
                  # forked on Linux (Python 3.14's forkserver would start workers with Ctrl-C's default handler and
                  # no blocked signals, for the seconds their imports take): see workers_started_quietly
                  multiprocessing_context="fork" if num_workers and sys.platform == "linux" else None)
    if batching.max_tokens_per_batch:
        sampler = TokenBudgetBatchSampler(lengths, batching.max_tokens_per_batch, batching.pad_to_multiple_of,
                                          seed=seed)
        return DataLoader(dataset, batch_sampler=sampler, **common)
    if batching.group_by_length:
        sampler = _EpochLengthGroupedSampler(batch_size, list(lengths), seed)
    else:
        sampler = _EpochRandomSampler(len(dataset), seed)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, **common)


STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _leave_signals_to_loop(_worker_id: int) -> None:
    """A loader worker ignores Ctrl-C and SIGTERM (a terminal sends Ctrl-C, SLURM SIGTERM, to every process of the
    job): the training process finishes its step and checkpoints while its workers still serve it (a worker killed
    mid-step would make torch raise in the training process), then stops them (`close_workers`). Forked with both
    signals blocked (`workers_started_quietly`), it unblocks them once they are ignored."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
    if hasattr(signal, "pthread_sigmask"):  # (POSIX)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)


@contextlib.contextmanager
def workers_started_quietly():
    """Block Ctrl-C and SIGTERM in this thread while a loader forks its workers (they inherit the mask until
    `_leave_signals_to_loop`); a signal arriving meanwhile waits and is then handled here as usual."""
    if not hasattr(signal, "pthread_sigmask"):  # (not POSIX: nothing to block)
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def close_workers(loader) -> None:
    """Stop a loader's persistent workers now, as their iterator's own clean-up would: they ignore SIGTERM, so
    Python's exit-time terminate() of a leaked pool would wait on them. (torch has no public call for it.)"""
    iterator = getattr(loader, "_iterator", None)
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
        loader._iterator = None


def build_stream_dataloader(stream, collator, batch_size: int, seed: int, rank: int = 0,
                            world_size: int = 1) -> DataLoader:
    """Training batches of an IterableDataset: shuffled in a buffer of rows (and by shard order), then split across
    processes (`split_dataset_by_node`: whole shards per process when they divide evenly, else every
    world_size-th row), padded per batch by the same collator. Length grouping needs the whole dataset, so a
    stream's batches are padded to their own longest row."""
    from datasets.distributed import split_dataset_by_node

    # same seed on every rank: one shard order; a 10,000-row buffer (datasets' own default is 1,000)
    stream = stream.shuffle(seed=seed, buffer_size=10_000)
    stream = split_dataset_by_node(stream, rank=rank, world_size=world_size).remove_columns(["length"])
    return DataLoader(stream, batch_size=batch_size, collate_fn=collator, pin_memory=PIN_MEMORY,
                      generator=torch.Generator().manual_seed(seed))  # private: see build_train_dataloader


def build_eval_dataloader(dataset, collator, batch_size: int) -> tuple[DataLoader, np.ndarray]:
    """Evaluation batches of rows sorted by length (little padding, large no-grad batches). Returns the loader and
    the row order, so predictions can be put back in dataset order with `restore_order`."""
    if "length" in dataset.column_names:
        order = np.argsort(-np.asarray(dataset.with_format(None)["length"]), kind="stable")
    else:
        order = np.arange(len(dataset))
    loader = DataLoader(dataset.with_format(columns=model_columns(dataset)), batch_size=batch_size,
                        sampler=order.tolist(), collate_fn=collator, generator=torch.Generator(),
                        pin_memory=PIN_MEMORY)
    return loader, order


def restore_order(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    restored = np.empty_like(values)
    restored[order] = values
    return restored


def pad_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]], padding: str, max_length: int,
                 pad_to_multiple_of: int | None = None) -> float:
    """The fraction of computed token positions that are padding, for given batches of row indices."""
    lengths = np.asarray(lengths)
    real = computed = 0
    for batch in batches:
        rows = lengths[list(batch)]
        real += int(rows.sum())
        computed += len(rows) * padded_length(int(rows.max()), padding, max_length, pad_to_multiple_of)
    return 1.0 - real / computed if computed else 0.0


def plan_batches(lengths: Sequence[int], batching: Batching, batch_size: int, seed: int = 0) -> list[list[int]]:
    """The batches of row indices a strategy yields for one epoch (for pad statistics; no tensors built)."""
    if batching.max_tokens_per_batch:
        return list(TokenBudgetBatchSampler(lengths, batching.max_tokens_per_batch, batching.pad_to_multiple_of,
                                            seed=seed))
    if batching.group_by_length:
        order = list(_EpochLengthGroupedSampler(batch_size, list(lengths), seed))
    else:
        order = list(_EpochRandomSampler(len(lengths), seed))
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
