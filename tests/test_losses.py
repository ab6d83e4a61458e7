"""Loss values against the closed-form reference values of PAPER.md section 3."""
import pytest
import torch

from repro.config import LossConfig
from repro.losses import LOSSES

DELTAS = torch.tensor([3.0, 0.0, -1.0])


def per_delta(name, cfg=None):
    # Each loss is a mean over pairs: evaluate one pair at a time (r_rejected = 0, r_chosen = delta).
    return [LOSSES[name](d.view(1), torch.zeros(1), cfg).item() for d in DELTAS]


def test_bradley_terry_reference_values():
    assert per_delta("bt") == pytest.approx([0.0486, 0.6931, 1.3133], abs=1e-4)


def test_hinge_reference_values_and_margin():
    assert per_delta("hinge", LossConfig(name="hinge", margin=1.0)) == pytest.approx([0.0, 1.0, 2.0])
    assert per_delta("hinge", LossConfig(name="hinge", margin=2.0)) == pytest.approx([0.0, 2.0, 3.0])


def test_losses_depend_only_on_the_difference_and_are_means():
    rc, rr = torch.tensor([1.0, -2.0, 5.0]), torch.tensor([0.5, -1.0, 1.0])
    for name in LOSSES:
        a = LOSSES[name](rc, rr, LossConfig(name=name))
        b = LOSSES[name](rc + 7.0, rr + 7.0, LossConfig(name=name))
        assert a.item() == pytest.approx(b.item(), abs=1e-5), name
        single = [LOSSES[name](rc[i : i + 1], rr[i : i + 1], LossConfig(name=name)).item() for i in range(3)]
        assert a.item() == pytest.approx(sum(single) / 3, abs=1e-6), name


def test_bt_is_stable_for_large_margins_and_pushes_chosen_up():
    rc = torch.tensor([200.0, -200.0], requires_grad=True)
    rr = torch.zeros(2)
    loss = LOSSES["bt"](rc, rr)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() == pytest.approx(100.0, rel=1e-4)  # (0 + 200) / 2
    assert (rc.grad <= 0).all()  # descending the loss raises the chosen reward
