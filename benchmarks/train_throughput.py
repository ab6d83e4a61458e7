"""Training throughput on CPU: repro's engine vs TRL's RewardTrainer, same model, data and batch.

    python benchmarks/train_throughput.py [--steps 300] [--repeats 3] [--out benchmarks/results/train_throughput_cpu.json]
    python benchmarks/train_throughput.py --data table1 [--pairs 2000] [--steps 30] [--repeats 3]
                                          [--out benchmarks/results/train_throughput_table1_cpu.json]

All train the same tiny Llama reward model (same init, tokenizer and pairs) with the Bradley-Terry loss,
AdamW (lr 1e-3, wd 1e-3), cosine schedule, global batch 16 = 8 per device x 2 accumulation, fp32, one
process: repro's engine with its padded micro-batches (`repro`), the same with `optim.padding_free=true`
(`repro.padding_free`; sdpa attention, so its packed row gets an N x N mask) and TRL's `RewardTrainer`.
Each runs in its own fresh process, alternating, `--repeats` times. Reported: wall-clock of the training
loop only (tokenisation and model construction excluded), pairs/s and the process's peak RSS.

`--data fixture` (default): the curated fixture pairs (short texts); the RewardBench-fixture accuracy of
each result is reported too, so speed is compared at equal quality. `--data table1`: `--pairs` synthetic
pairs with Table 1's length mix (`padding_efficiency.table1_lengths`: per-source pair counts, prompt and
response lengths, HelpSteer2's multi-turn prompts), written as random two-letter words that the tiny
tokenizer (trained on them) encodes as one token each; the measured token lengths are recorded. Both trainers
drop pairs over `--max-length` (4,096; the model has 4,096 positions). Random words carry no preference to
learn, so no accuracy is reported there. Needs `pip install trl` (not a package dependency).
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


def run_repro(tok, pairs, steps: int, seed: int, max_length: int, padding_free: bool = False):
    from accelerate import Accelerator

    examples, _ = tokenize_pairs(tok, pairs, max_length)
    model = build_tiny_backbone(tok, seed=seed, max_position_embeddings=max(512, max_length))
    optim = OptimConfig(lr=1e-3, global_batch_size=16, per_device_batch_size=8, epochs=100, max_steps=steps,
                        log_every=50, padding_free=padding_free)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        out = train(Accelerator(cpu=True), model, tok, examples, optim, LossConfig(), seed=seed,
                    metrics=MetricsLog(Path(d) / "m.jsonl"))
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "steps": out["steps"], "pairs_per_second": out["steps"] * 16 / seconds}, out["model"]


def run_trl(tok, pairs, steps: int, seed: int, max_length: int) -> tuple[dict, torch.nn.Module]:
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer

    rows = [{"chosen": p["prompt"] + [{"role": "assistant", "content": p["chosen"]}],
             "rejected": p["prompt"] + [{"role": "assistant", "content": p["rejected"]}]} for p in pairs]
    model = build_tiny_backbone(tok, seed=seed, max_position_embeddings=max(512, max_length))
    with tempfile.TemporaryDirectory() as d:
        args = RewardConfig(output_dir=d, per_device_train_batch_size=8, gradient_accumulation_steps=2,
                            learning_rate=1e-3, weight_decay=1e-3, lr_scheduler_type="cosine", warmup_steps=int(0.03 * steps),
                            max_steps=steps, max_length=max_length, logging_steps=50, save_strategy="no", report_to=[],
                            use_cpu=True, seed=seed, disable_tqdm=True, dataloader_num_workers=0, bf16=False)
        trainer = RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
    return {"seconds": seconds, "steps": steps, "pairs_per_second": steps * 16 / seconds}, model


TRAINERS = {"repro": run_repro, "repro.padding_free": lambda *a: run_repro(*a, padding_free=True),
            "trl.RewardTrainer": run_trl}


def table1_pairs(n: int, seed: int = 0) -> list[dict]:
    """`n` pairs of random words with Table 1's length mix (target lengths in tokens, template included)."""
    import numpy as np
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from padding_efficiency import TEMPLATE_BOS, TEMPLATE_PER_MESSAGE, table1_lengths

    chosen, rejected, base, messages, _ = table1_lengths(n, seed=seed, shared=True)
    rng = np.random.default_rng(seed + 1)
    # 100 two-letter words (consonant + vowel): few enough that the tiny BPE learns each as one token
    words = np.array([c + v for c in "bcdfghjklmnpqrstvwxz" for v in "aeiou"])
    text = lambda k: " ".join(words[rng.integers(0, len(words), max(int(k), 1))])  # noqa: E731
    pairs = []
    for i in range(len(chosen)):
        m = int(messages[i])
        prompt_tokens = base[i] - TEMPLATE_BOS - TEMPLATE_PER_MESSAGE * (m + 1)
        per = [prompt_tokens // m + (j < prompt_tokens % m) for j in range(m)]
        prompt = [{"role": "user" if j % 2 == 0 else "assistant", "content": text(k)} for j, k in enumerate(per)]
        pairs.append({"id": f"t{i}", "prompt": prompt, "chosen": text(chosen[i] - base[i]),
                      "rejected": text(rejected[i] - base[i])})
    return pairs


def one(name: str, steps: int, seed: int, data: str, n_pairs: int, max_length: int) -> dict:
    if data == "fixture":
        table, _, _ = build(DataConfig(duplicates="keep"))  # the 1,180 pairs the recorded results used
        pairs = table.to_pylist()
    else:
        pairs = table1_pairs(n_pairs)
    tok = build_tiny_tokenizer(training_texts(pairs), vocab_size=1024)
    stats, model = TRAINERS[name](tok, pairs, steps, seed, max_length)
    if data == "fixture":
        rows = rewardbench.load("fixture:reward-bench", allow_partial=True)
        stats["rewardbench_fixture_accuracy"] = float(score_rows(model, tok, rows)["correct"].mean())
    else:
        kept, drops = tokenize_pairs(tok, pairs, max_length)
        lens = [len(k[c]) for k in kept for c in ("chosen_ids", "rejected_ids")]
        stats["tokens"] = {"pairs_kept": len(kept), "dropped": dict(drops), "mean_per_conversation":
                           sum(lens) / len(lens), "max_per_conversation": max(lens)}
    stats["peak_rss_mib"] = peak_rss_mib()
    return stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", choices=("fixture", "table1"), default="fixture")
    ap.add_argument("--pairs", type=int, default=2000, help="--data table1: synthetic pairs")
    ap.add_argument("--max-length", type=int, default=None, help="512 (fixture) or 4096 (table1)")
    ap.add_argument("--only", choices=sorted(TRAINERS), help=argparse.SUPPRESS)  # one run, JSON on the last line
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    max_length = args.max_length or (512 if args.data == "fixture" else 4096)
    if args.only:
        print(json.dumps(one(args.only, args.steps, args.seed, args.data, args.pairs, max_length)))
        return
    out = args.out or Path(__file__).parent / "results" / (
        "train_throughput_cpu.json" if args.data == "fixture" else "train_throughput_table1_cpu.json")
    import statistics
    import subprocess
    import sys

    runs = {name: [] for name in TRAINERS}
    for _ in range(args.repeats):
        for name in TRAINERS:
            proc = subprocess.run([sys.executable, __file__, "--only", name, "--steps", str(args.steps),
                                   "--seed", str(args.seed), "--data", args.data, "--pairs", str(args.pairs),
                                   "--max-length", str(max_length)], capture_output=True, text=True)
            if proc.returncode:
                raise SystemExit(f"{name} failed:\n{proc.stderr[-3000:]}")
            runs[name].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(name, runs[name][-1], flush=True)
    results = {name: {"median_pairs_per_second": statistics.median(r["pairs_per_second"] for r in rs),
                      "median_seconds": statistics.median(r["seconds"] for r in rs),
                      **({"rewardbench_fixture_accuracy": [r["rewardbench_fixture_accuracy"] for r in rs]}
                         if args.data == "fixture" else {"tokens": rs[0]["tokens"]}),
                      "peak_rss_mib": max(r["peak_rss_mib"] for r in rs), "runs": rs}
               for name, rs in runs.items()}
    import trl

    data = ("fixture 80K copy (1,180 pairs)" if args.data == "fixture" else
            f"{args.pairs} synthetic pairs with Table 1's length mix, max length {max_length}")
    record = {"command": "python benchmarks/train_throughput.py " + " ".join(sys.argv[1:]),
              "setup": f"tiny Llama RM (hidden 64, 2 layers, sdpa), {data}, global batch 16 = 8 x 2 accumulation, "
                       "fp32, 1 process, CPU",
              "trl_version": trl.__version__, "env": env_info(), "results": results}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print("wrote", out)


if __name__ == "__main__":
    main()
