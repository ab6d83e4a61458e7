"""`hendrydong/preference_700K`: the paper's baseline mixture (HH-RLHF, SHP, HelpSteer, PKU-SafeRLHF, ...).

Layout (the Hub card's `dataset_info`/`configs` front-matter, seen in a stored copy of the README; the
exact shard count is not): one config, `data_files: data/train-*`, split `train` (700,000 rows), parquet
shards `data/train-0000N-of-0000M.parquet` (M is most likely 6: `push_to_hub` shards at 500 MB and the
card gives 2.8 GB; the loader does not depend on it). Columns, in file order: `rejected` (list of
{content, role}), `rejected_score` (float64), `chosen_score` (float64), `chosen` (list of {content,
role}). Only `chosen` and `rejected` are required (COLUMNS); any other column is ignored, so a copy
without the score columns, or with more columns, loads the same. The scores are not used (some rows of
the mixture have none); they are not copied into the pair's `scores`.

Pair rule: as `skywork80k.conversation_pair` — `chosen` and `rejected` are full conversations that share
the same prompt turns and differ in the last turn, which must be the assistant's; prompt = the shared
turns, chosen/rejected = the two last turns. Source value "preference700k". Id: "<tag>:<split>:<row>".

One row is one candidate pair, so `table.num_rows + sum(drops.values())` is the number of rows. Reasons:

* "null conversation": `chosen` or `rejected` is null.
* the reasons of `conversation_pair`: "empty conversation", "message with a missing or non-string
  role/content", "last turn is not from the assistant", "chosen and rejected prompts differ".
* then `schema.pair_problem` on the built pair: "empty prompt" (no turn before the answer),
  "malformed prompt message" (a role outside system/user/assistant), "prompt does not end with a user
  turn", "empty response", "identical chosen and rejected".

A `chosen`/`rejected` column that is not a list of {role, content} string messages makes the whole split
unusable: a `DataError` naming the dataset and its files.
"""
from __future__ import annotations

from collections import Counter

import pyarrow as pa

from repro.data.decontam import check_messages_type
from repro.data.hub import dataset_tag, load_split, split_files
from repro.data.schema import DataError, PairTable, iter_rows, make_pair
from repro.data.sources.skywork80k import MESSAGE, conversation_pair

HUB_ID = "hendrydong/preference_700K"
SOURCE = "preference700k"
COLUMNS = ("chosen", "rejected")
# The on-disk schema of data/train-*.parquet (the fixture copies it; only COLUMNS are required).
SCHEMA = pa.schema([("rejected", pa.list_(MESSAGE)), ("rejected_score", pa.float64()),
                    ("chosen_score", pa.float64()), ("chosen", pa.list_(MESSAGE))])


def check_message_columns(ds, path: str, split: str, columns=COLUMNS) -> None:
    """DataError unless every one of `columns` of the loaded split is a list of {role, content} strings."""
    for key in columns:
        problem = check_messages_type(ds.data.schema.field(key).type)
        if problem:
            files = split_files(path, split)
            raise DataError(f"{path} split {split!r}: column {key!r}: {problem}"
                            + (f" (files: {', '.join(files)})" if files else ""))


def load(path: str = HUB_ID, split: str = "train") -> tuple[pa.Table, Counter]:
    ds = load_split(path, split, columns=COLUMNS)
    check_message_columns(ds, path, split)
    tag = dataset_tag(path)
    out, drops = PairTable(), Counter()
    for i, row in iter_rows(ds, COLUMNS):
        if row["chosen"] is None or row["rejected"] is None:
            drops["null conversation"] += 1
            continue
        got = conversation_pair(row["chosen"], row["rejected"])
        if isinstance(got, str):
            drops[got] += 1
            continue
        prompt, chosen, rejected = got
        out.keep_or_count(make_pair(id=f"{tag}:{split}:{i}", source=SOURCE, prompt=prompt,
                                    chosen=chosen, rejected=rejected), drops)
    return out.table(rows_read=ds.num_rows), drops
