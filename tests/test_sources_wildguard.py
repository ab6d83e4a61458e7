"""WildGuardMix loader on its fixture: Hub layout, golden counts, orientation, ids, both pairings, errors.

Golden numbers come from the layout documented in repro/fixtures/gen_wildguard.py, not from the loader.
Train: 376 rows = 2 (prompt-only P + refusal of P) + 2 x (150 adversarial + 15 vanilla) good groups +
23 more prompt-only rows + 21 special rows (cases 1-11). Pairs ("first"): 150 + 15 + P + cases 1, 2 = 168,
153 of them adversarial. Test: 10 good groups (6 adversarial), 8 single responses, one None-label group.
"""
import shutil

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from repro.data.schema import PAIR_SCHEMA, DataError, pair_problem
from repro.data.sources import wildguard
from repro.fixtures import FIXTURE_ROOT, gen_wildguard as gen
from repro.fixtures.generate import BENIGN, COMPLIANCE, HARMFUL, REFUSAL, SAFETY_PROMPTS

FOLDER = FIXTURE_ROOT / "wildguardmix"
FILES = ("README.md", "train/wildguard_train.parquet", "test/wildguard_test.parquet")
# Column order as `datasets` prints the real features (DATASETS.md for train).
TRAIN_COLUMNS = ["prompt", "adversarial", "response", "prompt_harm_label", "response_refusal_label",
                 "response_harm_label", "subcategory"]
TEST_COLUMNS = ["prompt", "response", "adversarial", "prompt_harm_label", "response_refusal_agreement",
                "response_refusal_label", "response_harm_label", "subcategory", "prompt_harm_agreement",
                "response_harm_agreement"]
RIGHT = {REFUSAL.format(s=t) for t in HARMFUL} | {COMPLIANCE.format(s=t) for t in BENIGN}
WRONG = {COMPLIANCE.format(s=t) for t in HARMFUL} | {REFUSAL.format(s=t) for t in BENIGN}
VANILLA = {p.format(s=t) for p in SAFETY_PROMPTS for t in (*HARMFUL, *BENIGN)}

S = gen.WG_SPECIAL_START
TRAIN_PAIRS, TRAIN_ADVERSARIAL = gen.WG_ADV_GOOD + gen.WG_VANILLA_GOOD + 3, gen.WG_ADV_GOOD + 3
TRAIN_DROPS = {
    wildguard.PROMPT_ONLY: gen.WG_PROMPT_ONLY,  # 24 rows
    wildguard.BAD_REFUSAL: 1,                   # case 2 (per row: its group still pairs)
    wildguard.NO_PROMPT: 1,                     # case 8
    wildguard.ONE_SIDED: 2,                     # cases 3 and 4
    wildguard.BAD_HARM: 1,                      # case 5
    wildguard.HARM_DISAGREE: 1,                 # case 6
    wildguard.ADV_DISAGREE: 1,                  # case 7
    "empty response": 1,                        # case 9
    "identical chosen and rejected": 1,         # case 10
}
TRAIN_ROWS_BEFORE_GROUPING = gen.WG_PROMPT_ONLY + 2
TRAIN_GROUPS = TRAIN_PAIRS + 7  # cases 3-7, 9, 10 are groups without a pair
TEST_PAIRS, TEST_ADVERSARIAL = gen.WG_TEST_GOOD, 6
TEST_DROPS = {wildguard.ONE_SIDED: gen.WG_TEST_SINGLE, wildguard.BAD_HARM: 1}


@pytest.fixture(scope="module")
def train():
    return wildguard.load("fixture:wildguardmix")


@pytest.fixture(scope="module")
def raw():
    return pq.read_table(FOLDER / "train" / "wildguard_train.parquet").to_pylist()


def test_fixture_is_laid_out_like_the_hub():
    assert sorted(str(p.relative_to(FOLDER)) for p in FOLDER.rglob("*") if p.is_file()) == sorted(FILES)
    front = yaml.safe_load((FOLDER / "README.md").read_text().split("---")[1])
    assert front["configs"] == [
        {"config_name": "wildguardtrain", "data_files": [{"split": "train", "path": "train/wildguard_train.parquet"}]},
        {"config_name": "wildguardtest", "data_files": [{"split": "test", "path": "test/wildguard_test.parquet"}]},
    ]
    train_schema = pq.read_schema(FOLDER / FILES[1])
    test_schema = pq.read_schema(FOLDER / FILES[2])
    assert train_schema.names == TRAIN_COLUMNS and test_schema.names == TEST_COLUMNS
    assert train_schema.field("adversarial").type == pa.bool_() and test_schema.field("adversarial").type == pa.bool_()
    assert all(train_schema.field(c).type == pa.string() for c in TRAIN_COLUMNS if c != "adversarial")
    assert all(test_schema.field(c).type == pa.float64() for c in TEST_COLUMNS if c.endswith("_agreement"))
    assert pq.read_metadata(FOLDER / FILES[1]).num_rows == 376 and pq.read_metadata(FOLDER / FILES[2]).num_rows == 30
    assert list(datasets.get_dataset_split_names(str(FOLDER), "wildguardtrain")) == ["train"]
    assert list(datasets.get_dataset_split_names(str(FOLDER), "wildguardtest")) == ["test"]


def test_fresh_write_is_byte_identical(tmp_path):
    written = gen.write(tmp_path)
    assert [p.relative_to(tmp_path / "wildguardmix").as_posix() for p in written] == list(FILES)
    for f in FILES:
        assert (tmp_path / "wildguardmix" / f).read_bytes() == (FOLDER / f).read_bytes(), f


def test_train_golden_counts(train):
    table, drops = train
    assert table.schema == PAIR_SCHEMA and table.num_rows == TRAIN_PAIRS == 168
    assert dict(drops) == TRAIN_DROPS
    assert table.column("adversarial").to_pylist().count(True) == TRAIN_ADVERSARIAL == 153
    assert table.column("adversarial").null_count == 0
    # the documented identity ("first"): rows counted before grouping + prompt groups
    assert table.num_rows + sum(drops.values()) == TRAIN_ROWS_BEFORE_GROUPING + TRAIN_GROUPS
    assert set(table.column("source").to_pylist()) == {"wildguard"}
    # the loader keeps the vanilla pairs (stage 1 of the recipe drops them later)
    assert table.column("adversarial").to_pylist().count(False) == gen.WG_VANILLA_GOOD


def test_orientation_and_prompts(train, raw):
    pairs = train[0].to_pylist()
    harmful_prompt = {r["prompt"]: r["prompt_harm_label"] == "harmful" for r in raw if r["prompt"]}
    for p in pairs:
        prompt = p["prompt"][0]["content"]
        assert len(p["prompt"]) == 1 and p["prompt"][0]["role"] == "user" and pair_problem(p) is None
        assert p["chosen"] in RIGHT and p["rejected"] in WRONG, p
        assert p["chosen"].startswith("I cannot") == harmful_prompt[prompt]
        topic = next(t for t in (*HARMFUL, *BENIGN) if t in prompt)
        assert topic in p["chosen"] and topic in p["rejected"]
        # adversarial prompts are role-play framings of a vanilla sentence, vanilla prompts are the sentence
        assert (prompt not in VANILLA) == p["adversarial"]
        if p["adversarial"]:
            assert any(prompt.startswith(f.split("{p}")[0]) for f in gen.ADVERSARIAL_FRAMES)
    assert {p["chosen"].startswith("I cannot") for p in pairs if p["adversarial"]} == {True, False}
    assert {p["chosen"].startswith("I cannot") for p in pairs if not p["adversarial"]} == {True, False}


def test_ids_name_the_first_grouped_row(train, raw):
    ids = train[0].column("id").to_pylist()
    assert ids[0] == "fixture:wildguardmix:train:1"  # row 0 is a prompt-only row with the same prompt
    assert ids[-2:] == [f"fixture:wildguardmix:train:{S}", f"fixture:wildguardmix:train:{S + 4}"]  # cases 1, 2
    rows = [int(i.rsplit(":", 1)[1]) for i in ids]
    assert rows == sorted(rows)
    grouped = [r["prompt"] if r["prompt"] is not None and r["response"] is not None
               and r["response_refusal_label"] in ("refusal", "compliance") else None for r in raw]
    for row, p in zip(rows, train[0].to_pylist()):
        assert grouped[row] == p["prompt"][0]["content"] and p["prompt"][0]["content"] not in grouped[:row]


def test_pairing_all():
    table, drops = wildguard.load("fixture:wildguardmix", pairing="all")
    assert table.num_rows == TRAIN_PAIRS + 1 and dict(drops) == TRAIN_DROPS
    ids = table.column("id").to_pylist()
    assert sum(i.endswith("#1") for i in ids) == 1 and all(i.endswith(("#0", "#1")) for i in ids)
    three = table.filter(pa.compute.starts_with(table.column("id"), f"fixture:wildguardmix:train:{S}#")).to_pylist()
    assert [p["id"].rsplit("#", 1)[1] for p in three] == ["0", "1"]
    assert three[0]["chosen"] + gen.SECOND_REFUSAL == three[1]["chosen"]
    assert three[0]["rejected"] == three[1]["rejected"] and three[0]["chosen"] in RIGHT
    first, _ = wildguard.load("fixture:wildguardmix")
    first_pairs = {p["id"]: p for p in first.to_pylist()}
    for p in table.to_pylist():
        if p["id"].endswith("#0"):
            assert {**p, "id": p["id"][:-2]} == first_pairs[p["id"][:-2]]


def test_test_config():
    table, drops = wildguard.load("fixture:wildguardmix", split="test", config="wildguardtest")
    assert table.num_rows == TEST_PAIRS and dict(drops) == TEST_DROPS
    assert table.column("adversarial").to_pylist().count(True) == TEST_ADVERSARIAL
    assert all(i.startswith("fixture:wildguardmix:test:") for i in table.column("id").to_pylist())
    for p in table.to_pylist():
        assert p["chosen"] in RIGHT and p["rejected"] in WRONG
    with pytest.raises(DataError, match="no split 'test'"):
        wildguard.load("fixture:wildguardmix", split="test")  # the test split belongs to the other config


@pytest.mark.parametrize("options", [{}, {"pairing": "all"}, {"split": "test", "config": "wildguardtest"}])
def test_local_copy_reads_the_same_pairs(tmp_path, options):
    folder = tmp_path / "copy-wg"
    shutil.copytree(FOLDER, folder)
    fixture, fixture_drops = wildguard.load("fixture:wildguardmix", **options)
    local, local_drops = wildguard.load(str(folder), **options)
    assert local_drops == fixture_drops
    assert local.column("id").to_pylist() == [i.replace("fixture:wildguardmix:", "copy-wg:")
                                               for i in fixture.column("id").to_pylist()]
    assert local.drop_columns(["id"]).equals(fixture.drop_columns(["id"]))


def _copy_with(tmp_path, transform):
    folder = tmp_path / "wg"
    shutil.copytree(FOLDER, folder)
    f = folder / "train" / "wildguard_train.parquet"
    pq.write_table(transform(pq.read_table(f)), f)
    return folder


def test_missing_column_names_the_file(tmp_path):
    folder = _copy_with(tmp_path, lambda t: t.drop_columns(["response_refusal_label"]))
    with pytest.raises(DataError, match=r"wildguard_train\.parquet.*response_refusal_label"):
        wildguard.load(str(folder))
    wildguard.load(str(folder), split="test", config="wildguardtest")  # the other config's file is fine


def test_wrong_column_type_names_the_file(tmp_path):
    def as_strings(t):
        i = t.schema.get_field_index("adversarial")
        return t.set_column(i, "adversarial", pa.compute.cast(t.column(i), pa.string()))
    folder = _copy_with(tmp_path, as_strings)
    with pytest.raises(DataError, match=r"'adversarial' has type string, expected bool.*wildguard_train\.parquet"):
        wildguard.load(str(folder))


def test_unknown_options_are_errors():
    with pytest.raises(ValueError, match="pairing must be one of"):
        wildguard.load("fixture:wildguardmix", pairing="best")
    with pytest.raises(DataError, match="wildguardtrainn"):
        wildguard.load("fixture:wildguardmix", config="wildguardtrainn")
