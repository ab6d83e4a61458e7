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
* `subset_bootstrap_ci`: the same stratified resamples, percentile interval per subset.
* `mcnemar`: exact McNemar test per subset and over all rows; `holm`: Holm-Bonferroni adjustment.
* `compare_family`: several arms against one base: `paired_test`'s numbers for each (shared resamples,
  vectorised), McNemar per subset, Holm across the arms.
* `seed_summary` / `compare_seed_means`: Student-t interval over training seeds, Welch's t-test.
* `minimum_detectable_difference` / `mdd_table`: the smallest gap a paired test can detect (Connor 1987)
  at RewardBench's real sizes.
"""
from __future__ import annotations

from collections.abc import Mapping

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


# ---------------------------------------------------------------------------------------------------------
# Per-subset intervals, exact McNemar, Holm, families of paired comparisons, seeds, detectable differences.
# ---------------------------------------------------------------------------------------------------------

def _subsets_array(subsets, *, require_all: bool, where: str = "per-example results") -> np.ndarray:
    arr = np.asarray(subsets)
    if arr.ndim != 1:
        raise ValueError(f"{where}: subsets must be a 1-D sequence of subset names, got shape {arr.shape}")
    if len(arr) == 0:
        raise ValueError(f"{where}: no rows")
    rb.check_subsets(set(arr.tolist()), where=where, require_all=require_all)
    return arr


def _correct_array(correct, subsets: np.ndarray, name: str, resolution: int = 1) -> np.ndarray:
    """Per-example correctness as floats in {0, 1}; ValueError naming the problem (and the first bad row).

    With `resolution` k > 1, values may be multiples of 1/k in [0, 1]: the mean correctness of an example
    over k training seeds (see `compare_family`)."""
    arr = np.asarray(correct)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one value per example), got shape {arr.shape}")
    if len(arr) != len(subsets):
        raise ValueError(f"{name} has {len(arr)} rows but subsets has {len(subsets)}: rows must be aligned")
    try:
        out = arr.astype(float)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be booleans or 0/1 numbers, got dtype {arr.dtype}") from None
    bad = np.flatnonzero(np.isnan(out))
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{name} has {bad.size} NaN value(s), first at row {i} (subset {subsets[i]!r}); "
                         "correctness must be 0/1 (a tie or a failed score counts as wrong: 0)")
    if resolution == 1:
        bad = np.flatnonzero((out != 0.0) & (out != 1.0))
    else:
        scaled = out * resolution
        bad = np.flatnonzero((out < 0.0) | (out > 1.0) | (np.abs(scaled - np.round(scaled)) > 1e-9))
    if bad.size:
        i = int(bad[0])
        what = "0/1" if resolution == 1 else f"multiples of 1/{resolution} in [0, 1]"
        first = arr[i].item() if hasattr(arr[i], "item") else arr[i]  # plain Python, not numpy's repr
        raise ValueError(f"{name} has {bad.size} value(s) other than {what}, first {first!r} at row {i} "
                         f"(subset {str(subsets[i])!r})")
    return out


def _check_level(level: float) -> None:
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")


def subset_bootstrap_ci(subsets, correct, *, n_boot: int = 2000, level: float = 0.95,
                        seed: int = 0) -> dict[str, dict[str, float]]:
    """Per-subset accuracy with a bootstrap percentile interval: {subset: {"estimate", "low", "high", "n"}}.

    Method: the stratified resampling of `bootstrap_ci` (for each subset, its n_s rows are drawn n_s times
    with replacement, independently per subset, `n_boot` times); with the same `seed` and `n_boot` these are
    the very resamples `bootstrap_ci` uses for the sections. For each subset, its replicate accuracy is the
    mean correctness of its resampled rows; the interval is the (1-level)/2 and (1+level)/2 quantiles
    (numpy's default linear interpolation) of those replicates. "estimate" is the subset's observed
    accuracy, "n" its row count. Any subset of the 23 may be given (not necessarily all); keys follow the
    benchmark's subset order. (For 0/1 data the replicate accuracy is distributed Binomial(n_s, acc)/n_s.)
    """
    _check_level(level)
    subsets = _subsets_array(subsets, require_all=False)
    correct = _correct_array(correct, subsets, "correct")
    idx = _stratified_indices(subsets, n_boot, np.random.default_rng(seed))
    alpha = (1 - level) / 2
    out = {}
    for s in rb.SUBSETS:
        pos = np.flatnonzero(subsets == s)
        if pos.size == 0:
            continue
        reps = correct[idx[:, pos]].mean(axis=1)
        lo, hi = np.quantile(reps, [alpha, 1 - alpha])
        out[s] = {"estimate": float(correct[pos].mean()), "low": float(lo), "high": float(hi), "n": int(pos.size)}
    return out


def _mcnemar_p(a_only, b_only) -> np.ndarray:
    """Exact McNemar p-values, vectorised: two-sided binomial test of a_only in a_only + b_only at p = 1/2.

    The value `scipy.stats.binomtest(a_only, a_only + b_only, 0.5).pvalue` computes (checked in the tests):
    at p = 1/2 the outcomes no more likely than the observed k are those at most lo = min(k, n - k) from an
    end, so p = min(1, cdf(lo) + sf(n - lo - 1)), and 1 when k = n/2 or there are no discordant rows.
    """
    from scipy.stats import binom
    ka, kb = np.atleast_1d(np.asarray(a_only, dtype=np.int64)), np.atleast_1d(np.asarray(b_only, dtype=np.int64))
    n = ka + kb
    lo = np.minimum(ka, kb)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = binom.cdf(lo, n, 0.5) + binom.sf(n - lo - 1, n, 0.5)
    return np.where((n == 0) | (2 * lo == n), 1.0, np.minimum(p, 1.0))


def _mcnemar_counts(subsets: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict[str, dict]:
    a_only = (a == 1) & (b == 0)
    b_only = (a == 0) & (b == 1)
    groups = [(s, subsets == s) for s in rb.SUBSETS] + [("all", np.ones(len(subsets), dtype=bool))]
    groups = [(s, mask) for s, mask in groups if mask.any()]
    ns = [int(mask.sum()) for _, mask in groups]
    ka = np.array([int(a_only[mask].sum()) for _, mask in groups])
    kb = np.array([int(b_only[mask].sum()) for _, mask in groups])
    p = _mcnemar_p(ka, kb)
    return {s: {"n": n, "a_only": int(x), "b_only": int(y), "p_value": float(q)}
            for (s, _), n, x, y, q in zip(groups, ns, ka, kb, p)}


def mcnemar(subsets, correct_a, correct_b) -> dict[str, dict[str, float]]:
    """Exact McNemar test of A vs B on the same examples, per subset and over all rows ("all").

    {subset: {"n", "a_only", "b_only", "p_value"}, ..., "all": {...}}: n = rows, a_only = rows A got right
    and B wrong, b_only = the reverse. p_value = two-sided exact binomial test of a_only successes in
    a_only + b_only trials at p = 1/2 (the value of `scipy.stats.binomtest`, whose two-sided p sums the
    probabilities of all outcomes no more likely than the observed one; computed for all subsets in one
    vectorised call), i.e. the exact (conditional) McNemar test; 1.0 when there are no discordant rows.
    "all" pools the rows unweighted: it tests overall row accuracy, not the weighted sections or Score
    (see `paired_test` / `compare_family` for those).
    """
    subsets = _subsets_array(subsets, require_all=False)
    a = _correct_array(correct_a, subsets, "correct_a")
    b = _correct_array(correct_b, subsets, "correct_b")
    return _mcnemar_counts(subsets, a, b)


def holm(p_values):
    """Holm-Bonferroni step-down adjusted p-values (Holm 1979), same keys (Mapping) or order (Sequence).

    With the m p-values sorted ascending, p_(1) <= ... <= p_(m) (ties kept in input order), the adjusted
    value of the j-th is  max_{i <= j} min(1, (m - i + 1) p_(i)),  which is the smallest family-wise level
    at which Holm's procedure rejects that hypothesis; it is the algorithm of statsmodels'
    `multipletests(method="holm")`. The result is monotone in the raw p-values and capped at 1.
    A Mapping gives a dict with the same keys in the same order; a Sequence gives a list.
    """
    is_map = isinstance(p_values, Mapping)
    keys = list(p_values.keys()) if is_map else None
    raw = list(p_values.values()) if is_map else list(p_values)
    p = np.asarray(raw, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"holm needs a flat collection of p-values, got shape {p.shape}")
    labels = keys if is_map else list(range(len(p)))
    for lab, v in zip(labels, p):
        if not (0.0 <= v <= 1.0):  # also catches NaN
            raise ValueError(f"holm: p-value {v!r} for {lab!r} is not a number in [0, 1]")
    m = len(p)
    adjusted = np.empty(m)
    if m:
        order = np.argsort(p, kind="stable")
        stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
        adjusted[order] = np.minimum(stepped, 1.0)
    if is_map:
        return {k: float(v) for k, v in zip(keys, adjusted)}
    return [float(v) for v in adjusted]


_LANE_BITS = 16  # per-arm lane of a packed int64: sums of (d + 1) over <= 16,383 draws fit


def _chunked_signs_match_choice() -> bool:
    """Whether `rng.integers(0, 2)` drawn in row chunks reproduces `rng.choice((-1.0, 1.0), size)`.

    True for numpy's Generator (choice draws its indices with integers(0, 2, int64), one 32-bit word per
    value from a state that carries across calls); checked once at run time so that another numpy falls
    back to the single `choice` call of `paired_test` rather than silently giving other numbers."""
    global _SIGNS_OK
    if _SIGNS_OK is None:
        r1, r2 = np.random.default_rng(12345), np.random.default_rng(12345)
        want = r1.choice((-1.0, 1.0), size=(5, 13))
        got = np.concatenate([2.0 * r2.integers(0, 2, size=(2, 13)) - 1, 2.0 * r2.integers(0, 2, size=(3, 13)) - 1])
        _SIGNS_OK = bool(np.array_equal(want, got) and r1.random() == r2.random())
    return _SIGNS_OK


_SIGNS_OK: bool | None = None


def _paired_family(subsets: np.ndarray, diffs: np.ndarray, coefs: dict[str, np.ndarray], *, n_boot: int,
                   n_perm: int, level: float, seed: int, chunk: int = 1000,
                   resolution: int = 1) -> list[dict[str, dict[str, float]]]:
    """`paired_test` for several differences at once: diffs (m, N), row j = arm_j - base, values -1/0/1
    (or multiples of 1/resolution in [-1, 1]: seed-averaged correctness, packed as integers k (d + 1)).

    Consumes the random stream exactly as `paired_test` does (stratified indices subset by subset in
    np.unique order, then the (n_perm, N) signs), so arm j gets paired_test's numbers for the same seed, up
    to floating-point summation order (~1e-16). Bootstrap: every key's coefficient is constant within a
    subset, so a replicate is sum_s coef_{k,s} T_s with T_s = the sum of d over the subset's resampled rows;
    T_s is computed for all arms at once, exactly, by gathering (d + 1) packed in 16-bit lanes of an int64
    and summing per replicate. Permutation: signs = 2B - 1 with B the same 0/1 draws as `rng.choice`, taken
    in row chunks, and null = 2 B_U @ W_U - sum(W_U), W = coefficient-weighted differences of every arm and
    key, U = rows where some arm differs from the base (W is zero elsewhere).
    """
    rng = np.random.default_rng(seed)
    m, n = diffs.shape
    coef_mat = np.stack([coefs[k] for k in KEYS], axis=1)  # (N, K)
    n_keys = coef_mat.shape[1]
    lanes = 64 // _LANE_BITS  # 4 lanes per int64
    reps = np.zeros((n_boot, m, n_keys))
    for s in np.unique(subsets):  # same order and draws as _stratified_indices
        pos = np.flatnonzero(subsets == s)
        ns = pos.size
        draws = rng.integers(0, ns, size=(n_boot, ns))
        d_s = diffs[:, pos]
        live = np.flatnonzero(np.any(d_s != 0, axis=1))  # arms that differ from the base in this subset
        if live.size == 0:
            continue
        if 2 * resolution * ns >= 1 << (_LANE_BITS - 1):  # the top lane must stay clear of the sign bit
            raise ValueError(f"subset {s!r} has {ns} rows; the packed bootstrap supports up to "
                             f"{((1 << (_LANE_BITS - 1)) - 1) // (2 * resolution):,} at {resolution} seed(s) an arm")
        t_s = np.zeros((n_boot, m))
        shifted = np.round((d_s + 1) * resolution).astype(np.int64)  # 0 .. 2 k
        for g in range(0, live.size, lanes):
            group = live[g:g + lanes]
            lut = np.zeros(ns, dtype=np.int64)
            for lane, j in enumerate(group):
                lut |= shifted[j] << (_LANE_BITS * lane)
            total = lut[draws].sum(axis=1)
            for lane, j in enumerate(group):
                t_s[:, j] = (((total >> (_LANE_BITS * lane)) & ((1 << _LANE_BITS) - 1)) - ns * resolution) / resolution
        reps += t_s[:, :, None] * coef_mat[pos[0]][None, None, :]
    weighted = (diffs.T[:, :, None] * coef_mat[:, None, :]).reshape(n, m * n_keys)
    if _chunked_signs_match_choice():
        used = np.flatnonzero(np.any(diffs != 0, axis=0))
        w_used = weighted[used]
        offset = w_used.sum(axis=0)
        null = np.empty((n_perm, m * n_keys))
        for r0 in range(0, n_perm, chunk):
            r1 = min(n_perm, r0 + chunk)
            bits = rng.integers(0, 2, size=(r1 - r0, n))
            null[r0:r1] = 2.0 * (bits[:, used].astype(float) @ w_used) - offset
    else:  # pragma: no cover - other numpy
        null = rng.choice((-1.0, 1.0), size=(n_perm, n)) @ weighted
    null = null.reshape(n_perm, m, n_keys)
    alpha = (1 - level) / 2
    lo, hi = np.quantile(reps, [alpha, 1 - alpha], axis=0)  # (m, K) each
    out = []
    for j in range(m):
        d = np.ascontiguousarray(diffs[j])
        res = {}
        for c, k in enumerate(KEYS):
            observed = float(d @ coefs[k])  # the same expression as paired_test
            p = (1 + int((np.abs(null[:, j, c]) >= abs(observed) - 1e-12).sum())) / (n_perm + 1)
            res[k] = {"difference": observed, "low": float(lo[j, c]), "high": float(hi[j, c]), "p_value": p}
        out.append(res)
    return out


def compare_family(subsets, base_correct, others: Mapping, *, weights: str = "current", n_boot: int = 2000,
                   n_perm: int = 10000, level: float = 0.95, seed: int = 0, resolution: int = 1) -> dict:
    """Every arm in `others` against the base on the same examples, with Holm correction across the family.

    For each arm (difference = arm minus base):
    * "paired": per section and Score, the numbers of `paired_test(subsets, arm, base, weights=, n_boot=,
      n_perm=, level=, seed=)` (stratified paired-bootstrap percentile interval, sign-flip permutation
      p-value; differences and p-values identical, interval bounds up to float summation order, ~1e-17),
      all arms sharing the same resamples and sign flips (those of that seed), plus "p_holm":
      Holm-adjusted across the arms of the family, separately for each key;
    * "mcnemar": `mcnemar(subsets, arm, base)` per subset and "all" ("a_only" = arm right, base wrong),
      plus "p_holm": Holm-adjusted across the arms, separately for each subset.
    No correction is made across keys or subsets (each key is its own family of m = len(others) tests).
    All 23 subsets must be present (the sections' weights need them); rows aligned across all arms.
    With `resolution` k > 1 an arm's correctness may be its mean over training seeds (multiples of 1/k, k a
    common multiple of the arms' seed counts): sections and Score are linear in correctness, so the paired
    numbers are those of the seed-averaged arms, with examples as the resampled unit. McNemar needs 0/1
    outcomes: an arm or base that is not 0/1 gets "mcnemar": None.
    Returns a JSON-serialisable dict: {"weights", "n_examples", "n_boot", "n_perm", "level", "seed",
    "difference": "arm minus base", "arms": {arm: {"paired": {...}, "mcnemar": {...}}}}.
    """
    _check_level(level)
    subsets = _subsets_array(subsets, require_all=True)
    if int(resolution) != resolution or not 1 <= resolution <= 64:
        raise ValueError(f"resolution must be an integer in [1, 64], got {resolution!r}")
    resolution = int(resolution)
    base = _correct_array(base_correct, subsets, "base_correct", resolution)
    if not isinstance(others, Mapping) or not others:
        raise ValueError("others must be a non-empty mapping of arm name -> per-example correctness")
    names = [str(k) for k in others]
    if len(set(names)) != len(names):
        raise ValueError(f"arm names must be distinct as strings: {names}")
    arms = {str(k): _correct_array(v, subsets, f"others[{k!r}]", resolution) for k, v in others.items()}
    coefs = example_weights(subsets, weights=weights)
    diffs = np.stack([arms[k] - base for k in names])
    paired = _paired_family(subsets, diffs, coefs, n_boot=n_boot, n_perm=n_perm, level=level, seed=seed,
                            resolution=resolution)

    def binary(x):
        return bool(np.all((x == 0.0) | (x == 1.0)))

    result = {name: {"paired": paired[j],
                     "mcnemar": _mcnemar_counts(subsets, arms[name], base) if binary(arms[name]) and binary(base)
                     else None}
              for j, name in enumerate(names)}
    for k in KEYS:
        adj = holm({name: result[name]["paired"][k]["p_value"] for name in names})
        for name in names:
            result[name]["paired"][k]["p_holm"] = adj[name]
    tested = [name for name in names if result[name]["mcnemar"] is not None]
    for s in result[tested[0]]["mcnemar"] if tested else ():
        adj = holm({name: result[name]["mcnemar"][s]["p_value"] for name in tested})
        for name in tested:
            result[name]["mcnemar"][s]["p_holm"] = adj[name]
    return {"weights": weights, "n_examples": int(len(subsets)), "n_boot": int(n_boot), "n_perm": int(n_perm),
            "level": float(level), "seed": int(seed), "difference": "arm minus base", "arms": result}


def _finite_values(values, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of numbers, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"{name} has a non-finite value {arr[bad[0]]!r} at position {int(bad[0])}")
    return arr


def seed_summary(values, level: float = 0.95) -> dict[str, float | int | None]:
    """Mean over training seeds with a Student-t interval: {"n", "mean", "sd", "low", "high"}.

    sd is the sample standard deviation (ddof = 1); the interval is mean -/+ t_{(1+level)/2, n-1} sd/sqrt(n)
    (`scipy.stats.t.ppf`). With one value there is no spread to estimate: sd, low and high are None.
    """
    from scipy.stats import t as student_t
    _check_level(level)
    x = _finite_values(values, "values")
    n, mean = int(x.size), float(x.mean())
    if n == 1:
        return {"n": 1, "mean": mean, "sd": None, "low": None, "high": None}
    sd = float(x.std(ddof=1))
    half = float(student_t.ppf((1 + level) / 2, n - 1)) * sd / np.sqrt(n)
    return {"n": n, "mean": mean, "sd": sd, "low": mean - half, "high": mean + half}


def compare_seed_means(a_values, b_values, level: float = 0.95) -> dict[str, float | int | None]:
    """Welch's t-test of mean(A) - mean(B) over independent seeds (unequal variances).

    difference = mean_a - mean_b, se = sqrt(s_a^2/n_a + s_b^2/n_b), df = Welch-Satterthwaite
    se^4 / ((s_a^2/n_a)^2/(n_a-1) + (s_b^2/n_b)^2/(n_b-1)), interval = difference -/+ t_{(1+level)/2, df} se,
    p_value = two-sided `scipy.stats.ttest_ind(a, b, equal_var=False)`. Needs at least 2 values per arm.
    When both arms have zero spread (se = 0) the test is undefined: p_value and df are None and the
    interval collapses to the difference.
    """
    from scipy.stats import t as student_t, ttest_ind
    _check_level(level)
    a, b = _finite_values(a_values, "a_values"), _finite_values(b_values, "b_values")
    if a.size < 2 or b.size < 2:
        raise ValueError(f"Welch's test needs at least 2 seeds per arm, got {a.size} and {b.size}")
    va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
    diff, se = float(a.mean() - b.mean()), float(np.sqrt(va + vb))
    out = {"n_a": int(a.size), "n_b": int(b.size), "difference": diff, "se": se}
    if se == 0.0:
        return {**out, "df": None, "low": diff, "high": diff, "p_value": None}
    df = float((va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1)))
    half = float(student_t.ppf((1 + level) / 2, df)) * se
    p = float(ttest_ind(a, b, equal_var=False).pvalue)
    return {**out, "df": df, "low": diff - half, "high": diff + half, "p_value": p}


def minimum_detectable_difference(n: float, discordance: float, alpha: float = 0.05,
                                  power: float = 0.8) -> float | None:
    """Smallest |p_A - p_B| a two-sided McNemar test detects with the given power (Connor 1987).

    Paired binary outcomes on n examples, discordance d = P(A != B) = p10 + p01, difference
    delta = p_A - p_B = p10 - p01. Connor's normal-approximation sample size (R. J. Connor, "Sample size for
    testing differences in proportions for the paired-sample design", Biometrics 43:207-211, 1987, p. 209):
        n = (z_{1-alpha/2} sqrt(d) + z_{power} sqrt(d - delta^2))^2 / delta^2.
    Solved for delta (the root of the squared equation that satisfies the unsquared one):
        delta = sqrt(d) (z_a sqrt(n) + z_b sqrt(n - z_a^2 + z_b^2)) / (n + z_b^2),
    z_a = z_{1-alpha/2}, z_b = z_{power}. Returns None when this exceeds d (no difference of at most the
    discordance is detectable: too few examples). n may be fractional (an effective sample size). It is a
    large-sample approximation (n*d discordant pairs should not be tiny); power must be in [0.5, 1).
    """
    from scipy.stats import norm
    if not (n > 0 and np.isfinite(n)):
        raise ValueError(f"n must be a positive number of examples, got {n!r}")
    if not 0.0 < discordance <= 1.0:
        raise ValueError(f"discordance must be in (0, 1], got {discordance!r}")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if not 0.5 <= power < 1.0:
        raise ValueError(f"power must be in [0.5, 1), got {power!r}")
    za, zb = float(norm.ppf(1 - alpha / 2)), float(norm.ppf(power))
    inner = n - za ** 2 + zb ** 2
    if inner < 0:
        return None
    delta = np.sqrt(discordance) * (za * np.sqrt(n) + zb * np.sqrt(inner)) / (n + zb ** 2)
    return float(delta) if delta <= discordance else None


def effective_sizes(weights: str = "current", counts: Mapping[str, int] | None = None) -> dict[str, float]:
    """n_eff = 1 / sum_i coef_i^2 per section and Score, coefficients of `example_weights` at `counts`
    (default: RewardBench's real subset sizes). A weighted mean sum_i coef_i x_i of i.i.d. x_i (sum_i coef_i
    = 1) has the variance of a plain mean of n_eff of them."""
    counts = dict(rb.SUBSET_COUNTS if counts is None else counts)
    rb.check_subsets(counts, where="counts")
    subsets = np.repeat(list(rb.SUBSETS), [int(counts[s]) for s in rb.SUBSETS])
    coefs = example_weights(subsets, weights=weights)
    return {k: float(1.0 / np.sum(coefs[k] ** 2)) for k in KEYS}


def mdd_table(discordance=(0.02, 0.05, 0.1), *, weights: str = "current", alpha: float = 0.05,
              power: float = 0.8) -> dict:
    """`minimum_detectable_difference` per section and Score at RewardBench's real sizes.

    For each key: "n" (rows), "n_eff" (`effective_sizes`: 1 / sum coef_i^2 of the weighted mean) and "mdd",
    a list with one entry per discordance (None where nothing is detectable), as fractions (x100 for the
    leaderboard's points). Assumes the same discordance rate on every row of the key. A gap between two
    models smaller than the mdd at their discordance cannot be told apart from noise at this power.
    """
    ds = [float(discordance)] if np.isscalar(discordance) else [float(d) for d in discordance]
    n_eff = effective_sizes(weights)
    rows = {sec: sum(rb.SUBSET_COUNTS[s] for s in subs) for sec, subs in rb.SECTIONS.items()}
    rows["Score"] = sum(rb.SUBSET_COUNTS.values())
    table = {k: {"n": rows[k], "n_eff": n_eff[k],
                 "mdd": [minimum_detectable_difference(n_eff[k], d, alpha, power) for d in ds]} for k in KEYS}
    return {"weights": weights, "alpha": alpha, "power": power, "discordance": ds, "table": table}
