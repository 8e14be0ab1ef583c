"""`seqtune train`: the course's fine-tuning recipe, top to bottom, on accelerate (CPU, one GPU or many).

The recipe (`train`) calls named stages: setup of the data, the model, the batches, the optimizer and schedule,
the state (fresh, or restored from a checkpoint exactly), the loop (`seqtune.loop.fit`) and the finish."""

from __future__ import annotations

import logging
import math
import os
import sys
from dataclasses import replace

import torch

from seqtune.batching import build_collator, build_stream_dataloader, build_train_dataloader
from seqtune.best_model import BestModel, Selection, cpu_copy
from seqtune.checkpoint import (STATE_FILE, check_resume_settings, checkpoints, load_best_weights, load_ema_weights,
                                load_loop_state, resolve_resume_path, rotate_checkpoints, save_checkpoint,
                                verify_checkpoint)
from seqtune.compiling import (compile_for_training, compile_setting, compile_wanted, placement_problems,
                                resolve_fast_dropout, uses_cuda_graphs)
from seqtune.config import DataArguments, ModelArguments, TrainingArguments, comma_items, default_learning_rate
from seqtune.datastats import length_report
from seqtune.device_defaults import (MIN_BUDGET_BATCHES, apply_device_defaults, log_gpu_defaults, log_small_data,
                                     split_budget_batches)
from seqtune.ema import EMA_FILE, WeightEMA
from seqtune.errors import SeqtuneError, StoppedAfterFinishing, StoppedBySignal
from seqtune.fast_dropout import use_fast_dropout
from seqtune.fileio import WRITE_ERRORS, disk_error, remove_tree, usual_file_mode, write_json
from seqtune.lora import apply_lora, is_peft_model, merged_model, refuse_adapter_as_base, save_adapter
from seqtune.loop import EpochBatches, Hooks, LoopState, Plan, fit
from seqtune.losses import class_weights, use_rdrop, use_task_loss
from seqtune.model_family import match_model_to_tokenizer
from seqtune.model_size import estimate_training_memory
from seqtune.modeling import (enable_gradient_checkpointing, is_sentence_transformers_checkpoint, label_config,
                              load_config, load_model, load_tokenizer, reinit_pooler, reinit_top_layers,
                              resolve_model_path)
from seqtune.optim import build_optimizer, build_scheduler
from seqtune.output_dir import OutputDir
from seqtune.phases import TRAINING, PhaseClock
from seqtune.prepare import PreparedData, batching_from_args, prepare_data
from seqtune.source import local_data_stamp, local_model_stamp
from seqtune.stopping import GracefulStop
from seqtune.streaming import EndlessBatches
from seqtune.tracking import StepLog, sink_names, with_console_lines
from seqtune.validation import validate_training_args

logger = logging.getLogger("seqtune")


def train(data_args: DataArguments, model_args: ModelArguments, args: TrainingArguments) -> dict:
    """Fine-tune and return `all_results` (also written to `output_dir/all_results.json`)."""
    clock = PhaseClock()  # the phase table: start-up (process start -> here), data, tokenization, model, ...
    data_args, args = replace(data_args), replace(args)  # (resolved below: the caller's stay as given)
    # --- every flag checked before anything is loaded or written
    validate_training_args(data_args, args, model_args.reinit_top_layers)
    resume_path = resolve_resume_path(args.resume_from_checkpoint, args.output_dir)
    accelerator = setup_accelerator(args)
    with OutputDir(args.output_dir, accelerator.is_main_process).open() as out:  # locked: one run at a time
        out.refuse_foreign()  # a user's own files are never written over
        # --- tokenizer, data (tokenized once, cached; main process first), model with the data's labels
        model_path = resolve_model_path(model_args.model_name_or_path)
        flags = recorded_flags(data_args, model_args, args, model_path)
        tokenizer = load_tokenizer(model_path, model_args.trust_remote_code)
        clock.mark("model")
        data = setup_data(accelerator, data_args, args, tokenizer, model_path, model_args.trust_remote_code)
        clock.mark("data", inside={"tokenization": data.tokenize_seconds})
        model = setup_model(model_path, model_args, args, data, tokenizer, on_cpu=accelerator.device.type == "cpu")
        selection = setup_selection(data, args)
        # --- batches, optimizer, schedule; accelerate places and shards them
        loader, sampler, steps_per_epoch = setup_batches(accelerator, data, data_args, args)
        plan = make_plan(args, data, steps_per_epoch)
        log_memory(model, data, data_args, args)
        optimizer, scheduler = setup_optimizer(model, args, plan.max_steps, accelerator.num_processes)
        model, optimizer, scheduler, loader, ema = place(accelerator, model, optimizer, scheduler, loader, sampler,
                                                         args)
        log_plan(accelerator, data, data_args, args, plan)
        # --- the state: fresh, or restored from a checkpoint (exactly, or refused)
        settings = run_settings(data, data_args, model_path, args, accelerator.num_processes, plan,
                                model_args.torch_dtype)
        if resume_path:  # a checkpoint of another run, or damaged, is refused before anything is written
            check_resumable(resume_path, settings, args.allow_inexact_resume, accelerator.num_processes)
        out.start(overwrite=args.overwrite_output_dir and not resume_path, fresh=not resume_path)
        steps = setup_tracking(accelerator, out, args, resume_path, flags)
        best = setup_best_model(accelerator, model, data, args, steps, plan, selection, ema)
        state = restore_state(accelerator, resume_path, best, plan, ema) if resume_path else LoopState()
        if accelerator.is_main_process and not data.streaming and not resume_path:
            write_token_lengths(out, data, data_args, args)
        # --- the loop; SIGTERM/SIGINT finish the step and write a checkpoint
        progress = show_progress(accelerator, args)  # else a console line every --logging_steps
        hooks = loop_hooks(accelerator, out, best, steps, plan, settings, args, ema, progress)
        clock.mark("model")
        # (a signal during the final save lets the save finish; the loader's workers stop when training ends)
        with GracefulStop() as stop, EpochBatches(accelerator, loader, sampler) as batches:
            out.loop_begins()
            before = (state.eval_time, state.checkpoint_time)  # a resumed run's state counts the earlier ones too
            stepped = compile_for_training(model, args)  # (evaluation and saving use the eager `model`)
            signum = fit(accelerator, stepped, optimizer, scheduler, batches, plan, state, hooks, stop,
                         args.max_grad_norm, args.bf16, progress=progress, cuda_graphs=uses_cuda_graphs(args))
            close_tracking(out, steps)
            clock.mark(TRAINING, inside={"evaluation": state.eval_time - before[0],
                                         "checkpoints": state.checkpoint_time - before[1]})
            if signum:
                raise StoppedBySignal(signum, os.path.join(out.path, f"checkpoint-{state.step}"))
            # --- the best model (by the task's main metric), its results, card and report
            results = finish(accelerator, out, model, tokenizer, best, state, plan, data, clock, flags,
                             args.save_optimizer_state_on_finish)
        if stop.signum:  # it came during the final save, which finished: now stop as asked
            raise StoppedAfterFinishing(stop.signum, out.path)
        return results


# ----------------------------------------------------------------------------------------------- setup
STAMPS = ("data_files", "model_files")


def recorded_flags(data_args: DataArguments, model_args: ModelArguments, args: TrainingArguments, model_path: str
                   ) -> dict:
    """The run's flags as seqtune_args.json records them (live: as resolved later in `train`), with the stamps of
    the local data files read (a sweep compares them before it reuses a run)."""
    return {"data": vars(data_args), "model": {**vars(model_args), "resolved": model_path}, "training": vars(args),
            "data_files": local_data_stamp(data_args), "model_files": local_model_stamp(model_path)}


def setup_best_model(accelerator, model, data: PreparedData, args: TrainingArguments, steps: StepLog, plan: Plan,
                     selection: Selection, ema: WeightEMA | None) -> BestModel:
    """Evaluation on the evaluation split during training, and the best weights by the chosen metric."""
    return BestModel(accelerator, model, data.tokenized.get(data.eval_split) if data.eval_split else None,
                     data.swapped.get(data.eval_split), data.collator, args.per_device_eval_batch_size,
                     data.all_metrics, data.space, steps.log, plan.epoch_at, show_progress(accelerator, args),
                     selection, bf16=args.bf16, ema=ema)


def resolve_batch_defaults(data_args: DataArguments, args: TrainingArguments, device_type: str, train) -> None:
    """The batch flags left out, by device and the training split's size (`seqtune.device_defaults`), then the
    learning rate left out (scaled for a token budget); both recorded in seqtune_args.json as resolved."""
    size = split_budget_batches(train)
    left_out = args.per_device_train_batch_size is None and data_args.max_tokens_per_batch is None
    gpu_defaults = apply_device_defaults(data_args, args, device_type, size)
    args.learning_rate = default_learning_rate(args, data_args.max_tokens_per_batch)
    if gpu_defaults:
        log_gpu_defaults(data_args, args.learning_rate)
    elif device_type == "cuda" and left_out and size is not None and size < MIN_BUDGET_BATCHES:
        log_small_data(size)


def setup_accelerator(args: TrainingArguments):
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    # cpu=True on a machine without a GPU: under torchrun/accelerate launch, accelerate then joins the processes
    # with gloo instead of running each one alone
    # on a GPU, batches are copied from pinned memory without waiting (the loaders pin it: batching.PIN_MEMORY)
    accelerator = Accelerator(gradient_accumulation_steps=args.gradient_accumulation_steps,
                              cpu=not torch.cuda.is_available(),
                              dataloader_config=DataLoaderConfiguration(non_blocking=torch.cuda.is_available()))
    set_seed(args.seed)
    problems = placement_problems(args, accelerator.num_processes)  # (once the processes are known: still before
    if problems:                                                    # the output folder is touched)
        raise SeqtuneError(*problems)
    return accelerator


TRAINING_SPLITS = ["train", "validation", "validation_matched", "dev"]  # a test split is not tokenized to train


def setup_data(accelerator, data_args: DataArguments, args: TrainingArguments, tokenizer, model_path: str,
               trust_remote_code: bool) -> PreparedData:
    """Columns, labels, tokenization (main process first: the others reuse its cache), the batch flags left out
    (which depend on the training split's size) and the collator."""
    with accelerator.main_process_first():
        data = prepare_data(data_args, tokenizer, load_config(model_path, trust_remote_code), augment_train=True,
                            splits=TRAINING_SPLITS)
    if data.train is None:
        raise SeqtuneError(f"the data has no train split (splits: {list(data.tokenized)}): pass --train_file or a "
                           "dataset with a train split.")
    resolve_batch_defaults(data_args, args, accelerator.device.type, data.train)  # the batch and lr left out
    batching = batching_from_args(data_args)
    data.collator = build_collator(tokenizer, batching.padding, data_args.max_seq_length, batching.pad_to_multiple_of)
    return data


def setup_model(model_path: str, model_args: ModelArguments, args: TrainingArguments, data: PreparedData, tokenizer,
                on_cpu: bool):
    """The pre-trained model with a fresh classification head for the data's labels; then, when asked, gradient
    checkpointing, LoRA adapters (peft), fast CPU dropout (which also swaps the adapters' dropout) and class weights."""
    refuse_adapter_as_base(model_path)
    config = load_config(model_path, model_args.trust_remote_code,
                         **label_config(data.labels.names, data.labels.multi_label))
    model = load_model(model_path, config, model_args.trust_remote_code, model_args.allow_pickle_weights,
                       model_args.ignore_mismatched_sizes, model_args.torch_dtype)
    match_model_to_tokenizer(model, tokenizer)
    model.config.seqtune_symmetric_pairs = data.symmetric  # evaluate/predict average both orders when True
    model.config.seqtune_text_pairs = data.columns.text_pair is not None  # predict/serve refuse the other kind
    model.config.seqtune_max_seq_length = data.max_seq_length  # evaluate/predict/serve truncate as training did
    model.config.seqtune_eval_bf16 = args.bf16  # evaluated in bfloat16 autocast: evaluate/predict do so by default
    wanted = model_args.reinit_pooler
    if wanted is None:
        wanted = is_sentence_transformers_checkpoint(model_path)
    if wanted:
        logger.info("Re-initialised the pooler" if reinit_pooler(model) else
                    f"No pooler to re-initialise in {type(model).__name__}: skipped")
    if model_args.reinit_top_layers:
        logger.info("Re-initialised the top %d layer(s)", reinit_top_layers(model, model_args.reinit_top_layers))
    if args.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if args.lora_r:
        model = apply_lora(model, args.lora_r, args.lora_alpha, args.lora_dropout,
                           comma_items(args.lora_target_modules))
    if model_args.torch_dtype in ("bfloat16", "float16"):
        logger.warning("Training %s weights without a float32 master copy (%s): small updates can be lost to "
                       "rounding.", model_args.torch_dtype, "the classifier head and pooler; the LoRA adapters stay "
                       "float32" if args.lora_r else "every weight; with --lora_r only the head and pooler")
    if resolve_fast_dropout(args, on_cpu):
        logger.info("--torch_compile: inductor fuses torch's own dropout; the fast CPU dropout is off")
    if args.fast_dropout and on_cpu:
        logger.info("Fast CPU dropout: %s", use_fast_dropout(model))
    setup_loss(model, data, args)  # hooks on the (possibly peft-wrapped) model
    return model


def log_memory(model, data: PreparedData, data_args: DataArguments, args: TrainingArguments) -> None:
    """Parameters and the training memory a batch of the longest rows needs, before anything is trained."""
    longest = data_args.max_seq_length if data.streaming else min(max(data.train["length"], default=1),
                                                                   data_args.max_seq_length)
    rows = max(1, data_args.max_tokens_per_batch // longest) if data_args.max_tokens_per_batch else \
        args.per_device_train_batch_size
    rows *= 2 if args.rdrop_alpha else 1  # R-Drop passes the batch stacked on itself
    estimate = estimate_training_memory(model, rows, longest, args.bf16, args.gradient_checkpointing)
    logger.info("Model: %s", estimate.describe(rows, longest))


def setup_loss(model, data: PreparedData, args: TrainingArguments) -> None:
    """--class_weights and --label_smoothing_factor: the task's loss, weighted per class and smoothed; --rdrop_alpha:
    R-Drop's consistency term (hooks on the model, the task loss's first: R-Drop adds to the loss it computes;
    nothing else changes)."""
    weights = setup_class_weights(data, args.class_weights)
    smoothing = args.label_smoothing_factor
    if smoothing and data.labels.is_regression:
        logger.warning("--label_smoothing_factor ignored: the labels are numbers (regression), not classes")
        smoothing = args.label_smoothing_factor = 0.0  # (in place: a checkpoint records what the run did)
    if weights is not None or smoothing:
        use_task_loss(model, weights, smoothing, data.labels.multi_label)
    if smoothing:
        logger.info("Label smoothing while training: %g", smoothing)
    if args.rdrop_alpha:
        if not any(isinstance(m, torch.nn.Dropout) and m.p > 0 for m in model.modules()):
            logger.warning("--rdrop_alpha: %s has no active dropout, so both passes agree and R-Drop only doubles "
                           "the cost", type(model).__name__)
        kind = "regression" if data.labels.is_regression else "multi" if data.labels.multi_label else "single"
        use_rdrop(model, args.rdrop_alpha, kind)
        logger.info("R-Drop: every training row passes twice, consistency weight %g", args.rdrop_alpha)


def setup_class_weights(data: PreparedData, value: str | None) -> list[float] | None:
    """--class_weights: the loss's weight per class (None: unweighted)."""
    if value and data.labels.is_regression:
        logger.warning("--class_weights ignored: the labels are numbers (regression), not classes")
    if not value or data.labels.is_regression:
        return None
    labels = None if data.streaming else data.train.with_format(None)["labels"]
    if labels is None and value.strip().lower() == "auto":
        raise SeqtuneError("--class_weights auto counts the training labels, which a stream does not know in "
                           "advance: give one weight per label (--class_weights 1,4).")
    weights = class_weights(value, labels, data.labels.num_labels, data.labels.multi_label)
    logger.info("Class weights: %s", ", ".join(f"{name} {w:.3f}" for name, w in zip(data.labels.names, weights)))
    return weights


def setup_selection(data: PreparedData, args: TrainingArguments) -> Selection:
    """Which validation metric picks the saved model (--metric_for_best_model, else the task's main metric)."""
    metric = args.metric_for_best_model or data.metrics[0]
    if args.early_stopping_patience and data.eval_split is None:
        logger.warning("--early_stopping_patience ignored: the data has no validation split to evaluate on")
    computed = (*data.all_metrics, "loss")
    if metric not in computed:
        raise SeqtuneError(f"--metric_for_best_model {metric}: not computed for this data; choose one of "
                           f"{', '.join(computed)}.")
    return Selection.of(metric, args.greater_is_better, args.early_stopping_patience)


def setup_batches(accelerator, data: PreparedData, data_args: DataArguments, args: TrainingArguments):
    """The training loader, its sampler (None for a stream) and the optimizer steps per epoch (None: a stream)."""
    batching = batching_from_args(data_args)
    if data.streaming:  # each process reads its own part of the stream
        if batching.group_by_length:
            logger.info("Streaming: batches are padded to their own longest row (length grouping needs the whole "
                        "dataset)")
        loader = EndlessBatches(build_stream_dataloader(
            data.train, data.collator, args.per_device_train_batch_size, batch_order_seed(args),
            accelerator.process_index, accelerator.num_processes))
        return loader, None, None
    loader = build_train_dataloader(data.train, data.collator, batching, args.per_device_train_batch_size,
                                    batch_order_seed(args), args.dataloader_num_workers)
    sampler = loader.batch_sampler if batching.max_tokens_per_batch else loader.sampler
    batches_per_process = math.ceil(len(loader) / accelerator.num_processes)  # what accelerate's sharding yields
    return loader, sampler, math.ceil(batches_per_process / args.gradient_accumulation_steps)


def place(accelerator, model, optimizer, scheduler, loader, sampler, args: TrainingArguments):
    """accelerate places (and shards) model, optimizer, schedule and batches; the weight average starts from the
    placed weights."""
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if sampler is not None:  # a stream is split across processes by build_stream_dataloader, not accelerate
        loader = accelerator.prepare(loader)
    ema = WeightEMA(accelerator.unwrap_model(model), args.ema_decay) if args.ema_decay else None
    return model, optimizer, scheduler, loader, ema


def setup_optimizer(model, args: TrainingArguments, max_steps: int, num_processes: int):
    optimizer = build_optimizer(model, args.learning_rate, args.weight_decay, (args.adam_beta1, args.adam_beta2),
                                args.adam_epsilon, layerwise_lr_decay=args.layerwise_lr_decay)
    return optimizer, build_scheduler(optimizer, args.lr_scheduler_type, args.warmup_ratio, max_steps, num_processes)


def make_plan(args: TrainingArguments, data: PreparedData, steps_per_epoch: int | None) -> Plan:
    if steps_per_epoch is None:  # one endless pass: its length is unknown, so the run is --max_steps long
        max_steps = args.max_steps
    else:
        epochs = args.num_train_epochs if args.num_train_epochs is not None else (2.0 if data.symmetric else 3.0)
        max_steps = args.max_steps if args.max_steps > 0 else math.ceil(epochs * steps_per_epoch)
    return Plan(max_steps=max_steps, steps_per_epoch=steps_per_epoch, log_every=args.logging_steps,
                eval_every=args.eval_steps if args.eval_strategy == "steps" else None,
                eval_per_epoch=args.eval_strategy == "epoch", save_every=args.save_steps)


def log_plan(accelerator, data: PreparedData, data_args: DataArguments, args: TrainingArguments, plan: Plan) -> None:
    processes, accumulation = accelerator.num_processes, args.gradient_accumulation_steps
    batch = (f"~{data_args.max_tokens_per_batch} tokens x {processes} processes x {accumulation}"
             if data_args.max_tokens_per_batch else
             f"{args.per_device_train_batch_size * processes * accumulation} = {args.per_device_train_batch_size} per "
             f"device x {processes} processes x {accumulation} accumulation")
    logger.info("Training %s for %d steps (%s); global batch %s",
                "a stream of rows" if data.streaming else f"{len(data.train)} rows", plan.max_steps,
                "until --max_steps" if data.streaming else f"{plan.num_epochs} epochs", batch)


def show_progress(accelerator, args: TrainingArguments) -> bool:
    """A progress bar on a terminal; a log file gets a line every --logging_steps instead (no escape codes)."""
    return (not args.disable_tqdm and accelerator.is_main_process and logger.getEffectiveLevel() <= logging.INFO
            and sys.stderr.isatty())


TRACKER_FOLDERS = {"jsonl": "train_log.jsonl", "tensorboard": "runs", "wandb": "wandb"}  # what each sink writes


def setup_tracking(accelerator, out: OutputDir, args: TrainingArguments, resume_path: str | None, flags: dict
                   ) -> StepLog:
    """The step log's sinks (--report_to), continued from the checkpoint's step when resuming."""
    sinks = sink_names(args.report_to)
    # recorded before the sinks create them: a signal in between must not leave files the next run calls foreign
    out.record(*[name for sink, name in TRACKER_FOLDERS.items() if sink in sinks])
    return StepLog(out.path, sinks, enabled=accelerator.is_main_process,
                   resume_step=load_loop_state(resume_path)["step"] if resume_path else None,
                   config={k: v for k, v in flags.items() if k not in STAMPS})  # (file stamps: not tracker params)


def close_tracking(out: OutputDir, steps: StepLog) -> None:
    steps.close()
    for sink, name in TRACKER_FOLDERS.items():
        if sink in steps.sinks and os.path.isdir(os.path.join(out.path, name)):
            out.record_tree(name)


def write_token_lengths(out: OutputDir, data: PreparedData, data_args: DataArguments, args: TrainingArguments
                        ) -> None:
    """token_lengths.json: the training rows' lengths and each padding strategy's cost (the report's histogram)."""
    write_json(out.file("token_lengths.json"), length_report(
        data.train, batching_from_args(data_args), args.per_device_train_batch_size, data_args.max_seq_length,
        batch_order_seed(args)))


def batch_order_seed(args: TrainingArguments) -> int:
    """The seed of the batches' order: --data_seed, else --seed (transformers' rule)."""
    return args.seed if args.data_seed is None else args.data_seed


def loop_hooks(accelerator, out: OutputDir, best: BestModel, steps: StepLog, plan: Plan, settings: dict,
               args: TrainingArguments, ema: WeightEMA | None, progress: bool) -> Hooks:
    """What the loop calls: evaluate (and keep the best), log (console lines when no bar shows), write a
    checkpoint, and after each optimizer step fold the weights into the average (--ema_decay)."""
    return Hooks(evaluate=best, log=steps.log if progress else with_console_lines(steps.log, plan.max_steps),
                 checkpoint=lambda s: write_checkpoint(accelerator, out, s, settings, best, args.save_total_limit,
                                                       ema),
                 after_step=[lambda s: ema.update(s.step)] if ema else [])


# ----------------------------------------------------------------------------------------------- state
def run_settings(data: PreparedData, data_args: DataArguments, model_path: str, args: TrainingArguments,
                 num_processes: int, plan: Plan, torch_dtype: str | None = None) -> dict:
    """What determines a run's steps: a resume with other values would not continue it exactly."""
    source = data.fingerprint or repr((data_args.dataset_name, data_args.dataset_config_name, data_args.train_file))
    return {"data": source, "labels": None if data.labels.names is None else list(data.labels.names),
            "model": model_path, "processes": num_processes, "max_steps": plan.max_steps,
            "per_device_train_batch_size": args.per_device_train_batch_size,
            "gradient_accumulation_steps": args.gradient_accumulation_steps, "seed": args.seed,
            "data_seed": args.data_seed,  # (None: the batches follow --seed, as before the flag)
            "learning_rate": args.learning_rate, "lr_scheduler_type": args.lr_scheduler_type,
            "warmup_ratio": args.warmup_ratio, "weight_decay": args.weight_decay,
            "layerwise_lr_decay": args.layerwise_lr_decay, "max_grad_norm": args.max_grad_norm, "bf16": args.bf16,
            "fast_dropout": args.fast_dropout, "max_seq_length": data_args.max_seq_length,
            "batching": repr(batching_from_args(data_args)), "symmetric_pairs": data.symmetric,
            "eval_strategy": args.eval_strategy, "eval_steps": args.eval_steps, "save_steps": args.save_steps,
            "adam": [args.adam_beta1, args.adam_beta2, args.adam_epsilon], "torch_compile": compile_wanted(args),
            "lora": [args.lora_r, args.lora_alpha, args.lora_dropout, comma_items(args.lora_target_modules)],
            "gradient_checkpointing": args.gradient_checkpointing, "torch_dtype": torch_dtype or "float32",
            "evaluation_data": getattr(data.tokenized.get(data.eval_split), "_fingerprint", None),
            "class_weights": args.class_weights, "metric_for_best_model": args.metric_for_best_model,
            "ema_decay": args.ema_decay, "torch_compile_mode": compile_setting(args),  # (None: as before it)
            "rdrop_alpha": args.rdrop_alpha or None,  # (None when off: checkpoints written before it still match)
            "label_smoothing_factor": args.label_smoothing_factor or None,  # (the same)
            "greater_is_better": args.greater_is_better, "early_stopping_patience": args.early_stopping_patience}


def check_resumable(path: str, settings: dict, allow_inexact: bool, num_processes: int) -> None:
    """Every part of the checkpoint is whole, and it was written with these settings (or --allow_inexact_resume):
    damage first, which no flag gets past."""
    verify_checkpoint(path, num_processes)
    check_resume_settings(path, load_loop_state(path).get("settings"), settings, allow_inexact)


def restore_state(accelerator, path: str, best: BestModel, plan: Plan, ema: WeightEMA | None = None) -> LoopState:
    """Model, optimizer, schedule, random states, the weight average and the loop's position, from a checkpoint
    already checked to be whole and written with the same settings (or --allow_inexact_resume)."""
    accelerator.load_state(path)
    if ema is not None and os.path.isfile(os.path.join(path, EMA_FILE)):
        ema.load_state_dict(load_ema_weights(path))
    elif ema is not None:  # (--allow_inexact_resume from a checkpoint written without --ema_decay)
        ema.restart()
        logger.warning("%s holds no weight average: it starts from the checkpoint's weights", path)
    state = LoopState.from_dict(load_loop_state(path))
    # a larger --max_steps extends a finished run; one that stopped early stays stopped
    state.finished = state.finished and (state.step >= plan.max_steps or state.stopped_early)
    if accelerator.is_main_process and state.best_step is not None:
        best.weights = load_best_weights(path)
        if best.weights is None and state.best_step == state.step:
            best.weights = cpu_copy(accelerator.unwrap_model(best.model))
        if best.weights is None:
            raise SeqtuneError(f"checkpoint {path} does not hold the weights of its best evaluation (step "
                               f"{state.best_step}): resume from a checkpoint written by this version of seqtune.")
    logger.info("Resumed from %s at step %d (epoch %d, batch %d)", path, state.step, state.epoch,
                state.batches_in_epoch)
    return state


def write_checkpoint(accelerator, out: OutputDir, state: LoopState, settings: dict, best: BestModel,
                     limit: int | None, ema: WeightEMA | None = None) -> str:
    name = f"checkpoint-{state.step}"
    if accelerator.is_main_process:
        if os.path.exists(os.path.join(out.path, name)) and not out.is_owned(name):
            raise SeqtuneError(f"{out.path}/{name} exists and was not written by seqtune: move it away, or choose "
                               "another --output_dir.")
        out.record(name)
    path = save_checkpoint(accelerator, out.path, state.step, {**state.to_dict(), "settings": settings},
                           best.apart_from(state.step, state),
                           ema_weights=ema.state_dict() if ema and accelerator.is_main_process else None,
                           install=lambda staging, final: out.install(staging, name, last=STATE_FILE))
    if accelerator.is_main_process:
        if os.path.isdir(os.path.join(out.path, "runs")):
            out.record_tree("runs")  # TensorBoard's event files so far
        rotate_checkpoints(out.path, limit, out.is_owned, out.remove_owned)
    return path


# ----------------------------------------------------------------------------------------------- finish
def finish(accelerator, out: OutputDir, model, tokenizer, best: BestModel, state: LoopState, plan: Plan,
           data: PreparedData, clock: PhaseClock, flags: dict, keep_optimizer_state: bool = False) -> dict:
    """Save the best model once, with its results, the run's flags, the evaluation's predictions, card and report;
    then drop the checkpoints (optimizer state: twice the model) unless --save_optimizer_state_on_finish. The phase
    table goes into all_results.json and the log."""
    accelerator.wait_for_everyone()
    results = results_of(state, plan, data, accelerator.num_processes, best.selection)
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model)
        if best.weights is not None:
            unwrapped.load_state_dict(best.weights)
        elif best.ema is not None:  # nothing evaluated: the average of the weights is the model
            best.ema.apply()
        if state.best_threshold is not None:  # multi-label: evaluate and predict use the validation's threshold
            unwrapped.config.seqtune_threshold = state.best_threshold
        save_model(unwrapped, tokenizer, out, adapter_only=flags["training"]["save_adapter_only"])
        if state.best_predictions is not None:
            write_eval_predictions(out, data, state.best_predictions, state.best_logits)
        write_json(out.file("seqtune_args.json"), {**flags, "text_column": data.columns.text,
                                                   "text_pair_column": data.columns.text_pair,
                                                   "metrics": list(data.metrics)})
        clock.mark("saving")
        write_json(out.file("all_results.json"), {**results, "phase_seconds": clock.table()})  # the report's input
        write_card_and_report(out)
        clock.mark("report")
        write_json(out.file("all_results.json"), {**results, "phase_seconds": clock.table()})
        out.mark_complete()  # the run is whole; until here a kill leaves its last checkpoint to resume from
        if not keep_optimizer_state:
            for path in checkpoints(out.path):
                out.remove_owned(os.path.basename(path))
            clock.mark("saving")
        results["phase_seconds"] = clock.table()
        write_json(out.file("all_results.json"), results)  # again, with every phase's time in it
    else:
        clock.mark("saving")
    logger.info("Phases (this process): %s", clock.line())
    logger.info("Saved the model to %s; %s", out.path,
                " ".join(f"{k}={v:.4f}" for k, v in results.items() if k.startswith("eval_")))
    return results


def write_eval_predictions(out: OutputDir, data: PreparedData, predictions: list, logits: list | None = None
                           ) -> None:
    """The best evaluation's predictions and logits beside the labels (the report's confusion matrix and per-class
    table; seed ensembles scored without a second pass); a warning when they all name one class."""
    from seqtune.metrics import collapse_warning

    labels = data.tokenized[data.eval_split].with_format(None)["labels"]
    if data.labels.multi_label:
        labels = [[int(v) for v in row] for row in labels]
    warning = collapse_warning(predictions, labels, data.labels.names, data.eval_split)
    if warning:
        logger.warning("The saved model: %s", warning)
    write_json(out.file("eval_predictions.json"), {
        "split": data.eval_split, "label_names": list(data.labels.names), "multi_label": data.labels.multi_label,
        "predictions": predictions, "labels": list(labels), "logits": logits})


def results_of(state: LoopState, plan: Plan, data: PreparedData, num_processes: int, selection: Selection
               ) -> dict:
    train_time = max(state.train_time, 1e-9)
    results = {f"eval_{k}": v for k, v in (state.best_metrics or {}).items()}
    results.update({
        "best_step": state.best_step, "epoch": plan.epoch_at(state.step), "global_step": state.step,
        "train_runtime": round(state.train_time, 3), "train_samples": state.samples,
        "train_samples_per_second": round(state.samples / train_time, 3),
        "train_tokens_per_second": round(state.real_tokens * num_processes / train_time, 1),
        "main_metric": selection.metric, "greater_is_better": selection.greater_is_better,
        "task_metrics": list(data.metrics), "stopped_early": state.stopped_early,
        "evaluated_split": data.eval_split})
    return results


def save_model(model, tokenizer, out: OutputDir, adapter_only: bool = False) -> None:
    """Model + tokenizer written into a staging folder inside --output_dir, then moved into place file by file, so
    a half-written model is never mistaken for a complete one (the INCOMPLETE marker stays until the end). A LoRA
    model is saved merged (a plain transformers model), or as its adapter with the config that names its labels."""
    staging = out.file(".model.saving")
    try:
        remove_tree(staging)
        if is_peft_model(model) and adapter_only:
            save_adapter(model, staging)
            base = model.get_base_model()
            base.config.architectures = [type(base).__name__]
            base.config.save_pretrained(staging)
        else:
            (merged_model(model) if is_peft_model(model) else model).save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        names = os.listdir(staging)
        out.record(*names)
        usual_file_mode(*[os.path.join(staging, name) for name in names])
        for name in names:
            os.replace(os.path.join(staging, name), os.path.join(out.path, name))
        os.rmdir(staging)
    except WRITE_ERRORS as error:
        remove_tree(staging)
        raise disk_error(error, out.path) from error


def write_card_and_report(out: OutputDir) -> None:
    """The model card and the HTML report are for people: a failure there never fails a finished training."""
    from seqtune.report import REPORT_DIR, build_report, write_model_card

    out.record("README.md", REPORT_DIR)
    for what, build in (("model card", write_model_card), ("report", build_report)):
        try:
            build(out.path)
            out.record_tree(REPORT_DIR)
        except Exception as error:  # noqa: BLE001 - whatever broke, the model and results are saved
            logger.warning("Could not write the %s (%s: %s); `seqtune report %s` retries.", what,
                           type(error).__name__, error, out.path)
