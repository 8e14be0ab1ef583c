"""The training loss changed by flags: --class_weights (weighted per class), --label_smoothing_factor and
--rdrop_alpha (R-Drop).

--class_weights: the training loss weighted per class, for imbalanced labels.

The weights are scikit-learn's "balanced" ones (`compute_class_weight`: n_rows / (n_classes x rows of the class)) or
the user's; for multi-label data, each label's positives weigh negatives / positives (BCE's `pos_weight`).
--label_smoothing_factor F: while training, cross-entropy against (1 - F) x the label + F / n_classes (torch's
`label_smoothing`, what Trainer's flag computes); for multi-label data each 0/1 target moves F/2 towards 1/2.
Both act through a forward hook that recomputes the model's loss from its logits, so the model, its state dict and
the training loop stay as transformers made them (a saved model has no trace of either)."""

from __future__ import annotations

import logging

import numpy as np
import torch

from seqtune.errors import SeqtuneError

logger = logging.getLogger("seqtune")


def class_weights(value: str, labels, num_labels: int, multi_label: bool) -> list[float]:
    """The weights `--class_weights VALUE` asks for, from the training labels (ids, or multi-hot rows)."""
    if value.strip().lower() == "auto":
        labels = np.asarray(labels)
        if multi_label:
            positives = labels.sum(axis=0)
            # a label positive in every row has no negatives to weigh against: 1, not 0 (its loss would vanish)
            return [float((len(labels) - p) / p) if 0 < p < len(labels) else 1.0 for p in positives]
        from sklearn.utils.class_weight import compute_class_weight

        present = np.unique(labels)
        balanced = dict(zip(present, compute_class_weight("balanced", classes=present, y=labels)))
        return [float(balanced.get(i, 1.0)) for i in range(num_labels)]
    try:
        weights = [float(w) for w in value.split(",")]
    except ValueError as error:
        raise SeqtuneError(f"--class_weights {value}: give auto or one number per label (e.g. 1,4).") from error
    if len(weights) != num_labels or not all(np.isfinite(w) and w > 0 for w in weights):
        raise SeqtuneError(f"--class_weights {value}: give {num_labels} positive numbers, one per label in id order, "
                           "or auto.")
    return weights


def task_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None, multi_label: bool,
              smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy with a weight per class (the weighted mean, as torch computes it) and label smoothing, or BCE
    with `pos_weight` against targets smoothed towards 1/2."""
    logits = logits.float()
    if multi_label:
        targets = labels.float() * (1 - smoothing) + smoothing / 2
        return torch.nn.functional.binary_cross_entropy_with_logits(logits, targets, pos_weight=weights)
    return torch.nn.functional.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1), weight=weights,
                                             label_smoothing=smoothing)


def use_task_loss(model, weights: list[float] | None, smoothing: float, multi_label: bool):
    """Make `model(**batch).loss` the weighted loss, smoothed while training (a forward hook). Returns the hook's
    handle."""
    tensor = None if weights is None else torch.tensor(weights, dtype=torch.float32)

    def hook(module, args, kwargs, output):
        labels = kwargs.get("labels")
        smooth = smoothing if module.training else 0.0  # the evaluation loss stays comparable between runs
        if labels is None or getattr(output, "logits", None) is None or (tensor is None and not smooth):
            return output
        device_weights = None if tensor is None else tensor.to(output.logits.device)
        output.loss = task_loss(output.logits, labels, device_weights, multi_label, smooth)
        return output

    return model.register_forward_hook(hook, with_kwargs=True)


# --rdrop_alpha: R-Drop (Liang et al., 2021), a consistency regulariser. Each training row goes through the model
# twice in one forward pass (the batch stacked on itself: two dropout masks per row); the loss is the task's loss
# over both copies plus alpha x the disagreement of the two predictions. transformers has no such option, hence the
# two hooks by hand; they act only while the model trains, so evaluation, the saved model and the loop are unchanged.
def consistency(first: torch.Tensor, second: torch.Tensor, kind: str) -> torch.Tensor:
    """How far two predictions of the same rows disagree, averaged over rows: the symmetric KL divergence of the
    class distributions ("single"), of each label's Bernoulli ("multi"), or the squared difference ("regression")."""
    first, second = first.float(), second.float()
    if kind == "regression":
        return (first - second).pow(2).mean()
    if kind == "multi":
        pairs = (torch.nn.functional.logsigmoid(first), torch.nn.functional.logsigmoid(second),
                 torch.nn.functional.logsigmoid(-first), torch.nn.functional.logsigmoid(-second))
        log_p, log_q, log_not_p, log_not_q = pairs
        # KL(p||q) + KL(q||p) of one Bernoulli = (p - q)(log p - log q) + ((1-p) - (1-q))(log(1-p) - log(1-q))
        both = (log_p.exp() - log_q.exp()) * (log_p - log_q) + \
            (log_not_p.exp() - log_not_q.exp()) * (log_not_p - log_not_q)
        return both.mean() / 2
    log_p, log_q = torch.log_softmax(first, dim=-1), torch.log_softmax(second, dim=-1)
    # KL(p||q) + KL(q||p) = sum (p - q)(log p - log q)
    return ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(dim=-1).mean() / 2


def use_rdrop(model, alpha: float, kind: str) -> list:
    """Make `model(**batch).loss`, while training, the loss over the batch seen twice plus `alpha` x the two
    predictions' disagreement (`consistency`). Returns the hooks' handles."""

    doubled = []  # whether the pass running now was doubled: the second hook acts only then

    def twice(module, args, kwargs):
        doubled[:] = [module.training and not args and isinstance(kwargs.get("input_ids"), torch.Tensor)]
        if not doubled[0]:  # (evaluation; or inputs seqtune's batches never have: left as they are)
            return None
        # every tensor of a batch is per row (the collator's input_ids, attention_mask, token_type_ids, labels)
        rows = kwargs["input_ids"].shape[0]
        return args, {k: torch.cat([v, v]) if isinstance(v, torch.Tensor) and v.dim() and v.shape[0] == rows
                      else v for k, v in kwargs.items()}

    def regularise(module, args, kwargs, output):
        if not doubled or not doubled[0] or getattr(output, "logits", None) is None or output.loss is None:
            return output
        first, second = output.logits.chunk(2)
        output.loss = output.loss + alpha * consistency(first, second, kind)
        return output

    return [model.register_forward_pre_hook(twice, with_kwargs=True),
            model.register_forward_hook(regularise, with_kwargs=True)]
