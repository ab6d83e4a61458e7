"""Loss values against the closed-form reference values of PAPER.md section 3 (gamma=2, m=1, t=0.5, T=2)."""
import pytest
import torch

from repro.config import LossConfig
from repro.losses import LOSSES, log_barrier

DELTAS = torch.tensor([3.0, 0.0, -1.0])
# loss -> values at d = r_chosen - r_rejected = 3, 0, -1
REFERENCE = {
    "bt": [0.0486, 0.6931, 1.3133],
    "focal": [0.0001, 0.1733, 0.7019],
    "hinge": [0.0, 1.0, 2.0],
    "margin_mse": [4.0, 1.0, 4.0],
    "tempered_log": [0.0480, 0.5858, 0.9628],
    "temperature_bt": [0.2014, 0.6931, 0.9741],
}


def per_delta(name, cfg=LossConfig()):
    # Each loss is a mean over pairs: evaluate one pair at a time, centred so both rewards are +-d/2.
    return [LOSSES[name]((d / 2).view(1), (-d / 2).view(1), cfg).item() for d in DELTAS]


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_pairwise_losses_match_reference_values(name):
    assert per_delta(name) == pytest.approx(REFERENCE[name], abs=1e-4)


def test_focal_with_penalty_reference_values():
    no_barrier = LossConfig(penalty_weight=0.0)
    assert per_delta("focal_penalty", no_barrier) == pytest.approx([0.0004, 0.6931, 1.3133], abs=1e-4)
    assert log_barrier(torch.tensor(0.0), 5.0).item() == pytest.approx(-3.2189, abs=1e-4)
    # with the barrier, the term for rewards (0, 0) is 0.01 * 2 * -3.2189 on top of log 2
    got = LOSSES["focal_penalty"](torch.zeros(1), torch.zeros(1), LossConfig()).item()
    assert got == pytest.approx(0.6931 + 0.01 * 2 * -3.2189, abs=1e-4)
    # rewards beyond the bound stay finite (clamped just inside it)
    assert torch.isfinite(LOSSES["focal_penalty"](torch.tensor([50.0]), torch.tensor([-50.0])))


def test_pointwise_cross_entropy_reference_values():
    ce = LOSSES["pointwise_ce"]
    assert ce(torch.tensor([2.0]), torch.tensor([-1.0])).item() == pytest.approx(0.4402, abs=1e-4)
    assert ce(torch.tensor([0.0]), torch.tensor([0.0])).item() == pytest.approx(1.3863, abs=1e-4)


def test_hinge_margin_is_a_config_value():
    assert per_delta("hinge", LossConfig(margin=2.0)) == pytest.approx([0.0, 2.0, 3.0])


@pytest.mark.parametrize("name", sorted(set(LOSSES) - {"pointwise_ce", "focal_penalty"}))
def test_pairwise_losses_depend_only_on_the_difference_and_are_means(name):
    rc, rr = torch.tensor([1.0, -2.0, 4.0]), torch.tensor([0.5, -1.0, 1.0])
    a = LOSSES[name](rc, rr)
    assert a.item() == pytest.approx(LOSSES[name](rc + 0.7, rr + 0.7).item(), abs=1e-5)
    single = [LOSSES[name](rc[i : i + 1], rr[i : i + 1]).item() for i in range(3)]
    assert a.item() == pytest.approx(sum(single) / 3, abs=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_prefers_the_chosen_response(name):
    """A gradient step on any loss raises r_chosen - r_rejected on a misordered pair."""
    rc = torch.tensor([-0.5], requires_grad=True)
    rr = torch.tensor([0.5], requires_grad=True)
    LOSSES[name](rc, rr).backward()
    assert rc.grad.item() < 0 < rr.grad.item()


def test_bt_is_stable_for_large_margins():
    loss = LOSSES["bt"](torch.tensor([200.0, -200.0]), torch.zeros(2))
    assert torch.isfinite(loss) and loss.item() == pytest.approx(100.0, rel=1e-4)  # (0 + 200) / 2


@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_gradients_stay_finite_at_extreme_margins(name, gamma):
    """One pair with a huge margin either way must not turn the whole batch's gradient into NaN."""
    cfg = LossConfig(gamma=gamma)
    for d in (-200.0, -90.0, 20.0, 200.0):
        rc = torch.tensor([d / 2, 0.3], requires_grad=True)
        rr = torch.tensor([-d / 2, -0.3], requires_grad=True)
        loss = LOSSES[name](rc, rr, cfg)
        loss.backward()
        assert torch.isfinite(loss), (name, d)
        assert torch.isfinite(rc.grad).all() and torch.isfinite(rr.grad).all(), (name, d)
