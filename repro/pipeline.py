"""One run, end to end: curate -> train -> evaluate -> report. No Hydra here.

`run(cfg, run_dir)` is what `python -m repro.train` calls once per sweep point, after it has composed the
config and chosen the deterministic run dir. A run dir that holds `final.json` is finished and skipped
(unless `force=true`).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from repro import config as config_mod
from repro.results import FINAL, HOW_NOT_WHAT, MetricsLog, atomic_write_json, env_info, is_done

log = logging.getLogger(__name__)


class TerminalFilter(logging.Filter):
    """The terminal gets this package's INFO lines and everyone's warnings; run.log gets everything."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or record.name.split(".")[0] in ("repro", "__main__")


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

    `force`, `runs_root` and the launcher settings are left out: they say where, whether and how to run,
    not what a run computes.
    """
    a, b = _flatten(config_mod.to_dict(old)), _flatten(config_mod.to_dict(new))
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b))
            if k not in ("force", "runs_root") and k.split(".")[0] not in HOW_NOT_WHAT and a.get(k) != b.get(k)]


def resumable(run_dir: Path, cfg) -> bool:
    """An unfinished run dir with a complete checkpoint (a forced run never resumes). Refuses, naming
    the keys, when the checkpoint was made under another config: deleting it silently could throw away
    days of GPU time."""
    from repro.engine import latest_checkpoint

    if cfg.force or is_done(run_dir) or latest_checkpoint(run_dir / "checkpoints") is None:
        return False
    refuse_if_changed(run_dir, cfg, "checkpoints of an unfinished run",
                      "Rerun with the same config to resume it; to keep it and start the new config, move it aside "
                      f"(mv '{run_dir}' '{run_dir}.old') or use another runs_root=; force=true would delete it")
    return True


def refuse_if_changed(run_dir: Path, cfg, what: str, advice: str) -> None:
    """ConfigError naming the differing keys when `run_dir` was made under another config than `cfg`."""
    changed = config_changes(config_mod.load(run_dir / "config.yaml"), cfg)
    if changed:
        raise config_mod.ConfigError(
            f"{run_dir} holds {what} with a different config ({'; '.join(changed[:5])}"
            f"{'; ...' if len(changed) > 5 else ''}). {advice}")


def curate_into(cfg, run_dir: Path) -> dict:
    from repro import scorer
    from repro.data.mixture import curate

    model = scorer.resolve(cfg)  # WildGuard stage 2: builds (or reuses) the scorer's run first
    _, manifest, folder = curate(cfg.data, Path(cfg.runs_root) / "_cache" / "data", scorer=model,
                                 score_fn=scorer.score_fn(model, cfg) if model else None)
    manifest = {**manifest, "cache_dir": str(folder.resolve())}
    atomic_write_json(run_dir / "data" / "manifest.json", manifest)
    return manifest


def release_memory() -> None:
    """Collect what is unreachable and hand the CUDA allocator's cached blocks back to the device.

    The driver evaluates in its own process (any launcher, and `repro.evaluate --run-dir`, score the same
    way), then goes on: a sweep on Hydra's basic launcher runs its next point in this process, and that
    point's training workers are other processes, which cannot use memory this process's allocator still
    caches. Evaluation therefore drops its model and calls this before it returns. A no-op without CUDA.
    """
    import gc

    import torch

    gc.collect()
    torch.cuda.empty_cache()


def evaluate_run(run_dir: str | Path, *, weights: str | None = None, rows=None) -> dict:
    """Score the run's saved model on RewardBench; return the run's own result (final.json's content).

    A run without final.json is completed under its own eval.weights: eval/, then final.json (last).
    A finished run's result is never replaced, so final.json always matches config.yaml: scores under
    another `weights`, and any re-scoring of a finished run, go to eval/rescore-<weights>/ beside it
    (per_example.parquet, subsets.json, run_rm.json, then summary.json). Bad input stops before the model
    is loaded. `rows`: the evaluation set already loaded and validated from this run's `eval.*` (the
    driver reads it before training); read here otherwise.
    """
    from repro.data.sources import rewardbench as rb_source
    from repro.evaluate import rescore_dir, score_rows, summarize, to_best_device, write_eval
    from repro.fit import set_cpu_threads
    from repro.model import ModelError, load_pretrained
    from repro.results import writable_dir

    run_dir = Path(run_dir)
    cfg = config_mod.load(run_dir / "config.yaml")
    set_cpu_threads(cfg)  # scores are bit-identical only for the same thread count
    own, weights = cfg.eval.weights, weights or cfg.eval.weights
    finished = is_done(run_dir)
    if not (run_dir / "model").is_dir():
        raise ModelError(f"{run_dir} has no model/: training did not finish (rerun its python -m repro.train "
                         "command to finish it)")
    writable_dir(run_dir / "eval", "eval folder")
    if rows is None:
        rows = rb_source.load(cfg.eval.path, cfg.eval.split, allow_partial=cfg.eval.allow_partial)
    model, tokenizer = load_pretrained(str(run_dir / "model"), dtype=cfg.model.dtype,
                                       attn_implementation=cfg.model.attn_implementation, require_head=True)
    model = to_best_device(model, cpu=cfg.launcher.cpu)
    try:
        per_example = score_rows(model, tokenizer, rows, batch_size=cfg.eval.batch_size,
                                 max_length=cfg.eval.max_length)
    finally:
        del model  # the driver scores in its own process: free the model before the next sweep point
        release_memory()
    if finished or weights != own:
        rescored = summarize(per_example, weights=weights)
        folder = rescore_dir(run_dir, weights)
        write_eval(folder, per_example, rescored, model_name=str(run_dir))
        atomic_write_json(folder / "summary.json", {
            **{k: rescored[k] for k in ("sections", "Score", "ci95", "weights", "by_weights", "coverage")},
            "examples": len(per_example)})
    if finished:
        return json.loads((run_dir / FINAL).read_text())
    summary = summarize(per_example, weights=own)
    write_eval(run_dir / "eval", per_example, summary, model_name=str(run_dir))
    train_summary = json.loads((run_dir / "train.json").read_text()) if (run_dir / "train.json").is_file() else {}
    final = {
        "run": {"experiment": cfg.experiment.name, "name": run_dir.parent.name, "seed": cfg.seed,
                "data": cfg.data.name, "model": cfg.model.name, "loss": cfg.loss.name},
        "sections": summary["sections"],
        "Score": summary["Score"],
        "ci95": summary["ci95"],
        "weights": own,
        "by_weights": summary["by_weights"],  # sections and Score under both weightings
        "eval": {"path": cfg.eval.path, "split": cfg.eval.split, "examples": len(per_example),
                 "coverage": summary["coverage"]},  # complete, or partial and where (eval.allow_partial)
        "train": {k: train_summary.get(k)
                  for k in ("steps", "epochs", "seconds", "pairs_per_second", "pairs_trained", "distinct_pairs_trained",
                            "tokenize_dropped", "world_size", "threads_per_process")},
    }
    atomic_write_json(run_dir / FINAL, final)
    return final


def _check_local(key: str, path: str, error, what: str = "dataset folder") -> None:
    from repro.data.hub import looks_local
    from repro.fixtures import resolve

    where = resolve(path)
    if looks_local(where) and not Path(where).expanduser().is_dir():
        raise error(f"{key}={path}: {what} not found")


def preflight(cfg) -> None:
    """Checks that cost nothing, run before any work (and, by `repro.train`, for every point of a sweep
    before the first one starts): runs_root is a writable folder, local source, evaluation and model
    folders exist. Hub ids are checked when loaded; the evaluation set is loaded before training."""
    from repro import scorer
    from repro.data.schema import DataError
    from repro.model import ModelError
    from repro.results import writable_dir

    writable_dir(cfg.runs_root, "runs_root", keep=False)
    for i, s in enumerate(cfg.data.sources):
        _check_local(f"data.sources[{i}].path", s.path, DataError)
    _check_local("eval.path", cfg.eval.path, DataError)
    d = cfg.data.decontamination
    if d.remove_from or d.report:
        _check_local("data.decontamination.benchmark", d.benchmark, DataError)
    if scorer.needs_scorer(cfg):
        if cfg.data.wildguard.scorer:
            _check_local("data.wildguard.scorer", cfg.data.wildguard.scorer, ModelError, "scorer folder")
        else:
            sub, _ = scorer.scorer_run(cfg)  # composes and validates the scorer's run before any work
            preflight(sub)
    if cfg.model.path:
        _check_local("model.path", cfg.model.path, ModelError, "model folder")


# Advice for a run dir that belongs to another config. Never a command that deletes it: it may hold days
# of someone's GPU time.
MOVE_ASIDE = ("A preset or default changed since it ran. To keep it, move it aside (mv '{run_dir}' "
              "'{run_dir}.old') or use another runs_root=; force=true would delete it")


def _finished(run_dir: Path, cfg) -> dict:
    refuse_if_changed(run_dir, cfg, "a finished run", MOVE_ASIDE.format(run_dir=run_dir))
    return json.loads((run_dir / FINAL).read_text())


def run(cfg, run_dir: str | Path) -> tuple[dict, bool]:
    """Run (or skip) one configuration. Returns (final results, whether it was skipped as done).

    One writer per run dir: the run holds the run dir's lock from the first write to final.json, and a
    second process on the same run dir stops at once with RunDirBusy naming the holder.
    """
    from repro.results import run_dir_lock

    run_dir = Path(run_dir)
    preflight(cfg)
    if is_done(run_dir) and not cfg.force:
        return _finished(run_dir, cfg), True
    with run_dir_lock(run_dir):
        if is_done(run_dir) and not cfg.force:  # finished by another process since the check above
            return _finished(run_dir, cfg), True
        return _run_locked(cfg, run_dir), False


def _run_locked(cfg, run_dir: Path) -> dict:
    from repro.data.sources import rewardbench as rb_source
    from repro.fit import set_cpu_threads
    from repro.launch import LAUNCHERS, check_machine
    from repro.results import discard

    trained = (run_dir / "train.json").is_file() and (run_dir / "model").is_dir()
    if cfg.force or not trained:  # what the launcher needs here (DeepSpeed, the SLURM allocation), before curating
        check_machine(cfg)
    # The evaluation set is read and validated before anything is trained: an unreachable or broken one
    # costs seconds, not a training run.
    eval_rows = rb_source.load(cfg.eval.path, cfg.eval.split, allow_partial=cfg.eval.allow_partial)
    if run_dir.exists() and cfg.force:
        print(f"force=true: discarding the previous run in {run_dir}", flush=True)
        discard(run_dir)
    elif trained and not cfg.force:
        refuse_if_changed(run_dir, cfg, "a trained model", MOVE_ASIDE.format(run_dir=run_dir))
        print(f"training finished earlier; evaluating its model: {run_dir}", flush=True)
    elif resumable(run_dir, cfg):
        print(f"resuming unfinished run from its last checkpoint: {run_dir}", flush=True)
    elif run_dir.exists():
        # Unfinished and no checkpoint to resume from: start over, so that stale metrics or weights never
        # mix with new ones.
        print(f"discarding the unfinished run in {run_dir} (no checkpoint to resume from); starting over", flush=True)
        discard(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    handler = _file_logging(run_dir)
    try:
        threads = set_cpu_threads(cfg)
        if not trained:
            config_mod.save(cfg, run_dir / "config.yaml")
            world = cfg.launcher.num_processes * cfg.launcher.num_machines
            atomic_write_json(run_dir / "env.json", {**env_info(world_size=world), "torch_threads_driver": threads})
            manifest = curate_into(cfg, run_dir)
            log.info("curated %d pairs (%d dropped) for data=%s", manifest["pairs"], manifest["dropped"],
                     cfg.data.name)
            LAUNCHERS[cfg.launcher.name](run_dir, cfg)
        final = evaluate_run(run_dir, rows=eval_rows)  # the set validated above: read once per run
        MetricsLog(run_dir / "metrics.jsonl").log(final["train"].get("steps") or 0, "eval",
                                                  **final["sections"], Score=final["Score"])
        return final
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()


def summary_table(final: dict, run_dir: Path, manifest: dict | None = None) -> str:
    """The human-readable report printed at the end of a run."""
    from repro.evaluate import format_table

    lines = [f"run dir: {run_dir}"]
    if manifest:
        lines.append(f"data:    {manifest['pairs']} curated pairs ({manifest['dropped']} candidates dropped, "
                     "by step and reason in data/manifest.json)")
    t = final.get("train") or {}
    if t.get("steps"):
        too_long = sum((t.get("tokenize_dropped") or {}).values())
        distinct = t.get("distinct_pairs_trained")
        lines.append(f"train:   {t['steps']} steps, {t['pairs_trained']} pairs"
                     + (f" ({distinct} distinct)" if distinct is not None else "")
                     + (f", {too_long} dropped as too long" if too_long else "")
                     + f", {t['seconds']:.1f} s ({t['pairs_per_second']:.0f} pairs/s)")
    lines.append(format_table(final, title=f"RewardBench ({final['eval']['examples']} examples, "
                                           f"{final['eval']['path']}):"))
    return "\n".join(lines)
