"""RewardBench scoring: length-sorted batches vs dataset-order batches, same model, rows and batch size.

    python benchmarks/eval_ordering.py [--rows 2985] [--batch-size 16] [--repeats 3]
                                       [--out benchmarks/results/eval_ordering.json]

Model: the tiny offline Llama reward model (hidden 64, 2 layers, fp32, CPU) with a byte-level BPE built
on the fixture texts. Rows: `--rows` synthetic RewardBench-shaped examples (prompt + chosen + rejected)
whose token lengths follow RewardBench's mix — most short chat turns, a long tail of long answers (math
and code) — drawn as log-normal word counts (median ~120 tokens per conversation, 10% over ~500, capped
at the tiny model's 512 positions by left truncation). Both orderings score the same rows in one process,
alternating, `--repeats` times; reported: wall-clock of `repro.evaluate.score_rows` (encoding included),
the share of padding tokens in the batches, and the largest score difference between the two (float
rounding only). The ordering matters more on a GPU, where padded tokens cost as much as real ones.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from repro.config import RunConfig
from repro.data.sources.skywork80k import load as load_skywork
from repro.data.tokenize import encode_pair
from repro.eval.rewardbench import SUBSETS
from repro.evaluate import score_rows
from repro.fit import build_backbone
from repro.results import env_info

WORDS = ("the", "answer", "is", "a", "model", "reward", "python", "file", "number", "because", "then", "we",
         "compute", "sum", "capital", "color", "sound", "code", "function", "return", "value", "list")


def synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        p, c, r = (int(x) for x in np.clip(rng.lognormal([3.0, 3.6, 3.6], 0.9), 3, 600))
        text = lambda k: " ".join(rng.choice(WORDS, size=k))  # noqa: E731
        rows.append({"id": i, "subset": SUBSETS[i % len(SUBSETS)], "prompt": [{"role": "user", "content": text(p)}],
                     "chosen": text(c), "rejected": text(r)})
    return rows


def padding_share(tok, rows, batch_size: int, sort: bool, max_length: int) -> float:
    lengths = []
    for r in rows:
        c, j = encode_pair(tok, r["prompt"], r["chosen"], r["rejected"])
        lengths.append((min(len(c), max_length), min(len(j), max_length)))
    lengths = np.array(lengths)
    longest = lengths.max(axis=1)
    order = np.argsort(-longest, kind="stable") if sort else np.arange(len(rows))
    real = padded = 0
    for s in range(0, len(rows), batch_size):
        b = lengths[order[s:s + batch_size]]
        real += int(b.sum())
        padded += int(b.max()) * b.size
    return 1 - real / padded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2985)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "eval_ordering.json")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(2)
    pairs = load_skywork("fixture:skywork80k")[0].to_pylist()
    model, tok = build_backbone(RunConfig(), pairs)
    rows = synthetic_rows(args.rows)
    max_length = 512
    times = {"sorted": [], "dataset order": []}
    scores = {}
    for _ in range(args.repeats):
        for name, sort in (("sorted", True), ("dataset order", False)):
            t0 = time.perf_counter()
            scores[name] = score_rows(model, tok, rows, batch_size=args.batch_size, max_length=max_length,
                                      sort_by_length=sort, desc=name)
            times[name].append(time.perf_counter() - t0)
    diff = float(max(np.abs(scores["sorted"][c] - scores["dataset order"][c]).max()
                     for c in ("score_chosen", "score_rejected")))
    result = {
        "command": "python benchmarks/eval_ordering.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"),
        "rows": args.rows, "batch_size": args.batch_size, "max_length": max_length,
        "seconds": times, "median_seconds": {k: float(np.median(v)) for k, v in times.items()},
        "padding_share": {name: padding_share(tok, rows, args.batch_size, sort, max_length)
                          for name, sort in (("sorted", True), ("dataset order", False))},
        "max_score_difference": diff,
        "same_correct": bool((scores["sorted"]["correct"] == scores["dataset order"]["correct"]).all()),
        "env": env_info(world_size=1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("median_seconds", "padding_share", "max_score_difference",
                                              "same_correct")}, indent=2))


if __name__ == "__main__":
    main()
