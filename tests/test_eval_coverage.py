"""RewardBench completeness: the full `filtered` split is validated (2,985 rows, 23 subsets at their official
counts, unique ids); a partial set is refused unless asked for, and then every output says it is partial."""
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from repro.data.schema import DataError
from repro.data.sources import rewardbench
from repro.eval import rewardbench as rb
from repro.eval.rewardbench import SUBSET_COUNTS, SUBSETS

from conftest import run_cli

FULL = 2985  # the official split's size (REWARDBENCH.md), written out rather than summed from the table


def write_set(root, counts: dict[str, int], *, repeat_id: bool = False):
    """A RewardBench folder in the Hub layout with `counts[subset]` rows per subset."""
    rows, i = [], 0
    for s, n in counts.items():
        for _ in range(n):
            rows.append({"prompt": f"p{i}", "chosen": "a", "chosen_model": "m", "rejected": "b",
                         "rejected_model": "m", "subset": s, "id": i})
            i += 1
    if repeat_id:
        rows[-1]["id"] = rows[0]["id"]
    path = root / "data" / "filtered-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=rewardbench.SCHEMA), path)
    return str(root)


def test_the_official_counts_sum_to_the_published_size():
    assert sum(SUBSET_COUNTS.values()) == FULL and len(SUBSETS) == 23


def test_coverage_by_hand():
    counts = dict(SUBSET_COUNTS, **{"mt-bench-easy": 20, "hep-go": 0})
    cov = rb.coverage(counts)
    assert cov == {"complete": False, "examples": FULL - 8 - 164, "expected_examples": FULL,
                   "incomplete_subsets": {"mt-bench-easy": {"n": 20, "expected": 28}, "hep-go": {"n": 0, "expected": 164}},
                   "incomplete_sections": ["Chat", "Reasoning"]}
    assert rb.describe_coverage(cov).startswith("PARTIAL set: 2,813 of 2,985 examples, 2 of 23 subsets")
    assert rb.coverage(SUBSET_COUNTS)["complete"] is True


def test_a_full_set_loads_without_being_asked(tmp_path):
    rows = rewardbench.load(write_set(tmp_path / "rb", SUBSET_COUNTS))
    assert len(rows) == FULL


def test_the_fixture_is_partial_and_refused_unless_allowed():
    with pytest.raises(DataError, match=r"a partial RewardBench set \(192 of 2,985 rows; 23 subset\(s\) below their "
                                        r"official counts.*--allow-partial \(eval.allow_partial=true"):
        rewardbench.load("fixture:reward-bench")
    assert len(rewardbench.load("fixture:reward-bench", allow_partial=True)) == 192


@pytest.mark.parametrize("problem, needle", [
    ("over", r"subset 'donotanswer' has 137 rows, more than the official 136"),
    ("repeat", r"1 id\(s\) appear more than once, e\.g\. id 0"),
])
def test_never_rewardbench_is_refused_even_when_partial_is_allowed(tmp_path, problem, needle):
    counts = dict(SUBSET_COUNTS, donotanswer=137) if problem == "over" else dict.fromkeys(SUBSETS, 2)
    path = write_set(tmp_path / "rb", counts, repeat_id=problem == "repeat")
    with pytest.raises(DataError, match=needle):
        rewardbench.load(path, allow_partial=True)


def test_evaluate_refuses_a_partial_set_before_loading_the_model(tmp_path):
    proc = run_cli(["-m", "repro.evaluate", "--model", "/nonexistent/model", "--data", "fixture:reward-bench",
                    "--out", str(tmp_path / "o")], tmp_path)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "partial RewardBench set (192 of 2,985 rows" in proc.stderr and "--allow-partial" in proc.stderr
    proc = run_cli(["-m", "repro.evaluate", "--from-subsets", "x.json", "--allow-partial"], tmp_path)
    assert proc.returncode == 2 and "--allow-partial: only with --model" in proc.stderr


def test_a_partial_run_rm_file_stays_marked_when_rescored(tmp_path):
    acc = dict.fromkeys(SUBSETS, 0.5)
    note = rb.describe_coverage(rb.coverage(dict.fromkeys(SUBSETS, 1)))
    path = tmp_path / "run_rm.json"
    path.write_text(json.dumps({**rb.to_run_rm_json(acc, model="m"), "partial": note}))
    proc = run_cli(["-m", "repro.evaluate", "--from-subsets", str(path)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["partial"] == note and out["Score"] == pytest.approx(0.5)
