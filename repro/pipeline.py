"""One run, end to end: curate -> train -> evaluate -> report. No Hydra here.

`run(cfg, run_dir)` is what `python -m repro.train` calls once per sweep point, after it has composed the
config and chosen the deterministic run dir. A run dir that holds `final.json` is finished and skipped
(unless `force=true`).
"""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from repro import config as config_mod
from repro.results import FINAL, MetricsLog, atomic_write_json, env_info, is_done

log = logging.getLogger(__name__)


def _file_logging(run_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(run_dir / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(handler)
    return handler


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out.update(_flatten(v, key + ".") if isinstance(v, dict) else {key: v})
    return out


def config_changes(old, new) -> list[str]:
    """Dotted keys whose values differ between two RunConfigs, as 'key: old -> new'.

    `force` and `runs_root` are left out: they say where and whether to run, not what a run computes.
    """
    a, b = _flatten(config_mod.to_dict(old)), _flatten(config_mod.to_dict(new))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if k not in ("force", "runs_root") and a.get(k) != b.get(k)]


def resumable(run_dir: Path, cfg) -> bool:
    """An unfinished run dir with a complete checkpoint (a forced run never resumes). Refuses, naming
    the keys, when the checkpoint was made under another config: deleting it silently could throw away
    days of GPU time."""
    from repro.engine import latest_checkpoint

    if cfg.force or is_done(run_dir) or latest_checkpoint(run_dir / "checkpoints") is None:
        return False
    refuse_if_changed(run_dir, cfg, "checkpoints of an unfinished run",
                      "Rerun with the same config to resume it, with force=true to discard it, or use another runs_root")
    return True


def refuse_if_changed(run_dir: Path, cfg, what: str, advice: str) -> None:
    """ConfigError naming the differing keys when `run_dir` was made under another config than `cfg`."""
    changed = config_changes(config_mod.load(run_dir / "config.yaml"), cfg)
    if changed:
        raise config_mod.ConfigError(
            f"{run_dir} holds {what} with a different config ({'; '.join(changed[:5])}"
            f"{'; ...' if len(changed) > 5 else ''}). {advice}")


def curate_into(cfg, run_dir: Path) -> dict:
    from repro.data.mixture import curate

    _, manifest, folder = curate(cfg.data, Path(cfg.runs_root) / "_cache" / "data")
    manifest = {**manifest, "cache_dir": str(folder.resolve())}
    atomic_write_json(run_dir / "data" / "manifest.json", manifest)
    return manifest


def evaluate_run(run_dir: str | Path, *, weights: str | None = None) -> dict:
    """Score the run's saved model on RewardBench; write eval/ and then final.json (last)."""
    from repro.data.sources import rewardbench as rb_source
    from repro.evaluate import score_rows, summarize, to_best_device, write_eval
    from repro.model import load_pretrained

    run_dir = Path(run_dir)
    cfg = config_mod.load(run_dir / "config.yaml")
    weights = weights or cfg.eval.weights
    model, tokenizer = load_pretrained(str(run_dir / "model"), dtype=cfg.model.dtype,
                                       attn_implementation=cfg.model.attn_implementation)
    model = to_best_device(model, cpu=cfg.launcher.cpu)
    rows = rb_source.load(cfg.eval.path, cfg.eval.split)
    per_example = score_rows(model, tokenizer, rows, batch_size=cfg.eval.batch_size, max_length=cfg.eval.max_length)
    summary = summarize(per_example, weights=weights)
    write_eval(run_dir / "eval", per_example, summary, model_name=str(run_dir))
    train_summary = json.loads((run_dir / "train.json").read_text()) if (run_dir / "train.json").is_file() else {}
    final = {
        "run": {"experiment": cfg.experiment.name, "name": run_dir.parent.name, "seed": cfg.seed,
                "data": cfg.data.name, "model": cfg.model.name, "loss": cfg.loss.name},
        "sections": summary["sections"],
        "Score": summary["Score"],
        "ci95": summary["ci95"],
        "weights": weights,
        "eval": {"path": cfg.eval.path, "split": cfg.eval.split, "examples": len(per_example)},
        "train": {k: train_summary.get(k)
                  for k in ("steps", "seconds", "pairs_per_second", "pairs_trained", "tokenize_dropped")},
    }
    atomic_write_json(run_dir / FINAL, final)
    return final


def run(cfg, run_dir: str | Path) -> tuple[dict, bool]:
    """Run (or skip) one configuration. Returns (final results, whether it was skipped as done)."""
    from repro.launch import LAUNCHERS

    run_dir = Path(run_dir)
    if is_done(run_dir) and not cfg.force:
        refuse_if_changed(run_dir, cfg, "a finished run",
                          "A preset or default changed since it ran: rerun it with force=true, or use another runs_root")
        return json.loads((run_dir / FINAL).read_text()), True
    if resumable(run_dir, cfg):
        print(f"resuming unfinished run from its last checkpoint: {run_dir}", flush=True)
    elif run_dir.exists():
        # Forced, or unfinished without a checkpoint of the same config: start over, so that stale
        # metrics or weights never mix with new ones.
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = _file_logging(run_dir)
    try:
        config_mod.save(cfg, run_dir / "config.yaml")
        world = cfg.launcher.num_processes * cfg.launcher.num_machines
        atomic_write_json(run_dir / "env.json", env_info(world_size=world))
        manifest = curate_into(cfg, run_dir)
        log.info("curated %d pairs (%d dropped) for data=%s", manifest["pairs"], manifest["dropped"], cfg.data.name)
        LAUNCHERS[cfg.launcher.name](run_dir, cfg)
        final = evaluate_run(run_dir)
        MetricsLog(run_dir / "metrics.jsonl").log(final["train"].get("steps") or 0, "eval",
                                                  **final["sections"], Score=final["Score"])
        return final, False
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def summary_table(final: dict, run_dir: Path, manifest: dict | None = None) -> str:
    """The human-readable report printed at the end of a run."""
    from repro.evaluate import format_table

    lines = [f"run dir: {run_dir}"]
    if manifest:
        lines.append(f"data:    {manifest['pairs']} curated pairs ({manifest['dropped']} rows dropped; "
                     "see data/manifest.json)")
    t = final.get("train") or {}
    if t.get("steps"):
        too_long = sum((t.get("tokenize_dropped") or {}).values())
        lines.append(f"train:   {t['steps']} steps, {t['pairs_trained']} pairs"
                     + (f" ({too_long} dropped as too long)" if too_long else "")
                     + f", {t['seconds']:.1f} s ({t['pairs_per_second']:.0f} pairs/s)")
    lines.append(format_table(final, title=f"RewardBench ({final['eval']['examples']} examples, "
                                           f"{final['eval']['path']}):"))
    return "\n".join(lines)
