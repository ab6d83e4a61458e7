"""The whole pipeline as a user runs it: `python -m repro.train` from any folder, offline, on CPU."""
import json
import re

import pandas as pd
import pytest

from repro import config as config_mod
from repro.data.sources import rewardbench
from repro.eval.rewardbench import SECTIONS, SUBSETS, read_run_rm_json
from repro.evaluate import score_rows
from repro.fit import build_backbone, curated_pairs
from repro.results import collect

from conftest import ROOT, run_cli

CONTRACT = ["config.yaml", "env.json", "metrics.jsonl", "data/manifest.json", "train.json",
            "model/model.safetensors", "eval/per_example.parquet", "eval/subsets.json", "eval/run_rm.json",
            "final.json"]


def test_default_run_writes_the_results_contract(default_run):
    run_dir = default_run["run_dir"]
    for name in CONTRACT:
        assert (run_dir / name).is_file(), name
    final = json.loads((run_dir / "final.json").read_text())
    assert set(final["sections"]) == set(SECTIONS)
    assert final["Score"] == pytest.approx(sum(final["sections"].values()) / 4)
    assert set(final["ci95"]) == set(SECTIONS) | {"Score"}
    point = final["sections"] | {"Score": final["Score"]}
    assert all(lo - 1e-9 <= point[k] <= hi + 1e-9 for k, (lo, hi) in final["ci95"].items()), final
    assert final["run"] == {"experiment": "tiny", "name": "default", "seed": 0, "data": "fixture",
                            "model": "tiny_llama", "loss": "bt"}
    per_example = pd.read_parquet(run_dir / "eval" / "per_example.parquet")
    assert list(per_example.columns) == ["id", "subset", "score_chosen", "score_rejected", "correct"]
    assert set(per_example["subset"]) == set(SUBSETS) and len(per_example) == final["eval"]["examples"]
    assert (per_example["correct"] == (per_example["score_chosen"] > per_example["score_rejected"])).all()
    assert len(read_run_rm_json(run_dir / "eval" / "run_rm.json")) == 23
    metrics = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(set(m) == {"step", "split", "metric", "value"} for m in metrics)
    assert {"train", "eval"} <= {m["split"] for m in metrics}
    env = json.loads((run_dir / "env.json").read_text())
    assert env["world_size"] == 1 and env["versions"]["torch"]
    manifest = json.loads((run_dir / "data" / "manifest.json").read_text())
    assert manifest["pairs"] == 1180 and manifest["dropped"] == 6
    out = default_run["proc"].stdout
    assert str(run_dir) in out and re.search(r"Score\s+\d+\.\d\d", out)
    assert collect(default_run["cwd"] / "runs").loc[0, "Score"] == final["Score"]


def test_training_is_what_lifts_accuracy_from_chance(default_run):
    """Untrained backbones score near chance on the RewardBench fixture; the trained one >= 0.8."""
    run_dir = default_run["run_dir"]
    cfg = config_mod.load(run_dir / "config.yaml")
    pairs = curated_pairs(run_dir)
    rows = rewardbench.load(cfg.eval.path)
    before = []
    for seed in (0, 1, 2):
        cfg.seed = seed
        model, tok = build_backbone(cfg, pairs)
        before.append(score_rows(model, tok, rows)["correct"].mean())
    assert abs(sum(before) / 3 - 0.5) < 0.15, before
    after = pd.read_parquet(run_dir / "eval" / "per_example.parquet")["correct"].mean()
    assert after >= 0.8, after


def test_second_invocation_skips_the_finished_run(default_run):
    final = default_run["run_dir"] / "final.json"
    stamp = final.stat().st_mtime_ns
    proc = run_cli(["-m", "repro.train"], default_run["cwd"])
    assert proc.returncode == 0, proc.stderr
    assert "skipping finished run" in proc.stdout and str(default_run["run_dir"]) in proc.stdout
    assert final.stat().st_mtime_ns == stamp


def test_a_finished_run_whose_config_changed_is_not_silently_reused(default_run, tmp_path):
    import shutil

    import yaml

    run_dir = tmp_path / "runs" / "tiny" / "default" / "seed=0"
    shutil.copytree(default_run["run_dir"], run_dir)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    cfg["optim"]["lr"] = 0.5  # as if the preset had been edited after the run
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg))
    proc = run_cli(["-m", "repro.train"], tmp_path)
    assert proc.returncode == 2
    assert "different config (optim.lr: 0.5 -> 0.001)" in proc.stderr and "force=true" in proc.stderr


def test_multirun_gives_one_deterministic_dir_per_point(tmp_path):
    proc = run_cli(["-m", "repro.train", "-m", "loss=bt,hinge", "optim.max_steps=5"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    dirs = {loss: tmp_path / "runs" / "tiny" / f"loss={loss},optim.max_steps=5" / "seed=0" for loss in ("bt", "hinge")}
    for loss, d in dirs.items():
        assert (d / "final.json").is_file(), d
        assert config_mod.load(d / "config.yaml").loss.name == loss
    a, b = (pd.read_parquet(d / "eval" / "per_example.parquet") for d in dirs.values())
    assert not a["score_chosen"].equals(b["score_chosen"])  # the loss really changed the training
    # the two points compared on the same rows: A - B with a paired interval and p-value
    proc = run_cli(["-m", "repro.evaluate", "--compare", str(dirs["bt"]), str(dirs["hinge"])], tmp_path)
    assert proc.returncode == 0, proc.stderr
    res = json.loads(proc.stdout)
    score = res["a_minus_b"]["Score"]
    assert res["examples"] == len(a) and score["low"] <= score["difference"] <= score["high"]
    assert score["difference"] == pytest.approx(
        json.loads((dirs["bt"] / "final.json").read_text())["Score"]
        - json.loads((dirs["hinge"] / "final.json").read_text())["Score"])
    assert 0 < score["p_value"] <= 1


def test_one_process_with_accumulation_equals_two_ddp_processes(tmp_path):
    """Global batch 16 as 8 x 2 accumulation on one process, or 8 x 1 on two gloo processes: same model."""
    common = ["optim.max_steps=15", "seed=1"]
    one = run_cli(["-m", "repro.train", *common], tmp_path)
    two = run_cli(["-m", "repro.train", *common, "launcher=accelerate", "launcher.cpu=true",
                   "launcher.num_processes=2"], tmp_path)
    assert one.returncode == 0 and two.returncode == 0, two.stdout[-2000:] + two.stderr[-2000:]
    root = tmp_path / "runs" / "tiny"
    d1 = root / "optim.max_steps=15" / "seed=1"
    d2 = root / "launcher.cpu=true,launcher.num_processes=2,launcher=accelerate,optim.max_steps=15" / "seed=1"
    assert json.loads((d2 / "train.json").read_text())["world_size"] == 2
    a, b = (pd.read_parquet(d / "eval" / "per_example.parquet") for d in (d1, d2))
    assert (a["score_chosen"] - b["score_chosen"]).abs().max() < 1e-4
    assert (a["score_rejected"] - b["score_rejected"]).abs().max() < 1e-4

    def train_log(d):
        rows = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        return {(r["step"], r["metric"]): r["value"] for r in rows
                if r["split"] == "train" and r["metric"] in ("loss", "accuracy", "lr")}

    one_log, two_log = train_log(d1), train_log(d2)  # logged over all ranks, not rank 0 alone
    assert one_log.keys() == two_log.keys() and one_log
    assert all(abs(one_log[k] - two_log[k]) < 1e-5 for k in one_log)


@pytest.mark.parametrize("args,needles", [
    (["loss=nope"], ["loss/nope", "bt", "hinge"]),
    (["optim.lr=fast"], ["optim.lr"]),
    (["data.sources.0.path=/nonexistent/folder"], ["/nonexistent/folder", "not found"]),
    (["eval.path=/nonexistent/rb"], ["/nonexistent/rb", "not found"]),
    (["model=llama31_8b", "model.path=/nonexistent/model"], ["/nonexistent/model", "model folder not found"]),
])
def test_bad_input_stops_with_a_clear_message(tmp_path, args, needles):
    proc = run_cli(["-m", "repro.train", *args, "optim.max_steps=1"], tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    for needle in needles:
        assert needle in proc.stderr, proc.stderr


def test_layering_only_train_imports_hydra():
    offenders = []
    for path in (ROOT / "repro").rglob("*.py"):
        if path.name == "train.py" and path.parent.name == "repro":
            continue
        text = path.read_text()
        if re.search(r"^\s*(import hydra|from hydra|import omegaconf|from omegaconf)", text, re.M):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_importing_the_library_is_cheap(tmp_path):
    code = ("import sys, repro, repro.config, repro.results, repro.eval.rewardbench, repro.fixtures; "
            "heavy = [m for m in ('torch', 'transformers', 'datasets', 'hydra') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    proc = run_cli(["-c", code], tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_evaluate_any_reward_model_folder_matches_the_run(default_run, tmp_path):
    """`repro.evaluate --model FOLDER` (the path used for Hub reward models) scores like the run did."""
    run_dir = default_run["run_dir"]
    proc = run_cli(["-m", "repro.evaluate", "--model", str(run_dir / "model"), "--data", "fixture:reward-bench",
                    "--out", str(tmp_path / "out")], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    a = pd.read_parquet(run_dir / "eval" / "per_example.parquet")
    b = pd.read_parquet(tmp_path / "out" / "per_example.parquet")
    assert (a["id"] == b["id"]).all()
    assert (a["score_chosen"] - b["score_chosen"]).abs().max() < 1e-4
    assert "Score" in proc.stdout


def test_rescoring_a_run_with_legacy_weights(default_run, tmp_path):
    import shutil

    run_dir = tmp_path / "copy"
    shutil.copytree(default_run["run_dir"], run_dir)
    metrics_before = (run_dir / "metrics.jsonl").read_text()
    proc = run_cli(["-m", "repro.evaluate", "--run-dir", str(run_dir)], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((run_dir / "final.json").read_text())["weights"] == "current"  # the run's own weighting
    proc = run_cli(["-m", "repro.evaluate", "--run-dir", str(run_dir), "--weights", "legacy"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (run_dir / "metrics.jsonl").read_text() == metrics_before  # re-scoring does not rewrite history
    final = json.loads((run_dir / "final.json").read_text())
    assert final["weights"] == "legacy"
    per_example = pd.read_parquet(run_dir / "eval" / "per_example.parquet")
    from repro.eval.rewardbench import score, subset_accuracies

    expected = score(subset_accuracies(per_example["subset"], per_example["correct"]), weights="legacy")
    assert final["sections"]["Safety"] == pytest.approx(expected["Safety"])
    # a paired comparison never mixes weightings silently
    proc = run_cli(["-m", "repro.evaluate", "--compare", str(run_dir), str(default_run["run_dir"])], tmp_path)
    assert proc.returncode == 2 and "different weightings ['current', 'legacy']" in proc.stderr


def test_a_failing_sweep_point_does_not_stop_the_others_but_fails_the_sweep(tmp_path):
    proc = run_cli(["-m", "repro.train", "-m", "optim.lr=fast,0.001", "optim.max_steps=3"], tmp_path)
    assert proc.returncode == 1
    assert "optim.lr: expected float, got 'fast'" in proc.stderr
    assert "1 sweep point(s) failed: optim.lr=fast optim.max_steps=3" in proc.stderr
    assert (tmp_path / "runs" / "tiny" / "optim.lr=0.001,optim.max_steps=3" / "seed=0" / "final.json").is_file()


def test_training_a_local_checkpoint_folder_goes_through_the_hub_loading_path(default_run, tmp_path):
    """`model=llama31_8b model.path=FOLDER`: the code that loads the real backbone, on an offline folder."""
    folder = default_run["run_dir"] / "model"
    proc = run_cli(["-m", "repro.train", "model=llama31_8b", f"model.path='{folder}'", "optim.max_steps=3"],
                   tmp_path)  # the preset's dtype: bfloat16
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (run_dir,) = (tmp_path / "runs" / "tiny").glob("*/seed=0")
    assert json.loads((run_dir / "train.json").read_text())["steps"] == 3
    assert json.loads((run_dir / "final.json").read_text())["run"]["model"] == "llama31_8b"
    from safetensors import safe_open

    with safe_open(run_dir / "model" / "model.safetensors", "pt") as f:  # saved in the compute dtype
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.bfloat16"}


def test_table3_sweep_preset_runs_all_eight_losses(tmp_path):
    from repro.losses import LOSSES

    proc = run_cli(["-m", "repro.train", "-m", "sweep=table3_losses", "optim.max_steps=2"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    done = {config_mod.load(p.parent / "config.yaml").loss.name
            for p in (tmp_path / "runs" / "tiny").glob("*/seed=0/final.json")}
    assert done == set(LOSSES)


@pytest.mark.parametrize("launcher", [[], ["launcher=accelerate", "launcher.cpu=true"]], ids=["local", "ddp2"])
def test_a_killed_run_resumes_from_its_checkpoint_to_the_same_numbers(tmp_path, launcher):
    """Killed right after step 17 (checkpoints every 7, logs every 5), the same command resumes at 14 and
    ends bit-identical to an uninterrupted one-process run: same scores, same logged training curve. With
    two DDP workers the killed-and-resumed run must still equal the one-process run."""
    common = ["optim.max_steps=30", "optim.save_every=7", "optim.log_every=5"]
    args = ["-m", "repro.train", *common]
    whole = run_cli([*args, "runs_root=whole"], tmp_path)
    assert whole.returncode == 0, whole.stderr[-2000:]
    killed = run_cli([*args, *launcher, "runs_root=killed"], tmp_path, env={"REPRO_CRASH_AT_STEP": "17"})
    assert killed.returncode != 0
    name = ",".join(sorted([*common, *launcher]))
    run_dir = tmp_path / "killed" / "tiny" / name / "seed=0"
    assert not (run_dir / "final.json").exists()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step_14"]  # older ones pruned
    with (run_dir / "metrics.jsonl").open("a") as f:
        f.write('{"step": 18, "split": "tr')  # a line cut off by the kill
    if not launcher:
        # a checkpoint made under another config is never silently thrown away
        saved = (run_dir / "config.yaml").read_text()
        (run_dir / "config.yaml").write_text(saved.replace("weights: current", "weights: legacy"))
        refused = run_cli([*args, "runs_root=killed"], tmp_path)
        assert refused.returncode == 2 and "checkpoints of an unfinished run with a different config" in refused.stderr
        assert (run_dir / "checkpoints" / "step_14").is_dir()
        (run_dir / "config.yaml").write_text(saved)
    resumed = run_cli([*args, *launcher, "runs_root=killed"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming unfinished run" in resumed.stdout
    assert not (run_dir / "checkpoints").exists()  # removed once the final model is saved

    def results(d):
        scores = pd.read_parquet(d / "eval" / "per_example.parquet")
        lines = [json.loads(line) for line in (d / "metrics.jsonl").read_text().splitlines()]
        curve = [(m["step"], m["metric"], m["value"]) for m in lines if m["metric"] in ("loss", "accuracy", "lr")]
        return scores, curve

    (a, curve_a) = results(tmp_path / "whole" / "tiny" / ",".join(sorted(common)) / "seed=0")
    (b, curve_b) = results(run_dir)
    assert a["score_chosen"].equals(b["score_chosen"]) and a["score_rejected"].equals(b["score_rejected"])
    assert [c[:2] for c in curve_a] == [c[:2] for c in curve_b]
    # logged averages are summed over ranks in another order with DDP: equal to float rounding
    assert all(abs(x[2] - y[2]) < 1e-5 for x, y in zip(curve_a, curve_b))
    assert json.loads((run_dir / "train.json").read_text())["steps"] == 30


def test_results_notebook_runs_headless_on_the_collected_runs(default_run, tmp_path):
    """analysis/results.ipynb: collected table, CI figure, measured-vs-reported table (labelled)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "analysis" / "results.ipynb", as_version=4)
    (params,) = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    params.source = f"RUNS_ROOT = {str(default_run['cwd'] / 'runs')!r}\nOUT = {str(tmp_path / 'figs')!r}"
    NotebookClient(nb, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT / "analysis")}}).execute()
    figs = tmp_path / "figs"
    assert (figs / "runs_scores.png").stat().st_size > 0
    summary = pd.read_csv(figs / "runs_summary.csv")
    final = json.loads((default_run["run_dir"] / "final.json").read_text())
    assert summary.loc[0, "Score"] == pytest.approx(100 * final["Score"], abs=0.01)
    comparison = (figs / "rewardbench_measured_vs_reported.md").read_text()
    assert "| reported (paper Table 2) | Skywork-Reward-Gemma-2-27B | allenai/reward-bench |" in comparison
    assert "| measured | tiny/default/seed=0 | fixture:reward-bench |" in comparison


def test_evaluating_a_model_that_cannot_be_loaded_is_one_clear_line(tmp_path):
    for model, needle in (("/nonexistent/model", "model folder not found"),
                          ("some-org/not-cached-model", "cannot load the model or tokenizer")):
        proc = run_cli(["-m", "repro.evaluate", "--model", model, "--out", str(tmp_path / "o")], tmp_path)
        assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
        assert model in proc.stderr and needle in proc.stderr
