"""The run-dir contract, atomic writes, provenance, and collecting runs into one tidy table.

A run dir holds:
    config.yaml            the resolved, frozen config (workers read it; no Hydra)
    env.json               git SHA + dirty flag, package versions, devices, world size
    data/manifest.json     curation counts and drop reasons (copied from the data cache)
    metrics.jsonl          one JSON object per line: {"step", "split", "metric", "value"}
    model/                 safetensors weights + tokenizer
    eval/per_example.parquet   id, subset, score_chosen, score_rejected, correct
    eval/subsets.json      per-subset accuracy and counts
    eval/run_rm.json       the official run_rm.py per-subset format (for the leaderboard tooling)
    final.json             sections, Score, weighting, run identity — written last: its presence = done
Every file is written to a temp file and renamed, so a killed run never leaves a half-written result.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

FINAL = "final.json"
# Overrides that do not change what a run computes, or that already name the path elsewhere.
# `sweep` only generates overrides, which name the run themselves.
_NOT_IN_RUN_NAME = ("seed", "runs_root", "force", "experiment", "sweep")
_MAX_NAME = 200


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it over `path` (never half-written).

    Temp names are unique, so parallel writers of the same file (sweep points sharing a cache) never clash.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def atomic_write_json(path: str | Path, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: str | Path):
    return json.loads(Path(path).read_text())


def atomic_write_parquet(path: str | Path, data) -> Path:
    """A pandas DataFrame or a pyarrow Table, written atomically as parquet."""
    if hasattr(data, "to_parquet"):
        return atomic_write(path, lambda tmp: data.to_parquet(tmp, index=False))
    import pyarrow.parquet as pq

    return atomic_write(path, lambda tmp: pq.write_table(data, tmp))


def run_name(overrides: Iterable[str]) -> str:
    """Deterministic folder name from command-line overrides: sorted, seed/experiment left out.

    `["loss=hinge", "optim.lr=1e-3", "seed=2"]` -> `"loss=hinge,optim.lr=1e-3"`; none -> `"default"`.
    """
    kept = []
    for o in overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if key in _NOT_IN_RUN_NAME or key.startswith("hydra"):
            continue
        kept.append(o.replace("/", "_").replace(" ", "").replace("'", "").replace('"', ""))
    name = ",".join(sorted(kept)) or "default"
    if len(name.encode()) > _MAX_NAME:
        # File systems cap a path component at 255 bytes: keep a readable prefix plus a hash of the whole.
        digest = hashlib.sha256(name.encode()).hexdigest()[:12]
        name = name.encode()[: _MAX_NAME - 13].decode(errors="ignore") + "~" + digest
    return name


def run_dir_for(runs_root: str | Path, experiment: str, overrides: Iterable[str], seed: int) -> Path:
    return Path(runs_root) / experiment / run_name(overrides) / f"seed={seed}"


def is_done(run_dir: str | Path) -> bool:
    return (Path(run_dir) / FINAL).is_file()


class MetricsLog:
    """Append-only `metrics.jsonl` writer (main process only)."""

    def __init__(self, path: str | Path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled

    def drop_after(self, step: int) -> None:
        """Remove lines logged after `step` (a resumed run rewrites them)."""
        if not self.enabled or not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text().splitlines(keepends=True):
            try:
                if json.loads(line)["step"] <= step:
                    kept.append(line if line.endswith("\n") else line + "\n")
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut off when the run was killed
        atomic_write_text(self.path, "".join(kept))

    def log(self, step: int, split: str, **metrics: float) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            for k, v in metrics.items():
                f.write(json.dumps({"step": step, "split": split, "metric": k, "value": float(v)}) + "\n")


def _git(*args: str) -> str | None:
    try:
        root = Path(__file__).resolve().parents[1]
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def env_info(world_size: int = 1) -> dict:
    """Provenance for env.json: code version, packages, devices."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for pkg in ("repro", "torch", "transformers", "datasets", "accelerate", "deepspeed", "hydra-core"):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = None
    devices = {"cuda_available": False, "cuda_devices": []}
    try:
        import torch

        if torch.cuda.is_available():
            devices = {"cuda_available": True,
                       "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]}
    except ImportError:
        pass
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_sha": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "versions": versions,
        "world_size": world_size,
        **devices,
    }


def collect(runs_root: str | Path):
    """One tidy row per finished run (every `final.json` under `runs_root`) as a pandas DataFrame."""
    import pandas as pd

    rows = []
    for p in sorted(Path(runs_root).rglob(FINAL)):
        final = json.loads(p.read_text())
        ci = {f"{k} {side}": v[i] for k, v in final.get("ci95", {}).items() for i, side in enumerate(("low", "high"))}
        rows.append({"run_dir": str(p.parent), **final["run"], **final["sections"], "Score": final["Score"],
                     **ci, "weights": final["weights"], "eval_path": final["eval"]["path"],
                     "examples": final["eval"]["examples"]})
    return pd.DataFrame(rows)
