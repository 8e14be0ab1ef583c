"""Prediction speed and quality per backend (BENCHMARKS.md §11): torch eager float32, torch bfloat16 autocast,
ONNX Runtime float32 and ONNX Runtime int8 (dynamic quantization), on a fine-tuned MRPC model.

    python benchmarks/inference_backends.py MODEL_DIR DATA_DIR [--repeats 3]

MODEL_DIR: a `seqtune train` output (the default MRPC run). DATA_DIR: a Hub-like folder with the mrpc config.
Speed: rows/s predicting the test split (1,725 pairs; symmetric models score both orders, as predict does), best
of --repeats passes after a warm-up. Quality: accuracy and F1 on the validation split, through the same code."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch
from datasets import load_dataset
from sklearn.metrics import accuracy_score, f1_score

from seqtune.config import ModelArguments
from seqtune.finetuned import load_finetuned
from seqtune.predictor import Predictor


def export(model_dir: str, out: str, quantize: bool) -> None:
    cmd = [sys.executable, "-m", "seqtune", "export", "--model_name_or_path", model_dir, "--output_dir", out,
           "--overwrite_output_dir", "--log_level", "warning"] + (["--quantize"] if quantize else [])
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)


def measure(name: str, folder: str, backend: str, bf16: bool, data, repeats: int, batch_size: int) -> dict:
    tokenizer, config, model = load_finetuned(ModelArguments(model_name_or_path=folder), backend)
    predictor = Predictor(tokenizer, config, model, 128, batch_size, bf16)
    test = {k: list(data["test"][k]) for k in ("sentence1", "sentence2")}
    predictor.logits(test["sentence1"][:256], test["sentence2"][:256])  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.logits(test["sentence1"], test["sentence2"])
        times.append(time.perf_counter() - start)
    validation = {k: list(data["validation"][k]) for k in ("sentence1", "sentence2", "label")}
    predicted = predictor.logits(validation["sentence1"], validation["sentence2"]).argmax(-1)
    labels = np.asarray(validation["label"])
    size = sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder)
               if n.endswith((".onnx", ".data", ".safetensors")))
    return {"backend": name, "rows_per_second": round(len(test["sentence1"]) / min(times), 1), "seconds": round(min(times), 2),
            "accuracy": round(accuracy_score(labels, predicted), 4), "f1": round(f1_score(labels, predicted), 4),
            "model_mb": round(size / 2**20, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("data_dir")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch_size", type=int, default=128)
    args = parser.parse_args()
    data = load_dataset(args.data_dir, "mrpc")
    work = tempfile.mkdtemp(prefix="seqtune-onnx-bench-")
    export(args.model_dir, os.path.join(work, "fp32"), False)
    export(args.model_dir, os.path.join(work, "int8"), True)
    runs = [("torch float32", args.model_dir, "torch", False), ("torch bf16 autocast", args.model_dir, "torch", True),
            ("onnxruntime float32", os.path.join(work, "fp32"), "onnx", False),
            ("onnxruntime int8", os.path.join(work, "int8"), "onnx", False)]
    print(json.dumps({"machine": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
                      "torch": torch.__version__, "test_rows": len(data["test"])}))
    for run in runs:
        print(json.dumps(measure(*run, data, args.repeats, args.batch_size)), flush=True)


if __name__ == "__main__":
    main()
