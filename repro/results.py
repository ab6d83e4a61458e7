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

import contextlib
import hashlib
import json
import logging
import math
import os
import platform
import secrets
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
# Config groups that say how a run executes, not what it computes (1, 2 or 8 processes, thread counts
# train the same model: the global batch, data order and schedule do not depend on them). They stay out
# of the run dir's name and of the skip/resume config check.
HOW_NOT_WHAT = ("launcher",)


class OutputDirError(ValueError):
    """A folder the user named for output that is a file or cannot be written; the message names it."""


def writable_dir(path: str | Path, key: str, *, keep: bool = True) -> Path:
    """Create `path` if needed and check that a file can be written in it, before any expensive work.

    Raises OutputDirError naming `key` (the option or config key the user set) when it is a file, or
    when the folder cannot be created or written (read-only file system, no permission). With
    `keep=False` the folders it had to create are removed again (a check that leaves nothing behind).
    """
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise OutputDirError(f"{key}={path}: is a file, not a folder")
    created = next((q for q in reversed([p, *p.parents]) if not q.exists()), None)
    try:
        p.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=p, prefix=".write-test-")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputDirError(f"{key}={path}: cannot write there ({e.strerror or type(e).__name__})") from None
    finally:
        if created is not None and not keep:
            for q in [p, *p.parents]:  # empty folders only: another process may have started using one
                try:
                    q.rmdir()
                except OSError:
                    break
                if q == created:
                    break
    return p


def atomic_write(path: str | Path, write: Callable[[str], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it over `path` (never half-written).

    Temp names are unique, so parallel writers of the same file (sweep points sharing a cache) never clash.
    The file gets the permissions of any new file (0666 less the user's umask), so teammates on a shared
    cluster can read results as they could read anything else the user writes.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp")
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the kernel applies the umask
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


def discard(folder: str | Path) -> None:
    """Delete a folder by renaming it first, so that a kill half-way never leaves something that looks
    complete (a checkpoint, a run dir)."""
    import shutil

    folder = Path(folder)
    trash = folder.with_name(f".trash_{folder.name}")
    if trash.exists():
        shutil.rmtree(trash)  # left by a kill during an earlier discard
    os.replace(folder, trash)
    shutil.rmtree(trash)


def read_json(path: str | Path):
    return json.loads(Path(path).read_text())


def update_json(path: str | Path, **fields) -> Path:
    """Add or replace top-level fields of a JSON object file, atomically."""
    return atomic_write_json(path, {**read_json(path), **fields})


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
        if key in _NOT_IN_RUN_NAME or key.split(".")[0] in HOW_NOT_WHAT or key.startswith("hydra"):
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


class TrainingStopped(RuntimeError):
    """Training ended before its last step; the run dir has no final.json and keeps its checkpoints.

    `exit_code` is what the command exits with. Raised by the training loop, re-raised by the driver from
    a worker's one-line report (see `repro.launch`).
    """

    exit_code = 1


class TrainingDiverged(TrainingStopped):
    """A non-finite loss or gradient norm: the update is not applied and nothing after it is written."""

    exit_code = 3


class TrainingInterrupted(TrainingStopped):
    """Ctrl-C, SIGINT or SIGTERM (a cluster's time limit) while training."""

    exit_code = 130


class RunDirBusy(RuntimeError):
    """Another live process holds the run dir's lock."""

    exit_code = 75  # EX_TEMPFAIL: try again later


@contextlib.contextmanager
def run_dir_lock(run_dir: str | Path):
    """Hold an exclusive lock on `run_dir` for one writer at a time; RunDirBusy names the holder.

    The lock is an `flock` on `.<name>.lock` beside the run dir (outside it, so discarding a run dir never
    frees the lock of its holder). The kernel releases it when its holder exits, however it exits, so a
    killed run never blocks a rerun. The accelerate launcher inherits the lock while it runs.
    """
    import fcntl
    import socket
    import time

    run_dir = Path(run_dir)
    path = run_dir.parent / f".{run_dir.name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = Path(path).read_text().strip() or "another process"
        os.close(fd)
        raise RunDirBusy(f"{run_dir} is in use by {holder}; wait for it to end or stop it, then rerun") from None
    except OSError as e:  # a file system without locks (e.g. Lustre without -o flock)
        logging.getLogger(__name__).warning("cannot lock %s (%s): nothing stops two runs writing there",
                                            run_dir, e.strerror)
    _HELD[run_dir.resolve()] = fd
    os.ftruncate(fd, 0)
    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
             .encode())
    try:
        yield fd
    finally:
        _HELD.pop(run_dir.resolve(), None)
        os.close(fd)  # the lock file stays: removing it would race with the next holder


_HELD: dict[Path, int] = {}  # run dir -> descriptor of the lock this process holds on it


def held_lock_fd(run_dir: str | Path) -> int | None:
    """The descriptor of this process's lock on `run_dir` (passed to launchers so that it outlives the
    driver until the workers are gone), or None."""
    return _HELD.get(Path(run_dir).resolve())


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
        """Append one line per metric; a NaN or infinite value is written as null (strict JSON)."""
        if not self.enabled:
            return
        lines = []
        for k, v in metrics.items():
            v = float(v)
            lines.append(json.dumps({"step": step, "split": split, "metric": k,
                                     "value": v if math.isfinite(v) else None}, allow_nan=False) + "\n")
        with self.path.open("a") as f:
            f.write("".join(lines))


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
