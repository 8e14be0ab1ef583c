#!/usr/bin/env bash
# The CPU speed levers of seqtune, one after another on an otherwise idle machine, MRPC + the embedded MiniLM.
# Writes runs/bench/*.json and docs/bench/cpu_strategies.png. Usage: bash benchmarks/cpu_levers.sh
GLUE="${GLUE:?set GLUE to a local copy of the GLUE dataset folder (laid out like nyu-mll/glue)}"
set -uo pipefail
B=".venv/bin/seqtune bench --dataset_name $GLUE --dataset_config_name mrpc --log_level warning"
mkdir -p runs/bench docs/bench
$B --steps 30 --compare trainer --output_file runs/bench/strategies.json --chart docs/bench/cpu_strategies.png
$B --strategies dynamic,grouped --no_bf16 --steps 20 --output_file runs/bench/fp32.json
for bs in 8 16 64; do
  $B --strategies grouped --per_device_train_batch_size $bs --steps $((960 / bs)) --output_file runs/bench/grouped_bs$bs.json
done
$B --strategies grouped --adamw for_loop --steps 20 --output_file runs/bench/adamw_for_loop.json
timeout 420 $B --strategies grouped --torch_compile --pad_to_multiple_of 16 --warmup_steps 12 --steps 20 --output_file runs/bench/compile.json
