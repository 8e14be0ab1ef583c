#!/usr/bin/env bash
# Issue #11's reproduction on real data: MRPC, the embedded MiniLM, the default configuration, killed with SIGKILL
# right after checkpoint-40 (the first epoch ends at step 50), resumed, and compared with an uninterrupted run:
# the last checkpoint's weights and every logged loss must be bitwise equal.
GLUE="${GLUE:?set GLUE to a local copy of the GLUE dataset folder (laid out like nyu-mll/glue)}"
set -euo pipefail
DATA="--dataset_name $GLUE --dataset_config_name mrpc"
ARGS="$DATA --max_steps 60 --max_train_samples 800 --save_steps 20 --seed 7 --logging_steps 5 --disable_tqdm"
PY=.venv/bin/python
rm -rf runs/resume-mrpc && mkdir -p runs/resume-mrpc
$PY -m seqtune train $ARGS --output_dir runs/resume-mrpc/full > /dev/null 2> runs/resume-mrpc/full.log
# the killed run: started in the background, SIGKILLed as soon as checkpoint-40 is in place
$PY -m seqtune train $ARGS --output_dir runs/resume-mrpc/killed > /dev/null 2> runs/resume-mrpc/killed.log &
pid=$!
while [ ! -f runs/resume-mrpc/killed/checkpoint-40/trainer_state.json ]; do sleep 0.2; done
kill -9 $pid; wait $pid || true
echo "killed after $(ls runs/resume-mrpc/killed | grep checkpoint- | tr '\n' ' ')"
$PY -m seqtune train $ARGS --output_dir runs/resume-mrpc/killed --resume_from_checkpoint > /dev/null \
  2> runs/resume-mrpc/resumed.log
$PY - <<'PY'
import json
from safetensors.torch import load_file
a, b = (f"runs/resume-mrpc/{d}" for d in ("full", "killed"))
for model in ("model.safetensors", "checkpoint-60/model.safetensors"):
    x, y = load_file(f"{a}/{model}"), load_file(f"{b}/{model}")
    print(model, "bitwise equal:", all(x[k].equal(y[k]) for k in x),
          "max |diff|:", max(float((x[k].float() - y[k].float()).abs().max()) for k in x))
logs = [[(r["step"], r.get("loss"), r.get("eval_f1")) for r in map(json.loads, open(f"{d}/train_log.jsonl"))]
        for d in (a, b)]
print("logs equal:", logs[0] == logs[1], "records:", len(logs[0]))
print("results:", [json.load(open(f"{d}/all_results.json"))["eval_f1"] for d in (a, b)])
PY
