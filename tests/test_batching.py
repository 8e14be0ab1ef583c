"""Collators and batch samplers: shapes, padding, multiples, token budgets, pad fractions (pinned)."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset
from transformers import AutoTokenizer

from seqtune.batching import (Batching, TokenBudgetBatchSampler, build_collator, build_train_dataloader,
                              pad_fraction, padded_length, plan_batches, validate_batching)


def _features(lengths):
    return [{"input_ids": [2] + [7] * (n - 2) + [3], "token_type_ids": [0] * n, "attention_mask": [1] * n,
             "labels": i % 2} for i, n in enumerate(lengths)]


def test_dynamic_padding_pads_to_the_longest_row(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    batch = build_collator(tokenizer, "longest", 128)(_features([5, 9, 7]))
    assert batch["input_ids"].shape == (3, 9)
    assert batch["attention_mask"].sum().item() == 21
    assert batch["input_ids"][0, 5:].tolist() == [tokenizer.pad_token_id] * 4
    assert batch["labels"].tolist() == [0, 1, 0]


def test_max_length_padding_gives_fixed_shapes(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    collate = build_collator(tokenizer, "max_length", 32)
    assert collate(_features([5, 9]))["input_ids"].shape == (2, 32)
    assert collate(_features([20]))["token_type_ids"].shape == (1, 32)


def test_pad_to_multiple_of(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    assert build_collator(tokenizer, "longest", 128, 8)(_features([5, 9]))["input_ids"].shape == (2, 16)
    assert padded_length(9, "longest", 128, 8) == 16 and padded_length(9, "max_length", 100, 64) == 128


def test_pad_fraction_pinned():
    lengths = [10, 20, 30, 40]
    assert pad_fraction(lengths, [[0, 1, 2, 3]], "longest", 128) == pytest.approx(1 - 100 / 160)
    assert pad_fraction(lengths, [[0, 1], [2, 3]], "longest", 128) == pytest.approx(1 - 100 / 120)
    assert pad_fraction(lengths, [[0, 1], [2, 3]], "max_length", 64) == pytest.approx(1 - 100 / 256)
    assert pad_fraction(lengths, [[0, 1], [2, 3]], "longest", 128, 16) == pytest.approx(1 - 100 / 160)


def test_token_budget_batches_cover_every_row_once_within_budget():
    lengths = np.random.default_rng(0).integers(8, 120, size=500)
    sampler = TokenBudgetBatchSampler(lengths, max_tokens=1024, pad_to_multiple_of=8, seed=3)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(500))
    for batch in batches:
        assert len(batch) * padded_length(int(lengths[batch].max()), "longest", 0, 8) <= 1024
    sampler.set_epoch(1)
    assert list(sampler) != batches  # a new order each epoch...
    sampler.set_epoch(0)
    assert list(sampler) == batches  # ...reproducible from the seed


def test_grouping_cuts_padding():
    lengths = list(np.random.default_rng(1).integers(10, 100, size=2000))
    costs = {name: pad_fraction(lengths, plan_batches(lengths, b, 32, seed=0), b.padding, 128, b.pad_to_multiple_of)
             for name, b in {"max_length": Batching(padding="max_length"), "dynamic": Batching(),
                             "grouped": Batching(group_by_length=True),
                             "token_budget": Batching(max_tokens_per_batch=2048)}.items()}
    assert costs["max_length"] > costs["dynamic"] > costs["grouped"]
    assert costs["grouped"] < 0.08 and costs["token_budget"] < 0.08


def test_train_dataloader_drops_bookkeeping_columns(tiny_model):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    features = _features([5, 9, 7, 12, 6, 8])
    ds = Dataset.from_list([{**f, "length": len(f["input_ids"])} for f in features])
    for batching in (Batching(), Batching(group_by_length=True), Batching(max_tokens_per_batch=32)):
        loader = build_train_dataloader(ds, build_collator(tokenizer, "longest", 64), batching, 2, seed=0)
        batches = list(loader)
        assert sum(b["input_ids"].shape[0] for b in batches) == 6
        assert all("length" not in b for b in batches)


def test_batching_validation_names_the_flag():
    problems = validate_batching(Batching(padding="bucket", pad_to_multiple_of=0, max_tokens_per_batch=64), 128)
    assert any("--padding 'bucket' is unknown" in p for p in problems)
    assert any("--pad_to_multiple_of must be a positive" in p for p in problems)
    assert any("--max_tokens_per_batch 64 is below --max_seq_length 128" in p for p in problems)
