"""Backbones: the paper's Hub models and a tiny offline Llama, plus the tokenizer fixes both need.

* `BACKBONES` maps a config name to a Hub id (or `None` for the tiny offline model built here).
* The tokenizer always has a dedicated pad token (pad != EOS: the sequence-classification head pools the
  rightmost non-pad token, so pad == EOS would never pool EOS) and the chat template must not produce a
  doubled BOS (`repro.data.tokenize.encode_conversation` checks it).
* Nothing here downloads unless a Hub id is configured; `trust_remote_code` is off unless turned on.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

# config name -> Hub id; None = built offline by `build_tiny_backbone`
BACKBONES: dict[str, str | None] = {
    "tiny_llama": None,
    "llama31_8b": "meta-llama/Llama-3.1-8B-Instruct",
    "gemma2_27b": "google/gemma-2-27b-it",
}

PAD_TOKEN = "<|pad|>"
# A Llama-3-style chat template: BOS once, then header/content/eot per message.
TINY_SPECIAL_TOKENS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
                       "<|eot_id|>", PAD_TOKEN]
# A byte-level BPE always holds the 256 byte symbols and the special tokens: a smaller vocab_size is ignored
# by the trainer, and the model would be built for a vocabulary it does not have.
TINY_MIN_VOCAB = 256 + len(TINY_SPECIAL_TOKENS)
TINY_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n{{ m['content'] }}<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)


def build_tiny_tokenizer(texts: Iterable[str], vocab_size: int = 1024):
    """A byte-level BPE tokenizer trained on `texts`, with a chat template and a dedicated pad token.

    Deterministic for the same texts; offline; saves and reloads with `save_pretrained`.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=TINY_SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", pad_token=PAD_TOKEN,
        padding_side="right", truncation_side="left",
    )
    fast.chat_template = TINY_CHAT_TEMPLATE
    return fast


def build_tiny_backbone(tokenizer, *, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
                        intermediate_size: int = 256, max_position_embeddings: int = 512, seed: int = 0):
    """A randomly initialised `LlamaForSequenceClassification` (num_labels=1) sized for a CPU."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings, num_labels=1,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    return LlamaForSequenceClassification(cfg)


def ensure_pad_token(tokenizer, model=None) -> None:
    """Give the tokenizer a dedicated pad token (never EOS) and resize the model's embeddings if added.

    This is what the released Skywork Llama checkpoint did: `[PAD]` added, vocab 128256 -> 128257.
    """
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        tokenizer.add_special_tokens({"pad_token": "[PAD]"})
        log.info("added a dedicated pad token [PAD] (id %d)", tokenizer.pad_token_id)
    if model is not None:
        if model.get_input_embeddings().num_embeddings < len(tokenizer):
            model.resize_token_embeddings(len(tokenizer))
        model.config.pad_token_id = tokenizer.pad_token_id
    if tokenizer.pad_token_id == tokenizer.eos_token_id:
        raise ValueError("pad token equals EOS: the reward head would never pool the EOS token")


class ModelError(ValueError):
    """A model or tokenizer that cannot be loaded; the message names it."""


def load_pretrained(name_or_path: str, *, dtype: str = "float32", attn_implementation: str | None = None,
                    trust_remote_code: bool = False):
    """(model, tokenizer) from a Hub id or a local folder: `AutoModelForSequenceClassification`, num_labels=1."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    if name_or_path.startswith((".", "/", "~")) and not Path(name_or_path).expanduser().is_dir():
        raise ModelError(f"{name_or_path}: model folder not found")
    kwargs = {"num_labels": 1, "dtype": getattr(torch, dtype), "trust_remote_code": trust_remote_code}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        model = AutoModelForSequenceClassification.from_pretrained(name_or_path, **kwargs)
    except (OSError, ValueError) as e:  # missing files, no Hub access, gated repo, unknown architecture
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{name_or_path}: cannot load the model or tokenizer ({first})") from None
    tokenizer.truncation_side = "left"  # RewardBench convention: keep the end of the conversation
    ensure_pad_token(tokenizer, model)
    return model, tokenizer


def save(model, tokenizer, out: str | Path) -> Path:
    """Weights as safetensors plus the tokenizer (with its chat template) in one folder."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
