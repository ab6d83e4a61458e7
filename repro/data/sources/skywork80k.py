"""`Skywork/Skywork-Reward-Preference-80K-v0.1` / `-v0.2`: the released curated set.

Schema (DATASETS.md): `chosen`, `rejected` = full conversations (lists of {content, role}) sharing the
same prompt turns and differing in the last assistant turn; `source` = any string.
"""
from __future__ import annotations

from collections import Counter

import pyarrow as pa

from repro.data.hub import dataset_tag, load_split, row_locator
from repro.data.schema import DataError, PairTable, iter_rows, make_pair

HUB_ID = "Skywork/Skywork-Reward-Preference-80K-v0.1"
COLUMNS = ("chosen", "rejected", "source")
MESSAGE = pa.struct([("content", pa.string()), ("role", pa.string())])
# The on-disk schema of data/train-00000-of-00001.parquet (fixtures and --skywork-format copy it).
SCHEMA = pa.schema([("chosen", pa.list_(MESSAGE)), ("rejected", pa.list_(MESSAGE)), ("source", pa.string())])


def conversation_pair(chosen: list, rejected: list) -> tuple[list, str, str] | str:
    """(prompt turns, chosen text, rejected text), or the reason the two conversations don't form a pair."""
    if not chosen or not rejected:
        return "empty conversation"
    for m in (*chosen, *rejected):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or not isinstance(m.get("role"), str):
            return "message with a missing or non-string role/content"
    if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        return "last turn is not from the assistant"
    if list(map(dict, chosen[:-1])) != list(map(dict, rejected[:-1])):
        return "chosen and rejected prompts differ"
    return list(chosen[:-1]), chosen[-1]["content"], rejected[-1]["content"]


def load(path: str = HUB_ID, split: str = "train") -> tuple[pa.Table, Counter]:
    ds = load_split(path, split, columns=COLUMNS)
    tag = dataset_tag(path)
    out, drops = PairTable(), Counter()
    for i, row in iter_rows(ds, COLUMNS):
        for key in COLUMNS[:2]:
            if not isinstance(row[key], list):
                raise DataError(f"{row_locator(path, split)(i)}: {key!r} must be a list of messages, "
                                f"got {type(row[key]).__name__}")
        got = conversation_pair(row["chosen"], row["rejected"])
        if isinstance(got, str):
            drops[got] += 1
            continue
        prompt, chosen, rejected = got
        if not isinstance(row["source"], str) or not row["source"]:
            drops["missing source"] += 1
            continue
        pair = make_pair(id=f"{tag}:{split}:{i}", source=row["source"], prompt=prompt, chosen=chosen,
                         rejected=rejected)
        out.keep_or_count(pair, drops)
    return out.table(rows_read=ds.num_rows), drops
