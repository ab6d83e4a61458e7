"""`allenai/reward-bench`, split `filtered` (2,985 rows): the evaluation set, not a training source.

Columns (DATASETS.md): `prompt` (single user turn), `chosen`, `chosen_model`, `rejected`,
`rejected_model`, `subset` (one of the 23 names in `repro.eval.rewardbench.SUBSETS`), `id` (int64).
Evaluation rows are never dropped: a row that cannot be scored is an error naming the row.
"""
from __future__ import annotations

import pyarrow as pa

from repro.data.hub import load_split, row_locator
from repro.data.schema import DataError
from repro.eval.rewardbench import SUBSETS

HUB_ID = "allenai/reward-bench"
COLUMNS = ("prompt", "chosen", "chosen_model", "rejected", "rejected_model", "subset", "id")
# The on-disk schema of data/filtered-00000-of-00001.parquet.
SCHEMA = pa.schema([(c, pa.int64() if c == "id" else pa.string()) for c in COLUMNS])


def load(path: str = HUB_ID, split: str = "filtered", *, require_all_subsets: bool = True) -> list[dict]:
    """Rows as {id, subset, prompt: [user message], chosen, rejected}."""
    ds = load_split(path, split, columns=COLUMNS)
    known = set(SUBSETS)
    rows, seen = [], set()
    for i, r in enumerate(ds):
        if r["subset"] not in known:
            raise DataError(f"{row_locator(path, split)(i)} (id {r['id']}): unknown subset {r['subset']!r}")
        for key in ("prompt", "chosen", "rejected"):
            if not isinstance(r[key], str):
                raise DataError(f"{row_locator(path, split)(i)} (id {r['id']}): {key!r} must be a string")
        seen.add(r["subset"])
        rows.append({"id": int(r["id"]), "subset": r["subset"], "prompt": [{"role": "user", "content": r["prompt"]}],
                     "chosen": r["chosen"], "rejected": r["rejected"]})
    missing = [s for s in SUBSETS if s not in seen]
    if require_all_subsets and missing:
        raise DataError(f"{path} split {split!r}: subset(s) with no rows: {missing}")
    return rows
