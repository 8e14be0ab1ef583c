"""Batch prediction at scale (BENCHMARKS.md §11): MRPC's test pairs repeated to N rows in 10 Parquet shards, scored by
`seqtune predict --predictions_dir` as a separate process; rows/s and the process's peak RSS.

    python benchmarks/predict_scale.py MODEL_DIR DATA_DIR --rows 100000 [--rows 1000000] [-- extra predict flags]

Each size runs in a fresh output folder; the figures of each are printed as one JSON line."""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import pyarrow as pa
import pyarrow.parquet as pq


def write_inputs(data_dir: str, rows: int, folder: str, shards: int = 10) -> str:
    from datasets import load_dataset

    test = load_dataset(data_dir, "mrpc")["test"]
    a, b = list(test["sentence1"]), list(test["sentence2"])
    per_shard = rows // shards
    for shard in range(shards):
        ids = range(shard * per_shard, (shard + 1) * per_shard)
        table = pa.table({"id": list(ids), "sentence1": [a[i % len(a)] for i in ids],
                          "sentence2": [b[i % len(b)] for i in ids]})
        pq.write_table(table, os.path.join(folder, f"pairs-{shard:02d}.parquet"))
    return os.path.join(folder, "pairs-*.parquet")


def run(model_dir: str, pattern: str, out: str, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "seqtune", "predict", "--model_name_or_path", model_dir, "--test_file", pattern,
           "--predictions_dir", out, "--log_level", "warning", *extra]
    start = time.perf_counter()
    process = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    seconds = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(process.stderr)
    summary = json.loads(process.stdout.strip().splitlines()[-1])
    # the largest resident set of any child so far: one run per process of this script keeps it per size
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {**summary, "command_seconds": round(seconds, 1), "rows_per_second_command": round(summary["rows"] /
            seconds, 1), "peak_rss_mb": round(peak_mb)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("data_dir")
    parser.add_argument("--rows", type=int, required=True)
    args, extra = parser.parse_known_args()
    work = tempfile.mkdtemp(prefix="seqtune-scale-")
    try:
        pattern = write_inputs(args.data_dir, args.rows, work)
        result = run(args.model_dir, pattern, os.path.join(work, "preds"), [e for e in extra if e != "--"])
        print(json.dumps({"input_rows": args.rows, "flags": extra, **result}), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
