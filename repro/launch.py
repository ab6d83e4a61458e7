"""Launchers: how the training worker (`repro.fit`) is started. LAUNCHERS = {name: fn(run_dir, cfg)}.

    local       in this process (one CPU or one GPU): no subprocess, fastest start
    accelerate  `accelerate launch --multi_gpu ... -m repro.fit RUN_DIR`: several processes (DDP)
    (DeepSpeed ZeRO-3, which the 8B/27B backbones need to fit in GPU memory, is planned.)

Hydra multirun never runs inside a distributed launch: the driver (one process per sweep point)
starts the workers, and the workers read the frozen config.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


class LaunchError(RuntimeError):
    pass


def launch_local(run_dir: Path, cfg) -> None:
    if cfg.launcher.num_processes * cfg.launcher.num_machines != 1:
        raise LaunchError("launcher=local runs one process; use launcher=accelerate for "
                          f"num_processes={cfg.launcher.num_processes}")
    from repro.fit import fit

    fit(run_dir)


def accelerate_command(run_dir: Path, cfg) -> list[str]:
    """The `accelerate launch` command line for this run (also printed, so it can be rerun by hand)."""
    la = cfg.launcher
    world = la.num_processes * la.num_machines
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(world),
           "--num_machines", str(la.num_machines)]
    if la.num_machines > 1:
        # On SLURM each node runs this driver's worker command with its own rank (see conf/launcher/).
        cmd += ["--machine_rank", os.environ.get("SLURM_NODEID", "0"),
                "--main_process_ip", os.environ.get("MASTER_ADDR", "127.0.0.1"),
                "--main_process_port", os.environ.get("MASTER_PORT", "29500")]
    if world > 1:
        # On CPU, `--cpu --num_processes N` silently starts one process; --multi_gpu with a gloo
        # Accelerator(cpu=True) in the worker starts N.
        cmd += ["--multi_gpu"]
    cmd += ["-m", "repro.fit", str(run_dir)]
    return cmd


def launch_accelerate(run_dir: Path, cfg) -> None:
    cmd = accelerate_command(run_dir, cfg)
    log_path = Path(run_dir) / "fit.log"
    print("launching:", " ".join(cmd), f"(log: {log_path})", flush=True)
    with log_path.open("a") as log:
        rc = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        tail = "".join(log_path.read_text().splitlines(keepends=True)[-20:])
        raise LaunchError(f"training workers exited with status {rc}; last lines of {log_path}:\n{tail}")


LAUNCHERS = {"local": launch_local, "accelerate": launch_accelerate}
