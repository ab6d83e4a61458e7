"""`argilla/magpie-ultra-v0.1` (files `data/train-00000-of-00002.parquet`, `data/train-00001-of-00002.parquet`,
split `train`, 50,000 rows): one instruction with two responses and their ArmoRM scores per row.

Schema (DATASETS.md, in file order): `model_name_response_base`, `instruction`, `response`,
`response_base`, `intent`, `knowledge`, `difficulty`, `model_name_difficulty`, `explanation`, `quality`,
`model_name_quality`, `primary_tag` (the task category), `other_tags` (list<string>),
`model_name_classification`, `embedding` (list<double>), `model_name_embeddings`, `score` (double, ArmoRM
score of `response`), `score_base` (double, of `response_base`), `distilabel_metadata` (struct
`{raw_output_assign_tags_0: string}`), `nn_indices` (list<int64>), `nn_scores` (list<double>), `messages`
(list<struct{content, role}>), `guard`, `model_name_guard`, `safe` (bool), `hazard_category`,
`score_difference` (double = score - score_base). Only `COLUMNS` are read (never `embedding` & co.).
The repo's README declares only the default config (`data_files: data/train-*`); `datasets` infers the same
`train` split from the file names, so a local copy needs no README.

Pair rule (dataset card): `score_difference > 0` -> chosen `response`, rejected `response_base`; `< 0` ->
the other way round. `score_difference` is trusted as given, not recomputed from `score - score_base`
[D: `recompute_difference=False`; True orients by `score - score_base` instead]. Prompt = one user turn
(`instruction`); category = `primary_tag` mapped through `category_aliases` (default {"Other": "Others"},
[U] some copies spell the "other" bucket `Other`); scores = [score, score_base] (the source's response
order, whichever is chosen); `score` (the selection score) is left None for the Magpie selection step.

One row is one candidate pair: `table.num_rows + sum(drops.values())` = rows in the split. Checks in this
order, each counted under its reason:

* "missing category": `primary_tag` null, empty or not a string.
* "missing ArmoRM score": `score` or `score_base` null or NaN.
* "missing score_difference": `score_difference` null or NaN (not checked with `recompute_difference`).
* "score_difference is 0": no preference, no pair.
* then `schema.pair_problem` on the built pair: a null instruction ("malformed prompt message"), an empty
  one ("empty prompt"), a null or empty response ("response is not a string" / "empty response"),
  identical responses ("identical chosen and rejected").

A column of the wrong Arrow type (e.g. `score` stored as strings) makes the file unusable: `DataError`
naming the file and column (`check_types`).
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

import pyarrow as pa

from repro.data.hub import dataset_tag, load_split, looks_local, split_files
from repro.data.schema import DataError, PairTable, iter_rows, make_pair
from repro.fixtures import resolve

HUB_ID = "argilla/magpie-ultra-v0.1"
SOURCE = "magpie_ultra"
COLUMNS = ("instruction", "response", "response_base", "primary_tag", "score", "score_base", "score_difference")
# [U] The "other" task category is `Others` in DATASETS.md, `Other` in some copies: map to one spelling.
CATEGORY_ALIASES: Mapping[str, str] = MappingProxyType({"Other": "Others"})


def is_string(t: pa.DataType) -> bool:
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_null(t)


def is_number(t: pa.DataType) -> bool:
    return pa.types.is_floating(t) or pa.types.is_integer(t) or pa.types.is_null(t)


TYPES: dict[str, tuple[Callable[[pa.DataType], bool], str]] = {
    **{c: (is_string, "a string") for c in ("instruction", "response", "response_base", "primary_tag")},
    **{c: (is_number, "a number") for c in ("score", "score_base", "score_difference")},
}


def check_types(schema: pa.Schema, where: str, types: Mapping[str, tuple[Callable, str]]) -> None:
    """DataError naming `where` and the column if a column present in `schema` has the wrong Arrow type."""
    for col, (ok, want) in types.items():
        if col in schema.names and not ok(schema.field(col).type):
            raise DataError(f"{where}: column {col!r} must be {want}, got {schema.field(col).type}")


def load_checked(path: str, split: str, columns, types: Mapping[str, tuple[Callable, str]]):
    """`hub.load_split` plus an Arrow type check: of every local parquet file of the split first (so a bad
    shard is named), then of the loaded dataset (covers Hub files)."""
    where = resolve(path)
    if looks_local(where):
        for f in split_files(path, split):
            if f.endswith(".parquet") and Path(f).is_file():
                import pyarrow.parquet as pq

                check_types(pq.read_schema(f), f, types)
    ds = load_split(path, split, columns=columns)
    check_types(ds.features.arrow_schema, f"{where} split {split!r}", types)
    return ds


def canonical_category(value, aliases: Mapping[str, str]) -> str | None:
    """The category spelled canonically, or None if missing (null, empty, not a string)."""
    if not isinstance(value, str) or not value.strip():
        return None
    return aliases.get(value, value)


def bad_number(x) -> bool:
    return not isinstance(x, (int, float)) or isinstance(x, bool) or math.isnan(x)


def load(path: str = HUB_ID, split: str = "train", *, category_aliases: Mapping[str, str] = CATEGORY_ALIASES,
         recompute_difference: bool = False) -> tuple[pa.Table, Counter]:
    ds = load_checked(path, split, COLUMNS, TYPES)
    tag = dataset_tag(path)
    out, drops = PairTable(), Counter()
    for i, row in iter_rows(ds, COLUMNS):
        category = canonical_category(row["primary_tag"], category_aliases)
        if category is None:
            drops["missing category"] += 1
            continue
        score, score_base = row["score"], row["score_base"]
        if bad_number(score) or bad_number(score_base):
            drops["missing ArmoRM score"] += 1
            continue
        diff = score - score_base if recompute_difference else row["score_difference"]
        if bad_number(diff):
            drops["missing score_difference"] += 1
            continue
        if diff == 0:
            drops["score_difference is 0"] += 1
            continue
        chosen, rejected = (row["response"], row["response_base"]) if diff > 0 else (row["response_base"],
                                                                                     row["response"])
        out.keep_or_count(make_pair(id=f"{tag}:{split}:{i}", source=SOURCE,
                                    prompt=[{"role": "user", "content": row["instruction"]}],
                                    chosen=chosen, rejected=rejected, category=category,
                                    scores=[float(score), float(score_base)]), drops)
    return out.table(rows_read=ds.num_rows), drops
