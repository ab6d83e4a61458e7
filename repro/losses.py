"""Pairwise reward-model losses: LOSSES = {name: fn}. Pure tensor functions.

Each takes the rewards of the chosen and rejected responses (1-D tensors of equal length) and the
loss config, and returns the mean loss. With d = r_chosen - r_rejected:

    bt      Bradley-Terry, -log sigmoid(d)                      (the paper's loss)
    hinge   max(0, margin - d)                                   (Table 3; margin: our default 1.0)

The remaining losses of Table 3 (focal, focal with penalty, MarginMSE, pointwise cross-entropy,
tempered log, temperature-adjusted BT) are added here as one function plus one registry line each.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def bradley_terry(r_chosen: torch.Tensor, r_rejected: torch.Tensor, cfg=None) -> torch.Tensor:
    # logsigmoid is the numerically stable form of log(sigmoid(d)) for large |d|
    return -F.logsigmoid(r_chosen - r_rejected).mean()


def hinge(r_chosen: torch.Tensor, r_rejected: torch.Tensor, cfg=None) -> torch.Tensor:
    margin = 1.0 if cfg is None else cfg.margin
    return torch.clamp(margin - (r_chosen - r_rejected), min=0).mean()


LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "bt": bradley_terry,
    "hinge": hinge,
}
