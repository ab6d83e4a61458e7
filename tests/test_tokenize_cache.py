"""The token cache: tokenised once per (data, tokenizer, max_length), memory-mapped by every process, and
read by training exactly as the per-pair list path would give it."""
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from repro.data import tokenize as tokenize_mod
from repro.data.batching import PairCollator
from repro.data.mixture import write_pairs
from repro.data.tokenize import (META_FILE, TOKENS_FILE, TokenizationError, TokenizedPairs, encode_conversation,
                                 token_cache_key, tokenize_pairs, tokenized_pairs)
from repro.fit import CuratedPairs, training_texts
from repro.model import build_tiny_tokenizer

SKY = "The sky is blue."
CONV = [{"role": "user", "content": "What color is the sky?"}]
LONG = "The sky is blue. " * 50  # far over 40 tokens with any of these tokenizers


@pytest.fixture(scope="module")
def pairs():
    """The released-set fixture (1,180 pairs, multi-turn prompts among them) plus hand-made edge cases."""
    from repro.data.sources.skywork80k import load

    table = load("fixture:skywork80k")[0]
    extra = [{"id": "sys", "prompt": [{"role": "system", "content": "Be terse."}] + CONV, "chosen": SKY,
              "rejected": "Green."},
             {"id": "unicode", "prompt": [{"role": "user", "content": "Ünïcödé — 天空是什么颜色？"}],
              "chosen": "蓝色。 🙂", "rejected": "\n\n  spaces\tand tabs  "}]
    return table.to_pylist() + [dict(table.to_pylist()[0], **e) for e in extra]


@pytest.fixture(scope="module")
def parquet(pairs, tmp_path_factory):
    path = tmp_path_factory.mktemp("curated") / "pairs.parquet"
    write_pairs(path, pairs)  # as curation writes it
    return path


@pytest.fixture(scope="module")
def tok(pairs):
    return build_tiny_tokenizer(list(training_texts(pairs)), vocab_size=600)


def test_cached_ids_equal_an_independent_per_pair_encoding_for_every_row(pairs, parquet, tok, tmp_path):
    data = tokenized_pairs(tok, parquet, 100_000, data_sha256="d", cache_root=tmp_path)
    # several record batches in the file: rows must follow the curated order across batches
    small = tokenize_mod.write_token_cache(tok, parquet, 100_000, tmp_path / "small", batch_pairs=7)
    assert small["pairs"] == len(pairs) and TokenizedPairs.open(tmp_path / "small").table.equals(data.table)
    rows = data.table.to_pylist()
    assert len(rows) == len(pairs) == data.pairs_in and not data.dropped
    for p, row in zip(pairs, rows):
        assert row["id"] == p["id"]
        for side in ("chosen", "rejected"):
            conversation = p["prompt"] + [{"role": "assistant", "content": p[side]}]
            assert row[f"{side}_ids"] == encode_conversation(tok, conversation), (p["id"], side)
        assert (row["chosen_len"], row["rejected_len"]) == (len(row["chosen_ids"]), len(row["rejected_ids"]))
    assert max(len(p["prompt"]) for p in pairs) >= 3  # multi-turn prompts were among them
    assert data.lengths.tolist() == [max(r["chosen_len"], r["rejected_len"]) for r in rows]


def test_token_ids_are_stored_as_int32_lists_in_a_memory_mappable_file(parquet, tok, tmp_path):
    data = tokenized_pairs(tok, parquet, 100_000, data_sha256="d", cache_root=tmp_path)
    reader = pa.ipc.open_file(pa.memory_map(str(data.folder / TOKENS_FILE)))  # Arrow IPC file, uncompressed
    schema = reader.schema
    assert schema.field("chosen_ids").type == schema.field("rejected_ids").type == pa.list_(pa.int32())
    assert schema.field("chosen_len").type == schema.field("rejected_len").type == pa.int32()
    assert reader.read_all().column("chosen_ids").num_chunks >= 1
    size = os.path.getsize(data.folder / TOKENS_FILE)
    tokens = json.loads((data.folder / META_FILE).read_text())["tokens"]
    rows = data.table.to_pylist()
    assert tokens == sum(len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in rows)
    assert 4 * tokens <= size < 4 * tokens + 64 * len(data) + 200_000  # 4 bytes a token, plus offsets and ids


def test_long_pairs_are_dropped_and_counted_by_reason(tok, tmp_path):
    hand = [{"id": "a", "prompt": CONV, "chosen": SKY, "rejected": "The sky is green."},
            {"id": "b", "prompt": CONV, "chosen": LONG, "rejected": "no"},        # chosen too long
            {"id": "c", "prompt": CONV, "chosen": "Blue.", "rejected": "Green."},
            {"id": "d", "prompt": CONV, "chosen": "yes", "rejected": LONG},       # rejected too long
            {"id": "e", "prompt": [{"role": "user", "content": LONG}], "chosen": "a", "rejected": "b"}]  # prompt
    data = tokenized_pairs(tok, hand, 40, data_sha256="hand", cache_root=tmp_path)
    assert data.table.column("id").to_pylist() == ["a", "c"]
    assert dict(data.dropped) == {"longer than max_length=40 tokens": 3} and data.pairs_in == 5
    meta = json.loads((data.folder / META_FILE).read_text())
    assert (meta["pairs_in"], meta["pairs"], meta["dropped"]) == (5, 2, {"longer than max_length=40 tokens": 3})
    kept, drops = tokenize_pairs(tok, hand, 40)  # the list path counts the same
    assert [k["id"] for k in kept] == ["a", "c"] and drops == data.dropped
    again = TokenizedPairs.open(data.folder)  # what a reusing run reports in train.json
    assert dict(again.dropped) == {"longer than max_length=40 tokens": 3} and again.pairs_in == 5


def test_a_second_call_reuses_the_cache_and_a_new_max_length_or_tokenizer_makes_a_new_one(
        parquet, tok, pairs, tmp_path, monkeypatch, caplog):
    calls = []
    real = tokenize_mod.encode_batch
    monkeypatch.setattr(tokenize_mod, "encode_batch", lambda *a: calls.append(1) or real(*a))
    first = tokenized_pairs(tok, parquet, 512, data_sha256="d", cache_root=tmp_path)
    assert calls and not first.reused
    n, stamp = len(calls), (first.folder / TOKENS_FILE).stat().st_mtime_ns
    with caplog.at_level("INFO", logger="repro.data.tokenize"):
        second = tokenized_pairs(tok, parquet, 512, data_sha256="d", cache_root=tmp_path)
    assert len(calls) == n and second.reused and second.folder == first.folder  # nothing re-tokenised
    assert (first.folder / TOKENS_FILE).stat().st_mtime_ns == stamp
    assert "reusing the token cache" in caplog.text and str(first.folder) in caplog.text
    other = build_tiny_tokenizer(list(training_texts(pairs)), vocab_size=500)
    template = build_tiny_tokenizer(list(training_texts(pairs)), vocab_size=600)
    template.chat_template = template.chat_template.replace("\n\n", "\n")
    keys = {token_cache_key("d", tok, 512), token_cache_key("d", tok, 256), token_cache_key("e", tok, 512),
            token_cache_key("d", other, 512), token_cache_key("d", template, 512)}
    assert len(keys) == 5
    # the same tokenizer built again (another process, another run) has the same key
    assert token_cache_key("d", build_tiny_tokenizer(list(training_texts(pairs)), vocab_size=600), 512) == \
        token_cache_key("d", tok, 512)
    shorter = tokenized_pairs(tok, parquet, 256, data_sha256="d", cache_root=tmp_path)
    assert shorter.folder != first.folder and not shorter.reused and len(calls) > n
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([first.folder.name, shorter.folder.name])


def test_a_writer_killed_mid_write_leaves_nothing_that_is_used(parquet, tok, tmp_path, monkeypatch):
    root, seen = tmp_path / "cache", []
    real = tokenize_mod.tokenize_batch

    def dying(*a):
        seen.append(1)
        if len(seen) == 3:
            os._exit(9)  # killed mid-write: no cleanup runs
        return real(*a)

    pid = os.fork()  # the writer: a process of its own, killed after writing two batches
    if pid == 0:
        try:
            monkeypatch.setattr(tokenize_mod, "tokenize_batch", dying)
            monkeypatch.setattr(tokenize_mod, "BATCH_PAIRS", 100)
            tokenized_pairs(tok, parquet, 100000, data_sha256="d", cache_root=root)
        finally:
            os._exit(1)
    assert os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) == 9
    (left,) = root.iterdir()  # the killed writer's temporary folder, with a partial file in it
    assert left.name.startswith(".tmp-") and (left / TOKENS_FILE).stat().st_size > 0
    assert not (root / token_cache_key("d", tok, 100000)).exists()
    with pytest.raises(TokenizationError, match="not found after the main process prepared it"):
        tokenized_pairs(tok, parquet, 100000, data_sha256="d", cache_root=root, write=False)
    data = tokenized_pairs(tok, parquet, 100000, data_sha256="d", cache_root=root)
    assert not data.reused and len(data) == pq.read_metadata(parquet).num_rows
    assert [p.name for p in root.iterdir()] == [data.folder.name]  # the dead writer's leftovers are gone


def test_a_complete_looking_temp_folder_is_never_read(parquet, tok, tmp_path):
    key = token_cache_key("d", tok, 100000)
    fake = tmp_path / f".tmp-{key}-otherhost-1"
    fake.mkdir()
    (fake / META_FILE).write_text(json.dumps({"pairs": 0, "pairs_in": 0, "dropped": {}}))
    data = tokenized_pairs(tok, parquet, 100000, data_sha256="d", cache_root=tmp_path)
    assert not data.reused and len(data) > 0 and fake.is_dir()  # another host's writer may still be alive


def test_other_processes_only_open_what_the_main_process_wrote(parquet, tok, tmp_path, monkeypatch):
    with pytest.raises(TokenizationError, match="token cache .* not found"):
        tokenized_pairs(tok, parquet, 512, data_sha256="d", cache_root=tmp_path, write=False)
    main = tokenized_pairs(tok, parquet, 512, data_sha256="d", cache_root=tmp_path)
    monkeypatch.setattr(tokenize_mod, "encode_batch", lambda *a: pytest.fail("a non-main process tokenised"))
    rank1 = tokenized_pairs(tok, parquet, 512, data_sha256="d", cache_root=tmp_path, write=False)
    assert rank1.folder == main.folder and rank1.table.equals(main.table)


def test_the_collator_gives_the_list_paths_tensors_for_the_same_indices(pairs, parquet, tok, tmp_path):
    examples, _ = tokenize_pairs(tok, pairs, 40)
    data = tokenized_pairs(tok, parquet, 40, data_sha256="d", cache_root=tmp_path)
    tokenize_mod.write_token_cache(tok, parquet, 40, tmp_path / "chunked", batch_pairs=50)
    chunked = TokenizedPairs.open(tmp_path / "chunked")
    assert len(examples) == len(data) == len(chunked) < len(pairs) - 50  # pairs dropped at 40 tokens
    assert data.lengths.tolist() == [max(len(e["chosen_ids"]), len(e["rejected_ids"])) for e in examples]
    collate = PairCollator(tok.pad_token_id)
    rng = np.random.default_rng(0)
    for size in (1, 2, 8, 8, 8, 16):
        idx = rng.choice(len(examples), size, replace=False).tolist()
        want = collate([examples[i] for i in idx])
        for source in (data, chunked):
            got = collate(source.take(idx))
            assert got.keys() == want.keys()
            for k in want:
                assert got[k].dtype == want[k].dtype == torch.long and torch.equal(got[k], want[k]), k
    with pytest.raises(IndexError):
        data.take([len(data)])


def test_a_doubled_bos_names_the_pair_and_leaves_no_cache(tok, tmp_path, pairs):
    bad = build_tiny_tokenizer(list(training_texts(pairs)), vocab_size=600)
    bad.chat_template = "{{ bos_token }}" + bad.chat_template
    hand = [{"id": "x1", "prompt": CONV, "chosen": SKY, "rejected": "Green."}]
    with pytest.raises(TokenizationError, match=r"doubled BOS \(pair x1\)"):
        tokenized_pairs(bad, hand, 512, data_sha256="h", cache_root=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_tiny_tokenizers_texts_stream_from_the_curated_file(pairs, parquet):
    streamed = CuratedPairs(parquet, "d")
    assert len(streamed) == len(pairs)  # from the parquet metadata
    want = [m["content"] for p in pairs for m in p["prompt"]] + [p["chosen"] for p in pairs] + \
        [p["rejected"] for p in pairs]
    assert list(training_texts(streamed)) == want
    assert list(training_texts(pa.Table.from_pylist(pairs))) == want


def test_training_reads_the_list_form_as_a_table():
    examples = [{"chosen_ids": [1, 2, 3], "rejected_ids": [1, 2]}, {"chosen_ids": [4], "rejected_ids": [5, 6, 7, 8]}]
    data = TokenizedPairs.of(examples)
    assert TokenizedPairs.of(data) is data and len(data) == 2 and data.lengths.tolist() == [3, 4]
    batch = PairCollator(0)(data.take([1, 0]))
    assert batch["input_ids"].tolist() == [[4, 0, 0, 0], [1, 2, 3, 0], [5, 6, 7, 8], [1, 2, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1], [1, 1, 0, 0]]


@pytest.mark.slow  # two accelerate workers on CPU (~1 min); the contract above is checked in-process
def test_two_workers_tokenise_once_and_a_second_run_reuses_the_cache(tmp_path):
    from conftest import run_cli

    args = ["-m", "repro.train", "data=fixture_released", "optim.max_steps=2", "launcher=accelerate",
            "launcher.cpu=true", "launcher.num_processes=2", "launcher.cpu_threads=1"]
    first = run_cli([*args, "runs_root=a"], tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    second = run_cli([*args, "runs_root=a", "seed=1"], tmp_path)
    assert second.returncode == 0, second.stderr[-2000:]
    a, b = (json.loads((tmp_path / "a" / "tiny" / "data=fixture_released,optim.max_steps=2" / f"seed={s}" /
                        "train.json").read_text()) for s in (0, 1))
    assert (a["token_cache_reused"], b["token_cache_reused"]) == (False, True)
    assert a["token_cache"] == b["token_cache"] and a["world_size"] == 2
    logs = (tmp_path / "a" / "tiny" / "data=fixture_released,optim.max_steps=2" / "seed=0" / "fit.log").read_text()
    assert logs.count("tokenised ") == 1, logs[-3000:]
