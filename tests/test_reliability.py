"""Faults and bad input: a diverged run is not a finished one, one writer per run dir, no orphaned
workers, interrupts that say where they stopped, files teammates can read, and every bad input one line
(exit 2) before any expensive work."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from repro import train
from repro.losses import LOSSES
from repro.results import MetricsLog, OutputDirError, RunDirBusy, atomic_write_json, atomic_write_parquet, \
    atomic_write_text, run_dir_lock, writable_dir

from conftest import ROOT, run_cli

TOY = ["data=fixture_released", "optim.max_steps=3"]  # the released-set fixture: no scorer run to train


def strict_json(line: str):
    def refuse(constant):
        raise ValueError(f"not JSON: {constant}")

    return json.loads(line, parse_constant=refuse)


def stderr_lines(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


def read_only_dir(tmp_path):
    """A folder nobody can write into: root ignores file modes, so use sysfs there."""
    if os.geteuid() == 0:
        return "/sys/repro-test-read-only"
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    return str(d)


def fit_workers(run_dir) -> list[int]:
    """PIDs of live `repro.fit` workers of this run dir."""
    pids = []
    for cmdline in os.listdir("/proc"):
        if not cmdline.isdigit():
            continue
        try:
            with open(f"/proc/{cmdline}/cmdline", "rb") as f:
                args = f.read().split(b"\0")
            with open(f"/proc/{cmdline}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        launcher = any(b"accelerate.commands.launch" in a for a in args)
        if b"repro.fit" in args and str(run_dir).encode() in args and not launcher and state != "Z":
            pids.append(int(cmdline))
    return pids


def has_checkpoint(run_dir) -> bool:
    """Training has checkpointed and is still going. Any `step_N`: with keep_checkpoints=1 each one lives
    only until the next save (a fraction of a second here), so waiting for one named step races the
    poll interval on a busy machine; some checkpoint exists from the first save until training ends."""
    return any(p.name.startswith("step_") for p in (run_dir / "checkpoints").glob("step_*"))


def wait_for(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def start_cli(args, cwd, env=None) -> subprocess.Popen:
    """A driver in its own process group and session, as a terminal would start it."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", TQDM_DISABLE="1", **(env or {}))
    return subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


# --- files -----------------------------------------------------------------------------------------

def test_metrics_log_stays_strict_json_with_non_finite_values(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    log.log(1, "train", loss=float("nan"), grad_norm=float("inf"), lr=1e-3)
    rows = [strict_json(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["value"] for r in rows] == [None, None, 1e-3]


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_writes_keep_the_users_umask(tmp_path, umask):
    import pandas as pd

    old = os.umask(umask)
    try:
        written = [atomic_write_text(tmp_path / "a.txt", "x"), atomic_write_json(tmp_path / "b.json", {"a": 1}),
                   atomic_write_parquet(tmp_path / "c.parquet", pd.DataFrame({"a": [1]}))]
    finally:
        os.umask(old)
    assert {oct(p.stat().st_mode & 0o777) for p in written} == {oct(0o666 & ~umask)}


def test_writable_dir_refuses_a_file_and_a_read_only_folder(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputDirError, match=r"runs_root=.*file: is a file, not a folder"):
        writable_dir(f, "runs_root")
    with pytest.raises(OutputDirError, match="cannot write there"):
        writable_dir(read_only_dir(tmp_path) + "/sub", "--out")
    assert writable_dir(tmp_path / "new" / "deep", "--out").is_dir()


# --- one writer per run dir ----------------------------------------------------------------------------

def test_the_run_dir_lock_names_a_live_holder_and_dies_with_it(tmp_path):
    run_dir = tmp_path / "exp" / "seed=0"
    code = ("import os, sys; from repro.results import run_dir_lock\n"
            f"with run_dir_lock({str(run_dir)!r}):\n    print('held', flush=True); sys.stdin.read()")
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirBusy, match=rf"in use by pid {holder.pid} on "):
            with run_dir_lock(run_dir):
                pass
    finally:
        holder.kill()  # SIGKILL: no cleanup at all, as a killed job
        holder.wait()
    with run_dir_lock(run_dir):  # the kernel released the dead holder's lock
        assert (tmp_path / "exp" / ".seed=0.lock").read_text().startswith(f"pid {os.getpid()} ")


def test_a_second_command_on_a_busy_run_dir_stops_with_one_line(tmp_path):
    run_dir = tmp_path / "runs" / "tiny" / "data=fixture_released,optim.max_steps=3" / "seed=0"
    with run_dir_lock(run_dir):
        proc = run_cli(["-m", "repro.train", *TOY], tmp_path)
    assert proc.returncode == 75, proc.stderr
    (line,) = stderr_lines(proc)
    assert line.startswith("error: ") and f"in use by pid {os.getpid()}" in line
    assert not run_dir.exists()  # nothing was written into it


# --- a diverged run is not a finished run ----------------------------------------------------------

def test_divergence_stops_at_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    args = ["data=fixture_released", "optim.lr=1e20", "optim.max_steps=30", "optim.save_every=1", "optim.log_every=1"]
    proc = run_cli(["-m", "repro.train", *args], tmp_path)
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-2000:]
    (line,) = stderr_lines(proc)
    m = re.fullmatch(r"error: training diverged \(non-finite loss or gradient norm \S+; update not applied, no "
                     r"final\.json written\) at step (\d+) of 30; the last good checkpoint step_(\d+) is kept .*", line)
    assert m, line
    step, kept = int(m.group(1)), int(m.group(2))
    assert kept == step - 1 >= 1
    run_dir = tmp_path / "runs" / "tiny" / ",".join(sorted(args)) / "seed=0"
    assert not (run_dir / "final.json").exists() and not (run_dir / "model").exists()
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [f"step_{kept}"]
    rows = [strict_json(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert rows and max(r["step"] for r in rows) == kept


@pytest.mark.slow
def test_two_ddp_workers_stop_together_when_training_diverges(tmp_path):
    args = ["data=fixture_released", "optim.lr=1e20", "optim.max_steps=30", "optim.save_every=1", "launcher=accelerate", "launcher.cpu=true",
            "launcher.cpu_threads=1"]
    proc = run_cli(["-m", "repro.train", *args], tmp_path)
    assert proc.returncode == 3, proc.stderr[-2000:]
    (line,) = stderr_lines(proc)
    assert line.startswith("error: training diverged") and "the last good checkpoint step_" in line, line
    run_dir = tmp_path / "runs" / "tiny" / "data=fixture_released,optim.lr=1e20,optim.max_steps=30,optim.save_every=1" / "seed=0"
    assert not fit_workers(run_dir) and not (run_dir / "final.json").exists()


def test_a_diverging_sweep_point_fails_the_sweep_but_not_the_others(tmp_path):
    proc = run_cli(["-m", "repro.train", "-m", "optim.lr=1e20,0.001", *TOY], tmp_path)
    assert proc.returncode == 1
    assert "1 sweep point(s) failed: optim.lr=1e+20 data=fixture_released optim.max_steps=3" in proc.stderr  # as Hydra writes it
    assert (tmp_path / "runs" / "tiny" / "data=fixture_released,optim.lr=0.001,optim.max_steps=3" / "seed=0" / "final.json").is_file()
    diverged = tmp_path / "runs" / "tiny" / "data=fixture_released,optim.lr=1e+20,optim.max_steps=3" / "seed=0"
    assert (diverged / "config.yaml").is_file() and not (diverged / "final.json").exists()


# --- interrupts, kills and failing workers ----------------------------------------------------------

def test_ctrl_c_prints_one_line_with_the_step_and_the_rerun_resumes(tmp_path):
    args = ["-m", "repro.train", "data=fixture_released", "optim.max_steps=400", "optim.save_every=5"]
    run_dir = tmp_path / "runs" / "tiny" / "data=fixture_released,optim.max_steps=400,optim.save_every=5" / "seed=0"
    proc = start_cli(args, tmp_path)
    wait_for(lambda: has_checkpoint(run_dir) or proc.poll() is not None, 300, "a checkpoint")
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole foreground group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    (line,) = [x for x in err.splitlines() if x.strip()]
    assert re.fullmatch(r"interrupted at step \d+ of 400; rerun the same command to resume from step_\d+", line), line
    assert not (run_dir / "final.json").exists()


# 300 steps: the driver is killed once some checkpoint exists, well before the end even on a busy machine.
KILL_RUN = ["data=fixture_released", "optim.max_steps=300", "optim.save_every=5", "launcher=accelerate", "launcher.cpu=true",
            "launcher.cpu_threads=1"]
KILL_RUN_NAME = "data=fixture_released,optim.max_steps=300,optim.save_every=5"  # launcher settings are not in the name


def kill_driver_mid_training(tmp_path, sig) -> tuple[subprocess.Popen, str]:
    """Start two CPU workers under `accelerate launch`, kill the driver (only) once training checkpointed,
    and return the finished driver and its stderr once none of its workers is left."""
    run_dir = tmp_path / "runs" / "tiny" / KILL_RUN_NAME / "seed=0"
    proc = start_cli(["-m", "repro.train", *KILL_RUN], tmp_path)
    wait_for(lambda: has_checkpoint(run_dir) or proc.poll() is not None, 300, "a checkpoint")
    assert len(fit_workers(run_dir)) == 2
    os.kill(proc.pid, sig)  # the driver only, as `kill` or a scheduler would
    _, err = proc.communicate(timeout=120)
    wait_for(lambda: not fit_workers(run_dir), 30, "the workers to exit")
    return proc, err


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killing_the_driver_takes_its_workers_down(tmp_path, sig):
    """A killed driver (kill -9 included) leaves no worker training and writing into the run dir; SIGTERM
    (a scheduler's time limit) stops the workers as Ctrl-C does, with one line naming the step."""
    proc, err = kill_driver_mid_training(tmp_path, sig)
    if sig == signal.SIGTERM:
        assert proc.returncode == 130, err
        (line,) = [x for x in err.splitlines() if x.strip()]
        assert re.fullmatch(r"interrupted at step \d+ of 300; rerun the same command to resume from step_\d+", line), line
    else:
        assert proc.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_the_same_command_right_after_a_kill_resumes_and_finishes(tmp_path):
    kill_driver_mid_training(tmp_path, signal.SIGKILL)
    rerun = run_cli(["-m", "repro.train", *KILL_RUN], tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "resuming unfinished run" in rerun.stdout
    run_dir = tmp_path / "runs" / "tiny" / KILL_RUN_NAME / "seed=0"
    assert json.loads((run_dir / "train.json").read_text())["steps"] == 300


def test_a_dying_worker_takes_the_others_down_with_its_error(tmp_path):
    common = ["data=fixture_released", "optim.max_steps=60", "launcher=accelerate", "launcher.cpu=true", "launcher.cpu_threads=1"]
    run_dir = tmp_path / "runs" / "tiny" / "data=fixture_released,optim.max_steps=60" / "seed=0"
    t0 = time.monotonic()
    proc = run_cli(["-m", "repro.train", *common], tmp_path, env={"REPRO_CRASH_AT_STEP": "5:1"})
    assert time.monotonic() - t0 < 600  # gloo would wait 30 min for a dead peer
    assert proc.returncode == 1, proc.stderr[-2000:]
    (line,) = stderr_lines(proc)
    assert line.startswith("error: training worker rank 1 exited with status 3 without reporting why"), line
    assert not fit_workers(run_dir) and not (run_dir / "final.json").exists()


def test_a_rerun_that_discards_a_partial_run_says_so(tmp_path):
    args = ["-m", "repro.train", "data=fixture_released", "optim.max_steps=6"]
    killed = run_cli(args, tmp_path, env={"REPRO_CRASH_AT_STEP": "3"})
    assert killed.returncode == 3
    rerun = run_cli(args, tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    run_dir = tmp_path / "runs" / "tiny" / "data=fixture_released,optim.max_steps=6" / "seed=0"
    assert f"discarding the unfinished run in {run_dir} (no checkpoint to resume from); starting over" in rerun.stdout
    train = json.loads((run_dir / "train.json").read_text())  # max_steps cuts the first epoch short
    assert train["pairs_trained"] == train["distinct_pairs_trained"] == 6 * 16
    assert train["pairs_available"] == 679 and train["epochs"] == round(6 / (679 // 16), 4)


def test_an_unreachable_evaluation_set_stops_the_run_before_training(tmp_path):
    proc = run_cli(["-m", "repro.train", "eval.path=some-org/not-cached-reward-bench", *TOY], tmp_path)
    assert proc.returncode == 2
    (line,) = stderr_lines(proc)
    assert "some-org/not-cached-reward-bench" in line and "cannot load dataset" in line, line
    run_dir = tmp_path / "runs" / "tiny" / "data=fixture_released,eval.path=some-org_not-cached-reward-bench,optim.max_steps=3" / "seed=0"
    assert not (run_dir / "model").exists() and not (run_dir / "train.json").exists()


# --- bad input: one line, exit 2, nothing expensive done ----------------------------------------------

@pytest.mark.parametrize("argv,needle", [
    (["loss=nope"], "loss=nope is not a known loss preset; valid: bt, focal, focal_penalty, hinge"),
    (["-m", "loss=bt,nope"], "loss=nope is not a known loss preset"),
    (["foo=1"], "unknown config key 'foo'; valid at the top level: data, eval, experiment, force, launcher"),
    (["optim.foo=1"], "unknown config key 'optim.foo'; valid under optim: betas, epochs"),
    (["optim.max_steps=0"], "optim.max_steps=0: must be >= 1, or -1 for full epochs"),
    (["optim.max_steps=-2"], "optim.max_steps=-2"),
    (["optim.betas=[0.9,1.0]"], "optim.betas[1]=1.0: must be in [0, 1)"),
    (["optim.betas=[-0.1,0.9]"], "optim.betas[0]=-0.1"),
    (["seed=-1"], "seed=-1: must be >= 0"),
    (["model.tiny.hidden_size=65"], "model.tiny.hidden_size=65 is not divisible by model.tiny.num_heads=4"),
    (["model.tiny.vocab_size=4"], "model.tiny.vocab_size=4: must be >= 262"),
    (["loss=hinge", "loss.margin=-1"], "loss.margin=-1.0: must be >= 0"),
    (["loss.margin=1"], "Could not override 'loss.margin'; To append to your config use +loss.margin=1"),
    (["launcher.cpu_threads=0"], "launcher.cpu_threads=0"),
    (["eval.path=/nonexistent/rb"], "eval.path=/nonexistent/rb: dataset folder not found"),
    (["data.sources.0.path=/nonexistent/d"], "data.sources[0].path=/nonexistent/d: dataset folder not found"),
    (["model=llama31_8b", "model.path=/nonexistent/m"], "model.path=/nonexistent/m: model folder not found"),
    (["-m", "sweep=table3_losses", "optim.lr=-1"], "sweep point"),
])
def test_preflight_names_every_bad_input(tmp_path, argv, needle):
    problems = train.preflight([*argv, f"runs_root={tmp_path}"])
    assert problems and all("\n" not in p for p in problems), problems
    assert any(needle in p for p in problems), problems


@pytest.mark.parametrize("argv", [[], ["-m", "loss=bt,hinge", "seed=0,1"], ["-m", "sweep=table3_losses"],
                                  ["experiment=skywork_gemma2_27b"], ["data.duplicates=keep"]])
def test_preflight_accepts_valid_commands(tmp_path, argv):
    assert train.preflight([*argv, f"runs_root={tmp_path}"]) == []


def test_a_sweep_preset_is_checked_point_by_point():
    """All eight loss points of the Table 3 preset, each with its own line."""
    problems = train.preflight(["-m", "sweep=table3_losses", "optim.lr=-1", "runs_root=/tmp/repro-preflight"])
    assert len(problems) == 8 and all("optim.lr=-1.0: must be > 0" in p for p in problems), problems
    assert {re.match(r"sweep point loss=(\w+) ", p).group(1) for p in problems} == set(LOSSES)


@pytest.mark.parametrize("case", ["unknown group value", "unknown key", "runs_root is a file", "runs_root read-only",
                                  "bad point in a sweep"])
def test_bad_input_on_the_command_line_is_one_line_and_exit_2(tmp_path, case):
    f = tmp_path / "a_file"
    f.write_text("")
    argv, needle = {
        "unknown group value": (["loss=nope"], "loss=nope is not a known loss preset"),
        "unknown key": (["optim.learning_rate=1"], "unknown config key 'optim.learning_rate'"),
        "runs_root is a file": ([f"runs_root={f}"], "is a file, not a folder"),
        "runs_root read-only": ([f"runs_root={read_only_dir(tmp_path)}/runs"], "cannot write there"),
        "bad point in a sweep": (["-m", "optim.lr=fast,0.001", *TOY], "optim.lr: expected float, got 'fast'"),
    }[case]
    proc = run_cli(["-m", "repro.train", *argv], tmp_path)
    assert proc.returncode == 2, proc.stderr
    (line,) = stderr_lines(proc)
    assert line.startswith("error: ") and needle in line, line
    assert not (tmp_path / "runs").exists()  # no point of the sweep ran


def test_a_broken_config_yaml_in_a_run_dir_is_one_line_naming_it(tmp_path):
    run_dir = tmp_path / "runs" / "tiny" / "default" / "seed=0"
    run_dir.mkdir(parents=True)
    (run_dir / "final.json").write_text("{}")
    (run_dir / "config.yaml").write_text("data:\n  name: [unclosed\nseed: 0\n")
    proc = run_cli(["-m", "repro.train"], tmp_path)
    assert proc.returncode == 2
    (line,) = stderr_lines(proc)
    assert f"{run_dir / 'config.yaml'}: line" in line and "not valid YAML" in line, line

