"""Property-based tests (hypothesis) for the collators, the token-budget sampler and the label mapping."""

from __future__ import annotations

import numpy as np
import pytest
from datasets import Dataset, DatasetDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from seqtune.batching import TokenBudgetBatchSampler, build_collator, pad_fraction, padded_length
from seqtune.data import prepare_labels

lengths_strategy = st.lists(st.integers(min_value=2, max_value=64), min_size=1, max_size=16)


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return AutoTokenizer.from_pretrained(tiny_model)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(lengths=lengths_strategy, multiple=st.sampled_from([None, 1, 8, 16]),
       padding=st.sampled_from(["longest", "max_length"]))
def test_collator_shapes_masks_and_pads(tokenizer, lengths, multiple, padding):
    features = [{"input_ids": list(range(5, 5 + n)), "token_type_ids": [0] * n, "attention_mask": [1] * n,
                 "labels": i % 2} for i, n in enumerate(lengths)]
    batch = build_collator(tokenizer, padding, 64, multiple)(features)
    width = batch["input_ids"].shape[1]
    assert batch["input_ids"].shape == (len(lengths), padded_length(max(lengths), padding, 64, multiple))
    assert width >= max(lengths) and (not multiple or width % multiple == 0)
    assert batch["attention_mask"].sum(-1).tolist() == lengths  # real tokens are exactly the unpadded ones
    for row, n in zip(batch["input_ids"].tolist(), lengths):
        assert row[:n] == list(range(5, 5 + n)) and set(row[n:]) <= {tokenizer.pad_token_id}
    measured = 1 - sum(lengths) / batch["input_ids"].numel()
    assert pad_fraction(lengths, [range(len(lengths))], padding, 64, multiple) == pytest.approx(measured)


@settings(max_examples=60, deadline=None)
@given(lengths=st.lists(st.integers(min_value=1, max_value=128), min_size=1, max_size=300),
       budget=st.integers(min_value=128, max_value=4096), multiple=st.sampled_from([None, 8]),
       seed=st.integers(0, 10))
def test_token_budget_sampler_partitions_rows_within_budget(lengths, budget, multiple, seed):
    sampler = TokenBudgetBatchSampler(lengths, budget, multiple, seed=seed)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # each row exactly once
    lengths = np.asarray(lengths)
    for batch in batches:
        assert len(batch) >= 1
        assert len(batch) == 1 or len(batch) * padded_length(int(lengths[batch].max()), "longest", 0,
                                                             multiple) <= budget


label_values = st.lists(st.sampled_from(["pos", "neg", "neutral", "mixed", "other"]), min_size=1, max_size=30)


@settings(max_examples=40, deadline=None)
@given(train=label_values, shuffle_seed=st.integers(0, 1000))
def test_string_label_mapping_is_deterministic_and_invertible(train, shuffle_seed):
    validation = list(np.random.default_rng(shuffle_seed).permutation(train))[: max(1, len(train) // 2)]
    raw = DatasetDict({"train": Dataset.from_dict({"text": ["x"] * len(train), "label": train}),
                       "validation": Dataset.from_dict({"text": ["y"] * len(validation), "label": validation})})
    mapped, info = prepare_labels(raw, "label", None)
    assert list(info.names) == sorted(set(train))  # independent of row order
    for split, original in (("train", train), ("validation", validation)):
        assert [info.names[i] for i in mapped[split]["label"]] == list(original)
    reversed_raw = DatasetDict({"train": Dataset.from_dict({"text": ["x"] * len(train), "label": train[::-1]})})
    assert prepare_labels(reversed_raw, "label", None)[1].names == info.names


@settings(max_examples=30, deadline=None)
@given(train=st.lists(st.integers(0, 5), min_size=1, max_size=30))
def test_integer_labels_keep_their_order(train):
    raw = DatasetDict({"train": Dataset.from_dict({"text": ["x"] * len(train), "label": train})})
    mapped, info = prepare_labels(raw, "label", None)
    assert list(info.names) == [str(v) for v in sorted(set(train))]
    assert [int(info.names[i]) for i in mapped["train"]["label"]] == train
