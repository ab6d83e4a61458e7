"""Several machines under SLURM: node lists, the srun line and each node's `accelerate launch`, the
submitit presets, and the whole run through a stand-in for srun that plays two nodes on this machine."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from repro import config as config_mod
from repro.config import LauncherConfig, RunConfig
from repro.launch import (NODE_RANK, LaunchError, SlurmAllocation, accelerate_command, expand_nodelist,
                          launch_accelerate, slurm_allocation, srun_command)
from repro.results import TrainingDiverged, run_dir_for

from conftest import ROOT, run_cli

# A stand-in for srun on one machine: runs the step's command once per "node" with that node's
# SLURM_NODEID, as srun does on each node of an allocation. Like srun it forwards SIGTERM to every task,
# only reports on a single SIGINT, and with --kill-on-bad-exit stops the other tasks when one fails. It
# appends its options and command (JSON) to $FAKE_SRUN_LOG, and "TERM" when it is told to stop.
FAKE_SRUN = r'''#!{python}
import json, os, signal, subprocess, sys, time
args = sys.argv[1:]
options = []
while args and args[0].startswith("-"):
    options.append(args.pop(0))
log = os.environ.get("FAKE_SRUN_LOG")
def note(entry):
    if log:
        with open(log, "a") as f:
            f.write(json.dumps(entry) + "\n")
note({{"options": options, "command": args}})
nodes = int(next(o.split("=", 1)[1] for o in options if o.startswith("--nodes=")))
procs = []
def forward(signum, frame):
    note("TERM")
    for p in procs:
        p.terminate()
signal.signal(signal.SIGTERM, forward)
signal.signal(signal.SIGINT, lambda signum, frame: None)
for i in range(nodes):
    procs.append(subprocess.Popen(args, env={{**os.environ, "SLURM_NODEID": str(i), "SLURM_PROCID": str(i),
                                              "SLURM_LOCALID": "0"}}))
status = 0
while any(p.poll() is None for p in procs):
    failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
    if failed and not status and "--kill-on-bad-exit=1" in options:
        status = failed[0]
        for p in procs:
            if p.poll() is None:
                p.terminate()
    time.sleep(0.05)
sys.exit(status or next((p.returncode for p in procs if p.returncode), 0))
'''


@pytest.fixture
def fake_srun(tmp_path, monkeypatch):
    """PATH with the srun stand-in first; returns the file its calls are appended to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    srun = bin_dir / "srun"
    srun.write_text(FAKE_SRUN.format(python=sys.executable))
    srun.chmod(0o755)
    log = tmp_path / "srun_calls.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_SRUN_LOG", str(log))
    return log


def slurm_env(monkeypatch, nodelist: str, nnodes: int, **extra) -> None:
    for key in ("SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURM_NODELIST", "SLURM_NNODES", "SLURM_JOB_NUM_NODES",
                "SLURM_CPUS_PER_TASK", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_JOB_NODELIST", nodelist)
    monkeypatch.setenv("SLURM_NNODES", str(nnodes))
    for key, value in extra.items():
        monkeypatch.setenv(key, str(value))


def cfg_with(**launcher) -> RunConfig:
    return RunConfig(launcher=LauncherConfig(name="accelerate", **launcher))


# ---------------------------------------------------------------------------------------------------
# Node lists: SLURM's compact form, expanded without `scontrol show hostnames`

@pytest.mark.parametrize("nodelist, hosts", [
    ("gpu[001-004,007]", ["gpu001", "gpu002", "gpu003", "gpu004", "gpu007"]),
    ("a[1-3],b5", ["a1", "a2", "a3", "b5"]),
    ("node17", ["node17"]),
    ("n1,n2,login-3", ["n1", "n2", "login-3"]),
    ("c[8-11]", ["c8", "c9", "c10", "c11"]),                   # no padding: the numbers grow
    ("c[098-101]", ["c098", "c099", "c100", "c101"]),          # padded to the first number's width
    ("ib[01-02]-eth,x[3]", ["ib01-eth", "ib02-eth", "x3"]),    # text after the brackets
    ("r[1-2]-n[1-2]", ["r1-n1", "r1-n2", "r2-n1", "r2-n2"]),   # two brackets: every combination
    ("gpu[001-002],cpu[10,12-13],head", ["gpu001", "gpu002", "cpu10", "cpu12", "cpu13", "head"]),
])
def test_nodelist_expands_like_slurm(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts
    # submitit ships its own parser of the same variable: both read these lists alike
    from submitit.slurm.slurm import _parse_node_list

    assert _parse_node_list(nodelist) == hosts


@pytest.mark.parametrize("nodelist", ["gpu[1-", "gpu[3-1]", "gpu[a-b]", "gpu[1-2]]", "gpu[[1]]", "a,,b", "gpu[1-]", ""])
def test_malformed_nodelist_is_refused(nodelist):
    with pytest.raises(ValueError):
        expand_nodelist(nodelist)


# ---------------------------------------------------------------------------------------------------
# The allocation, from SLURM's environment

def test_allocation_is_read_from_slurms_environment(monkeypatch, fake_srun):
    slurm_env(monkeypatch, "gpu[001-002,007]", 3, SLURM_CPUS_PER_TASK=16, MASTER_PORT=29611)
    alloc = slurm_allocation(cfg_with(num_processes=8, num_machines=3))
    assert alloc == SlurmAllocation("4242", ("gpu001", "gpu002", "gpu007"), "16", 29611)
    monkeypatch.delenv("MASTER_PORT")
    port = slurm_allocation(cfg_with(num_processes=8, num_machines=3)).main_process_port
    assert port != 29500 and 1024 <= port < 65536  # a free one, not accelerate's default for every run


@pytest.mark.parametrize("env, machines, message", [
    ({}, 2, "SLURM_JOB_ID / SLURM_JOB_NODELIST are not set here; on this machine use launcher.num_machines=1"),
    ({"SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "n[1-2]", "SLURM_NNODES": "2"}, 4,
     "launcher.num_machines=4 but SLURM job 7 has SLURM_NNODES=2 nodes: set launcher.num_machines=2"),
    ({"SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "n[1-3]", "SLURM_NNODES": "2"}, 2,
     "SLURM_NNODES=2 but SLURM_JOB_NODELIST='n[1-3]' names 3 hosts"),
    ({"SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "n[1-", "SLURM_NNODES": "2"}, 2,
     "SLURM_JOB_NODELIST='n[1-': cannot read it"),
    ({"SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "n[1-2]", "SLURM_NNODES": "2", "MASTER_PORT": "http"}, 2,
     "MASTER_PORT='http': not a port number"),
    ({"SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "n[1-2]", "SLURM_NNODES": "2", "PATH": "/nonexistent"}, 2,
     "srun not found on PATH inside SLURM job 7"),
])
def test_allocation_refusals_are_one_line(env, machines, message, fake_srun):
    full = {"PATH": os.environ["PATH"], **env}
    with pytest.raises(LaunchError) as e:
        slurm_allocation(cfg_with(num_processes=8, num_machines=machines), environ=full)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_several_machines_outside_an_allocation_stop_before_any_work(tmp_path, monkeypatch):
    for key in ("SLURM_JOB_ID", "SLURM_JOB_NODELIST", "SLURM_NODELIST"):
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(LaunchError, match="launcher.num_machines=2: several machines are started by srun"):
        launch_accelerate(tmp_path, cfg_with(num_processes=1, num_machines=2))
    assert list(tmp_path.iterdir()) == []  # nothing written, nothing started


def test_a_run_outside_an_allocation_stops_before_it_curates(tmp_path):
    """The driver checks the machine (`repro.launch.check_machine`) before curation, not when it launches."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    proc = subprocess.run([sys.executable, "-m", "repro.train", "launcher=accelerate", "launcher.num_machines=2",
                           "launcher.num_processes=1",
                           "launcher.cpu=true", "runs_root=runs"], cwd=tmp_path, env={**env, "TQDM_DISABLE": "1"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "launcher.num_machines=2: several machines are started by srun" in proc.stderr
    assert "Traceback" not in proc.stderr
    run_dir = tmp_path / "runs" / "tiny"
    assert not list(run_dir.rglob("manifest.json")) and not list(run_dir.rglob("config.yaml"))


# ---------------------------------------------------------------------------------------------------
# The command each node runs

def node_argv(script: str, node_id: int) -> list[str]:
    """The argv that `bash -c SCRIPT` executes on the node with this SLURM_NODEID (bash expands it, as on
    the node; the command is printed instead of executed)."""
    prefix, _, command = script.partition("exec ")
    assert prefix == "trap '' USR2; "
    out = subprocess.run(["bash", "-c", prefix + "printf '%s\\0' " + command], capture_output=True,
                         env={"SLURM_NODEID": str(node_id), "PATH": os.environ["PATH"]}, check=True)
    return out.stdout.decode().split("\0")[:-1]


def test_srun_line_and_each_nodes_accelerate_command(tmp_path, monkeypatch, fake_srun):
    slurm_env(monkeypatch, "gpu[001-002,007]", 3, SLURM_CPUS_PER_TASK=16, MASTER_PORT=29611)
    cfg = cfg_with(num_processes=8, num_machines=3)
    run_dir = tmp_path / "runs" / "exp" / "default" / "seed=0"
    alloc = slurm_allocation(cfg)
    cmd = srun_command(accelerate_command(run_dir, cfg, rendezvous=alloc.rendezvous(NODE_RANK)), alloc)
    assert cmd[:-1] == ["srun", "--nodes=3", "--ntasks=3", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "--overlap",
                        "--cpus-per-task=16", "bash", "-c"]
    assert "SLURM_NODEID" in cmd[-1] and "$SLURM_NODEID" not in " ".join(cmd[:-1])  # expanded on the nodes only
    for node in range(3):
        assert node_argv(cmd[-1], node) == [
            sys.executable, "-m", "accelerate.commands.launch", "--config_file", f"{run_dir}/accelerate_config.yaml",
            "--num_processes", "24", "--num_machines", "3",  # accelerate counts processes over all machines
            "--machine_rank", str(node), "--main_process_ip", "gpu001", "--main_process_port", "29611",
            "--multi_gpu", "-m", "repro.fit", str(run_dir)]


def test_the_nodes_processes_ignore_the_time_limit_warning():
    """A job's --signal=USR2@120 reaches the job steps, not the driver in the batch shell: the launchers
    and workers that srun starts must not die of it."""
    alloc = SlurmAllocation("1", ("n1", "n2"), None, 29611)
    check = "import signal; print(signal.getsignal(signal.SIGUSR2) == signal.SIG_IGN)"
    script = srun_command([sys.executable, "-c", check], alloc)[-1]
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env={"SLURM_NODEID": "1"}, check=True)
    assert out.stdout.strip() == "True"
    plain = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, check=True)
    assert plain.stdout.strip() == "False"  # not the default: the trap does it


def test_paths_with_spaces_and_quotes_reach_the_nodes_intact(tmp_path, monkeypatch, fake_srun):
    slurm_env(monkeypatch, "n[1-2]", 2, MASTER_PORT=29611)
    cfg = cfg_with(num_processes=1, num_machines=2)
    run_dir = tmp_path / "it's a $HOME run"
    alloc = slurm_allocation(cfg)
    script = srun_command(accelerate_command(run_dir, cfg, rendezvous=alloc.rendezvous(NODE_RANK)), alloc)[-1]
    assert node_argv(script, 1)[-1] == str(run_dir)


def test_a_node_whose_worker_diverged_is_the_runs_one_line_error(tmp_path, monkeypatch):
    """Through srun as through accelerate launch: the workers' stop lines in fit.log become the error."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text("#!/bin/sh\necho 'some worker noise'\n"
                                  "echo 'stopped (rank 1, TrainingDiverged): non-finite loss at step 4 of 30' >&2\n"
                                  "exit 3\n")
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    slurm_env(monkeypatch, "n[1-2]", 2)
    with pytest.raises(TrainingDiverged, match=r"^non-finite loss at step 4 of 30$"):
        launch_accelerate(tmp_path, cfg_with(num_processes=1, num_machines=2))
    assert (tmp_path / "accelerate_config.yaml").is_file()


WORKER_UNTIL_CTRL_C = """\
import os, sys, time
try:
    open(os.path.join(sys.argv[1], "up-" + os.environ["SLURM_NODEID"]), "w").close()
    time.sleep(300)
except KeyboardInterrupt:  # one write per line: two nodes' lines never interleave in fit.log
    os.write(2, f"stopped (rank {os.environ['SLURM_NODEID']}, TrainingInterrupted): interrupted at step 7 of 30; "
                "rerun the same command to resume from step_5\\n".encode())
    sys.exit(130)
"""


def test_ctrl_c_stops_every_node_and_reports_the_step(tmp_path, fake_srun):
    """Ctrl-C (or SIGTERM) in the driver: the workers of every node get SIGINT, report the step they
    reached, and the driver's one line is theirs."""
    alloc = SlurmAllocation("1", ("n1", "n2"), None, 29611)
    cmd = srun_command([sys.executable, "-c", WORKER_UNTIL_CTRL_C, str(tmp_path)], alloc)
    driver = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom repro.launch import run_workers, stop_srun\ntry:\n"
         "    run_workers(sys.argv[1], eval(sys.argv[2]), stop=stop_srun)\nexcept Exception as e:\n"
         "    print(type(e).__name__, e)", str(tmp_path), repr(cmd)],
        env=os.environ, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(tmp_path.glob("up-*"))) < 2:
        time.sleep(0.05)
    assert sorted(p.name for p in tmp_path.glob("up-*")) == ["up-0", "up-1"]  # both "nodes" are in the worker
    driver.send_signal(signal.SIGINT)
    out, _ = driver.communicate(timeout=60)
    assert out.strip().splitlines()[-1] == ("TrainingInterrupted interrupted at step 7 of 30; rerun the same command "
                                            "to resume from step_5")
    assert (tmp_path / "fit.log").read_text().count("TrainingInterrupted") == 2  # both nodes reported


def test_srun_is_stopped_when_the_driver_is_killed(tmp_path, fake_srun):
    """kill -9 of the driver: the kernel sends srun SIGTERM (srun then ends the step on every node)."""
    node_cmd = [sys.executable, "-c", WORKER_UNTIL_CTRL_C, str(tmp_path)]
    alloc = SlurmAllocation("1", ("n1", "n2"), None, 29611)
    driver = subprocess.Popen([sys.executable, "-c", "import sys; from repro.launch import run_workers; "
                               "run_workers(sys.argv[1], eval(sys.argv[2]))", str(tmp_path),
                               repr(srun_command(node_cmd, alloc))], env=os.environ, cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list(tmp_path.glob("up-*"))) < 2:
        time.sleep(0.05)
    assert sorted(p.name for p in tmp_path.glob("up-*")) == ["up-0", "up-1"], "srun never started the nodes"
    driver.kill()
    driver.wait()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "TERM" not in fake_srun.read_text():
        time.sleep(0.05)
    assert '"TERM"' in fake_srun.read_text()


# ---------------------------------------------------------------------------------------------------
# Hydra: the submitit presets, and the run config inside a job

def hydra_launcher(overrides):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides, return_hydra_config=True)
    return cfg.hydra.launcher, OmegaConf.to_container(cfg.hydra.launcher, resolve=False)


def sbatch_script(params: dict, folder: Path) -> tuple[str, int]:
    """The sbatch file submitit writes for these launcher params (the plugin's mapping: its base keys keep
    their names, the others are passed as slurm_<key>), and how many tasks submitit waits for."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from omegaconf import OmegaConf

    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor = submitit.AutoExecutor(cluster="slurm", folder=folder, slurm_max_num_timeout=params["max_num_timeout"])
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()
                                  if k not in ("submitit_folder", "max_num_timeout", "_target_")})
    inner = executor._executor
    return inner._make_submission_file_text(inner._submitit_command_str, "uid"), inner._num_tasks()


@pytest.mark.parametrize("preset, nodes", [("slurm_1node8gpu", 1), ("slurm_4node8gpu", 4)])
def test_submitit_presets_compose_into_one_driver_per_job(preset, nodes, tmp_path, fake_srun):
    node, params = hydra_launcher([f"hydra/launcher={preset}"])
    from omegaconf import OmegaConf

    assert OmegaConf.is_missing(node, "partition")  # required: the cluster's partition
    node, params = hydra_launcher([f"hydra/launcher={preset}", "hydra.launcher.partition=gpu",
                                   "hydra.launcher.timeout_min=90"])
    assert params["_target_"] == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    params["name"] = "repro.train"  # interpolations Hydra fills at submission time
    text, tasks = sbatch_script(params, tmp_path)
    lines = text.splitlines()
    for flag in (f"--nodes={nodes}", "--ntasks-per-node=1", "--gpus-per-node=8", "--cpus-per-task=64",
                 "--partition=gpu", "--mem=0", "--time=90"):
        assert f"#SBATCH {flag}" in lines, flag
    assert sum(line.startswith("#SBATCH --nodes=") for line in lines) == 1
    command = [line for line in lines if "submitit.core._submit" in line]
    assert len(command) == 1 and not command[0].lstrip().startswith("srun")  # the driver runs once, not per node
    assert tasks == 1  # submitit waits for the driver's result only


def test_sweep_on_the_4_node_preset_runs_every_point_on_4_nodes(monkeypatch):
    """`-m hydra/launcher=slurm_4node8gpu experiment=skywork_gemma2_27b sweep=table3_losses`: eight jobs;
    inside each (SLURM_NNODES=4) the run starts 8 processes on each of the 4 nodes, in the run dir the
    same sweep has on one machine."""
    from repro import train

    argv = ["hydra/launcher=slurm_4node8gpu", "experiment=skywork_gemma2_27b", "sweep=table3_losses"]
    points = train._sweep_points(argv, multirun=True)
    assert len(points) == 8
    one_machine = train._sweep_points(argv[1:], multirun=True)
    monkeypatch.setenv("SLURM_NNODES", "4")  # as in the job's batch script
    for point, local in zip(points, one_machine):
        cfg = config_mod.compose([o for o in point if not o.startswith("hydra")])
        assert (cfg.launcher.name, cfg.launcher.num_processes, cfg.launcher.num_machines) == ("zero3", 8, 4)  # the paper presets shard with ZeRO-3
        assert run_dir_for("runs", cfg.experiment.name, point, cfg.seed) == \
            run_dir_for("runs", cfg.experiment.name, local, cfg.seed)
    monkeypatch.delenv("SLURM_NNODES")
    assert config_mod.compose(["experiment=skywork_gemma2_27b"]).launcher.num_machines == 1  # outside a job


def test_sweep_on_a_preset_passes_preflight():
    from repro import train

    assert train.preflight(["-m", "hydra/launcher=slurm_4node8gpu", "experiment=skywork_gemma2_27b",
                            "sweep=table3_losses"]) == []


# ---------------------------------------------------------------------------------------------------
# End to end on CPU

@pytest.mark.slow
def test_sweep_point_through_submitits_local_executor(tmp_path):
    proc = run_cli(["-m", "repro.train", "-m", "hydra/launcher=submitit_local", "data=fixture_released",
                    "optim.max_steps=3"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    run_dir = tmp_path / "runs" / "tiny" / "data=fixture_released,optim.max_steps=3" / "seed=0"
    final = json.loads((run_dir / "final.json").read_text())
    assert final["run"]["name"] == "data=fixture_released,optim.max_steps=3" and final["train"]["steps"] == 3
    assert list((tmp_path / "runs" / "_hydra" / "multirun" / ".submitit").iterdir())  # it went through submitit


@pytest.mark.slow
def test_two_nodes_through_srun_end_to_end(tmp_path, fake_srun):
    """Two "nodes" (this machine twice, 127.0.0.1 and 127.0.0.2) with one CPU worker each: the driver's
    srun starts one `accelerate launch` per node, the two meet at the first host, train over gloo, and the
    run finishes in the run dir of the same command on one machine. The user's default accelerate config
    is broken YAML: reading it would fail the launch."""
    hf_home = tmp_path / "hf_home"
    (hf_home / "accelerate").mkdir(parents=True)
    (hf_home / "accelerate" / "default_config.yaml").write_text("distributed_type: [unclosed\n")
    env = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "127.0.0.[1-2]", "SLURM_NNODES": "2", "HF_HOME": str(hf_home),
           "PATH": os.environ["PATH"], "FAKE_SRUN_LOG": str(fake_srun)}
    proc = run_cli(["-m", "repro.train", "data=fixture_released", "optim.max_steps=3", "launcher=accelerate",
                    "launcher.cpu=true", "launcher.num_processes=1", "launcher.cpu_threads=1"], tmp_path, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "tiny" / "data=fixture_released,optim.max_steps=3" / "seed=0"
    assert json.loads((run_dir / "train.json").read_text())["world_size"] == 2
    assert config_mod.load(run_dir / "config.yaml").launcher.num_machines == 2  # from SLURM_NNODES
    assert (run_dir / "final.json").is_file()
    (call,) = [json.loads(line) for line in fake_srun.read_text().splitlines()]
    assert call["options"][:3] == ["--nodes=2", "--ntasks=2", "--ntasks-per-node=1"]
    for node in (0, 1):
        argv = node_argv(call["command"][-1], node)
        assert argv[argv.index("--machine_rank") + 1] == str(node)
        assert argv[argv.index("--main_process_ip") + 1] == "127.0.0.1"
