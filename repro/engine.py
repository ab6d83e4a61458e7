"""The training loop, top to bottom, on an `accelerate.Accelerator`.

One optimizer step consumes exactly `optim.global_batch_size` pairs whatever the world size:
per-device batch x accumulation steps x world size = global batch (asserted). Chosen and rejected go
through the model in one concatenated forward pass; the loss comes from `repro.losses.LOSSES`.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
import time
from pathlib import Path

import torch
from accelerate.utils import DistributedType
from tqdm.auto import tqdm

from repro.config import ConfigError
from repro.data.batching import PairCollator, length_grouped_order
from repro.data.schema import DataError
from repro.data.tokenize import TokenizedPairs
from repro.losses import LOSSES
from repro.results import MetricsLog, TrainingDiverged, TrainingInterrupted, discard

log = logging.getLogger(__name__)
STATE = "trainer_state.json"


def accumulation_steps(global_batch: int, per_device: int, world_size: int) -> int:
    per_step = per_device * world_size
    if global_batch % per_step:
        raise ValueError(f"global batch {global_batch} is not a multiple of per-device batch {per_device} "
                         f"x world size {world_size}")
    return global_batch // per_step


def lr_lambda(kind: str, warmup: int, total: int):
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        if kind == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def forward_rewards(model, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards of the chosen and rejected halves of a concatenated batch, in float32.

    A padded batch (`attention_mask`) is pooled by the model itself (its rightmost non-pad token per row).
    A padding-free batch (`position_ids`, `ends`: `repro.data.batching.packed`) is one row holding every
    conversation, which the model's pooling would read once: the score head's per-token output is taken
    instead (a forward hook on `score`, so the call still goes through the DDP / DeepSpeed wrapper) and
    read at each conversation's last token. The KV cache is off: transformers detects the packed
    conversations from the position ids only without one.
    """
    if "position_ids" not in batch:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        rewards = logits.squeeze(-1).float()
    else:
        captured = []
        hook = score_head(model).register_forward_hook(lambda _module, _args, out: captured.append(out))
        try:
            model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False)
        finally:
            hook.remove()
        if len(captured) != 1:
            raise RuntimeError(f"the score head ran {len(captured)} times in one forward pass (expected once)")
        rewards = captured[0][0, batch["ends"], 0].float()
    half = rewards.shape[0] // 2
    return rewards[:half], rewards[half:]


def score_head(model) -> torch.nn.Module:
    """The `score` Linear of a reward model, under any wrapper (DDP, DeepSpeed's engine: `.module`)."""
    inner = model
    while not hasattr(inner, "score") and hasattr(inner, "module"):
        inner = inner.module
    head = getattr(inner, "score", None)
    if not isinstance(head, torch.nn.Module):
        raise TypeError(f"{type(inner).__name__} has no `score` head: optim.padding_free needs a "
                        "*ForSequenceClassification model")
    return head


CRASH_ENV = "REPRO_CRASH_AT_STEP"  # testing aid, see _crash_point


def latest_checkpoint(checkpoint_dir: Path | None) -> tuple[Path, dict] | None:
    """(folder, trainer state) of the newest complete checkpoint, or None."""
    if checkpoint_dir is None or not checkpoint_dir.is_dir():
        return None
    done = [(p, json.loads((p / STATE).read_text())) for p in checkpoint_dir.glob("step_*") if (p / STATE).is_file()]
    return max(done, key=lambda x: x[1]["step"]) if done else None


def refuse_unloadable(folder: Path, state: dict, launcher: str, world: int) -> None:
    """ConfigError (one line naming the key) when this launcher and world size cannot resume the
    checkpoint exactly, before anything is loaded.

    `accelerate` and `local` checkpoints hold the whole model and optimizer state (accelerate's format),
    which any world size loads: that resume is allowed, and equal to an uninterrupted run up to float
    rounding. A `zero3` checkpoint holds DeepSpeed shards, one per rank, which only DeepSpeed at the same
    world size loads. Checkpoints from before the launcher was recorded are accelerate's format.
    """
    was = state.get("launcher") or "accelerate"
    was_world = state.get("world_size", world)
    if (was == "zero3") != (launcher == "zero3"):
        held = (f"DeepSpeed ZeRO-3 shards of {was_world} process(es)" if was == "zero3" else
                "a whole model and optimizer state (accelerate's format)")
        raise ConfigError(f"{folder} holds {held}, written with launcher.name={was}; launcher.name={launcher} "
                          f"cannot resume it exactly. Rerun with launcher={was}"
                          + (f" and a world size of {was_world} (launcher.num_processes x launcher.num_machines)"
                             if was == "zero3" else "")
                          + ", or move the run dir aside to start over")
    if launcher == "zero3" and was_world != world:
        raise ConfigError(f"{folder} holds DeepSpeed ZeRO-3 shards of {was_world} process(es); this run has a "
                          f"world size of {world} (launcher.num_processes x launcher.num_machines), and ZeRO-3 resumes "
                          f"only on the world size that wrote it. Rerun with {was_world} processes, or move the run dir "
                          "aside to start over")


def save_checkpoint(accelerator, checkpoint_dir: Path, state: dict, keep: int) -> None:
    """Model, optimizer, scheduler and RNG states at an optimizer-step boundary, plus the trainer state
    (`state`: step, elapsed time, pairs, the open logging window). Written under a temporary name, then
    renamed: only complete checkpoints are ever found."""
    final, tmp = checkpoint_dir / f"step_{state['step']}", checkpoint_dir / f".tmp_step_{state['step']}"
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE).write_text(json.dumps(state))
        os.replace(tmp, final)
        for leftover in [*checkpoint_dir.glob(".trash_*"), *checkpoint_dir.glob(".tmp_step_*")]:
            shutil.rmtree(leftover, ignore_errors=True)  # from a run killed while saving or deleting
        older = sorted(checkpoint_dir.glob("step_*"), key=lambda p: int(p.name.split("_")[1]))[:-keep]
        for folder in older:
            discard(folder)
    accelerator.wait_for_everyone()


def _stop_message(what: str, step: int, total: int, checkpoint_dir: Path | None, *, diverged: bool = False) -> str:
    """`what` at step N, and what a rerun of the same command will do from here."""
    resume = latest_checkpoint(checkpoint_dir)
    if diverged:
        where = (f"the last good checkpoint {resume[0].name} is kept (the same command resumes there and diverges "
                 "again: change the config, e.g. a lower optim.lr)" if resume else "no checkpoint was written")
    else:
        where = (f"rerun the same command to resume from {resume[0].name}" if resume else
                 "no checkpoint to resume from (optim.save_every=0 or none written yet): a rerun starts over")
    return f"{what} at step {step} of {total}; {where}"


def train(accelerator, model, tokenizer, examples: TokenizedPairs, optim_cfg, loss_cfg, *, seed: int,
          metrics: MetricsLog, checkpoint_dir: Path | None = None, launcher: str = "local") -> dict:
    """Train `model` in place on tokenised pairs. Returns a summary (steps, pairs, seconds, wrapped model).

    With `checkpoint_dir`, state is saved every `optim.save_every` optimizer steps, and a rerun resumes
    from the newest checkpoint: the epoch order is a pure function of (seed, epoch), so skipping the
    micro-batches already consumed gives exactly the run that was never interrupted (bit for bit with the
    same world size and thread count; to float rounding otherwise, and the resume says so).

    A non-finite loss or gradient norm raises TrainingDiverged before that update is applied or anything
    after it is saved; Ctrl-C raises TrainingInterrupted. Both name the step and what a rerun will do.

    Under DeepSpeed (`launcher`="zero3", the name each checkpoint records) the model and optimizer are
    DeepSpeed's engine and ZeRO-3 optimizer around the same torch AdamW; the LambdaLR stays ours.
    """
    o = optim_cfg
    world, rank, device = accelerator.num_processes, accelerator.process_index, accelerator.device
    accum = accumulation_steps(o.global_batch_size, o.per_device_batch_size, world)
    # accelerate then divides the loss by `accum`, skips the all-reduce on non-final micro-batches and
    # lets the optimizer step only when `sync_gradients` is set.
    accelerator.gradient_accumulation_steps = accum
    loss_fn = LOSSES[loss_cfg.name]

    examples = TokenizedPairs.of(examples)  # the memory-mapped token cache (a list of id dicts is converted)
    lengths = examples.lengths  # numpy, from the length columns: the sampler needs nothing else
    steps_per_epoch = len(examples) // o.global_batch_size
    if steps_per_epoch == 0:
        raise DataError(f"{len(examples)} training pairs is less than one global batch "
                        f"(optim.global_batch_size={o.global_batch_size})")
    total_steps = steps_per_epoch * o.epochs
    if o.max_steps > 0:
        total_steps = min(total_steps, o.max_steps)
    warmup = int(o.warmup_ratio * total_steps)

    deepspeed = accelerator.distributed_type == DistributedType.DEEPSPEED
    # Matrices decay, vectors do not. ZeRO-3 parameters are empty shards of their `ds_shape`.
    decay = [p for n, p in model.named_parameters() if len(getattr(p, "ds_shape", p.shape)) >= 2]
    no_decay = [p for n, p in model.named_parameters() if len(getattr(p, "ds_shape", p.shape)) < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": o.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=o.lr, betas=tuple(o.betas))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(o.scheduler, warmup, total_steps))
    # The scheduler is deliberately not prepared: accelerate would step it once per process per
    # optimizer step, so the schedule would depend on the world size. We step it once per update.
    # (Under DeepSpeed, unprepared, it is not DeepSpeed's to step either; it sets the lr of the AdamW param
    # groups that ZeRO-3 updates.)
    resume = latest_checkpoint(checkpoint_dir)
    if resume:  # before any expensive set-up: a checkpoint this launcher cannot load exactly is refused
        refuse_unloadable(resume[0], resume[1], launcher, world)
    model, optimizer = accelerator.prepare(model, optimizer)
    if deepspeed:
        log.info("DeepSpeed config (every \"auto\" filled): %s", json.dumps(accelerator.deepspeed_config, default=str))
    accelerator.register_for_checkpointing(scheduler)
    collate = PairCollator(tokenizer.pad_token_id, padding_free=o.padding_free)
    # running sums since the last log line, summed over ranks when logged: [loss, accuracy, micro-batches]
    window = torch.zeros(3, device=device)
    nonfinite = torch.zeros((), device=device)  # non-finite losses in the current accumulation window
    threads = torch.get_num_threads()
    step, prior_seconds, prior_pairs = 0, 0.0, 0
    if resume:
        folder, state = resume
        accelerator.load_state(str(folder))
        step, prior_seconds, prior_pairs = state["step"], state["seconds"], state["pairs"]
        if accelerator.is_main_process:  # the saved window holds the sums over all ranks
            window += torch.tensor(state["window"], device=device)
        metrics.drop_after(step)  # lines a killed run wrote after its last checkpoint
        log.info("resumed from %s (step %d of %d)", folder, step, total_steps)
        was = (state.get("world_size", world), state.get("threads", threads))
        if was != (world, threads):
            log.warning("resumed with %d process(es) x %d thread(s) a checkpoint written with %d x %d: the rest "
                        "of the run equals an uninterrupted one only up to float rounding", world, threads, *was)
    crash_at, crash_rank = _crash_point()

    log.info("training: %d pairs, %d steps (%d/epoch), global batch %d = %d per device x %d accumulation x %d "
             "processes (%d CPU threads each), loss %s", len(examples), total_steps, steps_per_epoch,
             o.global_batch_size, o.per_device_batch_size, accum, world, threads, loss_cfg.name)
    model.train()
    t0, seen = time.perf_counter(), 0
    # Rank 0 only; there TQDM_DISABLE=1 (tqdm's own variable) still turns it off.
    bar = tqdm(total=total_steps, initial=step, desc="train", unit="step", mininterval=1.0,
               **({} if accelerator.is_main_process else {"disable": True}))
    try:
        for epoch in range(step // steps_per_epoch, o.epochs):
            if step >= total_steps:
                break
            # Grouped by the per-device micro-batch and independent of world size: micro-batch k goes to
            # accumulation slot k % accum on one process, or to rank k % world on several; both average the
            # same gradients per step, so 1 and N processes train the same model. Whole global batches
            # only: the remainder of an epoch is left out rather than a short step.
            order = length_grouped_order(lengths, o.per_device_batch_size, seed + epoch)
            order = order[: steps_per_epoch * o.global_batch_size]
            micro = [order[k : k + o.per_device_batch_size] for k in range(0, len(order), o.per_device_batch_size)]
            mine = micro[rank::world]
            done_in_epoch = (step - epoch * steps_per_epoch) * accum  # micro-batches per rank, when resuming
            for idx in mine[done_in_epoch:]:
                batch = {k: v.to(device) for k, v in collate(examples.take(idx)).items()}
                with accelerator.accumulate(model):
                    r_c, r_r = forward_rewards(model, batch)
                    loss = loss_fn(r_c, r_r, loss_cfg)
                    if deepspeed and accelerator.sync_gradients:
                        # DeepSpeed updates inside backward (engine.step): the window's losses are checked
                        # first. A non-finite gradient norm makes ZeRO-3 skip that update itself (its
                        # overflow check), and the check below then stops the run.
                        _check_finite(accelerator, nonfinite + (~torch.isfinite(loss.detach())).float(), 0.0,
                                      step + 1, total_steps, checkpoint_dir)
                    accelerator.backward(loss)
                    nonfinite += (~torch.isfinite(loss.detach())).float()
                    if accelerator.sync_gradients:
                        # Under DeepSpeed the clipping was done in backward (gradient_clipping=max_grad_norm);
                        # this returns the norm its step computed (before clipping, as torch's does).
                        grad_norm = accelerator.clip_grad_norm_(model.parameters(), o.max_grad_norm)
                        _check_finite(accelerator, nonfinite, grad_norm, step + 1, total_steps, checkpoint_dir)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                window += torch.stack([loss.detach(), (r_c > r_r).float().mean(), torch.ones((), device=device)])
                seen += r_c.shape[0]
                if not accelerator.sync_gradients:
                    continue
                lr = scheduler.get_last_lr()[0]  # the rate this update used
                scheduler.step()
                step += 1
                bar.update(1)
                if step % o.log_every == 0 or step == total_steps:
                    total = accelerator.reduce(window, reduction="sum")
                    avg_loss, avg_acc = (total[0] / total[2]).item(), (total[1] / total[2]).item()
                    metrics.log(step, "train", loss=avg_loss, accuracy=avg_acc, lr=lr, grad_norm=float(grad_norm),
                                epoch=epoch)
                    bar.set_postfix(loss=f"{avg_loss:.4f}", acc=f"{avg_acc:.3f}")
                    window.zero_()
                if checkpoint_dir is not None and o.save_every and step % o.save_every == 0 and step < total_steps:
                    state = {"step": step, "seconds": prior_seconds + time.perf_counter() - t0,
                             "pairs": prior_pairs + seen * world, "world_size": world, "threads": threads,
                             "launcher": launcher,
                             "window": accelerator.reduce(window.clone(), reduction="sum").tolist()}
                    save_checkpoint(accelerator, checkpoint_dir, state, o.keep_checkpoints)
                if crash_at and step == crash_at and crash_rank in (None, rank):
                    os._exit(3)  # as if the process were killed: no cleanup, no final save
                if step >= total_steps:
                    break
    except KeyboardInterrupt:
        raise TrainingInterrupted(_stop_message("interrupted", step, total_steps, checkpoint_dir)) from None
    finally:
        bar.close()
    # totals over every segment of a resumed run (restart overhead excluded)
    seconds = prior_seconds + time.perf_counter() - t0
    pairs = step * o.global_batch_size
    pairs_per_s = (prior_pairs + seen * world) / seconds if seconds else float("nan")
    metrics.log(step, "train", seconds=seconds, pairs_per_second=pairs_per_s)
    return {"steps": step, "epochs": round(step / steps_per_epoch, 4), "seconds": seconds,
            "pairs_per_second": pairs_per_s, "pairs_trained": pairs,
            "distinct_pairs_trained": distinct_pairs(lengths, o, seed, step, steps_per_epoch),
            "threads_per_process": threads, "model": model}


def distinct_pairs(lengths, o, seed: int, steps: int, steps_per_epoch: int) -> int:
    """How many different pairs the first `steps` optimizer steps trained on (orders are pure functions of
    the seed and epoch, so this needs no bookkeeping in the loop)."""
    seen: set[int] = set()
    for epoch in range(math.ceil(steps / steps_per_epoch)):
        n = min(steps - epoch * steps_per_epoch, steps_per_epoch) * o.global_batch_size
        seen.update(length_grouped_order(lengths, o.per_device_batch_size, seed + epoch)[:n])
        if len(seen) == len(lengths):
            break
    return len(seen)


def _check_finite(accelerator, nonfinite: torch.Tensor, grad_norm, step: int, total: int,
                  checkpoint_dir: Path | None) -> None:
    """Raise TrainingDiverged on every rank alike when any rank saw a non-finite loss or gradient norm.

    Checked once per optimizer step, before the update: the flag is summed over ranks, so all of them stop
    at the same step and none waits for the others in a collective.
    """
    bad = nonfinite + (~torch.isfinite(torch.as_tensor(grad_norm, device=nonfinite.device).float())).float()
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, reduction="sum")
    if bad.item():
        raise TrainingDiverged(_stop_message(
            f"training diverged (non-finite loss or gradient norm {float(grad_norm):.4g}; update not applied, no "
            "final.json written)", step, total, checkpoint_dir, diverged=True))
    nonfinite.zero_()


def _crash_point() -> tuple[int, int | None]:
    """Testing aid, `REPRO_CRASH_AT_STEP=N[:RANK]`: kill the process(es) right after optimizer step N."""
    value = os.environ.get(CRASH_ENV, "")
    if not value:
        return 0, None
    step, _, rank = value.partition(":")
    return int(step), int(rank) if rank else None
