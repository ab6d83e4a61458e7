"""RewardBench evaluation: `python -m repro.evaluate`.

    python -m repro.evaluate --from-subsets results.json [--weights legacy]
        sections and Score from a per-subset accuracy file in the official run_rm.py format (JSON out)
    python -m repro.evaluate --run-dir runs/tiny/default/seed=0 [--weights legacy]
        score a trained run's model on RewardBench and write eval/ + final.json into the run dir
    python -m repro.evaluate --model Skywork/Skywork-Reward-Llama-3.1-8B --out DIR
        score any Hugging Face sequence-classification reward model (Hub id or local folder)
    python -m repro.evaluate --compare RUN_A RUN_B
        paired comparison on the same rows: A - B per section and Score, 95% paired-bootstrap interval,
        sign-flip permutation p-value (JSON out)

Scoring follows the official script: each conversation is [user: prompt, assistant: response] rendered
with the model's chat template (no doubled BOS), truncated from the left, scored by the raw logit;
correct = score_chosen > score_rejected (strict).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from repro.eval import rewardbench as rb


def score_rows(model, tokenizer, rows: list[dict], *, batch_size: int = 16, max_length: int = 4096,
               desc: str = "rewardbench"):
    """Per-example DataFrame: id, subset, score_chosen, score_rejected, correct."""
    import pandas as pd
    import torch
    from tqdm.auto import tqdm

    from repro.data.batching import PairCollator
    from repro.data.tokenize import encode_pair
    from repro.engine import forward_rewards

    collate = PairCollator(tokenizer.pad_token_id)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    with torch.inference_mode():
        for start in tqdm(range(0, len(rows), batch_size), desc=desc, unit="batch"):
            chunk = rows[start : start + batch_size]
            batch = []
            for r in chunk:
                c, j = encode_pair(tokenizer, r["prompt"], r["chosen"], r["rejected"])
                # left truncation, as the official evaluation (tokenizer truncation_side="left")
                batch.append({"chosen_ids": c[-max_length:], "rejected_ids": j[-max_length:]})
            tensors = {k: v.to(device) for k, v in collate(batch).items()}
            r_c, r_r = forward_rewards(model, tensors)
            for r, sc, sr in zip(chunk, r_c.tolist(), r_r.tolist()):
                out.append({"id": r["id"], "subset": r["subset"], "score_chosen": sc, "score_rejected": sr,
                            "correct": rb.is_correct(sc, sr)})
    model.train(was_training)
    return pd.DataFrame(out, columns=["id", "subset", "score_chosen", "score_rejected", "correct"])


def to_best_device(model, cpu: bool = False):
    """The first GPU when there is one (and `cpu` is not forced), else the CPU."""
    import torch

    return model.to("cuda") if torch.cuda.is_available() and not cpu else model


def summarize(per_example, *, weights: str = "current", n_boot: int = 2000) -> dict:
    """Subset accuracies/counts, sections, Score and their 95% stratified-bootstrap intervals."""
    from repro.eval.stats import bootstrap_ci

    acc = rb.subset_accuracies(per_example["subset"], per_example["correct"])
    counts = per_example.groupby("subset").size().to_dict()
    scores = rb.score(acc, weights=weights)
    ci = bootstrap_ci(per_example["subset"], per_example["correct"], weights=weights, n_boot=n_boot)
    return {"subsets": {s: {"accuracy": acc[s], "n": int(counts[s])} for s in acc},
            "sections": {k: v for k, v in scores.items() if k != "Score"}, "Score": scores["Score"],
            "ci95": {k: [v["low"], v["high"]] for k, v in ci.items()},
            "weights": weights}


def write_eval(out_dir: str | Path, per_example, summary: dict, *, model_name: str) -> None:
    from repro.results import atomic_write_json, atomic_write_parquet

    out_dir = Path(out_dir)
    atomic_write_parquet(out_dir / "per_example.parquet", per_example)
    atomic_write_json(out_dir / "subsets.json", summary["subsets"])
    acc = {s: v["accuracy"] for s, v in summary["subsets"].items()}
    atomic_write_json(out_dir / "run_rm.json", rb.to_run_rm_json(acc, model=model_name))


def format_table(summary: dict, title: str = "") -> str:
    lines = [title] if title else []
    ci = summary.get("ci95") or {}
    lines.append(f"{'section':<12}{'accuracy':>10}  {'95% CI' if ci else ''}")
    for k, v in [*summary["sections"].items(), ("Score", summary["Score"])]:
        interval = f"  [{100 * ci[k][0]:.2f}, {100 * ci[k][1]:.2f}]" if k in ci else ""
        lines.append(f"{k:<12}{100 * v:>10.2f}{interval}")
    lines.append(f"(percentages; RewardBench weights: {summary['weights']}"
                 + ("; 95% stratified bootstrap over examples)" if ci else ")"))
    return "\n".join(lines)


def compare_runs(run_a: str | Path, run_b: str | Path, *, weights: str | None = None) -> dict:
    """Paired comparison of two evaluated run dirs (or eval folders) on the same RewardBench rows.

    Weighting: `weights` if given, else the one both runs' final.json used (refused if they differ).
    """
    import pandas as pd

    from repro.eval.stats import paired_test

    def per_example(path) -> "pd.DataFrame":
        path = Path(path)
        f = path / "eval" / "per_example.parquet" if (path / "eval").is_dir() else path / "per_example.parquet"
        if not f.is_file():
            raise FileNotFoundError(f"{path}: no per_example.parquet (is it an evaluated run dir?)")
        return pd.read_parquet(f)

    if weights is None:
        used = {json.loads((Path(r) / "final.json").read_text())["weights"] if (Path(r) / "final.json").is_file()
                else "current" for r in (run_a, run_b)}
        if len(used) > 1:
            raise ValueError(f"{run_a} and {run_b} were scored with different weightings {sorted(used)}; "
                             "pass --weights to compare both under one")
        (weights,) = used
    a, b = per_example(run_a), per_example(run_b)
    merged = a.merge(b, on=["id", "subset"], suffixes=("_a", "_b"), validate="one_to_one")
    if len(merged) != len(a) or len(merged) != len(b):
        raise ValueError(f"{run_a} and {run_b} were evaluated on different rows "
                         f"({len(a)} and {len(b)} rows, {len(merged)} shared)")
    return {"a": str(run_a), "b": str(run_b), "weights": weights, "examples": len(merged),
            "a_minus_b": paired_test(merged["subset"], merged["correct_a"], merged["correct_b"], weights=weights)}


def _from_subsets(path: str, weights: str) -> dict:
    acc = rb.read_run_rm_json(path)
    return {k: round(v, 6) for k, v in rb.score(acc, weights=weights, where=path).items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m repro.evaluate", description="RewardBench scoring")
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--from-subsets", metavar="FILE.json", help="per-subset accuracies (run_rm.py format)")
    what.add_argument("--run-dir", help="a run dir of this package: score its model, write eval/ and final.json")
    what.add_argument("--model", help="Hub id or folder of any sequence-classification reward model")
    what.add_argument("--compare", nargs=2, metavar=("RUN_A", "RUN_B"),
                      help="paired comparison of two evaluated runs: A - B, bootstrap CI, permutation p-value")
    ap.add_argument("--weights", default=None, choices=sorted(rb.WEIGHTS),
                    help="current or legacy (swapped xstest weights, as in the paper); default: current, "
                         "or the run's own eval.weights with --run-dir")
    ap.add_argument("--data", default="allenai/reward-bench", help="RewardBench dataset: Hub id, folder or fixture:reward-bench")
    ap.add_argument("--out", help="output folder for --model")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--dtype", default="float32", help="float32 (CPU) or bfloat16 (GPU, as the leaderboard)")
    ap.add_argument("--attn", default=None, help="attention implementation; Gemma-2 needs eager or flash_attention_2")
    ap.add_argument("--trust-remote-code", action="store_true", help="off unless asked for")
    args = ap.parse_args(argv)
    try:
        if args.from_subsets:
            print(json.dumps(_from_subsets(args.from_subsets, args.weights or "current"), indent=2))
            return 0
        if args.compare:
            print(json.dumps(compare_runs(*args.compare, weights=args.weights), indent=2))
            return 0
        if args.run_dir:
            from repro.pipeline import evaluate_run

            final = evaluate_run(args.run_dir, weights=args.weights)
            print(format_table(final, title=f"RewardBench: {args.run_dir}"))
            return 0
        from repro.data.sources import rewardbench as rb_source
        from repro.model import load_pretrained

        if not args.out:
            ap.error("--model needs --out")
        model, tok = load_pretrained(args.model, dtype=args.dtype, attn_implementation=args.attn,
                                     trust_remote_code=args.trust_remote_code)
        model = to_best_device(model)
        per_example = score_rows(model, tok, rb_source.load(args.data), batch_size=args.batch_size)
        summary = summarize(per_example, weights=args.weights or "current")
        write_eval(args.out, per_example, summary, model_name=args.model)
        print(format_table(summary, title=f"RewardBench: {args.model}"))
        return 0
    except (rb.RewardBenchError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
