"""Tiny random checkpoints of each model family practitioners fine-tune, saved the way the Hub ships them: the
pre-training architecture (masked or causal LM head), the family's own tokenizer class with a vocabulary trained
here on the demo sentences (WordPiece, byte-level BPE, SentencePiece-style Unigram or BPE with byte fallback), and,
for decoders, no pad token, as GPT-2, Llama, Qwen2 and Gemma checkpoints are released."""

from __future__ import annotations

import json

from seqtune.demo_data.generate import make_paraphrase_pairs

ENCODERS = ("bert", "distilbert", "roberta", "deberta-v2", "electra", "modernbert", "xlm-roberta")
DECODERS = ("gpt2", "llama", "qwen2", "gemma")
FAMILIES = ENCODERS + DECODERS

_WIDTH = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 37}


def _sentences() -> list[str]:
    return [r[k] for r in make_paraphrase_pairs(400, seed=123) for k in ("sentence1", "sentence2")]


def _wordpiece_vocab(specials: list[str]) -> dict[str, int]:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(_sentences(), trainers.WordPieceTrainer(vocab_size=300, special_tokens=specials))
    return tok.get_vocab()


def _bpe(specials: list[str], byte_level: bool) -> tuple[dict[str, int], list[tuple[str, str]]]:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(byte_fallback=not byte_level, unk_token=None if byte_level else specials[0]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False) if byte_level else \
        pre_tokenizers.Metaspace()
    alphabet = pre_tokenizers.ByteLevel.alphabet() if byte_level else \
        [f"<0x{i:02X}>" for i in range(256)]
    tok.train_from_iterator(_sentences(), trainers.BpeTrainer(vocab_size=600 if byte_level else 700,
                                                             special_tokens=specials, initial_alphabet=alphabet
                                                             if byte_level else []))
    model = json.loads(tok.to_str())["model"]
    vocab = model["vocab"]
    if not byte_level:  # byte fallback needs the 256 byte tokens in the vocabulary
        for token in alphabet:
            vocab.setdefault(token, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    return vocab, merges


def _unigram(specials: list[str]) -> list[tuple[str, float]]:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(_sentences(), trainers.UnigramTrainer(vocab_size=300, special_tokens=specials,
                                                                 unk_token="<unk>" if "<unk>" in specials else
                                                                 "[UNK]"))
    return [tuple(piece) for piece in json.loads(tok.to_str())["model"]["vocab"]]


def build_tokenizer(family: str):
    """The family's own tokenizer class, as its checkpoints on the Hub ship it."""
    import transformers as tf

    if family in ("bert", "distilbert", "electra"):
        cls = {"bert": tf.BertTokenizer, "distilbert": tf.DistilBertTokenizer, "electra": tf.ElectraTokenizer}[family]
        return cls(vocab=_wordpiece_vocab(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]), model_max_length=128)
    if family == "roberta":
        vocab, merges = _bpe(["<s>", "<pad>", "</s>", "<unk>", "<mask>"], byte_level=True)
        return tf.RobertaTokenizer(vocab=vocab, merges=merges, model_max_length=128)
    if family == "modernbert":  # ModernBERT ships a PreTrainedTokenizerFast over OLMo's byte-level BPE
        return _modernbert_tokenizer()
    if family == "deberta-v2":
        return tf.DebertaV2Tokenizer(vocab=_unigram(["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]),
                                     model_max_length=128)
    if family == "xlm-roberta":
        return tf.XLMRobertaTokenizer(vocab=_unigram(["<s>", "<pad>", "</s>", "<unk>", "<mask>"]),
                                      model_max_length=128)
    if family == "xlnet":  # pads on the left: its classifier reads the last position
        return tf.XLNetTokenizer(vocab=_unigram(["<unk>", "<s>", "</s>", "<cls>", "<sep>", "<pad>", "<mask>"]),
                                 model_max_length=128)
    if family == "gpt2":
        vocab, merges = _bpe(["<|endoftext|>"], byte_level=True)
        return tf.GPT2Tokenizer(vocab=vocab, merges=merges, pad_token=None, model_max_length=128)
    if family == "qwen2":
        vocab, merges = _bpe(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], byte_level=True)
        return tf.Qwen2Tokenizer(vocab=vocab, merges=merges, pad_token=None, model_max_length=128)
    if family == "llama":
        vocab, merges = _bpe(["<unk>", "<s>", "</s>"], byte_level=False)
        return tf.LlamaTokenizer(vocab=vocab, merges=merges, model_max_length=128)
    if family == "gemma":
        vocab, merges = _bpe(["<unk>", "<bos>", "<eos>", "<pad>"], byte_level=False)
        vocab.pop("<pad>")  # released without a pad token here, as the decoders are
        vocab = {token: i for i, token in enumerate(sorted(vocab, key=vocab.get))}
        return tf.GemmaTokenizer(vocab=vocab, merges=merges, pad_token=None, model_max_length=128)
    raise ValueError(family)


def _modernbert_tokenizer():
    from transformers import PreTrainedTokenizerFast

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors

    vocab, merges = _bpe(["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"], byte_level=True)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                                   pad_token="[PAD]", mask_token="[MASK]", model_max_length=128,
                                   model_input_names=["input_ids", "attention_mask"])


def build_model(family: str, tokenizer):
    """A random model of the family's released architecture (a pre-training head, not a classifier)."""
    import torch
    import transformers as tf

    torch.manual_seed(0)
    vocab = len(tokenizer)
    special = {k: tokenizer.convert_tokens_to_ids(getattr(tokenizer, f"{k}_token"))
               for k in ("bos", "eos", "pad") if getattr(tokenizer, f"{k}_token", None) is not None}
    ids = {f"{k}_token_id": v for k, v in special.items()}
    if family == "bert":
        return tf.BertForMaskedLM(tf.BertConfig(vocab_size=vocab, max_position_embeddings=128, **_WIDTH, **ids))
    if family == "distilbert":
        return tf.DistilBertForMaskedLM(tf.DistilBertConfig(vocab_size=vocab, dim=32, n_layers=2, n_heads=4,
                                                            hidden_dim=37, max_position_embeddings=128))
    if family == "electra":
        return tf.ElectraForPreTraining(tf.ElectraConfig(vocab_size=vocab, embedding_size=16,
                                                         max_position_embeddings=128, **_WIDTH, **ids))
    if family in ("roberta", "xlm-roberta"):
        cls, config = (tf.RobertaForMaskedLM, tf.RobertaConfig) if family == "roberta" else \
            (tf.XLMRobertaForMaskedLM, tf.XLMRobertaConfig)
        return cls(config(vocab_size=vocab, max_position_embeddings=130, type_vocab_size=1, **_WIDTH, **ids))
    if family == "deberta-v2":
        return tf.DebertaV2ForMaskedLM(tf.DebertaV2Config(
            vocab_size=vocab, max_position_embeddings=128, relative_attention=True, position_biased_input=False,
            pos_att_type=["p2c", "c2p"], max_relative_positions=-1, position_buckets=32, **_WIDTH, **ids))
    if family == "modernbert":
        return tf.ModernBertForMaskedLM(tf.ModernBertConfig(
            vocab_size=vocab, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=48,
            max_position_embeddings=128, local_attention=16, global_attn_every_n_layers=2,
            cls_token_id=tokenizer.cls_token_id, sep_token_id=tokenizer.sep_token_id,
            bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id, **ids))
    if family == "xlnet":
        return tf.XLNetLMHeadModel(tf.XLNetConfig(vocab_size=vocab, d_model=32, n_layer=2, n_head=4, d_inner=37,
                                                  pad_token_id=tokenizer.pad_token_id))
    decoder = {"gpt2": (tf.GPT2LMHeadModel, tf.GPT2Config), "llama": (tf.LlamaForCausalLM, tf.LlamaConfig),
               "qwen2": (tf.Qwen2ForCausalLM, tf.Qwen2Config), "gemma": (tf.GemmaForCausalLM, tf.GemmaConfig)}
    cls, config_class = decoder[family]
    if family == "gpt2":
        config = config_class(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=128, **ids)
    else:
        config = config_class(vocab_size=vocab, num_key_value_heads=2, max_position_embeddings=128,
                              head_dim=8, **_WIDTH, **ids)
    return cls(config)


def build_family(family: str, folder: str) -> str:
    tokenizer = build_tokenizer(family)
    build_model(family, tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
