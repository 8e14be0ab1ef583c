#!/usr/bin/env bash
# The training loop compiled, on a borrowed GPU (device tool), issue #17: `--torch_compile` and
# `--torch_compile_mode reduce-overhead` (CUDA graphs: one launch per recorded batch shape) against the eager
# defaults and the course's Trainer recipe. Random weights of a bert-base-sized BERT (and the MiniLM), MRPC.
# In order of importance (a device call may run out of time): `seqtune bench` on the defaults' 4,096-token batches,
# eager (with the course Trainer recipe and the fair peer for the ratios), then CUDA graphs; the whole `seqtune
# train` command (default flags, 2 epochs, evaluation each epoch), eager and with CUDA graphs, on a dropout-free
# copy of the bert-base weights so that both runs compute the same function: wall time, phase table, the logged
# losses side by side; then `--torch_compile` without graphs, CUDA graphs on 16,384-token batches (the MFU a larger
# batch reaches) and on the MiniLM. Bench warm-ups cover every batch shape several times (their time, compiling and
# recording included, is warmup_seconds in the JSON).
# Needs .whl and .gpu carried (see gpu_setup.sh). Knobs: STEPS, WARMUP, TRAINER_SAMPLES, WHEELS=0 (dry run).
set -uo pipefail
STEPS=${STEPS:-200} WARMUP=${WARMUP:-160} TRAINER_SAMPLES=${TRAINER_SAMPLES:-3000}
BASE=${BASE:-/tmp/bert-base-random} TRAIN_FLAGS=${TRAIN_FLAGS:-}  # (a dry run: BASE=/tmp/minilm-random, --max_steps 3)
OUT=${OUT:?set OUT to a folder for the results}
source benchmarks/gpu_setup.sh
BASE=$BASE python3 - <<'PY'
from transformers import AutoConfig, AutoModel, AutoTokenizer
import os
base = os.environ["BASE"]
config = AutoConfig.from_pretrained(base, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
AutoModel.from_pretrained(base, config=config).save_pretrained("/tmp/base-nodrop")
AutoTokenizer.from_pretrained(base).save_pretrained("/tmp/base-nodrop")
PY
run() {  # run NAME SECONDS COMMAND...: its output in $OUT/NAME.log, a line with its exit status and wall time
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  echo "== $name: exit $?, $((SECONDS - start)) s"
  grep -E "samples/s|Trainer|ratio|Phases|eval step|Saved|Error|error:|Traceback|graph" "$OUT/$name.log" | grep -v "it/s]" | tail -8
}
bench() {  # bench NAME SECONDS MODEL [flags]
  local name=$1 limit=$2 model=$3; shift 3
  run "$name" "$limit" python3 -m seqtune bench --model_name_or_path "$model" --dataset_name .gpu/glue \
    --dataset_config_name mrpc --cache_dir /tmp/seqtune-cache --steps "$STEPS" --warmup_steps "$WARMUP" \
    --output_file "$OUT/$name.json" "$@"
}
train() {  # train NAME SECONDS [flags]
  local name=$1 limit=$2; shift 2
  run "$name" "$limit" python3 -m seqtune train --model_name_or_path /tmp/base-nodrop --dataset_name .gpu/glue \
    --dataset_config_name mrpc --cache_dir /tmp/seqtune-cache --output_dir "/tmp/$name" --overwrite_output_dir --disable_tqdm \
    --logging_steps 10 --seed 1 $TRAIN_FLAGS "$@"
  cp "/tmp/$name/train_log.jsonl" "$OUT/$name.train_log.jsonl" 2>/dev/null
  cp "/tmp/$name/all_results.json" "$OUT/$name.all_results.json" 2>/dev/null
}
export TORCH_LOGS=${TORCH_LOGS-graph_breaks,recompiles,perf_hints}
bench eager 120 $BASE --strategies default --compare trainer --trainer_samples "$TRAINER_SAMPLES"
bench graphs 200 $BASE --strategies default --torch_compile_mode reduce-overhead
train train_eager 100
train train_graphs 200 --torch_compile_mode reduce-overhead
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
def rows(name):
    try:
        return [json.loads(line) for line in open(f"{out}/{name}.train_log.jsonl")]
    except OSError:
        return []
eager, graphs = rows("train_eager"), rows("train_graphs")
diffs = [abs(a["loss"] - b["loss"]) / a["loss"] for a, b in zip(eager, graphs) if "loss" in a and "loss" in b]
print("losses (every 10 steps) eager vs CUDA graphs:", [(a.get("loss"), b.get("loss")) for a, b in zip(eager, graphs)])
if diffs:
    print(f"relative loss difference: first {diffs[0]:.2e}, max of the first 5 {max(diffs[:5]):.2e}, "
          f"max {max(diffs):.2e}")
PY
bench compiled 150 $BASE --strategies default --torch_compile
bench graphs_16k 150 $BASE --strategies token_budget --max_tokens_per_batch 16384 \
  --torch_compile_mode reduce-overhead
bench graphs_minilm 120 /tmp/minilm-random --strategies default --torch_compile_mode reduce-overhead \
  --compare trainer --trainer_samples "$TRAINER_SAMPLES"
