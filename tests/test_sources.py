"""Raw-source loaders (OffsetBias, HelpSteer2) on the fixture folders: golden counts, orientation, turns, errors.

Golden numbers come from the generator's documented layout (repro/fixtures/generate.py), not from the loader:
OffsetBias = OFFSETBIAS_GOOD good rows + 3 broken ones; HelpSteer2 train = 1 fixed 5-turn group +
40 single-turn + 10 two-user-turn good groups + 1 split-apart good group + the broken groups listed in
`helpsteer2_rows`; validation = 10 good groups + a tie.
"""
import gzip
import json
import shutil

import pytest

from repro.data.schema import DataError, pair_problem
from repro.data.sources import SOURCES, helpsteer2, offsetbias
from repro.fixtures import FIXTURE_ROOT, generate, resolve

# Every right answer of the closed fact world; a chosen answer must be one, a rejected one must not.
RIGHT = {answer.format(s=s, f=f) for facts, _, answer in generate.WORLD.values() for s, f in facts.items()}


def check_orientation(pairs):
    for p in pairs:
        assert p["chosen"] in RIGHT and p["rejected"] not in RIGHT, p
        assert pair_problem(p) is None and p["prompt"][-1]["role"] == "user"


def as_rows(loaded):
    """A loader's (pair table, drops) as (list of pair dicts, drops)."""
    table, drops = loaded
    return table.to_pylist(), drops


def test_registry_and_fixture_names():
    assert SOURCES["offsetbias"] is offsetbias.load and SOURCES["helpsteer2"] is helpsteer2.load
    assert resolve("fixture:offsetbias") == str(FIXTURE_ROOT / "offsetbias")
    assert resolve("fixture:helpsteer2") == str(FIXTURE_ROOT / "helpsteer2")
    assert (FIXTURE_ROOT / "offsetbias" / "train.jsonl").is_file()
    assert {f.name for f in (FIXTURE_ROOT / "helpsteer2").iterdir()} == {"train.jsonl.gz", "validation.jsonl.gz", "preference"}


def test_offsetbias_golden_counts_and_orientation():
    pairs, drops = as_rows(offsetbias.load("fixture:offsetbias"))
    assert len(pairs) == 120
    assert dict(drops) == {"label not 1 or 2": 1, "response is not a string": 1, "identical chosen and rejected": 1}
    check_orientation(pairs)
    assert [p["id"] for p in pairs] == [f"fixture:offsetbias:train:{i}" for i in range(120)]
    assert {p["source"] for p in pairs} == {"offsetbias"} and all(len(p["prompt"]) == 1 for p in pairs)
    raw = [json.loads(line) for line in (FIXTURE_ROOT / "offsetbias" / "train.jsonl").read_text().splitlines()]
    assert list(raw[0]) == ["instruction", "output_1", "output_2", "label"] and len(raw) == 123
    assert {r["label"] for r in raw[:120]} == {1, 2}  # both orientations are exercised


def test_helpsteer2_golden_counts_and_orientation():
    pairs, drops = as_rows(helpsteer2.load("fixture:helpsteer2"))
    assert len(pairs) == 52
    assert dict(drops) == {
        "helpfulness tie": 1,
        "prompt without exactly 2 responses": 2,  # one lone response, one group of three (once per group)
        "response is not a string": 2,  # a null response, a list response
        "helpfulness not an integer 0-4": 1,
        "prompt turns do not alternate user/assistant ending with user": 2,
        "unknown role marker in prompt": 1,
        "prompt is not a string": 1,
    }
    check_orientation(pairs)
    assert {p["source"] for p in pairs} == {"helpsteer2"}
    assert sum(len(p["prompt"]) == 3 for p in pairs) == 10 and sum(len(p["prompt"]) == 1 for p in pairs) == 41
    # the split-apart group (0-based rows 102 and 122 of 123) pairs up by prompt string, keyed by its first row
    assert pairs[-1]["id"] == "fixture:helpsteer2:train:102"
    val, vdrops = as_rows(helpsteer2.load("fixture:helpsteer2", "validation"))
    assert len(val) == 10 and dict(vdrops) == {"helpfulness tie": 1}
    check_orientation(val)
    assert val[0]["id"] == "fixture:helpsteer2:validation:0"


def test_helpsteer2_multi_turn_prompt_is_split_exactly():
    pairs, _ = as_rows(helpsteer2.load("fixture:helpsteer2"))
    first = pairs[0]
    assert first["id"] == "fixture:helpsteer2:train:0"
    assert first["prompt"] == [
        {"role": "user", "content": "What color is the sky?"},
        {"role": "assistant", "content": "The sky is blue."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris."},
        {"role": "user", "content": "What is the opposite of hot?"},
    ]
    assert first["chosen"] == "The opposite of hot is cold." and first["rejected"] == "The opposite of hot is late."


@pytest.mark.parametrize("prompt,expected", [
    ("Hi there ", [{"role": "user", "content": "Hi there"}]),
    ("u1<extra_id_1>Assistant\n a1 \n<extra_id_1>User\n u2", [
        {"role": "user", "content": "u1"}, {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"}]),
    ("u1<extra_id_1>User\nu2", helpsteer2.BAD_TURNS),
    ("u1<extra_id_1>Assistant\na1", helpsteer2.BAD_TURNS),
    ("u1<extra_id_1>Assistant\n<extra_id_1>User\nu2", helpsteer2.BAD_TURNS),  # empty assistant turn
    ("u1<extra_id_1>System\nu2", helpsteer2.BAD_MARKER),
    ("u1<extra_id_1>Assistant a1<extra_id_1>User\nu2", helpsteer2.BAD_MARKER),  # header without newline
])
def test_split_turns(prompt, expected):
    assert helpsteer2.split_turns(prompt) == expected


@pytest.mark.parametrize("name,loader,split", [
    ("offsetbias", offsetbias.load, "train"),
    ("helpsteer2", helpsteer2.load, "train"),
    ("helpsteer2", helpsteer2.load, "validation"),
])
def test_local_copy_reads_the_same_pairs(tmp_path, name, loader, split):
    folder = tmp_path / f"copy-{name}"
    shutil.copytree(FIXTURE_ROOT / name, folder)
    fixture_pairs, fixture_drops = as_rows(loader(f"fixture:{name}", split))
    local_pairs, local_drops = as_rows(loader(str(folder), split))
    assert local_drops == fixture_drops
    assert [p["id"] for p in local_pairs] == [p["id"].replace(f"fixture:{name}:", f"copy-{name}:")
                                                for p in fixture_pairs]
    strip = lambda ps: [{k: v for k, v in p.items() if k != "id"} for p in ps]  # noqa: E731
    assert strip(local_pairs) == strip(fixture_pairs)


def test_missing_column_names_the_file(tmp_path):
    ob = tmp_path / "ob"
    ob.mkdir()
    rows = generate.offsetbias_rows()
    (ob / "train.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "label"}) + "\n"
                                            for r in rows))
    with pytest.raises(DataError, match=r"train\.jsonl.*label"):
        offsetbias.load(str(ob))
    hs = tmp_path / "hs"
    shutil.copytree(FIXTURE_ROOT / "helpsteer2", hs)
    rows = generate.helpsteer2_rows()["validation"]
    with gzip.open(hs / "validation.jsonl.gz", "wt") as f:
        f.writelines(json.dumps({k: v for k, v in r.items() if k != "helpfulness"}) + "\n" for r in rows)
    with pytest.raises(DataError, match=r"validation\.jsonl\.gz.*helpfulness"):
        helpsteer2.load(str(hs), "validation")
    helpsteer2.load(str(hs), "train")  # the other split's files are still fine
