#!/usr/bin/env bash
# Issue #12 (the recipe in named stages): the default MRPC run and `seqtune bench`'s default configuration, before
# (a checkout of the code before the change, at $OLD) and after (this checkout), one after the other on an idle
# machine. Usage: benchmarks/house_before_after.sh /path/to/old/checkout [seed]
GLUE="${GLUE:?set GLUE to a local copy of the GLUE dataset folder (laid out like nyu-mll/glue)}"
set -euo pipefail
OLD=${1:?path to a checkout of the code before the change}
SEED=${2:-42}
DATA="--dataset_name $GLUE --dataset_config_name mrpc"
PY=.venv/bin/python
mkdir -p runs/house
for side in old new; do
  src=$([ $side = old ] && echo "$OLD" || echo "$PWD")
  export SEQTUNE_CACHE=runs/house/cache-$side  # each side tokenizes from scratch, as a first run would
  rm -rf "$SEQTUNE_CACHE" runs/house/mrpc-$side
  start=$(date +%s.%N)
  PYTHONPATH=$src $PY -m seqtune train $DATA --seed $SEED --output_dir runs/house/mrpc-$side --disable_tqdm \
    > runs/house/mrpc-$side.json 2> runs/house/mrpc-$side.log
  end=$(date +%s.%N)
  echo "$side default run: wall $(echo "$end - $start" | bc) s; $(tail -1 runs/house/mrpc-$side.json)"
done
for round in 1 2; do
  for side in old new; do
    src=$([ $side = old ] && echo "$OLD" || echo "$PWD")
    PYTHONPATH=$src $PY -m seqtune bench $DATA --strategies default --steps 40 --log_level warning \
      --output_file runs/house/bench-$side-$round.json > /dev/null 2>&1
    $PY -c "import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[2], [(k, round(v.get('samples_per_second', 0), 1)) for k, v in (r.items() if isinstance(r, dict) else [])][:3])" runs/house/bench-$side-$round.json "$side bench round $round:" || true
  done
done
