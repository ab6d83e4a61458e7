"""Entry point and sweep driver: `python -m repro.train [-m] [experiment=NAME] [key=value ...]`.

    python -m repro.train                          the whole pipeline in miniature on CPU (~1 min)
    python -m repro.train -m loss=bt,hinge         a sweep: one deterministic run dir per point
    python -m repro.train experiment=skywork_llama31_8b launcher.num_processes=8   (GPU node)

Per sweep point: compose the config (Hydra) -> typed dataclasses (`repro.config`) -> deterministic run
dir `<runs_root>/<experiment>/<overrides without seed>/seed=<n>` -> skip if it holds final.json ->
curate -> train (in-process, or `accelerate launch -m repro.fit`) -> RewardBench -> final.json.
This is the only module that imports Hydra; everything it calls takes dataclasses.
"""
from __future__ import annotations

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
# Errors that are the user's input, not a bug: one clear line, no traceback.
# Sweep points that failed with a user error (the basic launcher runs every point in this process).
FAILED: list[str] = []
USER_ERRORS = (config_mod.ConfigError, DataError, RewardBenchError, LaunchError, TokenizationError, ModelError,
               FileNotFoundError)


@hydra.main(config_path=str(CONF_DIR), config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    hc = HydraConfig.get()
    multirun = hc.mode == RunMode.MULTIRUN
    overrides = list(hc.overrides.task)
    try:
        run_cfg = config_mod.from_dict(OmegaConf.to_container(cfg, resolve=True))
        run_dir = results.run_dir_for(run_cfg.runs_root, run_cfg.experiment.name, overrides, run_cfg.seed).resolve()
        final, skipped = pipeline.run(run_cfg, run_dir)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        if multirun:
            FAILED.append(" ".join(overrides) or "(no overrides)")
            print(f"error: sweep point {FAILED[-1]} failed; continuing with the others", file=sys.stderr)
            return None
        sys.exit(2)
    manifest_path = run_dir / "data" / "manifest.json"
    manifest = results.read_json(manifest_path) if manifest_path.is_file() else None
    if skipped:
        print(f"skipping finished run (final.json exists; force=true reruns it): {run_dir}")
    print(pipeline.summary_table(final, run_dir, manifest), flush=True)
    return final["Score"]


if __name__ == "__main__":
    if not CONF_DIR.is_dir():
        sys.exit(f"error: config folder {CONF_DIR} not found; install the package from its source tree "
                 "(pip install -e .) so conf/ sits beside repro/")
    main()
    if FAILED:
        print(f"error: {len(FAILED)} sweep point(s) failed: " + "; ".join(FAILED), file=sys.stderr)
        sys.exit(1)
