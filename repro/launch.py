"""Launchers: how the training worker (`repro.fit`) is started. LAUNCHERS = {name: fn(run_dir, cfg)}.

    local       in this process (one CPU or one GPU): no subprocess, fastest start
    accelerate  `accelerate launch --multi_gpu ... -m repro.fit RUN_DIR`: several processes (DDP) on this
                machine, or with launcher.num_machines > 1 on every node of the SLURM allocation the
                driver runs in (one `accelerate launch` per node, started by `srun`)
    zero3       the same with DeepSpeed ZeRO-3 (`accelerate launch --use_deepspeed --deepspeed_config_file
                RUN_DIR/deepspeed.json ...`): parameters, gradients and optimizer states sharded over the
                ranks, which the 8B/27B backbones need to fit in GPU memory (repro/zero3.py)

Hydra multirun never runs inside a distributed launch: the driver (one process per sweep point)
starts the workers, and the workers read the frozen config.
"""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from repro.results import TrainingDiverged, TrainingInterrupted, TrainingStopped


class LaunchError(RuntimeError):
    """A launcher setting that cannot work (bad input)."""


class WorkerFailed(TrainingStopped):
    """A training worker failed; the others were stopped with it."""


def launch_local(run_dir: Path, cfg) -> None:
    if cfg.launcher.num_processes * cfg.launcher.num_machines != 1:
        raise LaunchError("launcher=local runs one process; use launcher=accelerate for "
                          f"num_processes={cfg.launcher.num_processes}")
    from repro.fit import fit

    fit(run_dir)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The accelerate config every launch passes with --config_file (written into the run dir), so that
# `accelerate launch` never reads the user's ~/.cache/huggingface/accelerate/default_config.yaml: a
# forgotten `accelerate config` answer (fp16, torch.compile, two GPU ids, debug mode) would otherwise
# change how a run executes, silently.
ACCELERATE_CONFIG = "accelerate_config.yaml"


@dataclass(frozen=True)
class Rendezvous:
    """Where the workers of several machines meet: the machine count, this machine's rank (a number, or a
    shell expression such as "$SLURM_NODEID" that each node expands for itself), and the main process's
    address and port (the machine of rank 0)."""
    num_machines: int
    machine_rank: str
    main_process_ip: str
    main_process_port: int


def accelerate_config(cfg, extra: dict | None = None) -> dict:
    """The accelerate config of a run: every value `accelerate launch` would otherwise take from the user's
    default config. Per-machine values (rank, address, port) come as flags of the command; the worker's
    Accelerator sets the device and mixed precision itself (repro.fit.make_accelerator). `extra` entries
    (e.g. a DeepSpeed section) are merged in."""
    la = cfg.launcher
    world = la.num_processes * la.num_machines
    return {"compute_environment": "LOCAL_MACHINE", "distributed_type": "MULTI_GPU" if world > 1 else "NO",
            "mixed_precision": "no", "use_cpu": False, "debug": False, "num_processes": world,
            "num_machines": la.num_machines, "machine_rank": 0, "gpu_ids": "all", "main_process_ip": None,
            "main_process_port": None, "rdzv_backend": "static", "main_training_function": "main",
            "downcast_bf16": False, "dynamo_config": {}, **(extra or {})}


def write_accelerate_config(run_dir: Path, cfg, extra: dict | None = None) -> Path:
    """Write the run's accelerate config (see `accelerate_config`) to RUN_DIR/accelerate_config.yaml."""
    import yaml

    from repro.results import atomic_write_text

    return atomic_write_text(Path(run_dir) / ACCELERATE_CONFIG,
                             yaml.safe_dump(accelerate_config(cfg, extra), sort_keys=False))


def accelerate_command(run_dir: Path, cfg, *, extra_args: Sequence[str] = (), mode: str | None = "--multi_gpu",
                       rendezvous: Rendezvous | None = None) -> list[str]:
    """The `accelerate launch` command line of this run (also printed, so it can be rerun by hand).

    It reads RUN_DIR/accelerate_config.yaml (`write_accelerate_config`), never the user's default config.
    `mode` is accelerate's distributed flag when there are several processes (another launcher passes
    e.g. "--use_deepspeed"; accelerate accepts one); `extra_args` go before `-m repro.fit`. Without a
    `rendezvous` (one machine) the main process listens on a free port, so that two runs on one machine
    (a sweep on submitit_local, two users) never meet on accelerate's default 29500.
    """
    la = cfg.launcher
    machines = rendezvous.num_machines if rendezvous else 1
    if machines != la.num_machines:  # several machines: each node's command names its rank and the meeting point
        raise LaunchError(f"launcher.num_machines={la.num_machines} but this command starts the workers of "
                          f"{machines} machine(s)")
    world = la.num_processes * machines
    cmd = [sys.executable, "-m", "accelerate.commands.launch",
           "--config_file", str(Path(run_dir) / ACCELERATE_CONFIG),
           "--num_processes", str(world), "--num_machines", str(machines)]
    if rendezvous:
        cmd += ["--machine_rank", rendezvous.machine_rank, "--main_process_ip", rendezvous.main_process_ip,
                "--main_process_port", str(rendezvous.main_process_port)]
    elif world > 1:
        cmd += ["--main_process_port", str(free_port())]
    if world > 1 and mode:
        # On CPU, `--cpu --num_processes N` silently starts one process; --multi_gpu with a gloo
        # Accelerator(cpu=True) in the worker starts N.
        cmd += [mode]
    cmd += [*extra_args, "-m", "repro.fit", str(run_dir)]
    return cmd


# What a stopped worker prints as its last line (repro.fit.main); the driver reads it back from fit.log.
STOP_LINE = re.compile(r"^stopped \(rank (\d+), (\w+)\): (.*)$")
_STOPS = {"TrainingDiverged": TrainingDiverged, "TrainingInterrupted": TrainingInterrupted}


def die_with_parent(sig: int) -> None:
    """Have the kernel send `sig` to this process when its parent dies (Linux PR_SET_PDEATHSIG), so a
    killed driver or launcher never leaves processes training and writing into a run dir that a rerun is
    using. Exits at once if the parent died before the request took effect."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    ctypes.CDLL(None).prctl(1, sig)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


def _launcher_dies_with_driver() -> None:  # runs in the child between fork and exec
    die_with_parent(signal.SIGTERM)  # SIGTERM: torch's elastic agent then stops its workers


def _descendants(pid: int) -> list[int]:
    """Live descendants of a process (Linux /proc; empty elsewhere). torch's elastic agent starts each
    worker in a session of its own, so the launcher's process group does not reach them."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _signal_all(pids, sig) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def stop_workers(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """Stop a launcher and its workers: SIGINT to the workers (each reports its step and exits), then
    SIGTERM and SIGKILL to the launcher and every process under it if they have not gone after `grace`."""
    workers = _descendants(proc.pid)
    _signal_all(workers, signal.SIGINT)
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            _signal_all([proc.pid, *_descendants(proc.pid)], sig)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.05)  # workers can outlive the launcher by a moment


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


_ROOT_CAUSE = re.compile(r"Root Cause \(first observed failure\):\s*\[\d+\]:.*?rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)",
                         re.S)


def _read_from(log_path: Path, offset: int) -> str:
    with log_path.open("rb") as f:
        f.seek(offset)
        return f.read().decode(errors="replace")


def worker_stops(log_path: Path, offset: int = 0) -> list[tuple[int, str, str]]:
    """(rank, kind, message) of every worker that reported why it stopped (in the log past `offset`: this
    launch, not an earlier one of a resumed run), rank 0 first."""
    found = []
    for line in _read_from(log_path, offset).splitlines():
        m = STOP_LINE.match(line.strip())
        if m:
            found.append((int(m.group(1)), m.group(2), m.group(3)))
    return sorted(found)


def first_failure(log_path: Path, offset: int = 0) -> tuple[int, int] | None:
    """(rank, exit status) of the worker whose failure torch's elastic agent observed first."""
    m = _ROOT_CAUSE.search(_read_from(log_path, offset))
    return (int(m.group(1)), int(m.group(2))) if m else None


def run_workers(run_dir: Path, cmd: list[str], *, stop=None) -> None:
    """Run a launcher command (`accelerate launch`, or `srun` starting one per node), and make sure no
    worker outlives this call. Every launcher that starts subprocesses goes through here.

    The launcher holds the run dir's lock with the driver and is stopped by the kernel if the driver dies
    (SIGKILL included); the workers die with the launcher. Ctrl-C or SIGTERM here stops the workers
    (`stop`, default `stop_workers`), which report the step they reached. A worker that fails takes the
    others down (torch's elastic agent; srun's --kill-on-bad-exit across nodes), and its own one-line reason,
    read back from RUN_DIR/fit.log, becomes this call's error.
    """
    from repro.results import held_lock_fd

    log_path = Path(run_dir) / "fit.log"
    print("launching:", " ".join(shlex.quote(a) for a in cmd), f"(log: {log_path})", flush=True)
    lock = held_lock_fd(run_dir)
    with log_path.open("a") as log:
        start = log.tell()  # what this launch writes starts here (a resumed run appends to its log)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=_launcher_dies_with_driver,
                                pass_fds=() if lock is None else (lock,))
        try:
            rc = proc.wait()
        except BaseException:  # Ctrl-C, SIGTERM (raised as KeyboardInterrupt by the driver), anything
            (stop or stop_workers)(proc)
            interrupted = [m for _, kind, m in worker_stops(log_path, start) if kind == "TrainingInterrupted"]
            raise TrainingInterrupted(interrupted[0] if interrupted else
                                      "interrupted; rerun the same command to resume from its last checkpoint "
                                      "(if it wrote one)") from None
    if rc != 0:
        stops = worker_stops(log_path, start)
        for kind in ("TrainingDiverged", "TrainingInterrupted"):
            for _, k, message in stops:
                if k == kind:
                    raise _STOPS[kind](message)
        # The first worker to fail is the cause; the others then fail on a broken connection.
        first = first_failure(log_path, start)
        reported = {rank: message for rank, _, message in stops}
        if first and first[0] in reported or not first and reported:
            rank = first[0] if first else min(reported)
            raise WorkerFailed(f"training worker rank {rank} failed: {reported[rank]} (all workers stopped; see "
                               f"{log_path})")
        who = f"training worker rank {first[0]} exited with status {first[1]}" if first else \
            f"training workers exited with status {rc}"
        raise WorkerFailed(f"{who} without reporting why (killed, e.g. out of memory?); all workers stopped; see "
                           f"{log_path}")


def launch_accelerate(run_dir: Path, cfg) -> None:
    """`accelerate launch`, with the guarantees of `run_workers`: on this machine, or with
    launcher.num_machines > 1 (by default the node count of the SLURM allocation the driver runs in, see
    conf/launcher/accelerate.yaml) one per node of the allocation, started by srun (`srun_command`).
    Several machines need the run dir on a file system every node sees: the workers read the config and
    write checkpoints there."""
    if cfg.launcher.num_machines == 1:
        write_accelerate_config(run_dir, cfg)
        run_workers(run_dir, accelerate_command(run_dir, cfg))
        return
    alloc = slurm_allocation(cfg)
    write_accelerate_config(run_dir, cfg)
    node = accelerate_command(run_dir, cfg, rendezvous=alloc.rendezvous(NODE_RANK))
    run_workers(run_dir, srun_command(node, alloc), stop=stop_srun)


# ---------------------------------------------------------------------------------------------------
# Several machines (SLURM): the driver (one process per sweep point, in the batch script of a job) starts
# one `accelerate launch` per node of its allocation through `srun`; each node takes its machine rank
# from its own SLURM_NODEID, and all meet at the first host of the allocation.

def _split_groups(nodelist: str) -> list[str]:
    """`a[1-3,5],b7` -> ["a[1-3,5]", "b7"]: the commas outside brackets separate host groups."""
    groups, depth, current = [], 0, ""
    for ch in nodelist:
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if depth not in (0, 1):
            raise ValueError("unbalanced or nested brackets")
        if ch == "," and depth == 0:
            groups.append(current)
            current = ""
        else:
            current += ch
    if depth:
        raise ValueError("unbalanced brackets")
    groups.append(current)
    if any(not g for g in groups):
        raise ValueError("an empty host name")
    return groups


def _expand_ranges(spec: str) -> list[str]:
    """`001-003,7` -> ["001", "002", "003", "7"]: a range keeps the width of its first number."""
    out = []
    for item in spec.split(","):
        lo, dash, hi = item.partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            raise ValueError(f"[{spec}] is not a list of numbers and number ranges")
        if hi and int(hi) < int(lo):
            raise ValueError(f"range {item} runs backwards")
        out += [str(i).zfill(len(lo)) for i in range(int(lo), int(hi or lo) + 1)]
    return out


def expand_nodelist(nodelist: str) -> list[str]:
    """The hosts of a SLURM node list in its compact form, in order (what `scontrol show hostnames` prints;
    compute nodes do not always have scontrol). `gpu[001-003,007],cpu5` -> gpu001 gpu002 gpu003 gpu007
    cpu5; several brackets in one name expand as a product (`r[1-2]-n[1-2]` -> r1-n1 r1-n2 r2-n1 r2-n2).
    A malformed list raises ValueError."""
    hosts = []
    for group in _split_groups(nodelist.strip()):
        names = [""]
        for part in re.split(r"(\[[^\[\]]*\])", group):  # literal text and [ranges] alternate
            if part.startswith("["):
                choices = _expand_ranges(part[1:-1])
            elif "[" in part or "]" in part:
                raise ValueError(f"{group!r}: misplaced bracket")
            else:
                choices = [part]
            names = [n + c for n in names for c in choices]
        hosts += names
    return hosts


@dataclass(frozen=True)
class SlurmAllocation:
    """The SLURM job this driver runs in: its id, hosts (first = where rank 0 listens), the CPUs per task
    it asked for (srun must ask again: since Slurm 22.05 a step does not inherit them), the main port."""
    job_id: str
    hosts: tuple[str, ...]
    cpus_per_task: str | None
    main_process_port: int

    def rendezvous(self, machine_rank: str) -> Rendezvous:
        return Rendezvous(len(self.hosts), machine_rank, self.hosts[0], self.main_process_port)


def slurm_allocation(cfg, environ=None) -> SlurmAllocation:
    """The allocation from SLURM's environment variables; LaunchError (one line) when this process is not
    inside one, when `launcher.num_machines` is not its node count, or when srun is missing."""
    import shutil

    env = os.environ if environ is None else environ
    job, nodelist = env.get("SLURM_JOB_ID"), env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    machines = cfg.launcher.num_machines
    if not job or not nodelist:
        raise LaunchError(f"launcher.num_machines={machines}: several machines are started by srun inside a SLURM "
                          "allocation (sbatch, salloc, or `python -m repro.train -m hydra/launcher=slurm_4node8gpu "
                          "...`), and SLURM_JOB_ID / SLURM_JOB_NODELIST are not set here; on this machine use "
                          "launcher.num_machines=1")
    try:
        hosts = expand_nodelist(nodelist)
    except ValueError as e:
        raise LaunchError(f"SLURM_JOB_NODELIST={nodelist!r}: cannot read it ({e})") from None
    nnodes = env.get("SLURM_NNODES") or env.get("SLURM_JOB_NUM_NODES") or str(len(hosts))
    if not nnodes.isdigit() or int(nnodes) != len(hosts):
        raise LaunchError(f"SLURM_NNODES={nnodes} but SLURM_JOB_NODELIST={nodelist!r} names {len(hosts)} hosts")
    if machines != len(hosts):
        raise LaunchError(f"launcher.num_machines={machines} but SLURM job {job} has SLURM_NNODES={len(hosts)} "
                          f"nodes: set launcher.num_machines={len(hosts)}, or allocate {machines} nodes "
                          f"(sbatch --nodes={machines})")
    port = env.get("MASTER_PORT")
    if port is not None and not (port.isdigit() and 0 < int(port) < 65536):
        raise LaunchError(f"MASTER_PORT={port!r}: not a port number (1-65535); unset it to use a free port")
    if shutil.which("srun", path=env.get("PATH")) is None:
        raise LaunchError(f"launcher.num_machines={machines}: srun not found on PATH inside SLURM job {job}")
    return SlurmAllocation(job, tuple(hosts), env.get("SLURM_CPUS_PER_TASK") or None,
                           int(port) if port else free_port())


NODE_RANK = "$SLURM_NODEID"  # expanded by each node's shell: never evaluated in the driver


def srun_command(node_cmd: list[str], alloc: SlurmAllocation) -> list[str]:
    """`srun` running `node_cmd` once on every node of the allocation: the same command everywhere except
    the NODE_RANK argument, which each node's shell replaces with its own SLURM_NODEID. --kill-on-bad-exit
    stops every node when one fails (the others would wait in a collective until a timeout); --overlap lets
    it start even when the driver itself runs inside a job step that holds the CPUs.

    The nodes' processes ignore SIGUSR2: a job's `--signal=USR2@T` (submitit asks for it, 120 s before
    the time limit) goes to every job step but not to the batch shell, so it would kill the launchers
    and workers (USR2's default action) while the driver never hears of it. Training runs to the limit
    instead, and rerunning the same command resumes from the last checkpoint."""
    n = len(alloc.hosts)
    script = "trap '' USR2; exec " + " ".join(f'"{a}"' if a == NODE_RANK else shlex.quote(a) for a in node_cmd)
    srun = ["srun", f"--nodes={n}", f"--ntasks={n}", "--ntasks-per-node=1", "--kill-on-bad-exit=1", "--overlap"]
    if alloc.cpus_per_task:
        srun.append(f"--cpus-per-task={alloc.cpus_per_task}")
    return [*srun, "bash", "-c", script]


def stop_srun(proc: subprocess.Popen) -> None:
    """Stop srun and the workers on every node: two SIGINTs within a second make srun send SIGINT to its
    tasks (each node's launcher passes it to its workers, which report their step) before it terminates
    the step; `stop_workers` then escalates as for a local launcher."""
    for _ in range(2):
        try:
            proc.send_signal(signal.SIGINT)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    stop_workers(proc)


# ---------------------------------------------------------------------------------------------------
# DeepSpeed ZeRO-3 (repro/zero3.py): accelerate launch with DeepSpeed's engine, supervised by run_workers
# like every launcher that starts subprocesses.

def zero3_command(run_dir: Path, cfg, *, rendezvous: Rendezvous | None = None) -> list[str]:
    """`accelerate launch --use_deepspeed --deepspeed_config_file RUN_DIR/deepspeed.json --num_processes N
    ... -m repro.fit RUN_DIR` (printed, so it can be rerun by hand).

    Precision comes from the DeepSpeed config alone: `--mixed_precision no` keeps accelerate from counting
    its own default as a second source. With several machines each node runs its own launcher, as srun
    starts it (`--deepspeed_multinode_launcher standard`, not DeepSpeed's pdsh). CPU workers
    (launcher.cpu=true) see no GPU and use DeepSpeed's CPU accelerator: accelerate's --cpu would switch
    DeepSpeed off."""
    from repro.zero3 import CONFIG_FILE

    extra = ["--use_deepspeed", "--deepspeed_config_file", str(Path(run_dir) / CONFIG_FILE), "--mixed_precision", "no"]
    if cfg.launcher.num_machines > 1:
        extra += ["--deepspeed_multinode_launcher", "standard"]
    cmd = accelerate_command(run_dir, cfg, extra_args=extra, mode=None, rendezvous=rendezvous)
    return ["env", "CUDA_VISIBLE_DEVICES=", "DS_ACCELERATOR=cpu", *cmd] if cfg.launcher.cpu else cmd


def launch_zero3(run_dir: Path, cfg) -> None:
    """DeepSpeed ZeRO-3 workers: RUN_DIR/deepspeed.json (`repro.zero3.deepspeed_config`) and an accelerate
    config naming it, then `zero3_command` on this machine, or one per SLURM node through srun, with the
    guarantees of `run_workers`. Where DeepSpeed cannot run (not installed, not Linux), or the run's newest
    checkpoint is one ZeRO-3 at this world size cannot resume exactly, it stops first with one line naming
    the key."""
    from repro import zero3
    from repro.engine import latest_checkpoint, refuse_unloadable

    reason = zero3.unavailable()
    if reason:
        raise LaunchError(reason)
    resume = latest_checkpoint(Path(run_dir) / "checkpoints")
    if resume:  # the workers refuse it too; here it costs no start-up
        refuse_unloadable(*resume, "zero3", cfg.launcher.num_processes * cfg.launcher.num_machines)
    ds = zero3.write_config(run_dir, cfg)
    extra = {"distributed_type": "DEEPSPEED",
             "deepspeed_config": {"deepspeed_config_file": str(ds), "zero3_init_flag": True}}
    if cfg.launcher.num_machines == 1:
        write_accelerate_config(run_dir, cfg, extra)
        run_workers(run_dir, zero3_command(run_dir, cfg))
        return
    alloc = slurm_allocation(cfg)
    write_accelerate_config(run_dir, cfg, extra)
    node = zero3_command(run_dir, cfg, rendezvous=alloc.rendezvous(NODE_RANK))
    run_workers(run_dir, srun_command(node, alloc), stop=stop_srun)


LAUNCHERS = {"local": launch_local, "accelerate": launch_accelerate, "zero3": launch_zero3}


def check_machine(cfg, environ=None) -> None:
    """What the launcher needs from the machine a run executes on, checked before the run curates anything
    (at scale curation takes a while): DeepSpeed for launcher=zero3, and a SLURM allocation of
    `launcher.num_machines` nodes with srun for several machines. LaunchError, one line naming the key.

    Not part of the whole command's check (`repro.train.preflight`): a sweep submitted to SLURM is checked
    on the submitting host, outside the allocations its points will run in."""
    if cfg.launcher.name == "zero3":
        from repro import zero3

        reason = zero3.unavailable()
        if reason:
            raise LaunchError(reason)
    if cfg.launcher.num_machines > 1:
        slurm_allocation(cfg, environ)
