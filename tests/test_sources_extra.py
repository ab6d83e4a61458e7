"""Extension-source loaders (preference_700K, Nectar, HelpSteer2 preference) on their fixture folders.

Golden numbers come from the generator's documented layout (repro/fixtures/gen_extra.py: the constants
and the broken rows listed in each row builder's docstring), not from the loaders.
"""
import gzip
import json
import math
import shutil

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from repro.data import decontam
from repro.data.schema import PAIR_SCHEMA, DataError, pair_problem
from repro.data.sources import helpsteer2, helpsteer2_preference, nectar, preference700k
from repro.fixtures import FIXTURE_ROOT, gen_extra, generate

RIGHT = {answer.format(s=s, f=f) for facts, _, answer in generate.WORLD.values() for s, f in facts.items()}


def check_pairs(table, source):
    assert table.schema == PAIR_SCHEMA
    pairs = table.to_pylist()
    assert {p["source"] for p in pairs} == {source} and len({p["id"] for p in pairs}) == len(pairs)
    for p in pairs:
        assert p["chosen"] in RIGHT and p["rejected"] not in RIGHT, p
        assert pair_problem(p) is None and p["prompt"][-1]["role"] == "user"
        assert p["category"] is p["score"] is p["scores"] is p["adversarial"] is None
    return pairs


def n_turns(pairs, n):
    return sum(len(p["prompt"]) == n for p in pairs)


# ----------------------------------------------------------------------------------------------- 700K

P700_DROPS = {"null conversation": 1, "empty conversation": 1, "last turn is not from the assistant": 1,
              "chosen and rejected prompts differ": 1, "message with a missing or non-string role/content": 1,
              "identical chosen and rejected": 1, "empty response": 1, "empty prompt": 1,
              "prompt does not end with a user turn": 1}


def test_preference700k_golden_counts_orientation_and_ids():
    table, drops = preference700k.load("fixture:preference700k")
    assert table.num_rows == gen_extra.P700_GOOD == 90 and dict(drops) == P700_DROPS
    pairs = check_pairs(table, "preference700k")
    assert n_turns(pairs, 3) == gen_extra.P700_GOOD_MULTI and n_turns(pairs, 1) == 90 - gen_extra.P700_GOOD_MULTI
    # file 0 holds 45 good rows then 4 broken ones; file 1 the other 45 good rows then 5 broken ones
    file0 = gen_extra.P700_FILE0_GOOD + gen_extra.P700_FILE0_BROKEN
    rows = [*range(gen_extra.P700_FILE0_GOOD), *range(file0, file0 + 90 - gen_extra.P700_FILE0_GOOD)]
    assert [p["id"] for p in pairs] == [f"fixture:preference700k:train:{i}" for i in rows]


def test_preference700k_files_copy_the_hub_layout():
    folder = FIXTURE_ROOT / "preference700k"
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert files == ["data/train-00000-of-00002.parquet", "data/train-00001-of-00002.parquet"]
    schemas = [pq.read_schema(folder / f) for f in files]
    assert all(s.remove_metadata() == preference700k.SCHEMA for s in schemas)
    assert schemas[0].names == ["rejected", "rejected_score", "chosen_score", "chosen"]
    scores = pq.read_table(folder / files[0], columns=["chosen_score"]).column(0).to_pylist()
    assert None in scores and any(isinstance(s, float) and math.isnan(s) for s in scores)  # not read: still pairs


def _rewrite_700k(folder, fn):
    for f in sorted((folder / "data").glob("*.parquet")):
        pq.write_table(fn(pq.read_table(f)), f)


def test_preference700k_needs_only_chosen_and_rejected(tmp_path):
    ref, ref_drops = preference700k.load("fixture:preference700k")
    folder = tmp_path / "p700-columns"
    shutil.copytree(FIXTURE_ROOT / "preference700k", folder)
    _rewrite_700k(folder, lambda t: t.select(["chosen", "rejected"]).append_column(
        "source", pa.array(["x"] * t.num_rows)))
    table, drops = preference700k.load(str(folder))
    assert drops == ref_drops and table.drop(["id"]).equals(ref.drop(["id"]))
    _rewrite_700k(folder, lambda t: t.drop(["chosen"]))
    with pytest.raises(DataError, match=r"train-00000-of-00002\.parquet.*'chosen'"):
        preference700k.load(str(folder))


def test_preference700k_rejects_a_non_message_column(tmp_path):
    folder = tmp_path / "p700-type"
    shutil.copytree(FIXTURE_ROOT / "preference700k", folder)
    _rewrite_700k(folder, lambda t: t.set_column(3, "chosen", pa.array(["text"] * t.num_rows)))
    with pytest.raises(DataError, match=r"column 'chosen'.*list of \{role, content\}"):
        preference700k.load(str(folder))


# ---------------------------------------------------------------------------------------------- Nectar

NECTAR_BROKEN = {"tie at rank 1": 1, "fewer than 2 answers": 1, "prompt is not in Human/Assistant turn format": 1,
                 "prompt does not end with an empty Assistant turn": 1,
                 "prompt turns do not alternate Human/Assistant": 1, "answer with a missing or invalid rank": 1,
                 "no rank-1 answer": 1, "response is not a string": 1, "prompt is not a string": 1}


def test_nectar_golden_counts_orientation_and_ids():
    table, drops = nectar.load("fixture:nectar")
    good = gen_extra.NECTAR_GOOD
    # rows A (tie at the last rank) and C (same text at rank 1 and last) drop; row B (tie at rank 2) pairs
    assert table.num_rows == good + 1 == 51
    assert dict(drops) == {**NECTAR_BROKEN, "tie at the rejected rank": 1, "identical chosen and rejected": 1}
    pairs = check_pairs(table, "nectar")
    multi = gen_extra.NECTAR_GOOD_MULTI
    assert n_turns(pairs, 3) == multi and n_turns(pairs, 1) == good + 1 - multi
    assert [p["id"] for p in pairs] == [f"fixture:nectar:train:{i}" for i in [*range(good), good + 1]]
    raw = pq.read_table(FIXTURE_ROOT / "nectar" / "data" / "rlaif.parquet").to_pylist()
    for p in pairs:  # chosen = the rank-1 answer, rejected = the largest rank
        row = raw[int(p["id"].rsplit(":", 1)[1])]
        by_rank = {a["rank"]: a["answer"] for a in row["answers"]}
        assert p["chosen"] == by_rank[1.0] and p["rejected"] == by_rank[max(by_rank)]
    # good row 0 ends with "Assistant: " (trailing space); good row 1 has a two-line Human message
    assert raw[0]["prompt"].endswith("\n\nAssistant: ") and pairs[0]["prompt"][0]["content"] in raw[0]["prompt"]
    assert pairs[1]["prompt"][0]["content"].endswith("?\nAnswer in one sentence.")


def test_nectar_rejected_rank_option():
    table, drops = nectar.load("fixture:nectar", rejected_rank=2)
    assert table.num_rows == gen_extra.NECTAR_GOOD + 2  # rows A and C pair, row B (tie at rank 2) drops
    assert dict(drops) == {**NECTAR_BROKEN, "tie at the rejected rank": 1}
    pairs = check_pairs(table, "nectar")
    raw = pq.read_table(FIXTURE_ROOT / "nectar" / "data" / "rlaif.parquet").to_pylist()
    for p in pairs:
        row = raw[int(p["id"].rsplit(":", 1)[1])]
        assert p["rejected"] == next(a["answer"] for a in row["answers"] if a["rank"] == 2.0)
    for bad in (1, 0, True, "first", 2.0):
        with pytest.raises(ValueError, match="rejected_rank"):
            nectar.load("fixture:nectar", rejected_rank=bad)


def test_nectar_file_copies_the_hub_layout():
    folder = FIXTURE_ROOT / "nectar"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "data/rlaif.parquet"]
    schema = pq.read_schema(folder / "data" / "rlaif.parquet").remove_metadata()
    assert schema == nectar.SCHEMA
    assert schema.names == ["prompt", "answers", "turns", "num_responses", "source", "good_natured"]
    assert datasets.load_dataset(str(folder), split="train").num_rows == len(gen_extra.nectar_rows()) == 62


U, A = "user", "assistant"


@pytest.mark.parametrize("prompt,expected", [
    ("\n\nHuman: Hi there\n\nAssistant:", [{"role": U, "content": "Hi there"}]),
    ("Human: Hi\n\nAssistant: ", [{"role": U, "content": "Hi"}]),
    ("\n\nHuman: q1\nmore\n\nAssistant: a1\n\nHuman: q2\n\nAssistant:",
     [{"role": U, "content": "q1\nmore"}, {"role": A, "content": "a1"}, {"role": U, "content": "q2"}]),
    ("Hi there", nectar.NOT_TURNS),
    ("Intro\n\nHuman: Hi\n\nAssistant:", nectar.NOT_TURNS),
    ("\n\nHuman: Hi", nectar.NO_JUDGED_TURN),
    ("\n\nHuman: Hi\n\nAssistant: Hello", nectar.NO_JUDGED_TURN),
    ("\n\nHuman: Hi\n\nHuman: Hi\n\nAssistant:", nectar.BAD_TURNS),
    ("\n\nAssistant: Hi\n\nAssistant:", nectar.BAD_TURNS),
    ("\n\nAssistant:", nectar.BAD_TURNS),
    ("\n\nHuman: \n\nAssistant:", nectar.BAD_TURNS),
])
def test_nectar_split_prompt(prompt, expected):
    assert nectar.split_prompt(prompt) == expected


# -------------------------------------------------------------------------------- HelpSteer2 preference

HS2P_TRAIN_BROKEN = {"no preference": 1, "preference_strength not an integer -3..3": 3,
                     "response is not a string": 1, "identical chosen and rejected": 1, "empty response": 1,
                     helpsteer2.BAD_MARKER: 1, helpsteer2.BAD_TURNS: 1, "prompt is not a string": 1}
HS2P_ROWS = 51  # 30 good + 10 broken train rows, 8 good + 1 no-preference val rows, 2 unknown split values


@pytest.mark.parametrize("options,n_pairs,expected_drops", [
    ({}, 30, {**HS2P_TRAIN_BROKEN, "row of another subset": 9, "unknown split value": 2}),
    ({"subset": "val"}, 8, {"no preference": 1, "row of another subset": 40, "unknown split value": 2}),
    ({"subset": "all"}, 38, {**HS2P_TRAIN_BROKEN, "no preference": 2, "unknown split value": 2}),
    ({"min_strength": 2}, 20, {**HS2P_TRAIN_BROKEN, "weak preference": 10, "row of another subset": 9,
                               "unknown split value": 2}),
    ({"min_strength": 3}, 10, {**HS2P_TRAIN_BROKEN, "weak preference": 20, "row of another subset": 9,
                               "unknown split value": 2}),
])
def test_helpsteer2_preference_golden_counts(options, n_pairs, expected_drops):
    table, drops = helpsteer2_preference.load("fixture:helpsteer2", **options)
    assert table.num_rows == n_pairs and dict(drops) == expected_drops
    assert n_pairs + sum(drops.values()) == HS2P_ROWS == len(gen_extra.helpsteer2_preference_rows())
    check_pairs(table, "helpsteer2_preference")


def test_helpsteer2_preference_orientation_turns_and_ids():
    table, _ = helpsteer2_preference.load("fixture:helpsteer2")
    pairs = table.to_pylist()
    assert [p["id"] for p in pairs] == [f"fixture:helpsteer2/preference:train:{i}" for i in range(30)]
    raw = [json.loads(line) for line in gzip.open(FIXTURE_ROOT / "helpsteer2" / "preference" / "preference.jsonl.gz",
                                                  "rt")]
    for p, row in zip(pairs, raw):  # negative strength: response_1 is the better one
        s = row["preference_strength"]
        assert (p["chosen"], p["rejected"]) == ((row["response_1"], row["response_2"]) if s < 0
                                                else (row["response_2"], row["response_1"]))
    assert {r["preference_strength"] for r in raw[:30]} == {-3, -2, -1, 1, 2, 3}
    # both forms of all_preferences_unprocessed are in the file, on rows that make pairs
    forms = [type(r["all_preferences_unprocessed"]) for r in raw]
    assert forms[3] is str and forms[0] is list
    assert pairs[0]["prompt"] == [
        {"role": "user", "content": "What color is the sky?"},
        {"role": "assistant", "content": "The sky is blue."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."},
        {"role": "user", "content": "What is the opposite of hot?"},
    ]
    assert pairs[0]["chosen"] == "The opposite of hot is cold."
    assert n_turns(pairs, 3) == gen_extra.HS2P_TRAIN_MULTI and n_turns(pairs, 1) == 30 - 1 - gen_extra.HS2P_TRAIN_MULTI


def test_helpsteer2_folder_keeps_its_ratings_splits():
    folder = str(FIXTURE_ROOT / "helpsteer2")
    ratings = generate.helpsteer2_rows()
    train = datasets.load_dataset(folder, split="train")
    assert train.num_rows == len(ratings["train"]) and train.column_names == list(ratings["train"][0])
    assert datasets.load_dataset(folder, split="validation").num_rows == len(ratings["validation"])
    pref = datasets.load_dataset(folder, data_dir="preference")
    assert list(pref) == ["train"] and pref["train"].num_rows == HS2P_ROWS
    assert pref["train"].column_names[:5] == list(helpsteer2_preference.COLUMNS)


def test_helpsteer2_preference_options_are_checked():
    for bad in ({"subset": "validation"}, {"min_strength": 0}, {"min_strength": 4}, {"min_strength": True}):
        with pytest.raises(ValueError):
            helpsteer2_preference.load("fixture:helpsteer2", **bad)


@pytest.mark.parametrize("value,expected", [
    (-3, -3), (3, 3), (0, 0), (2.0, 2), (4, None), (-4, None), (1.5, None), (True, None), (None, None), ("2", None)])
def test_strength_value(value, expected):
    assert helpsteer2_preference.strength_value(value) == expected


# ------------------------------------------------------------------------------------------- all three

LOADERS = [("preference700k", "preference700k", preference700k.load),
           ("nectar", "nectar", nectar.load),
           ("helpsteer2", "helpsteer2/preference", helpsteer2_preference.load)]


@pytest.mark.parametrize("name,tag,loader", LOADERS)
def test_local_copy_reads_the_same_pairs(tmp_path, name, tag, loader):
    folder = tmp_path / f"copy-{name}"
    shutil.copytree(FIXTURE_ROOT / name, folder)
    ref, ref_drops = loader(f"fixture:{name}")
    local, drops = loader(str(folder))
    assert drops == ref_drops
    assert local["id"].to_pylist() == [i.replace(f"fixture:{tag}:", f"copy-{tag}:") for i in ref["id"].to_pylist()]
    assert local.drop(["id"]).equals(ref.drop(["id"]))


def test_missing_column_names_the_file(tmp_path):
    folder = tmp_path / "nectar-no-answers"
    shutil.copytree(FIXTURE_ROOT / "nectar", folder)
    f = folder / "data" / "rlaif.parquet"
    pq.write_table(pq.read_table(f).drop(["answers"]), f)
    with pytest.raises(DataError, match=r"rlaif\.parquet.*'answers'"):
        nectar.load(str(folder))
    hs = tmp_path / "hs-no-strength"
    shutil.copytree(FIXTURE_ROOT / "helpsteer2", hs)
    rows = gen_extra.helpsteer2_preference_rows()
    with gzip.open(hs / "preference" / "preference.jsonl.gz", "wt") as out:
        out.writelines(json.dumps({k: v for k, v in r.items() if k != "preference_strength"}) + "\n" for r in rows)
    with pytest.raises(DataError, match=r"preference\.jsonl\.gz.*'preference_strength'"):
        helpsteer2_preference.load(str(hs))


def test_decontamination_finds_exactly_the_planted_prompts():
    index = decontam.build_index([r["prompt"] for r in generate.rewardbench_rows()])
    for name, loader, planted in (("preference700k", preference700k.load, gen_extra.P700_CONTAMINATED),
                                  ("nectar", nectar.load, gen_extra.NECTAR_CONTAMINATED)):
        table, _ = loader(f"fixture:{name}")
        last = decontam.prompts_from_messages(table["prompt"], "last")
        for turns in ("all", "last"):
            mask = index.contaminated(decontam.prompts_from_messages(table["prompt"], turns))
            assert int(mask.sum()) == planted, (name, turns)
            flagged = [t for t, m in zip(last.to_pylist(), mask) if m]
            assert all(t.startswith(gen_extra.LEADS) for t in flagged)
            assert sum(t.startswith(gen_extra.LEADS) for t in last.to_pylist()) == planted


def test_fixtures_are_regenerated_identically(tmp_path):
    written = gen_extra.write(tmp_path)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written) == [
        "helpsteer2/preference/preference.jsonl.gz", "nectar/data/rlaif.parquet",
        "preference700k/data/train-00000-of-00002.parquet",
        "preference700k/data/train-00001-of-00002.parquet"]
    for path in written:
        committed = FIXTURE_ROOT / path.relative_to(tmp_path)
        if path.suffix == ".parquet" and (pq.ParquetFile(path).metadata.created_by
                                          != pq.ParquetFile(committed).metadata.created_by):
            # another pyarrow writes other footer bytes: compare the data and the schema instead
            assert pq.read_table(path).equals(pq.read_table(committed), check_metadata=True), committed
        else:
            assert path.read_bytes() == committed.read_bytes(), committed
