"""`nvidia/HelpSteer2` ratings (files `train.jsonl.gz`, `validation.jsonl.gz`): pairs from two rated responses.

Schema (DATASETS.md): `prompt`, `response` (str), `helpfulness`, `correctness`, `coherence`, `complexity`,
`verbosity` (int, 0-4). The two responses to one prompt share the identical `prompt` string.

Grouping: rows are grouped by the identical `prompt` string in one pass (a dict keyed by the string, so
O(rows); groups are taken in order of their first row, rows within a group in file order). A row whose
`prompt` is not a string cannot be grouped and is counted on its own ("prompt is not a string").

Pair rule, per group: exactly 2 rows make one candidate pair; chosen = the response with the higher
`helpfulness`, rejected = the other. The pair's id is "<dataset tag>:<split>:<row index of the group's
first row>".

Drop counting: **one count per prompt group** (= per candidate pair), so `len(pairs) + sum(drops)` is the
number of distinct prompt strings plus the rows whose prompt is not a string. Reasons:

* "prompt without exactly 2 responses": a group of 1 row, or of 3 or more rows (counted once per group).
* "helpfulness not an integer 0-4": either row's `helpfulness` is not an int in 0..4 (null, string, bool).
* "helpfulness tie": equal helpfulness.
* "unknown role marker in prompt" / "prompt turns do not alternate user/assistant ending with user":
  see `split_turns`; such a prompt is counted, never guessed.
* then `schema.pair_problem` on the built pair: a null or non-string response ("response is not a
  string"), an empty response, identical responses, an empty last user turn.

The other rating columns are required to exist but are not used.
"""
from __future__ import annotations

from collections import Counter

import pyarrow as pa

from repro.data.hub import dataset_tag, load_split
from repro.data.schema import PairTable, make_pair

HUB_ID = "nvidia/HelpSteer2"
SOURCE = "helpsteer2"
COLUMNS = ("prompt", "response", "helpfulness", "correctness", "coherence", "complexity", "verbosity")
TURN_MARKER = "<extra_id_1>"
ROLE_HEADERS = {"User": "user", "Assistant": "assistant"}
BAD_MARKER = "unknown role marker in prompt"
BAD_TURNS = "prompt turns do not alternate user/assistant ending with user"


def split_turns(prompt: str) -> list[dict] | str:
    """NeMo-flattened prompt -> [{"role", "content"}, ...], or the reason it cannot be split.

    Parsing, exactly: split the string on "<extra_id_1>". The first piece is the first user turn (it has
    no role header). Every later piece must start with a header line, "User" or "Assistant" (the text up
    to the first "\\n", whitespace around it ignored), and the rest of the piece is that turn's content.
    Every content is stripped of surrounding whitespace. The roles must then be user, assistant, user,
    ..., ending with a user turn, and no turn may be empty; otherwise the reason is returned.
    A prompt without markers is one user turn.
    """
    first, *rest = prompt.split(TURN_MARKER)
    turns = [{"role": "user", "content": first.strip()}]
    for piece in rest:
        header, newline, content = piece.partition("\n")
        role = ROLE_HEADERS.get(header.strip())
        if role is None or not newline:
            return BAD_MARKER
        turns.append({"role": role, "content": content.strip()})
    for k, t in enumerate(turns):
        if t["role"] != ("user" if k % 2 == 0 else "assistant") or not t["content"]:
            return BAD_TURNS
    if turns[-1]["role"] != "user":
        return BAD_TURNS
    return turns


def _helpfulness_ok(h) -> bool:
    return type(h) is int and 0 <= h <= 4  # noqa: E721 - bool is an int subclass


def load(path: str = HUB_ID, split: str = "train") -> tuple[pa.Table, Counter]:
    ds = load_split(path, split, data_dir=None, columns=COLUMNS)
    tag = dataset_tag(path)
    rows = ds.select_columns(["prompt", "response", "helpfulness"]).to_list()
    out, drops = PairTable(), Counter()
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        if isinstance(row["prompt"], str):
            groups.setdefault(row["prompt"], []).append(i)
        else:
            drops["prompt is not a string"] += 1
    for prompt, idx in groups.items():
        if len(idx) != 2:
            drops["prompt without exactly 2 responses"] += 1
            continue
        a, b = rows[idx[0]], rows[idx[1]]
        if not (_helpfulness_ok(a["helpfulness"]) and _helpfulness_ok(b["helpfulness"])):
            drops["helpfulness not an integer 0-4"] += 1
            continue
        if a["helpfulness"] == b["helpfulness"]:
            drops["helpfulness tie"] += 1
            continue
        turns = split_turns(prompt)
        if isinstance(turns, str):
            drops[turns] += 1
            continue
        chosen, rejected = (a, b) if a["helpfulness"] > b["helpfulness"] else (b, a)
        pair = make_pair(id=f"{tag}:{split}:{idx[0]}", source=SOURCE, prompt=turns,
                         chosen=chosen["response"], rejected=rejected["response"])
        out.keep_or_count(pair, drops)
    return out.table(rows_read=ds.num_rows), drops
