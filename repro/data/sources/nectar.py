"""`berkeley-nest/Nectar`: 7-wise GPT-4 rankings of chat responses, one prompt per row.

Needed for its prompts (the paper's Table 4 contamination row); also usable as a pair source.

Layout (the Hub card's `configs` front-matter and a stored `dataset_info.json` of a copy of the repo, both
seen in stored public pages; the row count is unverified): one parquet file `data/rlaif.parquet`,
config `default`, split `train`, 182,954 rows. Columns, in file order: `prompt` (str), `answers` (list of
struct {answer: str, model: str, rank: float64}), `turns` (int64), `num_responses` (int64), `source`
(list of str), `good_natured` (bool). Not verified: that every row's answers are ranked 1..n without
ties, and the exact whitespace of the prompt markers (the parser below is lenient about both).

Prompt format (Anthropic HH style): "\\n\\nHuman: q1\\n\\nAssistant: a1\\n\\nHuman: q2\\n\\nAssistant:".
`split_prompt` parses it into turns (Human -> user, Assistant -> assistant); the trailing empty
"Assistant:" is the judged turn and is removed.

Pair rule [D]: chosen = the answer of rank 1; rejected = the answer of the lowest rank (the largest rank
number, option `rejected_rank="last"`), or of rank `rejected_rank` when it is an int (2 = the runner-up).
Source value "nectar"; id "<tag>:<split>:<row>". `scores` stays None (ranks are not scores).

One row is one candidate pair, so `table.num_rows + sum(drops.values())` is the number of rows. Checks in
this order, each counted under its reason:

* "prompt is not a string" (null).
* "prompt is not in Human/Assistant turn format": text before the first "Human:" marker, or no marker.
* "prompt does not end with an empty Assistant turn": the last marker is "Human:", or text follows the
  last "Assistant:".
* "prompt turns do not alternate Human/Assistant": the turns before the judged one are not user,
  assistant, ..., user, or one of them is empty.
* "fewer than 2 answers": `answers` null, empty, or a single answer.
* "answer with a missing or invalid rank": a rank that is null, NaN, not a number, or below 1.
* "no rank-1 answer" / "tie at rank 1": not exactly one answer has rank 1.
* "no answer at the rejected rank" / "tie at the rejected rank": not exactly one answer has the
  rejected rank (with "last": two answers share the largest rank).
* then `schema.pair_problem`: a null answer text ("response is not a string"), an empty one,
  identical chosen and rejected texts.
"""
from __future__ import annotations

import math
import re
from collections import Counter

import pyarrow as pa

from repro.data.hub import dataset_tag, load_split
from repro.data.schema import PairTable, iter_rows, make_pair

HUB_ID = "berkeley-nest/Nectar"
SOURCE = "nectar"
COLUMNS = ("prompt", "answers")
ANSWER = pa.struct([("answer", pa.string()), ("model", pa.string()), ("rank", pa.float64())])
# The on-disk schema of data/rlaif.parquet (the fixture copies it; only COLUMNS are required).
SCHEMA = pa.schema([("prompt", pa.string()), ("answers", pa.list_(ANSWER)), ("turns", pa.int64()),
                    ("num_responses", pa.int64()), ("source", pa.list_(pa.string())),
                    ("good_natured", pa.bool_())])
REJECTED_RANK = "last"

NOT_TURNS = "prompt is not in Human/Assistant turn format"
NO_JUDGED_TURN = "prompt does not end with an empty Assistant turn"
BAD_TURNS = "prompt turns do not alternate Human/Assistant"
_MARKER = re.compile(r"(?:\A|\n\n)(Human|Assistant):")
_ROLES = {"Human": "user", "Assistant": "assistant"}


def split_prompt(prompt: str) -> list[dict] | str:
    """HH-style prompt -> [{"role", "content"}, ...] ending with a user turn, or the reason it can't be parsed.

    Exactly: leading whitespace is ignored; the text is split at "Human:"/"Assistant:" markers that start
    the text or follow a blank line ("\\n\\n"); nothing may precede the first marker. Contents are stripped
    of surrounding whitespace. The last turn must be an empty Assistant turn (removed); the rest must be
    non-empty and alternate user, assistant, ..., user.
    """
    pieces = _MARKER.split(prompt.lstrip())
    if len(pieces) < 3 or pieces[0]:
        return NOT_TURNS
    turns = [{"role": _ROLES[r], "content": c.strip()} for r, c in zip(pieces[1::2], pieces[2::2])]
    judged = turns.pop()
    if judged["role"] != "assistant" or judged["content"]:
        return NO_JUDGED_TURN
    if not turns or turns[-1]["role"] != "user" or any(
            t["role"] != ("user" if k % 2 == 0 else "assistant") or not t["content"] for k, t in enumerate(turns)):
        return BAD_TURNS
    return turns


def _check_rejected_rank(rejected_rank) -> None:
    if rejected_rank != "last" and (type(rejected_rank) is not int or rejected_rank < 2):  # noqa: E721 - no bools
        raise ValueError(f"rejected_rank must be 'last' or an int >= 2, got {rejected_rank!r}")


def _valid_rank(r) -> bool:
    return isinstance(r, (int, float)) and not isinstance(r, bool) and not math.isnan(r) and r >= 1


def pick_answers(answers, rejected_rank=REJECTED_RANK) -> tuple[dict, dict] | str:
    """(chosen answer, rejected answer) structs of one row, or the reason there is no pair."""
    if not isinstance(answers, list) or len(answers) < 2:
        return "fewer than 2 answers"
    ranks = [a.get("rank") if isinstance(a, dict) else None for a in answers]
    if not all(_valid_rank(r) for r in ranks):
        return "answer with a missing or invalid rank"
    target = max(ranks) if rejected_rank == "last" else rejected_rank
    best = [a for a, r in zip(answers, ranks) if r == 1]
    if len(best) != 1:
        return "tie at rank 1" if best else "no rank-1 answer"
    worst = [a for a, r in zip(answers, ranks) if r == target]
    if len(worst) != 1:
        return "tie at the rejected rank" if worst else "no answer at the rejected rank"
    return best[0], worst[0]


def load(path: str = HUB_ID, split: str = "train", *, rejected_rank: str | int = REJECTED_RANK
         ) -> tuple[pa.Table, Counter]:
    _check_rejected_rank(rejected_rank)
    ds = load_split(path, split, columns=COLUMNS)
    tag = dataset_tag(path)
    out, drops = PairTable(), Counter()
    for i, row in iter_rows(ds, COLUMNS):
        if not isinstance(row["prompt"], str):
            drops["prompt is not a string"] += 1
            continue
        turns = split_prompt(row["prompt"])
        if isinstance(turns, str):
            drops[turns] += 1
            continue
        got = pick_answers(row["answers"], rejected_rank)
        if isinstance(got, str):
            drops[got] += 1
            continue
        best, worst = got
        out.keep_or_count(make_pair(id=f"{tag}:{split}:{i}", source=SOURCE, prompt=turns,
                                    chosen=best.get("answer"), rejected=worst.get("answer")), drops)
    return out.table(rows_read=ds.num_rows), drops
