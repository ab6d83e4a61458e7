"""Config composition: every preset composes into valid typed dataclasses; bad values name their key."""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from repro import config as config_mod
from repro.results import run_dir_for, run_name

from conftest import ROOT

CONF = ROOT / "conf"
GROUPS = ("data", "model", "loss", "optim", "launcher", "experiment", "sweep")


def composed(overrides=()):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    return config_mod.from_dict(OmegaConf.to_container(cfg, resolve=True))


def test_default_composes_to_the_cpu_demo():
    cfg = composed()
    assert cfg.experiment.name == "tiny"
    assert (cfg.model.name, cfg.loss.name, cfg.launcher.name) == ("tiny_llama", "bt", "local")
    assert cfg.data.name == "fixture" and all(s.path.startswith("fixture:") for s in cfg.data.sources)
    assert len(cfg.data.sources) == 7 and cfg.data.wildguard.scorer_run == ["data=fixture_scorer"]
    assert cfg.eval.weights == "current"


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_of_every_group_composes(group):
    options = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
    assert options, group
    for option in options:
        composed([f"{group}={option}"])


def test_paper_presets_carry_the_paper_hyperparameters():
    cfg = composed(["experiment=skywork_llama31_8b"])
    assert cfg.model.name == "llama31_8b" and cfg.optim.lr == 2e-6 and cfg.optim.global_batch_size == 128
    assert cfg.data.sources[0].path == "Skywork/Skywork-Reward-Preference-80K-v0.1"
    cfg = composed(["experiment=skywork_gemma2_27b"])
    assert cfg.model.attn_implementation == "eager" and cfg.optim.lr == 1e-6 and cfg.optim.epochs == 2
    assert cfg.optim.weight_decay == 1e-3


def test_frozen_config_round_trips(tmp_path):
    cfg = composed(["loss=hinge", "seed=3"])
    config_mod.save(cfg, tmp_path / "config.yaml")
    assert config_mod.load(tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize("overrides,needle", [
    (["optim.lr=fast"], "optim.lr"),
    (["+optim.learning_rate=1"], "optim.learning_rate"),
    (["loss.name=nope"], "loss.name='nope' is not a known name; valid: bt, focal, focal_penalty, hinge, "
                           "margin_mse, pointwise_ce, temperature_bt, tempered_log"),
    (["eval.weights=old"], "eval.weights"),
    (["optim.global_batch_size=10", "optim.per_device_batch_size=4"], "optim.global_batch_size=10"),
    (["launcher=accelerate", "launcher.num_processes=3"], "world size 3"),
])
def test_bad_values_name_the_key(overrides, needle):
    with pytest.raises(config_mod.ConfigError) as e:
        composed(overrides)
    assert needle in str(e.value)


def test_run_dirs_are_deterministic_and_distinct():
    a = run_dir_for("runs", "tiny", ["seed=1", "loss=hinge", "optim.lr=0.01"], 1)
    b = run_dir_for("runs", "tiny", ["optim.lr=0.01", "loss=hinge", "seed=1"], 1)
    assert a == b == Path("runs/tiny/loss=hinge,optim.lr=0.01/seed=1")
    assert run_name([]) == "default"
    assert run_name(["experiment=tiny", "runs_root=/x", "force=true"]) == "default"
    assert run_dir_for("runs", "tiny", ["loss=bt"], 0) != run_dir_for("runs", "tiny", ["loss=hinge"], 0)


def test_long_override_values_give_short_distinct_names():
    a = run_name([f"model.path='/very/long/{'x' * 300}/a'"])
    b = run_name([f"model.path='/very/long/{'x' * 300}/b'"])
    assert a != b and len(a.encode()) <= 200 and "'" not in a and "/" not in a


@pytest.mark.parametrize("overrides,needle", [
    (["launcher.num_machines=0"], "launcher.num_machines=0"),
    (["optim.log_every=0"], "optim.log_every=0"),
    (["eval.max_length=0"], "eval.max_length=0"),
    (["optim.warmup_ratio=1.5"], "optim.warmup_ratio"),
    (["optim.lr=-1"], "optim.lr"),
    (["model.dtype=int8"], "model.dtype"),
])
def test_out_of_range_values_are_refused_before_any_work(overrides, needle):
    with pytest.raises(config_mod.ConfigError, match=needle.replace(".", r"\.")):
        composed(overrides)
