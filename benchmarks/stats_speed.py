"""Speed of `compare_family` (8 arms vs a base) against the naive way: one `paired_test` per arm.

    python benchmarks/stats_speed.py [--arms 8] [--n-boot 10000] [--n-perm 10000] [--runs 5]
                                     [--naive-runs 5] [--out benchmarks/results/stats_speed.json]

Data (synthetic, deterministic, seed 0): RewardBench's 2,985 rows with the real subset sizes. The base's
per-example correctness is drawn at per-subset accuracies close to Skywork-Reward-Gemma-2-27B's published
ones (Chat 0.958, Chat Hard 0.915, Safety 0.919, math-prm 0.949, hep-* 0.975). Each arm disagrees with the
base on a fraction d of rows (discordance 3-8%, like loss ablations of one backbone) with a net
accuracy shift delta of -2 to +1 points: per subset, a base-right row turns wrong with probability
((d - delta)/2) / acc and a base-wrong row turns right with probability min(1, ((d + delta)/2) / (1 - acc)).

Methods, in one process, each timed `--runs` times (median reported; scipy.stats is imported before timing):
  family  `compare_family(subsets, base, arms, n_boot, n_perm, seed=0)`: per arm the paired bootstrap
          interval and sign-flip p-value for the four sections and the Score, exact McNemar per subset,
          Holm across the arms (shared resamples, vectorised)
  naive   a Python loop over arms of `paired_test(subsets, arm, base, n_boot, n_perm, seed=0)` plus
          `scipy.stats.binomtest` per subset and arm, and Holm: the same numbers, one arm at a time
The driver checks that both give the same differences and p-values and intervals within 1e-12.
`scipy.stats.bootstrap` is not a fair naive baseline here: it has no stratified resampling (the benchmark's
subset sizes are fixed by design) and would resample each of the five keys separately.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from repro.eval import rewardbench as rb  # noqa: E402
from repro.eval.stats import KEYS, compare_family, holm, paired_test  # noqa: E402

BASE_ACC = {"Chat": 0.958, "Chat Hard": 0.915, "Safety": 0.919, "math-prm": 0.949, "hep": 0.975}


def synthetic(n_arms: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    subsets = np.repeat(list(rb.SUBSETS), [rb.SUBSET_COUNTS[s] for s in rb.SUBSETS])
    acc = np.array([BASE_ACC["math-prm"] if s == "math-prm" else BASE_ACC["hep"] if s.startswith("hep-")
                    else BASE_ACC[rb.SECTION_OF[s]] for s in subsets])
    base = rng.random(len(subsets)) < acc
    arms, design = {}, {}
    for j in range(n_arms):
        d, delta = rng.uniform(0.03, 0.08), rng.uniform(-0.02, 0.01)
        to_wrong = ((d - delta) / 2) / acc
        to_right = np.minimum(1.0, ((d + delta) / 2) / (1 - acc))
        u = rng.random(len(subsets))
        arm = np.where(base, u >= to_wrong, u < to_right)
        arms[f"arm{j}"] = arm
        design[f"arm{j}"] = {"target_discordance": round(d, 4), "target_shift": round(delta, 4),
                             "accuracy": float(arm.mean()), "discordance": float((arm != base).mean())}
    return subsets, base, arms, design


def naive(subsets, base, arms, n_boot, n_perm):
    from scipy.stats import binomtest

    out = {}
    for name, arm in arms.items():
        paired = paired_test(subsets, arm, base, n_boot=n_boot, n_perm=n_perm, seed=0)
        mc = {}
        for s in (*rb.SUBSETS, "all"):
            mask = np.ones(len(subsets), bool) if s == "all" else subsets == s
            ka, kb = int((arm & ~base)[mask].sum()), int((~arm & base)[mask].sum())
            mc[s] = 1.0 if ka + kb == 0 else binomtest(ka, ka + kb, 0.5).pvalue
        out[name] = {"paired": paired, "mcnemar": mc}
    for k in KEYS:
        adj = holm({n: out[n]["paired"][k]["p_value"] for n in arms})
        for n in arms:
            out[n]["paired"][k]["p_holm"] = adj[n]
    return out


def timed(fn, runs):
    times, result = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return result, times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arms", type=int, default=8)
    ap.add_argument("--n-boot", type=int, default=10_000)
    ap.add_argument("--n-perm", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--naive-runs", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/stats_speed.json")
    args = ap.parse_args()

    import scipy
    import scipy.stats  # noqa: F401 - imports are not timed

    subsets, base, arms, design = synthetic(args.arms)
    fam, fam_t = timed(lambda: compare_family(subsets, base, arms, n_boot=args.n_boot, n_perm=args.n_perm,
                                              seed=0), args.runs)
    print("family  ", [round(t, 3) for t in fam_t], flush=True)
    ref, naive_t = timed(lambda: naive(subsets, base, arms, args.n_boot, args.n_perm), args.naive_runs)
    print("naive   ", [round(t, 3) for t in naive_t], flush=True)

    worst = 0.0
    for name in arms:
        for k in KEYS:
            got, want = fam["arms"][name]["paired"][k], ref[name]["paired"][k]
            if (got["difference"], got["p_value"], got["p_holm"]) != (want["difference"], want["p_value"],
                                                                       want["p_holm"]):
                raise SystemExit(f"family and naive differ for {name} {k}: {got} vs {want}")
            worst = max(worst, abs(got["low"] - want["low"]), abs(got["high"] - want["high"]))
        for s, p in ref[name]["mcnemar"].items():
            if abs(fam["arms"][name]["mcnemar"][s]["p_value"] - p) > 1e-12 * max(p, 1e-300):
                raise SystemExit(f"McNemar p differs for {name} {s}")
    if worst > 1e-12:
        raise SystemExit(f"interval bounds differ by {worst}")

    os.environ.setdefault("GIT_OPTIONAL_LOCKS", "0")  # env_info's `git status` must not take the index lock
    from repro.results import env_info

    default = {a.dest: a.default for a in ap._actions if a.dest not in ("help", "out")}
    extra = " ".join(f"--{k.replace('_', '-')} {getattr(args, k)}" for k in default if getattr(args, k) != default[k])
    med_f, med_n = statistics.median(fam_t), statistics.median(naive_t)
    record = {
        "command": "python benchmarks/stats_speed.py" + (f" {extra}" if extra else ""),
        "setup": {"examples": int(len(subsets)), "subset_sizes": "RewardBench filtered (real)", "arms": args.arms,
                  "n_boot": args.n_boot, "n_perm": args.n_perm, "base_accuracy": float(base.mean()),
                  "arms_design": design},
        "results": {
            "family": {"seconds_median": med_f, "seconds": fam_t},
            "naive_paired_test_loop": {"seconds_median": med_n, "seconds": naive_t},
            "speedup": med_n / med_f,
            "same_numbers": {"differences_and_p_values": "identical", "max_interval_bound_difference": worst},
            "score_results": {n: {k: fam["arms"][n]["paired"]["Score"][k] for k in ("difference", "low", "high",
                                                                                   "p_value", "p_holm")}
                              for n in arms},
        },
        "numpy_version": np.__version__, "scipy_version": scipy.__version__, "env": env_info(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"family {med_f:.3f} s, naive {med_n:.3f} s, speedup {med_n / med_f:.1f}x; wrote {args.out}")


if __name__ == "__main__":
    main()
