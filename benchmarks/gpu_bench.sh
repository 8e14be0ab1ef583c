#!/usr/bin/env bash
# seqtune bench on a borrowed GPU (device tool): a bert-base-sized BERT with random weights on MRPC, every padding
# strategy and the course's Trainer recipe side by side. Needs .whl (datasets and its missing deps) and .gpu
# (MRPC parquet + the uncased WordPiece tokenizer) carried; writes $OUT/gpu_bench.{json,png,log}.
set -euo pipefail
wheels=".whl/datasets-*.whl .whl/dill-*.whl .whl/multiprocess-*.whl"
if python3 -c "import pyarrow, sys; sys.exit(int(pyarrow.__version__.split('.')[0]) >= 24)"; then
  wheels="$wheels .whl/pyarrow-*.whl"
fi
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $wheels
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, transformers, datasets, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'datasets', datasets.__version__, 'accelerate', accelerate.__version__)"
python3 - <<'PY'
from transformers import AutoTokenizer, BertConfig, BertModel
import torch
torch.manual_seed(0)
tokenizer = AutoTokenizer.from_pretrained(".gpu")
BertModel(BertConfig(vocab_size=len(tokenizer))).save_pretrained("/tmp/bert-base-random")  # 12 x 768, 110M
tokenizer.save_pretrained("/tmp/bert-base-random")
PY
# each model against transformers' Trainer twice: the course's recipe, and the fair peer (the same Trainer given
# bf16, length grouping and seqtune's default batch and lr: on a GPU the mean rows of its 4,096-token batches and
# lr 1.4e-4); the "default" row is `seqtune train`'s GPU defaults; samples/s and MFU of the measured bf16 peak (#17)
python3 -m seqtune bench --model_name_or_path /tmp/bert-base-random --dataset_name .gpu/glue \
  --dataset_config_name mrpc --cache_dir /tmp/seqtune-cache --steps 60 --warmup_steps 8 --compare trainer \
  --output_file "$OUT/gpu_bench.json" --chart "$OUT/gpu_bench.png" "$@" 2>&1 | grep -v "it/s]" | tee "$OUT/gpu_bench.log"
if [ -d .gpu/minilm ]; then  # the embedded MiniLM, carried as a folder (the GPU image lacks the wheel)
  python3 -m seqtune bench --model_name_or_path .gpu/minilm --dataset_name .gpu/glue --dataset_config_name mrpc \
    --cache_dir /tmp/seqtune-cache --steps 60 --warmup_steps 8 --strategies grouped,token_budget,default \
    --compare trainer --output_file "$OUT/gpu_bench_minilm.json" "$@" 2>&1 | grep -v "it/s]" \
    | tee "$OUT/gpu_bench_minilm.log"
fi
