"""What a model family needs before it can classify: a pad token, a separator between a pair's texts, segment ids
or none, and which of seqtune's speed levers apply to it. One rule each, used by every command."""

from __future__ import annotations

import logging

logger = logging.getLogger("seqtune")


def prepare_tokenizer(tokenizer) -> None:
    """Give a decoder's tokenizer what classification needs, in place; a tokenizer that has a pad token (every
    encoder's) keeps its padding side (XLNet pads on the left and classifies from the last position).

    - no pad token (GPT-2, Llama, Qwen2, Gemma as released): pad with the EOS token, or a new "<pad>" token when there
      is no EOS either (the model's embeddings then grow by one row: `match_model_to_tokenizer`), on the right
      (the classifier pools the last token that is not padding; absolute positions such as GPT-2's stay those of an
      unpadded row); the model's `pad_token_id` is then made the tokenizer's (`match_model_to_tokenizer`);
    - a pair's two texts joined with nothing between them (byte-level BPE decoders): the EOS token between them."""
    if tokenizer.pad_token is None:
        _add_pad_token(tokenizer)
    _separate_pairs(tokenizer)


def _add_pad_token(tokenizer) -> None:
    if tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
        logger.info("The tokenizer has no pad token: padding with its EOS token %r (id %d)", tokenizer.eos_token,
                    tokenizer.pad_token_id)
    else:
        tokenizer.add_special_tokens({"pad_token": "<pad>"})
        logger.info("The tokenizer has no pad token and no EOS token: added a new pad token '<pad>' (id %d); "
                    "the model's embeddings grow by one row", tokenizer.pad_token_id)
    tokenizer.seqtune_added_pad = True  # for match_model_to_tokenizer: the config's pad id cannot be this one
    if tokenizer.padding_side != "right":
        logger.info("Padding on the right (the tokenizer said %s)", tokenizer.padding_side)
        tokenizer.padding_side = "right"
        tokenizer.init_kwargs["padding_side"] = "right"  # saved with it: transformers reloads it padding right too


def _separate_pairs(tokenizer) -> None:
    """A tokenizer that adds no special token to a pair would run its texts together ("...boat.He bought...")."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or tokenizer.eos_token is None or tokenizer.num_special_tokens_to_add(pair=True) > 0:
        return
    from tokenizers import processors

    eos = tokenizer.eos_token
    backend.post_processor = processors.TemplateProcessing(
        single="$A:0", pair=f"$A:0 {eos}:0 $B:1", special_tokens=[(eos, tokenizer.eos_token_id)])
    logger.info("Pairs are joined with the EOS token %r between their texts", eos)


def match_model_to_tokenizer(model, tokenizer) -> None:
    """The model pads with the tokenizer's pad token (a decoder's classifier pools the last token that is not it),
    and embeds every token the tokenizer can produce."""
    config, pad = model.config, tokenizer.pad_token_id
    current = getattr(config, "pad_token_id", None)
    if pad is not None and current != pad:
        if current is None or getattr(tokenizer, "seqtune_added_pad", False):  # e.g. a Gemma config saying 0 for
            # a tokenizer that had no pad token: a decoder's classifier would pool a padding position
            if current is not None:
                logger.info("The model's pad_token_id %s is set to the tokenizer's %d", current, pad)
            config.pad_token_id = pad
        else:  # both given by the checkpoint (RoBERTa's position ids depend on the config's): left as they are
            logger.warning("The model's pad_token_id %s differs from its tokenizer's pad token id %d: a decoder's "
                           "classifier would pool padding positions; fix the checkpoint's config.json if so.",
                           current, pad)
    embeddings = model.get_input_embeddings()
    if embeddings is not None and len(tokenizer) > embeddings.num_embeddings:
        logger.info("Resizing the token embeddings from %d to %d rows", embeddings.num_embeddings, len(tokenizer))
        model.resize_token_embeddings(len(tokenizer))


def uses_token_type_ids(tokenizer, model_config) -> bool:
    """Segment ids go to the model only when its tokenizer makes them and it embeds more than one segment type:
    BERT and ELECTRA do; RoBERTa, XLM-R, DistilBERT, ModernBERT and DeBERTa-v2 (type_vocab_size 0) and decoders
    do not."""
    return "token_type_ids" in tokenizer.model_input_names and (getattr(model_config, "type_vocab_size", 0) or 0) > 1


def model_inputs(tokenizer, model_config) -> tuple[str, ...]:
    """The tokenizer outputs a model of this family takes."""
    return ("input_ids", "attention_mask", "token_type_ids") if uses_token_type_ids(tokenizer, model_config) \
        else ("input_ids", "attention_mask")
