"""Uncertainty for RewardBench numbers: bootstrap confidence intervals and paired tests.

The paper reports single evaluations with no intervals. Every RewardBench section and the Score are
*linear* in per-example correctness: example i of subset s contributes
``c_i * w_s / n_s / W_section`` to its section (and a quarter of that to the Score), where w_s is the
subset weight, n_s its row count and W_section the section's total weight. So resampling and
permutation reduce to weighted sums, vectorised over thousands of replicates.

* `bootstrap_ci`: stratified bootstrap (resample examples *within* each subset, keeping subset sizes,
  as the benchmark's composition is fixed by design), percentile intervals.
* `paired_test`: two models on the same examples. Paired bootstrap interval of the difference, and a
  sign-flip permutation p-value (under H0 the two models' correctness on each example is exchangeable).
"""
from __future__ import annotations

import numpy as np

from repro.eval import rewardbench as rb

KEYS = (*rb.SECTIONS, "Score")


def example_weights(subsets, *, weights: str = "current") -> dict[str, np.ndarray]:
    """Per-example coefficients such that section/Score = sum_i coef_i * correct_i."""
    w = rb.check_weighting(weights)
    subsets = np.asarray(subsets)
    present = set(subsets.tolist())
    rb.check_subsets(present, where="per-example results")
    counts = {s: int((subsets == s).sum()) for s in present}
    out = {}
    for section, subs in rb.SECTIONS.items():
        total = sum(w[s] for s in subs)
        coef = np.zeros(len(subsets))
        for s in subs:
            coef[subsets == s] = w[s] / counts[s] / total
        out[section] = coef
    out["Score"] = sum(out[s] for s in rb.SECTIONS) / len(rb.SECTIONS)
    return out


def _stratified_indices(subsets: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, N) indices resampling with replacement inside each subset."""
    idx = np.empty((n_boot, len(subsets)), dtype=np.int64)
    for s in np.unique(subsets):
        pos = np.flatnonzero(subsets == s)
        idx[:, pos] = pos[rng.integers(0, len(pos), size=(n_boot, len(pos)))]
    return idx


def bootstrap_ci(subsets, correct, *, weights: str = "current", n_boot: int = 2000, level: float = 0.95,
                 seed: int = 0) -> dict[str, dict[str, float]]:
    """{"Chat": {"estimate", "low", "high"}, ..., "Score": {...}} with stratified-bootstrap percentiles."""
    subsets, correct = np.asarray(subsets), np.asarray(correct, dtype=float)
    coefs = example_weights(subsets, weights=weights)
    idx = _stratified_indices(subsets, n_boot, np.random.default_rng(seed))
    resampled = correct[idx]  # (n_boot, N); coefficients stay with the position (same subset)
    alpha = (1 - level) / 2
    out = {}
    for k in KEYS:
        reps = resampled @ coefs[k]
        out[k] = {"estimate": float(correct @ coefs[k]), "low": float(np.quantile(reps, alpha)),
                  "high": float(np.quantile(reps, 1 - alpha))}
    return out


def paired_test(subsets, correct_a, correct_b, *, weights: str = "current", n_boot: int = 2000,
                n_perm: int = 10000, level: float = 0.95, seed: int = 0) -> dict[str, dict[str, float]]:
    """A minus B per section and Score: difference, paired-bootstrap interval, permutation p-value.

    Rows must be aligned: the same examples in the same order for both models.
    """
    subsets = np.asarray(subsets)
    a, b = np.asarray(correct_a, dtype=float), np.asarray(correct_b, dtype=float)
    if not (len(a) == len(b) == len(subsets)):
        raise ValueError(f"paired test needs aligned rows: {len(subsets)} subsets, {len(a)} vs {len(b)} results")
    coefs = example_weights(subsets, weights=weights)
    rng = np.random.default_rng(seed)
    d = a - b
    boot = d[_stratified_indices(subsets, n_boot, rng)]
    signs = rng.choice((-1.0, 1.0), size=(n_perm, len(d)))
    flipped = signs * d
    alpha = (1 - level) / 2
    out = {}
    for k in KEYS:
        observed = float(d @ coefs[k])
        reps = boot @ coefs[k]
        null = flipped @ coefs[k]
        # add-one estimate: never reports p = 0 from a finite number of permutations
        p = (1 + int((np.abs(null) >= abs(observed) - 1e-12).sum())) / (n_perm + 1)
        out[k] = {"difference": observed, "low": float(np.quantile(reps, alpha)),
                  "high": float(np.quantile(reps, 1 - alpha)), "p_value": p}
    return out
