"""Issue #16 lever check: BERT's pooler over the mean of the encoder's last states (the pooling a
sentence-transformers checkpoint such as all-MiniLM-L6-v2 was trained with) instead of over [CLS] alone.

A measurement, not a product path: transformers' BertForSequenceClassification has no mean-pooling option, so this
script patches BertPooler.forward in this process only and runs `seqtune sweep` with the flags it is given, e.g.
    python benchmarks/cv_mean_pooling.py --dataset_name GLUE_DIR --dataset_config_name mrpc --cv 5 --seeds 1 \
        --cv_validation false --output_dir runs/cv/mean_pool --disable_tqdm --log_level warning
The saved models hold BERT's usual weights; loaded without this patch they would pool [CLS] again."""
import sys

import torch
from transformers.models.bert import modeling_bert

from seqtune.cli import main


def mean_pooler_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    mask = getattr(self, "attention_mask", None)
    if mask is None or mask.dim() != 2:
        mask = torch.ones(hidden_states.shape[:2], device=hidden_states.device)
    weights = mask.unsqueeze(-1).to(hidden_states.dtype)
    mean = (hidden_states * weights).sum(1) / weights.sum(1).clamp(min=1)
    return self.activation(self.dense(mean))


def keep_mask(module, args, kwargs):
    """BertModel calls its pooler with the last states only: hand it this call's attention mask."""
    mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
    if module.pooler is not None:
        module.pooler.attention_mask = mask


_init = modeling_bert.BertModel.__init__


def patched_init(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self.register_forward_pre_hook(keep_mask, with_kwargs=True)


modeling_bert.BertPooler.forward = mean_pooler_forward
modeling_bert.BertModel.__init__ = patched_init

if __name__ == "__main__":
    sys.exit(main(["sweep", *sys.argv[1:]]))
