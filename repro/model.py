"""Backbones: the paper's Hub models and a tiny offline Llama, plus the tokenizer fixes and model options.

* `BACKBONES` maps a config name to a Hub id (or `None` for the tiny offline model built here); the
  architecture configs and chat templates of the Hub models ship in `repro/backbones/`.
* The tokenizer always has a dedicated pad token (pad != EOS: the sequence-classification head pools the
  rightmost non-pad token, so pad == EOS would never pool EOS) and the chat template must not produce a
  doubled BOS (`repro.data.tokenize.encode_conversation` checks it). `prepare_messages` adapts a
  conversation to templates that refuse a system turn (Gemma-2).
* Model options: the score head's initialisation (`init_score_head`) and gradient checkpointing
  (`enable_gradient_checkpointing`).
* Nothing here downloads unless a Hub id is configured; `trust_remote_code` is off unless turned on.
  Importing this module imports neither torch nor transformers.
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


def build_tiny_tokenizer(texts: Iterable[str], vocab_size: int = 1024, *, template: str | None = None):
    """A byte-level BPE tokenizer trained on `texts`, with a chat template and a dedicated pad token.

    Deterministic for the same texts; offline; saves and reloads with `save_pretrained`. `template=None` is
    the tiny model's own Llama-3-style template (the demo's; its numbers are pinned by the tests). A name
    of `repro.backbones.SHIPPED` ("llama31_8b", "gemma2_27b") gives a tokenizer that behaves like that
    backbone's real one as far as the pipeline can tell: its special tokens, its exact chat template, BOS
    added on encode (as the real ones do), and its pad token as shipped — none for Llama-3.1, so
    `ensure_pad_token` adds `[PAD]` exactly as on the real tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if template is None:
        special, chat = TINY_SPECIAL_TOKENS, TINY_CHAT_TEMPLATE
        bos, eos, pad = "<|begin_of_text|>", "<|eot_id|>", PAD_TOKEN
    else:
        from repro import backbones

        tokens = backbones.special_tokens(template)
        special, chat = list(tokens["ids"]), backbones.chat_template(template)
        bos, eos, pad = tokens["bos_token"], tokens["eos_token"], tokens["pad_token"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=special, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer=trainer)
    if template is not None:  # the real Llama-3.1 and Gemma-2 tokenizers add BOS when asked for special tokens
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad,
        padding_side="right", truncation_side="left",
    )
    fast.chat_template = chat
    return fast


def build_tiny_backbone(tokenizer, *, hidden_size: int = 64, num_layers: int = 2, num_heads: int = 4,
                        intermediate_size: int = 256, max_position_embeddings: int = 512, seed: int = 0,
                        attn_implementation: str | None = None):
    """A randomly initialised `LlamaForSequenceClassification` (num_labels=1) sized for a CPU, built by
    `repro.backbones.build_reward_model` like every reward model constructed from a config."""
    import torch
    from transformers import LlamaConfig

    from repro.backbones import build_reward_model

    cfg = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings, num_labels=1,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False,
        **({"attn_implementation": attn_implementation} if attn_implementation else {}),
    )
    torch.manual_seed(seed)
    return build_reward_model(cfg)


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


# The marker of chat templates that raise on a system turn (Gemma-2's: "System role not supported").
SYSTEM_REFUSED = "System role not supported"


def prepare_messages(tokenizer, messages: list[dict]) -> list[dict]:
    """The conversation as the tokenizer's chat template can render it.

    Gemma-2's template raises "System role not supported" on a leading system turn. Rather than a template
    traceback on every rank, the system text is merged into the first user turn, a blank line between them
    (the rule of community Gemma templates that accept a system turn, e.g. chujiezheng/chat_templates'
    gemma-it.jinja in its earlier form); a system turn followed by no user turn becomes a user turn.
    RewardBench has no system turns, so this only concerns training data that has one.
    Every other template gets `messages` unchanged (the same list).
    """
    if not messages or messages[0].get("role") != "system" or SYSTEM_REFUSED not in str(tokenizer.chat_template):
        return messages
    system, rest = str(messages[0].get("content", "")).strip(), messages[1:]
    if rest and rest[0].get("role") == "user":
        return [{**rest[0], "content": f"{system}\n\n{rest[0].get('content', '')}"}, *rest[1:]]
    return [{"role": "user", "content": system}, *rest]


# How a new score head is initialised (model.head_init); null leaves the model class's own draw.
HEAD_INITS = ("normal", "zeros")


def init_score_head(model, how: str, seed: int) -> None:
    """Re-initialise the reward head (`model.score`, a bias-free Linear(hidden, 1)) in place.

    * `normal`: N(0, config.initializer_range), the transformers default, but drawn from its own CPU
      generator seeded with `seed` — the same head whatever the device, world size, construction order or
      ZeRO-3 partitioning.
    * `zeros`: every reward starts at exactly 0 (the BT loss at log 2); the first step's gradient reaches
      only the head, since the backbone's gradient passes through the head's weights.
    """
    import contextlib

    import torch

    if how not in HEAD_INITS:
        raise ValueError(f"model.head_init={how!r}; valid: {', '.join(HEAD_INITS)}, or null")
    head = getattr(model, "score", None)
    if head is None:
        raise ModelError(f"{type(model).__name__} has no `score` head for model.head_init={how!r}")
    weight = head.weight
    gathered = contextlib.nullcontext()
    if hasattr(weight, "ds_id"):  # partitioned by DeepSpeed ZeRO-3: gather, modify on rank 0, re-partition
        import deepspeed

        gathered = deepspeed.zero.GatheredParameters([weight], modifier_rank=0)
    with gathered, torch.no_grad():
        if how == "zeros":
            new = torch.zeros(weight.shape)
        else:
            generator = torch.Generator().manual_seed(seed)
            new = torch.randn(weight.shape, generator=generator) * model.config.initializer_range
        weight.copy_(new.to(weight.dtype))


def enable_gradient_checkpointing(model) -> None:
    """Recompute each layer's activations in the backward pass instead of keeping them (non-reentrant, so
    it composes with DDP and ZeRO-3); the KV cache is off, as training never uses it."""
    model.config.use_cache = False
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x's name for the same switch
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def load_pretrained(name_or_path: str, *, dtype: str = "float32", attn_implementation: str | None = None,
                    trust_remote_code: bool = False, config=None, head_init: str | None = None,
                    head_seed: int = 0, require_head: bool = False):
    """(model, tokenizer) from a Hub id or a local folder: `AutoModelForSequenceClassification`, num_labels=1.

    `config` (e.g. `repro.backbones.model_config(name)`) replaces the checkpoint's config.json, so nothing
    but weights and tokenizer is fetched. Null attention means eager for Gemma-2 (its classifier has no
    sdpa path). `head_init` re-initialises the score head when the checkpoint has none (a causal-LM
    checkpoint such as Llama-3.1-8B-Instruct); a checkpoint's trained head is kept as loaded.
    `require_head` (scoring: evaluation, the WildGuard scorer) refuses a checkpoint without a trained score
    head, whose rewards would come from a randomly initialised one.
    """
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from repro.backbones import attention_for

    if name_or_path.startswith((".", "/", "~")) and not Path(name_or_path).expanduser().is_dir():
        raise ModelError(f"{name_or_path}: model folder not found")
    try:
        if config is None:
            config = AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        config.num_labels = 1
        kwargs = {"config": config, "dtype": getattr(torch, dtype), "trust_remote_code": trust_remote_code,
                  "output_loading_info": True}
        attention = attention_for(getattr(config, "model_type", None), attn_implementation)
        if attention:
            kwargs["attn_implementation"] = attention
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
        from transformers.utils import logging as hf_logging

        verbosity = hf_logging.get_verbosity()
        if require_head:  # a missing head is this function's one-line error, not transformers' load report
            hf_logging.set_verbosity_error()
        try:
            model, info = AutoModelForSequenceClassification.from_pretrained(name_or_path, **kwargs)
        finally:
            hf_logging.set_verbosity(verbosity)
    except (OSError, ValueError) as e:  # missing files, no Hub access, gated repo, unknown architecture
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{name_or_path}: cannot load the model or tokenizer ({first})") from None
    new_head = [k for k in info["missing_keys"] if k.startswith("score.")]
    if require_head and new_head:
        arch = getattr(config, "architectures", None) or ["unknown"]
        raise ModelError(f"{name_or_path}: no trained sequence-classification head ({', '.join(new_head)} not in the "
                         f"checkpoint; architectures {arch}): its rewards would come from a random head")
    tokenizer.truncation_side = "left"  # RewardBench convention: keep the end of the conversation
    ensure_pad_token(tokenizer, model)
    if head_init:
        if any(k.startswith("score.") for k in info["missing_keys"]):
            init_score_head(model, head_init, head_seed)
        else:
            log.info("%s has a trained score head: kept as loaded (model.head_init=%s applies to new heads)",
                     name_or_path, head_init)
    return model, tokenizer


def save(model, tokenizer, out: str | Path) -> Path:
    """Weights as safetensors plus the tokenizer (with its chat template) in one folder."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out
