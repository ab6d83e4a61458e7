"""`python -m repro.evaluate` as a user runs it: bad input stops with one line before any model is loaded,
and re-scoring a run writes beside its result, never over it."""
import json
import os
import shutil

import pandas as pd
import pytest

from repro import config as config_mod
from repro.eval.rewardbench import SUBSET_COUNTS, SUBSETS, score, subset_accuracies

from conftest import run_cli

EVALUATE = ["-m", "repro.evaluate"]
# The run's own result: re-scoring must leave every byte of these as it was.
OWN_RESULT = ["final.json", "eval/per_example.parquet", "eval/subsets.json", "eval/run_rm.json", "metrics.jsonl"]
RESCORE_FILES = ["per_example.parquet", "run_rm.json", "subsets.json", "summary.json"]


def error_line(proc) -> str:
    """The one error line of a refused command: exit 2, no traceback, and stderr is `error: ...` alone
    (the package's errors) or argparse's usage line plus its error line."""
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    if lines and lines[0].startswith("usage: "):
        assert len(lines) == 2 and lines[1].startswith("python -m repro.evaluate: error: "), proc.stderr
        return lines[1]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def subsets_json(path, duplicate: str | None = None):
    body = [f'"{s}": 0.75' for s in SUBSETS] + ([f'"{duplicate}": 0.25'] if duplicate else [])
    path.write_text("{" + ", ".join(body) + "}")
    return path


def per_example_folder(folder, drop: list[str]):
    folder.mkdir()
    df = pd.DataFrame({"id": range(len(SUBSETS)), "subset": list(SUBSETS), "score_chosen": 1.0,
                       "score_rejected": 0.0, "correct": True})
    df.drop(columns=drop).to_parquet(folder / "per_example.parquet", index=False)
    return folder


def unwritable_dir(tmp_path):
    """A folder nothing can be created in: root ignores permissions, so under /sys for root."""
    if os.geteuid() == 0:
        return "/sys/repro-test-out"
    folder = tmp_path / "read-only"
    folder.mkdir(mode=0o555)
    return str(folder / "out")


def case(tmp_path, name):
    """(arguments, substrings the error line must hold) for one kind of bad input."""
    good = per_example_folder(tmp_path / "good", [])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    # --model /nonexistent/model: an --out error must come before the model is looked at
    model = ["--model", "/nonexistent/model", "--out", str(tmp_path / "out")]
    if name == "from-subsets is a folder":
        return ["--from-subsets", str(tmp_path)], [str(tmp_path), "is a folder"]
    if name == "from-subsets missing":
        return ["--from-subsets", str(tmp_path / "nope.json")], ["nope.json", "file not found"]
    if name == "from-subsets broken JSON":
        (tmp_path / "broken.json").write_text('{"alpacaeval-easy": 0.5,')
        return ["--from-subsets", str(tmp_path / "broken.json")], ["broken.json", "not valid JSON"]
    if name == "from-subsets duplicate key":
        f = subsets_json(tmp_path / "dup.json", duplicate="hep-go")
        return ["--from-subsets", str(f)], ["dup.json", "'hep-go'", "more than once"]
    if name == "dtype":
        return [*model, "--dtype", "foo"], ["--dtype", "'foo'"]
    if name == "batch-size 0":
        return [*model, "--batch-size", "0"], ["--batch-size", "0"]
    if name == "batch-size negative":
        return [*model, "--batch-size", "-3"], ["--batch-size", "-3"]
    if name == "model without out":
        return ["--model", "/nonexistent/model"], ["--model", "--out"]
    if name == "out with run-dir":
        return ["--run-dir", str(run_dir), "--out", str(tmp_path / "o")], ["--out", "only with --model"]
    if name == "compare without correct":  # neither correct nor the two scores to derive it from
        bad = per_example_folder(tmp_path / "bad", ["correct", "score_chosen", "score_rejected"])
        return ["--compare", str(good), str(bad)], [str(bad / "per_example.parquet"),
                                                     "needs 'correct' or both 'score_chosen' and 'score_rejected'"]
    if name == "compare without id and subset":
        bad = per_example_folder(tmp_path / "bad", ["id", "subset"])
        return ["--compare", str(bad), str(good)], [str(bad / "per_example.parquet"), "missing column 'subset'"]
    if name == "compare not parquet":
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "per_example.parquet").write_text("id,subset,correct\n")
        return ["--compare", str(good), str(tmp_path / "bad")], [str(tmp_path / "bad" / "per_example.parquet"),
                                                                "not a readable results file"]
    if name == "run-dir without config.yaml":
        return ["--run-dir", str(run_dir)], [str(run_dir / "config.yaml"), "no frozen config"]
    if name == "run-dir without model":
        config_mod.save(config_mod.RunConfig(), run_dir / "config.yaml")
        return ["--run-dir", str(run_dir)], [str(run_dir), "has no model/", "training did not finish"]
    if name == "run-dir broken config.yaml":
        (run_dir / "config.yaml").write_text("optim:\n  lr: [1, 2\nseed: 0\n")
        return ["--run-dir", str(run_dir)], [str(run_dir / "config.yaml"), "line 3", "not valid YAML"]
    if name == "out is a file":
        (tmp_path / "out").write_text("not a folder")
        return model, [f"--out={tmp_path / 'out'}", "is a file"]
    if name == "out cannot be written":
        where = unwritable_dir(tmp_path)
        return [*model[:3], where], [f"--out={where}", "cannot write there"]
    raise AssertionError(name)


@pytest.mark.parametrize("name", [
    "from-subsets is a folder", "from-subsets missing", "from-subsets broken JSON", "from-subsets duplicate key",
    "dtype", "batch-size 0", "batch-size negative", "model without out", "out with run-dir",
    "compare without correct", "compare without id and subset", "compare not parquet",
    "run-dir without config.yaml", "run-dir without model", "run-dir broken config.yaml",
    "out is a file", "out cannot be written",
])
def test_bad_input_is_one_error_line_before_any_model_is_loaded(tmp_path, name):
    args, needles = case(tmp_path, name)
    line = error_line(run_cli([*EVALUATE, *args], tmp_path))
    for needle in needles:
        assert needle in line, line
    assert not (tmp_path / "run" / "eval").exists()  # nothing written into a run dir it refused


def snapshot(run_dir, names) -> dict:
    return {n: ((run_dir / n).read_bytes(), (run_dir / n).stat().st_mtime_ns) for n in names}


def expected_sections(per_example, weights: str) -> dict:
    """Sections and Score recomputed from per-example correctness, outside the code under test."""
    return score(subset_accuracies(per_example["subset"], per_example["correct"]), weights=weights)


def test_rescoring_writes_alongside_and_keeps_the_runs_own_result(default_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(default_run["run_dir"], run_dir)
    own = snapshot(run_dir, OWN_RESULT)
    final = json.loads((run_dir / "final.json").read_text())
    assert final["weights"] == "current"  # config.yaml says eval.weights: current

    proc = run_cli([*EVALUATE, "--run-dir", str(run_dir), "--weights", "legacy"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    legacy = run_dir / "eval" / "rescore-legacy"
    assert sorted(p.name for p in legacy.iterdir()) == RESCORE_FILES
    assert snapshot(run_dir, OWN_RESULT) == own
    assert str(legacy) in proc.stdout
    # this machine scored the run itself: the same model gives the same scores, and the CLI says so
    own_scores = pd.read_parquet(run_dir / "eval" / "per_example.parquet")
    rescored = pd.read_parquet(legacy / "per_example.parquet")
    assert rescored.equals(own_scores)
    assert "identical to the run's own, bit for bit" in proc.stdout
    summary = json.loads((legacy / "summary.json").read_text())
    assert set(summary) == {"sections", "Score", "ci95", "weights", "by_weights", "examples", "coverage"}
    # the fixture is partial by design: every subset is below its official count, all four sections incomplete
    counts = own_scores["subset"].value_counts()
    assert summary["coverage"]["complete"] is False and summary["coverage"]["examples"] == len(own_scores)
    assert summary["coverage"]["incomplete_subsets"] == {
        s: {"n": int(counts[s]), "expected": n} for s, n in SUBSET_COUNTS.items() if counts[s] < n}
    assert summary["coverage"]["incomplete_sections"] == ["Chat", "Chat Hard", "Safety", "Reasoning"]
    assert "PARTIAL set: 192 of 2,985 examples" in proc.stdout
    assert summary["by_weights"]["current"] == pytest.approx(expected_sections(rescored, "current"))
    assert summary["weights"] == "legacy" and summary["examples"] == len(own_scores)
    expected = expected_sections(rescored, "legacy")
    assert summary["sections"] == pytest.approx({k: v for k, v in expected.items() if k != "Score"})
    assert summary["Score"] == pytest.approx(expected["Score"])
    run_rm = json.loads((legacy / "run_rm.json").read_text())
    assert {s: run_rm[s] for s in SUBSETS} == pytest.approx(subset_accuracies(rescored["subset"], rescored["correct"]))

    # the run's own weighting, re-scored too: both coexist
    legacy_files = snapshot(legacy, RESCORE_FILES)
    proc = run_cli([*EVALUATE, "--run-dir", str(run_dir)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    current = json.loads((run_dir / "eval" / "rescore-current" / "summary.json").read_text())
    assert current["weights"] == "current"
    assert current["sections"] == pytest.approx(final["sections"]) and current["Score"] == pytest.approx(final["Score"])
    assert snapshot(legacy, RESCORE_FILES) == legacy_files
    assert snapshot(run_dir, OWN_RESULT) == own

    # --compare still reads each run's weighting from its final.json; re-scorings carry theirs
    proc = run_cli([*EVALUATE, "--compare", str(run_dir), str(default_run["run_dir"])], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)["weights"] == "current"
    proc = run_cli([*EVALUATE, "--compare", str(legacy), str(run_dir / "eval" / "rescore-current")], tmp_path)
    assert "different weightings ['current', 'legacy']" in error_line(proc)


def test_a_run_whose_evaluation_did_not_finish_is_completed_as_the_pipeline_would(default_run, tmp_path):
    """Training done, evaluation killed: --run-dir writes eval/ and final.json under the run's own weighting
    (as the pipeline does), and a requested other weighting only beside it."""
    run_dir = tmp_path / "tiny" / "default" / "seed=0"  # final.json names the run after its folder
    shutil.copytree(default_run["run_dir"], run_dir)
    pipeline_final = json.loads((run_dir / "final.json").read_text())
    pipeline_metrics = (run_dir / "metrics.jsonl").read_text().splitlines()
    (run_dir / "final.json").unlink()
    shutil.rmtree(run_dir / "eval")
    (run_dir / "metrics.jsonl").write_text(
        "".join(line + "\n" for line in pipeline_metrics if json.loads(line)["split"] != "eval"))

    proc = run_cli([*EVALUATE, "--run-dir", str(run_dir), "--weights", "legacy"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    final = json.loads((run_dir / "final.json").read_text())
    assert final["weights"] == "current"
    assert {k: final[k] for k in ("run", "eval", "train")} == {k: pipeline_final[k] for k in ("run", "eval", "train")}
    assert final["sections"] == pytest.approx(pipeline_final["sections"])
    assert final["ci95"].keys() == pipeline_final["ci95"].keys()
    assert all(final["ci95"][k] == pytest.approx(v) for k, v in pipeline_final["ci95"].items())
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    expected_metrics = [json.loads(line) for line in pipeline_metrics]
    assert [(m["step"], m["split"], m["metric"]) for m in metrics] == [
        (m["step"], m["split"], m["metric"]) for m in expected_metrics]  # the eval lines are back, once
    assert [m["value"] for m in metrics] == pytest.approx([m["value"] for m in expected_metrics])
    per_example = pd.read_parquet(run_dir / "eval" / "per_example.parquet")
    assert sorted(p.name for p in (run_dir / "eval").iterdir()) == [
        "per_example.parquet", "rescore-legacy", "run_rm.json", "subsets.json"]
    legacy = json.loads((run_dir / "eval" / "rescore-legacy" / "summary.json").read_text())
    assert legacy["weights"] == "legacy"
    assert legacy["Score"] == pytest.approx(expected_sections(per_example, "legacy")["Score"])
    assert "completed the run" in proc.stdout and str(run_dir / "eval" / "rescore-legacy") in proc.stdout


# ---------------------------------------------------------------------------------------------------
# Comparisons of per-example results from any tool, and of a family of arms

def _results(rng_seed: int, accuracy: float, n_per_subset: int = 12):
    """Synthetic per-example rows over every subset: id, subset, prompt/chosen/rejected, correct."""
    import numpy as np

    rng = np.random.default_rng(rng_seed)
    rows = []
    for s in SUBSETS:
        for i in range(n_per_subset):
            rows.append({"id": f"{s}-{i}", "subset": s, "prompt": f"q {s} {i}", "chosen": "a", "rejected": "b",
                         "correct": bool(rng.random() < accuracy)})
    return pd.DataFrame(rows)


def test_compare_reads_per_example_files_from_any_tool_and_matches_rows_by_key(tmp_path):
    from repro.eval.stats import mcnemar, paired_test

    a, b = _results(0, 0.8), _results(1, 0.6)
    a.to_parquet(tmp_path / "a.parquet")
    # B from another tool: CSV without ids (keyed by the texts), scores instead of correctness, rows shuffled
    b_scores = b.assign(score_chosen=b["correct"].astype(float), score_rejected=0.5).drop(columns=["correct", "id"])
    b_scores.sample(frac=1, random_state=0).to_csv(tmp_path / "b.csv", index=False)
    # A keyed by text too, as JSON lines, so both sides can be matched
    a.drop(columns=["id"]).to_json(tmp_path / "a.jsonl", orient="records", lines=True)
    proc = run_cli([*EVALUATE, "--compare", str(tmp_path / "a.jsonl"), str(tmp_path / "b.csv")], tmp_path)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    want = paired_test(a["subset"], a["correct"], b["correct"], weights="current")
    assert res["a_minus_b"]["Score"]["difference"] == pytest.approx(want["Score"]["difference"])
    assert res["a_minus_b"]["Score"]["p_value"] == pytest.approx(want["Score"]["p_value"])
    assert res["mcnemar"]["all"] == mcnemar(a["subset"], a["correct"], b["correct"])["all"]
    # an id-keyed file cannot be matched to a text-keyed one: named, not guessed
    proc = run_cli([*EVALUATE, "--compare", str(tmp_path / "a.parquet"), str(tmp_path / "b.csv")], tmp_path)
    line = error_line(proc)
    assert "a.parquet" in line and "b.csv" in line and "different rows" in line and "0 with the same key" in line


def test_compare_reads_the_official_per_example_output(tmp_path):
    """run_rm.py --save_all's per-example file (as the results repo's eval-set-scores/ hold it: JSON lines
    from `datasets.Dataset.to_json`, `results` 0/1, `scores_chosen`, `scores_rejected`) compares as is."""
    import datasets

    from repro.eval.stats import paired_test

    a, b = _results(4, 0.8), _results(5, 0.7)
    official = datasets.Dataset.from_pandas(
        b.assign(results=b["correct"].astype(int), scores_chosen=b["correct"] * 2.0 - 0.5, scores_rejected=0.0)
        .drop(columns=["correct"]), preserve_index=False)
    official.to_json(tmp_path / "official.json")  # one JSON object per line, in a .json file
    a.to_parquet(tmp_path / "a.parquet")
    proc = run_cli([*EVALUATE, "--compare", str(tmp_path / "a.parquet"), str(tmp_path / "official.json")], tmp_path)
    assert proc.returncode == 0, proc.stderr
    want = paired_test(a["subset"], a["correct"], b["correct"], weights="current")
    assert json.loads(proc.stdout)["a_minus_b"]["Score"]["difference"] == pytest.approx(want["Score"]["difference"])
    # both spellings of one column: refused, not guessed
    b.assign(results=b["correct"]).to_json(tmp_path / "both.jsonl", orient="records", lines=True)
    line = error_line(run_cli([*EVALUATE, "--compare", str(tmp_path / "a.parquet"), str(tmp_path / "both.jsonl")],
                              tmp_path))
    assert "both.jsonl" in line and "has both 'results' and 'correct'" in line


def test_compare_a_family_of_arms_against_a_base_with_holm(tmp_path):
    from repro.eval.stats import holm, paired_test

    base = _results(0, 0.7)
    arms = {"better": _results(1, 0.95), "same": _results(2, 0.7), "worse": _results(3, 0.4)}
    paths = [tmp_path / "base.parquet"]
    base.to_parquet(paths[0])
    for name, df in arms.items():
        paths.append(tmp_path / f"{name}.parquet")
        df.sample(frac=1, random_state=1).to_parquet(paths[-1])  # other row order: matched by id
    proc = run_cli([*EVALUATE, "--compare", *map(str, paths)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    fam = json.loads(proc.stdout)
    assert fam["base"] == str(paths[0]) and fam["examples"] == len(base)
    raw = {}
    for name, df in arms.items():
        want = paired_test(base["subset"], df["correct"], base["correct"], weights="current")
        got = fam["arms"][str(tmp_path / f"{name}.parquet")]["paired"]["Score"]
        assert got["difference"] == pytest.approx(want["Score"]["difference"])
        raw[name] = want["Score"]["p_value"]
    adjusted = holm(list(raw.values()))
    for (name, _), p in zip(raw.items(), adjusted):
        assert fam["arms"][str(tmp_path / f"{name}.parquet")]["paired"]["Score"]["p_holm"] == pytest.approx(p)
    assert "arm minus base" in proc.stderr and "better" in proc.stderr  # the readable table
    # mismatched rows in one arm: named with the count
    arms["worse"].iloc[:-1].to_parquet(paths[-1])
    line = error_line(run_cli([*EVALUATE, "--compare", *map(str, paths)], tmp_path))
    assert "worse.parquet" in line and "different rows" in line


def _seed_group(root, accuracy: float, first_seed: int, n: int = 3, **changes):
    """A folder of evaluated `seed=<n>/` run dirs, as `python -m repro.train seed=0,1,2` leaves them."""
    for k in range(n):
        run = root / f"seed={k}"
        (run / "eval").mkdir(parents=True)
        cfg = config_mod.RunConfig(seed=k)
        for key, value in (changes if k == n - 1 else {}).items():
            setattr(cfg.loss, key, value)
        config_mod.save(cfg, run / "config.yaml")
        (run / "final.json").write_text(json.dumps({"weights": "current"}))
        _results(first_seed + k, accuracy).to_parquet(run / "eval" / "per_example.parquet")
    return root


def test_compare_seed_groups_per_example_and_on_seed_means(tmp_path):
    """A folder of seed=<n> run dirs is one arm: per example on its mean correctness over seeds, and over
    seeds with t intervals and Welch's test (scipy), Holm-adjusted."""
    import numpy as np
    from scipy.stats import t as student_t, ttest_ind

    base = _seed_group(tmp_path / "bt", 0.7, first_seed=10)
    arm = _seed_group(tmp_path / "hinge", 0.85, first_seed=20)
    proc = run_cli([*EVALUATE, "--compare", str(base), str(arm)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    fam = json.loads(proc.stdout)

    def seed_scores(first, acc):
        out = []
        for k in range(3):
            df = _results(first + k, acc)
            out.append(score(subset_accuracies(df["subset"], df["correct"]))["Score"])
        return np.array(out)

    b, a = seed_scores(10, 0.7), seed_scores(20, 0.85)
    # linearity: the seed-averaged model's Score difference is the mean of the per-seed Score differences
    got = fam["arms"][str(arm)]["paired"]["Score"]
    assert got["difference"] == pytest.approx(a.mean() - b.mean(), abs=1e-12)
    assert got["low"] < got["difference"] < got["high"] and fam["arms"][str(arm)]["mcnemar"] is None
    group = fam["seeds"]["groups"][str(arm)]["summary"]["Score"]
    half = student_t.ppf(0.975, 2) * a.std(ddof=1) / np.sqrt(3)
    assert group["n"] == 3 and group["mean"] == pytest.approx(a.mean())
    assert [group["low"], group["high"]] == pytest.approx([a.mean() - half, a.mean() + half])
    welch = fam["seeds"]["welch"][str(arm)]["Score"]
    assert welch["p_value"] == pytest.approx(ttest_ind(a, b, equal_var=False).pvalue)
    assert welch["p_holm"] == pytest.approx(welch["p_value"])  # one arm: Holm changes nothing
    assert "seed groups" in proc.stderr and "Welch p=" in proc.stderr

    # a "seed group" whose runs differ in more than the seed is refused, naming the key
    odd = _seed_group(tmp_path / "odd", 0.8, first_seed=30, margin=2.0)
    line = error_line(run_cli([*EVALUATE, "--compare", str(base), str(odd)], tmp_path))
    assert str(odd) in line and "loss.margin: 1.0 -> 2.0" in line and "differ in more than the seed" in line


def test_detectable_differences_at_rewardbench_sizes(tmp_path):
    """`--detectable 0.05`: the Score row solves Connor's (1987) sample-size formula for the gap, at the
    Score's effective size (1 / sum of squared per-example weights over the real subset counts)."""
    import numpy as np
    from scipy.optimize import brentq
    from scipy.stats import norm

    from repro.eval.rewardbench import SUBSET_COUNTS
    from repro.eval.stats import example_weights

    proc = run_cli([*EVALUATE, "--detectable", "0.05"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    table = json.loads(proc.stdout)["table"]
    subsets = np.repeat(list(SUBSET_COUNTS), list(SUBSET_COUNTS.values()))
    n_eff = 1 / (example_weights(subsets)["Score"] ** 2).sum()
    za, zb, d = norm.ppf(0.975), norm.ppf(0.8), 0.05
    gap = brentq(lambda x: (za * np.sqrt(d) + zb * np.sqrt(d - x * x)) ** 2 / x ** 2 - n_eff, 1e-4, d ** 0.5 - 1e-9)
    assert table["Score"]["n"] == 2985 and table["Score"]["mdd"][0] == pytest.approx(gap, rel=1e-6)
    assert "Score" in proc.stderr and "5% disagree" in proc.stderr


def test_scores_do_not_depend_on_row_order_batch_size_or_length_sorting():
    """Length-sorted batches, dataset-order batches of other sizes and a reversed row order give every
    example the same scores (to float rounding) and the same correctness, returned in row order."""
    import numpy as np

    from repro.config import RunConfig
    from repro.data.sources import rewardbench
    from repro.data.sources.skywork80k import load as load_skywork
    from repro.evaluate import score_rows
    from repro.fit import build_backbone

    pairs = load_skywork("fixture:skywork80k")[0].slice(0, 200).to_pylist()
    model, tok = build_backbone(RunConfig(), pairs)  # untrained: scores spread widely, ties are rare
    rows = rewardbench.load("fixture:reward-bench", allow_partial=True)
    ref = score_rows(model, tok, rows, batch_size=16)
    assert ref["id"].tolist() == [r["id"] for r in rows]
    for kwargs, order in (({"batch_size": 1, "sort_by_length": False}, rows),
                          ({"batch_size": 7, "sort_by_length": False}, rows),
                          ({"batch_size": 5}, rows[::-1])):
        got = score_rows(model, tok, order, **kwargs).set_index("id").loc[ref["id"]]
        for col in ("score_chosen", "score_rejected"):
            assert np.abs(got[col].to_numpy() - ref[col].to_numpy()).max() < 1e-5, kwargs
        assert (got["correct"].to_numpy() == ref["correct"].to_numpy()).all(), kwargs
