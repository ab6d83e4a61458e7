"""Launcher command lines (what the driver starts for multi-process and DeepSpeed runs)."""
import sys

import pytest

from repro.config import LauncherConfig, RunConfig
from repro.launch import LaunchError, accelerate_command, launch_local


def cfg_with(**launcher) -> RunConfig:
    return RunConfig(launcher=LauncherConfig(name="accelerate", **launcher))


def test_single_node_ddp_command():
    cmd = accelerate_command("RUN", cfg_with(num_processes=8))
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert cmd[cmd.index("--num_processes") + 1] == "8" and "--multi_gpu" in cmd
    assert cmd[-3:] == ["-m", "repro.fit", "RUN"]
    assert "--cpu" not in cmd  # accelerate's --cpu would silently start one process
    port = int(cmd[cmd.index("--main_process_port") + 1])  # a free one, not accelerate's default for all runs
    assert port != 29500
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # still free


def test_multi_node_flags(monkeypatch):
    monkeypatch.setenv("SLURM_NODEID", "1")
    monkeypatch.setenv("MASTER_ADDR", "node-a")
    cmd = accelerate_command("RUN", cfg_with(num_processes=8, num_machines=2))
    assert cmd[cmd.index("--num_processes") + 1] == "16"  # accelerate counts processes over all machines
    assert cmd[cmd.index("--machine_rank") + 1] == "1" and cmd[cmd.index("--main_process_ip") + 1] == "node-a"


def test_local_launcher_refuses_several_processes():
    with pytest.raises(LaunchError, match="launcher=accelerate"):
        launch_local("RUN", RunConfig(launcher=LauncherConfig(num_processes=2)))
