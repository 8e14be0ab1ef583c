"""Validation quality of `seqtune train` configurations over seeds on local MRPC ($GLUE: a copy of the GLUE folder).

    python benchmarks/quality.py NAME SEEDS [train flags...]
    e.g. python benchmarks/quality.py defaults 1,2,3
Appends one JSON line per run to runs/quality.jsonl (name, seed, flags, all_results)."""

import json
import os
import shutil
import sys

from seqtune.cli import main

name, seeds, flags = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
os.makedirs("runs", exist_ok=True)
for seed in seeds:
    out = f"runs/quality/{name}-{seed}"
    shutil.rmtree(out, ignore_errors=True)
    code = main(["train", "--dataset_name", os.environ["GLUE"], "--dataset_config_name", "mrpc", "--output_dir", out,
                 "--seed", seed, "--log_level", "warning", *flags])
    results = json.load(open(os.path.join(out, "all_results.json"))) if code == 0 else {"error": code}
    with open("runs/quality.jsonl", "a") as f:
        f.write(json.dumps({"name": name, "seed": int(seed), "flags": flags, **results}) + "\n")
    print(name, seed, {k: results.get(k) for k in ("eval_f1", "eval_accuracy", "train_runtime")}, flush=True)
