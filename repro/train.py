"""Entry point and sweep driver: `python -m repro.train [-m] [experiment=NAME] [key=value ...]`.

    python -m repro.train                          the whole pipeline in miniature on CPU (~1 min)
    python -m repro.train -m loss=bt,hinge         a sweep: one deterministic run dir per point
    python -m repro.train experiment=skywork_llama31_8b launcher.num_processes=8   (GPU node)

Per sweep point: compose the config (Hydra) -> typed dataclasses (`repro.config`) -> deterministic run
dir `<runs_root>/<experiment>/<overrides without seed>/seed=<n>` -> skip if it holds final.json ->
curate -> train (in-process, or `accelerate launch -m repro.fit`) -> RewardBench -> final.json.
Before Hydra starts, every point of the command is composed and checked (`preflight`): a bad group
name, key or value anywhere in a sweep is one line and exit 2 before the first point runs.
This is the only module that imports Hydra; everything it calls takes dataclasses.

Exit status: 0 done; 1 a sweep point failed; 2 bad input; 3 training diverged; 75 the run dir is in use
by another process; 130 interrupted (Ctrl-C, SIGTERM).
"""
from __future__ import annotations

import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from repro import config as config_mod
from repro import pipeline, results
from repro.data.schema import DataError
from repro.data.tokenize import TokenizationError
from repro.eval.rewardbench import RewardBenchError
from repro.launch import LaunchError
from repro.model import ModelError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
# Sweep points that failed (the basic launcher runs every point in this process).
FAILED: list[str] = []
# Errors that are the user's input, not a bug: one clear line, no traceback, exit 2.
USER_ERRORS = (config_mod.ConfigError, DataError, RewardBenchError, LaunchError, TokenizationError, ModelError,
               results.OutputDirError, FileNotFoundError)
# Ways a run stops that are not bad input: one line, their own exit status.
STOPS = (results.TrainingStopped, results.RunDirBusy)
# Hydra's own command-line flags (besides -m) leave the command to Hydra: no preflight.
_PREFLIGHT_FLAGS = ("-m", "--multirun")
_MAX_PREFLIGHT_POINTS = 2000


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    overrides = list(hc.overrides.task)
    try:
        run_cfg = config_mod.from_dict(OmegaConf.to_container(cfg, resolve=True))
        run_dir = results.run_dir_for(run_cfg.runs_root, run_cfg.experiment.name, overrides, run_cfg.seed).resolve()
        final, skipped = pipeline.run(run_cfg, run_dir)
    except (*USER_ERRORS, *STOPS) as e:
        print(e if isinstance(e, results.TrainingInterrupted) else f"error: {e}", file=sys.stderr, flush=True)
        if multirun and not isinstance(e, results.TrainingInterrupted):
            FAILED.append(" ".join(overrides) or "(no overrides)")
            print(f"error: sweep point {FAILED[-1]} failed; continuing with the others", file=sys.stderr)
            return None
        sys.exit(getattr(e, "exit_code", 2))
    manifest_path = run_dir / "data" / "manifest.json"
    manifest = results.read_json(manifest_path) if manifest_path.is_file() else None
    if skipped:
        print(f"skipping finished run (final.json exists; force=true reruns it): {run_dir}")
    print(pipeline.summary_table(final, run_dir, manifest), flush=True)
    return final["Score"]


# ---------------------------------------------------------------------------------------------------
# Preflight: every point of the command composed and validated before Hydra runs the first one.

def _schema_keys(cls, prefix: str = "") -> dict[str, object]:
    """Dotted config key -> its dataclass type (for nested groups) or None (a leaf)."""
    import dataclasses
    import typing

    out = {}
    for name, tp in typing.get_type_hints(cls).items():
        key = f"{prefix}{name}"
        out[key] = tp if dataclasses.is_dataclass(tp) else None
        if dataclasses.is_dataclass(tp):
            out.update(_schema_keys(tp, key + "."))
    return out


def _check_override(o, groups: dict[str, list[str]], keys: dict[str, object]) -> str | None:
    """Why one parsed override cannot work (a message), or None. Values are checked later, per point."""
    key = o.key_or_group
    if key.startswith("hydra") or o.is_delete():
        return None
    if key in groups and o.package is None:
        values = [str(v) for v in o.sweep_string_iterator()] if o.is_sweep_override() else [o.value()]
        bad = [v for v in values if v not in groups[key] and not (v in ("null", "None") and key == "sweep")]
        if bad:
            return f"{key}={bad[0]} is not a known {key} preset; valid: {', '.join(groups[key])}"
        return None
    parts = key.split(".")
    # data.sources.0.path: list items are checked by the schema after composition
    if parts[0] == "data" and len(parts) > 2 and parts[1] == "sources":
        return None
    if key not in keys:
        parent = ".".join(parts[:-1])
        valid = sorted(k.rsplit(".", 1)[-1] for k in keys if k.rsplit(".", 1)[0] == parent and "." in k) if parent \
            else sorted(k for k in keys if "." not in k)
        where = f"under {parent}" if parent else "at the top level"
        return f"unknown config key {key!r}; valid {where}: {', '.join(valid)}"
    return None


def _sweep_points(overrides: list[str], multirun: bool) -> list[list[str]]:
    """Every point of the command as a list of overrides (one point without -m)."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    if not multirun:
        return [overrides]
    # A sweep preset (conf/sweep/) lists its own params; the command line wins for the same key.
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        base = compose("config", overrides=[o for o in overrides if "," not in o and "(" not in o],
                       return_hydra_config=True)
    params = base.hydra.sweeper.get("params") if "sweeper" in base.hydra else None
    params = OmegaConf.to_container(params) if params is not None else {}
    given = {parser.parse_override(o).key_or_group for o in overrides}
    combined = [f"{k}={v}" for k, v in params.items() if k not in given] + overrides
    (batch,) = BasicSweeper.split_arguments(parser.parse_overrides(combined), None)
    return batch


def _one_line(e: Exception) -> str:
    """Hydra's multi-line messages folded into one line."""
    return "; ".join(line.strip().rstrip(".") for line in str(e).splitlines() if line.strip()) or type(e).__name__


def preflight(argv: list[str]) -> list[str]:
    """The reasons (one line each) why some point of this command cannot run; [] when all can."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser

    flags = [a for a in argv if a.startswith("-")]
    if any(f not in _PREFLIGHT_FLAGS for f in flags):
        return []
    overrides = [a for a in argv if not a.startswith("-")]
    groups = {p.name: sorted(q.stem for q in p.glob("*.yaml")) for p in CONF_DIR.iterdir() if p.is_dir()}
    keys = _schema_keys(config_mod.RunConfig)
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as e:  # noqa: BLE001 - Hydra's grammar errors span several lines
        return [f"cannot parse the overrides: {_one_line(e)}"]
    problems = [p for p in (_check_override(o, groups, keys) for o in parsed) if p]
    if problems:
        return problems
    try:
        points = _sweep_points(overrides, multirun=bool(flags))
    except Exception as e:  # noqa: BLE001
        return [f"cannot expand the sweep: {_one_line(e)}"]
    problems = []
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for point in points[:_MAX_PREFLIGHT_POINTS]:
            label = f"sweep point {' '.join(point)}: " if len(points) > 1 else ""
            try:
                cfg = compose("config", overrides=[o for o in point if not o.lstrip("+~").startswith("hydra")])
                run_cfg = config_mod.from_dict(OmegaConf.to_container(cfg, resolve=True))
                pipeline.preflight(run_cfg)
            except USER_ERRORS as e:
                problems.append(f"{label}{e}")
            except Exception as e:  # noqa: BLE001 - anything Hydra/OmegaConf raises while composing
                problems.append(f"{label}{_one_line(e)}")
    return problems


def _terminate_as_interrupt(signum, frame):
    # SIGTERM (kill, a cluster's time limit) stops a run as Ctrl-C does: workers report their step and go.
    raise KeyboardInterrupt


def cli() -> None:
    if not CONF_DIR.is_dir():
        sys.exit(f"error: config folder {CONF_DIR} not found; install the package from its source tree "
                 "(pip install -e .) so conf/ sits beside repro/")
    problems = preflight(sys.argv[1:])
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    if problems:
        sys.exit(2)
    signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        main()
    except KeyboardInterrupt:  # outside training (curation, evaluation): nothing half-written is kept
        print("interrupted; rerun the same command to continue (a finished training is evaluated, an "
              "unfinished one resumes from its last checkpoint)", file=sys.stderr)
        sys.exit(130)
    if FAILED:
        print(f"error: {len(FAILED)} sweep point(s) failed: " + "; ".join(FAILED), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    cli()
