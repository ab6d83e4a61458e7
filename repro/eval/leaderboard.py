"""The final RewardBench v1 leaderboard, regenerated from its published section scores.

Reads the leaderboard's rows as published by `evaleval/every_eval_ever` (one JSON per model under
`<org>/<model>/`, copied into `reference/rewardbench_v1_leaderboard/`, see reference/README.md) and
recomputes every row's Score with the leaderboard's rule (`rewardbench.overall_score`: the mean of the
four sections, or with Prior Sets at half weight for the older rows; a published Prior Sets of 0.0 is the
leaderboard's placeholder for "not evaluated" and counts as absent). The table holds, per model, the
published sections, the published Score, the recomputed one and their difference (published values are
rounded to 4 decimals, so differences up to ~1e-4 are rounding), ranked by the recomputed Score.
"""
from __future__ import annotations

import json
from pathlib import Path

from repro.eval import rewardbench as rb

LEADERBOARD = Path(__file__).resolve().parents[2] / "reference" / "rewardbench_v1_leaderboard"
PRIOR = "Prior Sets (0.5 weight)"


class LeaderboardError(ValueError):
    """A leaderboard file that cannot be read or lacks a section; names the file."""


def read_row(path: Path) -> dict:
    """{"model", "Score", sections..., Prior Sets (if any)} of one every_eval_ever JSON file."""
    try:
        data = json.loads(path.read_text())
        scores = {r["evaluation_name"]: float(r["score_details"]["score"]) for r in data["evaluation_results"]}
        model = data["model_info"]["id"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise LeaderboardError(f"{path}: not a readable leaderboard row ({type(e).__name__}: {e})") from None
    return {"model": model, **scores}


def regenerate(folder: str | Path = LEADERBOARD) -> list[dict]:
    """Every row with all four sections, the Score recomputed, ranked by it (ties: model name)."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*.json") if p.is_file())
    if not files:
        raise LeaderboardError(f"{folder}: no leaderboard JSON files")
    rows = []
    for f in files:
        row = read_row(f)
        if not all(k in row for k in rb.SECTIONS):
            continue
        prior = row.get(PRIOR) or None
        recomputed = rb.overall_score({k: row[k] for k in rb.SECTIONS}, prior_sets=prior)
        rows.append({"model": row["model"], **{k: row[k] for k in rb.SECTIONS}, "prior_sets": prior,
                     "score_published": row.get("Score"), "score_recomputed": recomputed,
                     "difference": None if row.get("Score") is None else recomputed - row["Score"],
                     "file": str(f.relative_to(folder))})
    rows.sort(key=lambda r: (-r["score_recomputed"], r["model"]))
    for rank, r in enumerate(rows, 1):
        r["rank"] = rank
    return rows
