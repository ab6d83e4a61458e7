"""Launchers: how the training worker (`repro.fit`) is started. LAUNCHERS = {name: fn(run_dir, cfg)}.

    local       in this process (one CPU or one GPU): no subprocess, fastest start
    accelerate  `accelerate launch --multi_gpu ... -m repro.fit RUN_DIR`: several processes (DDP)
    (DeepSpeed ZeRO-3, which the 8B/27B backbones need to fit in GPU memory, is planned.)

Hydra multirun never runs inside a distributed launch: the driver (one process per sweep point)
starts the workers, and the workers read the frozen config.
"""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

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
    elif world > 1:
        # One node: a free port, so two runs on one machine (a sweep on submitit_local, two users) never
        # meet on accelerate's default 29500.
        cmd += ["--main_process_port", str(free_port())]
    if world > 1:
        # On CPU, `--cpu --num_processes N` silently starts one process; --multi_gpu with a gloo
        # Accelerator(cpu=True) in the worker starts N.
        cmd += ["--multi_gpu"]
    cmd += ["-m", "repro.fit", str(run_dir)]
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


def launch_accelerate(run_dir: Path, cfg) -> None:
    """Run the workers under `accelerate launch`, and make sure none of them outlives this call.

    The launcher holds the run dir's lock with the driver and is stopped by the kernel if the driver dies
    (SIGKILL included); the workers die with the launcher. Ctrl-C or
    SIGTERM here stops the workers, which report the step they reached. A worker that fails takes the
    others down (torch's elastic agent), and its own one-line reason becomes this call's error.
    """
    from repro.results import held_lock_fd

    cmd = accelerate_command(run_dir, cfg)
    log_path = Path(run_dir) / "fit.log"
    print("launching:", " ".join(cmd), f"(log: {log_path})", flush=True)
    lock = held_lock_fd(run_dir)
    with log_path.open("a") as log:
        start = log.tell()  # what this launch writes starts here (a resumed run appends to its log)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, preexec_fn=_launcher_dies_with_driver,
                                pass_fds=() if lock is None else (lock,))
        try:
            rc = proc.wait()
        except BaseException:  # Ctrl-C, SIGTERM (raised as KeyboardInterrupt by the driver), anything
            stop_workers(proc)
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


LAUNCHERS = {"local": launch_local, "accelerate": launch_accelerate}
