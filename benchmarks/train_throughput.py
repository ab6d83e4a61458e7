"""Training throughput on CPU: repro's engine vs TRL's RewardTrainer, same model, data and batch.

    python benchmarks/train_throughput.py [--steps 300] [--repeats 3] [--out benchmarks/results/train_throughput_cpu.json]

Both train the same tiny Llama reward model (same init, tokenizer and curated fixture pairs) with the
Bradley-Terry loss, AdamW (lr 1e-3, wd 1e-3), cosine schedule, global batch 16 = 8 per device x 2
accumulation, fp32, one process. Each trainer runs in its own fresh process, alternating, `--repeats`
times. Reported: wall-clock of the training loop only (tokenisation and model construction excluded),
pairs/s, the process's peak RSS, and the RewardBench-fixture accuracy of each result, so speed is
compared at equal quality. Needs `pip install trl` (not a package dependency).
"""
from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch

from repro.config import DataConfig, LossConfig, OptimConfig
from repro.data.mixture import build
from repro.data.sources import rewardbench
from repro.data.tokenize import tokenize_pairs
from repro.engine import train
from repro.evaluate import score_rows
from repro.fit import training_texts
from repro.model import build_tiny_backbone, build_tiny_tokenizer
from repro.results import MetricsLog, env_info


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_repro(tok, pairs, steps: int, seed: int) -> tuple[dict, torch.nn.Module]:
    from accelerate import Accelerator

    examples, _ = tokenize_pairs(tok, pairs, 512)
    model = build_tiny_backbone(tok, seed=seed)
    optim = OptimConfig(lr=1e-3, global_batch_size=16, per_device_batch_size=8, epochs=100, max_steps=steps,
                        log_every=50)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        out = train(Accelerator(cpu=True), model, tok, examples, optim, LossConfig(), seed=seed,
                    metrics=MetricsLog(Path(d) / "m.jsonl"))
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "steps": out["steps"], "pairs_per_second": out["steps"] * 16 / seconds}, out["model"]


def run_trl(tok, pairs, steps: int, seed: int) -> tuple[dict, torch.nn.Module]:
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    rows = [{"chosen": p["prompt"] + [{"role": "assistant", "content": p["chosen"]}],
             "rejected": p["prompt"] + [{"role": "assistant", "content": p["rejected"]}]} for p in pairs]
    model = build_tiny_backbone(tok, seed=seed)
    with tempfile.TemporaryDirectory() as d:
        args = RewardConfig(output_dir=d, per_device_train_batch_size=8, gradient_accumulation_steps=2,
                            learning_rate=1e-3, weight_decay=1e-3, lr_scheduler_type="cosine", warmup_steps=int(0.03 * steps),
                            max_steps=steps, max_length=512, logging_steps=50, save_strategy="no", report_to=[],
                            use_cpu=True, seed=seed, disable_tqdm=True, dataloader_num_workers=0, bf16=False)
        trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "steps": steps, "pairs_per_second": steps * 16 / seconds}, model


TRAINERS = {"repro": run_repro, "trl.RewardTrainer": run_trl}


def one(name: str, steps: int, seed: int) -> dict:
    table, _, _ = build(DataConfig(duplicates="keep"))  # the 1,180 pairs the recorded results used
    pairs = table.to_pylist()
    tok = build_tiny_tokenizer(training_texts(pairs), vocab_size=1024)
    stats, model = TRAINERS[name](tok, pairs, steps, seed)
    rows = rewardbench.load("fixture:reward-bench", allow_partial=True)
    stats["rewardbench_fixture_accuracy"] = float(score_rows(model, tok, rows)["correct"].mean())
    stats["peak_rss_mib"] = peak_rss_mib()
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=sorted(TRAINERS), help=argparse.SUPPRESS)  # one run, JSON on the last line
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "train_throughput_cpu.json")
    args = ap.parse_args()
    if args.only:
        print(json.dumps(one(args.only, args.steps, args.seed)))
        return
    import statistics
    import subprocess
    import sys

    runs = {name: [] for name in TRAINERS}
    for _ in range(args.repeats):
        for name in TRAINERS:
            proc = subprocess.run([sys.executable, __file__, "--only", name, "--steps", str(args.steps),
                                   "--seed", str(args.seed)], capture_output=True, text=True, check=True)
            runs[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(name, runs[name][-1], flush=True)
    results = {name: {"median_pairs_per_second": statistics.median(r["pairs_per_second"] for r in rs),
                      "median_seconds": statistics.median(r["seconds"] for r in rs),
                      "rewardbench_fixture_accuracy": [r["rewardbench_fixture_accuracy"] for r in rs],
                      "peak_rss_mib": max(r["peak_rss_mib"] for r in rs), "runs": rs}
               for name, rs in runs.items()}
    import trl

    record = {"command": f"python benchmarks/train_throughput.py --steps {args.steps} --repeats {args.repeats}",
              "setup": "tiny Llama RM (hidden 64, 2 layers), fixture 80K copy (1,180 pairs), global batch 16 "
                       "= 8 x 2 accumulation, fp32, 1 process, CPU",
              "trl_version": trl.__version__, "env": env_info(), "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
