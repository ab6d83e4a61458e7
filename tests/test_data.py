"""Loaders on the fixture folders (the real Hub layouts), curation counts, and bad input."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from repro.config import DataConfig, SourceConfig
from repro.data import mixture
from repro.data.schema import DataError, pair_problem
from repro.data.sources import SOURCES, rewardbench, skywork80k
from repro.eval.rewardbench import SUBSETS
from repro.fixtures import FIXTURE_ROOT, generate


def test_skywork_fixture_counts_and_drop_reasons():
    pairs, drops = skywork80k.load("fixture:skywork80k")
    assert len(pairs) == 1180
    assert dict(drops) == {"identical chosen and rejected": 1, "empty response": 1,
                           "chosen and rejected prompts differ": 1, "last turn is not from the assistant": 1,
                           "message with a missing or non-string role/content": 1, "missing source": 1}
    sources = {p["source"] for p in pairs}
    assert sources == {"helpsteer2", "offsetbias", "wildguard", "magpie_ultra", "magpie_pro_llama3.1",
                       "magpie_pro", "magpie_air"}
    multi = [p for p in pairs if len(p["prompt"]) > 1]
    assert multi and all(p["source"] == "helpsteer2" for p in multi)
    assert all(p["prompt"][-1]["role"] == "user" and pair_problem(p) is None for p in pairs)
    assert len({p["id"] for p in pairs}) == len(pairs) and pairs[0]["id"] == "fixture:skywork80k:train:0"


def test_rewardbench_fixture_has_every_subset_in_the_real_schema():
    table = pq.read_table(FIXTURE_ROOT / "reward-bench" / "data" / "filtered-00000-of-00001.parquet")
    assert table.schema.names == ["prompt", "chosen", "chosen_model", "rejected", "rejected_model", "subset", "id"]
    assert table.schema.field("id").type == pa.int64()
    rows = rewardbench.load("fixture:reward-bench")
    assert {r["subset"] for r in rows} == set(SUBSETS)


def test_fixtures_are_regenerated_identically(tmp_path):
    written = generate.generate(tmp_path)
    for path in written:
        committed = FIXTURE_ROOT / path.relative_to(tmp_path)
        assert pq.read_table(path).equals(pq.read_table(committed)), committed


def test_curation_manifest_and_cache(tmp_path):
    cfg = DataConfig()
    pairs, manifest, folder = mixture.curate(cfg, tmp_path)
    assert manifest["pairs"] == len(pairs) == 1180 and manifest["dropped"] == 6
    assert manifest["sources"][0]["rows_read"] == 1186
    assert manifest["sha256"] == mixture.pairs_sha256(pairs)
    again, manifest2, folder2 = mixture.curate(cfg, tmp_path)  # served from the cache
    assert folder2 == folder and manifest2 == manifest and again == pairs
    other = DataConfig(max_length=128)
    assert mixture.data_key(other) != mixture.data_key(cfg)


def test_editing_a_local_source_invalidates_the_curation_cache(tmp_path):
    import shutil

    folder = tmp_path / "sky"
    shutil.copytree(FIXTURE_ROOT / "skywork80k", folder)
    cfg = DataConfig(sources=[SourceConfig(path=str(folder))])
    pairs, _, cached = mixture.curate(cfg, tmp_path / "cache")
    table = pq.read_table(folder / "data" / "train-00000-of-00001.parquet")
    pq.write_table(table.slice(0, 100), folder / "data" / "train-00000-of-00001.parquet")
    fewer, manifest, fresh = mixture.curate(cfg, tmp_path / "cache")
    assert fresh != cached and manifest["sources"][0]["rows_read"] == 100 and len(fewer) < len(pairs)


def write_skywork(folder, rows, schema=None):
    path = folder / "data" / "train-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return folder


def test_missing_folder_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="dataset folder not found"):
        skywork80k.load(str(tmp_path / "nowhere"))


def test_missing_column_names_the_column(tmp_path):
    folder = write_skywork(tmp_path / "ds", [{"chosen": [{"content": "a", "role": "user"}], "source": "x"}])
    with pytest.raises(DataError, match=r"missing column\(s\) \['rejected'\]"):
        skywork80k.load(str(folder))


def test_wrong_type_names_file_row_and_key(tmp_path):
    folder = write_skywork(tmp_path / "ds", [{"chosen": "text", "rejected": "text", "source": "x"}])
    with pytest.raises(DataError, match=r"data/train-00000-of-00001\.parquet row 0: 'chosen' must be a list of messages"):
        skywork80k.load(str(folder))


def test_corrupt_file_is_one_clear_error(tmp_path):
    path = tmp_path / "ds" / "data" / "train-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match="cannot load dataset"):
        skywork80k.load(str(tmp_path / "ds"))


def test_rewardbench_unknown_subset_names_row(tmp_path):
    rows = [{"prompt": "p", "chosen": "a", "chosen_model": "m", "rejected": "b", "rejected_model": "m",
             "subset": s, "id": i} for i, s in ((6, "hep-go"), (7, "hep-cobol"))]
    path = tmp_path / "rb" / "data" / "filtered-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(DataError, match=r"filtered-00000-of-00001\.parquet row 1 \(id 7\): unknown subset 'hep-cobol'"):
        rewardbench.load(str(tmp_path / "rb"))


def test_nan_score_and_bad_prompt_are_drop_reasons():
    base = {"id": "x", "source": "s", "prompt": [{"role": "user", "content": "q"}], "chosen": "a",
            "rejected": "b", "category": None, "score": None}
    assert pair_problem(base) is None
    assert pair_problem(dict(base, score=float("nan"))) == "score is NaN"
    assert pair_problem(dict(base, prompt=[{"role": "assistant", "content": "q"}])) == \
        "prompt does not end with a user turn"
    assert pair_problem(dict(base, chosen="  ")) == "empty response"


def test_registry_names_every_loader():
    assert "skywork80k" in SOURCES
    assert json.dumps(mixture.build(DataConfig(sources=[SourceConfig()]))[1])  # manifest is JSON-serialisable


def test_curate_cli_writes_the_released_format_that_reads_back(tmp_path):
    from repro.curate import main as curate_main

    out = tmp_path / "curated"
    assert curate_main(["--data", "fixture", "--out", str(out), "--skywork-format"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pairs"] == 1180 and manifest["sources"][0]["dropped"]["empty response"] == 1
    # the released layout: a folder with data/train-00000-of-00001.parquet reads through the same loader
    (tmp_path / "released" / "data").mkdir(parents=True)
    (out / "train-00000-of-00001.parquet").rename(tmp_path / "released" / "data" / "train-00000-of-00001.parquet")
    again, drops = skywork80k.load(str(tmp_path / "released"))
    assert not drops and [(p["prompt"], p["chosen"], p["rejected"], p["source"]) for p in again] == \
        [(p["prompt"], p["chosen"], p["rejected"], p["source"]) for p in pq.read_table(out / "pairs.parquet").to_pylist()]


def test_curate_cli_unknown_preset_lists_the_valid_ones(capsys):
    from repro.curate import main as curate_main

    assert curate_main(["--data", "nope"]) == 2
    err = capsys.readouterr().err
    assert "data='nope' is not a known preset" in err and "fixture" in err and "skywork80k_v01" in err


def test_row_errors_name_the_file_and_its_own_row_across_shards(tmp_path):
    from repro.data.hub import row_locator

    good = {"chosen": [{"content": "q", "role": "user"}, {"content": "a", "role": "assistant"}],
            "rejected": [{"content": "q", "role": "user"}, {"content": "b", "role": "assistant"}], "source": "x"}
    data = tmp_path / "ds" / "data"
    data.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([good] * 3, schema=skywork80k.SCHEMA), data / "train-00000-of-00002.parquet")
    pq.write_table(pa.Table.from_pylist([good] * 2, schema=skywork80k.SCHEMA), data / "train-00001-of-00002.parquet")
    locate = row_locator(str(tmp_path / "ds"), "train")
    assert locate(1).endswith("train-00000-of-00002.parquet row 1")
    assert locate(4).endswith("train-00001-of-00002.parquet row 1")
    pairs, drops = skywork80k.load(str(tmp_path / "ds"))
    assert len(pairs) == 5 and not drops


def test_null_or_malformed_messages_are_counted_drops_not_crashes():
    user = {"content": "q", "role": "user"}
    answer = {"content": "a", "role": "assistant"}
    assert skywork80k.conversation_pair([user, None], [user, answer]) == \
        "message with a missing or non-string role/content"
    assert skywork80k.conversation_pair([user, "text"], [user, answer]) == \
        "message with a missing or non-string role/content"
    assert skywork80k.conversation_pair([user, answer], [user, {"content": "b", "role": "assistant"}])[1:] == ("a", "b")
