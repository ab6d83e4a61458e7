"""One GPU, one training step of a Llama-3.1-8B-shaped reward model cut to a few layers: bf16 tokens/s,
MFU and peak memory, padded vs padding-free micro-batches, gradient checkpointing off and on.

    python benchmarks/gpu_step.py [--layers 4] [--pairs 2] [--length 2048] [--steps 8]
                                  [--out benchmarks/results/gpu_step.json]
    python benchmarks/gpu_step.py --smoke     # CPU, a few-dimension model: checks the script, measures nothing

The model is `repro/backbones/llama31_8b/config.json` (hidden 4,096, 32 heads, 8 KV heads, MLP 14,336,
vocabulary 128,257 with the `[PAD]` token) with `--layers` decoder layers, built by the package's
`build_reward_model`, fp32 weights and bf16 autocast with torch AdamW: the precision of a
`launcher=accelerate` run with `model.dtype=bfloat16`. A micro-batch is `--pairs` pairs whose conversations
have lengths drawn uniformly in [length/4, length] (fixed seed), laid out by `PairCollator` padded (2B, T) or
padding-free (one row; flash_attention_2 when the flash_attn package is installed, otherwise sdpa with its
N x N mask: the record says which). Each configuration runs `--steps` steps after 2 warm-up steps; timed with
CUDA synchronisation.

MFU = model FLOPs per second / the GPU's peak dense bf16 FLOPs (`--peak-tflops`, 989 for an H100/H200 SXM).
Model FLOPs per step: 6 x (non-embedding parameters) x real tokens for the matrix products, plus
6 x layers x hidden x sum of squared conversation lengths for causal attention (forward 2 x 2 x L^2 x hidden / 2,
backward twice that); padding and recomputation (gradient checkpointing) are work the model does not need
and count as waste, not as FLOPs. Peak memory: `torch.cuda.max_memory_allocated` over the timed steps.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from repro.backbones import build_reward_model, model_config
from repro.data.batching import PairCollator
from repro.engine import forward_rewards
from repro.losses import LOSSES
from repro.config import LossConfig
from repro.results import env_info


def micro_batch(vocab: int, pairs: int, length: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    lens = rng.integers(length // 4, length + 1, 2 * pairs)
    return [{"chosen_ids": rng.integers(0, vocab - 1, lens[2 * i]).tolist(),
             "rejected_ids": rng.integers(0, vocab - 1, lens[2 * i + 1]).tolist()} for i in range(pairs)]


def measure(args, *, padding_free: bool, checkpointing: bool, attn: str, device: torch.device, smoke: bool) -> dict:
    cfg = model_config("llama31_8b", attn_implementation=attn)
    cfg.num_hidden_layers = args.layers
    cfg.vocab_size += 1  # the [PAD] row a Llama-3.1 reward model adds (repro.model.ensure_pad_token)
    if smoke:  # a few dimensions, same structure
        cfg.hidden_size, cfg.intermediate_size, cfg.num_attention_heads, cfg.num_key_value_heads = 64, 128, 4, 2
        cfg.head_dim, cfg.vocab_size = 16, 512
    torch.manual_seed(0)
    model = build_reward_model(cfg, dtype="float32").to(device)  # fp32 master weights, bf16 autocast
    model.config.pad_token_id = cfg.vocab_size - 1
    model.config.use_cache = False
    if checkpointing:
        from repro.model import enable_gradient_checkpointing

        enable_gradient_checkpointing(model)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6, weight_decay=1e-3, fused=device.type == "cuda")
    rows = micro_batch(cfg.vocab_size, args.pairs, args.length, seed=0)
    batch = {k: v.to(device) for k, v in PairCollator(cfg.vocab_size - 1, padding_free=padding_free)(rows).items()}
    lens = np.array([len(r[k]) for k in ("chosen_ids", "rejected_ids") for r in rows])
    loss_fn, loss_cfg = LOSSES["bt"], LossConfig()
    dtype = torch.bfloat16

    def step():
        with torch.autocast(device.type, dtype=dtype):
            r_c, r_r = forward_rewards(model, batch)
        loss = loss_fn(r_c, r_r, loss_cfg)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(2):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        loss = step()
    sync()
    seconds = (time.perf_counter() - t0) / args.steps
    embed = model.get_input_embeddings().weight.numel()
    params = sum(p.numel() for p in model.parameters())
    flops = 6 * (params - embed) * lens.sum() + 6 * cfg.num_hidden_layers * cfg.hidden_size * (lens ** 2).sum()
    processed = batch["input_ids"].numel()
    out = {"padding_free": padding_free, "gradient_checkpointing": checkpointing, "attention": attn,
           "seconds_per_step": seconds, "real_tokens": int(lens.sum()), "processed_tokens": int(processed),
           "tokens_per_second": float(lens.sum() / seconds), "model_tflops_per_second": float(flops / seconds / 1e12),
           "mfu": float(flops / seconds / (args.peak_tflops * 1e12)), "loss": float(loss),
           "peak_memory_gib": (torch.cuda.max_memory_allocated() / 2 ** 30 if device.type == "cuda" else None)}
    del model, optimizer, batch
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--pairs", type=int, default=2, help="pairs per micro-batch (the 8B preset's per-device batch)")
    ap.add_argument("--length", type=int, default=2048, help="longest conversation, tokens")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="the GPU's dense bf16 peak")
    ap.add_argument("--smoke", action="store_true", help="CPU, tiny dimensions: check the script only")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gpu_step.json")
    args = ap.parse_args()
    import importlib.util

    if args.smoke:
        device, args.length, args.steps = torch.device("cpu"), min(args.length, 64), min(args.steps, 2)
    elif not torch.cuda.is_available():
        raise SystemExit("no CUDA GPU here: run with --smoke to check the script on CPU")
    else:
        device = torch.device("cuda")
    flash = importlib.util.find_spec("flash_attn") is not None and device.type == "cuda"
    results = []
    for padding_free in (False, True):
        for checkpointing in (False, True):
            attn = "flash_attention_2" if flash else "sdpa"
            try:
                r = measure(args, padding_free=padding_free, checkpointing=checkpointing, attn=attn, device=device,
                            smoke=args.smoke)
            except torch.OutOfMemoryError as e:
                r = {"padding_free": padding_free, "gradient_checkpointing": checkpointing, "attention": attn,
                     "error": f"out of memory: {str(e).splitlines()[0]}"}
                torch.cuda.empty_cache()
            results.append(r)
            print(json.dumps(r), flush=True)
    record = {"command": "python benchmarks/gpu_step.py " + " ".join(
                  f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("out", "smoke")),
              "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu (smoke: not a measurement)",
              "setup": {"backbone": "llama31_8b config.json", **{k: v for k, v in vars(args).items() if k != "out"}},
              "results": results, "env": env_info()}
    if args.smoke:
        print(json.dumps(record)[:200])
        return
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
