"""DeepSpeed ZeRO-3 (`launcher=zero3`): the DeepSpeed config a run trains under, sharded construction of
the backbone, and the checks that keep DeepSpeed's build steps out of a run.

The paper's 8B and 27B reward models do not fit one GPU with fp32 master weights and AdamW states (16
bytes per parameter: 436 GB for the Gemma-2-27B reward model). ZeRO stage 3 shards parameters, gradients and optimizer
states over the ranks, so each holds 1/N of them and gathers a layer's weights only while it computes.
The run is otherwise the same as under every launcher: the same global batch (per device x accumulation x
world size), data order, client `torch.optim.AdamW`, LambdaLR schedule stepped once per optimizer step by
the trainer, checkpoints through `accelerator.save_state`, final weights as one safetensors folder.

* `deepspeed_config(cfg, cuda=...)` is the DeepSpeed JSON the driver writes to RUN_DIR/deepspeed.json and
  passes to `accelerate launch --use_deepspeed --deepspeed_config_file`. Values the trainer owns are
  "auto" and filled from the run's `optim` config in the worker (`plugin`); the rest are concrete.
* `sharded_construction` wraps the worker's backbone construction: a backbone built from a config (the
  tiny model) is constructed inside `deepspeed.zero.Init`, each module partitioned as soon as it exists,
  so no rank ever holds the whole model; a pretrained checkpoint is loaded by `from_pretrained`, which
  shards it itself while accelerate's `HfDeepSpeedConfig` is alive.
* `skip_shm_comm_build` keeps DeepSpeed from compiling a C++ op the first time CPU workers start.

Importing this module imports neither torch nor DeepSpeed.
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
from pathlib import Path

CONFIG_FILE = "deepspeed.json"  # in the run dir: what the workers were launched with


def unavailable() -> str | None:
    """Why ZeRO-3 cannot run on this machine (one line naming `launcher.name`), or None if it can.

    DeepSpeed trains on Linux: CUDA GPUs, or CPU workers over gloo (launcher.cpu=true). It has no MPS
    (Apple GPU) backend, and accelerate does not start it on macOS or Windows.
    """
    if not sys.platform.startswith("linux"):
        return (f"launcher.name=zero3: DeepSpeed ZeRO-3 runs on Linux (CUDA GPUs, or CPU workers with "
                f"launcher.cpu=true), not on this {sys.platform} machine (no MPS backend); use launcher=accelerate "
                "or launcher=local here")
    if importlib.util.find_spec("deepspeed") is None:
        return ("launcher.name=zero3 needs DeepSpeed, which is not installed in this environment: "
                "`pip install -c constraints.txt deepspeed` (DS_BUILD_OPS=0 is enough), or use launcher=accelerate")
    return None


def compute_dtype(cfg, *, cuda: bool) -> str:
    """The dtype DeepSpeed computes in: `model.dtype` on CUDA; fp32 on CPU (no bf16 hardware there, as for
    every other launcher)."""
    return cfg.model.dtype if cuda else "float32"


def hidden_size(cfg) -> int | None:
    """The backbone's hidden size, read offline where the package knows it: the tiny model's config, a
    shipped backbone's config.json, a local checkpoint folder's config.json. None for a Hub id given as
    `model.path` (accelerate then fills the sizes from the loaded model)."""
    from repro import backbones
    from repro.model import BACKBONES

    m = cfg.model
    if m.path is None and BACKBONES[m.name] is None:
        return m.tiny.hidden_size
    if m.path is None and m.name in backbones.SHIPPED:
        return int(backbones.config_dict(m.name)["hidden_size"])
    local = Path(m.path or "").expanduser() / "config.json"
    if m.path and local.is_file():
        try:
            d = json.loads(local.read_text(encoding="utf-8"))
            size = d.get("hidden_size") or (d.get("text_config") or {}).get("hidden_size")
            return int(size) if size else None
        except (OSError, ValueError):
            return None  # loading the checkpoint reports the problem with its name
    return None


def deepspeed_config(cfg, *, cuda: bool) -> dict:
    """The DeepSpeed config of a run (written to RUN_DIR/deepspeed.json by the driver).

    "auto" marks what accelerate fills in the worker from the run's config, so one JSON holds for every
    world size: micro-batch (`optim.per_device_batch_size`), accumulation (global batch / (micro-batch x
    world size)), clipping (`optim.max_grad_norm`), and the global batch itself. Stage 3; bf16 (or fp16)
    compute on CUDA when `model.dtype` says so, with fp32 master weights and AdamW states kept by ZeRO's
    optimizer; fp32 on CPU. `launcher.offload_optimizer` keeps the fp32 master weights and AdamW states in
    CPU memory (updated there by the same torch AdamW: `zero_force_ds_cpu_optimizer: false`). The final
    model is gathered into 16-bit (fp32 on CPU) weights on rank 0 for saving.
    """
    dtype = compute_dtype(cfg, cuda=cuda)
    zero: dict = {
        "stage": 3,
        "offload_optimizer": ({"device": "cpu", "pin_memory": cuda} if cfg.launcher.offload_optimizer
                              else {"device": "none"}),
        "offload_param": {"device": "none"},
        "overlap_comm": cuda,  # overlaps on CUDA streams; CPU workers have none
        "contiguous_gradients": True,
        "stage3_gather_16bit_weights_on_model_save": True,
    }
    # Bucket sizes and the size under which a parameter stays whole on every rank: accelerate's rule for
    # "auto" (hidden^2, 0.9 hidden^2, 10 hidden), computed here when the backbone's size is known offline,
    # so that construction inside zero.Init (which never sees "auto") partitions with the same threshold.
    h = hidden_size(cfg)
    zero.update({"reduce_bucket_size": h * h if h else "auto",
                 "stage3_prefetch_bucket_size": int(0.9 * h * h) if h else "auto",
                 "stage3_param_persistence_threshold": 10 * h if h else "auto"})
    return {
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "bf16": {"enabled": dtype == "bfloat16"},
        "fp16": {"enabled": dtype == "float16"},
        "zero_optimization": zero,
        # The trainer's own torch.optim.AdamW (and LambdaLR, stepped by the trainer, never by DeepSpeed):
        # no DeepSpeed optimizer op to compile, and the same update rule as the other launchers.
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "wall_clock_breakdown": False,
    }


def write_config(run_dir: Path, cfg) -> Path:
    """Write the run's DeepSpeed config to RUN_DIR/deepspeed.json (what the workers are launched with)."""
    import torch

    from repro.results import atomic_write_json

    cuda = not cfg.launcher.cpu and torch.cuda.is_available()
    return atomic_write_json(Path(run_dir) / CONFIG_FILE, deepspeed_config(cfg, cuda=cuda))


def skip_shm_comm_build() -> None:
    """Keep DeepSpeed from JIT-compiling its shared-memory communication op on CPU workers.

    DeepSpeed's process-group wrapper (`deepspeed.comm.torch.TorchBackend.__init__`) builds
    `ShareMemCommBuilder` ("deepspeed_shm_comm", csrc/cpu/comm/shm*.cpp) whenever the accelerator is the CPU
    one on Linux: about a minute of C++ compilation the first time (cached under TORCH_EXTENSIONS_DIR), and
    no environment variable or config key turns it off. The op only serves `inference_all_reduce`, the
    shared-memory all-reduce of tensor-parallel inference; ZeRO-3 training communicates through
    torch.distributed (gloo) and never calls it. DeepSpeed builds it only for ops marked compatible in
    `deepspeed.ops.__compatible_ops__` (probed once per process and kept, so an edit persists): marking it
    incompatible before the first initialise makes DeepSpeed fall back to gloo for that op too. CUDA
    accelerators have no such builder, and a client torch AdamW avoids DeepSpeed's CPU Adam op.
    """
    import deepspeed.ops
    from deepspeed.ops.op_builder.cpu import ShareMemCommBuilder

    deepspeed.ops.__compatible_ops__[ShareMemCommBuilder.NAME] = False


def plugin(cfg, config_path: Path):
    """accelerate's DeepSpeedPlugin for the run's config file, with the trainer-owned "auto" values that
    accelerate cannot fill itself set from the run's config: clipping (`optim.max_grad_norm`) and the
    micro-batch (accelerate would read it from a dataloader; the trainer collates its own batches).
    Accumulation and the global batch are filled at `accelerator.prepare` (repro.engine sets
    `accelerator.gradient_accumulation_steps` first)."""
    from accelerate.utils import DeepSpeedPlugin

    p = DeepSpeedPlugin(hf_ds_config=str(config_path), gradient_clipping=cfg.optim.max_grad_norm)
    p.fill_match("train_micro_batch_size_per_gpu", must_match=False,
                 train_micro_batch_size_per_gpu=cfg.optim.per_device_batch_size)
    if p.zero_stage != 3:
        raise ValueError(f"{config_path}: zero_optimization.stage={p.zero_stage}; launcher=zero3 needs stage 3")
    return p


def is_zero3(accelerator) -> bool:
    """Whether `accelerator` runs DeepSpeed ZeRO stage 3."""
    p = getattr(accelerator.state, "deepspeed_plugin", None)
    return p is not None and p.zero_stage == 3


def builds_from_config(cfg) -> bool:
    """Whether the run constructs its backbone from a config (the tiny model) rather than loading a
    checkpoint (`model.path`, or a Hub id of repro.model.BACKBONES)."""
    from repro.model import BACKBONES

    return cfg.model.path is None and BACKBONES[cfg.model.name] is None


def partition_report(model) -> dict:
    """How much of `model` this rank holds: parameter tensors and elements in all, those partitioned (the
    rank holds an empty tensor and its shard), those kept whole on every rank (DeepSpeed's persistent
    parameters, smaller than stage3_param_persistence_threshold), and the elements this rank holds."""
    params = list(model.parameters())
    partitioned = [p for p in params if hasattr(p, "ds_numel") and p.numel() == 0]
    return {"tensors": len(params), "partitioned": len(partitioned),
            "whole": sum(1 for p in params if hasattr(p, "ds_numel") and p.numel() == p.ds_numel),
            "elements": sum(int(getattr(p, "ds_numel", p.numel())) for p in params),
            "held": sum(int(p.ds_tensor.numel()) if hasattr(p, "ds_tensor") else p.numel() for p in params)}


@contextlib.contextmanager
def sharded_construction(cfg, accelerator):
    """Build the backbone inside this context: under ZeRO-3 no rank ever holds the whole model.

    * Pretrained (`from_pretrained`): transformers creates each module inside `deepspeed.zero.Init` and
      loads the checkpoint into the partitions itself, because accelerate keeps an `HfDeepSpeedConfig`
      alive (the DeepSpeedPlugin's) from the Accelerator's creation on; nothing else is needed here.
    * From a config (the tiny model; `repro.backbones.build_reward_model`): constructed inside
      `deepspeed.zero.Init`, so every module is partitioned as soon as its own `__init__` returns. A
      model's weight initialisation (`PreTrainedModel.init_weights`, run by `post_init` at the end of its
      construction) would then see empty shards; for the duration of this context it runs on gathered
      parameters, on rank 0 (transformers' `initialize_weights_zero3`), and rank 0 broadcasts the result.
      Nothing else changes: PyTorch's own initialisers run on each module's full tensors before it is
      partitioned, and the same draws come from the global RNG in the same order as without ZeRO-3, so
      ZeRO-3 starts from exactly the weights that one process starts from (tested).

    Outside ZeRO-3 the context does nothing.
    """
    if not is_zero3(accelerator):
        yield
        return
    from transformers.integrations import is_deepspeed_zero3_enabled

    if not is_deepspeed_zero3_enabled():  # accelerate's plugin keeps it alive; if that changes, say so
        raise RuntimeError("ZeRO-3 run without a live HfDeepSpeedConfig: from_pretrained would not shard")
    if not builds_from_config(cfg):
        yield
        return
    import deepspeed
    from transformers import PreTrainedModel
    from transformers.integrations import deepspeed_config
    from transformers.integrations.deepspeed import initialize_weights_zero3, prevent_arange_dtype_change
    from transformers.modeling_utils import set_zero3_state

    def init_weights_gathered(model) -> None:
        initialize_weights_zero3(model)
        model.tie_weights(recompute_mapping=False)

    original = PreTrainedModel.init_weights
    with contextlib.ExitStack() as stack:
        stack.enter_context(prevent_arange_dtype_change())  # RoPE buffers keep their dtype under bf16
        # the HfDeepSpeedConfig's copy: accelerate's "auto" batch values replaced, which zero.Init requires
        stack.enter_context(deepspeed.zero.Init(config_dict_or_path=deepspeed_config()))
        # transformers' flag for "already inside zero.Init": its from_config then constructs in ours instead
        # of opening its own (which would also switch off PyTorch's initialisers and change the draws)
        stack.enter_context(set_zero3_state())
        PreTrainedModel.init_weights = init_weights_gathered
        stack.callback(setattr, PreTrainedModel, "init_weights", original)
        yield
