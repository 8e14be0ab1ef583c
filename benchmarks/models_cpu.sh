#!/usr/bin/env bash
# Issue #13's CPU figures, back to back on an idle machine: LoRA vs full fine-tuning on MRPC (3 seeds each), then a
# decoder of Qwen2-0.5B's shape (full, LoRA, LoRA + gradient checkpointing, LoRA on bfloat16 weights).
# Usage: benchmarks/models_cpu.sh PATH_TO_GLUE_FOLDER [OUT]
set -euo pipefail
GLUE=${1:?usage: benchmarks/models_cpu.sh PATH_TO_GLUE_FOLDER [OUT]}
OUT=${2:-/tmp/models-bench}
PY=${PYTHON:-.venv/bin/python}
mkdir -p "$OUT"
lscpu | grep "Model name"; nproc
$PY benchmarks/lora_vs_full.py --dataset_name "$GLUE" --dataset_config_name mrpc --seeds 1 2 3 --lora_r 8 \
    --out "$OUT/lora" | tee "$OUT/lora_vs_full.txt"
$PY benchmarks/decoder_0p5b.py --dataset_name "$GLUE" --dataset_config_name mrpc --out "$OUT/qwen" \
    | tee "$OUT/decoder_0p5b.txt"
