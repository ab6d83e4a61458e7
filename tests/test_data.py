"""Loaders on the fixture folders (the real Hub layouts), curation counts, and bad input."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from repro import config as config_mod
from repro.config import DataConfig, SourceConfig
from repro.data import mixture
from repro.data.schema import DataError, pair_problem
from repro.data.sources import SOURCES, rewardbench, skywork80k
from repro.eval.rewardbench import SUBSETS
from repro.fixtures import FIXTURE_ROOT, generate

from conftest import run_cli


def as_rows(loaded):
    """A loader's (pair table, drops) as (list of pair dicts, drops)."""
    table, drops = loaded
    return table.to_pylist(), drops


def test_skywork_fixture_counts_and_drop_reasons():
    pairs, drops = as_rows(skywork80k.load("fixture:skywork80k"))
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
    rows = rewardbench.load("fixture:reward-bench", allow_partial=True)
    assert {r["subset"] for r in rows} == set(SUBSETS)


def test_fixtures_are_regenerated_identically(tmp_path):
    written = generate.generate(tmp_path)
    assert {p.relative_to(tmp_path).as_posix() for p in written} >= {
        "offsetbias/train.jsonl", "helpsteer2/train.jsonl.gz", "helpsteer2/validation.jsonl.gz"}
    for path in written:
        committed = FIXTURE_ROOT / path.relative_to(tmp_path)
        if path.suffix == ".parquet":  # same schema and values (repr: NaN equals NaN), whatever the writer
            fresh, old = pq.read_table(path), pq.read_table(committed)
            assert fresh.schema == old.schema and repr(fresh.to_pylist()) == repr(old.to_pylist()), committed
        else:  # JSON lines, plain or gzipped with mtime=0: byte-for-byte
            assert path.read_bytes() == committed.read_bytes(), committed


def test_curation_manifest_and_cache(tmp_path):
    cfg = DataConfig()
    pairs, manifest, folder = mixture.curate(cfg, tmp_path)
    # the fixture's closed fact world repeats pairs: 1180 valid rows hold 679 distinct pairs (501 repeats)
    assert manifest["pairs"] == len(pairs) == 679 and manifest["dropped"] == 6 + 501
    assert manifest["sources"][0]["rows_read"] == 1186 and manifest["sources"][0]["dropped"]["duplicate pair"] == 501
    assert manifest["duplicates"] == {"policy": "drop", "found": 501, "dropped": 501, "by_source": {"skywork80k": 501}}
    loaded, _ = as_rows(skywork80k.load("fixture:skywork80k"))
    first = {}
    for p in loaded:
        first.setdefault(json.dumps([p["prompt"], p["chosen"], p["rejected"]]), p)
    assert pairs == list(first.values())  # the first occurrence of each, in row order
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
    assert curate_main(["--data", "fixture_released", "--out", str(out), "--skywork-format"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pairs"] == 679 and manifest["sources"][0]["dropped"]["empty response"] == 1
    # the released layout: a folder with data/train-00000-of-00001.parquet reads through the same loader
    (tmp_path / "released" / "data").mkdir(parents=True)
    (out / "train-00000-of-00001.parquet").rename(tmp_path / "released" / "data" / "train-00000-of-00001.parquet")
    again, drops = as_rows(skywork80k.load(str(tmp_path / "released")))
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
    pairs, drops = as_rows(skywork80k.load(str(tmp_path / "ds")))
    assert len(pairs) == 5 and not drops


def test_null_or_malformed_messages_are_counted_drops_not_crashes():
    user = {"content": "q", "role": "user"}
    answer = {"content": "a", "role": "assistant"}
    assert skywork80k.conversation_pair([user, None], [user, answer]) == \
        "message with a missing or non-string role/content"
    assert skywork80k.conversation_pair([user, "text"], [user, answer]) == \
        "message with a missing or non-string role/content"
    assert skywork80k.conversation_pair([user, answer], [user, {"content": "b", "role": "assistant"}])[1:] == ("a", "b")


def conversation(prompt, answer):
    """One Skywork-80K conversation: user turns of `prompt`, then the assistant's `answer`."""
    return [{"content": q, "role": "user"} for q in prompt] + [{"content": answer, "role": "assistant"}]


def skywork_row(prompt, chosen, rejected, source="magpie_ultra"):
    return {"chosen": conversation(prompt, chosen), "rejected": conversation(prompt, rejected), "source": source}


def test_duplicate_pairs_within_and_across_sources_are_dropped_or_kept_and_counted(tmp_path):
    a = write_skywork(tmp_path / "a", [
        skywork_row(["q1"], "yes", "no"),                     # 0  first of its pair
        skywork_row(["q2"], "red", "blue"),                   # 1  first; source b repeats it
        skywork_row(["q1"], "yes", "no", source="wildguard"),  # 2  duplicate of row 0 (source value ignored)
        skywork_row(["q1"], "no", "yes"),                     # 3  swapped answers: a different pair
        skywork_row(["q1"], "yes", ""),                       # 4  empty response: dropped before duplicates
    ], schema=skywork80k.SCHEMA)
    b = write_skywork(tmp_path / "b", [
        skywork_row(["q3"], "yes", "no"),                     # 0  other prompt, same answers: a different pair
        skywork_row(["q2"], "red", "blue", source="offsetbias"),  # 1  duplicate of a's row 1: across sources
        skywork_row(["q0", "q1"], "yes", "no"),               # 2  longer prompt: a different pair
        skywork_row(["q3"], "yes", "no"),                     # 3  duplicate of b's row 0
    ], schema=skywork80k.SCHEMA)
    sources = [SourceConfig(path=str(a)), SourceConfig(path=str(b))]

    pairs, manifest, _ = mixture.build(DataConfig(sources=sources))
    assert pairs.column("id").to_pylist() == ["a:train:0", "a:train:1", "a:train:3", "b:train:0", "b:train:2"]
    assert manifest["pairs"] == 5 and manifest["dropped"] == 1 + 3
    assert manifest["duplicates"] == {"policy": "drop", "found": 3, "dropped": 3,
                                      "by_source": {"skywork80k[0]": 1, "skywork80k[1]": 2}}
    sa, sb = manifest["sources"]
    assert (sa["rows_read"], sa["kept"], sa["dropped"]) == (5, 3, {"duplicate pair": 1, "empty response": 1})
    assert (sb["rows_read"], sb["kept"], sb["dropped"]) == (4, 2, {"duplicate pair": 2})
    assert all(s["rows_read"] == s["kept"] + sum(s["dropped"].values()) for s in manifest["sources"])
    assert sum(s["kept"] for s in manifest["sources"]) == manifest["pairs"]

    kept, manifest_keep, _ = mixture.build(DataConfig(sources=sources, duplicates="keep"))
    assert kept.column("id").to_pylist() == ["a:train:0", "a:train:1", "a:train:2", "a:train:3",
                                       "b:train:0", "b:train:1", "b:train:2", "b:train:3"]
    assert manifest_keep["duplicates"] == {"policy": "keep", "found": 3, "dropped": 0,
                                           "by_source": {"skywork80k[0]": 1, "skywork80k[1]": 2}}
    assert [s["dropped"] for s in manifest_keep["sources"]] == [{"empty response": 1}, {}]
    assert manifest_keep["sha256"] != manifest["sha256"]
    assert mixture.data_key(DataConfig(sources=sources)) != mixture.data_key(DataConfig(sources=sources,
                                                                                        duplicates="keep"))


def test_a_source_listed_twice_is_a_config_error_naming_both(tmp_path):
    cfg = DataConfig(sources=[SourceConfig(path=str(tmp_path / "a")), SourceConfig(path=str(tmp_path / "b")),
                              SourceConfig(path=str(tmp_path / "a"))])
    with pytest.raises(config_mod.ConfigError, match=r"data\.sources\[2\] repeats data\.sources\[0\]"):
        config_mod.validate(config_mod.RunConfig(data=cfg))


def test_a_shard_missing_a_column_is_an_error_naming_the_shard(tmp_path):
    good = skywork_row(["q"], "a", "b")
    data = tmp_path / "ds" / "data"
    data.mkdir(parents=True)
    table = pa.Table.from_pylist([good] * 3, schema=skywork80k.SCHEMA)
    pq.write_table(table, data / "train-00000-of-00002.parquet")
    pq.write_table(table.drop(["source"]), data / "train-00001-of-00002.parquet")  # datasets would fill nulls
    with pytest.raises(DataError, match=r"train-00001-of-00002\.parquet: missing column\(s\) \['source'\]; "
                                        r"it has \['chosen', 'rejected'\]"):
        skywork80k.load(str(tmp_path / "ds"))


def test_json_lines_shards_are_checked_by_the_keys_of_their_rows(tmp_path):
    import gzip

    from repro.data.hub import file_columns, load_split

    data = tmp_path / "ds"
    data.mkdir()
    (data / "train-00000-of-00002.jsonl").write_text('{"a": 1}\n{"a": 2, "b": 3}\n')  # b first in row 1
    with gzip.open(data / "train-00001-of-00002.jsonl.gz", "wt") as f:
        f.write('{"a": 4}\n')
    assert file_columns(str(data / "train-00000-of-00002.jsonl")) == ["a", "b"]
    assert file_columns(str(data / "train-00001-of-00002.jsonl.gz")) == ["a"]
    with pytest.raises(DataError,
                       match=r"train-00001-of-00002\.jsonl\.gz: missing column\(s\) \['b'\]; it has \['a'\]"):
        load_split(str(data), "train", columns=("a", "b"))


def curate_cli(tmp_path, *args):
    proc = run_cli(["-m", "repro.curate", *args], tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_curate_cli_broken_recipe_is_one_line_naming_file_and_line(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("name: mine\nsources:\n  - name: skywork80k\n    path: [fixture:skywork80k\n")
    line = curate_cli(tmp_path, "--data", str(recipe), "--out", str(tmp_path / "out"))
    assert str(recipe) in line and "line 5" in line and "not valid YAML" in line
    recipe.write_text("- fixture\n- skywork80k\n")
    line = curate_cli(tmp_path, "--data", str(recipe), "--out", str(tmp_path / "out"))
    assert str(recipe) in line and "must be a mapping" in line and "got list" in line
    assert not (tmp_path / "out" / "pairs.parquet").exists()


def test_curate_cli_out_that_is_a_file_is_one_line_naming_it(tmp_path):
    out = tmp_path / "taken"
    out.write_text("not a folder")
    line = curate_cli(tmp_path, "--out", str(out))
    assert f"--out={out}" in line and "is a file" in line
    assert out.read_text() == "not a folder"
