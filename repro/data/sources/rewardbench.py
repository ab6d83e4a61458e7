"""`allenai/reward-bench`, split `filtered` (2,985 rows): the evaluation set, not a training source.

Columns (DATASETS.md): `prompt` (single user turn), `chosen`, `chosen_model`, `rejected`,
`rejected_model`, `subset` (one of the 23 names in `repro.eval.rewardbench.SUBSETS`), `id` (int64).
Evaluation rows are never dropped: a row that cannot be scored is an error naming the row.
"""
from __future__ import annotations

from collections import Counter

import pyarrow as pa

from repro.data.hub import load_split, row_locator
from repro.data.schema import DataError
from repro.eval.rewardbench import SUBSET_COUNTS, SUBSETS, coverage

HUB_ID = "allenai/reward-bench"
COLUMNS = ("prompt", "chosen", "chosen_model", "rejected", "rejected_model", "subset", "id")
# The on-disk schema of data/filtered-00000-of-00001.parquet.
SCHEMA = pa.schema([(c, pa.int64() if c == "id" else pa.string()) for c in COLUMNS])


def load(path: str = HUB_ID, split: str = "filtered", *, require_all_subsets: bool = True,
         allow_partial: bool = False) -> list[dict]:
    """Rows as {id, subset, prompt: [user message], chosen, rejected}.

    Scoring needs the whole `filtered` split: 2,985 rows, each of the 23 subsets at its official count, ids
    unique. A set with fewer rows in some subset is refused unless `allow_partial` (then outputs say it
    is partial: `repro.eval.rewardbench.coverage`); more rows than the official count in a subset, or a
    repeated id, is never RewardBench and always refused. `require_all_subsets=False` (with
    `allow_partial`) is for reading prompts only, e.g. to decontaminate against them."""
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
    check_counts(rows, f"{path} split {split!r}", allow_partial=allow_partial)
    return rows


def check_counts(rows: list[dict], where: str, *, allow_partial: bool = False) -> dict:
    """The set's coverage of the official split (`repro.eval.rewardbench.coverage`); a DataError naming `where`
    for a repeated id, a subset above its official count, or (unless `allow_partial`) below it."""
    ids = Counter(r["id"] for r in rows)
    repeated = [i for i, n in ids.items() if n > 1]
    if repeated:
        raise DataError(f"{where}: {len(repeated)} id(s) appear more than once, e.g. id {repeated[0]}")
    counts = Counter(r["subset"] for r in rows)
    over = {s: n for s, n in counts.items() if n > SUBSET_COUNTS[s]}
    if over:
        s = next(iter(over))
        raise DataError(f"{where}: subset {s!r} has {over[s]} rows, more than the official {SUBSET_COUNTS[s]} "
                        f"({len(over)} subset(s) over their count): not the RewardBench filtered split")
    cov = coverage(counts)
    if not cov["complete"] and not allow_partial:
        short = cov["incomplete_subsets"]
        first = next(iter(short))
        raise DataError(f"{where}: a partial RewardBench set ({cov['examples']:,} of {cov['expected_examples']:,} "
                        f"rows; {len(short)} subset(s) below their official counts, e.g. {first!r} "
                        f"{short[first]['n']} of {short[first]['expected']}): its scores are not RewardBench "
                        "scores; pass --allow-partial (eval.allow_partial=true in a run) to score it anyway, "
                        "marked partial")
    return cov
