"""The three Magpie DPO sets (files `data/train-00000-of-00001.parquet`, `data/test-00000-of-00001.parquet`;
splits `train` 98,000 and `test` 2,000 rows): one instruction, five responses, their ArmoRM scores and a
ready-made chosen/rejected pair per row. One module serves all three; `SETS` maps the source name to the
Hub id:

    magpie_pro_llama3.1  Magpie-Align/Magpie-Llama-3.1-Pro-DPO-100K-v0.1   (source value of the released 80K set)
    magpie_pro           Magpie-Align/Magpie-Pro-DPO-100K-v0.1             (this package's name)
    magpie_air           Magpie-Align/Magpie-Air-DPO-100K-v0.1             (this package's name)

The registry binds one with `functools.partial(load, source=name)`; `path=None` then means that set's Hub id.

Schema (DATASETS.md, in file order): `uuid`, `instruction`, `gen_input_configs` (struct `{input_generator,
temperature, top_p}`; Air has no `input_generator`), `intent`, `knowledge`, `difficulty`, `input_quality`,
`quality_explanation`, `task_category`, `input_length` (int64), `responses` (list of 5 strings),
`gen_response_configs` (struct `{engine, max_tokens, output_generator, prompt, repetition_penalty,
stop_tokens, temperature, top_p}`), `rewards_armorm` (list of struct `{score: double}`, aligned with
`responses`), `chosen`, `rejected` (list of struct `{content, role}`: user + assistant). Only `COLUMNS` are
read. The repos' READMEs declare only the default config (`data/train-*`, `data/test-*`); `datasets` infers
the same splits from the file names, so a local copy needs no README.

Pair: `chosen`/`rejected` as given (chosen = best-ArmoRM response, rejected = worst; not re-derived from
`rewards_armorm`). Prompt = the turns of `chosen` before its last (they must equal `rejected`'s);
chosen/rejected = the last assistant contents. category = `task_category` mapped through
`category_aliases` (default {"Other": "Others"} [U]); scores = `[r["score"] for r in rewards_armorm]`
(five floats, in `responses` order); `score` is left None for the Magpie selection step.

One row is one candidate pair: `table.num_rows + sum(drops.values())` = rows in the split. Checks in this
order, each counted under its reason:

* the conversations (`skywork80k.conversation_pair`): "empty conversation" (null or []), "message with a
  missing or non-string role/content", "last turn is not from the assistant", "chosen and rejected
  prompts differ".
* "missing category": `task_category` null, empty or not a string.
* "responses and rewards_armorm lengths differ": also when `responses` is null.
* "missing ArmoRM score": `rewards_armorm` null or empty, an entry null, a score null or NaN.
* then `schema.pair_problem` on the built pair: a prompt not ending with a user turn, an empty prompt or
  response, identical chosen and rejected.

A column of the wrong Arrow type (e.g. `rewards_armorm` as a plain list of floats) makes the file unusable:
`DataError` naming the file and column.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping

import pyarrow as pa
import pyarrow.compute as pc

from repro.data.decontam import check_messages_type
from repro.data.hub import dataset_tag
from repro.data.schema import PairTable, iter_rows, make_pair
from repro.data.sources.magpie_ultra import (CATEGORY_ALIASES, bad_number, canonical_category, is_number,
                                             is_string, load_checked)
from repro.data.sources.skywork80k import conversation_pair

SETS = {
    "magpie_pro_llama3.1": "Magpie-Align/Magpie-Llama-3.1-Pro-DPO-100K-v0.1",
    "magpie_pro": "Magpie-Align/Magpie-Pro-DPO-100K-v0.1",
    "magpie_air": "Magpie-Align/Magpie-Air-DPO-100K-v0.1",
}
SOURCE = "magpie_pro_llama3.1"  # the default set
HUB_ID = SETS[SOURCE]
COLUMNS = ("task_category", "responses", "rewards_armorm", "chosen", "rejected")


def _is_list_of(t: pa.DataType, ok) -> bool:
    return pa.types.is_null(t) or ((pa.types.is_list(t) or pa.types.is_large_list(t)) and ok(t.value_type))


def _is_rewards(t: pa.DataType) -> bool:
    return _is_list_of(t, lambda v: pa.types.is_struct(v) and v.get_field_index("score") >= 0
                       and is_number(v.field("score").type))


def _is_messages(t: pa.DataType) -> bool:
    return pa.types.is_null(t) or check_messages_type(t) is None


TYPES = {
    "task_category": (is_string, "a string"),
    "responses": (lambda t: _is_list_of(t, is_string), "a list of strings"),
    "rewards_armorm": (_is_rewards, "a list of {score: float}"),
    "chosen": (_is_messages, "a list of {content, role} messages"),
    "rejected": (_is_messages, "a list of {content, role} messages"),
}


def load(path: str | None = None, split: str = "train", *, source: str = SOURCE,
         category_aliases: Mapping[str, str] = CATEGORY_ALIASES) -> tuple[pa.Table, Counter]:
    """Pairs of the DPO set `source` (a key of SETS) read from `path` (default: that set's Hub id)."""
    if source not in SETS:
        raise ValueError(f"unknown Magpie DPO source {source!r}; valid: {', '.join(SETS)}")
    path = SETS[source] if path is None else path
    ds = load_checked(path, split, COLUMNS, TYPES)
    tag = dataset_tag(path)
    out, drops = PairTable(), Counter()
    # The five response texts are only counted (against the rewards): their lengths come from the Arrow
    # offsets, so the texts are never turned into Python strings.
    lengths = pc.list_value_length(ds.select_columns(["responses"]).with_format("arrow")[:].column("responses"))
    n_responses = pc.fill_null(lengths, -1).to_numpy(zero_copy_only=False)
    for i, row in iter_rows(ds, [c for c in COLUMNS if c != "responses"]):
        got = conversation_pair(row["chosen"], row["rejected"])
        if isinstance(got, str):
            drops[got] += 1
            continue
        prompt, chosen, rejected = got
        category = canonical_category(row["task_category"], category_aliases)
        if category is None:
            drops["missing category"] += 1
            continue
        rewards = row["rewards_armorm"]
        if rewards is not None and n_responses[i] != len(rewards):
            drops["responses and rewards_armorm lengths differ"] += 1
            continue
        if not rewards or any(r is None or bad_number(r.get("score")) for r in rewards):
            drops["missing ArmoRM score"] += 1
            continue
        out.keep_or_count(make_pair(id=f"{tag}:{split}:{i}", source=source, prompt=prompt, chosen=chosen,
                                    rejected=rejected, category=category,
                                    scores=[float(r["score"]) for r in rewards]), drops)
    return out.table(rows_read=ds.num_rows), drops
