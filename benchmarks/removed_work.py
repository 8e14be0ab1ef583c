"""Issue #12: what the old end of a run did that the new one does not, timed on the MRPC model of a default run.

Old: at each new best evaluation the model and tokenizer were saved to best_model/; at the end they were read back
(load_state_dict, strict=False), the validation split was predicted again (both pair orders) for the confusion
matrix, and best_model/ was deleted. New: at each new best the weights are copied in memory; the final evaluation's
predictions are kept. Usage: python benchmarks/removed_work.py RUN_DIR [N_BEST]"""

import os
import shutil
import sys
import tempfile
import time

import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from seqtune.batching import build_collator
from seqtune.best_model import cpu_copy
from seqtune.config import DataArguments
from seqtune.inference import predict_logits
from seqtune.prepare import prepare_data


def seconds(fn, repeats=3):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


run_dir, n_best = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 2
model = AutoModelForSequenceClassification.from_pretrained(run_dir).eval()
tokenizer = AutoTokenizer.from_pretrained(run_dir)
data = prepare_data(DataArguments(dataset_name=os.environ["GLUE"], dataset_config_name="mrpc"), tokenizer,
                    model.config, splits=["validation"])
collator = build_collator(tokenizer, "longest", 128)
scratch = tempfile.mkdtemp()
best_dir = os.path.join(scratch, "best_model")


def save_best():
    model.save_pretrained(best_dir, safe_serialization=True)
    tokenizer.save_pretrained(best_dir)


save_s = seconds(save_best)
reload_s = seconds(lambda: model.load_state_dict(load_file(os.path.join(best_dir, "model.safetensors")),
                                                 strict=False))
delete_s = seconds(lambda: (save_best(), shutil.rmtree(best_dir)), 1) - save_s
torch.set_num_threads(torch.get_num_threads())
predict_s = seconds(lambda: predict_logits(model, data.tokenized["validation"], collator, 128,
                                           swapped=data.swapped.get("validation"), progress=False), 2)
copy_s = seconds(lambda: cpu_copy(model))
removed = n_best * save_s + reload_s + max(delete_s, 0) + predict_s
print(f"old, removed: {n_best} x save best_model ({save_s:.2f} s each) + reload {reload_s:.2f} s + delete "
      f"{max(delete_s, 0):.2f} s + second prediction pass {predict_s:.2f} s = {removed:.2f} s")
print(f"new, added: {n_best} x in-memory copy of the best weights ({copy_s:.3f} s each) = {n_best * copy_s:.2f} s")
print(f"net saving per default run: {removed - n_best * copy_s:.2f} s")
shutil.rmtree(scratch)
