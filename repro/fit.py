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


class CuratedPairs:
    """A run's curated pairs, left on disk: `pairs.parquet` in the curation's cache folder, read a batch
    at a time (never whole). `len()` comes from the parquet metadata; `sha256` from the manifest."""

    def __init__(self, path: str | Path, sha256: str):
        import pyarrow.parquet as pq

        self.path, self.sha256 = Path(path), sha256
        self.num_rows = pq.read_metadata(self.path).num_rows

    def __len__(self) -> int:
        return self.num_rows

    def batches(self, columns, batch_size: int = 8192):
        from repro.data.tokenize import pair_batches

        return pair_batches(self.path, batch_size, columns)


def curated_pairs(run_dir: Path) -> CuratedPairs:
    import hashlib

    manifest = json.loads((run_dir / "data" / "manifest.json").read_text())
    path = Path(manifest["cache_dir"]) / "pairs.parquet"
    sha = manifest.get("sha256") or hashlib.sha256(path.read_bytes()).hexdigest()  # older manifests: the file's
    return CuratedPairs(path, sha)


def training_texts(pairs):
    """The texts the tiny backbone's tokenizer is trained on: every prompt turn, then every chosen and
    every rejected response. `pairs`: `CuratedPairs` (streamed from its file a batch at a time, a column
    per pass), an Arrow table or a list of dicts."""
    if isinstance(pairs, list):
        yield from (m["content"] for p in pairs for m in p["prompt"])
        yield from (p["chosen"] for p in pairs)
        yield from (p["rejected"] for p in pairs)
        return
    from repro.data.tokenize import pair_batches

    for column in ("prompt", "chosen", "rejected"):
        batches = pairs.batches([column]) if isinstance(pairs, CuratedPairs) else pair_batches(pairs, 8192, [column])
        for batch in batches:
            values = batch.column(0)
            yield from (values.flatten().field("content") if column == "prompt" else values).to_pylist()


def build_backbone(cfg, pairs: list[dict]):
    """(model, tokenizer) for `cfg.model`: the tiny offline Llama, or a Hub/local checkpoint, with the model
    options applied (score-head initialisation, gradient checkpointing).

    A paper backbone loaded by name (no `model.path`) gets its shipped config (`repro.backbones.model_config`:
    no rank downloads a config) and its shipped chat template. Construction from a config goes through
    `repro.backbones.build_reward_model` (the tiny model) or `from_pretrained` (the Hub and local
    checkpoints), the two calls a ZeRO-3 run wraps (`zero.Init`, `HfDeepSpeedConfig`).
    """
    from repro import backbones
    from repro.model import (BACKBONES, build_tiny_backbone, build_tiny_tokenizer, enable_gradient_checkpointing,
                             init_score_head, load_pretrained)

    m = cfg.model
    head_seed = cfg.seed if m.head_init_seed is None else m.head_init_seed
    hub_id = m.path or BACKBONES[m.name]
    if hub_id is None:
        tok = build_tiny_tokenizer(training_texts(pairs), vocab_size=m.tiny.vocab_size)
        model = build_tiny_backbone(tok, hidden_size=m.tiny.hidden_size, num_layers=m.tiny.num_layers,
                                    num_heads=m.tiny.num_heads, intermediate_size=m.tiny.intermediate_size,
                                    max_position_embeddings=max(512, cfg.data.max_length), seed=cfg.seed,
                                    attn_implementation=m.attn_implementation)
        if m.head_init:
            init_score_head(model, m.head_init, head_seed)
    else:
        shipped = m.path is None and m.name in backbones.SHIPPED
        # Weights stay fp32 for training (AdamW needs fp32 master weights: updates of ~1e-6 vanish in bf16);
        # `model.dtype: bfloat16` means bf16 autocast for the compute (see make_accelerator).
        model, tok = load_pretrained(hub_id, dtype="float32", attn_implementation=m.attn_implementation,
                                     trust_remote_code=m.trust_remote_code,
                                     config=backbones.model_config(m.name) if shipped else None,
                                     head_init=m.head_init, head_seed=head_seed)
        if shipped and tok.chat_template != backbones.chat_template(m.name):
            # the Hub copy changed since the package pinned it: what a run renders must not depend on the day
            log.warning("%s: the tokenizer's chat template differs from repro/backbones/%s/chat_template.jinja; "
                        "using the shipped one", hub_id, m.name)
            tok.chat_template = backbones.chat_template(m.name)
    if m.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model, tok


def make_accelerator(cfg, run_dir: Path | None = None):
    import os

    import torch
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    cpu = cfg.launcher.cpu or not torch.cuda.is_available()
    if cpu:
        # accelerate imports DeepSpeed when saving; tell it the device so it does not warn on every run
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
    if cfg.launcher.name == "zero3":
        return _zero3_accelerator(cfg, run_dir, cpu=cpu)
    # Several CPU workers talk over gloo (the default backend choice would fail without NCCL).
    kwargs = [InitProcessGroupKwargs(backend="gloo")] if cpu and distributed else []
    # Compute dtype on GPU as autocast over fp32 weights (fp16 adds accelerate's loss scaler); CPU: fp32.
    mixed = "no" if cpu else {"bfloat16": "bf16", "float16": "fp16"}.get(cfg.model.dtype, "no")
    return Accelerator(cpu=cpu, mixed_precision=mixed, kwargs_handlers=kwargs)


def _zero3_accelerator(cfg, run_dir: Path | None, *, cpu: bool):
    """The Accelerator of a `launcher=zero3` worker: DeepSpeed's engine with RUN_DIR/deepspeed.json.

    Precision is the DeepSpeed config's (bf16/fp16 from `model.dtype` on CUDA, fp32 on CPU), not an
    autocast. On CPU the workers talk over gloo; accelerate's `cpu=True` would switch DeepSpeed off, so
    the CPU is chosen by DeepSpeed's CPU accelerator instead (repro.launch.zero3_command hides the GPUs),
    without the C++ op DeepSpeed would otherwise compile on first use (`repro.zero3.skip_shm_comm_build`).
    """
    import os
    import warnings

    from accelerate import Accelerator
    from accelerate.utils import DistributedType, InitProcessGroupKwargs

    from repro import zero3

    if run_dir is None or os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() != "true":
        raise RuntimeError("launcher=zero3 workers are started by `accelerate launch --use_deepspeed` (python -m "
                           "repro.train starts them and prints the command)")
    if cpu:
        zero3.skip_shm_comm_build()
    # DeepSpeed's collectives call torch.distributed functions that torch 2.13 deprecates, each call a
    # warning in fit.log that a user can do nothing about
    warnings.filterwarnings("ignore", message=r"`torch\.distributed\.(reduce_scatter_tensor|all_gather_into_tensor)` "
                            "is deprecated", category=FutureWarning)
    kwargs = [InitProcessGroupKwargs(backend="gloo")] if cpu else []
    accelerator = Accelerator(deepspeed_plugin=zero3.plugin(cfg, Path(run_dir) / zero3.CONFIG_FILE),
                              kwargs_handlers=kwargs)
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        raise RuntimeError(f"launcher=zero3: accelerate started {accelerator.distributed_type.value}, not DeepSpeed")
    return accelerator


def set_cpu_threads(cfg) -> int:
    """Apply `launcher.cpu_threads` (null keeps torch's default) and return the intra-op thread count.

    CPU kernels split their sums by thread, so the count is part of what makes two runs bit-identical.
    """
    import torch

    if cfg.launcher.cpu_threads:
        torch.set_num_threads(cfg.launcher.cpu_threads)
    return torch.get_num_threads()


def token_cache_root(run_dir: Path, pairs: CuratedPairs) -> Path:
    """Where the token caches of a run's data live: `tokenized/` beside the curated pairs (shared by every
    run of the same data), or the run's own `data/tokenized/` when that folder is read-only."""
    import os

    return pairs.path.parent / "tokenized" if os.access(pairs.path.parent, os.W_OK) else run_dir / "data" / "tokenized"


def fit(run_dir: str | Path) -> dict:
    from accelerate.utils import set_seed

    from repro.data.tokenize import tokenized_pairs
    from repro.engine import train
    from repro.results import MetricsLog, atomic_write_json, discard, update_json
    from repro.zero3 import sharded_construction

    run_dir = Path(run_dir)
    cfg = config_mod.load(run_dir / "config.yaml")
    threads = set_cpu_threads(cfg)
    accelerator = make_accelerator(cfg, run_dir)
    if accelerator.is_main_process:
        update_json(run_dir / "env.json", torch_threads_per_process=threads)
    set_seed(cfg.seed)
    pairs = curated_pairs(run_dir)
    with sharded_construction(cfg, accelerator):  # ZeRO-3: partitioned as built; no rank holds the whole model
        model, tokenizer = build_backbone(cfg, pairs)
    if cfg.optim.padding_free and accelerator.device.type == "cuda" and model.config._attn_implementation != \
            "flash_attention_2":
        log.warning("optim.padding_free=true with model.attn_implementation=%s: each micro-batch's row of N tokens "
                    "gets an N x N attention mask (exact, but attention costs the whole row's square); "
                    "flash_attention_2 attends each conversation alone", model.config._attn_implementation)
    if cfg.launcher.name == "zero3":
        from repro.zero3 import partition_report

        log.info("ZeRO-3 rank %d of %d, as built: %s", accelerator.process_index, accelerator.num_processes,
                 json.dumps(partition_report(model)))
    # Tokenised once: the main process writes the token cache (or finds it from an earlier run) while the
    # others wait, then every process memory-maps it.
    with accelerator.main_process_first():
        examples = tokenized_pairs(tokenizer, pairs.path, cfg.data.max_length, data_sha256=pairs.sha256,
                                   cache_root=token_cache_root(run_dir, pairs), write=accelerator.is_main_process)
    drops = examples.dropped
    if drops and accelerator.is_main_process:
        log.warning("tokenisation dropped %d pairs: %s", sum(drops.values()), dict(drops))
    metrics = MetricsLog(run_dir / "metrics.jsonl", enabled=accelerator.is_main_process)
    summary = train(accelerator, model, tokenizer, examples, cfg.optim, cfg.loss, seed=cfg.seed, metrics=metrics,
                    checkpoint_dir=run_dir / "checkpoints", launcher=cfg.launcher.name)
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
                       token_cache=str(examples.folder), token_cache_reused=examples.reused,
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

    def stop_line(kind: str, message: str) -> None:
        """One line per stopped worker, in the form the driver reads back from fit.log (repro.launch.STOP_LINE),
        written with one write(2) call: the ranks share the log, and print's separate writes of the text and
        the newline could interleave with another rank's line."""
        sys.stderr.flush()
        message = " ".join(message.split("\n"))
        os.write(2, f"stopped (rank {rank}, {kind}): {message}\n".encode(errors="replace"))

    try:
        fit(argv[0])
    except TrainingStopped as e:
        stop_line(type(e).__name__, str(e))
        return e.exit_code
    except KeyboardInterrupt:  # outside the training loop (loading, saving)
        stop_line("TrainingInterrupted", "interrupted")
        return 130
    except Exception as e:
        log.exception("worker failed")
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        stop_line("error", f"{type(e).__name__}: {first}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
