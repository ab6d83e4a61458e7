"""Tokenizer fixes (pad != EOS, single BOS), batching, pooling, and the tiny backbone."""
import pytest
import torch

from repro.data.batching import PairCollator, length_grouped_order
from repro.data.tokenize import TokenizationError, encode_conversation, encode_pair, tokenize_pairs
from repro.engine import accumulation_steps, forward_rewards
from repro.model import build_tiny_backbone, build_tiny_tokenizer, ensure_pad_token, load_pretrained, save

TEXTS = ["What color is the sky?", "The sky is blue.", "The sky is green.", "A dog barks."] * 20
CONV = [{"role": "user", "content": "What color is the sky?"}]


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer(TEXTS, vocab_size=300)


def test_tiny_tokenizer_has_dedicated_pad_and_single_bos(tok):
    assert tok.pad_token_id is not None and tok.pad_token_id != tok.eos_token_id
    ids = encode_conversation(tok, CONV + [{"role": "assistant", "content": "The sky is blue."}])
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert ids[-1] == tok.eos_token_id  # the pooled token is the end-of-turn token


def test_tokenizer_is_deterministic_and_reloads_offline(tok, tmp_path):
    again = build_tiny_tokenizer(TEXTS, vocab_size=300)
    assert again.get_vocab() == tok.get_vocab()
    model = build_tiny_backbone(tok)
    save(model, tok, tmp_path / "m")
    model2, tok2 = load_pretrained(str(tmp_path / "m"))
    assert encode_conversation(tok2, CONV) == encode_conversation(tok, CONV)
    assert tok2.truncation_side == "left"
    for (n, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), n


def test_doubled_bos_is_refused(tok):
    tok2 = build_tiny_tokenizer(TEXTS, vocab_size=300)
    tok2.chat_template = "{{ bos_token }}" + tok2.chat_template
    with pytest.raises(TokenizationError, match="doubled BOS"):
        encode_conversation(tok2, CONV)


def test_ensure_pad_token_replaces_pad_equal_to_eos(tok):
    tok2 = build_tiny_tokenizer(TEXTS, vocab_size=300)
    tok2.pad_token = tok2.eos_token
    model = build_tiny_backbone(tok)
    before = len(tok2)
    ensure_pad_token(tok2, model)
    assert tok2.pad_token == "[PAD]" and tok2.pad_token_id != tok2.eos_token_id
    assert len(tok2) == before + 1
    assert model.get_input_embeddings().num_embeddings == len(tok2)
    assert model.config.pad_token_id == tok2.pad_token_id


def test_long_pairs_are_dropped_and_counted_not_truncated(tok):
    pairs = [{"id": "a", "prompt": CONV, "chosen": "The sky is blue.", "rejected": "The sky is green."},
             {"id": "b", "prompt": CONV, "chosen": "The sky is blue. " * 50, "rejected": "no"}]
    kept, drops = tokenize_pairs(tok, pairs, max_length=40)
    assert [k["id"] for k in kept] == ["a"]
    assert dict(drops) == {"longer than max_length=40 tokens": 1}


def test_one_forward_pools_the_last_real_token_regardless_of_padding(tok):
    model = build_tiny_backbone(tok).eval()
    short = encode_pair(tok, CONV, "The sky is blue.", "Blue.")
    long = encode_pair(tok, CONV, "The sky is blue. The sky is blue.", "The sky is green.")
    collate = PairCollator(tok.pad_token_id)
    batch = collate([{"chosen_ids": short[0], "rejected_ids": short[1]},
                     {"chosen_ids": long[0], "rejected_ids": long[1]}])
    assert batch["input_ids"].shape[0] == 4  # chosen x2 then rejected x2, one forward
    with torch.no_grad():
        r_c, r_r = forward_rewards(model, batch)
        alone = forward_rewards(model, collate([{"chosen_ids": short[0], "rejected_ids": short[1]}]))
    assert r_c[0].item() == pytest.approx(alone[0][0].item(), abs=1e-5)
    assert r_r[0].item() == pytest.approx(alone[1][0].item(), abs=1e-5)


def test_length_grouped_order_is_a_deterministic_permutation():
    lengths = [5, 50, 7, 48, 6, 49, 8, 47] * 10
    a = length_grouped_order(lengths, 4, seed=0, mega=2)
    assert sorted(a) == list(range(80)) and a == length_grouped_order(lengths, 4, seed=0, mega=2)
    assert a != length_grouped_order(lengths, 4, seed=1, mega=2)
    spreads = [max(lengths[i] for i in a[j:j + 4]) - min(lengths[i] for i in a[j:j + 4]) for j in range(0, 80, 4)]
    assert sum(spreads) / len(spreads) < 20  # batches group similar lengths


def test_global_batch_is_fixed_across_world_sizes():
    assert accumulation_steps(128, 2, 8) == 8
    assert accumulation_steps(128, 1, 64) == 2
    with pytest.raises(ValueError, match="not a multiple"):
        accumulation_steps(128, 3, 1)


def test_tokenizer_that_adds_bos_itself_still_gives_one_bos(tok, tmp_path):
    """Real Llama-3 / Gemma-2 tokenizers add BOS on encode *and* write it in the chat template."""
    from tokenizers import processors

    tok2 = build_tiny_tokenizer(TEXTS, vocab_size=300)
    tok2.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{tok2.bos_token} $A", special_tokens=[(tok2.bos_token, tok2.bos_token_id)])
    assert tok2("x")["input_ids"][0] == tok2.bos_token_id  # the tokenizer adds BOS by default
    ids = encode_conversation(tok2, CONV)
    assert ids.count(tok2.bos_token_id) == 1


def test_a_gemma2_reward_model_folder_loads_and_scores_through_the_same_path(tok, tmp_path):
    """Gemma-2 (eager attention, head_dim set) saved offline, loaded with load_pretrained like a Hub id."""
    from transformers import Gemma2Config, Gemma2ForSequenceClassification

    from repro.evaluate import score_rows

    cfg = Gemma2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                       num_attention_heads=2, num_key_value_heads=1, head_dim=16, num_labels=1,
                       pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    save(Gemma2ForSequenceClassification(cfg), tok, tmp_path / "gemma")
    model, tok2 = load_pretrained(str(tmp_path / "gemma"), attn_implementation="eager")
    assert type(model).__name__ == "Gemma2ForSequenceClassification"
    rows = [{"id": i, "subset": "hep-go", "prompt": CONV, "chosen": "The sky is blue.", "rejected": "Green."}
            for i in range(3)]
    out = score_rows(model, tok2, rows, batch_size=2)
    assert len(out) == 3 and out["score_chosen"].nunique() == 1  # same input, same score, across batches


def test_checkpoints_train_with_fp32_master_weights_even_for_bf16_compute(tok, tmp_path):
    """`model.dtype=bfloat16` is bf16 compute; AdamW must update fp32 weights (1e-6 steps vanish in bf16)."""
    from repro.config import ModelConfig, RunConfig
    from repro.fit import build_backbone

    save(build_tiny_backbone(tok), tok, tmp_path / "m")
    cfg = RunConfig(model=ModelConfig(name="llama31_8b", path=str(tmp_path / "m"), dtype="bfloat16"))
    model, _ = build_backbone(cfg, pairs=[])
    assert {p.dtype for p in model.parameters()} == {torch.float32}
