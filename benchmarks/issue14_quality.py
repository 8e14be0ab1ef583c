"""Issue #14's quality benchmarks on MRPC: imbalanced labels and multi-label, with and without --class_weights auto.

    python benchmarks/issue14_quality.py MRPC_FOLDER [SEEDS] [extra train flags...]
    e.g. python benchmarks/issue14_quality.py $GLUE/mrpc 1,2,3 --max_seq_length 128
    ISSUE14_DATASETS=multi-label python benchmarks/issue14_quality.py ...   # one of the two data sets
    python benchmarks/issue14_quality.py --summary                         # the table again

MRPC_FOLDER holds MRPC's train/validation/test parquet files (a copy of the Hub's nyu-mll/glue mrpc). Two data sets
are built from it into runs/issue14/data:

MRPC's test split has no labels, and its validation split (408 rows) is too small for a 10 % class, so the
labelled rows are re-split: 80 % of MRPC train (drawn with seed 0) to train on, the other 20 % plus MRPC validation
(1142 rows) to evaluate on.

- imbalanced: only 10 % positives, in both parts (every "not equivalent" pair, and as many "equivalent" pairs as
  make 10 % of the rows, drawn with seed 0).
- multi-label: two MRPC pairs per row: text = the first sentences of pair i and pair j, text_pair = their second
  sentences; labels = which halves MRPC's annotators call equivalent (first_equivalent, second_equivalent: none,
  one or both). Pairs are matched at random (seed 0) within each part.

Each configuration trains once per seed (the embedded all-MiniLM-L6-v2) and appends its all_results.json to
runs/issue14/results.jsonl; a table of mean ± std per configuration is printed at the end.
"""

import json
import os
import random
import shutil
import statistics
import sys

from datasets import load_dataset

from seqtune.cli import main

ROOT = "runs/issue14"


def imbalanced(rows, positive_share: float = 0.10):
    negatives = [r for r in rows if r["label"] == 0]
    positives = [r for r in rows if r["label"] == 1]
    keep = round(len(negatives) * positive_share / (1 - positive_share))
    chosen = negatives + random.Random(0).sample(positives, keep)
    random.Random(1).shuffle(chosen)
    return chosen


def multi_label(rows):
    rows = list(rows)
    random.Random(0).shuffle(rows)
    out = []
    for a, b in zip(rows[0::2], rows[1::2]):
        labels = [name for name, row in (("first_equivalent", a), ("second_equivalent", b)) if row["label"] == 1]
        out.append({"text": f"{a['sentence1']} {b['sentence1']}", "text_pair": f"{a['sentence2']} {b['sentence2']}",
                    "labels": labels})
    return out


def write_jsonl(path, rows):
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return path


def build(folder):
    files = {s: os.path.join(folder, f"{s}-00000-of-00001.parquet") for s in ("train", "validation", "test")}
    mrpc = load_dataset("parquet", data_files=files)
    data = os.path.join(ROOT, "data")
    os.makedirs(data, exist_ok=True)
    rows = mrpc["train"].to_list()
    random.Random(0).shuffle(rows)
    cut = int(0.8 * len(rows))
    train, held_out = rows[:cut], rows[cut:] + mrpc["validation"].to_list()
    return {
        "imbalanced": ["--train_file", write_jsonl(f"{data}/imb_train.jsonl", imbalanced(train)),
                       "--validation_file", write_jsonl(f"{data}/imb_validation.jsonl", imbalanced(held_out)),
                       "--text_column", "sentence1", "--text_pair_column", "sentence2", "--label_column", "label",
                       "--symmetric_pairs", "true"],
        "multi-label": ["--train_file", write_jsonl(f"{data}/ml_train.jsonl", multi_label(train)),
                        "--validation_file", write_jsonl(f"{data}/ml_validation.jsonl", multi_label(held_out))],
    }


def main_(argv):
    folder, seeds = argv[0], (argv[1] if len(argv) > 1 else "1,2,3").split(",")
    extra = argv[2:]
    results_file = os.path.join(ROOT, "results.jsonl")
    only = os.environ.get("ISSUE14_DATASETS")  # e.g. multi-label: build both, train only these
    for name, data in build(folder).items():
        if only and name not in only.split(","):
            continue
        for weights in ([], ["--class_weights", "auto"]):
            config = name + (" + class_weights auto" if weights else "")
            for seed in seeds:
                out = os.path.join(ROOT, "runs", f"{name}-{'w' if weights else 'plain'}-{seed}")
                shutil.rmtree(out, ignore_errors=True)
                code = main(["train", *data, *weights, "--output_dir", out, "--seed", seed, "--log_level", "warning",
                             "--report_to", "none", *extra])
                results = json.load(open(os.path.join(out, "all_results.json"))) if code == 0 else {"error": code}
                with open(results_file, "a") as f:
                    f.write(json.dumps({"config": config, "seed": int(seed), "flags": extra, **results}) + "\n")
                print(config, seed, {k: round(v, 4) for k, v in results.items() if k.startswith("eval_")}, flush=True)
    summarize(results_file)


def summarize(path):
    runs = [json.loads(line) for line in open(path)]
    configs = dict.fromkeys(r["config"] for r in runs)
    for config in configs:
        chosen = [r for r in runs if r["config"] == config and "error" not in r]
        if not chosen:
            continue
        keys = [k for k in chosen[0] if k.startswith("eval_") or k == "train_runtime"]
        print(f"{config} (n={len(chosen)})")
        for key in keys:
            values = [r[key] for r in chosen]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            print(f"  {key:<24} {statistics.fmean(values):.4f} ± {std:.4f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--summary"]:
        summarize(os.path.join(ROOT, "results.jsonl"))
    else:
        main_(sys.argv[1:])
