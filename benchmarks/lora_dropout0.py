"""LoRA r=8 with adapter dropout 0 on MRPC, seeds 1-3 (the row of BENCHMARKS.md §10 that made it the default).
Usage: python benchmarks/lora_dropout0.py PATH_TO_GLUE"""
import json, sys
sys.path.insert(0, "benchmarks")
from lora_vs_full import run
data = ["--dataset_name", sys.argv[1], "--dataset_config_name", "mrpc"]
for seed in (1, 2, 3):
    print(json.dumps(run("LoRA_r8_dropout0", seed, data, "/tmp/bench13/drop0", ["--lora_r", "8", "--lora_dropout", "0"])), flush=True)
