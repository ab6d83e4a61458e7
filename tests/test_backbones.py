"""The paper's backbones offline: shipped configs and chat templates, the builder on the meta device,
and the model options (gradient checkpointing, attention, score-head initialisation)."""
import importlib.util
import json

import pytest
import torch
from jinja2.exceptions import TemplateError

from repro import backbones
from repro import config as config_mod
from repro.config import ModelConfig, RunConfig
from repro.data.tokenize import encode_conversation, encode_pair, tokenize_pairs
from repro.model import (BACKBONES, build_tiny_backbone, build_tiny_tokenizer, ensure_pad_token, init_score_head,
                         ModelError, load_pretrained, prepare_messages, save)

TEXTS = ["What color is the sky?", "The sky is blue.", "The sky is green.", "You are terse.", "Hi."] * 20
CONV = [{"role": "user", "content": "What color is the sky?"}, {"role": "assistant", "content": "Blue."}]
SYSTEM = {"role": "system", "content": " You are terse. "}
PAIRS = [{"id": str(i), "prompt": [{"role": "user", "content": "What color is the sky?"}],
          "chosen": "The sky is blue.", "rejected": "The sky is green." + " Green." * i} for i in range(4)]


@pytest.fixture(scope="module")
def llama_tok():
    tok = build_tiny_tokenizer(TEXTS, vocab_size=300, template="llama31_8b")
    ensure_pad_token(tok)  # the real tokenizer has no pad token: [PAD] is added, as for the Hub checkpoint
    return tok


@pytest.fixture(scope="module")
def gemma_tok():
    return build_tiny_tokenizer(TEXTS, vocab_size=300, template="gemma2_27b")


# --- shipped files --------------------------------------------------------------------------------


def test_every_hub_backbone_ships_its_config_template_and_tokens():
    assert set(backbones.SHIPPED) == {name for name, hub in BACKBONES.items() if hub is not None}
    for name in backbones.SHIPPED:
        for f in ("config.json", "chat_template.jinja", "special_tokens.json"):
            assert (backbones.HERE / name / f).is_file(), (name, f)
    assert (backbones.HERE / "README.md").read_text().count("Licen") >= 2
    with pytest.raises(backbones.BackboneError, match="'tiny_llama' has no shipped config.*gemma2_27b, llama31_8b"):
        backbones.config_dict("tiny_llama")


def test_shipped_configs_hold_the_published_architectures():
    """Golden values of the two model cards / technical reports, read through transformers."""
    llama = backbones.model_config("llama31_8b")
    assert (type(llama).__name__, llama.num_labels) == ("LlamaConfig", 1)
    assert (llama.hidden_size, llama.num_hidden_layers, llama.num_attention_heads, llama.num_key_value_heads,
            llama.intermediate_size, llama.vocab_size) == (4096, 32, 32, 8, 14336, 128256)
    assert (llama.max_position_embeddings, llama.rms_norm_eps, llama.tie_word_embeddings) == (131072, 1e-5, False)
    rope = llama.rope_parameters
    assert (rope["rope_type"], rope["factor"], rope["low_freq_factor"], rope["high_freq_factor"],
            rope["original_max_position_embeddings"], rope["rope_theta"]) == ("llama3", 8.0, 1.0, 4.0, 8192, 500000.0)
    assert (llama.bos_token_id, llama.eos_token_id) == (128000, [128001, 128008, 128009])

    gemma = backbones.model_config("gemma2_27b")
    assert type(gemma).__name__ == "Gemma2Config" and gemma.num_labels == 1
    assert (gemma.hidden_size, gemma.num_hidden_layers, gemma.num_attention_heads, gemma.num_key_value_heads,
            gemma.head_dim, gemma.intermediate_size, gemma.vocab_size) == (4608, 46, 32, 16, 128, 36864, 256000)
    assert gemma.query_pre_attn_scalar == 144 == gemma.hidden_size // gemma.num_attention_heads  # not head_dim
    assert (gemma.attn_logit_softcapping, gemma.final_logit_softcapping) == (50.0, 30.0)
    assert gemma.sliding_window == 4096 and gemma.max_position_embeddings == 8192
    assert gemma.layer_types[:4] == ["sliding_attention", "full_attention"] * 2  # alternating local/global
    assert gemma.hidden_activation == "gelu_pytorch_tanh" and gemma.tie_word_embeddings
    assert (gemma.pad_token_id, gemma.bos_token_id, gemma.eos_token_id) == (0, 2, 1)
    assert gemma._attn_implementation == "eager"
    assert backbones.model_config("gemma2_27b", attn_implementation="flash_attention_2")._attn_implementation \
        == "flash_attention_2"


def test_special_tokens_agree_with_the_configs():
    for name in backbones.SHIPPED:
        tokens, cfg = backbones.special_tokens(name), backbones.config_dict(name)
        ids = tokens["ids"]
        assert ids[tokens["bos_token"]] == cfg["bos_token_id"], name
        eos = cfg["eos_token_id"] if isinstance(cfg["eos_token_id"], list) else [cfg["eos_token_id"]]
        assert ids[tokens["eos_token"]] in eos, name
        assert (tokens["pad_token"] is None) == ("pad_token_id" not in cfg), name
        template = backbones.chat_template(name)
        assert tokens["bos_token"] not in template and "bos_token" in template  # BOS comes from the tokenizer
    assert backbones.special_tokens("gemma2_27b")["ids"]["<end_of_turn>"] == 107


# --- the builder on the meta device -----------------------------------------------------------------


def decoder_parameters(c: dict, *, norms_per_layer: int) -> int:
    """Parameters of the decoder stack from config arithmetic: layers x (attention + MLP + norms) + final
    norm. Attention: q and o are hidden x heads*head_dim, k and v hidden x kv_heads*head_dim (no biases);
    the gated MLP has three hidden x intermediate matrices."""
    h = c["hidden_size"]
    head_dim = c.get("head_dim", h // c["num_attention_heads"])
    attention = 2 * h * c["num_attention_heads"] * head_dim + 2 * h * c["num_key_value_heads"] * head_dim
    mlp = 3 * h * c["intermediate_size"]
    return c["num_hidden_layers"] * (attention + mlp + norms_per_layer * h) + h


def test_llama_reward_model_on_meta_has_the_released_shape_and_size():
    c = backbones.config_dict("llama31_8b")
    model = backbones.meta_backbone("llama31_8b")
    assert type(model).__name__ == "LlamaForSequenceClassification"
    assert {p.device.type for p in model.parameters()} == {"meta"}
    # a dedicated pad token after the vocabulary, as in Skywork-Reward-Llama-3.1-8B: pad 128256, vocab 128257
    assert (model.config.pad_token_id, model.config.vocab_size) == (128256, 128257)
    assert tuple(model.get_input_embeddings().weight.shape) == (128257, 4096)
    assert tuple(model.score.weight.shape) == (1, 4096)
    embeddings = (c["vocab_size"] + 1) * c["hidden_size"]
    expected = embeddings + decoder_parameters(c, norms_per_layer=2) + c["hidden_size"]  # + the score head
    assert sum(p.numel() for p in model.parameters()) == expected == 7_504_932_864
    # the same arithmetic with an LM head instead of the score head and no pad row gives the published
    # Llama-3.1-8B count (thamada/modelQuery): the "8B" includes the 0.53B LM head a reward model drops
    causal_lm = 2 * c["vocab_size"] * c["hidden_size"] + decoder_parameters(c, norms_per_layer=2)
    assert causal_lm == 8_030_261_248


def test_gemma_reward_model_on_meta_has_the_published_size():
    c = backbones.config_dict("gemma2_27b")
    model = backbones.meta_backbone("gemma2_27b")
    assert type(model).__name__ == "Gemma2ForSequenceClassification"
    assert {p.device.type for p in model.parameters()} == {"meta"}
    assert (model.config.pad_token_id, model.config.vocab_size) == (0, 256000)  # <pad> exists: no resize
    assert model.config._attn_implementation == "eager"
    # Gemma-2 layers have four RMSNorms (before and after attention, before and after the MLP)
    expected = c["vocab_size"] * c["hidden_size"] + decoder_parameters(c, norms_per_layer=4) + c["hidden_size"]
    total = sum(p.numel() for p in model.parameters())
    assert total == expected == 27_227_132_928 and round(total / 1e9, 1) == 27.2


def test_the_tiny_backbone_built_through_the_builder_is_the_demos_model():
    """build_tiny_backbone now goes through build_reward_model: the weights must be the ones the previous
    direct construction drew (the demo's numbers are pinned)."""
    from transformers import LlamaConfig, LlamaForSequenceClassification

    tok = build_tiny_tokenizer(TEXTS, vocab_size=300)
    model = build_tiny_backbone(tok, seed=3)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=512, num_labels=1,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      tie_word_embeddings=False)
    torch.manual_seed(3)
    direct = LlamaForSequenceClassification(cfg)
    a, b = model.state_dict(), direct.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# --- chat templates ---------------------------------------------------------------------------------

LLAMA_HEADER = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
                "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n")
LLAMA_TURNS = ("<|start_header_id|>user<|end_header_id|>\n\nWhat color is the sky?<|eot_id|>"
               "<|start_header_id|>assistant<|end_header_id|>\n\nBlue.<|eot_id|>")


def test_llama31_template_renders_its_system_header_with_and_without_a_system_turn(llama_tok):
    assert llama_tok.apply_chat_template(CONV, tokenize=False) == LLAMA_HEADER + "<|eot_id|>" + LLAMA_TURNS
    # the system turn's text (trimmed) goes after the date lines, in the same header
    with_system = llama_tok.apply_chat_template(prepare_messages(llama_tok, [SYSTEM, *CONV]), tokenize=False)
    assert with_system == LLAMA_HEADER + "You are terse.<|eot_id|>" + LLAMA_TURNS
    assert prepare_messages(llama_tok, [SYSTEM, *CONV]) == [SYSTEM, *CONV]  # Llama accepts system turns as given


def test_llama31_pair_has_one_bos_and_pools_eot(llama_tok):
    ids = encode_conversation(llama_tok, CONV)
    bos, eot = llama_tok.convert_tokens_to_ids(["<|begin_of_text|>", "<|eot_id|>"])
    assert ids[0] == bos and ids.count(bos) == 1
    assert ids[-1] == eot == llama_tok.eos_token_id  # the reward is pooled from <|eot_id|>
    text = llama_tok.apply_chat_template(CONV, tokenize=False)
    assert llama_tok(text)["input_ids"][:2] == [bos, bos]  # what encoding with special tokens would do
    # the pad token was appended after the vocabulary, never EOS, as on the real tokenizer
    assert llama_tok.pad_token == "[PAD]" and llama_tok.pad_token_id == len(llama_tok) - 1 != eot


GEMMA_TURNS = ("<start_of_turn>user\n{user}<end_of_turn>\n"
               "<start_of_turn>model\nBlue.<end_of_turn>\n")


def test_gemma2_template_renders_turns_and_pools_the_newline_after_end_of_turn(gemma_tok):
    assert gemma_tok.apply_chat_template(CONV, tokenize=False) == "<bos>" + GEMMA_TURNS.format(
        user="What color is the sky?")
    ids = encode_conversation(gemma_tok, CONV)
    assert ids[0] == gemma_tok.bos_token_id and ids.count(gemma_tok.bos_token_id) == 1
    # a rendered conversation ends with <end_of_turn> then "\n": the reward is pooled from the newline token
    assert gemma_tok.convert_ids_to_tokens(ids[-2:]) == ["<end_of_turn>", "Ċ"]  # Ċ: byte-level "\n"
    assert backbones.special_tokens("gemma2_27b")["ends_with"] == "<end_of_turn>\n"
    assert gemma_tok.pad_token_id not in ids and gemma_tok.pad_token_id != gemma_tok.eos_token_id


def test_gemma2_system_turn_is_merged_into_the_first_user_turn_never_a_template_error(gemma_tok):
    with pytest.raises(TemplateError, match="System role not supported"):
        gemma_tok.apply_chat_template([SYSTEM, *CONV], tokenize=False)  # the real template, unprepared
    merged = "<bos>" + GEMMA_TURNS.format(user="You are terse.\n\nWhat color is the sky?")
    ids = encode_conversation(gemma_tok, [SYSTEM, *CONV])
    assert gemma_tok.decode(ids) == merged
    # a system turn followed by no user turn becomes the user turn
    alone = prepare_messages(gemma_tok, [SYSTEM, {"role": "assistant", "content": "Blue."}])
    assert alone == [{"role": "user", "content": "You are terse."}, {"role": "assistant", "content": "Blue."}]
    # training data with system turns tokenises with no drop, in the per-pair and the batched path
    pairs = [dict(p, prompt=[SYSTEM, *p["prompt"]]) for p in PAIRS]
    kept, drops = tokenize_pairs(gemma_tok, pairs, max_length=256)
    assert not drops and [k["id"] for k in kept] == ["0", "1", "2", "3"]
    assert kept[0]["chosen_ids"] == encode_pair(gemma_tok, pairs[0]["prompt"], "The sky is blue.", "")[0]


def test_gemma2_batched_rendering_merges_system_turns_like_the_single_path(gemma_tok):
    import pyarrow as pa

    from repro.data.tokenize import encode_batch

    pairs = [dict(p, prompt=[SYSTEM, *p["prompt"]]) for p in PAIRS]
    chosen, rejected = encode_batch(gemma_tok, pa.RecordBatch.from_pylist(pairs))
    assert [list(c) for c in chosen] == [encode_pair(gemma_tok, p["prompt"], p["chosen"], p["rejected"])[0]
                                         for p in pairs]


# --- model options --------------------------------------------------------------------------------


def tiny_run(**model) -> RunConfig:
    return RunConfig(model=ModelConfig(**model))


def bt_loss_and_grads(model, tok):
    from repro.data.batching import PairCollator
    from repro.engine import forward_rewards
    from repro.losses import LOSSES

    examples = [dict(zip(("chosen_ids", "rejected_ids"), encode_pair(tok, p["prompt"], p["chosen"], p["rejected"])))
                for p in PAIRS]
    model.train()
    model.zero_grad()
    loss = LOSSES["bt"](*forward_rewards(model, PairCollator(tok.pad_token_id)(examples)))
    loss.backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}


def test_gradient_checkpointing_is_enabled_and_changes_no_loss_or_gradient():
    from repro.fit import build_backbone

    plain, tok = build_backbone(tiny_run(), PAIRS)
    checkpointed, tok2 = build_backbone(tiny_run(gradient_checkpointing=True), PAIRS)
    flag = ("is_activation_checkpointing" if hasattr(type(plain), "is_activation_checkpointing")
            else "is_gradient_checkpointing")  # transformers 5.x renamed it
    assert not getattr(plain, flag) and getattr(checkpointed, flag) and checkpointed.model.gradient_checkpointing
    assert checkpointed.config.use_cache is False
    loss_a, grads_a = bt_loss_and_grads(plain, tok)
    loss_b, grads_b = bt_loss_and_grads(checkpointed, tok2)
    assert loss_a == pytest.approx(loss_b, abs=1e-6)
    assert grads_a.keys() == grads_b.keys()
    assert max((grads_a[n] - grads_b[n]).abs().max().item() for n in grads_a) <= 1e-6
    assert any(g.abs().sum() > 0 for g in grads_b.values())


def test_head_init_does_what_it_says_on_the_tiny_model():
    from repro.fit import build_backbone

    default, tok = build_backbone(tiny_run(), PAIRS)
    zeros, _ = build_backbone(tiny_run(head_init="zeros"), PAIRS)
    assert torch.count_nonzero(zeros.score.weight) == 0
    others = {k: v for k, v in zeros.state_dict().items() if not k.startswith("score.")}
    assert all(torch.equal(v, default.state_dict()[k]) for k, v in others.items())  # only the head changed
    from repro.data.batching import PairCollator

    batch = PairCollator(tok.pad_token_id)([dict(zip(("chosen_ids", "rejected_ids"), encode_pair(
        tok, p["prompt"], p["chosen"], p["rejected"]))) for p in PAIRS])
    with torch.no_grad():
        assert torch.count_nonzero(zeros(**batch).logits) == 0  # every reward starts at exactly 0

    # normal: the head depends on head_init_seed only, not on the run's seed (the backbone's draw)
    a, _ = build_backbone(RunConfig(seed=1, model=ModelConfig(head_init="normal", head_init_seed=7)), PAIRS)
    b, _ = build_backbone(RunConfig(seed=2, model=ModelConfig(head_init="normal", head_init_seed=7)), PAIRS)
    c, _ = build_backbone(RunConfig(seed=1, model=ModelConfig(head_init="normal", head_init_seed=8)), PAIRS)
    assert not torch.equal(a.model.embed_tokens.weight, b.model.embed_tokens.weight)
    assert torch.equal(a.score.weight, b.score.weight) and not torch.equal(a.score.weight, c.score.weight)
    # null: as the model class drew it (the demo's head, unchanged)
    direct = build_tiny_backbone(tok, max_position_embeddings=4096)
    assert torch.equal(default.score.weight, direct.score.weight)


def test_normal_head_init_has_the_initializer_range_as_its_spread():
    from transformers import LlamaConfig

    wide = backbones.build_reward_model(LlamaConfig(vocab_size=16, hidden_size=4096, intermediate_size=8,
                                                    num_hidden_layers=1, num_attention_heads=1, num_labels=1))
    init_score_head(wide, "normal", seed=0)
    w = wide.score.weight
    assert w.shape == (1, 4096) and abs(w.mean().item()) < 4 * 0.02 / 64  # 4 standard errors
    assert w.std().item() == pytest.approx(wide.config.initializer_range, rel=0.06)
    with pytest.raises(ValueError, match="model.head_init='ones'; valid: normal, zeros, or null"):
        init_score_head(wide, "ones", seed=0)


def test_head_init_applies_to_a_new_head_and_never_replaces_a_trained_one(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tiny_tokenizer(TEXTS, vocab_size=300)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, pad_token_id=tok.pad_token_id))
    save(lm, tok, tmp_path / "lm")  # a causal-LM checkpoint, like Llama-3.1-8B-Instruct: no score head
    model, _ = load_pretrained(str(tmp_path / "lm"), head_init="zeros")
    assert torch.count_nonzero(model.score.weight) == 0
    assert torch.equal(model.model.embed_tokens.weight, lm.model.embed_tokens.weight)

    rm = build_tiny_backbone(tok)
    save(rm, tok, tmp_path / "rm")  # a reward model: its trained head is kept
    model, _ = load_pretrained(str(tmp_path / "rm"), head_init="zeros")
    assert torch.equal(model.score.weight, rm.score.weight) and torch.count_nonzero(model.score.weight) > 0


def test_null_attention_means_eager_for_gemma2(tmp_path):
    """transformers' default (sdpa) is refused by Gemma2ForSequenceClassification; null must load."""
    from transformers import Gemma2Config, Gemma2ForSequenceClassification

    tok = build_tiny_tokenizer(TEXTS, vocab_size=300, template="gemma2_27b")
    cfg = Gemma2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=16, num_labels=1,
                       pad_token_id=tok.pad_token_id, attn_implementation="eager")
    save(Gemma2ForSequenceClassification(cfg), tok, tmp_path / "g")
    model, tok2 = load_pretrained(str(tmp_path / "g"))
    assert model.config._attn_implementation == "eager"
    assert tok2.chat_template == backbones.chat_template("gemma2_27b")


# --- validation -----------------------------------------------------------------------------------


def refused(overrides: list[str]) -> str:
    with pytest.raises(config_mod.ConfigError) as e:
        config_mod.compose(overrides)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_gemma2_with_sdpa_is_refused_in_one_line(tmp_path):
    assert "model.attn_implementation=sdpa is refused for Gemma-2" in refused(
        ["model=gemma2_27b", "model.attn_implementation=sdpa"])
    # a local checkpoint is judged by its own config.json, whatever the backbone name says
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma2"}))
    assert "refused for Gemma-2" in refused(["model=llama31_8b", f"model.path={tmp_path}",
                                             "model.attn_implementation=sdpa"])
    config_mod.compose(["model=llama31_8b", "model.attn_implementation=sdpa"])  # Llama takes sdpa


@pytest.mark.skipif(importlib.util.find_spec("flash_attn") is not None, reason="flash_attn is installed here")
def test_flash_attention_without_the_package_is_refused_in_one_line():
    message = refused(["model=gemma2_27b", "model.attn_implementation=flash_attention_2"])
    assert "model.attn_implementation=flash_attention_2 needs the flash_attn package" in message


@pytest.mark.parametrize("override,needle", [
    ("model.attn_implementation=flash", "model.attn_implementation='flash'; valid: eager, flash_attention_2, sdpa"),
    ("model.head_init=ones", "model.head_init='ones'; valid: normal, zeros, or null"),
    ("model.head_init_seed=-1", "model.head_init_seed=-1: must be >= 0"),
    ("model.name=llama3_70b", "model.name='llama3_70b' is not a known name; valid: gemma2_27b, llama31_8b, "
                              "tiny_llama"),
])
def test_bad_model_options_are_refused_naming_the_key(override, needle):
    assert needle in refused([override])


def test_paper_presets_turn_on_gradient_checkpointing_and_a_seeded_head():
    for experiment, attention in (("skywork_llama31_8b", "sdpa"), ("skywork_gemma2_27b", "eager")):
        m = config_mod.compose([f"experiment={experiment}"]).model
        assert (m.gradient_checkpointing, m.head_init, m.attn_implementation) == (True, "normal", attention)
    m = config_mod.compose([]).model
    assert (m.gradient_checkpointing, m.head_init, m.head_init_seed) == (False, None, None)  # the demo


def test_scoring_a_checkpoint_without_a_trained_head_is_one_clear_line(tmp_path):
    """A causal-LM folder loads as a sequence classifier with a random head; evaluation refuses it."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from conftest import run_cli

    tok = build_tiny_tokenizer(TEXTS, vocab_size=300)
    lm = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=2, pad_token_id=tok.pad_token_id))
    save(lm, tok, tmp_path / "lm")
    with pytest.raises(ModelError, match=r"no trained sequence-classification head \(score\.weight not in the "
                                         r"checkpoint; architectures \['LlamaForCausalLM'\]\)"):
        load_pretrained(str(tmp_path / "lm"), require_head=True)
    proc = run_cli(["-m", "repro.evaluate", "--model", str(tmp_path / "lm"), "--data", "fixture:reward-bench",
                    "--allow-partial", "--out", str(tmp_path / "o")], tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert str(tmp_path / "lm") in proc.stderr and "random head" in proc.stderr
