"""The paper's two backbones as package data, read offline: architecture configs and chat templates.

One folder per `repro.model.BACKBONES` name holds what a run needs before any weight is fetched:

* `config.json` — the Hub checkpoint's architecture config, verbatim (`meta-llama/Llama-3.1-8B-Instruct`,
  `google/gemma-2-27b-it`);
* `chat_template.jinja` — its tokenizer's chat template, verbatim;
* `special_tokens.json` — bos/eos/pad, the ids of the tokens the template writes, and what a rendered
  conversation ends with (the reward is pooled from its last token).

`README.md` beside them says where each file comes from and under which licence.

* `model_config(name)` is the checkpoint's config as a transformers `PretrainedConfig` (num_labels=1):
  every rank passes it to `from_pretrained`, so no rank downloads a config.
* `build_reward_model(config)` is the one function that constructs a reward model from a config (the
  tiny backbone goes through it too); `empty=True` builds it on the meta device, holding no memory. A
  ZeRO-3 run wraps this call in `deepspeed.zero.Init`.
* `meta_backbone(name)` is the reward model a run of `name` trains, weights aside: built on meta with the
  pad token added the way the released Skywork checkpoint did (Llama-3.1: pad 128256, vocab 128257).

Importing this module imports neither torch nor transformers.
"""
from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent

# Backbone names whose files ship in this folder (each also a key of repro.model.BACKBONES).
SHIPPED: tuple[str, ...] = ("gemma2_27b", "llama31_8b")

# Attention used when the config says null: transformers' own default, except where that default is
# refused. Gemma-2's sequence-classification class has no sdpa path (and sdpa costs Gemma-2 RewardBench
# accuracy), so null means eager there.
DEFAULT_ATTENTION: dict[str, str] = {"gemma2": "eager"}


class BackboneError(ValueError):
    """A backbone name without shipped files, or a model option it cannot take; the message names it."""


def _read(name: str, filename: str) -> str:
    if name not in SHIPPED:
        raise BackboneError(f"backbone {name!r} has no shipped config or chat template; shipped: {', '.join(SHIPPED)}")
    return (HERE / name / filename).read_text(encoding="utf-8")


def config_dict(name: str) -> dict:
    """The checkpoint's `config.json` as shipped (a fresh dict each call)."""
    return json.loads(_read(name, "config.json"))


def chat_template(name: str) -> str:
    """The checkpoint tokenizer's chat template, verbatim."""
    return _read(name, "chat_template.jinja")


def special_tokens(name: str) -> dict:
    """{"bos_token", "eos_token", "pad_token" (null: none), "ids": {token: id}, "ends_with"}."""
    return json.loads(_read(name, "special_tokens.json"))


def model_type(name: str, path: str | None = None) -> str | None:
    """The transformers `model_type` a run of backbone `name` loads: a local `path`'s own config.json when
    there is one, else the shipped config's; None when neither says (the tiny model, a Hub id in `path`)."""
    if path:
        local = Path(path).expanduser() / "config.json"
        if local.is_file():
            try:
                return json.loads(local.read_text(encoding="utf-8")).get("model_type")
            except (OSError, ValueError):
                return None  # unreadable here: loading it reports the problem with its name
    return config_dict(name)["model_type"] if name in SHIPPED else None


def attention_for(model_type_: str | None, attn_implementation: str | None) -> str | None:
    """The attention implementation to request: the configured one, or the family's default for null."""
    return attn_implementation or DEFAULT_ATTENTION.get(model_type_ or "")


def model_config(name: str, *, attn_implementation: str | None = None):
    """The shipped checkpoint config of `name` as a `PretrainedConfig` for a reward model (num_labels=1).

    The vocabulary is the checkpoint's (Llama-3.1: 128256): `from_pretrained` loads the embeddings at that
    size, and `repro.model.ensure_pad_token` then adds the pad row, as the release did.
    """
    from transformers import AutoConfig

    d = config_dict(name)
    kind = d.pop("model_type")
    shipped_attention = d.pop("_attn_implementation", None)
    if "torch_dtype" in d:  # the key's name before transformers 5; same meaning
        d["dtype"] = d.pop("torch_dtype")
    attention = attention_for(kind, attn_implementation or shipped_attention)
    config = AutoConfig.for_model(kind, **({"attn_implementation": attention} if attention else {}), **d)
    config.num_labels = 1
    return config


def build_reward_model(config, *, empty: bool = False, dtype: str | None = None):
    """An `AutoModelForSequenceClassification` (num_labels=1) built from `config`, randomly initialised.

    `empty=True` builds it on the meta device (shapes only, no memory): a 27B model in seconds on a laptop.
    `dtype` (e.g. "float32") overrides the config's. This is the only place the package constructs a
    reward model from a config; under ZeRO-3 the caller wraps it in `deepspeed.zero.Init`.
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    if config.num_labels != 1:
        raise BackboneError(f"a reward model has one output; the config says num_labels={config.num_labels}")
    kwargs = {"dtype": getattr(torch, dtype)} if dtype else {}
    if not empty:
        return AutoModelForSequenceClassification.from_config(config, **kwargs)
    from accelerate import init_empty_weights

    with init_empty_weights():
        return AutoModelForSequenceClassification.from_config(config, **kwargs)


def meta_backbone(name: str, *, attn_implementation: str | None = None):
    """The reward model a run of backbone `name` trains, on the meta device: the shipped config built by
    `build_reward_model`, plus the dedicated pad token. A tokenizer without one (Llama-3.1) gets `[PAD]`
    appended after its vocabulary, so the pad id is the old vocabulary size and the embeddings grow by
    one row — what `repro.model.ensure_pad_token` does to the real tokenizer and checkpoint, and what the
    released Skywork-Reward-Llama-3.1-8B holds (pad 128256, vocab 128257). Gemma-2 has `<pad>` (id 0)."""
    model = build_reward_model(model_config(name, attn_implementation=attn_implementation), empty=True)
    tokens = special_tokens(name)
    if tokens["pad_token"] is None:
        pad_id = model.config.vocab_size
        model.resize_token_embeddings(pad_id + 1, mean_resizing=False)  # no values to average on meta
    else:
        pad_id = tokens["ids"][tokens["pad_token"]]
    model.config.pad_token_id = pad_id
    return model
