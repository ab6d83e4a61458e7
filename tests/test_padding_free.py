"""The padding-free micro-batch (`optim.padding_free`): conversations end to end in one row, attention
confined to each, rewards read at each conversation's last token — the padded layout's numbers without
its padding."""
import json
import random
from pathlib import Path

import pyarrow as pa
import pytest
import torch

from repro.config import LossConfig, OptimConfig
from repro.data.batching import PairCollator, packed
from repro.engine import forward_rewards, score_head, train
from repro.model import build_tiny_backbone, build_tiny_tokenizer
from repro.results import MetricsLog

from conftest import run_cli

WORDS = "the a cat dog sat on mat and then ran away quickly slowly big small red blue".split()


@pytest.fixture(scope="module")
def texts():
    rng = random.Random(0)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 60))) for _ in range(200)]


@pytest.fixture(scope="module")
def tok(texts):
    return build_tiny_tokenizer(texts, vocab_size=300)


def pairs_of(tok, texts, n):
    return [{"chosen_ids": tok(texts[i])["input_ids"], "rejected_ids": tok(texts[i + 1])["input_ids"]}
            for i in range(0, 2 * n, 2)]


def test_the_packed_batch_by_hand():
    batch = PairCollator(0, padding_free=True)([{"chosen_ids": [5, 6, 7], "rejected_ids": [8]},
                                                {"chosen_ids": [9, 10], "rejected_ids": [11, 12, 13, 14]}])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 9, 10, 8, 11, 12, 13, 14]]  # chosen rows, then rejected
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1, 0, 0, 1, 2, 3]]
    assert batch["ends"].tolist() == [2, 4, 5, 9]
    assert set(batch) == {"input_ids", "position_ids", "ends"}  # no attention mask: none is padding


def test_the_token_cache_rows_pack_as_the_list_rows_do():
    rows = [{"chosen_ids": [5, 6, 7], "rejected_ids": [8]}, {"chosen_ids": [9, 10], "rejected_ids": [11, 12, 13, 14]}]
    ids = pa.list_(pa.int32())
    table = pa.table({"chosen_ids": pa.array([r["chosen_ids"] for r in rows], ids),
                      "rejected_ids": pa.array([r["rejected_ids"] for r in rows], ids)})
    collate = PairCollator(0, padding_free=True)
    a, b = collate(rows), collate(table)
    assert all(torch.equal(a[k], b[k]) and a[k].dtype == b[k].dtype == torch.long for k in a)


def test_an_empty_conversation_is_refused():
    with pytest.raises(ValueError, match="empty conversation"):
        packed(torch.tensor([1, 2]).numpy(), torch.tensor([2, 0]).numpy())


def tiny_gemma2(tok):
    """A two-layer Gemma-2 whose 8-token sliding window is shorter than most conversations here: the packed
    mask must combine the window with the conversation boundaries."""
    from transformers import Gemma2Config

    from repro.backbones import build_reward_model

    cfg = Gemma2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, head_dim=16, sliding_window=8,
                       max_position_embeddings=512, num_labels=1, pad_token_id=tok.pad_token_id,
                       attn_implementation="eager")
    torch.manual_seed(0)
    return build_reward_model(cfg)


@pytest.mark.parametrize("arch", ["llama-eager", "llama-sdpa", "gemma2-eager"])
def test_packed_rewards_and_gradients_equal_the_padded_ones_and_each_conversation_alone(tok, texts, arch):
    model = tiny_gemma2(tok) if arch.startswith("gemma2") else build_tiny_backbone(tok, attn_implementation=arch[6:])
    batch = pairs_of(tok, texts, 8)
    grads, rewards = {}, {}
    for padding_free in (False, True):
        model.zero_grad()
        r_c, r_r = forward_rewards(model, PairCollator(tok.pad_token_id, padding_free=padding_free)(batch))
        (-torch.nn.functional.logsigmoid(r_c - r_r).mean()).backward()
        rewards[padding_free] = torch.cat([r_c, r_r]).detach()
        grads[padding_free] = torch.cat([p.grad.flatten() for p in model.parameters()])
    # independent of both layouts: every conversation through the model on its own, no padding, no packing
    with torch.no_grad():
        alone = torch.tensor([model(input_ids=torch.tensor([s])).logits.item()
                              for s in [b["chosen_ids"] for b in batch] + [b["rejected_ids"] for b in batch]])
    assert (rewards[True] - alone).abs().max().item() < 1e-5
    assert (rewards[False] - alone).abs().max().item() < 1e-5
    assert (rewards[True] - rewards[False]).abs().max().item() < 1e-5
    assert rewards[True].std().item() > 1e-3  # distinct rewards: a broken mask could not pass by constant output
    assert torch.allclose(grads[True], grads[False], rtol=1e-4, atol=1e-7)


def test_the_head_is_found_under_a_wrapper(tok):
    model = build_tiny_backbone(tok)

    class Wrapper(torch.nn.Module):  # as DDP and DeepSpeed's engine hold the model: `.module`
        def __init__(self, inner):
            super().__init__()
            self.module = inner

        def forward(self, **kw):
            return self.module(**kw)

    assert score_head(Wrapper(Wrapper(model))) is model.score
    with pytest.raises(TypeError, match="no `score` head"):
        score_head(torch.nn.Linear(2, 2))


def test_training_padding_free_follows_the_padded_run(tok, texts, tmp_path):
    """20 optimizer steps of the engine, one process: the same losses to float rounding."""
    from accelerate import Accelerator

    examples = pairs_of(tok, texts, 96)
    curves = {}
    for padding_free in (False, True):
        model = build_tiny_backbone(tok, seed=0)
        optim = OptimConfig(lr=1e-3, global_batch_size=16, per_device_batch_size=8, epochs=100, max_steps=20,
                            log_every=1, padding_free=padding_free)
        log = tmp_path / f"m{padding_free}.jsonl"
        train(Accelerator(cpu=True), model, tok, examples, optim, LossConfig(), seed=0, metrics=MetricsLog(log))
        curves[padding_free] = [r["value"] for r in map(json.loads, log.read_text().splitlines())
                                if r["metric"] == "loss"]
    assert len(curves[True]) == 20
    assert curves[True][0] == pytest.approx(curves[False][0], rel=1e-6)
    assert curves[True] == pytest.approx(curves[False], rel=1e-4)
    assert curves[True][-1] < curves[True][0] - 0.05  # it trained


def two_workers_padding_free_follow_one_padded_process(tmp_path, launcher: list[str]) -> None:
    """2 CPU workers under `launcher`, padding-free, vs one process, padded: 4 steps of the fixture data, the
    same logged curve (loss, accuracy, lr, gradient norm) to rel 1e-4."""
    from test_zero3 import curve, run_dir_of

    short = ["data=fixture_released", "optim.max_steps=4", "optim.log_every=1"]
    two = run_cli(["-m", "repro.train", *short, "optim.padding_free=true", *launcher, "runs_root=two"], tmp_path)
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-3000:]
    one = run_cli(["-m", "repro.train", *short, "runs_root=one"], tmp_path)
    assert one.returncode == 0, one.stdout[-2000:] + one.stderr[-3000:]
    a = curve(run_dir_of(tmp_path / "two", [*short, "optim.padding_free=true"]))
    b = curve(run_dir_of(tmp_path / "one", short))
    assert sorted(a) == sorted(b) and len(a) == 16
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-12), (key, a[key], b[key])


def test_two_ddp_workers_padding_free_train_the_one_process_padded_model(tmp_path):
    """Through DDP's wrapper (the head's output taken by a hook)."""
    two_workers_padding_free_follow_one_padded_process(tmp_path, [
        "launcher=accelerate", "launcher.cpu=true", "launcher.num_processes=2", "launcher.cpu_threads=1"])


@pytest.mark.slow
def test_two_zero3_workers_padding_free_train_the_one_process_padded_model(tmp_path):
    """The same through DeepSpeed's engine, parameters partitioned (ZeRO-3)."""
    from test_zero3 import ZERO3

    two_workers_padding_free_follow_one_padded_process(tmp_path, ZERO3)
