"""Model soups of every size on cross-validation folds, from a `seqtune sweep --cv K --soup --keep_models --seeds
...` folder: per fold, every m-subset of the fold's runs (one --seed, the sweep's seeds as --data_seed) is averaged
with seqtune's own `write_soup` and scored on the fold's held-out part with `seqtune evaluate`'s code; size 1 is
each run alone, scored the same way. `python benchmarks/cv_soup.py SWEEP_DIR` prints accuracy and F1 mean ± std
over folds and subsets for every size, then the figures as JSON."""

import glob
import itertools
import json
import os
import statistics
import sys
import tempfile

from seqtune.config import DataArguments, EvalArguments, ModelArguments
from seqtune.evaluate import evaluate
from seqtune.soup import write_soup

folder = sys.argv[1]
folds = sorted(glob.glob(os.path.join(folder, "fold-*")), key=lambda p: int(p.rsplit("-", 1)[1]))
runs = {fold: sorted(glob.glob(os.path.join(fold, "data_seed-*")), key=lambda p: int(p.rsplit("-", 1)[1]))
        for fold in folds}


def score(model: str, run: str) -> dict:
    data = json.load(open(os.path.join(run, "seqtune_args.json")))["data"]
    return evaluate(DataArguments(train_file=data["train_file"], validation_file=data["validation_file"]),
                    ModelArguments(model_name_or_path=model), EvalArguments())


summary = {}
for size in range(1, max(len(r) for r in runs.values()) + 1):
    scores = {"accuracy": [], "f1": []}
    for fold in folds:
        for members in itertools.combinations(runs[fold], size):
            with tempfile.TemporaryDirectory() as tmp:
                model = members[0] if size == 1 else write_soup(list(members), os.path.join(tmp, "soup"))
                result = score(model, members[0])
            for key in scores:
                scores[key].append(result[key])
    summary[size] = {k: {"mean": statistics.fmean(v), "std": statistics.stdev(v) if len(v) > 1 else 0.0,
                         "n": len(v)} for k, v in scores.items()}
    print(f"soup of {size}: accuracy {summary[size]['accuracy']['mean']:.4f} ± {summary[size]['accuracy']['std']:.4f}"
          f"  F1 {summary[size]['f1']['mean']:.4f} ± {summary[size]['f1']['std']:.4f}  (n={summary[size]['f1']['n']})",
          flush=True)
print(json.dumps({"folds": len(folds), "summary": summary}))
