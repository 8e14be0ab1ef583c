"""`seqtune bench`: training throughput per padding strategy, and against transformers' `Trainer`.

Its own small loop (nanoGPT's bench.py is the model) over the same components as `seqtune train`: the data
stages, `build_train_dataloader`, `build_optimizer`. Per configuration it runs a fixed number of optimizer steps
after a warm-up and reports samples/s, real and executed tokens/s, the pad fraction, peak RSS and model FLOPs
utilisation: useful training FLOPs/s over this machine's matrix-product peak for the dtype, measured in the
same run.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace

import torch

from seqtune.batching import Batching, build_collator, build_train_dataloader, padding_strategies
from seqtune.compiling import (compile_for_training, compile_problems, compile_wanted, mark_step_begin,
                               placement_problems, uses_cuda_graphs)
from seqtune.config import DataArguments, ModelArguments, comma_items
from seqtune.fast_dropout import use_fast_dropout
from seqtune.model_family import match_model_to_tokenizer
from seqtune.modeling import load_config, load_model, load_tokenizer, resolve_model_path
from seqtune.device_defaults import apply_device_defaults, split_budget_batches
from seqtune.prepare import batching_from_args, prepare_data
from seqtune.optim import build_optimizer

logger = logging.getLogger("seqtune")


@dataclass
class BenchArguments:
    """What `seqtune bench` measures."""

    strategies: list[str] = field(default_factory=lambda: ["max_length", "dynamic", "grouped", "token_budget",
                                                           "default"], metadata={
        "help": "Padding strategies to sweep: max_length, dynamic, grouped, token_budget, and default (what "
                "`seqtune train` does with its default flags)."})
    steps: int = field(default=20, metadata={"help": "Timed optimizer steps per configuration."})
    warmup_steps: int = field(default=3, metadata={"help": "Untimed steps first (allocations, compilation)."})
    per_device_train_batch_size: int = field(default=32, metadata={"help": "Rows per batch (row strategies)."})
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate (throughput only)."})
    bf16: bool = field(default=True, metadata={"help": "bfloat16 autocast; --no_bf16 for float32."})
    torch_compile: bool = field(default=False, metadata={"help": "torch.compile the model."})
    torch_compile_mode: str | None = field(default=None, metadata={
        "help": "torch.compile's mode (turns --torch_compile on), e.g. reduce-overhead for CUDA graphs."})
    torch_compile_backend: str | None = field(default=None, metadata={"help": "torch.compile's backend."})
    fast_dropout: bool = field(default=True, metadata={"help": "seqtune's fast CPU dropout (as `seqtune train`); "
                                                                "--no_fast_dropout for torch's bernoulli_."})
    adamw: str = field(default="fused", metadata={"help": "AdamW implementation: fused (one kernel), foreach or "
                                                          "for_loop (one kernel per parameter)."})
    num_threads: int | None = field(default=None, metadata={"help": "torch CPU threads."})
    dataloader_num_workers: int | None = field(default=None, metadata={
        "help": "Processes collating batches (as `seqtune train`: default 2 on a GPU, 0 on a CPU)."})
    compare: str | None = field(default=None, metadata={
        "help": "trainer: also run the course's Trainer recipe (batch 8, float32, dynamic padding) on as many "
                "samples as the default configuration used, and print the speed ratio."})
    trainer_samples: int | None = field(default=None, metadata={
        "help": "Samples for the Trainer comparison (default: those of the 'default' configuration)."})
    output_file: str | None = field(default=None, metadata={"help": "Write the results as JSON here."})
    chart: str | None = field(default=None, metadata={"help": "Write a PNG bar chart of samples/s here."})
    seed: int = field(default=42, metadata={"help": "Seed for model init and batch order."})
    debug: bool = field(default=False, metadata={"help": "Show full tracebacks for errors."})


def bench_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak_flops(dtype: torch.dtype, device: torch.device, size: int | None = None, repeats: int = 10) -> float:
    """FLOP/s of a square matrix product in `dtype` on this machine now: the ceiling MFU is measured against."""
    size = size or (8192 if device.type == "cuda" else 2048)
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def non_embedding_parameters(model) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if "embeddings" not in name)


def training_flops(real_tokens: int, rows_tokens_sq: int, n_params: int, layers: int, hidden: int) -> float:
    """6·N per real token (forward + backward through the weights) plus attention, 12·L·d·T per token of a row of
    length T: summed over rows, 12·L·d·Σ T²."""
    return 6 * n_params * real_tokens + 12 * layers * hidden * rows_tokens_sq


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def fresh_model(model_path: str, config, tokenizer, args: BenchArguments, device: torch.device):
    """The model as `seqtune train` would start it (seeded head, the family's pad id, fast CPU dropout), in
    training mode, compiled when asked."""
    torch.manual_seed(args.seed)
    model = load_model(model_path, config)
    match_model_to_tokenizer(model, tokenizer)
    model = model.to(device)
    if args.fast_dropout and device.type == "cpu" and not compile_wanted(args):
        use_fast_dropout(model)
    model.train()
    return compile_for_training(model, args)


def train_step(model, optimizer, batch, autocast, cuda_graphs: bool) -> None:
    """One optimizer step as `seqtune train` takes it (a step mark first for CUDA graphs)."""
    if cuda_graphs:
        mark_step_begin()
    with autocast:
        loss = model(**batch).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def run_config(name: str, batching: Batching, data, tokenizer, model_path: str, config, args: BenchArguments,
               max_seq_length: int, batch_size: int, peaks: dict) -> dict:
    """Time `args.steps` optimizer steps of one configuration on a fresh model."""
    device = bench_device()
    model = fresh_model(model_path, config, tokenizer, args, device)
    optimizer = build_optimizer(model, args.learning_rate, 0.01, implementation=args.adamw)
    collator = build_collator(tokenizer, batching.padding, max_seq_length, batching.pad_to_multiple_of)
    loader = build_train_dataloader(data.tokenized["train"], collator, batching, batch_size, args.seed,
                                    args.dataloader_num_workers)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16)
    n_params = non_embedding_parameters(model)
    batches = iter(loader)
    epoch = 0
    totals = {"samples": 0, "executed_tokens": 0}
    counts = []
    start = None
    cuda_graphs = uses_cuda_graphs(args)
    warmup_start = time.perf_counter()
    for step in range(args.warmup_steps + args.steps):
        if step == args.warmup_steps:
            synchronize(device)
            start = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            epoch += 1
            (loader.batch_sampler if batching.max_tokens_per_batch else loader.sampler).set_epoch(epoch)
            batches = iter(loader)
            batch = next(batches)
        batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        train_step(model, optimizer, batch, autocast, cuda_graphs)
        if start is not None:
            row_lengths = batch["attention_mask"].sum(-1)
            totals["samples"] += batch["input_ids"].shape[0]
            totals["executed_tokens"] += batch["input_ids"].numel()
            counts.append(torch.stack([row_lengths.sum(), (row_lengths**2).sum()]))  # no host sync per step
    synchronize(device)
    seconds = time.perf_counter() - start
    totals["real_tokens"], totals["tokens_sq"] = (int(x) for x in torch.stack(counts).sum(0).tolist())
    flops = training_flops(totals["real_tokens"], totals["tokens_sq"], n_params, config.num_hidden_layers,
                           config.hidden_size)
    peak = peaks["bf16" if args.bf16 else "fp32"]
    return {
        "config": name, "batching": asdict(batching), "bf16": args.bf16, "steps": args.steps,
        "torch_compile": (f"{args.torch_compile_mode or 'default'}/{args.torch_compile_backend or 'inductor'}"
                          if compile_wanted(args) else None),
        "learning_rate": args.learning_rate,
        "seconds": round(seconds, 3), "warmup_seconds": round(start - warmup_start, 3), "samples": totals["samples"],
        "samples_per_second": round(totals["samples"] / seconds, 2),
        "real_tokens_per_second": round(totals["real_tokens"] / seconds, 1),
        "executed_tokens_per_second": round(totals["executed_tokens"] / seconds, 1),
        "pad_fraction": round(1 - totals["real_tokens"] / totals["executed_tokens"], 4),
        "useful_gflops_per_second": round(flops / seconds / 1e9, 1),
        "mfu": round(flops / seconds / peak, 4), "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def check_bench_args(args: BenchArguments) -> None:
    from seqtune.errors import SeqtuneError

    problems = compile_problems(args) + placement_problems(args, num_processes=1)
    if compile_wanted(args) and args.warmup_steps < 1:
        problems.append("--warmup_steps must be 1 or more with --torch_compile: the first steps compile, and the "
                        "timed ones would count it.")
    if args.dataloader_num_workers is not None and args.dataloader_num_workers < 0:
        problems.append(f"--dataloader_num_workers must be 0 or more, got {args.dataloader_num_workers}.")
    if problems:
        raise SeqtuneError(*problems)


def bench(data_args: DataArguments, model_args: ModelArguments, args: BenchArguments) -> dict:
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    check_bench_args(args)
    model_path = resolve_model_path(model_args.model_name_or_path)
    tokenizer = load_tokenizer(model_path, model_args.trust_remote_code)
    data = prepare_data(data_args, tokenizer, load_config(model_path, model_args.trust_remote_code))
    config = load_config(model_path, num_labels=data.labels.num_labels)
    device = bench_device()
    peaks = {"fp32": matmul_peak_flops(torch.float32, device), "bf16": matmul_peak_flops(torch.bfloat16, device)}
    logger.info("Matrix-product peak here: float32 %.0f GFLOP/s, bfloat16 %.0f GFLOP/s", peaks["fp32"] / 1e9,
                peaks["bf16"] / 1e9)
    # the token_budget strategy uses --max_tokens_per_batch when given; the other strategies ignore it
    strategies = padding_strategies(data_args.max_seq_length, data_args.max_tokens_per_batch or 4096)
    from seqtune.config import TrainingArguments, default_learning_rate
    strategies["default"] = Batching()  # (made below: `seqtune train`'s batches on this device)
    device_default = TrainingArguments()
    apply_device_defaults(DataArguments(), device_default, device.type)
    if args.dataloader_num_workers is None:  # every configuration collates as `seqtune train` would here
        args = replace(args, dataloader_num_workers=device_default.dataloader_num_workers)
    results = []
    for name in comma_items(args.strategies):
        if name not in strategies:
            from seqtune.errors import SeqtuneError
            raise SeqtuneError(f"--strategies: unknown strategy '{name}'; choose from {', '.join(strategies)}.")
        run_args = args
        batch_size = args.per_device_train_batch_size
        if name == "default":  # what `seqtune train` does on this device with no batch flags
            defaults = TrainingArguments()
            default_data = DataArguments(max_seq_length=data_args.max_seq_length)
            # as `train` counts its split: both orders of each pair when symmetric
            size = split_budget_batches(data.tokenized["train"], 2 if data.symmetric else 1)
            apply_device_defaults(default_data, defaults, device.type, size)
            strategies[name] = batching_from_args(default_data)
            run_args = replace(args, bf16=defaults.bf16,
                               learning_rate=default_learning_rate(defaults, default_data.max_tokens_per_batch))
            batch_size = defaults.per_device_train_batch_size
        result = run_config(name, strategies[name], data, tokenizer, model_path, config, run_args,
                            data_args.max_seq_length, batch_size, peaks)
        logger.info("%s: %.1f samples/s, pad %.1f%%, MFU %.1f%%", name, result["samples_per_second"],
                    100 * result["pad_fraction"], 100 * result["mfu"])
        results.append(result)
    report = {"peak_gflops": {k: round(v / 1e9, 1) for k, v in peaks.items()}, "threads": torch.get_num_threads(),
              "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "model": model_path,
              "results": results}
    if args.compare == "trainer":
        reference = next((r for r in results if r["config"] == "default"), results[-1])
        report.update(compare_with_trainer(model_path, data, args, args.trainer_samples or reference["samples"],
                                           results))
    _print_table(report)
    if args.output_file:
        with open(args.output_file, "w") as f:
            json.dump(report, f, indent=2)
    if args.chart:
        _chart(report, args.chart)
    return report


def compare_with_trainer(model_path: str, data, args: BenchArguments, samples: int, results: list[dict]) -> dict:
    """transformers' `Trainer` on about `samples` samples twice: the course's recipe, and the fair peer (the same
    Trainer given bf16, length grouping and seqtune's default batch and learning rate: 32 rows and 1e-4 on a CPU;
    on a GPU the mean rows of seqtune's token-budget batches); the speed of every configuration against both."""
    from seqtune.trainer_baseline import FAIR_PEER, run_trainer_recipe

    default = next((r for r in results if r["config"] == "default"), None)
    # (seqtune's defaults on a CPU; Trainer's own single-process loader: given 2 workers on an H100 it ran at a
    # third of its speed over 3,000 samples, BENCHMARKS.md section 15)
    fair = dict(FAIR_PEER)
    if default is not None and default["batching"]["max_tokens_per_batch"]:  # a GPU's: the same rows and rate
        fair.update(per_device_train_batch_size=max(1, round(default["samples"] / default["steps"])),
                    learning_rate=default["learning_rate"])
    measured = {}
    for name, levers in (("trainer", None), ("trainer_fair_peer", fair)):
        batch = (levers or {}).get("per_device_train_batch_size", 8)
        with tempfile.TemporaryDirectory() as tmp:
            run = run_trainer_recipe(model_path, data.raw, data.columns.text, data.columns.text_pair,
                                     data.labels.num_labels, tmp, seed=args.seed, max_steps=max(1, samples // batch),
                                     evaluate=False, levers=levers)
        measured[name] = {"samples": run["train_samples"], "seconds": run["train_runtime"], "batch": batch,
                          "samples_per_second": round(run["train_samples"] / run["train_runtime"], 2)}
        logger.info("%s: %.1f samples/s", name, measured[name]["samples_per_second"])
    return {**measured, **{f"speedup_vs_{name}": {r["config"]: round(r["samples_per_second"] /
                                                                    m["samples_per_second"], 2) for r in results}
                           for name, m in measured.items()}}


def _print_table(report: dict) -> None:
    print(f"device {report['device']}; matrix-product peak: fp32 {report['peak_gflops']['fp32']} GFLOP/s, bf16 "
          f"{report['peak_gflops']['bf16']} GFLOP/s; {report['threads']} CPU threads")
    print(f"{'config':<14}{'dtype':>6}{'samples/s':>11}{'real tok/s':>12}{'exec tok/s':>12}{'pad':>7}{'MFU':>7}"
          f"{'RSS MB':>8}{'vs Trainer':>11}{'vs fair':>9}")
    for r in report["results"]:
        speedups = [report.get(f"speedup_vs_{name}", {}).get(r["config"]) for name in ("trainer", "trainer_fair_peer")]
        print(f"{r['config']:<14}{'bf16' if r['bf16'] else 'fp32':>6}{r['samples_per_second']:>11.1f}"
              f"{r['real_tokens_per_second']:>12.0f}{r['executed_tokens_per_second']:>12.0f}{r['pad_fraction']:>7.1%}"
              f"{r['mfu']:>7.1%}{r['peak_rss_mb']:>8.0f}" + "".join(f"{s:>9.2f}x" if s else "" for s in speedups))
    for name, what in (("trainer", "course recipe: fp32, batch 8, dynamic padding"),
                       ("trainer_fair_peer", "fair peer: bf16, grouped by length, seqtune's default batch and lr")):
        if name in report:
            t = report[name]
            print(f"{name:<18}{t['samples_per_second']:>11.1f} samples/s  ({what}; batch {t.get('batch')}; "
                  f"{t['samples']} samples in "
                  f"{t['seconds']:.1f} s)")


def _chart(report: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peers = [(label, report[key]["samples_per_second"]) for key, label in (("trainer", "Trainer"),
                                                                           ("trainer_fair_peer", "Trainer fair"))
             if key in report]
    names = [r["config"] for r in report["results"]] + [label for label, _ in peers]
    values = [r["samples_per_second"] for r in report["results"]] + [value for _, value in peers]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(names, values, color=["#4c72b0"] * len(report["results"]) + ["#c44e52"] * len(peers))
    ax.set_ylabel("training samples / s")
    ax.set_title("seqtune bench: throughput per padding strategy")
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.1f}", ha="center", va="bottom")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
