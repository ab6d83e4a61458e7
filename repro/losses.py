"""Pairwise reward-model losses: LOSSES = {name: fn}. Pure tensor functions.

Each takes the rewards of the chosen and rejected responses (1-D tensors of equal length) and the loss
config, and returns the mean over pairs. With d = r_chosen - r_rejected and p = sigmoid(d) (paper Table 3;
hyperparameters were not reported, so every default below is ours and is a config value):

    bt              Bradley-Terry: -log p                                           (the paper's loss)
    focal           -(1 - p)^gamma log p                                            gamma = 2
    focal_penalty   InternLM2: -(1 - 2 max(p - 1/2, 0))^gamma log p
                    + lambda * sum over both rewards of -[log(B - r) + log(r + B)]   gamma = 2, lambda = 0.01, B = 5
    hinge           max(0, margin - d)                                              margin = 1
    margin_mse      (d - margin)^2                                                  margin = 1
    pointwise_ce    -log sigmoid(r_chosen) - log(1 - sigmoid(r_rejected))
    tempered_log    -(p^(1 - t) - 1) / (1 - t)                                       t = 0.5
    temperature_bt  -log sigmoid(d / T)                                             T = 2
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from repro.config import LossConfig

_DEFAULT = LossConfig()


def bradley_terry(r_chosen: torch.Tensor, r_rejected: torch.Tensor, cfg: LossConfig = _DEFAULT) -> torch.Tensor:
    # logsigmoid is the numerically stable form of log(sigmoid(d)) for large |d|
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def focal(r_chosen: torch.Tensor, r_rejected: torch.Tensor, cfg: LossConfig = _DEFAULT) -> torch.Tensor:
    d = r_chosen - r_rejected
    # (1 - p)^gamma as exp(gamma * log sigmoid(-d)): finite gradients even where p rounds to 1
    return -(torch.exp(cfg.gamma * F.logsigmoid(-d)) * F.logsigmoid(d)).mean()


def log_barrier(r: torch.Tensor, bound: float) -> torch.Tensor:
    """-[log(B - r) + log(r + B)] with r clamped just inside (-B, B) so the barrier stays finite.

    As PAPER.md specifies, the clamp also makes the term flat (zero gradient) for a reward already
    outside the bound; the pairwise term still moves such rewards.
    """
    r = r.clamp(-bound + 1e-3, bound - 1e-3)
    return -(torch.log(bound - r) + torch.log(r + bound))


def focal_penalty(r_chosen: torch.Tensor, r_rejected: torch.Tensor, cfg: LossConfig = _DEFAULT) -> torch.Tensor:
    d = r_chosen - r_rejected
    # 1 - 2 max(p - 1/2, 0) = min(1, 2 (1 - p)); raised to gamma in log space (stable as p -> 1)
    weight = torch.exp(cfg.gamma * (math.log(2.0) + F.logsigmoid(-d)).clamp(max=0.0))
    barrier = log_barrier(r_chosen, cfg.reward_bound) + log_barrier(r_rejected, cfg.reward_bound)
    return (-weight * F.logsigmoid(d) + cfg.penalty_weight * barrier).mean()


def hinge(r_chosen: torch.Tensor, r_rejected: torch.Tensor, cfg: LossConfig = _DEFAULT) -> torch.Tensor:
    return torch.clamp(cfg.margin - (r_chosen - r_rejected), min=0).mean()


def margin_mse(r_chosen: torch.Tensor, r_rejected: torch.Tensor, cfg: LossConfig = _DEFAULT) -> torch.Tensor:
    return ((r_chosen - r_rejected - cfg.margin) ** 2).mean()


def pointwise_ce(r_chosen: torch.Tensor, r_rejected: torch.Tensor, cfg: LossConfig = _DEFAULT) -> torch.Tensor:
    # log(1 - sigmoid(x)) = logsigmoid(-x)
    return -(F.logsigmoid(r_chosen) + F.logsigmoid(-r_rejected)).mean()


def tempered_log(r_chosen: torch.Tensor, r_rejected: torch.Tensor, cfg: LossConfig = _DEFAULT) -> torch.Tensor:
    t = cfg.tempered_t
    if t == 1.0:  # the limit t -> 1 is the plain log loss
        return bradley_terry(r_chosen, r_rejected, cfg)
    # p^(1 - t) as exp((1 - t) log p): no infinite derivative where p underflows to 0
    p_pow = torch.exp((1 - t) * F.logsigmoid(r_chosen - r_rejected))
    return (-(p_pow - 1) / (1 - t)).mean()


def temperature_bt(r_chosen: torch.Tensor, r_rejected: torch.Tensor, cfg: LossConfig = _DEFAULT) -> torch.Tensor:
    return -F.logsigmoid((r_chosen - r_rejected) / cfg.temperature).mean()


LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "bt": bradley_terry,
    "focal": focal,
    "focal_penalty": focal_penalty,
    "hinge": hinge,
    "margin_mse": margin_mse,
    "pointwise_ce": pointwise_ce,
    "tempered_log": tempered_log,
    "temperature_bt": temperature_bt,
}
