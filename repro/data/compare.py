"""Diff a curated pair table against a released one (e.g. Skywork-Reward-Preference-80K-v0.1).

Pairs are matched by a normalised (prompt, chosen, rejected) key: every text has its whitespace runs
collapsed to one space and is stripped (so a trailing newline or a doubled space does not split a match);
roles and the order of turns are kept; case and punctuation are not touched. A key is a SHA-256 digest.
The report counts, per `source` value, the pairs in both, only in ours and only in theirs; a released
set's `source` strings need not equal ours (only three are confirmed), so each side is counted under its
own values, with the total over all. Duplicate keys on one side count once per row, matched one for one
(a key in ours twice and in theirs once: one in both, one only ours).
"""
from __future__ import annotations

import hashlib
import json
import re
from collections import Counter

import pyarrow as pa

_SPACE = re.compile(r"\s+")


def normalise(text: str | None) -> str:
    return _SPACE.sub(" ", text or "").strip()


def normalised_keys(table: pa.Table) -> list[bytes]:
    """The normalised key of every pair of a PAIR_SCHEMA table, in row order."""
    out = []
    for batch in table.select(["prompt", "chosen", "rejected"]).to_batches(max_chunksize=8192):
        for prompt, chosen, rejected in zip(*(batch.column(k).to_pylist() for k in ("prompt", "chosen", "rejected"))):
            key = [[[m["role"], normalise(m["content"])] for m in prompt], normalise(chosen), normalise(rejected)]
            out.append(hashlib.sha256(json.dumps(key, ensure_ascii=False).encode()).digest())
    return out


def _match(keys: list[bytes], other: list[bytes]) -> list[bool]:
    """Per key, whether it finds a partner in `other`, each partner used once (in row order)."""
    available = Counter(other)
    out = []
    for k in keys:
        out.append(available[k] > 0)
        available[k] -= out[-1]
    return out


def compare(ours: pa.Table, theirs: pa.Table) -> dict:
    """{"ours": {source: {"pairs", "in_both", "only_ours"}}, "theirs": {source: {"pairs", "in_both",
    "only_theirs"}}, "total": {"ours", "theirs", "in_both", "only_ours", "only_theirs"}}."""
    ours_keys, their_keys = normalised_keys(ours), normalised_keys(theirs)
    matched_ours, matched_theirs = _match(ours_keys, their_keys), _match(their_keys, ours_keys)

    def by_source(table, matched, only):
        out: dict[str, dict] = {}
        for s, m in zip(table.column("source").to_pylist(), matched):
            e = out.setdefault(s, {"pairs": 0, "in_both": 0, only: 0})
            e["pairs"] += 1
            e["in_both" if m else only] += 1
        return dict(sorted(out.items()))

    both = sum(matched_ours)
    return {
        "key": "normalised (prompt turns, chosen, rejected): whitespace runs -> one space, stripped",
        "ours": by_source(ours, matched_ours, "only_ours"),
        "theirs": by_source(theirs, matched_theirs, "only_theirs"),
        "total": {"ours": len(ours_keys), "theirs": len(their_keys), "in_both": both,
                  "only_ours": len(ours_keys) - both, "only_theirs": len(their_keys) - sum(matched_theirs)},
    }


def format_comparison(rep: dict, theirs_name: str) -> str:
    lines = [f"compared with {theirs_name} (key: {rep['key']})",
             f"{'our source':<24}{'pairs':>9}{'in both':>9}{'only ours':>11}"]
    for s, e in rep["ours"].items():
        lines.append(f"{s:<24}{e['pairs']:>9,}{e['in_both']:>9,}{e['only_ours']:>11,}")
    lines.append(f"{'their source':<24}{'pairs':>9}{'in both':>9}{'only theirs':>13}")
    for s, e in rep["theirs"].items():
        lines.append(f"{str(s):<24}{e['pairs']:>9,}{e['in_both']:>9,}{e['only_theirs']:>13,}")
    t = rep["total"]
    lines.append(f"total: ours {t['ours']:,}, theirs {t['theirs']:,}; in both {t['in_both']:,}, only ours "
                 f"{t['only_ours']:,}, only theirs {t['only_theirs']:,}")
    return "\n".join(lines)
