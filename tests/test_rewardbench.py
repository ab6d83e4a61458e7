"""RewardBench aggregation against real published numbers (REWARDBENCH.md, reference/)."""
import json
from pathlib import Path

import pytest

from repro.eval import rewardbench as rb
from repro.evaluate import main as evaluate_main

from conftest import ROOT, run_cli

LEADERBOARD = ROOT / "reference" / "rewardbench_v1_leaderboard"
RUN_RM = ROOT / "reference" / "rewardbench_run_rm_examples"


def test_subset_table():
    assert len(rb.SUBSETS) == 23
    assert sum(rb.SUBSET_COUNTS.values()) == 2985
    assert sum(rb.WEIGHTS["current"].values()) == 3522
    assert sum(rb.WEIGHTS["legacy"].values()) == 3522
    assert {s for subs in rb.SECTIONS.values() for s in subs} == set(rb.SUBSETS)
    assert [sum(rb.SUBSET_COUNTS[s] for s in subs) for subs in rb.SECTIONS.values()] == [358, 456, 740, 1431]
    assert rb.WEIGHTS["current"]["xstest-should-refuse"] == 154
    assert rb.WEIGHTS["legacy"]["xstest-should-refuse"] == 250


def skywork_gemma_counts() -> dict[str, float]:
    """Subset accuracies consistent with Skywork's published per-example counts (2024-09-05).

    Safety: refuse 146/154, respond 235/250, the other three 299/336 together (any split of the 299
    gives the same Safety, since their weights equal their row counts).
    """
    acc = {s: 1.0 for s in rb.SUBSETS}
    acc.update({"xstest-should-refuse": 146 / 154, "xstest-should-respond": 235 / 250,
                "refusals-dangerous": 95 / 100, "refusals-offensive": 99 / 100, "donotanswer": 105 / 136,
                "math-prm": 424 / 447})
    return acc


def test_skywork_gemma_safety_current_and_legacy():
    acc = skywork_gemma_counts()
    assert rb.section_scores(acc, weights="current")["Safety"] == pytest.approx(680 / 740, abs=1e-9)
    assert rb.section_scores(acc, weights="current")["Safety"] == pytest.approx(0.918919, abs=5e-7)
    assert rb.section_scores(acc, weights="legacy")["Safety"] == pytest.approx(0.919963, abs=5e-7)


def test_reasoning_is_half_math_half_code():
    acc = {s: 1.0 for s in rb.SUBSETS}
    acc["math-prm"] = 424 / 447
    for lang, hits in zip(("cpp", "go", "java", "js", "python", "rust"), (160, 160, 159, 160, 160, 160)):
        acc[f"hep-{lang}"] = hits / 164
    got = rb.section_scores(acc)["Reasoning"]
    assert got == pytest.approx(0.5 * 424 / 447 + 0.5 * 959 / 984, abs=1e-12)


def read_row(path: Path) -> dict[str, float]:
    data = json.loads(path.read_text())
    return {r["evaluation_name"]: r["score_details"]["score"] for r in data["evaluation_results"]}


def leaderboard_rows():
    for path in sorted(p for p in LEADERBOARD.rglob("*.json") if p.is_file()):
        yield path, read_row(path)


@pytest.mark.parametrize("model,expected", [
    ("Skywork-Reward-Gemma-2-27B", {"Score": 0.938, "Chat": 0.9581, "Chat Hard": 0.9145, "Safety": 0.9189,
                                    "Reasoning": 0.9606}),
    ("Skywork-Reward-Llama-3.1-8B", {"Score": 0.9252, "Chat": 0.9581, "Chat Hard": 0.8728, "Safety": 0.9081,
                                     "Reasoning": 0.962}),
])
def test_skywork_leaderboard_score_is_mean_of_sections(model, expected):
    (path,) = (LEADERBOARD / "Skywork" / model).glob("*.json")
    row = read_row(path)
    assert row == expected
    sections = {k: row[k] for k in rb.SECTIONS}
    assert rb.overall_score(sections) == pytest.approx(row["Score"], abs=1e-4)


def test_every_leaderboard_row_follows_the_score_rule():
    n = 0
    for path, row in leaderboard_rows():
        if not all(k in row for k in rb.SECTIONS):
            continue
        # 0.0 is the leaderboard's placeholder for "not evaluated on prior sets" (RB2-era rows)
        prior = row.get("Prior Sets (0.5 weight)") or None
        expected = rb.overall_score({k: row[k] for k in rb.SECTIONS}, prior_sets=prior)
        # published values are rounded to 4 decimals
        assert expected == pytest.approx(row["Score"], abs=1.5e-4), path
        n += 1
    assert n > 150


def test_strict_comparison_counts_ties_and_nan_as_wrong():
    assert rb.is_correct(1.0, 0.5)
    assert not rb.is_correct(0.5, 0.5)
    assert not rb.is_correct(float("nan"), 0.0)


def test_subset_accuracies_from_examples():
    acc = rb.subset_accuracies(["math-prm", "math-prm", "hep-go"], [True, False, True])
    assert acc == {"math-prm": 0.5, "hep-go": 1.0}
    with pytest.raises(rb.RewardBenchError, match="unknown RewardBench subset.*'nope'"):
        rb.subset_accuracies(["nope"], [True])


def test_run_rm_file_and_cli(tmp_path, capsys):
    path = RUN_RM / "GPM-Gemma-2B.json"
    acc = rb.read_run_rm_json(path)
    assert len(acc) == 23
    expected = rb.score(acc, weights="legacy")
    assert evaluate_main(["--from-subsets", str(path), "--weights", "legacy"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"Chat", "Chat Hard", "Safety", "Reasoning", "Score", "weights", "by_weights"}
    assert out["Score"] == expected["Score"]  # full precision: JSON round-trips the float exactly
    assert out["by_weights"] == {"current": rb.score(acc), "legacy": expected}
    assert out["Safety"] != pytest.approx(rb.score(acc)["Safety"], abs=1e-6)  # legacy differs from current
    # written back in the official format, it reads the same
    (tmp_path / "r.json").write_text(json.dumps(rb.to_run_rm_json(acc, model="m")))
    assert rb.read_run_rm_json(tmp_path / "r.json") == pytest.approx(acc)


def test_cli_bad_inputs_give_one_clear_line(tmp_path):
    good = json.loads((RUN_RM / "GPM-Gemma-2B.json").read_text())
    bad = dict(good, **{"hep-cobol": 0.5})
    (tmp_path / "unknown.json").write_text(json.dumps(bad))
    missing = {k: v for k, v in good.items() if k != "math-prm"}
    (tmp_path / "missing.json").write_text(json.dumps(missing))
    (tmp_path / "broken.json").write_text("{not json")
    for name, needle in [("unknown.json", "hep-cobol"), ("missing.json", "math-prm"), ("broken.json", "not valid JSON"),
                         ("absent.json", "file not found")]:
        proc = run_cli(["-m", "repro.evaluate", "--from-subsets", str(tmp_path / name)], tmp_path)
        assert proc.returncode == 2, name
        assert proc.stderr.strip().count("\n") == 0, proc.stderr  # one line, no traceback
        assert needle in proc.stderr and name in proc.stderr, proc.stderr


def test_leaderboard_is_regenerated_from_its_published_sections(tmp_path):
    import csv

    from repro.eval.leaderboard import LeaderboardError, regenerate
    from repro.evaluate import main as evaluate_main

    rows = regenerate()
    assert len(rows) > 150 and all(abs(r["difference"]) <= 1.5e-4 for r in rows)  # 4-decimal rounding only
    sky = {r["model"]: r for r in rows if r["model"].startswith("Skywork/Skywork-Reward-")}
    # by hand from the published sections: (0.9581 + 0.9145 + 0.9189 + 0.9606) / 4
    assert sky["Skywork/Skywork-Reward-Gemma-2-27B"]["score_recomputed"] == pytest.approx(0.938025, abs=1e-12)
    assert sky["Skywork/Skywork-Reward-Llama-3.1-8B"]["score_recomputed"] == pytest.approx(
        (0.9581 + 0.8728 + 0.9081 + 0.962) / 4, abs=1e-12)
    assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
    assert all(a["score_recomputed"] >= b["score_recomputed"] for a, b in zip(rows, rows[1:]))
    assert evaluate_main(["--leaderboard", "--out", str(tmp_path)]) == 0
    table = list(csv.DictReader((tmp_path / "leaderboard_v1.csv").open()))
    assert len(table) == len(rows) and table[0]["model"] == rows[0]["model"]
    bad = tmp_path / "lb" / "org" / "m"
    bad.mkdir(parents=True)
    (bad / "x.json").write_text("{not json")
    with pytest.raises(LeaderboardError, match=r"x\.json: not a readable leaderboard row"):
        regenerate(tmp_path / "lb")
