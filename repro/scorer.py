"""The WildGuard stage-2 scorer: which reward model it is, building it when a recipe says so, scoring with it.

PAPER.md: stage 2 keeps the WildGuard pairs that a reward model trained on the *other* sources ranks right
("we use the 27B model to score the WildGuard samples"). A recipe names the scorer in one of two ways:

* `data.wildguard.scorer`: a run dir of this package (its `model/` is used), or a Hub id / local folder of
  any `AutoModelForSequenceClassification` reward model (e.g. `Skywork/Skywork-Reward-Gemma-2-27B`, the
  cheap choice on a GPU: nothing to train);
* `data.wildguard.scorer_run`: the overrides of the run that trains it, e.g. `[data=fixture_scorer,
  experiment=tiny]`. `resolve` composes that run's config exactly as `python -m repro.train <overrides>`
  would (same run dir, under the same `runs_root`), runs it through the pipeline — or reuses it when it is
  finished — and returns its model folder. The dependency is data in the config, not a manual step.

Scores are raw logits of the judged answer under the model's chat template, as RewardBench scores
(`repro.evaluate.score_rows`); `mixture` saves them as `wildguard_scores.parquet` beside the curated data.
"""
from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa

from repro import config as config_mod

log = logging.getLogger(__name__)


def scorer_run(cfg) -> tuple[config_mod.RunConfig, Path] | None:
    """(config, run dir) of the run that trains the scorer of `cfg` (a RunConfig), or None if it names none."""
    from repro.results import run_dir_for

    overrides = list(cfg.data.wildguard.scorer_run)
    if not overrides or not needs_scorer(cfg):
        return None
    if not any(o.split("=", 1)[0].lstrip("+~") == "runs_root" for o in overrides):
        overrides.append(f"runs_root={cfg.runs_root}")
    sub = config_mod.compose(overrides, key="data.wildguard.scorer_run")
    w = sub.data.wildguard
    if w.stage2 and (w.scorer_run or w.scorer):
        raise config_mod.ConfigError(f"data.wildguard.scorer_run={list(cfg.data.wildguard.scorer_run)}: the scorer's "
                                     "own data recipe uses WildGuard stage 2 with a scorer; a scorer must be trained "
                                     "without one (set data.wildguard.stage2=false in its recipe)")
    return sub, run_dir_for(sub.runs_root, sub.experiment.name, overrides, sub.seed).resolve()


def model_folder(path: str) -> str:
    """A run dir of this package -> its model/; anything else (Hub id, model folder) unchanged."""
    p = Path(path).expanduser()
    if (p / "config.yaml").is_file() and (p / "model").is_dir():
        return str(p / "model")
    return path


def needs_scorer(cfg) -> bool:
    """Stage 2 is on and some source of the run reads WildGuard pairs (a leave-WildGuard-out run needs none)."""
    from repro.data.sources import RELEASED

    return cfg.data.wildguard.stage2 and any(s.name == cfg.data.wildguard.source and s.name not in RELEASED
                                             for s in cfg.data.active_sources())


def resolve(cfg) -> str | None:
    """The scorer model (folder or Hub id) for `cfg`'s WildGuard stage 2, building its run first if needed;
    None when stage 2 is off."""
    w = cfg.data.wildguard
    if not needs_scorer(cfg):
        return None
    if w.scorer:
        return model_folder(w.scorer)
    from repro import pipeline

    sub, run_dir = scorer_run(cfg)
    print(f"WildGuard stage 2 scorer: run {run_dir} (data={sub.data.name})", flush=True)
    pipeline.run(sub, run_dir)
    return str(run_dir / "model")


def score_fn(model_path: str, cfg):
    """f(WildGuard pair table) -> table (id, score_chosen, score_rejected), scored by the model at `model_path`
    (loaded once, on the first call)."""
    state = {}

    def score(pairs: pa.Table) -> pa.Table:
        from repro.data.stages import SCORES_SCHEMA
        from repro.evaluate import score_rows, to_best_device
        from repro.model import load_pretrained

        if "model" not in state:
            model, tok = load_pretrained(model_path, dtype=cfg.model.dtype,
                                         attn_implementation=cfg.model.attn_implementation, require_head=True)
            state["model"], state["tok"] = to_best_device(model, cpu=cfg.launcher.cpu), tok
        rows = [{"id": r["id"], "subset": r["source"], "prompt": r["prompt"], "chosen": r["chosen"],
                 "rejected": r["rejected"]} for r in pairs.select(["id", "source", "prompt", "chosen",
                                                                    "rejected"]).to_pylist()]
        w = cfg.data.wildguard
        df = score_rows(state["model"], state["tok"], rows, batch_size=w.scorer_batch_size,
                        max_length=w.scorer_max_length, desc="wildguard stage 2")
        return pa.table({"id": df["id"].astype(str).tolist(), "score_chosen": df["score_chosen"].astype(float),
                         "score_rejected": df["score_rejected"].astype(float)}, schema=SCORES_SCHEMA)
    return score
