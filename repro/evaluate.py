"""RewardBench evaluation: `python -m repro.evaluate`.

    python -m repro.evaluate --from-subsets results.json [--weights legacy]
        sections and Score from a per-subset accuracy file in the official run_rm.py format (JSON out)
    python -m repro.evaluate --run-dir runs/tiny/default/seed=0 [--weights legacy]
        score a trained run's model on RewardBench. A run that never got evaluated is completed (eval/ +
        final.json, under its own eval.weights); a finished run's result is never replaced: the new
        scores go to eval/rescore-<weights>/ beside it
    python -m repro.evaluate --model Skywork/Skywork-Reward-Llama-3.1-8B --out DIR
        score any Hugging Face sequence-classification reward model (Hub id or local folder)
    python -m repro.evaluate --compare RUN_A RUN_B
        paired comparison on the same rows: A - B per section and Score, 95% paired-bootstrap interval,
        sign-flip permutation p-value, exact McNemar per subset (JSON out)
    python -m repro.evaluate --compare BASE OTHER [OTHER ...]
        every other arm minus the base, Holm-Bonferroni adjusted across the family (JSON out, table on
        stderr). Each side of a comparison is a run dir, an eval folder, or a per-example parquet / CSV /
        JSONL file from any tool (`subset` and `correct` or `score_chosen`/`score_rejected`; rows matched by
        `id`, else by the prompt/chosen/rejected text, never by position), or a seed group: the folder of
        `seed=<n>/` run dirs that differ only in seed (compared per example on the mean correctness over
        seeds, and on seed means: t intervals, Welch tests Holm-adjusted; always in the family form)

Scoring follows the official script: each conversation is [user: prompt, assistant: response] rendered
with the model's chat template (no doubled BOS), truncated from the left, scored by the raw logit;
correct = score_chosen > score_rejected (strict).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from repro.eval import rewardbench as rb
from repro.results import RunDirBusy


def score_rows(model, tokenizer, rows: list[dict], *, batch_size: int = 16, max_length: int = 4096,
               desc: str = "rewardbench", sort_by_length: bool = True):
    """Per-example DataFrame, in the order of `rows`: id, subset, score_chosen, score_rejected, correct.

    Every row is encoded first (chat template, left truncation to `max_length` as the official script);
    with `sort_by_length` (default) the batches are then formed longest first, so each batch pads to
    nearly its own length, and the scores are put back in row order. A row's score depends only on its own
    tokens (right padding is masked, the head reads the last real token): the order and the batch size
    change it by float rounding at most (tested), never which answer wins beyond that.

    Started by `torchrun` / `accelerate launch` (WORLD_SIZE > 1, process group initialised), each process
    scores every world-th row of the length order (so all get the same mix of lengths) and the scores are
    gathered: every process returns the whole table."""
    import numpy as np

    encoded = encode_rows(tokenizer, rows, max_length)
    lengths = np.array([max(len(e["chosen_ids"]), len(e["rejected_ids"])) for e in encoded], dtype=np.int64)
    order = np.argsort(-lengths, kind="stable") if sort_by_length else np.arange(len(rows))
    rank, world = _distributed()
    mine = order[rank::world]
    chosen, rejected = _score_encoded(model, tokenizer.pad_token_id, encoded, mine, batch_size,
                                      desc=desc, progress=rank == 0)
    if world > 1:
        import torch.distributed as dist

        parts = [None] * world
        dist.all_gather_object(parts, (mine.tolist(), chosen.tolist(), rejected.tolist()))
        chosen, rejected = np.zeros(len(rows)), np.zeros(len(rows))
        for idx, c, r in parts:
            chosen[idx], rejected[idx] = c, r
        shares = [len(idx) for idx, _, _ in parts]
    else:
        full_c, full_r = np.zeros(len(rows)), np.zeros(len(rows))
        full_c[mine], full_r[mine] = chosen, rejected
        chosen, rejected, shares = full_c, full_r, [len(mine)]
    frame = per_example_frame(rows, chosen, rejected)
    frame.attrs["rows_per_process"] = shares
    return frame


def encode_rows(tokenizer, rows: list[dict], max_length: int) -> list[dict]:
    """Each row's chosen and rejected conversation as token ids, left-truncated to `max_length`."""
    from repro.data.tokenize import encode_pair

    encoded = []
    for r in rows:
        c, j = encode_pair(tokenizer, r["prompt"], r["chosen"], r["rejected"])
        # left truncation, as the official evaluation (tokenizer truncation_side="left")
        encoded.append({"chosen_ids": c[-max_length:], "rejected_ids": j[-max_length:]})
    return encoded


def _score_encoded(model, pad_token_id: int, encoded: list[dict], order, batch_size: int, *, desc: str,
                   progress: bool = True):
    """(chosen, rejected) rewards of the rows `order` (in that order), in batches of `batch_size`."""
    import numpy as np
    import torch
    from tqdm.auto import tqdm

    from repro.data.batching import PairCollator
    from repro.engine import forward_rewards

    collate = PairCollator(pad_token_id)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    chosen, rejected = np.zeros(len(order)), np.zeros(len(order))
    with torch.inference_mode():
        for start in tqdm(range(0, len(order), batch_size), desc=desc, unit="batch", disable=not progress):
            idx = order[start : start + batch_size]
            tensors = {k: v.to(device) for k, v in collate([encoded[i] for i in idx]).items()}
            r_c, r_r = forward_rewards(model, tensors)
            chosen[start : start + len(idx)] = r_c.float().cpu().numpy()
            rejected[start : start + len(idx)] = r_r.float().cpu().numpy()
    model.train(was_training)
    return chosen, rejected


def per_example_frame(rows: list[dict], chosen, rejected):
    import pandas as pd

    return pd.DataFrame({"id": [r["id"] for r in rows], "subset": [r["subset"] for r in rows],
                         "score_chosen": chosen, "score_rejected": rejected,
                         "correct": [rb.is_correct(a, b) for a, b in zip(chosen.tolist(), rejected.tolist())]},
                        columns=["id", "subset", "score_chosen", "score_rejected", "correct"])


def _distributed() -> tuple[int, int]:
    """(rank, world size) of an initialised process group, else (0, 1)."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch without distributed
        return 0, 1
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> tuple[int, int]:
    """Join the process group when started by `torchrun` / `accelerate launch` (WORLD_SIZE > 1): NCCL with one
    GPU per process (cuda:LOCAL_RANK), gloo on CPU. Returns (rank, world size); (0, 1) when alone."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return dist.get_rank(), dist.get_world_size()


def to_best_device(model, cpu: bool = False):
    """This process's GPU when there is one (and `cpu` is not forced), else the CPU: the first GPU, or
    cuda:LOCAL_RANK under torchrun / accelerate launch."""
    import os

    import torch

    if not torch.cuda.is_available() or cpu:
        return model
    return model.to(f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}")


def summarize(per_example, *, weights: str = "current", n_boot: int = 2000) -> dict:
    """Subset accuracies/counts, sections, Score and their 95% stratified-bootstrap intervals."""
    from repro.eval.stats import bootstrap_ci

    acc = rb.subset_accuracies(per_example["subset"], per_example["correct"])
    counts = per_example.groupby("subset").size().to_dict()
    scores = rb.score(acc, weights=weights)
    ci = bootstrap_ci(per_example["subset"], per_example["correct"], weights=weights, n_boot=n_boot)
    return {"subsets": {s: {"accuracy": acc[s], "n": int(counts[s]), "expected_n": rb.SUBSET_COUNTS[s]}
                        for s in acc},
            "sections": {k: v for k, v in scores.items() if k != "Score"}, "Score": scores["Score"],
            "ci95": {k: [v["low"], v["high"]] for k, v in ci.items()},
            "weights": weights, "by_weights": by_weights(acc), "coverage": rb.coverage(counts)}


def by_weights(acc) -> dict:
    """Sections and Score under every weighting (current, and legacy: the paper's Safety), full precision."""
    return {w: rb.score(acc, weights=w) for w in sorted(rb.WEIGHTS)}


def rescore_dir(run_dir: str | Path, weights: str) -> Path:
    """Where re-scoring a run under `weights` writes: beside the run's own eval/, one folder per weighting."""
    return Path(run_dir) / "eval" / f"rescore-{weights}"


def write_eval(out_dir: str | Path, per_example, summary: dict, *, model_name: str) -> None:
    from repro.results import atomic_write_json, atomic_write_parquet

    out_dir = Path(out_dir)
    atomic_write_parquet(out_dir / "per_example.parquet", per_example)
    atomic_write_json(out_dir / "subsets.json", summary["subsets"])
    acc = {s: v["accuracy"] for s, v in summary["subsets"].items()}
    official = rb.to_run_rm_json(acc, model=model_name)
    if not summary["coverage"]["complete"]:  # a reader of the official format must not take it for a full run
        official = dict(sorted({**official, "partial": rb.describe_coverage(summary["coverage"])}.items()))
    atomic_write_json(out_dir / "run_rm.json", official)


def format_table(summary: dict, title: str = "") -> str:
    lines = [title] if title else []
    ci = summary.get("ci95") or {}
    lines.append(f"{'section':<12}{'accuracy':>10}  {'95% CI' if ci else ''}")
    for k, v in [*summary["sections"].items(), ("Score", summary["Score"])]:
        interval = f"  [{100 * ci[k][0]:.2f}, {100 * ci[k][1]:.2f}]" if k in ci else ""
        lines.append(f"{k:<12}{100 * v:>10.2f}{interval}")
    lines.append(f"(percentages; RewardBench weights: {summary['weights']}"
                 + ("; 95% stratified bootstrap over examples)" if ci else ")"))
    cov = summary.get("coverage") or (summary.get("eval") or {}).get("coverage")  # final.json: under eval
    if cov and not cov["complete"]:
        lines.append(rb.describe_coverage(cov))
    return "\n".join(lines)


def same_scores(own, rescored) -> str:
    """One line: are re-scored per-example scores the run's own, bit for bit? Another GPU, kernel, dtype
    or thread count changes the last bits; this says so before anyone reads a difference into the Score."""
    cols = ["score_chosen", "score_rejected"]
    if own["id"].tolist() != rescored["id"].tolist() or own["subset"].tolist() != rescored["subset"].tolist():
        return "per-example scores: not comparable with the run's own (other rows or another order)"
    if all(own[c].to_numpy().tobytes() == rescored[c].to_numpy().tobytes() for c in cols):
        return f"per-example scores: identical to the run's own, bit for bit ({len(own)} examples)"
    a, b = own[cols].to_numpy(dtype=float), rescored[cols].to_numpy(dtype=float)
    changed = int((a != b).any(axis=1).sum())
    flipped = int((own["correct"].to_numpy() != rescored["correct"].to_numpy()).sum())
    return (f"per-example scores: differ from the run's own on {changed} of {len(own)} examples (largest "
            f"difference {abs(a - b).max():.3g}; {flipped} change correct/wrong)")




PER_EXAMPLE_FILES = (".parquet", ".csv", ".jsonl", ".json")


def read_per_example(path: str | Path):
    """Per-example results to compare, as a DataFrame with `key`, `subset`, `correct`.

    `path` is a run dir, a folder holding per_example.parquet (eval/, an --out folder,
    eval/rescore-<weights>/), or a per-example file from any tool: parquet, CSV or JSON (lines) with
    `subset` and either `correct` or `score_chosen` and `score_rejected` (correct = chosen > rejected,
    strict, as RewardBench); the official script's names `results`, `scores_chosen`, `scores_rejected`
    are read as those. Rows are keyed by `id`, or, in a file without one, by the exact (`prompt`,
    `chosen`, `rejected`) text. Every problem is a ValueError naming the file."""
    import hashlib

    import numpy as np
    import pandas as pd

    path = Path(path)
    if path.is_dir():
        f = path / "eval" / "per_example.parquet" if (path / "eval").is_dir() else path / "per_example.parquet"
        if not f.is_file():
            raise FileNotFoundError(f"{path}: no per_example.parquet (is it an evaluated run dir?)")
    elif path.is_file():
        f = path
        if not path.name.lower().endswith(PER_EXAMPLE_FILES):
            raise ValueError(f"{path}: a per-example file must be {', '.join(PER_EXAMPLE_FILES)}")
    else:
        raise FileNotFoundError(f"{path}: no such run dir or per-example file")
    name = f.name.lower()
    try:
        if name.endswith(".parquet"):
            df = pd.read_parquet(f)
        elif name.endswith(".csv"):
            df = pd.read_csv(f)
        else:  # .json may hold one object per line, as `datasets.Dataset.to_json` writes the official files
            with f.open("rb") as fh:  # the first non-blank byte says which: an array, or one object a line
                head = fh.read(4096).lstrip()[:1]
            lines = name.endswith(".jsonl") or head not in (b"[", b"")
            df = pd.read_json(f, lines=lines)
    except (OSError, ValueError) as e:  # pyarrow's and pandas' errors do not name the file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{f}: not a readable results file ({first})") from None
    # The official run_rm.py per-example output (`--save_all`, the results repo's eval-set-scores/) names
    # correctness `results` and the rewards `scores_chosen` / `scores_rejected`.
    official = {"results": "correct", "scores_chosen": "score_chosen", "scores_rejected": "score_rejected"}
    clash = [k for k, v in official.items() if k in df.columns and v in df.columns]
    if clash:
        raise ValueError(f"{f}: has both {clash[0]!r} and {official[clash[0]]!r}; keep one")
    df = df.rename(columns=official)
    if "subset" not in df.columns:
        raise ValueError(f"{f}: missing column 'subset'; found {list(df.columns)}")
    if "correct" in df.columns:
        values = df["correct"]
        if values.isna().any() or not values.isin([0, 1, True, False]).all():
            bad = values[values.isna() | ~values.isin([0, 1, True, False])]
            raise ValueError(f"{f}: 'correct' must be true/false (or 1/0); {len(bad)} row(s) are not, "
                             f"e.g. row {bad.index[0]}: {bad.iloc[0]!r}")
        correct = values.astype(bool)
    elif {"score_chosen", "score_rejected"} <= set(df.columns):
        scores = df[["score_chosen", "score_rejected"]].apply(pd.to_numeric, errors="coerce").to_numpy(float)
        bad = ~np.isfinite(scores).all(axis=1)
        if bad.any():
            raise ValueError(f"{f}: {int(bad.sum())} row(s) with a missing, NaN or infinite score, e.g. row "
                             f"{int(np.flatnonzero(bad)[0])}")
        correct = pd.Series(scores[:, 0] > scores[:, 1], index=df.index)
    else:
        raise ValueError(f"{f}: needs 'correct' or both 'score_chosen' and 'score_rejected'; found {list(df.columns)}")
    if "id" in df.columns:
        key = df["id"].astype(str)
    elif {"prompt", "chosen", "rejected"} <= set(df.columns):
        key = pd.Series([("text:" + hashlib.sha256(json.dumps([p, c, r]).encode()).hexdigest())
                         for p, c, r in zip(df["prompt"], df["chosen"], df["rejected"])], index=df.index)
    else:
        raise ValueError(f"{f}: rows need an 'id', or the 'prompt', 'chosen' and 'rejected' texts, to be matched")
    out = pd.DataFrame({"key": key, "subset": df["subset"].astype(str), "correct": correct})
    dup = out[out.duplicated(["key", "subset"])]
    if len(dup):
        raise ValueError(f"{f}: {len(dup)} duplicate row(s), e.g. {dup['key'].iloc[0]!r} in "
                         f"{dup['subset'].iloc[0]!r}")
    out.attrs["file"] = str(f)
    return out


def matched(frames: dict[str, "object"]):
    """One DataFrame with `subset` and a correctness column per name, rows matched by key (never by
    position); a ValueError naming the files when their rows differ."""
    names = list(frames)
    base = frames[names[0]].rename(columns={"correct": names[0]})
    merged = base
    for n in names[1:]:
        other = frames[n].rename(columns={"correct": n})
        merged = merged.merge(other, on=["key", "subset"], how="inner", validate="one_to_one")
        if len(merged) != len(base) or len(merged) != len(other):
            raise ValueError(f"{frames[names[0]].attrs.get('file', names[0])} and {other.attrs.get('file', n)} hold "
                             f"different rows ({len(base)} and {len(other)} rows, {len(merged)} with the same key "
                             f"and subset): compare results on the same examples")
    return merged


def seed_runs(path: str | Path) -> list[Path] | None:
    """The run dirs of a seed group, or None: a folder with no results of its own that holds `seed=<n>/` run
    dirs (the run-dir layout `runs/<experiment>/<overrides>/seed=<n>`), sorted by seed. Every one must be
    evaluated, and their configs may differ only in `seed` (a ValueError naming the folder otherwise)."""
    from repro import config as config_mod
    from repro.pipeline import config_changes

    path = Path(path)
    if not path.is_dir() or (path / "eval").is_dir() or (path / "per_example.parquet").is_file():
        return None
    runs = [d for d in path.glob("seed=*") if d.is_dir() and d.name[5:].lstrip("-").isdigit()]
    if not runs:
        return None
    runs.sort(key=lambda d: int(d.name[5:]))
    missing = [d.name for d in runs if not (d / "eval" / "per_example.parquet").is_file()]
    if missing:
        raise ValueError(f"{path}: seed run(s) {', '.join(missing)} have no eval/per_example.parquet (unfinished?); "
                         "finish them or compare the evaluated seeds' run dirs one by one")
    first = config_mod.load(runs[0] / "config.yaml")
    for d in runs[1:]:
        changed = [c for c in config_changes(first, config_mod.load(d / "config.yaml")) if not c.startswith("seed:")]
        if changed:
            raise ValueError(f"{path}: {runs[0].name} and {d.name} differ in more than the seed ({'; '.join(changed[:3])})"
                             ": a seed group must be one configuration")
    return runs


def read_arm(path: str | Path, weights: str, runs: list[Path] | None):
    """(per-example frame, seeds) for one side of a comparison. A seed group gives the mean correctness of
    each example over its seeds (multiples of 1/k) and seeds = {"runs", "per_seed": {key: [value per seed]}};
    a single result gives its 0/1 correctness and seeds = None. `runs`: `seed_runs(path)`."""
    if runs is None:
        return read_per_example(path), None
    names = [d.name for d in runs]
    frames = {n: read_per_example(d) for n, d in zip(names, runs)}
    merged = matched(frames)
    per_seed: dict[str, list[float]] = {}
    for n in names:
        scores = rb.score(rb.subset_accuracies(merged["subset"], merged[n]), weights=weights, where=str(path))
        for k, v in scores.items():
            per_seed.setdefault(k, []).append(v)
    frame = merged[["key", "subset"]].assign(correct=merged[names].astype(float).mean(axis=1))
    frame.attrs["file"] = str(path)
    return frame, {"runs": [str(d) for d in runs], "per_seed": per_seed}


def weighting_of(path: str | Path) -> str:
    """The weighting an evaluated folder was scored under: a run's final.json, a re-scoring's
    summary.json, else current (an --out folder of --model)."""
    path = Path(path)
    for f in (path / "final.json", path / "summary.json"):
        if f.is_file():
            try:
                weights = json.loads(f.read_text())["weights"]
            except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
                raise ValueError(f"{f}: no readable 'weights' entry") from None
            if not isinstance(weights, str) or weights not in rb.WEIGHTS:
                raise ValueError(f"{f}: unknown weighting {weights!r}; valid: {', '.join(rb.WEIGHTS)}")
            return weights
    return "current"


def compare_runs(run_a: str | Path, run_b: str | Path, *, weights: str | None = None) -> dict:
    """Paired comparison of two evaluated run dirs (or eval folders) on the same RewardBench rows.

    Weighting: `weights` if given, else the one both sides were scored under (a run's final.json, a
    re-scoring's summary.json); refused if they differ.
    """
    from repro.eval.stats import paired_test

    from repro.eval.stats import mcnemar

    weights = _one_weighting([run_a, run_b], weights)
    merged = matched({"a": read_per_example(run_a), "b": read_per_example(run_b)})
    return {"a": str(run_a), "b": str(run_b), "weights": weights, "examples": len(merged),
            "a_minus_b": paired_test(merged["subset"], merged["a"], merged["b"], weights=weights),
            "mcnemar": mcnemar(merged["subset"], merged["a"], merged["b"])}


def _one_weighting(paths, weights: str | None, groups: dict | None = None) -> str:
    """`weights` if given, else the one weighting every evaluated folder was scored under (files: current)."""
    if weights is not None:
        return weights
    groups = groups if groups is not None else {p: seed_runs(p) for p in paths}
    used = {weighting_of(r) for p in paths for r in (groups[p] or [p])}
    if len(used) > 1:
        raise ValueError(f"{', '.join(map(str, paths))} were scored with different weightings {sorted(used)}; "
                         "pass --weights to compare them under one")
    return used.pop()


def compare_arms(base: str | Path, others: list[str | Path], *, weights: str | None = None,
                 n_boot: int = 2000) -> dict:
    """Every other arm against `base` on the same rows: paired bootstrap intervals and permutation
    p-values per section and Score, McNemar per subset, Holm-adjusted across the family
    (`repro.eval.stats.compare_family`)."""
    from repro.eval.stats import compare_family

    paths = [base, *others]
    names = [str(p) for p in paths]
    if len(set(names)) != len(names):
        raise ValueError("--compare: an arm is listed twice")
    groups = {p: seed_runs(p) for p in paths}  # each group's configs are read and checked once
    weights = _one_weighting(paths, weights, groups)
    read = {n: read_arm(p, weights, groups[p]) for n, p in zip(names, paths)}
    merged = matched({n: frame for n, (frame, _) in read.items()})
    seeds = {n: info for n, (_, info) in read.items() if info is not None}
    resolution = math.lcm(*(len(info["runs"]) for info in seeds.values())) if seeds else 1
    family = compare_family(merged["subset"].to_numpy(), merged[names[0]].to_numpy(),
                            {n: merged[n].to_numpy() for n in names[1:]}, weights=weights, n_boot=n_boot,
                            resolution=resolution)
    out = {"base": names[0], "weights": weights, "examples": len(merged), **family}
    if seeds:
        out["seeds"] = seed_comparison(names, seeds)
    return out


def seed_comparison(names: list[str], seeds: dict) -> dict:
    """Seed-level statistics of the seed groups of a family: per group and key the mean over seeds with a
    t interval; per arm with >= 2 seeds against a base with >= 2, Welch's test on the seed means,
    Holm-adjusted across those arms per key. (The per-example comparison of seed groups is on the mean
    correctness over seeds: examples resampled, seeds held fixed; this one treats seeds as the sample.)"""
    from repro.eval.stats import compare_seed_means, holm, seed_summary

    out = {"groups": {n: {"runs": info["runs"], "summary": {k: seed_summary(v) for k, v in info["per_seed"].items()}}
                      for n, info in seeds.items()}, "welch": {}}
    base = seeds.get(names[0])
    arms = [n for n in names[1:] if base and len(base["runs"]) >= 2 and n in seeds and len(seeds[n]["runs"]) >= 2]
    for n in arms:
        out["welch"][n] = {k: compare_seed_means(seeds[n]["per_seed"][k], base["per_seed"][k])
                           for k in base["per_seed"]}
    for k in (base["per_seed"] if arms else ()):
        adjusted = holm({n: out["welch"][n][k]["p_value"] if out["welch"][n][k]["p_value"] is not None else 1.0
                         for n in arms})
        for n in arms:
            out["welch"][n][k]["p_holm"] = adjusted[n]
    return out


def format_detectable(table: dict) -> str:
    d = table["discordance"]
    lines = [f"smallest detectable gap, percentage points ({100 * table['power']:.0f}% power, alpha "
             f"{table['alpha']}), by the share of examples on which the two models disagree",
             f"{'':<12}{'examples':>9}" + "".join(f"{f'{100 * x:g}% disagree':>15}" for x in d)]
    for key, row in table["table"].items():
        cells = "".join(f"{'-' if m is None else f'{100 * m:.2f}':>15}" for m in row["mdd"])
        lines.append(f"{key:<12}{row['n']:>9}{cells}")
    lines.append("(- : no gap is detectable at that disagreement rate)")
    return "\n".join(lines)


def format_family(family: dict) -> str:
    """The readable table of `compare_arms`: per arm and key, the difference (points), its interval and the
    Holm-adjusted p-value."""
    keys = (*rb.SECTIONS, "Score")
    lines = [f"arm minus base ({family['base']}), percentage points; [95% paired bootstrap]; Holm-adjusted p",
             f"{'arm':<40}" + "".join(f"{k:>30}" for k in keys)]
    for arm, res in family["arms"].items():
        cells = []
        for k in keys:
            r = res["paired"][k]
            cells.append(f"{100 * r['difference']:+.2f} [{100 * r['low']:+.2f}, {100 * r['high']:+.2f}] "
                         f"p={r['p_holm']:.3f}")
        lines.append(f"{arm[-40:]:<40}" + "".join(f"{c:>30}" for c in cells))
    seeds = family.get("seeds")
    if seeds:
        lines.append("seed groups: per example on the mean correctness over seeds (above); over seeds: mean "
                     "[95% t interval], n seeds")
        for name, g in seeds["groups"].items():
            cells = []
            for k in keys:
                t = g["summary"][k]
                ci = f" [{100 * t['low']:.2f}, {100 * t['high']:.2f}]" if t["low"] is not None else ""
                cells.append(f"{100 * t['mean']:.2f}{ci} n={t['n']}")
            lines.append(f"{name[-40:]:<40}" + "".join(f"{c:>30}" for c in cells))
        for arm, res in seeds["welch"].items():
            cells = []
            for k in keys:
                w = res[k]
                cells.append(f"{100 * w['difference']:+.2f} Welch p={w['p_holm']:.3f}")
            lines.append(f"{('minus base: ' + arm)[-40:]:<40}" + "".join(f"{c:>30}" for c in cells))
    return "\n".join(lines)


def _from_subsets(path: str, weights: str) -> dict:
    """Sections and Score under `weights` (full precision: round only for display), and under every
    weighting in `by_weights`."""
    acc = rb.read_run_rm_json(path)
    out = {**rb.score(acc, weights=weights, where=path), "weights": weights, "by_weights": by_weights(acc)}
    partial = json.loads(Path(path).read_text()).get("partial")  # written by this package for a partial set
    return {**out, "partial": partial} if partial else out


DTYPES = ("float32", "bfloat16", "float16")
# Options only --model reads. Given with another mode they would be ignored silently (a run dir is scored
# with its own config.yaml), so they are refused instead.
MODEL_OPTIONS = ("data", "batch_size", "dtype", "attn", "trust_remote_code", "allow_partial")


def positive_int(text: str) -> int:
    """argparse type for a batch size: 0 or less would score nothing, or fail deep inside the loop."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def score_run_dir(run_dir: Path, weights: str | None) -> None:
    """--run-dir: complete a run that never got evaluated, or re-score a finished one beside its result."""
    import pandas as pd

    from repro import config as config_mod
    from repro.pipeline import evaluate_run
    from repro.results import FINAL, MetricsLog, is_done, read_json, run_dir_lock

    own = config_mod.load(run_dir / "config.yaml").eval.weights
    weights = weights or own
    with run_dir_lock(run_dir):  # not while a training or another evaluation writes there
        finished = is_done(run_dir)
        final = evaluate_run(run_dir, weights=weights)
        if not finished:  # then, as pipeline.run does, the eval numbers join the run's metrics log
            MetricsLog(run_dir / "metrics.jsonl").log(final["train"].get("steps") or 0, "eval",
                                                      **final["sections"], Score=final["Score"])
        print(format_table(final, title=f"RewardBench: {run_dir}"))
        print(f"completed the run: wrote {run_dir / 'eval'} and {run_dir / FINAL}")
    if finished or weights != own:
        folder = rescore_dir(run_dir, weights)
        print(format_table(read_json(folder / "summary.json"), title=f"RewardBench, re-scored: {run_dir}"))
        print(f"wrote {folder}" + ("; the run's own final.json and eval/ are unchanged" if finished else ""))
        if finished:
            own_scores = run_dir / "eval" / "per_example.parquet"
            print(same_scores(pd.read_parquet(own_scores), pd.read_parquet(folder / "per_example.parquet"))
                  if own_scores.is_file() else "per-example scores: the run has no eval/per_example.parquet to compare")


def leaderboard(args) -> None:
    """--leaderboard: the regenerated table, top rows and the largest rounding difference; CSV into --out."""
    import csv
    import io

    from repro.eval.leaderboard import LEADERBOARD, regenerate
    from repro.results import atomic_write_text, writable_dir

    rows = regenerate(args.leaderboard or LEADERBOARD)
    worst = max(abs(r["difference"]) for r in rows if r["difference"] is not None)
    print(f"{len(rows)} leaderboard rows; every published Score equals the rule's to {worst:.1e} "
          "(published values are rounded to 4 decimals)")
    print(f"{'rank':>4}  {'model':<48}{'Score':>8}" + "".join(f"{k:>11}" for k in rb.SECTIONS))
    for r in rows[:15]:
        print(f"{r['rank']:>4}  {r['model'][:47]:<48}{100 * r['score_recomputed']:>8.2f}"
              + "".join(f"{100 * r[k]:>11.2f}" for k in rb.SECTIONS))
    if args.out:
        out = writable_dir(args.out, "--out")
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(out / "leaderboard_v1.csv", buf.getvalue())
        print(f"wrote {out / 'leaderboard_v1.csv'}")


def score_model(args) -> None:
    """--model: any sequence-classification reward model, results into --out. Under `torchrun` /
    `accelerate launch` with N processes (one per GPU) each scores 1/N of the rows; rank 0 writes."""
    from repro.data.sources import rewardbench as rb_source
    from repro.model import load_pretrained
    from repro.results import writable_dir

    # The output folder and the data first: a typo or a partial set must not cost a 27B load.
    out = writable_dir(args.out, "--out")
    rows = rb_source.load(args.data or rb_source.HUB_ID, allow_partial=args.allow_partial)
    rank, world = init_distributed()
    model, tok = load_pretrained(args.model, dtype=args.dtype or "float32", attn_implementation=args.attn,
                                 trust_remote_code=args.trust_remote_code, require_head=True)
    model = to_best_device(model)
    per_example = score_rows(model, tok, rows, batch_size=args.batch_size or 8)
    if world > 1:
        import torch.distributed as dist

        dist.destroy_process_group()
    if rank != 0:
        return
    summary = summarize(per_example, weights=args.weights or "current")
    write_eval(out, per_example, summary, model_name=args.model)
    from repro.results import atomic_write_json

    atomic_write_json(out / "summary.json", {**{k: summary[k] for k in ("sections", "Score", "ci95", "weights",
                                                                         "by_weights", "coverage")},
                                             "model": args.model, "examples": len(per_example),
                                             "rows_per_process": per_example.attrs["rows_per_process"]})
    print(format_table(summary, title=f"RewardBench: {args.model}" + (f" ({world} processes)" if world > 1 else "")))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m repro.evaluate", description="RewardBench scoring",
        usage="%(prog)s (--from-subsets FILE.json | --run-dir RUN_DIR | --model MODEL --out DIR "
              "| --compare A B [...] | --detectable [D ...]) [options]")
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--from-subsets", metavar="FILE.json", help="per-subset accuracies (run_rm.py format)")
    what.add_argument("--run-dir", help="a run dir of this package: score its model; completes an unevaluated "
                                        "run (eval/, final.json), re-scores a finished one into "
                                        "eval/rescore-<weights>/ (its own result is never replaced)")
    what.add_argument("--model", help="Hub id or folder of any sequence-classification reward model")
    what.add_argument("--compare", nargs="+", metavar="RESULTS",
                      help="RUN_A RUN_B: paired comparison A - B (bootstrap CI, permutation p-value, McNemar per "
                           "subset); BASE OTHER [OTHER ...]: every other arm minus the base, Holm-adjusted across "
                           "the family. Each is a run dir, an eval folder, or a per-example parquet/CSV/JSONL file")
    what.add_argument("--leaderboard", nargs="?", const="", metavar="FOLDER",
                      help="regenerate the final RewardBench v1 leaderboard from its published sections (default: "
                           "reference/rewardbench_v1_leaderboard): every Score recomputed by the rule (CSV with --out)")
    what.add_argument("--detectable", nargs="*", type=float, metavar="DISCORDANCE",
                      help="the smallest section / Score gap a paired test detects at RewardBench's sizes (80%% "
                           "power, alpha 0.05) for these rates of disagreement between two models (default "
                           "0.02 0.05 0.1)")
    ap.add_argument("--weights", default=None, choices=sorted(rb.WEIGHTS),
                    help="current or legacy (swapped xstest weights, as in the paper); default: current, "
                         "or the run's own eval.weights with --run-dir")
    ap.add_argument("--data", help="with --model: RewardBench dataset, Hub id, folder or fixture:reward-bench "
                                   "(default: allenai/reward-bench)")
    ap.add_argument("--out", help="with --model: output folder")
    ap.add_argument("--batch-size", type=positive_int, help="with --model (default: 8)")
    ap.add_argument("--dtype", choices=DTYPES, help="with --model: float32 (CPU, the default) or bfloat16 "
                                                    "(GPU, as the leaderboard)")
    ap.add_argument("--attn", help="with --model: attention implementation; Gemma-2 needs eager or "
                                   "flash_attention_2")
    ap.add_argument("--trust-remote-code", action="store_true", help="with --model: off unless asked for")
    ap.add_argument("--allow-partial", action="store_true",
                    help="with --model: score a set with fewer rows than the official 2,985 (every output then "
                         "says it is partial and which sections are incomplete); refused otherwise")
    args = ap.parse_args(argv)
    if args.out and not (args.model or args.leaderboard is not None):
        ap.error("--out: only with --model or --leaderboard")
    if args.model and not args.out:
        ap.error("--model needs --out (the folder for per_example.parquet, subsets.json, run_rm.json)")
    given = [f"--{k.replace('_', '-')}" for k in MODEL_OPTIONS if getattr(args, k) not in (None, False)]
    if given and not args.model:
        ap.error(f"{', '.join(given)}: only with --model"
                 + ("; a run dir is scored with its own config.yaml" if args.run_dir else ""))
    try:
        if args.from_subsets:
            print(json.dumps(_from_subsets(args.from_subsets, args.weights or "current"), indent=2))
        elif args.leaderboard is not None:
            leaderboard(args)
        elif args.detectable is not None:
            from repro.eval.stats import mdd_table

            table = mdd_table(tuple(args.detectable) or (0.02, 0.05, 0.1), weights=args.weights or "current")
            print(format_detectable(table), file=sys.stderr)
            print(json.dumps(table, indent=2))
        elif args.compare:
            if len(args.compare) < 2:
                ap.error("--compare needs two results (A B) or a base and its arms (BASE OTHER ...)")
            if len(args.compare) == 2 and not any(seed_runs(p) for p in args.compare):
                print(json.dumps(compare_runs(*args.compare, weights=args.weights), indent=2))
            else:
                family = compare_arms(args.compare[0], args.compare[1:], weights=args.weights)
                print(format_family(family), file=sys.stderr)
                print(json.dumps(family, indent=2))
        elif args.run_dir:
            score_run_dir(Path(args.run_dir), args.weights)
        else:
            score_model(args)
        return 0
    # The package's input errors (ConfigError, ModelError, DataError, OutputDirError, RewardBenchError) are
    # ValueErrors whose message names the file or option; OSError covers files that vanish or cannot be read.
    except (ValueError, OSError) as e:
        print(f"error: {' '.join(str(e).split()) or type(e).__name__}", file=sys.stderr)
        return 2
    except RunDirBusy as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
