"""Magpie loaders (Ultra and the three DPO sets) on their fixture folders: golden counts, orientation,
scores, categories, contamination rows, layout, errors.

Golden numbers come from the generator's documented layout (repro/fixtures/gen_magpie.py constants:
ULTRA_DROPS, ULTRA_BROKEN, ULTRA_ZERO, DPO_BROKEN, ...), and expected values are read from the raw parquet
files with pyarrow, never from the loader's output.
"""
import functools
import math
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from repro.data.decontam import build_index
from repro.data.schema import PAIR_SCHEMA, DataError, pair_problem
from repro.data.sources import magpie_dpo, magpie_ultra
from repro.fixtures import FIXTURE_ROOT, gen_magpie, generate

RIGHT = {answer.format(s=s, f=f) for facts, _, answer in generate.WORLD.values() for s, f in facts.items()}
DPO = {"magpie-pro-llama3.1-dpo": "magpie_pro_llama3.1", "magpie-pro-dpo": "magpie_pro",
       "magpie-air-dpo": "magpie_air"}
# DATASETS.md, in order
ULTRA_COLUMNS = ["model_name_response_base", "instruction", "response", "response_base", "intent", "knowledge",
                 "difficulty", "model_name_difficulty", "explanation", "quality", "model_name_quality",
                 "primary_tag", "other_tags", "model_name_classification", "embedding", "model_name_embeddings",
                 "score", "score_base", "distilabel_metadata", "nn_indices", "nn_scores", "messages", "guard",
                 "model_name_guard", "safe", "hazard_category", "score_difference"]
DPO_COLUMNS = ["uuid", "instruction", "gen_input_configs", "intent", "knowledge", "difficulty", "input_quality",
               "quality_explanation", "task_category", "input_length", "responses", "gen_response_configs",
               "rewards_armorm", "chosen", "rejected"]


def raw_ultra() -> list[dict]:
    files = [FIXTURE_ROOT / "magpie-ultra" / f for f in gen_magpie.ULTRA_FILES]
    return pa.concat_tables(pq.read_table(f) for f in files).to_pylist()


def raw_dpo(folder: str, split: str) -> list[dict]:
    return pq.read_table(FIXTURE_ROOT / folder / gen_magpie.DPO_FILES[split]).to_pylist()


def check_pairs(table: pa.Table):
    assert table.schema == PAIR_SCHEMA
    pairs = table.to_pylist()
    for p in pairs:
        assert p["chosen"] in RIGHT and p["rejected"] not in RIGHT, p
        assert pair_problem(p) is None and p["prompt"][-1]["role"] == "user" and p["score"] is None
    return pairs


@functools.cache
def ultra():
    return magpie_ultra.load("fixture:magpie-ultra")


@functools.cache
def dpo(folder: str, split: str):
    return magpie_dpo.load(f"fixture:{folder}", split, source=DPO[folder])


def test_constants_and_sets():
    assert (magpie_ultra.HUB_ID, magpie_ultra.SOURCE) == ("argilla/magpie-ultra-v0.1", "magpie_ultra")
    assert magpie_dpo.SETS == {"magpie_pro_llama3.1": "Magpie-Align/Magpie-Llama-3.1-Pro-DPO-100K-v0.1",
                               "magpie_pro": "Magpie-Align/Magpie-Pro-DPO-100K-v0.1",
                               "magpie_air": "Magpie-Align/Magpie-Air-DPO-100K-v0.1"}
    assert set(magpie_ultra.COLUMNS) <= set(ULTRA_COLUMNS) and "embedding" not in magpie_ultra.COLUMNS
    assert set(magpie_dpo.COLUMNS) <= set(DPO_COLUMNS)
    with pytest.raises(ValueError, match="magpie_pro_llama3.1"):
        magpie_dpo.load("fixture:magpie-pro-dpo", source="magpie_pro_llama3")


def test_fixture_layout_copies_the_hub_schemas():
    folder = FIXTURE_ROOT / "magpie-ultra"
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == list(gen_magpie.ULTRA_FILES)
    for f in gen_magpie.ULTRA_FILES:
        schema = pq.read_schema(folder / f)
        assert schema.names == ULTRA_COLUMNS and pq.ParquetFile(folder / f).metadata.num_rows == 450
        assert schema.field("embedding").type == pa.list_(pa.float64())
        assert schema.field("nn_indices").type == pa.list_(pa.int64())
        assert schema.field("distilabel_metadata").type == pa.struct([("raw_output_assign_tags_0", pa.string())])
        assert schema.field("messages").type.value_type == pa.struct([("content", pa.string()), ("role", pa.string())])
        assert schema.field("safe").type == pa.bool_() and schema.field("score_difference").type == pa.float64()
    for name, size in (("magpie-pro-llama3.1-dpo", 720), ("magpie-pro-dpo", 480), ("magpie-air-dpo", 300)):
        for split, n in (("train", size), ("test", 20)):
            path = FIXTURE_ROOT / name / "data" / f"{split}-00000-of-00001.parquet"
            schema = pq.read_schema(path)
            assert schema.names == DPO_COLUMNS and pq.ParquetFile(path).metadata.num_rows == n
            gic = [schema.field("gen_input_configs").type.field(k).name
                   for k in range(schema.field("gen_input_configs").type.num_fields)]
            assert gic == (["temperature", "top_p"] if name == "magpie-air-dpo"
                           else ["input_generator", "temperature", "top_p"])
            assert schema.field("rewards_armorm").type == pa.list_(pa.struct([("score", pa.float64())]))
            assert schema.field("input_length").type == pa.int64()
            assert all(len(r["responses"]) == 5 for r in raw_dpo(name, split))


def test_ultra_golden_counts_orientation_and_scores():
    table, drops = ultra()
    assert dict(drops) == gen_magpie.ULTRA_DROPS == {
        "score_difference is 0": 6, "missing category": 1, "missing ArmoRM score": 2,
        "missing score_difference": 2, "malformed prompt message": 1, "identical chosen and rejected": 1,
        "empty response": 1}
    assert table.num_rows == gen_magpie.ULTRA_PAIRS == 886
    pairs = check_pairs(table)
    dropped = set(gen_magpie.ULTRA_BROKEN) | set(gen_magpie.ULTRA_ZERO)
    rows = [i for i in range(900) if i not in dropped]
    assert [p["id"] for p in pairs] == [f"fixture:magpie-ultra:train:{i}" for i in rows]
    raw = raw_ultra()
    negative = 0
    for i, p in zip(rows, pairs):
        r = raw[i]
        assert p["source"] == "magpie_ultra" and p["prompt"] == [{"role": "user", "content": r["instruction"]}]
        assert p["scores"] == [r["score"], r["score_base"]]  # the source's response order, whichever is chosen
        if r["score_difference"] > 0:
            assert (p["chosen"], p["rejected"]) == (r["response"], r["response_base"])
        else:
            negative += 1
            assert (p["chosen"], p["rejected"]) == (r["response_base"], r["response"])
        assert p["category"] == ("Others" if i == gen_magpie.ULTRA_ALIAS_ROW else r["primary_tag"])
    assert negative == sum(i % 3 == 1 for i in rows) > 50  # both orientations are exercised
    cats = {p["category"] for p in pairs}
    assert {"Math", "Coding & Debugging", "Information seeking", "Reasoning", "Planning", "Others"} <= cats


def test_ultra_options():
    table, drops = magpie_ultra.load("fixture:magpie-ultra", recompute_difference=True)
    # the null and the NaN score_difference rows have valid scores: recomputed, they orient normally
    assert "missing score_difference" not in drops and table.num_rows == 888
    check_pairs(table)
    table, _ = magpie_ultra.load("fixture:magpie-ultra", category_aliases={})
    cats = dict(zip(table.column("id").to_pylist(), table.column("category").to_pylist()))
    assert cats[f"fixture:magpie-ultra:train:{gen_magpie.ULTRA_ALIAS_ROW}"] == "Other"
    table, _ = magpie_ultra.load("fixture:magpie-ultra", category_aliases={"Math": "Mathematics"})
    assert "Math" not in table.column("category").to_pylist()


@pytest.mark.parametrize("folder", list(DPO))
@pytest.mark.parametrize("split", ["train", "test"])
def test_dpo_golden_counts_orientation_and_scores(folder, split):
    table, drops = dpo(folder, split)
    assert dict(drops) == gen_magpie.DPO_DROPS_PER_FILE == {
        "missing category": 1, "missing ArmoRM score": 2, "identical chosen and rejected": 1, "empty response": 1,
        "chosen and rejected prompts differ": 1, "responses and rewards_armorm lengths differ": 1,
        "last turn is not from the assistant": 1}
    n = {"magpie-pro-llama3.1-dpo": 720, "magpie-pro-dpo": 480, "magpie-air-dpo": 300}[folder]
    n = n if split == "train" else 20
    assert table.num_rows == gen_magpie.dpo_pairs(folder, split) == n - 8
    pairs = check_pairs(table)
    assert [p["id"] for p in pairs] == [f"fixture:{folder}:{split}:{i}" for i in range(n - 8)]
    raw = raw_dpo(folder, split)
    for i, p in enumerate(pairs):
        r = raw[i]
        assert p["source"] == DPO[folder] and p["prompt"] == [{"role": "user", "content": r["instruction"]}]
        assert p["scores"] == [x["score"] for x in r["rewards_armorm"]] and len(p["scores"]) == 5
        assert p["chosen"] == r["responses"][int(np.argmax(p["scores"]))]     # as given: best ...
        assert p["rejected"] == r["responses"][int(np.argmin(p["scores"]))]   # ... and worst ArmoRM response
        expected = r["task_category"]
        assert p["category"] == ("Others" if expected == "Other" else expected)
    if folder == "magpie-pro-dpo" and split == "train":
        assert [raw[0]["task_category"], raw[1]["task_category"]] == ["Other", "Others"]
        assert pairs[0]["category"] == pairs[1]["category"] == "Others"


def test_dpo_air_scores_higher_raw_and_partial_binding():
    means = {f: np.mean([np.mean(s) for s in dpo(f, "train")[0].column("scores").to_pylist()]) for f in DPO}
    assert means["magpie-air-dpo"] > max(means["magpie-pro-dpo"], means["magpie-pro-llama3.1-dpo"]) + 0.02
    assert means["magpie-air-dpo"] - 0.1 < min(means["magpie-pro-dpo"], means["magpie-pro-llama3.1-dpo"])
    # within a set, the selection's mean scores have no ties (stable top fractions)
    for f in DPO:
        s = [np.mean(x) for x in dpo(f, "train")[0].column("scores").to_pylist()]
        assert len(set(s)) == len(s)
    air = functools.partial(magpie_dpo.load, source="magpie_air")
    table, _ = air("fixture:magpie-air-dpo")
    assert set(table.column("source").to_pylist()) == {"magpie_air"} and table.num_rows == 292


def test_contaminated_rows_are_exactly_the_documented_ones():
    index = build_index([r["prompt"] for r in generate.rewardbench_rows()])
    table, _ = ultra()
    prompts = [p[-1]["content"] for p in table.column("prompt").to_pylist()]
    ids = table.column("id").to_pylist()
    hit = [ids[k] for k in np.flatnonzero(index.contaminated(prompts))]
    assert hit == [f"fixture:magpie-ultra:train:{i}" for i in gen_magpie.ULTRA_CONTAMINATED] and len(hit) == 12
    raw = raw_ultra()
    for i in gen_magpie.ULTRA_CONTAMINATED:
        assert raw[i]["instruction"].startswith(gen_magpie.CONTAMINATION_PREFIX)
    for folder in DPO:
        for split in ("train", "test"):
            t, _ = dpo(folder, split)
            mask = index.contaminated([p[-1]["content"] for p in t.column("prompt").to_pylist()])
            expected = gen_magpie.DPO_CONTAMINATED.get(folder, ()) if split == "train" else ()
            assert np.flatnonzero(mask).tolist() == list(expected), (folder, split)


@pytest.mark.parametrize("folder", ["magpie-ultra", "magpie-air-dpo"])
def test_local_copy_reads_the_same_pairs(tmp_path, folder):
    copy = tmp_path / f"copy-{folder}"
    shutil.copytree(FIXTURE_ROOT / folder, copy)
    if folder == "magpie-ultra":
        (a, da), (b, db) = ultra(), magpie_ultra.load(str(copy))
    else:
        (a, da), (b, db) = dpo(folder, "train"), magpie_dpo.load(str(copy), source="magpie_air")
    assert da == db
    assert b.column("id").to_pylist() == [i.replace(f"fixture:{folder}:", f"copy-{folder}:")
                                          for i in a.column("id").to_pylist()]
    assert b.drop_columns(["id"]).equals(a.drop_columns(["id"]))


def test_regenerated_fixtures_are_byte_identical(tmp_path):
    paths = gen_magpie.write(tmp_path)
    assert len(paths) == 8
    for p in paths:
        rel = p.relative_to(tmp_path)
        assert p.read_bytes() == (FIXTURE_ROOT / rel).read_bytes(), rel


def _copy_with(tmp_path, folder, file, change):
    copy = tmp_path / folder
    shutil.copytree(FIXTURE_ROOT / folder, copy)
    t = pq.read_table(copy / file)
    pq.write_table(change(t), copy / file)
    return copy


def test_missing_column_and_wrong_type_name_the_file(tmp_path):
    f1 = gen_magpie.ULTRA_FILES[1]
    copy = _copy_with(tmp_path / "a", "magpie-ultra", f1, lambda t: t.drop_columns(["score_difference"]))
    with pytest.raises(DataError, match=r"train-00001-of-00002\.parquet.*score_difference"):
        magpie_ultra.load(str(copy))
    copy = _copy_with(tmp_path / "b", "magpie-ultra", f1,
                      lambda t: t.set_column(t.schema.get_field_index("score"), "score",
                                             t.column("score").cast(pa.string())))
    with pytest.raises(DataError, match=r"train-00001-of-00002\.parquet: column 'score' must be a number, got string"):
        magpie_ultra.load(str(copy))
    f = gen_magpie.DPO_FILES["test"]
    flat = lambda t: t.set_column(t.schema.get_field_index("rewards_armorm"), "rewards_armorm",  # noqa: E731
                                  pa.array([[x["score"] for x in r] for r in t.column("rewards_armorm").to_pylist()],
                                           type=pa.list_(pa.float64())))
    copy = _copy_with(tmp_path / "c", "magpie-pro-dpo", f, flat)
    with pytest.raises(DataError, match=r"test-00000-of-00001\.parquet: column 'rewards_armorm' must be a list of"):
        magpie_dpo.load(str(copy), "test", source="magpie_pro")
    with pytest.raises(DataError, match="not found"):
        magpie_ultra.load(str(tmp_path / "nope"))


def test_nan_rows_are_counted_not_kept():
    raw = raw_ultra()
    assert math.isnan(raw[141]["score"]) and raw[142]["score_base"] is None and math.isnan(raw[288]["score_difference"])
    assert {gen_magpie.ULTRA_BROKEN[i] for i in (141, 142)} == {"missing ArmoRM score"}
    broken = raw_dpo("magpie-air-dpo", "train")[-8:]
    assert math.isnan(broken[1]["rewards_armorm"][1]["score"]) and broken[2]["rewards_armorm"][3]["score"] is None
    assert len(broken[6]["rewards_armorm"]) == 4 and len(broken[6]["responses"]) == 5
