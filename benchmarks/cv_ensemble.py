"""Seed ensembles on cross-validation folds, from a `seqtune sweep --cv K --seeds ...` folder: per fold, the
members' saved validation logits (eval_predictions.json) are averaged, as `seqtune sweep --ensemble` averages them,
and scored against the fold's labels. `python benchmarks/cv_ensemble.py SWEEP_DIR` prints, for every ensemble
size m, accuracy and F1 mean ± std over folds and over every m-seed subset of the seeds."""

import glob
import itertools
import json
import os
import statistics
import sys

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

folder = sys.argv[1]
folds = sorted(glob.glob(os.path.join(folder, "fold-*")), key=lambda p: int(p.rsplit("-", 1)[1]))
runs = {fold: {int(p.rsplit("-", 1)[1]): json.load(open(os.path.join(p, "eval_predictions.json")))
               for p in glob.glob(os.path.join(fold, "*seed-*"))} for fold in folds}  # seed-N, or a soup's data_seed-N
seeds = sorted(set.intersection(*(set(r) for r in runs.values())))
summary = {}
for size in range(1, len(seeds) + 1):
    scores = {"accuracy": [], "f1": []}
    for fold in folds:
        labels = np.asarray(runs[fold][seeds[0]]["labels"])
        for members in itertools.combinations(seeds, size):
            logits = np.mean([np.asarray(runs[fold][s]["logits"]) for s in members], axis=0)
            predictions = logits.argmax(-1)
            scores["accuracy"].append(accuracy_score(labels, predictions))
            scores["f1"].append(f1_score(labels, predictions))
    summary[size] = {k: {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0,
                         "n": len(v)} for k, v in scores.items()}
    print(f"{size} member(s): accuracy {summary[size]['accuracy']['mean']:.4f} ± {summary[size]['accuracy']['std']:.4f}"
          f"  F1 {summary[size]['f1']['mean']:.4f} ± {summary[size]['f1']['std']:.4f}  (n={summary[size]['f1']['n']})")
print(json.dumps({"seeds": seeds, "folds": len(folds), "summary": summary}))
