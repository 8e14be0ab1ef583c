"""`seqtune train`: the course's fine-tuning recipe, top to bottom, on accelerate (CPU, one GPU or many)."""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import shutil
import time

import numpy as np
import torch

from seqtune.batching import build_collator, build_train_dataloader
from seqtune.config import DataArguments, ModelArguments, TrainingArguments
from seqtune.inference import logits_to_predictions, predict_logits
from seqtune.metrics import compute_metrics
from seqtune.modeling import load_config, load_model, load_tokenizer, resolve_model_path
from seqtune.prepare import batching_from_args, prepare_data, validate_training_args

logger = logging.getLogger("seqtune")


def build_optimizer(model, learning_rate: float, weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8):
    """AdamW without weight decay on biases and LayerNorm weights; one fused kernel where torch has one."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=learning_rate, betas=betas, eps=eps, fused=True)


def evaluate_model(model, dataset, collator, batch_size: int, metric_names, is_regression: bool,
                   accelerator=None) -> dict[str, float]:
    logits = predict_logits(model, dataset, collator, batch_size, accelerator)
    predictions, _ = logits_to_predictions(logits, is_regression)
    return compute_metrics(metric_names, predictions, np.asarray(dataset.with_format(None)["labels"]))


def save_model(model, tokenizer, output_dir: str) -> None:
    """Write model + tokenizer into a temporary folder, then move the files in: a half-written model never
    sits in `output_dir` looking complete."""
    staging = os.path.join(output_dir, ".saving")
    shutil.rmtree(staging, ignore_errors=True)
    model.save_pretrained(staging, safe_serialization=True)
    tokenizer.save_pretrained(staging)
    for name in os.listdir(staging):
        os.replace(os.path.join(staging, name), os.path.join(output_dir, name))
    os.rmdir(staging)


def write_json(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
    os.replace(tmp, path)


def train(data_args: DataArguments, model_args: ModelArguments, args: TrainingArguments) -> dict:
    """Fine-tune and return `all_results` (also written to `output_dir/all_results.json`)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    # --- check every flag before loading or writing anything
    validate_training_args(data_args, args)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    accelerator = Accelerator(gradient_accumulation_steps=args.gradient_accumulation_steps)
    set_seed(args.seed)

    # --- load the tokenizer and the data: columns, labels, tokenization (cached on disk)
    model_path = resolve_model_path(model_args.model_name_or_path)
    tokenizer = load_tokenizer(model_path, model_args.trust_remote_code)
    base_config = load_config(model_path, model_args.trust_remote_code)
    with accelerator.main_process_first():
        data = prepare_data(data_args, tokenizer, base_config)
    if "train" not in data.tokenized:
        from seqtune.errors import SeqtuneError
        raise SeqtuneError(f"the data has no train split (splits: {list(data.tokenized)}): pass --train_file or a "
                           "dataset with a train split.")
    train_set, eval_split = data.tokenized["train"], data.eval_split

    # --- the model, with label names in its config
    label_kwargs = {"num_labels": data.labels.num_labels}
    if not data.labels.is_regression:
        label_kwargs["id2label"] = dict(enumerate(data.labels.names))
        label_kwargs["label2id"] = {name: i for i, name in enumerate(data.labels.names)}
    else:
        label_kwargs["problem_type"] = "regression"
    config = load_config(model_path, model_args.trust_remote_code, **label_kwargs)
    model = load_model(model_path, config, model_args.trust_remote_code)

    # --- batches: the padding strategy chosen in one place
    batching = batching_from_args(data_args)
    collator = build_collator(tokenizer, batching.padding, data_args.max_seq_length, batching.pad_to_multiple_of)
    train_loader = build_train_dataloader(train_set, collator, batching, args.per_device_train_batch_size,
                                          args.seed)
    sampler = train_loader.batch_sampler if batching.max_tokens_per_batch else train_loader.sampler

    # --- optimizer and schedule; accelerate places and shards everything
    optimizer = build_optimizer(model, args.learning_rate, args.weight_decay, (args.adam_beta1, args.adam_beta2),
                                args.adam_epsilon)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    steps_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)
    max_steps = args.max_steps if args.max_steps > 0 else math.ceil(args.num_train_epochs * steps_per_epoch)
    num_epochs = math.ceil(max_steps / steps_per_epoch)
    # accelerate's scheduler wrapper steps once per process, so the schedule is counted in process-steps
    scheduler = accelerator.prepare(get_scheduler(
        args.lr_scheduler_type, optimizer,
        num_warmup_steps=math.ceil(args.warmup_ratio * max_steps) * accelerator.num_processes,
        num_training_steps=max_steps * accelerator.num_processes))
    global_batch = args.per_device_train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info("Training %d rows for %d steps (%d epochs); global batch %s", len(train_set), max_steps,
                num_epochs, f"~{data_args.max_tokens_per_batch} tokens x {accelerator.num_processes} x "
                f"{args.gradient_accumulation_steps}" if batching.max_tokens_per_batch else global_batch)

    # --- the loop
    os.makedirs(args.output_dir, exist_ok=True)
    log_path = os.path.join(args.output_dir, "train_log.jsonl")
    log_file = open(log_path, "w") if accelerator.is_main_process else None
    autocast = torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=args.bf16)
    main_metric = data.metrics[0]
    best = {"metric": -math.inf, "step": None, "state": None, "metrics": None}
    history = []
    step, samples, real_tokens = 0, 0, 0
    running_loss = torch.zeros((), device=accelerator.device)
    running_batches = 0
    train_time = 0.0

    def run_evaluation(epoch: float) -> None:
        if eval_split is None:
            return
        metrics = evaluate_model(accelerator.unwrap_model(model), data.tokenized[eval_split], collator,
                                 args.per_device_eval_batch_size, data.metrics, data.labels.is_regression,
                                 accelerator)
        record = {"step": step, "epoch": round(epoch, 4), **{f"eval_{k}": v for k, v in metrics.items()}}
        history.append(record)
        logger.info("eval step %d epoch %.2f: %s", step, epoch, " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
        if log_file:
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
        if best["state"] is None or metrics[main_metric] > best["metric"]:  # NaN (constant outputs) never wins
            state = accelerator.get_state_dict(model)
            best.update(metric=metrics[main_metric], step=step, metrics=metrics,
                        state={k: v.detach().to("cpu", copy=True) for k, v in state.items()})

    model.train()
    start = time.perf_counter()
    for epoch in range(num_epochs):
        sampler.set_epoch(epoch)
        for batch in train_loader:
            with accelerator.accumulate(model):
                with autocast:
                    loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            running_loss += loss.detach()  # stays on the device: no host sync per step
            running_batches += 1
            samples += batch["input_ids"].shape[0]
            real_tokens += batch["attention_mask"].sum()
            if not accelerator.sync_gradients:
                continue
            step += 1
            if step % args.logging_steps == 0 and log_file:
                record = {"step": step, "epoch": round(step / steps_per_epoch, 4),
                          "loss": round(running_loss.item() / running_batches, 6),
                          "learning_rate": scheduler.get_last_lr()[0],
                          "grad_norm": float(grad_norm) if args.max_grad_norm > 0 else None,
                          "samples_per_second": round(samples / (train_time + time.perf_counter() - start), 2)}
                log_file.write(json.dumps(record) + "\n")
                history.append(record)
                running_loss.zero_()
                running_batches = 0
            if args.eval_strategy == "steps" and step % args.eval_steps == 0:
                train_time += time.perf_counter() - start
                run_evaluation(step / steps_per_epoch)
                start = time.perf_counter()
            if step >= max_steps:
                break
        if args.eval_strategy == "epoch" or (args.eval_strategy == "steps" and step >= max_steps
                                             and step % args.eval_steps):
            train_time += time.perf_counter() - start
            run_evaluation(step / steps_per_epoch)
            start = time.perf_counter()
        if step >= max_steps:
            break
    train_time += time.perf_counter() - start

    # --- save the best model (by the task's main metric) with its tokenizer, and the results
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    if best["state"] is not None:
        unwrapped.load_state_dict(best["state"])
    results = {f"eval_{k}": v for k, v in (best["metrics"] or {}).items()}
    results.update({
        "best_step": best["step"], "epoch": round(step / steps_per_epoch, 4), "global_step": step,
        "train_runtime": round(train_time, 3), "train_samples": samples,
        "train_samples_per_second": round(samples / train_time, 3),
        "train_tokens_per_second": round(int(real_tokens) / train_time, 1),
        "main_metric": main_metric, "evaluated_split": eval_split,
    })
    if accelerator.is_main_process:
        save_model(unwrapped, tokenizer, args.output_dir)
        write_json(os.path.join(args.output_dir, "all_results.json"), results)
        write_json(os.path.join(args.output_dir, "seqtune_args.json"), {
            "data": vars(copy.copy(data_args)), "model": vars(model_args) | {"resolved": model_path},
            "training": vars(args), "text_column": data.columns.text, "text_pair_column": data.columns.text_pair,
            "metrics": list(data.metrics)})
        log_file.close()
    logger.info("Saved the model to %s; %s", args.output_dir,
                " ".join(f"{k}={v:.4f}" for k, v in results.items() if k.startswith("eval_")))
    return results
