"""Magpie selection (PAPER.md section 1): score, offset, pool, keep the top fraction per task category.

1. Score of a Magpie pair = a function of the ArmoRM scores shipped with the source (`scores` column: the
   DPO sets' five `rewards_armorm`, Ultra's `[score, score_base]`). `data.magpie.score` names it; the
   default `mean` is the paper's "average ArmoRM score provided with the dataset" [D: mean over responses].
2. Adjusted score = score + `offsets[source]` (Air -0.1, Pro Llama-3 -0.05 [P]; other subsets 0).
3. The pairs of all `sources` are pooled; *independently per task category* the pairs are ranked by
   adjusted score (highest first; equal scores keep pool order = recipe source order, then row order) and
   the top `k = rounding(fraction x pairs in the category)` are kept, fraction = `top_fraction[category]`
   or `default_fraction` (Math 0.3, Coding & Debugging 0.3, others 0.1 [S]). `rounding`: floor (default
   [D]), round (halves up) or ceil. A pair without scores or without a category cannot be ranked: it is
   dropped under its own reason and does not count in any category's size.

Pairs of other sources pass through untouched. Every Magpie pair that reaches this step, kept or not, gets
a row in the returned scores table (id, source, category, raw score, offset, adjusted score, rank in its
category, kept): Figure 2 and the category table are built from it. A kept pair carries its adjusted
score in the `score` column of the pair table.

All of it is vectorised over the Arrow columns (numpy lexsort per category); the texts are never copied.
"""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DROP_REASON = "below its category's top fraction (Magpie selection)"
NO_SCORES = "no ArmoRM scores (Magpie selection)"
NO_CATEGORY = "no task category (Magpie selection)"


def _reduce(name):
    ufunc = {"max": np.maximum, "min": np.minimum}[name]

    def f(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
        return ufunc.reduceat(values, starts)
    return f


def _mean(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    lengths = np.diff(np.append(starts, len(values)))
    return np.add.reduceat(values, starts) / lengths


def _margin(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    return np.maximum.reduceat(values, starts) - np.minimum.reduceat(values, starts)


# name -> f(flat scores, start offset of each row's scores) -> one score per row (rows have >= 1 score)
SCORE_FUNCTIONS = {
    "mean": _mean,        # [D] the paper's "average ArmoRM score"
    "max": _reduce("max"),  # the best response's score (the DPO sets' chosen)
    "min": _reduce("min"),  # the worst response's score (the DPO sets' rejected)
    "margin": _margin,    # best - worst (= |score_difference| for Ultra)
}
ROUNDING = {"floor": math.floor, "round": lambda x: math.floor(x + 0.5), "ceil": math.ceil}  # round: halves up
SCORES_SCHEMA = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("category", pa.string()), ("raw_score", pa.float64()),
    ("offset", pa.float64()), ("score", pa.float64()), ("rank", pa.int64()), ("category_pairs", pa.int64()),
    ("category_kept", pa.int64()), ("kept", pa.bool_()),
])


def raw_scores(scores: pa.ChunkedArray | pa.Array, function: str = "mean") -> np.ndarray:
    """One score per row from a list<double> column; NaN where a row has no scores."""
    arr = scores.combine_chunks() if isinstance(scores, pa.ChunkedArray) else scores
    if len(arr) == 0:
        return np.zeros(0)
    lengths = pc.fill_null(pc.list_value_length(arr), 0).to_numpy(zero_copy_only=False)
    out = np.full(len(arr), np.nan)
    has = lengths > 0
    if has.any():
        flat = pc.list_flatten(arr).to_numpy(zero_copy_only=False).astype(np.float64)
        starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])[has]
        out[has] = SCORE_FUNCTIONS[function](flat, starts)
    return out


def keep_count(n: int, fraction: float, rounding: str = "floor") -> int:
    """Pairs kept of a category of `n`: rounding(fraction x n), float noise removed first (0.07 x 100 is
    7.000000000000001 in floats: ceil must give 7, not 8). `round` rounds halves up (2.5 -> 3)."""
    return min(n, max(0, int(ROUNDING[rounding](round(fraction * n, 9)))))


def select(table: pa.Table, cfg, eligible: np.ndarray | None = None) -> tuple[pa.Table, pa.Table, dict[str, np.ndarray]]:
    """Magpie selection under `cfg` (`repro.config.MagpieConfig`): (the table with `score` set on the
    Magpie pairs, the per-pair scores table, {drop reason: bool mask of the table's rows to drop}).
    `drop(table, masks)` applies the masks; the reasons' masks are disjoint. `eligible` (bool per row,
    default all) limits the pool, e.g. to pairs read from raw sources rather than an already curated set."""
    n = table.num_rows
    sources = table.column("source").to_numpy(zero_copy_only=False)
    pool = np.isin(sources, list(cfg.sources)) if n else np.zeros(0, dtype=bool)
    if eligible is not None:
        pool &= eligible
    if not cfg.enabled or not pool.any():
        return table, SCORES_SCHEMA.empty_table(), {}
    idx = np.flatnonzero(pool)
    sub = table.select(["id", "source", "category", "scores"]).take(pa.array(idx))  # never copy the texts
    raw = raw_scores(sub.column("scores"), cfg.score)
    category = np.asarray(sub.column("category").to_pylist(), dtype=object)
    offset = np.array([cfg.offsets.get(s, 0.0) for s in sources[idx]])
    adjusted = raw + offset
    no_score = np.isnan(raw)
    no_category = ~no_score & np.array([c is None for c in category], dtype=bool)
    usable = ~no_score & ~no_category
    keep = np.zeros(len(idx), dtype=bool)
    rank = np.full(len(idx), -1, dtype=np.int64)
    cat_n = np.zeros(len(idx), dtype=np.int64)
    cat_k = np.zeros(len(idx), dtype=np.int64)
    cats = np.where(usable, category, "")
    for cat in sorted(set(cats[usable].tolist())):
        members = np.flatnonzero(usable & (cats == cat))
        order = members[np.lexsort((members, -adjusted[members]))]  # score desc, then pool order
        k = keep_count(len(members), cfg.top_fraction.get(cat, cfg.default_fraction), cfg.rounding)
        keep[order[:k]] = True
        rank[order] = np.arange(len(order))
        cat_n[members], cat_k[members] = len(members), k
    scores = pa.table({
        "id": sub.column("id"), "source": sub.column("source"), "category": sub.column("category"),
        "raw_score": pa.array(raw, mask=no_score), "offset": offset, "score": pa.array(adjusted, mask=no_score),
        "rank": pa.array(rank, mask=rank < 0), "category_pairs": cat_n, "category_kept": cat_k, "kept": keep,
    }, schema=SCORES_SCHEMA)
    masks = {}
    for reason, bad in ((NO_SCORES, no_score), (NO_CATEGORY, no_category), (DROP_REASON, usable & ~keep)):
        if bad.any():
            m = np.zeros(n, dtype=bool)
            m[idx[bad]] = True
            masks[reason] = m
    merged = table.column("score").to_numpy(zero_copy_only=False).astype(np.float64)
    merged[idx] = adjusted
    table = table.set_column(table.schema.get_field_index("score"), "score",
                             pa.array(merged, type=pa.float64(), mask=np.isnan(merged)))
    return table, scores, masks


def drop(table: pa.Table, masks: dict[str, np.ndarray]) -> tuple[pa.Table, Counter]:
    """Apply a step's {reason: rows to drop} masks: (the rows no mask marks, drops by reason)."""
    gone = np.zeros(table.num_rows, dtype=bool)
    for m in masks.values():
        gone |= m
    return table.filter(pa.array(~gone)), Counter({r: int(m.sum()) for r, m in masks.items() if m.any()})
