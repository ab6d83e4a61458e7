"""The canonical preference pair every source is converted to, and the Arrow table that holds them.

One row of a pair table (`PAIR_SCHEMA`):

    id          str    stable id: "<dataset tag>:<split>:<row index in the source split>"
    source      str    source name (the `source` strings of the released 80K set where they exist)
    prompt      list   the conversation before the judged turn: [{"role", "content"}, ...], ends with a user turn
    chosen      str    the preferred final assistant turn
    rejected    str    the dispreferred final assistant turn
    category    str | None          task category where the source has one (Magpie), else None
    score       float | None        selection score, set by the Magpie selection step (score function of
                                    `scores` plus the subset's offset); None before it and for other sources
    scores      list[float] | None  the reward scores shipped with the source, one per response, in the
                                    source's response order (Magpie: ArmoRM), else None
    adversarial bool | None         WildGuardMix: the prompt is adversarial, else None

Curation keeps or drops pairs whole; it never edits chosen/rejected.

Loaders return `(pa.Table in PAIR_SCHEMA, Counter of drops by reason)`. They build the table with
`PairTable`, which turns every `BATCH_ROWS` pairs into an Arrow record batch, so Python holds at most one
batch of dicts whatever the size of the source.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping

import pyarrow as pa

PAIR_COLUMNS = ("id", "source", "prompt", "chosen", "rejected", "category", "score", "scores", "adversarial")
ROLES = ("system", "user", "assistant")
MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
PAIR_SCHEMA = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("prompt", pa.list_(MESSAGE)), ("chosen", pa.string()),
    ("rejected", pa.string()), ("category", pa.string()), ("score", pa.float64()),
    ("scores", pa.list_(pa.float64())), ("adversarial", pa.bool_()),
])
assert tuple(PAIR_SCHEMA.names) == PAIR_COLUMNS
BATCH_ROWS = 8192


class DataError(ValueError):
    """Unusable input: a file that cannot be read, a missing column, a wrong type. Names file, row and key."""


def _bad_number(x) -> bool:
    return not isinstance(x, (int, float)) or isinstance(x, bool) or math.isnan(x)


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
    if score is not None and _bad_number(score):
        return "score is NaN"
    scores = pair.get("scores")
    if scores is not None and (not isinstance(scores, (list, tuple)) or not scores
                               or any(s is None or _bad_number(s) for s in scores)):
        return "score is NaN"
    return None


def make_pair(*, id: str, source: str, prompt: list[dict], chosen: str, rejected: str,
              category: str | None = None, score: float | None = None, scores: list[float] | None = None,
              adversarial: bool | None = None) -> dict:
    return {
        "id": id,
        "source": source,
        "prompt": [{"role": m["role"], "content": m["content"]} for m in prompt],
        "chosen": chosen,
        "rejected": rejected,
        "category": category,
        "score": score,
        "scores": None if scores is None else list(scores),
        "adversarial": adversarial,
    }


class PairTable:
    """Accumulates canonical pairs into an Arrow table in PAIR_SCHEMA, a record batch per BATCH_ROWS pairs.

        out, drops = PairTable(), Counter()
        for ...: out.keep_or_count(make_pair(...), drops)
        return out.table(), drops
    """

    def __init__(self, batch_rows: int = BATCH_ROWS):
        self.batch_rows = batch_rows
        self._rows: list[dict] = []
        self._batches: list[pa.RecordBatch] = []
        self.n = 0

    def add(self, pair: dict) -> None:
        self._rows.append(pair)
        self.n += 1
        if len(self._rows) >= self.batch_rows:
            self._flush()

    def keep_or_count(self, pair: dict, drops: Counter) -> bool:
        """Add `pair`, or count it in `drops` under the reason `pair_problem` gives. True if kept."""
        reason = pair_problem(pair)
        if reason:
            drops[reason] += 1
            return False
        self.add(pair)
        return True

    def _flush(self) -> None:
        if self._rows:
            self._batches.append(pa.RecordBatch.from_pylist(self._rows, schema=PAIR_SCHEMA))
            self._rows = []

    def table(self, rows_read: int | None = None) -> pa.Table:
        """The pairs; `rows_read` (the rows of the source split) is kept in the schema metadata, where
        `rows_read(table)` finds it (a grouped source's rows are not its candidate pairs)."""
        self._flush()
        schema = PAIR_SCHEMA if rows_read is None else PAIR_SCHEMA.with_metadata({ROWS_READ: str(rows_read)})
        return pa.Table.from_batches(self._batches, schema=schema)


ROWS_READ = b"repro.rows_read"


def rows_read(table: pa.Table) -> int | None:
    """The source rows a loader read to build `table`, or None if it did not say."""
    value = (table.schema.metadata or {}).get(ROWS_READ)
    return None if value is None else int(value)


def empty_table() -> pa.Table:
    return PAIR_SCHEMA.empty_table()


def iter_rows(ds, columns, batch_size: int = 4096):
    """(row index, row dict of `columns`) over a `datasets.Dataset`, read a batch at a time (decoded as
    `datasets` decodes rows, so `Json` columns come back as Python values)."""
    columns = list(columns)
    i = 0
    for batch in ds.select_columns(columns).iter(batch_size=batch_size):
        for values in zip(*(batch[c] for c in columns)):
            yield i, dict(zip(columns, values))
            i += 1
