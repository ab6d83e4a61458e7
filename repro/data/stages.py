"""WildGuardMix filtering (PAPER.md section 1), two pure table -> table steps.

Stage 1 (`adversarial_only`): of the pairs whose source is `cfg.source`, keep those whose prompt is
adversarial (`adversarial == True`); vanilla prompts were already ranked right by the paper's models.
A pair without the flag (null) is dropped under its own reason, never guessed.

Stage 2 (`scorer_agrees`): keep the pairs a scorer reward model ranks right, score(chosen) >
score(rejected) (strict, as RewardBench counts a tie as wrong). The scores come in as a table (id,
score_chosen, score_rejected) computed by `repro.scorer` and saved beside the curated data; this module
never loads a model. A WildGuard pair without a score is an error: the scorer must have scored them all.

Pairs of other sources pass through untouched in both stages.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from repro.data.schema import DataError

NOT_ADVERSARIAL = "vanilla prompt (WildGuard stage 1: adversarial only)"
NO_FLAG = "adversarial flag missing (WildGuard stage 1)"
SCORER_DISAGREES = "scorer ranks rejected at or above chosen (WildGuard stage 2)"
SCORES_SCHEMA = pa.schema([("id", pa.string()), ("score_chosen", pa.float64()), ("score_rejected", pa.float64())])


def _mask(table: pa.Table, source: str, eligible: np.ndarray | None = None) -> np.ndarray:
    mine = pc.equal(table.column("source"), source).to_numpy(zero_copy_only=False)
    return mine if eligible is None else mine & eligible


def adversarial_only(table: pa.Table, source: str = "wildguard",
                     eligible: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Stage 1: {drop reason: rows to drop}: the non-adversarial pairs of `source` (and those without the
    flag), among the `eligible` rows (default all)."""
    mine = _mask(table, source, eligible)
    flag = table.column("adversarial")
    missing = mine & pc.is_null(flag).to_numpy(zero_copy_only=False)
    vanilla = mine & ~missing & ~pc.fill_null(flag, True).to_numpy(zero_copy_only=False)
    return {NOT_ADVERSARIAL: vanilla, NO_FLAG: missing}


def scorer_agrees(table: pa.Table, scores: pa.Table, source: str = "wildguard",
                  eligible: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Stage 2: {drop reason: rows to drop}: the pairs of `source` (among the `eligible` rows) the scorer
    ranks wrong."""
    mine = _mask(table, source, eligible)
    ids = table.column("id").filter(pa.array(mine))
    if pc.count_distinct(ids).as_py() != len(ids):
        raise DataError(f"WildGuard stage 2: the {source!r} pairs' ids are not unique (two sources read from "
                        "folders of the same name?), so scores cannot be matched to pairs")
    if pc.count_distinct(scores.column("id")).as_py() != scores.num_rows:
        raise DataError("WildGuard stage 2: the scores table holds an id twice")
    where = pc.index_in(ids, value_set=scores.column("id"))
    if where.null_count:
        first = ids.filter(pc.is_null(where))[0].as_py()
        raise DataError(f"WildGuard stage 2: {where.null_count} pair(s) have no scorer score (first: {first!r}); "
                        "the scores do not belong to this curation")
    pos = where.to_numpy(zero_copy_only=False).astype(np.int64)
    c = scores.column("score_chosen").to_numpy(zero_copy_only=False)[pos]
    r = scores.column("score_rejected").to_numpy(zero_copy_only=False)[pos]
    wrong = np.zeros(len(table), dtype=bool)
    wrong[np.flatnonzero(mine)[~(c > r)]] = True
    return {SCORER_DISAGREES: wrong}
