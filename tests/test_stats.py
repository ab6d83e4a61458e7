"""Bootstrap intervals and paired tests for RewardBench numbers."""
import numpy as np
import pytest

from repro.eval import rewardbench as rb
from repro.eval.stats import bootstrap_ci, example_weights, paired_test


def synthetic(n_per_subset=20, p=0.8, seed=0):
    rng = np.random.default_rng(seed)
    subsets = np.repeat(list(rb.SUBSETS), n_per_subset)
    return subsets, rng.random(len(subsets)) < p


@pytest.mark.parametrize("weights", ["current", "legacy"])
def test_linear_weights_reproduce_the_official_aggregation(weights):
    subsets, correct = synthetic()
    coefs = example_weights(subsets, weights=weights)
    expected = rb.score(rb.subset_accuracies(subsets, correct), weights=weights)
    for k, v in expected.items():
        assert correct @ coefs[k] == pytest.approx(v, abs=1e-12)


def test_bootstrap_interval_contains_estimate_and_shrinks_with_more_data():
    small = bootstrap_ci(*synthetic(10))
    large = bootstrap_ci(*synthetic(200))
    for k in ("Chat", "Score"):
        for ci in (small[k], large[k]):
            assert ci["low"] <= ci["estimate"] <= ci["high"]
        assert large[k]["high"] - large[k]["low"] < small[k]["high"] - small[k]["low"]
    assert bootstrap_ci(*synthetic(10), seed=3) == bootstrap_ci(*synthetic(10), seed=3)


def test_bootstrap_coverage_is_near_nominal():
    """Over repeated draws from a known accuracy, the 95% interval covers the truth ~95% of the time."""
    hits = 0
    for seed in range(200):
        subsets, correct = synthetic(30, p=0.7, seed=seed)
        ci = bootstrap_ci(subsets, correct, n_boot=400, seed=seed)["Score"]
        hits += ci["low"] <= 0.7 <= ci["high"]
    assert 0.88 <= hits / 200 <= 0.99


def test_paired_test_detects_a_real_gap():
    subsets, a = synthetic(40, p=0.9, seed=1)
    rng = np.random.default_rng(2)
    worse = a & (rng.random(len(a)) > 0.25)  # B loses a quarter of A's hits
    res = paired_test(subsets, a, worse, n_perm=2000)
    assert res["Score"]["difference"] > 0 and res["Score"]["low"] > 0 and res["Score"]["p_value"] < 0.01
    same = paired_test(subsets, a, a, n_perm=500)
    assert same["Score"]["difference"] == 0 and same["Score"]["p_value"] == 1.0


def test_paired_test_false_positive_rate_is_near_alpha():
    """Two models of equal accuracy with independent errors: p < 0.05 in about 5% of draws."""
    rejections = 0
    for seed in range(100):
        subsets, a = synthetic(30, p=0.8, seed=2 * seed)
        _, b = synthetic(30, p=0.8, seed=2 * seed + 1)
        rejections += paired_test(subsets, a, b, n_boot=10, n_perm=500, seed=seed)["Score"]["p_value"] < 0.05
    assert rejections <= 12


def test_paired_test_refuses_unaligned_rows():
    subsets, a = synthetic(5)
    with pytest.raises(ValueError, match="aligned"):
        paired_test(subsets, a, a[:-1])
