"""`nvidia/HelpSteer2`, `data_dir="preference"`: one human preference between two responses per row.

Layout (the Hub card: `load_dataset("nvidia/HelpSteer2", data_dir="preference")["train"]`, "despite the
name, this contains both train and val"): file `preference/preference.jsonl.gz`, one split `train`.
Columns, in file order (DATASETS.md): `split` ("train"/"val"), `prompt`, `response_1`, `response_2`
(str), `preference_strength` (int -3..3; NEGATIVE means response_1 is better, 0 = no preference),
`preference_statement`, `preference_elaboration` (str), `three_most_similar_preferences` (list of
{statement, elaboration, strength}), `all_preferences_unprocessed` (list of {strength, justification},
but sometimes a Python-repr string). Only the first five are required (COLUMNS); the others are never
read, so either form of `all_preferences_unprocessed` loads (`datasets` reads a JSON column of mixed
types as `Json`). Not used by the paper's recipe: an extension source.

Options: `subset` = which value of the `split` column to keep ("train" [default], "val" or "all");
`min_strength` = the smallest |preference_strength| that makes a pair (1..3, default 1).

Pair rule: prompt = the NeMo-flattened `prompt` split into turns by `helpsteer2.split_turns` (the same
"<extra_id_1>User"/"<extra_id_1>Assistant" markers as the ratings file); preference_strength < 0 ->
chosen `response_1`, rejected `response_2`; > 0 -> the other way round. Source value
"helpsteer2_preference". Id: "<tag>/preference:<split>:<row index>" (the data_dir in the tag keeps the
ids apart from the ratings loader's "<tag>:train:<row>").

One row is one candidate pair and **every row is counted**, including the rows of the subset not asked
for, so `table.num_rows + sum(drops.values())` is the number of rows of the file. Checks in this order:

* "unknown split value": `split` is neither "train" nor "val" (null, another string) — whatever `subset`.
* "row of another subset": a "train"/"val" row that `subset` does not keep (not a data problem: with the
  default, every validation row is counted here).
* "preference_strength not an integer -3..3": null, a string, a bool, a non-integral or out-of-range number.
* "no preference": strength 0. "weak preference": 0 < |strength| < `min_strength`.
* "prompt is not a string"; then `split_turns`'s "unknown role marker in prompt" and "prompt turns do not
  alternate user/assistant ending with user".
* then `schema.pair_problem`: a null or non-string response ("response is not a string"), an empty
  response, identical responses.
"""
from __future__ import annotations

from collections import Counter

import pyarrow as pa

from repro.data.hub import dataset_tag, load_split
from repro.data.schema import PairTable, iter_rows, make_pair
from repro.data.sources.helpsteer2 import split_turns

HUB_ID = "nvidia/HelpSteer2"
DATA_DIR = "preference"
SOURCE = "helpsteer2_preference"
COLUMNS = ("split", "prompt", "response_1", "response_2", "preference_strength")
SUBSETS = ("train", "val")
SUBSET = "train"
MIN_STRENGTH = 1


def strength_value(x) -> int | None:
    """`preference_strength` as an int in -3..3, or None if it is not one (an integral float counts)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    if isinstance(x, float) and not x.is_integer():
        return None
    return int(x) if -3 <= x <= 3 else None


def load(path: str = HUB_ID, split: str = "train", *, subset: str = SUBSET, min_strength: int = MIN_STRENGTH
         ) -> tuple[pa.Table, Counter]:
    if subset not in (*SUBSETS, "all"):
        raise ValueError(f"subset must be one of 'train', 'val', 'all', got {subset!r}")
    if type(min_strength) is not int or not 1 <= min_strength <= 3:  # noqa: E721 - no bools
        raise ValueError(f"min_strength must be an int in 1..3, got {min_strength!r}")
    ds = load_split(path, split, data_dir=DATA_DIR, columns=COLUMNS)
    tag = f"{dataset_tag(path)}/{DATA_DIR}"
    out, drops = PairTable(), Counter()
    for i, row in iter_rows(ds, COLUMNS):
        if row["split"] not in SUBSETS:
            drops["unknown split value"] += 1
            continue
        if subset != "all" and row["split"] != subset:
            drops["row of another subset"] += 1
            continue
        strength = strength_value(row["preference_strength"])
        if strength is None:
            drops["preference_strength not an integer -3..3"] += 1
            continue
        if abs(strength) < min_strength:
            drops["no preference" if strength == 0 else "weak preference"] += 1
            continue
        if not isinstance(row["prompt"], str):
            drops["prompt is not a string"] += 1
            continue
        turns = split_turns(row["prompt"])
        if isinstance(turns, str):
            drops[turns] += 1
            continue
        r1, r2 = row["response_1"], row["response_2"]
        chosen, rejected = (r1, r2) if strength < 0 else (r2, r1)
        out.keep_or_count(make_pair(id=f"{tag}:{split}:{i}", source=SOURCE, prompt=turns,
                                    chosen=chosen, rejected=rejected), drops)
    return out.table(rows_read=ds.num_rows), drops
