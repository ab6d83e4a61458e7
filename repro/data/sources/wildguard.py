"""`allenai/wildguardmix` (gated): refusal-vs-compliance preference pairs from WildGuardTrain.

Layout (verified against the Hub README's `configs:`): config `wildguardtrain` = file
`train/wildguard_train.parquet`, split `train` (86,759 rows); config `wildguardtest` = file
`test/wildguard_test.parquet`, split `test` (1,725 rows). `load(path, split="test", config="wildguardtest")`
reads the test config with the same rule.

Schema (DATASETS.md), one row = a prompt, or a prompt and one response:
`prompt` (str), `adversarial` (bool), `response` (str or None: 48,783 train rows are prompt-only),
`prompt_harm_label` ("harmful"/"unharmful"/None), `response_refusal_label` ("refusal"/"compliance"/None),
`response_harm_label` ("harmful"/"unharmful"/None), `subcategory` (str). `wildguardtest` orders its columns
`prompt, response, adversarial, prompt_harm_label, response_refusal_agreement, response_refusal_label,
response_harm_label, subcategory, prompt_harm_agreement, response_harm_agreement` (the three agreements
float64; order as `datasets` prints the real features, not pinned by DATASETS.md). Only the five columns
the rule reads are used; all of COLUMNS must exist (a file lacking one is a DataError naming it), and
`adversarial` must be a bool column and the other four string columns (else a DataError naming the files).

Pair rule (PAPER.md): rows that have a response are grouped by the identical `prompt` string in one pass
(a dict keyed by the string; groups in order of their first grouped row, rows within a group in file
order). Harmful prompt: chosen = a refusal, rejected = a compliance; unharmful prompt: chosen = a
compliance, rejected = a refusal. The prompt is one user turn. The pair carries `adversarial` = the
prompt's flag: vanilla pairs are kept here (recipe stage 1, `repro.data.stages.adversarial_only`, drops
them) and `source` = "wildguard".

Options (keywords of `load`):
* `config` = "wildguardtrain" (the recipe's source) or "wildguardtest".
* `pairing` = "first" [D]: one pair per prompt, the group's first refusal x its first compliance in file
  order; id "<dataset tag>:<split>:<row index of the group's first grouped row>". "all": every refusal x
  every compliance (refusal-major, each in file order), ids suffixed "#0", "#1", ...

Drop counting. A row leaves before grouping, counted **once per row**, for (checked in this order):
* "prompt is not a string": a null prompt (it cannot be grouped);
* "prompt-only row (no response)": `response` is None (these are WildGuardTrain's prompt-only rows; a
  prompt-only row never joins a group, even when a row with a response has the same prompt);
* "response_refusal_label not refusal/compliance": None or any other value (the row fits neither side;
  the rest of its group can still pair).
The other rows form the prompt groups. A group that gives no pair is counted **once per group**:
* "rows of one prompt disagree on prompt_harm_label" / "rows of one prompt disagree on adversarial":
  counted, never guessed (a None label next to a real one is a disagreement);
* "prompt_harm_label not harmful/unharmful": None (no annotator agreement) or any other value;
* "adversarial is null";
* "prompt without both a refusal and a compliance";
then every candidate pair is kept or counted once by `schema.pair_problem` ("empty prompt", "empty
response", "identical chosen and rejected", ...). Hence the documented identity:

    len(pairs) + sum(drops.values()) == rows counted before grouping + candidate pairs,

where a group gives 1 candidate under a group reason, and otherwise 1 ("first") or #refusals x
#compliances ("all") candidates. With "first" that is rows counted before grouping + number of groups.
Responses a group does not use under "first" (a second refusal, ...) are neither pairs nor drops.

Memory: rows are read a batch at a time (`schema.iter_rows`); the group dict holds, per distinct prompt,
its label sets and the responses it can use (under "first" only the first refusal and compliance).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa

from repro.data.hub import dataset_tag, load_split, split_files
from repro.data.schema import DataError, PairTable, iter_rows, make_pair

HUB_ID = "allenai/wildguardmix"
SOURCE = "wildguard"
CONFIGS = ("wildguardtrain", "wildguardtest")
PAIRINGS = ("first", "all")
COLUMNS = ("prompt", "adversarial", "response", "prompt_harm_label", "response_refusal_label",
           "response_harm_label", "subcategory")
USED = COLUMNS[:5]
AGREEMENTS = ("response_refusal_agreement", "prompt_harm_agreement", "response_harm_agreement")
# On-disk schemas of train/wildguard_train.parquet and test/wildguard_test.parquet (the fixtures copy them).
SCHEMA = pa.schema([(c, pa.bool_() if c == "adversarial" else pa.string()) for c in COLUMNS])
TEST_SCHEMA = pa.schema([(c, SCHEMA.field(c).type if c in COLUMNS else pa.float64()) for c in (
    "prompt", "response", "adversarial", "prompt_harm_label", "response_refusal_agreement",
    "response_refusal_label", "response_harm_label", "subcategory", "prompt_harm_agreement",
    "response_harm_agreement")])

NO_PROMPT = "prompt is not a string"
PROMPT_ONLY = "prompt-only row (no response)"
BAD_REFUSAL = "response_refusal_label not refusal/compliance"
HARM_DISAGREE = "rows of one prompt disagree on prompt_harm_label"
ADV_DISAGREE = "rows of one prompt disagree on adversarial"
BAD_HARM = "prompt_harm_label not harmful/unharmful"
NULL_ADV = "adversarial is null"
ONE_SIDED = "prompt without both a refusal and a compliance"


@dataclass(slots=True)
class _Group:
    first: int                                         # row index of the group's first grouped row
    harm: set = field(default_factory=set)             # prompt_harm_label values seen
    adversarial: set = field(default_factory=set)      # adversarial values seen
    refusal: list = field(default_factory=list)        # response texts, file order
    compliance: list = field(default_factory=list)


def _check_types(ds, path: str, split: str, config: str) -> None:
    """DataError if a used column has the wrong Arrow type (a whole file is unusable then, not one row)."""
    for c in USED:
        got = getattr(ds.features[c], "dtype", type(ds.features[c]).__name__)
        want = ("bool",) if c == "adversarial" else ("string", "large_string")
        if got not in want:
            files = split_files(path, split, name=config)
            raise DataError(f"{path} (config {config}) split {split!r}: column {c!r} has type {got}, expected "
                            f"{want[0]}" + (f" (files: {', '.join(files)})" if files else ""))


def _group_reason(g: _Group) -> str | None:
    if len(g.harm) > 1:
        return HARM_DISAGREE
    if len(g.adversarial) > 1:
        return ADV_DISAGREE
    if next(iter(g.harm)) not in ("harmful", "unharmful"):
        return BAD_HARM
    if next(iter(g.adversarial)) is None:
        return NULL_ADV
    if not g.refusal or not g.compliance:
        return ONE_SIDED
    return None


def load(path: str = HUB_ID, split: str = "train", *, config: str = "wildguardtrain",
         pairing: str = "first") -> tuple[pa.Table, Counter]:
    if pairing not in PAIRINGS:
        raise ValueError(f"wildguard pairing must be one of {PAIRINGS}, got {pairing!r}")
    ds = load_split(path, split, name=config, columns=COLUMNS)
    _check_types(ds, path, split, config)
    tag, keep_all = dataset_tag(path), pairing == "all"
    drops: Counter = Counter()
    groups: dict[str, _Group] = {}
    for i, row in iter_rows(ds, USED):
        prompt, refusal = row["prompt"], row["response_refusal_label"]
        if not isinstance(prompt, str):
            drops[NO_PROMPT] += 1
        elif row["response"] is None:
            drops[PROMPT_ONLY] += 1
        elif refusal not in ("refusal", "compliance"):
            drops[BAD_REFUSAL] += 1
        else:
            g = groups.get(prompt)
            if g is None:
                g = groups[prompt] = _Group(first=i)
            g.harm.add(row["prompt_harm_label"])
            g.adversarial.add(row["adversarial"])
            side = g.refusal if refusal == "refusal" else g.compliance
            if keep_all or not side:
                side.append(row["response"])
    out = PairTable()
    for prompt, g in groups.items():
        reason = _group_reason(g)
        if reason:
            drops[reason] += 1
            continue
        harmful = next(iter(g.harm)) == "harmful"
        for k, (refusal, compliance) in enumerate((r, c) for r in g.refusal for c in g.compliance):
            chosen, rejected = (refusal, compliance) if harmful else (compliance, refusal)
            pid = f"{tag}:{split}:{g.first}" + (f"#{k}" if keep_all else "")
            out.keep_or_count(make_pair(id=pid, source=SOURCE, prompt=[{"role": "user", "content": prompt}],
                                        chosen=chosen, rejected=rejected,
                                        adversarial=next(iter(g.adversarial))), drops)
    return out.table(rows_read=ds.num_rows), drops
