"""Where a GPU training step of `seqtune train`'s defaults goes (issue #17: 4.8 % MFU for bert-base on an H100):
`python benchmarks/gpu_step_profile.py MODEL GLUE_DIR OUT_DIR [STEPS]`.

Separates the data loader (collating token-budget batches, pinned copies) from the step itself (batches already on
the device), then times the step's parts and levers one at a time on the same batches: without gradient clipping,
bfloat16 weights instead of autocast, torch.compile, and a torch.profiler table of the eager step. Each part prints
one line (ms per step, samples/s, MFU); a part that fails prints its error and the rest go on."""

import json
import sys
import time
import traceback

import torch
from torch.utils.data import DataLoader

from seqtune.batching import build_collator, build_train_dataloader
from seqtune.bench import fresh_model, matmul_peak_flops, non_embedding_parameters, training_flops, BenchArguments
from seqtune.config import DataArguments, TrainingArguments, default_learning_rate
from seqtune.device_defaults import apply_device_defaults
from seqtune.modeling import load_config, load_tokenizer
from seqtune.optim import build_optimizer
from seqtune.prepare import batching_from_args, prepare_data

model_path, glue, out_dir = sys.argv[1:4]
steps = int(sys.argv[4]) if len(sys.argv) > 4 else 100
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
results = {}


def sync():
    if device.type == "cuda":
        torch.cuda.synchronize()


def part(name):  # run a part, record its line or its error, go on
    def wrap(fn):
        try:
            results[name] = fn()
            print(name, json.dumps(results[name]), flush=True)
        except Exception:
            results[name] = {"error": traceback.format_exc(limit=3)}
            print(name, "FAILED", results[name]["error"], flush=True)
    return wrap


tokenizer = load_tokenizer(model_path)
data_args = DataArguments(dataset_name=glue, dataset_config_name="mrpc", cache_dir="/tmp/seqtune-cache")
data = prepare_data(data_args, tokenizer, load_config(model_path))
config = load_config(model_path, num_labels=data.labels.num_labels)
defaults = TrainingArguments()
apply_device_defaults(data_args, defaults, device.type)
batching = batching_from_args(data_args)
lr = default_learning_rate(defaults, data_args.max_tokens_per_batch)
collator = build_collator(tokenizer, batching.padding, data_args.max_seq_length, batching.pad_to_multiple_of)
loader = build_train_dataloader(data.tokenized["train"], collator, batching, defaults.per_device_train_batch_size, 0)
peak = matmul_peak_flops(torch.bfloat16, device)
print("batching", batching, "lr", lr, "peak bf16 TFLOP/s", round(peak / 1e12, 1), flush=True)


@part("loader_only")
def _():  # the host side alone: collate + pin (+ copy), one epoch
    out = {}
    for workers in (0, 2):
        dl = DataLoader(loader.dataset, batch_sampler=loader.batch_sampler, collate_fn=loader.collate_fn,
                        pin_memory=loader.pin_memory, num_workers=workers)
        start, n = time.perf_counter(), 0
        for batch in dl:
            {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            n += 1
        sync()
        out[f"workers_{workers}_ms_per_batch"] = round(1000 * (time.perf_counter() - start) / n, 2)
    out["batches_per_epoch"] = n
    return out


staged = [{k: v.to(device) for k, v in b.items()} for _, b in zip(range(60), loader)]
lengths = [b["attention_mask"].sum(-1) for b in staged]
flops_per_pass = sum(training_flops(int(x.sum()), int((x ** 2).sum()), 0, config.num_hidden_layers,
                                    config.hidden_size) for x in lengths)
rows_per_pass = sum(len(x) for x in lengths)
tokens_per_pass = sum(int(x.sum()) for x in lengths)


def time_steps(model, clip=True, autocast=True, warmup=20):
    optimizer = build_optimizer(model, lr, 0.01)
    ctx = torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast)
    n_params = non_embedding_parameters(model)
    for i in range(warmup + steps):
        if i == warmup:
            sync()
            start = time.perf_counter()
        batch = staged[i % len(staged)]
        with ctx:
            loss = model(**batch).loss
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync()
    seconds = time.perf_counter() - start
    passes = steps / len(staged)
    flops = passes * (flops_per_pass + 6 * n_params * tokens_per_pass)
    return {"ms_per_step": round(1000 * seconds / steps, 2), "samples_per_s": round(passes * rows_per_pass / seconds, 1),
            "mfu": round(flops / seconds / peak, 4)}


bench_args = BenchArguments()
part("eager_step")(lambda: time_steps(fresh_model(model_path, config, tokenizer, bench_args, device)))
part("eager_no_clip")(lambda: time_steps(fresh_model(model_path, config, tokenizer, bench_args, device), clip=False))
part("bf16_weights_no_autocast")(lambda: time_steps(
    fresh_model(model_path, config, tokenizer, bench_args, device).to(torch.bfloat16), autocast=False))


@part("profile_eager")
def _():
    model = fresh_model(model_path, config, tokenizer, bench_args, device)
    optimizer = build_optimizer(model, lr, 0.01)
    for batch in staged[:5]:  # warm
        with torch.autocast(device.type, dtype=torch.bfloat16):
            model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    activities = [torch.profiler.ProfilerActivity.CPU] + (
        [torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with torch.profiler.profile(activities=activities) as prof:
        for batch in staged[5:15]:
            with torch.autocast(device.type, dtype=torch.bfloat16):
                loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        sync()
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    with open(f"{out_dir}/gpu_step_profile.txt", "w") as f:
        f.write(table)
        if device.type == "cuda":
            f.write("\n\nby device time\n" + prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=20))
    events = prof.key_averages()
    return {"cpu_ms_per_step": round(sum(e.self_cpu_time_total for e in events) / 10 / 1000, 2),
            "device_ms_per_step": round(sum(getattr(e, "self_device_time_total", 0) for e in events) / 10 / 1000, 2),
            "kernel_launches_per_step": round(sum(e.count for e in events if e.key.startswith("cudaLaunchKernel"))
                                              / 10, 1)}


@part("compiled_step")
def _():
    import torch._dynamo
    model = fresh_model(model_path, config, tokenizer, BenchArguments(torch_compile=True), device)
    out = time_steps(model, warmup=60)
    out["graphs"] = torch._dynamo.utils.counters["stats"].get("unique_graphs", None)
    return out


with open(f"{out_dir}/gpu_step_profile.json", "w") as f:
    json.dump({"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "model": model_path,
               "batching": str(batching), "steps": steps, "results": results}, f, indent=2)
