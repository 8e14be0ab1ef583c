"""LoRA against full fine-tuning on a GLUE-style pair task, several seeds each, whole commands run one after another
on an otherwise idle machine. Prints one JSON line per run and a summary table (mean +- std over seeds).

    python benchmarks/lora_vs_full.py --dataset_name PATH_TO_GLUE --dataset_config_name mrpc --seeds 1 2 3 \
        --lora_r 8 --out /tmp/lora-bench

Peak RSS is /usr/bin/time's maximum resident set size of the command; training time is the loop's own
train_runtime; trainable parameters come from the run's "Model:" log line."""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

BIN = os.path.join(os.path.dirname(sys.executable), "seqtune")


def run(name: str, seed: int, data: list[str], out: str, extra: list[str]) -> dict:
    folder = os.path.join(out, f"{name}-seed{seed}")
    cmd = ["/usr/bin/time", "-f", "PEAK_RSS_KB %M", BIN, "train", *data, "--output_dir", folder,
           "--overwrite_output_dir", "--seed", str(seed), "--disable_tqdm", *extra]
    started = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{name} seed {seed} failed:\n{result.stderr[-3000:]}")
    results = json.load(open(os.path.join(folder, "all_results.json")))
    trainable = re.search(r"Model: \S+ parameters, (\S+) trainable", result.stderr).group(1)
    return {"config": name, "seed": seed, "f1": results["eval_f1"], "accuracy": results["eval_accuracy"],
            "train_runtime": results["train_runtime"], "wall": round(wall, 1), "trainable": trainable,
            "peak_rss_mb": round(int(re.search(r"PEAK_RSS_KB (\d+)", result.stderr).group(1)) / 1024),
            "phase_seconds": results.get("phase_seconds")}


def summary(rows: list[dict]) -> str:
    lines = ["| configuration | trainable | F1 | accuracy | training s | whole command s | peak RSS MB |",
             "|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["config"] for r in rows):
        mine = [r for r in rows if r["config"] == name]

        def ms(key, digits=4):
            values = [r[key] for r in mine]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"
        lines.append(f"| {name} | {mine[0]['trainable']} | {ms('f1')} | {ms('accuracy')} | {ms('train_runtime', 1)} "
                     f"| {ms('wall', 1)} | {ms('peak_rss_mb', 0)} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset_name", required=True)
    parser.add_argument("--dataset_config_name", default=None)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--lora_r", type=int, default=8)
    parser.add_argument("--out", default="/tmp/lora-bench")
    args = parser.parse_args()
    data = ["--dataset_name", args.dataset_name] + (
        ["--dataset_config_name", args.dataset_config_name] if args.dataset_config_name else [])
    configs = {"full fine-tuning (defaults)": [], f"LoRA r={args.lora_r} (LoRA defaults)": ["--lora_r",
                                                                                          str(args.lora_r)]}
    rows = []
    for seed in args.seeds:  # interleaved: a slow spell of the machine hits both configurations alike
        for name, extra in configs.items():
            rows.append(run(name.split(" (")[0].replace(" ", "_").replace("=", ""), seed, data, args.out, extra))
            print(json.dumps(rows[-1]), flush=True)
    print(summary(rows))


if __name__ == "__main__":
    main()
