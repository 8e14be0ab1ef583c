#!/usr/bin/env bash
# MRPC with the embedded MiniLM: two CPU processes (torchrun, gloo, one thread each, per-device batch 16 = global 32)
# against one process (global 32), same seeds. Usage: bash benchmarks/ddp_mrpc.sh [SEEDS...]   (default: 1 2)
# `accelerate launch --cpu --num_processes 2` starts a single process (accelerate's CPU launcher), hence torchrun.
GLUE="${GLUE:?set GLUE to a local copy of the GLUE dataset folder (laid out like nyu-mll/glue)}"
set -euo pipefail
DATA="--dataset_name $GLUE --dataset_config_name mrpc --disable_tqdm --overwrite_output_dir"
seeds=("$@")
[ ${#seeds[@]} -eq 0 ] && seeds=(1 2)
for seed in "${seeds[@]}"; do
  OMP_NUM_THREADS=1 .venv/bin/torchrun --nproc_per_node 2 -m seqtune train $DATA --per_device_train_batch_size 16 \
      --seed "$seed" --output_dir "runs/ddp2_seed$seed"
  .venv/bin/seqtune train $DATA --seed "$seed" --output_dir "runs/ddp1_seed$seed"
done
for run in runs/ddp[12]_seed*; do
  python3 -c "import json,sys; r=json.load(open('$run/all_results.json')); print('$run', round(r['eval_f1'], 4), round(r['eval_accuracy'], 4), r['train_runtime'], 's')"
done
