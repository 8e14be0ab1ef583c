"""--streaming: training read from an IterableDataset over Parquet shards, split across processes, resumable."""

from __future__ import annotations

import json
import os

import pytest
from datasets import load_dataset

from seqtune.cli import main


@pytest.fixture
def parquet_shards(pair_files, tmp_path) -> dict[str, str]:
    """The 48 training pairs as 4 Parquet shards (string labels, to exercise the mapping), validation as one file."""
    folder = tmp_path / "shards"
    folder.mkdir()
    train = load_dataset("csv", data_files=pair_files["train"], split="train")
    train = train.map(lambda row: {"label": ["different", "same"][row["label"]]})
    for i in range(4):
        train.shard(4, i, contiguous=True).to_parquet(str(folder / f"train-{i:05d}-of-00004.parquet"))
    validation = load_dataset("csv", data_files=pair_files["validation"], split="train")
    validation.map(lambda row: {"label": ["different", "same"][row["label"]]}).to_parquet(
        str(folder / "validation.parquet"))
    return {"train": str(folder / "train-*.parquet"), "validation": str(folder / "validation.parquet")}


def test_streaming_run_over_parquet_shards_trains_and_evaluates(tiny_model, parquet_shards, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--model_name_or_path", tiny_model, "--train_file", parquet_shards["train"],
                 "--validation_file", parquet_shards["validation"], "--streaming", "--max_steps", "8",
                 "--per_device_train_batch_size", "8", "--eval_strategy", "steps", "--eval_steps", "4",
                 "--logging_steps", "1", "--no_bf16", "--output_dir", out, "--disable_tqdm"]) == 0
    results = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # 8 steps x 8 rows: more than the 48 rows of the stream, so it was read a second time (reshuffled)
    assert results["global_step"] == 8 and results["train_samples"] == 64 and results["epoch"] is None
    log = [json.loads(line) for line in open(os.path.join(out, "train_log.jsonl"))]
    assert [r["step"] for r in log if "eval_accuracy" in r] == [4, 8]
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["id2label"] == {"0": "different", "1": "same"}  # named from the stream's labels
    # the saved model evaluates to the same metrics without streaming
    assert main(["evaluate", "--model_name_or_path", out, "--validation_file", parquet_shards["validation"]]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {k: evaluated[k] for k in ("f1", "accuracy")} == {"f1": results["eval_f1"],
                                                              "accuracy": results["eval_accuracy"]}


def test_each_process_reads_its_own_shards_and_together_all_rows(tiny_model, parquet_shards):
    from seqtune import build_collator, load_tokenizer, resolve_model_path
    from seqtune.batching import build_stream_dataloader

    tokenizer = load_tokenizer(resolve_model_path(tiny_model))
    stream = load_dataset("parquet", data_files=parquet_shards["train"], split="train", streaming=True)
    stream = stream.map(lambda batch: {**tokenizer(batch["sentence1"], batch["sentence2"]),
                                       "length": [0] * len(batch["label"])},
                        batched=True, remove_columns=["sentence1", "sentence2", "label"])
    collator = build_collator(tokenizer, "longest", 128)
    seen = []
    for rank in (0, 1):
        loader = build_stream_dataloader(stream, collator, batch_size=5, seed=3, rank=rank, world_size=2)
        rows = [tuple(ids[mask.bool()].tolist()) for batch in loader
                for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]
        assert len(rows) == 24  # two of the four shards each
        seen.append(rows)
    assert not set(seen[0]) & set(seen[1])
    everything = [tuple(tokenizer(r["sentence1"], r["sentence2"])["input_ids"])
                  for r in load_dataset("parquet", data_files=parquet_shards["train"], split="train")]
    assert sorted(seen[0] + seen[1]) == sorted(everything)


def test_streaming_needs_max_steps(tiny_model, parquet_shards, tmp_path, capsys):
    assert main(["train", "--model_name_or_path", tiny_model, "--train_file", parquet_shards["train"],
                 "--streaming", "--output_dir", str(tmp_path / "run")]) == 2
    assert "--streaming needs --max_steps" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run")


def test_streaming_run_resumes_to_the_same_weights(tiny_model, parquet_shards, tmp_path, capsys):
    """Resuming re-reads the stream up to the checkpoint's batch: the same rows, shuffles and dropout follow."""
    import shutil

    import torch
    from safetensors.torch import load_file

    def run(out, *extra):
        assert main(["train", "--model_name_or_path", tiny_model, "--train_file", parquet_shards["train"],
                     "--streaming", "--max_steps", "9", "--save_steps", "4", "--per_device_train_batch_size", "8",
                     "--eval_strategy", "no", "--no_bf16", "--output_dir", out, "--disable_tqdm",
                     "--save_optimizer_state_on_finish", *extra]) == 0

    full, resumed = str(tmp_path / "full"), str(tmp_path / "resumed")
    run(full)
    os.makedirs(resumed)
    shutil.copytree(os.path.join(full, "checkpoint-8"), os.path.join(resumed, "checkpoint-8"))  # mid second pass
    run(resumed, "--resume_from_checkpoint")
    expected, observed = (load_file(os.path.join(d, "model.safetensors")) for d in (full, resumed))
    for name in expected:
        assert torch.equal(observed[name], expected[name]), name
