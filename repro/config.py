"""Typed configuration: one dataclass per Hydra config group, plus load/save of the frozen run config.

The YAML files in `conf/` are the readable presets; `repro.train` composes them with Hydra and hands the
plain dict to `from_dict`, which builds these dataclasses and rejects unknown keys and wrong types with
an error naming the dotted key. Library code only ever sees these dataclasses (never a DictConfig), and
workers (`python -m repro.fit RUN_DIR`) read the frozen `config.yaml` with `load` — no Hydra.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A config value that cannot work; the message names the dotted key."""


@dataclass
class SourceConfig:
    name: str = "skywork80k"          # key of repro.data.sources.SOURCES
    path: str = "fixture:skywork80k"  # Hub id, local folder laid out like the Hub repo, or fixture:<name>
    split: str = "train"
    options: dict[str, typing.Any] = field(default_factory=dict)  # keyword options of the loader ([D] choices)


@dataclass
class MagpieConfig:
    """Magpie selection (PAPER.md section 1): pooled over `sources`, top fraction per task category."""
    enabled: bool = True              # false: every Magpie pair passes (the unfiltered 378K union)
    sources: list[str] = field(default_factory=lambda: ["magpie_ultra", "magpie_pro_llama3.1", "magpie_pro",
                                                         "magpie_air"])  # source values pooled together
    score: str = "mean"               # [D] key of repro.data.select.SCORE_FUNCTIONS over the shipped ArmoRM scores
    offsets: dict[str, float] = field(default_factory=lambda: {"magpie_air": -0.1, "magpie_pro": -0.05})  # [P]
    top_fraction: dict[str, float] = field(default_factory=lambda: {"Math": 0.3, "Coding & Debugging": 0.3})  # [S]
    default_fraction: float = 0.1     # [S] every other category
    rounding: str = "floor"           # [D] kept per category = floor|round|ceil(fraction x pairs in the category)


@dataclass
class WildGuardConfig:
    """WildGuardMix filtering (PAPER.md section 1): stage 1 adversarial only, stage 2 a scorer's ranking."""
    source: str = "wildguard"         # the source value the stages apply to
    adversarial_only: bool = True     # stage 1 [S]
    stage2: bool = False              # stage 2: keep pairs the scorer ranks right (needs `scorer`)
    # The scorer: a run dir of this package, or a Hub id / local folder of an AutoModelForSequenceClassification
    # (the paper used its 27B model). null with stage2 on: `scorer_run` names the run that trains it.
    scorer: str | None = None
    # Overrides of the run that trains the scorer (e.g. [data=fixture_scorer, experiment=tiny]);
    # `python -m repro.train` builds that run first, or reuses it when it is done.
    scorer_run: list[str] = field(default_factory=list)
    scorer_batch_size: int = 16
    scorer_max_length: int = 4096


@dataclass
class DecontamConfig:
    """N-gram decontamination against a benchmark (the RewardBench maintainers' 7-13-gram rule)."""
    benchmark: str = "allenai/reward-bench"
    split: str = "filtered"
    remove_from: list[str] = field(default_factory=list)  # source values cleaned (v0.2: [magpie_ultra]); [] = none
    report: bool = True               # Table 4's counts for every source in the manifest (also when nothing is removed)
    min_n: int = 7
    max_n: int = 13
    turns: str = "all"                # user turns scanned: all (joined) or last


@dataclass
class DataConfig:
    name: str = "fixture"
    sources: list[SourceConfig] = field(default_factory=lambda: [SourceConfig()])
    max_length: int = 4096            # our default (not reported): longer pairs are dropped and counted
    # Pairs with the same prompt, chosen and rejected text as an earlier pair: "drop" (default) keeps the
    # first and counts the rest in the manifest; "keep" trains on them as given (also counted).
    duplicates: str = "drop"
    magpie: MagpieConfig = field(default_factory=MagpieConfig)
    wildguard: WildGuardConfig = field(default_factory=WildGuardConfig)
    decontamination: DecontamConfig = field(default_factory=lambda: DecontamConfig(report=False))
    stats_tokenizer: str | None = None  # Table 1 token counts: a Hub id / local tokenizer; null = whitespace words
    # Source names (data.sources[i].name) left out of this run: leave-one-source-out ablations as one
    # override, e.g. `data.exclude=[wildguard]`; the manifest lists what was excluded.
    exclude: list[str] = field(default_factory=list)

    def active_sources(self) -> list[SourceConfig]:
        return [s for s in self.sources if s.name not in self.exclude]


@dataclass
class TinyModelConfig:
    vocab_size: int = 1024            # BPE trained offline on the curated training texts
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 256


@dataclass
class ModelConfig:
    name: str = "tiny_llama"          # key of repro.model.BACKBONES
    path: str | None = None           # overrides the Hub id: a local checkpoint folder
    dtype: str = "float32"            # compute dtype. bfloat16 (GPU): bf16 autocast over fp32 master weights in
                                      # training, bf16 weights in evaluation. fp32 on CPU (no bf16 hardware).
    # eager | sdpa | flash_attention_2 (needs the flash_attn package) | null: transformers' default, eager for
    # Gemma-2. Gemma-2 with sdpa is refused (it degrades RewardBench).
    attn_implementation: str | None = None
    trust_remote_code: bool = False
    # Recompute activations in the backward pass (non-reentrant): activation memory of about one layer
    # instead of all, for ~1/3 more compute. The paper presets turn it on.
    gradient_checkpointing: bool = False
    # The new score head (repro.model.HEAD_INITS): normal = N(0, initializer_range) drawn from head_init_seed
    # (same head on any device or world size); zeros; null = as the model class draws it (transformers: the
    # same normal, from the global RNG in construction order). A checkpoint's trained head is kept.
    head_init: str | None = None
    head_init_seed: int | None = None  # null = the run's seed
    tiny: TinyModelConfig = field(default_factory=TinyModelConfig)


@dataclass
class LossConfig:
    name: str = "bt"                  # key of repro.losses.LOSSES
    # Table 3 reports no loss hyperparameters: every value below is our default (PAPER.md section 3).
    margin: float = 1.0               # hinge and margin_mse
    gamma: float = 2.0                # focal and focal_penalty
    penalty_weight: float = 0.01      # focal_penalty: lambda of the log-barrier term
    reward_bound: float = 5.0         # focal_penalty: the barrier keeps rewards inside (-B, B)
    tempered_t: float = 0.5           # tempered_log
    temperature: float = 2.0          # temperature_bt


@dataclass
class OptimConfig:
    lr: float = 2e-6                  # paper [S]: 2e-6 (8B), 1e-6 (27B)
    weight_decay: float = 1e-3        # paper [S]
    betas: tuple[float, float] = (0.9, 0.999)
    global_batch_size: int = 128      # paper [S]: pairs per optimizer step, fixed across world sizes
    per_device_batch_size: int = 1    # pairs per device per micro-step; accumulation fills the rest
    # The micro-batch layout. false: one (2B, T) tensor, right-padded to its longest conversation. true: the
    # 2B conversations end to end in one row, attention confined to each (repro.data.batching): no padding,
    # the same rewards up to float rounding. For flash_attention_2 (variable-length kernels); eager and sdpa
    # build an N x N mask over the row's N tokens (exact, fine on CPU, costly for long rows on GPU).
    padding_free: bool = False
    epochs: int = 2                   # paper [S]
    warmup_ratio: float = 0.03        # our default (not reported)
    scheduler: str = "cosine"         # paper [S]
    max_grad_norm: float = 1.0        # our default (not reported)
    max_steps: int = -1               # >0 caps optimizer steps (smoke tests); -1 = full epochs
    log_every: int = 10
    save_every: int = 0               # optimizer steps between resumable checkpoints; 0 = none
    keep_checkpoints: int = 1         # newest checkpoints kept while training; all removed once the run ends


@dataclass
class LauncherConfig:
    """How a run executes (repro/launch.py, LAUNCHERS), never what it computes: no key of this group is part
    of a run dir's name or of the config check before a skip or resume."""
    name: str = "local"               # local (in-process) | accelerate (a subprocess per rank; with
                                      # num_machines > 1 on every node of a SLURM allocation, through srun)
                                      # | zero3 (the same, with DeepSpeed ZeRO-3: repro/zero3.py)
    num_processes: int = 1            # processes (GPUs) per machine
    num_machines: int = 1             # machines; >1: one `accelerate launch` per SLURM node (repro.launch)
    cpu: bool = False                 # force CPU workers (gloo) even where CUDA exists
    # Intra-op CPU threads per process (torch.set_num_threads). null = torch's default: every core for
    # one process; under `accelerate launch` OMP_NUM_THREADS (1 per worker unless set). CPU kernels sum
    # in an order that depends on it, so runs are bit-identical only for the same thread count (env.json
    # records it). Says how a run executes, like the other launcher keys: not part of the run's identity.
    cpu_threads: int | None = None
    # launcher=zero3 only: keep ZeRO-3's fp32 master weights and AdamW states (12 bytes/parameter) in CPU
    # memory, updated there by the same torch AdamW; GPU memory then holds bf16 weights and gradients only.
    offload_optimizer: bool = False


@dataclass
class EvalConfig:
    path: str = "fixture:reward-bench"  # allenai/reward-bench on the Hub
    split: str = "filtered"
    weights: str = "current"          # current | legacy (xstest weights swapped, as in the paper)
    batch_size: int = 16              # pairs per forward
    max_length: int = 4096            # left-truncated beyond this, as the official script does
    allow_partial: bool = False       # score a set with fewer rows than the official split (the fixture);
                                      # every output then says it is partial and which sections are incomplete


@dataclass
class ExperimentConfig:
    name: str = "tiny"
    description: str = ""


@dataclass
class RunConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    experiment: ExperimentConfig = field(default_factory=ExperimentConfig)
    seed: int = 0
    runs_root: str = "runs"
    force: bool = False


def _convert(tp, value, key: str):
    origin = typing.get_origin(tp)
    if tp is typing.Any:
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        kt, vt = typing.get_args(tp)
        return {_convert(kt, k, f"{key}.{k}"): _convert(vt, v, f"{key}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return build_dataclass(tp, value, key)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            raise ConfigError(f"{key}: must not be null")
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value, key)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item,) = typing.get_args(tp)
        return [_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ConfigError(f"{key}: expected {len(args)} values, got {value!r}")
        return tuple(_convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and type(value) is tp:
        return value
    raise ConfigError(f"{key}: expected {getattr(tp, '__name__', tp)}, got {value!r}")


def build_dataclass(cls, data: dict, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown config key(s) {[where + k for k in unknown]}; valid under "
                          f"{prefix or 'the top level'}: {sorted(names)}")
    kwargs = {k: _convert(hints[k], v, f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    return cls(**kwargs)


def from_dict(data: dict) -> RunConfig:
    """Build and validate a RunConfig from a plain (resolved) dict."""
    cfg = build_dataclass(RunConfig, data)
    validate(cfg)
    return cfg


def _check_name(key: str, value: str, registry) -> None:
    if value not in registry:
        raise ConfigError(f"{key}={value!r} is not a known name; valid: {', '.join(sorted(registry))}")


def validate(cfg: RunConfig) -> None:
    """Cross-field checks that need the registries; each error names the key."""
    from repro.data.sources import SOURCES
    from repro.eval.rewardbench import WEIGHTS
    from repro.launch import LAUNCHERS
    from repro.losses import LOSSES
    from repro.model import BACKBONES

    _check_name("loss.name", cfg.loss.name, LOSSES)
    _check_name("model.name", cfg.model.name, BACKBONES)
    _check_name("launcher.name", cfg.launcher.name, LAUNCHERS)
    _check_name("eval.weights", cfg.eval.weights, WEIGHTS)
    if not cfg.data.sources:
        raise ConfigError("data.sources: at least one source is needed")
    seen: dict[tuple, int] = {}
    for i, s in enumerate(cfg.data.sources):
        _check_name(f"data.sources[{i}].name", s.name, SOURCES)
        key = (s.name, s.path, s.split)
        if key in seen:
            raise ConfigError(f"data.sources[{i}] repeats data.sources[{seen[key]}] ({s.name}, {s.path}, "
                              f"split {s.split}): each source is read once; list it once")
        seen[key] = i
    validate_data(cfg.data)
    validate_model(cfg.model)
    unknown = [e for e in cfg.data.exclude if e not in {s.name for s in cfg.data.sources}]
    if unknown:
        raise ConfigError(f"data.exclude={cfg.data.exclude}: {unknown} name no source of data={cfg.data.name!r}; "
                          f"its sources: {', '.join(s.name for s in cfg.data.sources)}")
    if not cfg.data.active_sources():
        raise ConfigError(f"data.exclude={cfg.data.exclude} leaves no source")
    if cfg.data.duplicates not in ("drop", "keep"):
        raise ConfigError(f"data.duplicates={cfg.data.duplicates!r}; valid: drop, keep")
    if cfg.seed < 0:
        raise ConfigError(f"seed={cfg.seed}: must be >= 0")
    o = cfg.optim
    for key, value in (("optim.global_batch_size", o.global_batch_size),
                       ("optim.per_device_batch_size", o.per_device_batch_size), ("optim.epochs", o.epochs),
                       ("optim.log_every", o.log_every), ("optim.keep_checkpoints", o.keep_checkpoints),
                       ("launcher.num_processes", cfg.launcher.num_processes),
                       ("launcher.num_machines", cfg.launcher.num_machines), ("eval.batch_size", cfg.eval.batch_size),
                       ("eval.max_length", cfg.eval.max_length), ("data.max_length", cfg.data.max_length)):
        if value < 1:
            raise ConfigError(f"{key}={value}: must be >= 1")
    if o.save_every < 0:
        raise ConfigError(f"optim.save_every={o.save_every}: must be >= 0 (0 = no checkpoints)")
    if o.max_steps == 0 or o.max_steps < -1:
        raise ConfigError(f"optim.max_steps={o.max_steps}: must be >= 1, or -1 for full epochs")
    for i, b in enumerate(o.betas):
        if not 0 <= b < 1:
            raise ConfigError(f"optim.betas[{i}]={b}: must be in [0, 1)")
    if cfg.launcher.name == "local" and cfg.launcher.num_processes * cfg.launcher.num_machines != 1:
        raise ConfigError(f"launcher=local runs one process in the driver (launcher.num_processes="
                          f"{cfg.launcher.num_processes}, launcher.num_machines={cfg.launcher.num_machines}); "
                          "several processes or machines need launcher=accelerate")
    if cfg.launcher.offload_optimizer and cfg.launcher.name != "zero3":
        raise ConfigError(f"launcher.offload_optimizer=true applies to launcher=zero3 (DeepSpeed), not "
                          f"launcher={cfg.launcher.name}")
    if cfg.launcher.cpu_threads is not None and cfg.launcher.cpu_threads < 1:
        raise ConfigError(f"launcher.cpu_threads={cfg.launcher.cpu_threads}: must be >= 1, or null for "
                          "torch's default")
    if not o.lr > 0:
        raise ConfigError(f"optim.lr={o.lr}: must be > 0")
    if not 0 <= o.warmup_ratio < 1:
        raise ConfigError(f"optim.warmup_ratio={o.warmup_ratio}: must be in [0, 1)")
    if o.weight_decay < 0 or o.max_grad_norm <= 0:
        raise ConfigError("optim.weight_decay must be >= 0 and optim.max_grad_norm > 0")
    if cfg.loss.margin < 0:
        raise ConfigError(f"loss.margin={cfg.loss.margin}: must be >= 0 (hinge and margin_mse)")
    if cfg.loss.penalty_weight < 0:
        raise ConfigError(f"loss.penalty_weight={cfg.loss.penalty_weight}: must be >= 0")
    t = cfg.model.tiny
    for key, value in (("model.tiny.hidden_size", t.hidden_size), ("model.tiny.num_layers", t.num_layers),
                       ("model.tiny.num_heads", t.num_heads), ("model.tiny.intermediate_size", t.intermediate_size)):
        if value < 1:
            raise ConfigError(f"{key}={value}: must be >= 1")
    if t.hidden_size % t.num_heads:
        raise ConfigError(f"model.tiny.hidden_size={t.hidden_size} is not divisible by "
                          f"model.tiny.num_heads={t.num_heads}")
    from repro.model import TINY_MIN_VOCAB

    if t.vocab_size < TINY_MIN_VOCAB:
        raise ConfigError(f"model.tiny.vocab_size={t.vocab_size}: must be >= {TINY_MIN_VOCAB} (256 byte symbols "
                          "of the byte-level BPE plus the special tokens)")
    if cfg.loss.temperature <= 0 or cfg.loss.reward_bound <= 0 or cfg.loss.gamma < 0:
        raise ConfigError("loss.temperature and loss.reward_bound must be > 0, loss.gamma >= 0")
    if not 0 <= cfg.loss.tempered_t <= 1:
        raise ConfigError(f"loss.tempered_t={cfg.loss.tempered_t}: must be in [0, 1] (above 1 the loss is unbounded)")
    if cfg.model.dtype not in ("float32", "bfloat16", "float16"):
        raise ConfigError(f"model.dtype={cfg.model.dtype!r}; valid: bfloat16, float16, float32")
    world = cfg.launcher.num_processes * cfg.launcher.num_machines
    if o.global_batch_size % (o.per_device_batch_size * world):
        raise ConfigError(f"optim.global_batch_size={o.global_batch_size} is not a multiple of "
                          f"optim.per_device_batch_size={o.per_device_batch_size} x world size {world}")
    if o.scheduler not in ("cosine", "linear", "constant"):
        raise ConfigError(f"optim.scheduler={o.scheduler!r}; valid: constant, cosine, linear")


ATTN_IMPLEMENTATIONS = ("eager", "flash_attention_2", "sdpa")


def validate_model(m: ModelConfig) -> None:
    """Checks of the model options (the name is checked against BACKBONES by `validate`); each error is one
    line naming the key."""
    import importlib.util

    from repro.backbones import model_type
    from repro.model import HEAD_INITS

    attn = m.attn_implementation
    if attn is not None and attn not in ATTN_IMPLEMENTATIONS:
        raise ConfigError(f"model.attn_implementation={attn!r}; valid: {', '.join(ATTN_IMPLEMENTATIONS)}, "
                          "or null (transformers' default)")
    if attn == "sdpa" and model_type(m.name, m.path) == "gemma2":
        raise ConfigError("model.attn_implementation=sdpa is refused for Gemma-2: sdpa degrades its RewardBench "
                          "scores (and its classifier has no sdpa path); use eager or flash_attention_2")
    if attn == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise ConfigError("model.attn_implementation=flash_attention_2 needs the flash_attn package, which is not "
                          "installed here (pip install flash-attn, on a CUDA machine); or use eager or sdpa")
    if m.head_init is not None and m.head_init not in HEAD_INITS:
        raise ConfigError(f"model.head_init={m.head_init!r}; valid: {', '.join(HEAD_INITS)}, or null "
                          "(the model class's own initialisation)")
    if m.head_init_seed is not None and m.head_init_seed < 0:
        raise ConfigError(f"model.head_init_seed={m.head_init_seed}: must be >= 0, or null for the run's seed")


def validate_data(d: DataConfig) -> None:
    """Checks of the curation steps' settings; each error names the dotted key."""
    from repro.data.select import ROUNDING, SCORE_FUNCTIONS

    m = d.magpie
    _check_name("data.magpie.score", m.score, SCORE_FUNCTIONS)
    _check_name("data.magpie.rounding", m.rounding, ROUNDING)
    for key, frac in [("default_fraction", m.default_fraction)] + [(f"top_fraction.{k}", v) for k, v in
                                                                    m.top_fraction.items()]:
        if not 0 <= frac <= 1:
            raise ConfigError(f"data.magpie.{key}={frac}: must be in [0, 1]")
    w = d.wildguard
    if w.stage2 and not w.scorer and not w.scorer_run:
        raise ConfigError("data.wildguard.stage2=true needs data.wildguard.scorer (a run dir, Hub id or folder) "
                          "or data.wildguard.scorer_run (the overrides of the run that trains it)")
    if w.scorer and w.scorer_run:
        raise ConfigError("data.wildguard.scorer and data.wildguard.scorer_run are both set: name one scorer")
    for key, value in (("data.wildguard.scorer_batch_size", w.scorer_batch_size),
                       ("data.wildguard.scorer_max_length", w.scorer_max_length)):
        if value < 1:
            raise ConfigError(f"{key}={value}: must be >= 1")
    c = d.decontamination
    if not 1 <= c.min_n <= c.max_n:
        raise ConfigError(f"data.decontamination.min_n={c.min_n}, max_n={c.max_n}: need 1 <= min_n <= max_n")
    if c.turns not in ("all", "last"):
        raise ConfigError(f"data.decontamination.turns={c.turns!r}; valid: all, last")


def to_dict(cfg) -> dict:
    d = dataclasses.asdict(cfg)
    d["optim"]["betas"] = list(d["optim"]["betas"])
    return d


def save(cfg: RunConfig, path: str | Path) -> None:
    from repro.results import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))


def load(path: str | Path) -> RunConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no frozen config here (is this a run dir?)")
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, got {type(data).__name__}")
    return from_dict(data)


CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def compose(overrides: list[str], *, key: str = "the overrides") -> RunConfig:
    """The validated RunConfig that `python -m repro.train <overrides>` runs (Hydra compose of conf/).
    Inside a running Hydra app (`repro.train`) the app's own config dir is used."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    def build():
        cfg = hydra_compose("config", overrides=list(overrides))
        return from_dict(OmegaConf.to_container(cfg, resolve=True))

    try:
        if GlobalHydra.instance().is_initialized():
            return build()
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return build()
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - Hydra's errors span lines
        msg = "; ".join(line.strip() for line in str(e).splitlines() if line.strip())
        raise ConfigError(f"{key}={list(overrides)}: {msg}") from None


def read_yaml(path: str | Path):
    """Parsed YAML, or a ConfigError naming the file and the line where parsing failed."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}:{where}: not valid YAML ({problem})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read ({type(e).__name__}: {e})") from None
