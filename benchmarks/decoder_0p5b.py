"""A decoder of Qwen2-0.5B's shape (random weights, 494 M parameters) fine-tuned for a few steps with `seqtune
train`: full fine-tuning, LoRA, LoRA + gradient checkpointing, LoRA on bfloat16 weights. Prints the loop's samples/s,
the peak RSS of the whole command and seqtune's own memory estimate, one JSON line per configuration.

    python benchmarks/decoder_0p5b.py --dataset_name PATH_TO_GLUE --dataset_config_name mrpc --out /tmp/qwen-bench

The tokenizer is the tiny Qwen2-style one of the tests (its ids are a subset of the model's 151,936-row vocabulary):
the shapes and the arithmetic are Qwen2-0.5B's, the text is only there to make batches of MRPC's lengths."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.join(os.path.dirname(sys.executable), "seqtune")


def build(folder: str) -> str:
    if os.path.isfile(os.path.join(folder, "model.safetensors")):
        return folder
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from tests.families import build_tokenizer

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                         tie_word_embeddings=True, rope_theta=1000000.0, eos_token_id=0, bos_token_id=None)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    build_tokenizer("qwen2").save_pretrained(folder)
    return folder


def run(name: str, model: str, data: list[str], out: str, steps: int, extra: list[str]) -> dict:
    folder = os.path.join(out, name)
    cmd = ["/usr/bin/time", "-f", "PEAK_RSS_KB %M", BIN, "train", "--model_name_or_path", model, *data,
           "--output_dir", folder, "--overwrite_output_dir", "--max_steps", str(steps), "--logging_steps", "1",
           "--per_device_train_batch_size", "8", "--eval_strategy", "no", "--max_eval_samples", "8",
           "--save_total_limit", "1", "--disable_tqdm", *extra]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        return {"config": name, "error": result.stderr[-1500:]}
    results = json.load(open(os.path.join(folder, "all_results.json")))
    return {"config": name, "train_samples_per_second": results["train_samples_per_second"],
            "train_runtime": results["train_runtime"], "steps": results["global_step"],
            "peak_rss_gb": round(int(re.search(r"PEAK_RSS_KB (\d+)", result.stderr).group(1)) / 2**20, 2),
            "estimate": re.search(r"Model: (.*)", result.stderr).group(1),
            "phase_seconds": results.get("phase_seconds")}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset_name", required=True)
    parser.add_argument("--dataset_config_name", default=None)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--out", default="/tmp/qwen-bench")
    args = parser.parse_args()
    model = build(os.path.join(args.out, "qwen2-0.5b-shape"))
    data = ["--dataset_name", args.dataset_name] + (
        ["--dataset_config_name", args.dataset_config_name] if args.dataset_config_name else [])
    configs = {"full": [], "lora_r8": ["--lora_r", "8"],
               "lora_r8_gradient_checkpointing": ["--lora_r", "8", "--gradient_checkpointing"],
               "lora_r8_bf16_weights": ["--lora_r", "8", "--torch_dtype", "bfloat16"]}
    for name, extra in configs.items():
        print(json.dumps(run(name, model, data, args.out, args.steps, extra)), flush=True)


if __name__ == "__main__":
    main()
