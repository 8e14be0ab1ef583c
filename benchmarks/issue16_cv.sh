#!/usr/bin/env bash
# Issue #16: the defaults, the levers and the course's Trainer recipe under 5-fold cross-validation of MRPC's
# training split (the same folds for all: --cv_seed 0), on an idle machine, one job at a time.
#   bash benchmarks/issue16_cv.sh GLUE_DIR [SEEDS]     e.g. bash benchmarks/issue16_cv.sh ../shared/data/glue "1 2"
# A sweep folder is continued, not redone: running again with more seeds trains only the new runs.
set -euo pipefail
GLUE=${1:?the local GLUE folder}
SEEDS=${2:-1}
OUT=${OUT:-runs/cv}
data=(--dataset_name "$GLUE" --dataset_config_name mrpc)
sweep() { name=$1; shift; .venv/bin/seqtune sweep "${data[@]}" --cv 5 --seeds $SEEDS --cv_validation false \
    --output_dir "$OUT/$name" --disable_tqdm --log_level warning "$@" | tee "$OUT/$name.txt"; }
mkdir -p "$OUT"
sweep defaults
if [ "${EXTRA:-}" != skip_ema ]; then
    sweep ema_0.99 --ema_decay 0.99
    sweep reinit_top_1 --reinit_top_layers 1
fi
if [ "${TRAINER:-1}" = 1 ]; then
    .venv/bin/python benchmarks/cv_trainer_recipe.py "$OUT/defaults" $SEEDS | tee "$OUT/trainer_recipe.jsonl"
fi
