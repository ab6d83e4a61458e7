import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def run_cli(args: list[str], cwd: Path, timeout: int = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run `python -m ...` as a user would, from `cwd`, and return the finished process."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", TQDM_DISABLE="1", **(env or {}))
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def default_run(tmp_path_factory):
    """`python -m repro.train` with no arguments, from a folder outside the repository."""
    cwd = tmp_path_factory.mktemp("user_cwd")
    proc = run_cli(["-m", "repro.train"], cwd)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"cwd": cwd, "proc": proc, "run_dir": cwd / "runs" / "tiny" / "default" / "seed=0"}
