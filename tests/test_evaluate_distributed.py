"""`repro.evaluate --model` on several processes (`torchrun` / `accelerate launch`): each scores a share of
the rows and rank 0 writes the same results one process writes."""
import json

import pandas as pd
import pytest

from repro.data.sources import rewardbench
from repro.launch import free_port
from repro.model import build_tiny_backbone, build_tiny_tokenizer, save

from conftest import run_cli


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny random reward model with its tokenizer, saved like any Hub checkpoint folder."""
    rows = rewardbench.load("fixture:reward-bench", allow_partial=True)
    texts = [r["prompt"][0]["content"] for r in rows] + [r["chosen"] for r in rows] + [r["rejected"] for r in rows]
    tok = build_tiny_tokenizer(texts, vocab_size=512)
    return save(build_tiny_backbone(tok, seed=3), tok, tmp_path_factory.mktemp("tiny_rm"))


def test_two_processes_score_like_one(model_dir, tmp_path):
    common = ["--model", str(model_dir), "--data", "fixture:reward-bench", "--allow-partial", "--batch-size", "4"]
    one = run_cli(["-m", "repro.evaluate", *common, "--out", str(tmp_path / "one")], tmp_path,
                  env={"OMP_NUM_THREADS": "1"})
    assert one.returncode == 0, one.stderr[-2000:]
    two = run_cli(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
                   "-m", "repro.evaluate", *common, "--out", str(tmp_path / "two")], tmp_path,
                  env={"OMP_NUM_THREADS": "1"})
    assert two.returncode == 0, two.stdout[-2000:] + two.stderr[-2000:]
    a = pd.read_parquet(tmp_path / "one" / "per_example.parquet")
    b = pd.read_parquet(tmp_path / "two" / "per_example.parquet")
    # the same rows in the same (dataset) order; each row scored once, by one of the two processes
    assert a["id"].tolist() == b["id"].tolist() and a["subset"].tolist() == b["subset"].tolist()
    # other batch companions change a score by float rounding at most
    assert (a["score_chosen"] - b["score_chosen"]).abs().max() < 1e-5
    assert (a["score_rejected"] - b["score_rejected"]).abs().max() < 1e-5
    assert a["correct"].tolist() == b["correct"].tolist()
    assert a["score_chosen"].nunique() > len(a) // 2  # a real model's scores, not a constant
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["rows_per_process"] == [96, 96] and summary["examples"] == len(a) == 192
    assert json.loads((tmp_path / "one" / "summary.json").read_text())["Score"] == pytest.approx(summary["Score"])
    assert two.stdout.count("RewardBench:") == 1 and "(2 processes)" in two.stdout  # rank 0 alone reports
