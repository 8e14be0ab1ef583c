"""The course's recipe with transformers' `Trainer`: the anchor seqtune is measured against.

Chapter 3 of the Hugging Face course: `TrainingArguments` defaults (AdamW, lr 5e-5, linear decay, no
warmup, float32), batch 8, 3 epochs, `DataCollatorWithPadding`. Kept verbatim so the comparison is honest.
`FAIR_PEER` is the same `Trainer` given the levers any of its users can set: bfloat16, batches grouped by length,
batch 32, lr 1e-4 with 10 % warmup (seqtune's batch and schedule).
"""

from __future__ import annotations

import time

from datasets import DatasetDict

FAIR_PEER = {"bf16": True, "train_sampling_strategy": "group_by_length", "per_device_train_batch_size": 32,
             "learning_rate": 1e-4, "warmup_steps": 0.1}


def run_trainer_recipe(
    model_name_or_path: str,
    raw_datasets: DatasetDict,
    text_column: str,
    text_pair_column: str | None,
    num_labels: int,
    output_dir: str,
    seed: int = 42,
    num_train_epochs: float = 3.0,
    max_steps: int = -1,
    per_device_train_batch_size: int = 8,
    evaluate: bool = True,
    levers: dict | None = None,
) -> dict:
    """Train with the course's `Trainer` recipe (or with `levers`, e.g. FAIR_PEER, set on its TrainingArguments);
    return its metrics and throughput."""
    from transformers import set_seed

    set_seed(seed)
    levers = levers or {}
    per_device_train_batch_size = levers.get("per_device_train_batch_size", per_device_train_batch_size)
    trainer = course_trainer(model_name_or_path, raw_datasets, text_column, text_pair_column, num_labels, output_dir,
                             seed, num_train_epochs, max_steps, per_device_train_batch_size, levers)
    start = time.perf_counter()
    train_output = trainer.train()
    wall = time.perf_counter() - start
    results = {
        "train_runtime": train_output.metrics["train_runtime"],
        "train_wall_s": wall,
        "train_samples_per_second": train_output.metrics["train_samples_per_second"],
        "train_samples": int(train_output.global_step * per_device_train_batch_size),
        "seed": seed,
    }
    if evaluate:
        import numpy as np

        from seqtune.metrics import compute_metrics

        predictions = trainer.predict(trainer.eval_dataset)
        preds = np.argmax(predictions.predictions, axis=-1)
        for key, value in compute_metrics(("f1", "accuracy"), preds, predictions.label_ids).items():
            results[f"eval_{key}"] = value
    return results


def course_trainer(model_name_or_path: str, raw_datasets: DatasetDict, text_column: str, text_pair_column: str | None,
                   num_labels: int, output_dir: str, seed: int, num_train_epochs: float, max_steps: int,
                   per_device_train_batch_size: int, levers: dict | None = None):
    """The course's tokenization, model and `Trainer`, as chapter 3 writes them."""
    import torch
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding, Trainer,
                              TrainingArguments)

    tokenizer = AutoTokenizer.from_pretrained(model_name_or_path)

    def tokenize_function(example):
        if text_pair_column is None:
            return tokenizer(example[text_column], truncation=True)
        return tokenizer(example[text_column], example[text_pair_column], truncation=True)

    tokenized = raw_datasets.map(tokenize_function, batched=True)
    model = AutoModelForSequenceClassification.from_pretrained(model_name_or_path, num_labels=num_labels)
    args = TrainingArguments(
        output_dir,
        per_device_train_batch_size=per_device_train_batch_size,
        num_train_epochs=num_train_epochs,
        max_steps=max_steps,
        seed=seed,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        **{k: v for k, v in (levers or {}).items() if k != "per_device_train_batch_size"},
    )
    return Trainer(
        model,
        args,
        train_dataset=tokenized["train"],
        eval_dataset=tokenized.get("validation"),  # (a throughput comparison may have none)
        data_collator=DataCollatorWithPadding(tokenizer=tokenizer),
        processing_class=tokenizer,
    )
