"""The curation recipes end to end on the fixture copies of the seven sources: golden per-source step
counts, the paper-artefact CSVs, v0.2 decontamination, leave-one-source-out, the diff against a released
set, and the WildGuard stage-2 scorer as a data dependency (a folder, a run dir, a run to build).

Golden numbers come from the fixture generators' documented layouts (repro/fixtures/gen_*.py) and the
recipe's rules applied by hand in the comments, not from the code under test.
"""
from __future__ import annotations

import csv
import json
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from repro import config as config_mod
from repro import scorer
from repro.curate import data_config
from repro.curate import main as curate_main
from repro.data import compare, mixture
from repro.data.schema import DataError
from repro.fixtures import gen_magpie, gen_wildguard

# Per configured source, pairs after each step (candidates, paired, selected, filtered, decontaminated,
# kept) of the fixture recipe with WildGuard stage 2 off. candidates/paired: the generators' layouts
# (HelpSteer2: 123 rows in 61 prompt groups + 1 null prompt = 62 candidates, 52 pairs; OffsetBias 123 rows,
# 120 pairs; WildGuard 376 rows = 26 rows dropped before grouping + 175 groups = 201 candidates, 168 pairs,
# 153 adversarial; Ultra 900 rows, 886 pairs; DPO sets 720/480/300 rows, minus 8 broken rows each).
# selected: the pooled top fractions per category; filtered: stage 1 keeps the 153 adversarial pairs.
FIXTURE_STEPS = {
    "helpsteer2": (62, 52, 52, 52, 52, 52),
    "offsetbias": (123, 120, 120, 120, 120, 97),
    "wildguard": (201, 168, 168, 153, 153, 153),
    "magpie_ultra": (900, 886, 333, 333, 333, 217),
    "magpie_pro_llama3.1": (720, 712, 141, 141, 141, 44),
    "magpie_pro": (480, 472, 0, 0, 0, 0),
    "magpie_air": (300, 292, 0, 0, 0, 0),
}


@pytest.fixture(scope="module")
def no_stage2():
    cfg = data_config("fixture")
    cfg.wildguard.stage2 = False
    table, manifest, side = mixture.build(cfg)
    return cfg, table, manifest, side


def test_every_recipe_composes_and_validates():
    names = ["fixture", "fixture_scorer", "fixture_v02", "fixture_378k", "fixture_released", "skywork80k_v01",
             "skywork80k_v01_scorer", "skywork80k_v02", "preference378k", "preference700k",
             "skywork80k_v01_released", "skywork80k_v02_released"]
    cfgs = {n: data_config(n) for n in names}
    assert cfgs["skywork80k_v02"].decontamination.remove_from == ["magpie_ultra"]
    assert cfgs["skywork80k_v01"].decontamination.remove_from == []
    assert [s.name for s in cfgs["skywork80k_v01_scorer"].sources] == [
        "helpsteer2", "offsetbias", "magpie_ultra", "magpie_pro_llama3.1", "magpie_pro", "magpie_air"]
    assert not cfgs["preference378k"].magpie.enabled and not cfgs["preference378k"].wildguard.adversarial_only
    assert cfgs["skywork80k_v01"].magpie.offsets == {"magpie_air": -0.1, "magpie_pro": -0.05}
    assert cfgs["skywork80k_v01"].magpie.top_fraction == {"Math": 0.3, "Coding & Debugging": 0.3}
    assert cfgs["skywork80k_v01"].magpie.default_fraction == 0.1
    # the fixture recipe is v0.1's rules on the fixture folders
    fx, v01 = cfgs["fixture"], cfgs["skywork80k_v01"]
    assert [s.name for s in fx.sources] == [s.name for s in v01.sources] and fx.magpie == v01.magpie
    assert all(s.path.startswith("fixture:") for s in fx.sources)


def test_fixture_recipe_golden_counts_per_step(no_stage2):
    _, table, manifest, _ = no_stage2
    assert manifest["steps"] == ["candidates", "paired", "selected", "filtered", "decontaminated", "kept"]
    got = {s["label"]: tuple(s["steps"][k] for k in manifest["steps"]) for s in manifest["sources"]}
    assert got == FIXTURE_STEPS
    for s in manifest["sources"]:
        assert s["steps"]["candidates"] - s["kept"] == sum(s["dropped"].values()), s["label"]
    assert {s["label"]: s["rows_read"] for s in manifest["sources"]} == {
        "helpsteer2": 123, "offsetbias": 123, "wildguard": 376, "magpie_ultra": 900, "magpie_pro_llama3.1": 720,
        "magpie_pro": 480, "magpie_air": 300}
    wg = next(s for s in manifest["sources"] if s["label"] == "wildguard")
    assert wg["dropped"]["vanilla prompt (WildGuard stage 1: adversarial only)"] == gen_wildguard.WG_VANILLA_GOOD
    assert table.num_rows == manifest["pairs"] == sum(v[-1] for v in FIXTURE_STEPS.values())
    assert manifest["wildguard"] == {"source": "wildguard", "adversarial_only": True, "stage2": False, "scorer": None,
                                     "pairs": 168, "after_stage1": 153, "after_stage2": None}


def test_fixture_recipe_content_hash_is_pinned(no_stage2):
    # a change to any loader, rule or fixture row moves this hash: update it only with a reason
    _, table, manifest, _ = no_stage2
    assert manifest["sha256"] == mixture.table_sha256(table)
    assert manifest["sha256"] == "76d088a3d6cf1aeb4be0830b01571d461218bacc59b8e2e68a2524ad2cb13cf6"


def test_magpie_category_table_and_scores_side_table(no_stage2):
    _, table, manifest, side = no_stage2
    scores = side["magpie_scores"].to_pylist()
    # every Magpie pair that reached selection has a row: Ultra 886 + DPO 712 + 472 + 292
    assert len(scores) == 886 + 712 + 472 + 292
    by_cat = {r["category"]: r for r in manifest["magpie"]["categories"]}
    for cat, r in by_cat.items():
        pooled = [s for s in scores if s["category"] == cat]
        assert r["pairs"] == len(pooled) and r["kept"] == sum(s["kept"] for s in pooled)
        frac = {"Math": 0.3, "Coding & Debugging": 0.3}.get(cat, 0.1)
        assert r["kept"] == int(frac * r["pairs"] + 1e-9)  # floor, pooled over the four subsets
    for s in scores:
        assert s["score"] == pytest.approx(s["raw_score"] + {"magpie_air": -0.1, "magpie_pro": -0.05}.get(s["source"], 0))
    # the kept Magpie pairs of the curated table carry their adjusted score
    kept = {s["id"]: s["score"] for s in scores if s["kept"]}
    for r in table.select(["id", "source", "score"]).to_pylist():
        if r["source"].startswith("magpie"):
            assert r["score"] == pytest.approx(kept[r["id"]])


def test_v02_decontaminates_magpie_ultra_only(no_stage2, tmp_path):
    cfg, table, manifest, _ = no_stage2
    v02 = data_config("fixture_v02")
    v02.wildguard.stage2 = False
    t2, m2, side2 = mixture.build(v02)
    removed = {s["label"]: s["dropped"].get("prompt shares a 7-13-gram with fixture:reward-bench (decontamination)", 0)
               for s in m2["sources"]}
    # of Ultra's 12 planted RewardBench prompts, those that survived selection are removed; nothing else
    contaminated = side2["contaminated"].to_pylist()
    ultra_ids = {r["id"] for r in contaminated if r["source"] == "magpie_ultra"}
    planted = {f"fixture:magpie-ultra:train:{i}" for i in gen_magpie.ULTRA_CONTAMINATED}
    assert ultra_ids <= planted and removed["magpie_ultra"] == len(ultra_ids) > 0
    assert all(n == 0 for k, n in removed.items() if k != "magpie_ultra")
    assert all(r["removed"] == (r["source"] == "magpie_ultra") for r in contaminated)
    assert m2["decontamination"]["removed"] == len(ultra_ids)
    assert t2.num_rows == table.num_rows - len(ultra_ids)
    # v0.1 counts the same contamination (Table 4's columns) but removes nothing
    assert manifest["decontamination"]["total"]["contaminated"] == m2["decontamination"]["total"]["contaminated"]
    assert manifest["decontamination"]["removed"] == 0


def test_leave_one_source_out_is_one_override(no_stage2):
    cfg = data_config("fixture")
    cfg.exclude = ["wildguard"]
    assert not scorer.needs_scorer(config_mod.RunConfig(data=cfg))  # no WildGuard pairs: no scorer to build
    table, manifest, _ = mixture.build(cfg)
    assert [s["label"] for s in manifest["sources"]] == [k for k in FIXTURE_STEPS if k != "wildguard"]
    assert manifest["excluded"] == ["wildguard"] and "wildguard" not in table.column("source").to_pylist()
    with pytest.raises(config_mod.ConfigError, match=r"\['wildgard'\] name no source"):
        config_mod.validate(config_mod.RunConfig(data=config_mod.DataConfig(
            sources=cfg.sources, exclude=["wildgard"])))


def test_stage2_without_a_scorer_is_one_clear_error(no_stage2):
    cfg = data_config("fixture")
    cfg.wildguard.scorer_run = []
    with pytest.raises(config_mod.ConfigError, match="stage2=true needs data.wildguard.scorer"):
        config_mod.validate(config_mod.RunConfig(data=cfg))
    cfg.wildguard.scorer_run = ["data=fixture_scorer"]
    with pytest.raises(DataError, match="no scorer was given"):
        mixture.build(cfg)


def test_stage2_keeps_the_pairs_the_scorer_ranks_right(no_stage2):
    """A scorer function that ranks by a rule we can compute by hand: prefer the refusal."""
    cfg = data_config("fixture")
    seen = []

    def refusal_first(pairs: pa.Table) -> pa.Table:
        seen.append(pairs.num_rows)
        rows = pairs.to_pylist()
        return pa.table({"id": [r["id"] for r in rows],
                         "score_chosen": [float(r["chosen"].startswith("I cannot")) for r in rows],
                         "score_rejected": [float(r["rejected"].startswith("I cannot")) for r in rows]})

    table, manifest, side = mixture.build(cfg, score_fn=refusal_first)
    assert seen == [153]  # only the adversarial WildGuard pairs left after stage 1 are scored
    wg = [r for r in table.to_pylist() if r["source"] == "wildguard"]
    # kept: exactly the harmful prompts' pairs (chosen = the refusal)
    assert wg and all(r["chosen"].startswith("I cannot") for r in wg)
    assert manifest["wildguard"]["after_stage2"] == len(wg)
    assert side["wildguard_scores"].num_rows == 153


def test_scorer_names_a_run_dir_a_folder_or_the_run_that_trains_it(tmp_path):
    run = tmp_path / "runs" / "tiny" / "x" / "seed=0"
    (run / "model").mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 0\n")
    assert scorer.model_folder(str(run)) == str(run / "model")
    assert scorer.model_folder("Skywork/Skywork-Reward-Gemma-2-27B") == "Skywork/Skywork-Reward-Gemma-2-27B"
    cfg = config_mod.compose(["data=fixture", f"runs_root={tmp_path / 'runs'}"])
    sub, run_dir = scorer.scorer_run(cfg)
    # the same run `python -m repro.train data=fixture_scorer` makes, under the same runs_root
    assert sub.data.name == "fixture_scorer" and not sub.data.wildguard.stage2
    assert run_dir == (tmp_path / "runs" / "tiny" / "data=fixture_scorer" / "seed=0").resolve()
    with pytest.raises(config_mod.ConfigError, match="a scorer must be trained without one"):
        scorer.scorer_run(config_mod.compose(["data=fixture", "data.wildguard.scorer_run=['data=fixture']"]))


def test_curate_cli_writes_the_artefact_tables(tmp_path):
    out = tmp_path / "c"
    assert curate_main(["--data", "fixture_378k", "--out", str(out)]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    # the 378K-style union: nothing selected or filtered away
    for s in manifest["sources"]:
        assert s["steps"]["paired"] == s["steps"]["selected"] == s["steps"]["filtered"]
    rows = list(csv.DictReader((out / "figure1_composition.csv").open()))
    assert [(r["source"], int(r["pool_pairs"])) for r in rows] == [(k, v[1]) for k, v in FIXTURE_STEPS.items()]
    t1 = list(csv.DictReader((out / "table1_composition.csv").open()))
    assert t1[-1]["source"] == "total" and int(t1[-1]["pairs"]) == manifest["pairs"]
    assert {r["tokenizer"] for r in t1} == {"whitespace words"}
    t4 = list(csv.DictReader((out / "table4_contamination.csv").open()))
    assert t4[-1]["source"] == "total" and int(t4[-1]["contaminated_prompts"]) == \
        manifest["decontamination"]["total"]["contaminated"]
    assert not (out / "magpie_task_categories.csv").read_text().strip()  # selection off: no category table


def test_compare_to_a_released_copy_reports_in_both_only_ours_only_theirs(tmp_path):
    out = tmp_path / "ours"
    assert curate_main(["--data", "fixture_released", "--out", str(out), "--skywork-format"]) == 0
    theirs = tmp_path / "theirs" / "data"
    theirs.mkdir(parents=True)
    t = pq.read_table(out / "train-00000-of-00001.parquet")
    # theirs: drop the first 10 rows, add one pair we do not have, and change whitespace in one (still matched)
    rows = t.slice(10).to_pylist()
    rows[0]["chosen"][-1]["content"] = "  " + rows[0]["chosen"][-1]["content"].replace(" ", "   ") + "\n"
    extra = {"chosen": [{"content": "Only in theirs?", "role": "user"}, {"content": "yes", "role": "assistant"}],
             "rejected": [{"content": "Only in theirs?", "role": "user"}, {"content": "no", "role": "assistant"}],
             "source": "theirs_only"}
    pq.write_table(pa.Table.from_pylist(rows + [extra], schema=t.schema), theirs / "train-00000-of-00001.parquet")
    assert curate_main(["--data", "fixture_released", "--out", str(tmp_path / "o2"),
                        "--compare-to", str(tmp_path / "theirs")]) == 0
    rep = json.loads((tmp_path / "o2" / "compare.json").read_text())
    n = t.num_rows
    assert rep["total"] == {"ours": n, "theirs": n - 10 + 1, "in_both": n - 10, "only_ours": 10, "only_theirs": 1}
    assert rep["theirs"]["theirs_only"] == {"pairs": 1, "in_both": 0, "only_theirs": 1}
    assert sum(e["only_ours"] for e in rep["ours"].values()) == 10


def test_compare_matches_duplicates_one_for_one():
    from repro.data.schema import PairTable, make_pair

    def table(*keys):
        t = PairTable()
        for i, (q, source) in enumerate(keys):
            t.add(make_pair(id=str(i), source=source, prompt=[{"role": "user", "content": q}], chosen="a",
                            rejected="b"))
        return t.table()

    rep = compare.compare(table(("q", "x"), ("q", "x"), ("r", "x")), table(("q", "y"), ("s", "y")))
    assert rep["total"] == {"ours": 3, "theirs": 2, "in_both": 1, "only_ours": 2, "only_theirs": 1}


def test_table1_counts_whitespace_words_per_source():
    from repro.data.schema import PairTable, make_pair
    from repro.data.stats import table1

    t = PairTable(batch_rows=2)
    # source a: 2 turns + answer (3 messages), prompt words 2 + 3, responses 4 and 2 words (mean 3)
    t.add(make_pair(id="1", source="a", prompt=[{"role": "user", "content": "two  words"},
                                                {"role": "assistant", "content": "\u00a0three words here"},
                                                {"role": "user", "content": ""}][:2] + [
                                                {"role": "user", "content": "q"}],
                    chosen="one two\tthree\nfour", rejected="x y"))
    t.add(make_pair(id="2", source="b", prompt=[{"role": "user", "content": "é ß 中"}], chosen="a", rejected="b c d"))
    got = table1(t.table())
    assert got["tokenizer"] == "whitespace words"
    assert got["sources"] == [
        {"source": "a", "pairs": 1, "avg_turns": 4.0, "avg_prompt_tokens": 6.0, "avg_response_tokens": 3.0},
        {"source": "b", "pairs": 1, "avg_turns": 2.0, "avg_prompt_tokens": 3.0, "avg_response_tokens": 2.0}]
    assert got["total"] == {"source": "total", "pairs": 2, "avg_turns": 3.0, "avg_prompt_tokens": 4.5,
                            "avg_response_tokens": 2.5}


def test_duplicate_keys_are_equal_exactly_when_the_pairs_are():
    import random

    from repro.data.schema import PairTable, make_pair

    rng = random.Random(1)
    t, canonical = PairTable(batch_rows=7), []
    for i in range(200):
        prompt = [{"role": rng.choice(["user", "system"]), "content": rng.choice(["q", "q:", "1:q", "a b", ""])}
                  for _ in range(rng.randint(1, 3))]
        prompt[-1]["role"] = "user"
        chosen, rejected = rng.choice(["a", "b", "a:b", "1:a"]), rng.choice(["x", "y", "", "0:"])
        t.add(make_pair(id=str(i), source="s", prompt=prompt, chosen=chosen, rejected=rejected))
        canonical.append(json.dumps([prompt, chosen, rejected]))
    keys = []
    for batch in t.table().combine_chunks().to_batches(max_chunksize=13):  # sliced batches
        keys += mixture.pair_keys(batch).to_pylist()
    assert all((keys[a] == keys[b]) == (canonical[a] == canonical[b]) for a in range(200) for b in range(200))
