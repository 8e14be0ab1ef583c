#!/usr/bin/env bash
# seqtune bench on a borrowed GPU (device tool), issue #17: a bert-base-sized BERT and the MiniLM (random weights:
# the speed is the weights' shapes, not their values) on MRPC, `seqtune train`'s GPU defaults against transformers'
# Trainer twice (the course's recipe, and the fair peer: the same Trainer given bf16, length grouping and seqtune's
# rows and learning rate), then the defaults under torch.compile. Needs .whl (datasets and its missing deps) and
# .gpu (MRPC parquet in .gpu/glue/mrpc, the uncased WordPiece tokenizer in .gpu, the MiniLM's config and tokenizer
# in .gpu/minilm) carried. Writes $OUT/gpu_bench*.{json,log} and a chart.
# Knobs (environment): STEPS, WARMUP, TRAINER_SAMPLES, BIG_BUDGET (the token_budget row's tokens), WHEELS=0 (skip
# the wheel install: a dry run on a machine that has datasets).
set -euo pipefail
STEPS=${STEPS:-200} WARMUP=${WARMUP:-30} TRAINER_SAMPLES=${TRAINER_SAMPLES:-6000} BIG_BUDGET=${BIG_BUDGET:-16384}
OUT=${OUT:?set OUT to a folder for the results}
source benchmarks/gpu_setup.sh
bench() {  # bench NAME MODEL [flags]: one `seqtune bench` run, its table in $OUT/NAME.log, its figures in NAME.json
  local name=$1 model=$2; shift 2
  python3 -m seqtune bench --model_name_or_path "$model" --dataset_name .gpu/glue --dataset_config_name mrpc \
    --cache_dir /tmp/seqtune-cache --steps "$STEPS" --warmup_steps "$WARMUP" --output_file "$OUT/$name.json" "$@" \
    2>&1 | grep -v "it/s]" | tee "$OUT/$name.log"
}
# 1. bert-base size: the GPU defaults (4,096-token batches, bf16; measured first and again last: the first run on a
#    GPU also pays for its kernels' first launches), 32-row batches, a larger token budget (how MFU
#    grows with the batch), against both Trainer configurations
bench gpu_bench /tmp/bert-base-random --strategies default,grouped,token_budget,default --max_tokens_per_batch "$BIG_BUDGET" \
  --compare trainer --trainer_samples "$TRAINER_SAMPLES" --chart "$OUT/gpu_bench.png"
# 2. the MiniLM (seqtune's embedded default): the same comparison
bench gpu_bench_minilm /tmp/minilm-random --strategies default,grouped,default --compare trainer \
  --trainer_samples "$TRAINER_SAMPLES"
# 3. the bert-base defaults compiled (lengths in multiples of 8 bound the shapes); bounded, since compiling can be slow
timeout "${COMPILE_TIMEOUT:-180}" bash -c "set -o pipefail; $(declare -f bench); STEPS=$STEPS WARMUP=$WARMUP OUT=$OUT \
  bench gpu_bench_compiled /tmp/bert-base-random --strategies default --torch_compile" || echo "compiled run: exit $?"
