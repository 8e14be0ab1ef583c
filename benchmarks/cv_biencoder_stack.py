"""Does the embedded model's own sentence embedding add to the fine-tuned cross-encoder? all-MiniLM-L6-v2 was trained
as a bi-encoder on a billion sentence pairs; fine-tuning it as a cross-encoder (`[CLS] a [SEP] b`) starts its head
from scratch. Here, per fold of a `seqtune sweep --cv K` folder: the frozen model's mean-pooled, normalised
embeddings u, v of both texts; a logistic regression on [u*v, |u-v|, cos] fitted on the fold's training rows; its
held-out probabilities alone, and averaged with each cross-encoder run's (eval_predictions.json), scored on the
held-out fold. `python benchmarks/cv_biencoder_stack.py SWEEP_DIR` prints accuracy and F1 mean ± std over folds x
seeds for each mix weight of the bi-encoder (0 = the cross-encoder alone)."""

import glob
import json
import os
import statistics
import sys
import time

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from transformers import AutoModel, AutoTokenizer

from seqtune.modeling import resolve_model_path


def embed(model, tokenizer, texts: list[str], batch: int = 128) -> np.ndarray:
    out = []
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        for i in range(0, len(texts), batch):
            enc = tokenizer(texts[i:i + batch], padding=True, truncation=True, max_length=128, return_tensors="pt")
            states = model(**enc).last_hidden_state.float()
            mask = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (states * mask).sum(1) / mask.sum(1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out)


def features(frame: pd.DataFrame, cache: dict) -> np.ndarray:
    u = np.stack([cache[t] for t in frame["sentence1"]])
    v = np.stack([cache[t] for t in frame["sentence2"]])
    return np.concatenate([u * v, np.abs(u - v), (u * v).sum(1, keepdims=True)], axis=1)


def main(folder: str) -> None:
    path = resolve_model_path(None)
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    folds = sorted(glob.glob(os.path.join(folder, "fold-*")), key=lambda p: int(p.rsplit("-", 1)[1]))
    frames = {}
    for fold in folds:
        k = fold.rsplit("-", 1)[1]
        files = {s: glob.glob(os.path.join(folder, "cv_folds", f"fold-{k}", f"{s}-*.parquet"))[0]
                 for s in ("train", "validation")}
        frames[fold] = {s: pd.read_parquet(f) for s, f in files.items()}
    texts = sorted({t for f in frames.values() for d in f.values() for c in ("sentence1", "sentence2") for t in d[c]})
    started = time.perf_counter()
    cache = dict(zip(texts, embed(model, tokenizer, texts)))
    print(f"embedded {len(texts)} texts in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    weights = [0.0, 0.2, 0.3, 0.4, 0.5, 1.0]
    scores = {w: {"accuracy": [], "f1": []} for w in weights}
    for fold in folds:
        train, held = frames[fold]["train"], frames[fold]["validation"]
        started = time.perf_counter()
        regression = LogisticRegression(C=1.0, max_iter=2000).fit(features(train, cache), train["label"])
        fitted = time.perf_counter() - started
        bi = regression.predict_proba(features(held, cache))
        labels = held["label"].to_numpy()
        for run in sorted(glob.glob(os.path.join(fold, "seed-*"))):
            saved = json.load(open(os.path.join(run, "eval_predictions.json")))
            assert saved["labels"] == labels.tolist(), "the run's held-out rows are not the fold file's"
            logits = np.asarray(saved["logits"])
            cross = np.exp(logits - logits.max(1, keepdims=True))
            cross /= cross.sum(1, keepdims=True)
            for w in weights:
                predictions = ((1 - w) * cross + w * bi).argmax(1)
                scores[w]["accuracy"].append(accuracy_score(labels, predictions))
                scores[w]["f1"].append(f1_score(labels, predictions))
        print(f"{fold}: bi-encoder alone accuracy {accuracy_score(labels, bi.argmax(1)):.4f} "
              f"(regression fitted in {fitted:.1f} s)", file=sys.stderr)
    summary = {w: {k: {"mean": statistics.fmean(v), "std": statistics.stdev(v), "n": len(v)} for k, v in s.items()}
               for w, s in scores.items()}
    for w, s in summary.items():
        print(f"bi-encoder weight {w}: accuracy {s['accuracy']['mean']:.4f} ± {s['accuracy']['std']:.4f}  "
              f"F1 {s['f1']['mean']:.4f} ± {s['f1']['std']:.4f}  (n={s['f1']['n']})")
    print(json.dumps({"folder": folder, "summary": summary}))


if __name__ == "__main__":
    main(sys.argv[1])
