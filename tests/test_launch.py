"""Launcher command lines and settings (what the driver starts for multi-process runs), and what the
driver does between sweep points."""
import dataclasses
import json
import os
import socket
import subprocess
import sys
import typing
import weakref

import pytest

from repro import config as config_mod
from repro.config import LauncherConfig, RunConfig
from repro.launch import LaunchError, Rendezvous, accelerate_command, launch_local, write_accelerate_config


def cfg_with(**launcher) -> RunConfig:
    return RunConfig(launcher=LauncherConfig(name="accelerate", **launcher))


def test_single_node_ddp_command():
    cmd = accelerate_command("RUN", cfg_with(num_processes=8))
    assert cmd[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert cmd[cmd.index("--config_file") + 1] == os.path.join("RUN", "accelerate_config.yaml")  # never the user's
    assert cmd[cmd.index("--num_processes") + 1] == "8" and "--multi_gpu" in cmd
    assert cmd[-3:] == ["-m", "repro.fit", "RUN"]
    assert "--cpu" not in cmd  # accelerate's --cpu would silently start one process
    assert "--machine_rank" not in cmd and "--main_process_ip" not in cmd
    port = int(cmd[cmd.index("--main_process_port") + 1])  # a free one, not accelerate's default for all runs
    assert port != 29500
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))  # still free


def test_several_machines_take_their_rank_from_each_node_not_from_the_driver(monkeypatch):
    monkeypatch.setenv("SLURM_NODEID", "1")  # the driver's own environment says nothing about other nodes
    monkeypatch.setenv("MASTER_ADDR", "node-a")
    with pytest.raises(LaunchError, match="launcher.num_machines=2 but this command starts the workers of 1 machine"):
        accelerate_command("RUN", cfg_with(num_processes=8, num_machines=2))
    cmd = accelerate_command("RUN", cfg_with(num_processes=8, num_machines=2),
                             rendezvous=Rendezvous(2, "$SLURM_NODEID", "gpu001", 29611))
    assert cmd[cmd.index("--num_processes") + 1] == "16"  # accelerate counts processes over all machines
    assert cmd[cmd.index("--num_machines") + 1] == "2" and cmd[cmd.index("--machine_rank") + 1] == "$SLURM_NODEID"
    assert cmd[cmd.index("--main_process_ip") + 1] == "gpu001" and cmd[cmd.index("--main_process_port") + 1] == "29611"


def test_other_launchers_reuse_the_command_with_their_own_mode():
    cmd = accelerate_command("RUN", cfg_with(num_processes=2), mode="--use_deepspeed",
                             extra_args=["--zero_stage", "3"])
    assert "--multi_gpu" not in cmd  # accelerate takes one distributed mode
    assert cmd[-6:] == ["--use_deepspeed", "--zero_stage", "3", "-m", "repro.fit", "RUN"]
    assert "--use_deepspeed" not in accelerate_command("RUN", cfg_with(num_processes=1), mode="--use_deepspeed")


def test_local_launcher_refuses_several_processes():
    with pytest.raises(LaunchError, match="launcher=accelerate"):
        launch_local("RUN", RunConfig(launcher=LauncherConfig(num_processes=2)))
    with pytest.raises(config_mod.ConfigError, match="launcher=local runs one process in the driver"):
        config_mod.compose(["launcher.num_processes=2"])


# A user's forgotten `accelerate config` answers: fp16, torch.compile, two GPU ids, debug mode.
POISONED_DEFAULT = """\
compute_environment: LOCAL_MACHINE
distributed_type: MULTI_GPU
mixed_precision: fp16
use_cpu: false
debug: true
num_processes: 8
gpu_ids: 0,1
main_training_function: main
dynamo_config:
  dynamo_backend: INDUCTOR
"""
# The settings `accelerate launch` resolves for a command line (its own resolution step, run in a process
# whose HF_HOME holds the poisoned default config).
RESOLVE = """\
import json, sys
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
args, _, _ = _validate_launch_command(launch_command_parser().parse_args(sys.argv[1:]))
keys = ("mixed_precision", "dynamo_backend", "debug", "gpu_ids", "num_processes", "num_machines", "rdzv_backend")
print(json.dumps({k: getattr(args, k) for k in keys}))
"""


def test_accelerate_never_reads_the_users_default_config(tmp_path):
    hf_home = tmp_path / "hf_home"
    (hf_home / "accelerate").mkdir(parents=True)
    (hf_home / "accelerate" / "default_config.yaml").write_text(POISONED_DEFAULT)
    cfg = cfg_with(num_processes=2)
    write_accelerate_config(tmp_path, cfg)
    args = accelerate_command(tmp_path, cfg)[3:]

    def resolved(launch_args):
        proc = subprocess.run([sys.executable, "-c", RESOLVE, *launch_args], capture_output=True, text=True,
                              env={**os.environ, "HF_HOME": str(hf_home)})
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout)

    assert resolved(args) == {"mixed_precision": "no", "dynamo_backend": "no", "debug": False, "gpu_ids": "all",
                              "num_processes": 2, "num_machines": 1, "rdzv_backend": "static"}
    # the same command without the run's config file would have run with the user's answers
    i = args.index("--config_file")
    theirs = resolved(args[:i] + args[i + 2:])
    assert (theirs["mixed_precision"], theirs["dynamo_backend"], theirs["debug"], theirs["gpu_ids"]) == \
        ("fp16", "INDUCTOR", True, "0,1")


# ---------------------------------------------------------------------------------------------------
# Launcher settings say how a run executes, not what it computes

def _another(value, tp):
    """A different value of the same type, for any launcher key (including ones added later)."""
    if typing.get_origin(tp) in (typing.Union, getattr(__import__("types"), "UnionType")):
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if tp is bool:
        return not value
    if tp is int:
        return (value or 0) + 3
    if tp is float:
        return (value or 0.0) + 0.5
    if tp is str:
        return (value or "") + "x"
    if typing.get_origin(tp) is list:
        return [*(value or []), "x"]
    if typing.get_origin(tp) is dict:
        return {**(value or {}), "x": 1}
    raise AssertionError(f"no test value for launcher keys of type {tp}")


def test_every_launcher_key_stays_out_of_the_run_name_and_the_config_check(monkeypatch):
    from repro.pipeline import config_changes
    from repro.results import run_name

    base = RunConfig()
    hints = typing.get_type_hints(LauncherConfig)
    for f in dataclasses.fields(LauncherConfig):
        value = _another(getattr(base.launcher, f.name), hints[f.name])
        other = dataclasses.replace(base, launcher=dataclasses.replace(base.launcher, **{f.name: value}))
        assert config_changes(base, other) == [], f.name
        assert run_name([f"launcher.{f.name}={value}", "seed=1"]) == "default", f.name
    assert run_name(["launcher=accelerate"]) == "default"
    # what a run computes does show: the checks above can fail
    assert config_changes(base, dataclasses.replace(base, seed=1)) == ["seed: 0 -> 1"]
    assert run_name(["loss.margin=2.0"]) == "loss.margin=2.0"
    # a run on a 4-node allocation (num_machines from SLURM_NNODES) is the run of one machine
    one = config_mod.compose(["launcher=accelerate", "optim.per_device_batch_size=2"])
    monkeypatch.setenv("SLURM_NNODES", "4")
    four = config_mod.compose(["launcher=accelerate", "optim.per_device_batch_size=2"])
    assert (one.launcher.num_machines, four.launcher.num_machines) == (1, 4)
    assert config_changes(one, four) == []


# ---------------------------------------------------------------------------------------------------
# Between sweep points: evaluation in the driver hands its memory back

def trained_run_dir(run_dir, cfg):
    """A run dir as training leaves it, without training: `cfg` frozen, a one-layer tiny model saved."""
    import repro.model

    config_mod.save(cfg, (run_dir / "config.yaml", run_dir.mkdir())[0])
    tok = repro.model.build_tiny_tokenizer(["a chosen answer", "a rejected answer", "what is it?"] * 20,
                                           vocab_size=cfg.model.tiny.vocab_size)
    model = repro.model.build_tiny_backbone(tok, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32)
    model.save_pretrained(run_dir / "model")
    tok.save_pretrained(run_dir / "model")
    return run_dir

def test_evaluation_frees_its_model_before_emptying_the_cuda_cache(tmp_path, monkeypatch):
    """The driver scores the trained model in its own process, then goes on to the next sweep point,
    whose training workers are other processes and need the GPU memory. The model must be gone when the
    CUDA allocator's cache is emptied (on CPU that call is a no-op: here it records whether the model was
    still alive)."""
    import torch

    import repro.model
    from repro.pipeline import evaluate_run

    cfg = config_mod.compose(["eval.max_length=64"])  # short rows: the test is about memory, not scores
    run_dir = trained_run_dir(tmp_path / "run", cfg)

    alive, at_release = [], []
    load = repro.model.load_pretrained

    def tracked(*args, **kwargs):
        loaded, tokenizer = load(*args, **kwargs)
        alive.append(weakref.ref(loaded))
        return loaded, tokenizer

    monkeypatch.setattr(repro.model, "load_pretrained", tracked)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: at_release.append(alive[-1]() is None))
    threads = torch.get_num_threads()
    try:
        final = evaluate_run(run_dir)
    finally:
        torch.set_num_threads(threads)
    assert len(alive) == 1 and at_release == [True]  # freed first, then the cache emptied, once
    assert final["eval"]["examples"] > 0 and (run_dir / "final.json").is_file()


def test_a_run_reads_its_evaluation_set_once(tmp_path, monkeypatch):
    """The driver validates the evaluation set before training and scores the same rows after it: one read."""
    import json

    import torch

    from repro import pipeline
    from repro.data.sources import rewardbench as rb_source

    monkeypatch.chdir(tmp_path)
    cfg = config_mod.compose(["eval.max_length=64", "optim.max_steps=1"])
    run_dir = trained_run_dir(tmp_path / "run", cfg)
    (run_dir / "train.json").write_text(json.dumps({"steps": 1}))  # trained earlier: the run only evaluates
    reads = []
    load = rb_source.load
    monkeypatch.setattr(rb_source, "load", lambda *a, **k: (reads.append(a), load(*a, **k))[1])
    threads = torch.get_num_threads()
    try:
        final, skipped = pipeline.run(cfg, run_dir)
    finally:
        torch.set_num_threads(threads)
    assert not skipped and final["eval"]["examples"] > 0
    assert reads == [(cfg.eval.path, cfg.eval.split)]
