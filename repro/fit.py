"""Training worker: `python -m repro.fit RUN_DIR`.

This is what `accelerate launch` / `torchrun` start on every rank (and what the local launcher calls
in-process). It reads the frozen `RUN_DIR/config.yaml` and the curated data recorded in
`RUN_DIR/data/manifest.json`, builds the backbone, trains, and saves `RUN_DIR/model/` (safetensors) and
`RUN_DIR/train.json`. It never imports Hydra.
"""
from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

from repro import config as config_mod

log = logging.getLogger(__name__)


def curated_pairs(run_dir: Path) -> list[dict]:
    import pyarrow.parquet as pq

    manifest = json.loads((run_dir / "data" / "manifest.json").read_text())
    return pq.read_table(Path(manifest["cache_dir"]) / "pairs.parquet").to_pylist()


def training_texts(pairs: list[dict]) -> list[str]:
    """The texts the tiny backbone's tokenizer is trained on: every prompt turn and response."""
    return [m["content"] for p in pairs for m in p["prompt"]] + [p["chosen"] for p in pairs] + \
        [p["rejected"] for p in pairs]


def build_backbone(cfg, pairs: list[dict]):
    """(model, tokenizer) for `cfg.model`: the tiny offline Llama, or a Hub/local checkpoint."""
    from repro.model import BACKBONES, build_tiny_backbone, build_tiny_tokenizer, load_pretrained

    m = cfg.model
    hub_id = m.path or BACKBONES[m.name]
    if hub_id is None:
        tok = build_tiny_tokenizer(training_texts(pairs), vocab_size=m.tiny.vocab_size)
        model = build_tiny_backbone(tok, hidden_size=m.tiny.hidden_size, num_layers=m.tiny.num_layers,
                                    num_heads=m.tiny.num_heads, intermediate_size=m.tiny.intermediate_size,
                                    max_position_embeddings=max(512, cfg.data.max_length), seed=cfg.seed)
        return model, tok
    # Weights stay fp32 for training (AdamW needs fp32 master weights: updates of ~1e-6 vanish in bf16);
    # `model.dtype: bfloat16` means bf16 autocast for the compute (see make_accelerator).
    return load_pretrained(hub_id, dtype="float32", attn_implementation=m.attn_implementation,
                           trust_remote_code=m.trust_remote_code)


def make_accelerator(cfg):
    import os

    import torch
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    cpu = cfg.launcher.cpu or not torch.cuda.is_available()
    if cpu:
        # accelerate imports DeepSpeed when saving; tell it the device so it does not warn on every run
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    # Several CPU workers talk over gloo (the default backend choice would fail without NCCL).
    kwargs = [InitProcessGroupKwargs(backend="gloo")] if cpu and distributed else []
    # Compute dtype on GPU as autocast over fp32 weights (fp16 adds accelerate's loss scaler); CPU: fp32.
    mixed = "no" if cpu else {"bfloat16": "bf16", "float16": "fp16"}.get(cfg.model.dtype, "no")
    return Accelerator(cpu=cpu, mixed_precision=mixed, kwargs_handlers=kwargs)


def set_cpu_threads(cfg) -> int:
    """Apply `launcher.cpu_threads` (null keeps torch's default) and return the intra-op thread count.

    CPU kernels split their sums by thread, so the count is part of what makes two runs bit-identical.
    """
    import torch

    if cfg.launcher.cpu_threads:
        torch.set_num_threads(cfg.launcher.cpu_threads)
    return torch.get_num_threads()


def fit(run_dir: str | Path) -> dict:
    from accelerate.utils import set_seed

    from repro.data.tokenize import tokenize_pairs
    from repro.engine import train
    from repro.results import MetricsLog, atomic_write_json, discard, update_json

    run_dir = Path(run_dir)
    cfg = config_mod.load(run_dir / "config.yaml")
    threads = set_cpu_threads(cfg)
    accelerator = make_accelerator(cfg)
    if accelerator.is_main_process:
        update_json(run_dir / "env.json", torch_threads_per_process=threads)
    set_seed(cfg.seed)
    pairs = curated_pairs(run_dir)
    model, tokenizer = build_backbone(cfg, pairs)
    examples, drops = tokenize_pairs(tokenizer, pairs, cfg.data.max_length)
    if drops:
        log.warning("tokenisation dropped %d pairs: %s", sum(drops.values()), dict(drops))
    metrics = MetricsLog(run_dir / "metrics.jsonl", enabled=accelerator.is_main_process)
    summary = train(accelerator, model, tokenizer, examples, cfg.optim, cfg.loss, seed=cfg.seed, metrics=metrics,
                    checkpoint_dir=run_dir / "checkpoints")
    wrapped = summary.pop("model")  # as prepared by accelerate (DDP-wrapped on several processes)

    out = run_dir / "model"
    accelerator.wait_for_everyone()
    state = accelerator.get_state_dict(wrapped)
    if cfg.model.dtype != "float32" and state is not None:
        # Released in the compute dtype (as the Skywork checkpoints are): half the size of fp32 masters.
        import torch

        dtype = getattr(torch, cfg.model.dtype)
        state = {k: v.to(dtype) if v.is_floating_point() else v for k, v in state.items()}
    unwrapped = accelerator.unwrap_model(wrapped)
    unwrapped.save_pretrained(out, is_main_process=accelerator.is_main_process, save_function=accelerator.save,
                              state_dict=state, safe_serialization=True)
    if accelerator.is_main_process:
        tokenizer.save_pretrained(out)
        summary.update(pairs_in=len(pairs), pairs_available=len(examples), tokenize_dropped=dict(drops),
                       world_size=accelerator.num_processes)
        atomic_write_json(run_dir / "train.json", summary)
        # The final model is saved: resumable checkpoints (model + optimizer state) are no longer needed.
        for folder in (run_dir / "checkpoints").glob("step_*"):
            discard(folder)  # never leave a half-deleted checkpoint that looks complete
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return summary


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m repro.fit RUN_DIR", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import os
    import signal

    from repro.launch import die_with_parent
    from repro.results import TrainingStopped

    if "LOCAL_RANK" in os.environ:  # started by a launcher: never outlive it, or a rerun finds us writing
        die_with_parent(signal.SIGKILL)
    rank = os.environ.get("RANK", "0")
    # One line per stopped worker, in a form the driver reads back from fit.log (repro.launch.STOP_LINE).
    try:
        fit(argv[0])
    except TrainingStopped as e:
        print(f"stopped (rank {rank}, {type(e).__name__}): {e}", file=sys.stderr, flush=True)
        return e.exit_code
    except KeyboardInterrupt:  # outside the training loop (loading, saving)
        print(f"stopped (rank {rank}, TrainingInterrupted): interrupted", file=sys.stderr, flush=True)
        return 130
    except Exception as e:
        log.exception("worker failed")
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"stopped (rank {rank}, error): {type(e).__name__}: {first}", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
