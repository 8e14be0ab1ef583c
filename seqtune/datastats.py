"""`seqtune data`: the DatasetDict as the course shows it, labels, token lengths and padding costs."""

from __future__ import annotations

import numpy as np

from seqtune.batching import Batching, pad_fraction, padding_strategies, plan_batches
from seqtune.config import DataArguments, DataStatsArguments, ModelArguments
from seqtune.data import length_stats
from seqtune.modeling import load_config, load_tokenizer, resolve_model_path
from seqtune.prepare import prepare_data


def show_data(data_args: DataArguments, model_args: ModelArguments, args: DataStatsArguments) -> dict:
    path = resolve_model_path(model_args.model_name_or_path)
    tokenizer = load_tokenizer(path, model_args.trust_remote_code)
    data = prepare_data(data_args, tokenizer, load_config(path, model_args.trust_remote_code))
    print(data.raw)
    print(f"\ntext: {data.columns.text}" + (f" + {data.columns.text_pair}" if data.columns.text_pair else "")
          + f"; label: {data.columns.label}; metrics: {', '.join(data.metrics)}")
    print("labels: " + ("regression (one float score)" if data.labels.is_regression
                        else ", ".join(f"{i}={n}" for i, n in enumerate(data.labels.names)))
          + (" (multi-label: any number of them per row)" if data.labels.multi_label else ""))
    report = {}
    strategies = padding_strategies(data_args.max_seq_length, args.max_tokens_per_batch_stats)
    print(f"\ntoken lengths (max_seq_length {data_args.max_seq_length}) and the padding each strategy costs at "
          f"batch size {args.per_device_train_batch_size}:")
    print(f"{'split':<12}{'rows':>7}{'mean':>7}{'p50':>6}{'p95':>6}{'max':>6}  "
          + "".join(f"{name:>13}" for name in strategies))
    for split, ds in data.tokenized.items():
        lengths = ds.with_format(None)["length"]
        stats = length_stats(lengths)
        pads = {name: pad_fraction(lengths, plan_batches(lengths, b, args.per_device_train_batch_size, args.seed),
                                   b.padding, data_args.max_seq_length, b.pad_to_multiple_of)
                for name, b in strategies.items()}
        report[split] = {"rows": len(ds), **stats, "pad_fraction": pads}
        print(f"{split:<12}{len(ds):>7}{stats['mean']:>7.1f}{stats['p50']:>6.0f}{stats['p95']:>6.0f}"
              f"{stats['max']:>6}  " + "".join(f"{pads[n]:>12.1%} " for n in strategies))
    return report


def length_report(train_set, batching: Batching, batch_size: int, max_length: int, seed: int) -> dict:
    """Token-length histogram of the training rows and the pad fraction each strategy would cost (for the report)."""
    lengths = train_set.with_format(None)["length"]
    strategies = padding_strategies(max_length)
    strategies["this run"] = batching
    return {"histogram": np.bincount(lengths, minlength=max_length + 1).tolist(),
            "pad_fraction": {name: pad_fraction(lengths, plan_batches(lengths, b, batch_size, seed), b.padding,
                                                max_length, b.pad_to_multiple_of) for name, b in strategies.items()}}
