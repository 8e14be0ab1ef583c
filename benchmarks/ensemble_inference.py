"""What a seed ensemble costs at inference: the prediction pass of `seqtune evaluate` (both orders of each pair,
length-sorted batches, at the precision the model was evaluated in while training) with one model and with
ensembles of 3 and 5 members, back to back on an idle machine. The members are copies of one fine-tuned model: the
cost depends on their architecture, not their weights.

    python benchmarks/ensemble_inference.py MODEL_DIR DATASET_DIR CONFIG [SPLIT]
e.g. python benchmarks/ensemble_inference.py runs/mrpc ../shared/data/glue mrpc validation"""

import json
import os
import sys
import tempfile
import time

from seqtune.batching import build_collator
from seqtune.config import DataArguments, ModelArguments
from seqtune.ensemble import write_ensemble
from seqtune.finetuned import load_finetuned
from seqtune.inference import predict_logits
from seqtune.predictor import eval_bf16, inference_autocast
from seqtune.prepare import prepare_data

model_dir, dataset, config_name = sys.argv[1:4]
split = sys.argv[4] if len(sys.argv) > 4 else "validation"
data_args = DataArguments(dataset_name=dataset, dataset_config_name=config_name)
with tempfile.TemporaryDirectory() as tmp:
    folders = {1: model_dir, **{n: write_ensemble([model_dir] * n, os.path.join(tmp, f"ensemble-{n}")) for n in (3, 5)}}
    for members, folder in folders.items():
        tokenizer, config, model = load_finetuned(ModelArguments(model_name_or_path=folder), None)
        data = prepare_data(data_args, tokenizer, config, first_only=True, splits=[split])
        collator = build_collator(tokenizer, "longest", data_args.max_seq_length)
        bf16 = eval_bf16(None, config, model)
        passes = []
        for _ in range(3):  # the best of 3 passes: the first warms the allocator
            started = time.perf_counter()
            with inference_autocast(model, bf16):
                predict_logits(model, data.tokenized[split], collator, 128, swapped=data.swapped.get(split))
            passes.append(time.perf_counter() - started)
        rows = len(data.tokenized[split])
        print(json.dumps({"members": members, "rows": rows, "bf16": bf16, "seconds": round(min(passes), 3),
                          "rows_per_second": round(rows / min(passes), 1)}), flush=True)
