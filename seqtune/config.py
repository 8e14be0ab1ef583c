"""Typed configuration. Flag names follow transformers' `TrainingArguments` and `run_glue.py` where the concept
is the same; the CLI help is generated from these docstrings (`HfArgumentParser`). Only recipes read these
objects: components take flat values."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

EMBEDDED_MODEL = "all-MiniLM-L6-v2 (embedded)"
MAX_SEQ_LENGTH = 128  # --max_seq_length's default (and what a model without a recorded length is read at)
# the schedules transformers' get_scheduler builds from warmup and total steps alone and that step without a metric
# (the loop calls scheduler.step() without one; the min-lr and warmup-stable-decay ones need more arguments)
LR_SCHEDULERS = ("linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
                 "inverse_sqrt")


def _f(default, help: str, **kwargs):
    return field(default=default, metadata={"help": help, **kwargs})


def comma_items(values) -> list[str]:
    """The items of a list flag; an item may also hold several, comma-separated ("jsonl,tensorboard")."""
    values = [values] if isinstance(values, str) else list(values or [])
    return [item.strip() for value in values for item in str(value).split(",") if item.strip()]


@dataclass
class DataArguments:
    """Where the data comes from, which columns hold text and labels, and how it is tokenized and batched."""

    task_name: str | None = _f(None, "A GLUE task (cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli): its columns, "
                               "labels and metrics. Alone it means --dataset_name glue --dataset_config_name TASK.")
    dataset_name: str | None = _f(None, "A Hub dataset id (e.g. glue) or a local folder laid out like one.")
    dataset_config_name: str | None = _f(None, "The dataset's configuration (e.g. mrpc).")
    train_file: str | None = _f(None, "Training data: CSV, TSV, JSON, JSONL or Parquet.")
    validation_file: str | None = _f(None, "Validation data, same formats.")
    test_file: str | None = _f(None, "Test data, same formats; labels may be absent or -1.")
    text_column: str | None = _f(None, "Column with the (first) text. Default: inferred from common names.")
    text_pair_column: str | None = _f(None, "Column with the second text of a pair. Default: inferred.")
    label_column: str | None = _f(None, "Column with the label. Default: inferred (label, labels, score).")
    symmetric_pairs: bool | None = _f(None, "The pair (a, b) means the same as (b, a), as for paraphrases: train on "
                                      "both orders and average both orders' predictions. Default: the task's fact "
                                      "(on for mrpc, qqp, stsb), off for other data.")
    max_seq_length: int | None = _f(MAX_SEQ_LENGTH, "Longest input in tokens after tokenization; longer pairs are "
                                    "truncated. evaluate and predict default to the length the model was trained with.")
    preprocessing_num_workers: int | None = _f(None, "Processes for tokenization (Dataset.map num_proc).")
    cache_dir: str | None = _f(None, "Folder for the tokenization cache. Default: $SEQTUNE_CACHE or "
                               "~/.cache/seqtune.")
    streaming: bool = _f(False, "Read the training data while training (an IterableDataset: nothing downloaded or "
                         "converted first), tokenized on the fly and split across processes; needs --max_steps. The "
                         "evaluation and test splits are read into memory.")
    max_train_samples: int | None = _f(None, "Use only the first N training rows (for quick runs).")
    max_eval_samples: int | None = _f(None, "Use only the first N evaluation rows.")
    max_predict_samples: int | None = _f(None, "Use only the first N prediction rows.")
    padding: Literal["longest", "max_length"] = _f(
        "longest", "longest: pad each batch to its longest row (dynamic, DataCollatorWithPadding). max_length: pad "
        "every batch to --max_seq_length (fixed shapes for TPU/XLA or compiled graphs).")
    pad_to_multiple_of: int | None = _f(None, "Round padded lengths up to a multiple of N (tensor cores, "
                                        "torch.compile shape buckets).")
    group_by_length: bool = _f(True, "Batch rows of similar length together (2 %% padding instead of 34 %% on "
                               "MRPC; the order of groups is still shuffled). --no_group_by_length for random batches.")
    max_tokens_per_batch: int | None = _f(None, "Size training batches by tokens (rows x padded length) instead "
                                          "of rows; implies length grouping.")
    label_columns: list[str] | None = field(default=None, metadata={
        "help": "Multi-label classification from several 0/1 columns, one per label (--label_columns toxic insult "
                "threat). A label column holding lists of label names or ids is multi-label without this flag."})


@dataclass
class ModelArguments:
    """Which pre-trained encoder to fine-tune or which fine-tuned model to use."""

    model_name_or_path: str | None = _f(None, "A Hub model id (e.g. bert-base-uncased) or a local folder. Default: "
                                        f"{EMBEDDED_MODEL}, packaged with seqtune, works offline.")
    trust_remote_code: bool = _f(False, "Run model code shipped with the checkpoint (only for models you trust).")
    allow_pickle_weights: bool = _f(False, "Load pickled (.bin) weights, which can run code when loaded; only for "
                                    "checkpoints you trust. Default: safetensors only.")
    reinit_pooler: bool | None = _f(None, "Re-initialise the pooler (the dense layer over [CLS]) before fine-tuning. "
                                    "Default: yes for sentence-transformers checkpoints (trained with mean pooling, "
                                    "so their pooler never learned the encoder's last state), no otherwise.")
    reinit_top_layers: int = _f(0, "Re-initialise the top N transformer layers before fine-tuning (as a fresh model "
                                "initialises them): on small data the top layers' pre-training can be more "
                                "specific than useful. Off by default; its measured effect is in BENCHMARKS.md.")
    ignore_mismatched_sizes: bool = _f(False, "Start a new classification head when the checkpoint's head has "
                                       "another number of labels than the data.")
    torch_dtype: Literal["float32", "bfloat16", "float16"] | None = _f(
        None, "Load the weights in this dtype: bfloat16 halves a large model's memory (training then updates "
        "bfloat16 weights, without float32 master copies: use it with --lora_r, whose adapters stay float32). "
        "Default: float32.")


@dataclass
class TrainingArguments:
    """How to train; names as in transformers' TrainingArguments."""

    output_dir: str | None = _f(None, "Where the model, metrics and logs are written (required for train).")
    overwrite_output_dir: bool = _f(False, "Allow writing into a non-empty --output_dir.")
    num_train_epochs: float | None = _f(None, "Passes over the training data. Default: 3, or 2 when symmetric pairs "
                                        "double the training rows (each pair is then seen 4 times).")
    max_steps: int = _f(-1, "If > 0: total optimizer steps, overriding --num_train_epochs.")
    per_device_train_batch_size: int | None = _f(None, "Rows per training batch on each device (unless "
                                                 "--max_tokens_per_batch). Default: 32; on a GPU, without this flag "
                                                 "and --max_tokens_per_batch, batches of up to 4,096 tokens.")
    per_device_eval_batch_size: int = _f(128, "Rows per evaluation batch on each device.")
    gradient_accumulation_steps: int = _f(1, "Batches whose gradients are summed before each optimizer step.")
    learning_rate: float | None = _f(None, "Peak learning rate of AdamW. Default: 1e-4; 5e-4 with --lora_r; with "
                                     "--max_tokens_per_batch T (a GPU's default) x sqrt(T / 2048).")
    weight_decay: float = _f(0.01, "AdamW weight decay (not applied to biases and LayerNorm weights).")
    layerwise_lr_decay: float = _f(1.0, "Layer-wise learning-rate decay: each encoder layer learns at this factor "
                                   "of the layer above it (the head at --learning_rate). 1.0 = one rate for all.")
    ema_decay: float | None = _f(None, "Keep an exponential moving average of the weights with this decay per "
                                 "optimizer step (e.g. 0.99): evaluation scores the average and the saved model is "
                                 "the average. Off by default; its measured effect is in BENCHMARKS.md.")
    rdrop_alpha: float = _f(0.0, "R-Drop: each training row passes the model twice (two dropout masks, one forward "
                            "pass of the batch stacked on itself) and the loss adds this weight x R-Drop's "
                            "consistency term, (KL(p||q) + KL(q||p)) / 2 per row (per label for multi-label, averaged; "
                            "the squared difference for scores). About 2x the compute and activation memory per "
                            "step; 0 = off. Its measured effect is in BENCHMARKS.md.")
    label_smoothing_factor: float = _f(0.0, "Label smoothing, as Trainer's flag: the training targets become "
                                       "(1 - F) x the label + F spread evenly over the classes (for multi-label, "
                                       "each label's 0/1 moved F/2 towards the middle). The evaluation loss stays "
                                       "the plain loss. 0 = off; its measured effect is in BENCHMARKS.md.")
    adam_beta1: float = _f(0.9, "AdamW beta1.")
    adam_beta2: float = _f(0.999, "AdamW beta2.")
    adam_epsilon: float = _f(1e-8, "AdamW epsilon.")
    max_grad_norm: float = _f(1.0, "Clip the gradient norm to this value (0 disables clipping).")
    lr_scheduler_type: Literal[LR_SCHEDULERS] = _f("linear", "Schedule after warmup (transformers' get_scheduler).")
    warmup_ratio: float = _f(0.1, "Fraction of the optimizer steps spent warming the learning rate up from 0.")
    bf16: bool = _f(True, "bfloat16 autocast (float32 master weights). Fast on CPUs with AVX-512 BF16/AMX and on "
                    "GPUs since Ampere; --no_bf16 for float32.")
    seed: int = _f(42, "Random seed for initialisation, shuffling and dropout.")
    data_seed: int | None = _f(None, "Seed of the training batches' order alone (default: --seed). Runs with one "
                               "--seed and several --data_seed start from one initialisation (the same head): what "
                               "a model soup averages (`seqtune sweep --soup`).")
    eval_strategy: Literal["no", "epoch", "steps"] = _f("epoch", "When to evaluate on the validation split.")
    eval_steps: int | None = _f(None, "With --eval_strategy steps: evaluate every N optimizer steps.")
    logging_steps: int = _f(10, "Write the training loss to the step log every N optimizer steps.")
    report_to: list[str] = field(default_factory=lambda: ["jsonl", "tensorboard"], metadata={
        "help": "Where step metrics go: jsonl (train_log.jsonl), tensorboard (events in OUTPUT_DIR/runs), wandb, "
                "mlflow (accelerate's trackers; pip install 'seqtune[wandb]' or 'seqtune[mlflow]'), several (the "
                "default: --report_to jsonl tensorboard), or none."})
    disable_tqdm: bool = _f(False, "No progress bar.")
    save_steps: int | None = _f(None, "Also write a checkpoint every N optimizer steps (one is always written at the "
                                "end of each epoch), for --resume_from_checkpoint.")
    save_total_limit: int | None = _f(2, "Keep only the newest N checkpoints (the best model is kept apart).")
    # nargs/const go to argparse's add_argument with the help (HfArgumentParser passes a field's metadata on):
    # the bare flag, as in transformers' Trainer, means the newest checkpoint
    resume_from_checkpoint: str | None = _f(None, "Resume from this checkpoint folder; given without a value, from the "
                                            "newest checkpoint in --output_dir. Restores model, optimizer, schedule, "
                                            "random states and the position in the data.", nargs="?", const="latest")
    allow_inexact_resume: bool = _f(False, "Resume from a checkpoint written with other settings (batch size, data, "
                                    "labels, schedule, processes, ...): the run continues, but not as the original "
                                    "run would have; without it such a resume is refused with the differences.")
    fast_dropout: bool = _f(True, "On CPUs, draw dropout masks 16 bits per element instead of torch's bernoulli_ "
                            "(2.6x cheaper; the same Bernoulli masks). --no_fast_dropout for torch's own. GPUs keep "
                            "torch's fused kernels.")
    torch_compile: bool = _f(False, "Compile the training steps with torch.compile (evaluation stays eager; "
                             "--pad_to_multiple_of 8 bounds the shapes, as the GPU defaults do). Pays on a GPU for "
                             "long runs, not on a CPU (BENCHMARKS.md).")
    torch_compile_mode: str | None = _f(None, "torch.compile's mode (turns --torch_compile on): default, "
                                        "reduce-overhead (CUDA graphs: one launch a step on a GPU), max-autotune, "
                                        "max-autotune-no-cudagraphs. CUDA graphs need one process and no "
                                        "--gradient_accumulation_steps.")
    torch_compile_backend: str | None = _f(None, "torch.compile's backend (turns --torch_compile on; default "
                                           "inductor).")
    num_threads: int | None = _f(None, "CPU threads for torch (default: torch's own choice, one per core).")
    dataloader_num_workers: int | None = _f(None, "Processes that collate training batches beside the loop "
                                            "(transformers' flag; the batches stay the same). Default: 2 on a GPU, "
                                            "where the loop waits on the CPU, 0 on a CPU, where workers would take "
                                            "cores from training. Not with --streaming.")
    debug: bool = _f(False, "Show full tracebacks for errors.")
    metric_for_best_model: str | None = _f(None, "The validation metric that picks the saved model (and drives "
                                           "--early_stopping_patience): any metric seqtune computes (accuracy, f1, "
                                           "f1_macro, precision, recall_macro, matthews_correlation, loss, ...). "
                                           "Default: the task's main metric.")
    greater_is_better: bool | None = _f(None, "Whether a larger --metric_for_best_model is better. Default: no for "
                                        "a loss, yes otherwise.")
    early_stopping_patience: int | None = _f(None, "Stop after N evaluations in a row without improvement of "
                                             "--metric_for_best_model (the best model is saved).")
    class_weights: str | None = _f(None, "Weigh the loss per class: auto (n_rows / (n_classes x rows of the class), "
                                   "scikit-learn's 'balanced'; for multi-label, negatives / positives per label) or "
                                   "one weight per label in id order (--class_weights 1,4).")
    save_optimizer_state_on_finish: bool = _f(False, "Keep the last checkpoint (optimizer state included) of a "
                                              "finished run, to extend it later with --resume_from_checkpoint. "
                                              "Default: a finished run keeps the model, metrics and logs only.")
    # --- large models: parameter-efficient fine-tuning (peft's LoRA) and memory
    lora_r: int = _f(0, "Fine-tune with LoRA adapters of this rank (peft) instead of every weight: the pre-trained "
                     "weights stay frozen, the classification head trains fully. 0 = full fine-tuning.")
    lora_alpha: float | None = _f(None, "LoRA scale numerator (the update is scaled by alpha/r). Default: 2 x r.")
    lora_dropout: float = _f(0.0, "Dropout on the LoRA adapters' input. Default 0: on MRPC, 0.1 trained 1.34x slower "
                             "in more memory (a copy of each adapted layer's input) and scored no better.")
    lora_target_modules: list[str] = field(default_factory=list, metadata={
        "help": "Which layers get adapters, by name suffix (e.g. query value, or q_proj v_proj). Default: every "
                "linear layer of the pre-trained model (attention and MLP projections)."})
    save_adapter_only: bool = _f(False, "With --lora_r: save only the adapter and the head (a few MB; evaluate and "
                                 "predict load it onto its base model) instead of the merged model.")
    gradient_checkpointing: bool = _f(False, "Recompute each layer's activations in the backward pass instead of "
                                      "keeping them: far less memory for long rows or large batches, ~30 %% more "
                                      "compute.")


def default_learning_rate(args: TrainingArguments, max_tokens_per_batch: int | None = None) -> float:
    """--learning_rate, or the default for the kind of fine-tuning (adapters of rank r learn from a larger step),
    scaled for token-budget batches (`device_defaults.token_budget_lr_scale`)."""
    if args.learning_rate is not None:
        return args.learning_rate
    from seqtune.device_defaults import token_budget_lr_scale

    return (5e-4 if args.lora_r else 1e-4) * token_budget_lr_scale(max_tokens_per_batch)


@dataclass
class EvalArguments:
    """What to evaluate or predict and where to write it."""

    split: str | None = _f(None, "Which split: validation (evaluate's default) or test (predict's default).")
    output_file: str | None = _f(None, "Also write the result here (evaluate: JSON; predict: .tsv/.csv/.jsonl).")
    sentence1: str | None = _f(None, "predict: one text to classify (with --sentence2 for a pair).")
    sentence2: str | None = _f(None, "predict: the second text of the pair.")
    per_device_eval_batch_size: int = _f(128, "Rows per evaluation batch.")
    debug: bool = _f(False, "Show full tracebacks for errors.")
    keep_columns: list[str] | None = field(default=None, metadata={
        "help": "predict: the input columns copied into --output_file beside the prediction (default: all of "
                "them; --keep_columns none for none)."})
    backend: Literal["torch", "onnx"] | None = _f(
        None, "Run the model with torch or with ONNX Runtime (a folder made by `seqtune export`). Default: onnx for "
        "a folder holding only model.onnx, torch otherwise.")
    bf16: bool | None = _f(None, "bfloat16 autocast for the torch backend: faster on CPUs with AVX-512 BF16/AMX and "
                           "on recent GPUs; probabilities move by about 1e-2 (BENCHMARKS.md). Default: as the model "
                           "was evaluated while training (bfloat16 after `seqtune train --bf16`, its default, so "
                           "evaluate repeats all_results.json), float32 for other models.")
    predictions_dir: str | None = _f(
        None, "predict: write the predictions as Parquet shards into this folder, reading --test_file (a file or "
        "a glob of Parquet, CSV, TSV or JSONL shards) chunk by chunk: constant memory for any input size, one "
        "shard per chunk, an interrupted run continues where it stopped, and under torchrun/accelerate launch each "
        "process scores its own chunks.")
    rows_per_shard: int = _f(20000, "predict --predictions_dir: input rows per chunk and output shard.")


@dataclass
class DataStatsArguments:
    """What `seqtune data` computes padding costs for."""

    per_device_train_batch_size: int = _f(32, "Rows per batch, for the padding cost of each strategy.")
    max_tokens_per_batch_stats: int = _f(4096, "Token budget used for the token_budget strategy's padding cost.")
    seed: int = _f(42, "Seed for the random batch orders.")
    debug: bool = _f(False, "Show full tracebacks for errors.")
