"""`seqtune train`: the course's fine-tuning recipe, top to bottom, on accelerate (CPU, one GPU or many)."""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import sys
import time

import numpy as np
import torch
from tqdm.auto import tqdm

from seqtune.batching import (build_collator, build_stream_dataloader, build_train_dataloader, pad_fraction,
                              padding_strategies, plan_batches)
from seqtune.checkpoint import (INCOMPLETE_MARKER, disk_error, load_loop_state, resolve_resume_path,
                                save_checkpoint)
from seqtune.config import DataArguments, ModelArguments, TrainingArguments
from seqtune.errors import SeqtuneError
from seqtune.fast_dropout import use_fast_dropout
from seqtune.inference import logits_to_predictions, predict_logits
from seqtune.metrics import compute_metrics
from seqtune.modeling import load_config, load_model, load_tokenizer, resolve_model_path
from seqtune.prepare import batching_from_args, prepare_data, validate_training_args
from seqtune.report import build_report, write_model_card
from seqtune.streaming import EndlessBatches

logger = logging.getLogger("seqtune")
BEST_MODEL_DIR = "best_model"


def layer_depth(name: str, num_layers: int) -> int:
    """How deep a parameter sits: 0 for the embeddings, i + 1 for encoder layer i, num_layers + 1 for what lies
    above the encoder (pooler, classifier). Names follow transformers' encoders (`...layer.3.`, `...layers.3.`)."""
    match = re.search(r"\.layers?\.(\d+)\.", name)
    if match:
        return int(match.group(1)) + 1
    return 0 if "embeddings" in name else num_layers + 1


def build_optimizer(model, learning_rate: float, weight_decay: float, betas=(0.9, 0.999), eps: float = 1e-8,
                    implementation: str = "fused", layerwise_lr_decay: float = 1.0):
    """AdamW without weight decay on biases and LayerNorm weights; by default one fused kernel for all parameters
    (torch has it for CPU and CUDA), else `foreach` (multi-tensor) or `for_loop`. With `layerwise_lr_decay` < 1
    each layer below the head learns at that factor of the one above it (the head at `learning_rate`, the top
    encoder layer at lr x decay, the embeddings at lr x decay^(layers + 1))."""
    num_layers = getattr(model.config, "num_hidden_layers", 0) if layerwise_lr_decay != 1.0 else 0
    groups: dict[tuple[float, float], list] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        decay = 0.0 if param.ndim < 2 or "LayerNorm" in name or "layer_norm" in name else weight_decay
        scale = layerwise_lr_decay ** (num_layers + 1 - layer_depth(name, num_layers)) if num_layers else 1.0
        groups.setdefault((scale, decay), []).append(param)
    param_groups = [{"params": params, "weight_decay": decay, "lr": learning_rate * scale}
                    for (scale, decay), params in groups.items()]
    flags = {"fused": {"fused": True}, "foreach": {"foreach": True}, "for_loop": {"foreach": False}}[implementation]
    return torch.optim.AdamW(param_groups, lr=learning_rate, betas=betas, eps=eps, **flags)


def evaluate_model(model, dataset, collator, batch_size: int, metric_names, is_regression: bool,
                   accelerator=None, swapped=None, progress: bool = True) -> dict[str, float]:
    logits = predict_logits(model, dataset, collator, batch_size, accelerator, swapped, progress)
    predictions, _ = logits_to_predictions(logits, is_regression)
    return compute_metrics(metric_names, predictions, np.asarray(dataset.with_format(None)["labels"]))


def save_model(model, tokenizer, folder: str) -> None:
    """Write model + tokenizer into a temporary folder, then move the files in, so a half-written model is never
    mistaken for a complete one (the run's INCOMPLETE marker stays until the very end)."""
    staging = folder.rstrip("/") + ".saving"
    try:
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        os.makedirs(folder, exist_ok=True)
        for name in os.listdir(staging):
            os.replace(os.path.join(staging, name), os.path.join(folder, name))
        os.rmdir(staging)
    except OSError as error:
        shutil.rmtree(staging, ignore_errors=True)
        raise disk_error(error, folder) from error


def write_json(path: str, data: dict) -> None:
    tmp = path + ".tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, path)
    except OSError as error:
        raise disk_error(error, path) from error


def length_report(train_set, batching, batch_size: int, max_length: int, seed: int) -> dict:
    """Token-length histogram of the training rows and the pad fraction each strategy would cost (for the report)."""
    lengths = train_set.with_format(None)["length"]
    strategies = padding_strategies(max_length)
    strategies["this run"] = batching
    return {"histogram": np.bincount(lengths, minlength=max_length + 1).tolist(),
            "pad_fraction": {name: pad_fraction(lengths, plan_batches(lengths, b, batch_size, seed), b.padding,
                                                max_length, b.pad_to_multiple_of) for name, b in strategies.items()}}


def first_nonfinite(losses: list[torch.Tensor]) -> int | None:
    """Index of the first non-finite loss among the steps since the last check (one host sync per check)."""
    if not losses:
        return None
    bad = (~torch.isfinite(torch.stack(losses))).nonzero()
    return int(bad[0]) if len(bad) else None


def train(data_args: DataArguments, model_args: ModelArguments, args: TrainingArguments) -> dict:
    """Fine-tune and return `all_results` (also written to `output_dir/all_results.json`)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from transformers import get_scheduler

    # --- check every flag before loading or writing anything
    validate_training_args(data_args, args)
    resume_path = resolve_resume_path(args.resume_from_checkpoint, args.output_dir)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    # cpu=True on a machine without a GPU: under torchrun/accelerate launch, accelerate then joins the processes
    # with gloo instead of running each one alone
    accelerator = Accelerator(gradient_accumulation_steps=args.gradient_accumulation_steps,
                              cpu=not torch.cuda.is_available())
    set_seed(args.seed)

    # --- load the tokenizer and the data: columns, labels, tokenization (cached on disk, main process first)
    model_path = resolve_model_path(model_args.model_name_or_path)
    tokenizer = load_tokenizer(model_path, model_args.trust_remote_code)
    base_config = load_config(model_path, model_args.trust_remote_code)
    with accelerator.main_process_first():
        data = prepare_data(data_args, tokenizer, base_config, augment_train=True)
    streaming = data.train_stream is not None
    if "train" not in data.tokenized and not streaming:
        raise SeqtuneError(f"the data has no train split (splits: {list(data.tokenized)}): pass --train_file or a "
                           "dataset with a train split.")
    train_set, eval_split = data.train_stream if streaming else data.tokenized["train"], data.eval_split

    # --- the model, with label names in its config
    label_kwargs = {"num_labels": data.labels.num_labels}
    if data.labels.is_regression:
        label_kwargs["problem_type"] = "regression"
    else:
        label_kwargs["id2label"] = dict(enumerate(data.labels.names))
        label_kwargs["label2id"] = {name: i for i, name in enumerate(data.labels.names)}
    config = load_config(model_path, model_args.trust_remote_code, **label_kwargs)
    model = load_model(model_path, config, model_args.trust_remote_code, model_args.allow_pickle_weights,
                       model_args.ignore_mismatched_sizes)
    model.config.seqtune_symmetric_pairs = data.symmetric  # evaluate/predict average both orders when True
    pooler = getattr(getattr(model, model.base_model_prefix, None), "pooler", None)
    reinit_pooler = model_args.reinit_pooler
    if reinit_pooler is None:  # a sentence-transformers checkpoint: its [CLS] pooler was not part of its training
        reinit_pooler = os.path.isfile(os.path.join(model_path, "config_sentence_transformers.json"))
    if reinit_pooler and pooler is not None:
        std = getattr(model.config, "initializer_range", 0.02)  # BERT's initialiser, as for the fresh classifier
        for module in pooler.modules():
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.normal_(module.weight, std=std)
                torch.nn.init.zeros_(module.bias)
        logger.info("Re-initialised the pooler")

    if args.fast_dropout and accelerator.device.type == "cpu":
        logger.info("Fast CPU dropout on %d dropout layers", use_fast_dropout(model))

    # --- batches: the padding strategy chosen in one place
    batching = batching_from_args(data_args)
    collator = build_collator(tokenizer, batching.padding, data_args.max_seq_length, batching.pad_to_multiple_of)
    if streaming:  # each process reads its own part of the stream: not sharded again by accelerate
        if batching.group_by_length:
            logger.info("Streaming: batches are padded to their own longest row (length grouping needs the whole "
                        "dataset)")
        train_loader = EndlessBatches(build_stream_dataloader(
            train_set, collator, args.per_device_train_batch_size, args.seed, accelerator.process_index,
            accelerator.num_processes))
    else:
        train_loader = build_train_dataloader(train_set, collator, batching, args.per_device_train_batch_size,
                                              args.seed)
        sampler = train_loader.batch_sampler if batching.max_tokens_per_batch else train_loader.sampler

    # --- optimizer and schedule; accelerate places and shards everything
    optimizer = build_optimizer(model, args.learning_rate, args.weight_decay, (args.adam_beta1, args.adam_beta2),
                                args.adam_epsilon, layerwise_lr_decay=args.layerwise_lr_decay)
    if streaming:  # one endless pass: its length is unknown, so the run is --max_steps long
        model, optimizer = accelerator.prepare(model, optimizer)
        max_steps = steps_per_epoch = args.max_steps
    else:
        model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
        steps_per_epoch = math.ceil(len(train_loader) / args.gradient_accumulation_steps)
        epochs = args.num_train_epochs if args.num_train_epochs is not None else (2.0 if data.symmetric else 3.0)
        max_steps = args.max_steps if args.max_steps > 0 else math.ceil(epochs * steps_per_epoch)
    num_epochs = math.ceil(max_steps / steps_per_epoch)

    def epoch_at(step: int) -> float | None:  # None for a stream: its epochs are not known
        return None if streaming else round(step / steps_per_epoch, 4)
    # accelerate's scheduler wrapper steps once per process, so the schedule is counted in process-steps
    scheduler = accelerator.prepare(get_scheduler(
        args.lr_scheduler_type, optimizer,
        num_warmup_steps=math.ceil(args.warmup_ratio * max_steps) * accelerator.num_processes,
        num_training_steps=max_steps * accelerator.num_processes))
    if args.torch_compile:
        model = torch.compile(model)
    global_batch = args.per_device_train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    logger.info("Training %s for %d steps (%s); global batch %s",
                "a stream of rows" if streaming else f"{len(train_set)} rows", max_steps,
                "until --max_steps" if streaming else f"{num_epochs} epochs",
                f"~{data_args.max_tokens_per_batch} tokens x {accelerator.num_processes} processes x "
                f"{args.gradient_accumulation_steps}" if batching.max_tokens_per_batch else
                f"{global_batch} = {args.per_device_train_batch_size} per device x {accelerator.num_processes} "
                f"processes x {args.gradient_accumulation_steps} accumulation")

    # --- state of the loop; restored from a checkpoint when resuming
    state = {"step": 0, "epoch": 0, "batches_in_epoch": 0, "samples": 0, "real_tokens": 0, "train_time": 0.0,
             "best_metric": None, "best_step": None, "best_metrics": None}
    if resume_path:
        accelerator.load_state(resume_path)
        state.update(load_loop_state(resume_path))
        logger.info("Resumed from %s at step %d (epoch %d, batch %d)", resume_path, state["step"], state["epoch"],
                    state["batches_in_epoch"])
    main_metric = data.metrics[0]
    is_main = accelerator.is_main_process
    if is_main:
        os.makedirs(args.output_dir, exist_ok=True)
        if not resume_path:  # --overwrite_output_dir: checkpoints of an earlier run must not be resumed into this one
            for name in os.listdir(args.output_dir):
                if name.startswith("checkpoint-") or name.startswith(BEST_MODEL_DIR):
                    shutil.rmtree(os.path.join(args.output_dir, name), ignore_errors=True)
        with open(os.path.join(args.output_dir, INCOMPLETE_MARKER), "w") as f:
            f.write("This run has not finished: the model here may be missing or partial. Resume it with "
                    "--resume_from_checkpoint.\n")
    reporters = {r.strip() for r in args.report_to.split(",")} - {"none", ""}
    log_file = None
    if is_main and "jsonl" in reporters:
        log_file = open(os.path.join(args.output_dir, "train_log.jsonl"), "a" if resume_path else "w")
    tensorboard = None
    if is_main and "tensorboard" in reporters:
        from torch.utils.tensorboard import SummaryWriter

        tensorboard = SummaryWriter(os.path.join(args.output_dir, "runs"))
    if is_main and not streaming:  # a stream's lengths are not known in advance
        write_json(os.path.join(args.output_dir, "token_lengths.json"), length_report(
            train_set, batching, args.per_device_train_batch_size, data_args.max_seq_length, args.seed))

    def log(record: dict) -> None:
        if log_file:
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
        if tensorboard:
            for key, value in record.items():
                if key not in ("step", "epoch") and isinstance(value, (int, float)):
                    tensorboard.add_scalar(key.replace("eval_", "eval/") if key.startswith("eval_")
                                           else f"train/{key}", value, record["step"])

    def run_evaluation() -> None:
        if eval_split is None:
            return
        metrics = evaluate_model(accelerator.unwrap_model(model), data.tokenized[eval_split], collator,
                                 args.per_device_eval_batch_size, data.metrics, data.labels.is_regression,
                                 accelerator, data.swapped.get(eval_split), not args.disable_tqdm)
        epoch = epoch_at(state["step"])
        log({"step": state["step"], "epoch": epoch, **{f"eval_{k}": v for k, v in metrics.items()}})
        logger.info("eval step %d%s: %s", state["step"], "" if epoch is None else f" epoch {epoch:.2f}",
                    " ".join(f"{k}={v:.4f}" for k, v in metrics.items()))  # one line per evaluation
        value = metrics[main_metric]
        if state["best_metric"] is None or value > state["best_metric"]:  # NaN (constant outputs) never wins
            state.update(best_metric=value if math.isfinite(value) else -math.inf, best_step=state["step"],
                         best_metrics=metrics)
            if is_main:
                save_model(accelerator.unwrap_model(model), tokenizer, os.path.join(args.output_dir, BEST_MODEL_DIR))

    def check_losses(pending: list[torch.Tensor], stacked: bool = False) -> None:
        """Raise at the first non-finite loss among the steps since the last check."""
        values = pending[0] if stacked else (torch.stack(pending) if pending else torch.zeros(0))
        bad = first_nonfinite(list(values))
        if bad is not None:
            step = state["step"] - len(values) + bad + 1
            pending = list(values)
            last = [c for c in os.listdir(args.output_dir) if c.startswith("checkpoint-") and not c.endswith(".tmp")]
            raise SeqtuneError(
                f"the training loss became {float(pending[bad]):.4g} at step {step}"
                f"{'' if streaming else f' (epoch {step / steps_per_epoch:.2f})'}: lower --learning_rate, raise --warmup_ratio, check the data for "
                f"broken rows, or try --no_bf16. Nothing was saved after it; "
                + (f"the last good checkpoints are {sorted(last)}." if last else "there is no checkpoint yet."))

    # --- the loop
    autocast = torch.autocast(accelerator.device.type, dtype=torch.bfloat16, enabled=args.bf16)
    pending_losses: list[torch.Tensor] = []  # one scalar per optimizer step, on the device: no sync per step
    micro_losses: list[torch.Tensor] = []
    real_tokens = torch.zeros((), dtype=torch.long, device=accelerator.device)
    model.train()
    progress = tqdm(total=max_steps, initial=state["step"], desc="Training", unit="step", dynamic_ncols=True,
                    mininterval=0.5 if sys.stderr.isatty() else 30,  # a log file gets a line every 30 s
                    disable=args.disable_tqdm or not is_main or logger.getEffectiveLevel() > logging.INFO)
    start = time.perf_counter()
    while state["epoch"] < num_epochs and state["step"] < max_steps:
        loader = train_loader
        if streaming:
            loader = train_loader.skip(state["batches_in_epoch"])
        else:
            sampler.set_epoch(state["epoch"])
            if state["batches_in_epoch"]:
                loader = accelerator.skip_first_batches(train_loader, state["batches_in_epoch"])
        for batch in loader:
            if streaming:
                batch = batch.to(accelerator.device)
            with accelerator.accumulate(model):
                with autocast:
                    loss = model(**batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm > 0:
                    grad_norm = accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            micro_losses.append(loss.detach())
            state["batches_in_epoch"] += 1
            state["samples"] += batch["input_ids"].shape[0] * accelerator.num_processes
            real_tokens += batch["attention_mask"].sum()
            if not accelerator.sync_gradients:
                continue
            state["step"] += 1
            progress.update(1)
            pending_losses.append(torch.stack(micro_losses).mean())
            micro_losses = []
            step = state["step"]
            evaluate_now = args.eval_strategy == "steps" and step % args.eval_steps == 0
            save_now = bool(args.save_steps) and step % args.save_steps == 0
            if step % args.logging_steps == 0 or evaluate_now or save_now or step >= max_steps:
                pending_losses = [accelerator.reduce(torch.stack(pending_losses), reduction="mean")]  # all ranks
                check_losses(pending_losses, stacked=True)
                elapsed = state["train_time"] + time.perf_counter() - start
                record = {"step": step, "epoch": epoch_at(step),
                          "loss": round(float(pending_losses[0].mean()), 6),
                          "learning_rate": scheduler.get_last_lr()[0],
                          "grad_norm": round(float(grad_norm), 4) if args.max_grad_norm > 0 else None,
                          "samples_per_second": round(state["samples"] / elapsed, 2)}
                log(record)
                progress.set_postfix(loss=record["loss"], samples_s=record["samples_per_second"], refresh=False)
                pending_losses = []
            if evaluate_now or save_now:
                state["train_time"] += time.perf_counter() - start
                state["real_tokens"] += int(real_tokens)
                real_tokens.zero_()
                if evaluate_now:
                    run_evaluation()
                if save_now:
                    save_checkpoint(accelerator, args.output_dir, step, state, args.save_total_limit)
                start = time.perf_counter()
            if step >= max_steps:
                break
        else:  # the epoch ran to its end
            state["epoch"] += 1
            state["batches_in_epoch"] = 0
        check_losses(pending_losses)
        state["train_time"] += time.perf_counter() - start
        state["real_tokens"] += int(real_tokens)
        real_tokens.zero_()
        if args.eval_strategy == "epoch" or (args.eval_strategy == "steps" and state["step"] % args.eval_steps
                                             and state["step"] >= max_steps):
            run_evaluation()
        save_checkpoint(accelerator, args.output_dir, state["step"], state, args.save_total_limit)
        start = time.perf_counter()

    progress.close()

    # --- save the best model (by the task's main metric) with its tokenizer, and the results
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    best_dir = os.path.join(args.output_dir, BEST_MODEL_DIR)
    if state["best_step"] is not None and os.path.isdir(best_dir):
        from safetensors.torch import load_file

        unwrapped.load_state_dict(load_file(os.path.join(best_dir, "model.safetensors")), strict=False)
    train_time = state["train_time"]
    results = {f"eval_{k}": v for k, v in (state["best_metrics"] or {}).items()}
    results.update({
        "best_step": state["best_step"], "epoch": epoch_at(state["step"]),
        "global_step": state["step"], "train_runtime": round(train_time, 3), "train_samples": state["samples"],
        "train_samples_per_second": round(state["samples"] / train_time, 3),
        "train_tokens_per_second": round(state["real_tokens"] * accelerator.num_processes / train_time, 1),
        "main_metric": main_metric, "evaluated_split": eval_split,
    })
    if eval_split is not None and state["best_step"] is not None:  # for the report's confusion matrix
        logits = predict_logits(unwrapped, data.tokenized[eval_split], collator, args.per_device_eval_batch_size,
                                accelerator, data.swapped.get(eval_split), not args.disable_tqdm)
        predictions, _ = logits_to_predictions(logits, data.labels.is_regression)
    if is_main:
        save_model(unwrapped, tokenizer, args.output_dir)
        write_json(os.path.join(args.output_dir, "all_results.json"), results)
        if eval_split is not None and state["best_step"] is not None and not data.labels.is_regression:
            write_json(os.path.join(args.output_dir, "eval_predictions.json"), {
                "split": eval_split, "label_names": list(data.labels.names), "predictions": predictions.tolist(),
                "labels": list(data.tokenized[eval_split].with_format(None)["labels"])})
        write_json(os.path.join(args.output_dir, "seqtune_args.json"), {
            "data": vars(data_args), "model": {**vars(model_args), "resolved": model_path}, "training": vars(args),
            "text_column": data.columns.text, "text_pair_column": data.columns.text_pair,
            "metrics": list(data.metrics)})
        if log_file:
            log_file.close()
        if tensorboard:
            tensorboard.close()
        write_model_card(args.output_dir)
        build_report(args.output_dir)
        shutil.rmtree(best_dir, ignore_errors=True)
        os.remove(os.path.join(args.output_dir, INCOMPLETE_MARKER))
    logger.info("Saved the model to %s; %s", args.output_dir,
                " ".join(f"{k}={v:.4f}" for k, v in results.items() if k.startswith("eval_")))
    return results
