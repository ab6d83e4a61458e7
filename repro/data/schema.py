"""The canonical preference pair every source is converted to.

A pair is a plain dict (one row of a `datasets.Dataset`):

    id        str   stable id: "<loader name>:<split>:<row index in the source split>"
    source    str   source name (the `source` strings of the released 80K set where they exist)
    prompt    list  the conversation before the judged turn: [{"role", "content"}, ...], ends with a user turn
    chosen    str   the preferred final assistant turn
    rejected  str   the dispreferred final assistant turn
    category  str | None   task category where the source has one (Magpie), else None
    score     float | None selection score where the source has one (Magpie ArmoRM), else None

Curation keeps or drops pairs whole; it never edits chosen/rejected.
"""
from __future__ import annotations

import math
from collections.abc import Mapping

PAIR_COLUMNS = ("id", "source", "prompt", "chosen", "rejected", "category", "score")
ROLES = ("system", "user", "assistant")


class DataError(ValueError):
    """Unusable input: a file that cannot be read, a missing column, a wrong type. Names file, row and key."""


def pair_problem(pair: Mapping) -> str | None:
    """Why a canonical pair must be dropped (a short reason used as the drop-count key), or None if fine."""
    prompt = pair["prompt"]
    if not prompt:
        return "empty prompt"
    for m in prompt:
        if m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            return "malformed prompt message"
    if prompt[-1]["role"] != "user":
        return "prompt does not end with a user turn"
    if not prompt[-1]["content"].strip():
        return "empty prompt"
    chosen, rejected = pair["chosen"], pair["rejected"]
    if not isinstance(chosen, str) or not isinstance(rejected, str):
        return "response is not a string"
    if not chosen.strip() or not rejected.strip():
        return "empty response"
    if chosen == rejected:
        return "identical chosen and rejected"
    score = pair.get("score")
    if score is not None and (not isinstance(score, (int, float)) or math.isnan(score)):
        return "score is NaN"
    return None


def make_pair(*, id: str, source: str, prompt: list[dict], chosen: str, rejected: str,
              category: str | None = None, score: float | None = None) -> dict:
    return {
        "id": id,
        "source": source,
        "prompt": [{"role": m["role"], "content": m["content"]} for m in prompt],
        "chosen": chosen,
        "rejected": rejected,
        "category": category,
        "score": score,
    }


def keep_or_count(pair: dict, pairs: list[dict], drops) -> None:
    """Append `pair` to `pairs`, or count it in `drops` under the reason `pair_problem` gives."""
    reason = pair_problem(pair)
    if reason:
        drops[reason] += 1
    else:
        pairs.append(pair)
