"""Per-subset intervals, exact McNemar, Holm, families of paired comparisons, seed statistics and detectable
differences: each checked against a closed form, scipy, or a brute-force loop over the definition."""
import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from repro.eval import rewardbench as rb
from repro.eval import stats as st
from repro.eval.stats import (compare_family, compare_seed_means, holm, mcnemar, mdd_table,
                              minimum_detectable_difference, paired_test, seed_summary, subset_bootstrap_ci)


def synthetic(n_per_subset=20, p=0.8, seed=0):
    rng = np.random.default_rng(seed)
    subsets = np.repeat(list(rb.SUBSETS), n_per_subset)
    return subsets, rng.random(len(subsets)) < p


def block(subset, both_right, a_only, b_only, both_wrong):
    """Rows of one subset with the four cells of the paired 2x2 table given by hand."""
    a = [1] * both_right + [1] * a_only + [0] * b_only + [0] * both_wrong
    b = [1] * both_right + [0] * a_only + [1] * b_only + [0] * both_wrong
    return [subset] * len(a), a, b


# ----------------------------------------------------------------------------------------------- McNemar

def test_mcnemar_matches_scipy_binomtest_on_hand_built_counts():
    cells = {"alpacaeval-easy": (10, 7, 2, 1), "mt-bench-easy": (20, 0, 0, 8), "donotanswer": (3, 0, 5, 0),
             "math-prm": (40, 12, 12, 3), "hep-go": (0, 30, 1, 0)}
    subsets, a, b = [], [], []
    for s, c in cells.items():
        ss, aa, bb = block(s, *c)
        subsets += ss
        a += aa
        b += bb
    res = mcnemar(subsets, a, b)
    assert list(res) == [s for s in rb.SUBSETS if s in cells] + ["all"]
    for s, (rr, ka, kb, ww) in cells.items():
        assert res[s]["n"] == rr + ka + kb + ww and (res[s]["a_only"], res[s]["b_only"]) == (ka, kb)
        want = 1.0 if ka + kb == 0 else sps.binomtest(ka, ka + kb, 0.5).pvalue
        assert res[s]["p_value"] == pytest.approx(want, rel=1e-12)
    assert res["mt-bench-easy"]["p_value"] == 1.0 and res["math-prm"]["p_value"] == pytest.approx(1.0)
    ka, kb = sum(c[1] for c in cells.values()), sum(c[2] for c in cells.values())
    assert (res["all"]["n"], res["all"]["a_only"], res["all"]["b_only"]) == (len(a), ka, kb)
    assert res["all"]["p_value"] == pytest.approx(sps.binomtest(ka, ka + kb, 0.5).pvalue, rel=1e-12)
    flipped = mcnemar(subsets, b, a)  # swapping the models swaps the counts, not the p-value
    assert flipped["alpacaeval-easy"]["a_only"] == 2 and flipped["all"]["p_value"] == res["all"]["p_value"]


def test_vectorised_mcnemar_p_equals_binomtest_everywhere():
    ks, ns = [], []
    for n in range(0, 41):
        for k in range(n + 1):
            ks.append(k)
            ns.append(n)
    ks += [230, 270, 0, 447, 100, 3]
    ns += [500, 500, 447, 447, 984, 984]
    got = st._mcnemar_p(ks, [n - k for k, n in zip(ks, ns)])
    want = [1.0 if n == 0 else sps.binomtest(k, n, 0.5).pvalue for k, n in zip(ks, ns)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)


# -------------------------------------------------------------------------------------------------- Holm

def holm_brute_force(p):
    """Adjusted p = the smallest family-wise level alpha at which Holm's step-down procedure (sort
    ascending, reject while p_(i) <= alpha / (m - i + 1), stop at the first failure) rejects H_i; 1 if
    none <= 1 does. The rejection set only changes at alpha = (m - i + 1) p_(i), so those are tried."""
    m = len(p)
    order = sorted(range(m), key=lambda i: (p[i], i))

    def rejected(alpha):
        out = set()
        for rank, i in enumerate(order):
            if p[i] * (m - rank) <= alpha:
                out.add(i)
            else:
                break
        return out

    candidates = sorted({p[order[r]] * (m - r) for r in range(m)})
    return [next((min(a, 1.0) for a in candidates if a <= 1.0 and i in rejected(a)), 1.0) for i in range(m)]


def test_holm_matches_the_definition_by_brute_force():
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])  # by hand
    rng = np.random.default_rng(0)
    cases = [[0.5], [], [0.2, 0.2, 0.2], [1.0, 0.0, 0.3], [0.04, 0.04, 0.01, 0.5, 0.9, 0.002]]
    cases += [list(np.round(rng.random(int(rng.integers(1, 12))) ** 3, 3)) for _ in range(200)]
    for p in cases:
        got = holm(p)
        assert got == pytest.approx(holm_brute_force(p), abs=1e-15), p
        assert all(0 <= g <= 1 and g >= q for g, q in zip(got, p))  # capped, never below the raw p
        by_p = sorted(zip(p, got))
        assert all(x[1] <= y[1] for x, y in zip(by_p, by_p[1:]))  # monotone in the raw p-values


def test_holm_keeps_keys_and_order_of_a_mapping():
    raw = {"Score": 0.03, "Chat": 0.001, "Safety": 0.8}
    adj = holm(raw)
    assert list(adj) == list(raw) and adj == pytest.approx({"Score": 0.06, "Chat": 0.003, "Safety": 0.8})


# ------------------------------------------------------------------------------------------- the family

def test_compare_family_on_seed_averaged_correctness_equals_paired_test():
    """Arms given as mean correctness over seeds (multiples of 1/k): the packed family bootstrap and
    permutation equal the plain paired_test on the same fractional values; McNemar is skipped (not 0/1)."""
    subsets, base = synthetic(20, p=0.8, seed=7)
    rng = np.random.default_rng(8)
    three = np.mean([base ^ (rng.random(len(base)) < 0.1) for _ in range(3)], axis=0)  # thirds
    two = np.mean([base | (rng.random(len(base)) < 0.2) for _ in range(2)], axis=0)    # halves
    fam = compare_family(subsets, base, {"three": three, "two": two, "one": base ^ (rng.random(len(base)) < 0.05)},
                         n_boot=300, n_perm=1500, seed=2, resolution=6)
    for name, arm in (("three", three), ("two", two)):
        ref = paired_test(subsets, arm, base, n_boot=300, n_perm=1500, seed=2)
        for k in st.KEYS:
            got = fam["arms"][name]["paired"][k]
            assert got["difference"] == pytest.approx(ref[k]["difference"], abs=1e-12)
            assert got["p_value"] == ref[k]["p_value"], (name, k)
            assert got["low"] == pytest.approx(ref[k]["low"], abs=1e-12)
            assert got["high"] == pytest.approx(ref[k]["high"], abs=1e-12)
        assert fam["arms"][name]["mcnemar"] is None
    assert fam["arms"]["one"]["mcnemar"]["all"]["p_holm"] == fam["arms"]["one"]["mcnemar"]["all"]["p_value"]
    with pytest.raises(ValueError, match=r"multiples of 1/2 in \[0, 1\], first 0\.(3333|6666)\d* at row \d+ \(subset '[a-z-]+'\)"):
        compare_family(subsets, base, {"three": three}, resolution=2)
    with pytest.raises(ValueError, match="other than 0/1"):
        compare_family(subsets, base, {"three": three})


def test_compare_family_equals_paired_test_for_every_arm():
    assert st._chunked_signs_match_choice()  # the fast sign path is the one under test
    subsets, base = synthetic(25, p=0.85, seed=4)
    rng = np.random.default_rng(5)
    others = {
        "flips": base ^ (rng.random(len(base)) < 0.08),
        "better": base | (rng.random(len(base)) < 0.3),
        "same": base.copy(),  # no difference anywhere
        "chat-only": np.where(np.isin(subsets, rb.SECTIONS["Chat"]), ~base, base),  # differs in one section
    }
    for weights, seed in (("current", 3), ("legacy", 11)):
        fam = compare_family(subsets, base, others, weights=weights, n_boot=300, n_perm=1500, seed=seed)
        json.dumps(fam, allow_nan=False)
        assert fam["n_examples"] == len(base) and list(fam["arms"]) == list(others)
        for name, arm in others.items():
            ref = paired_test(subsets, arm, base, weights=weights, n_boot=300, n_perm=1500, seed=seed)
            got = fam["arms"][name]["paired"]
            for k in st.KEYS:
                assert got[k]["difference"] == ref[k]["difference"]
                assert got[k]["p_value"] == ref[k]["p_value"], (name, k)
                assert got[k]["low"] == pytest.approx(ref[k]["low"], abs=1e-12)
                assert got[k]["high"] == pytest.approx(ref[k]["high"], abs=1e-12)
            ref_mc = mcnemar(subsets, arm, base)
            assert {s: {x: v for x, v in r.items() if x != "p_holm"}
                    for s, r in fam["arms"][name]["mcnemar"].items()} == ref_mc
        for k in st.KEYS:
            adj = holm({n: fam["arms"][n]["paired"][k]["p_value"] for n in others})
            assert {n: fam["arms"][n]["paired"][k]["p_holm"] for n in others} == adj
        assert fam["arms"]["same"]["paired"]["Score"]["p_value"] == 1.0
        assert fam["arms"]["better"]["paired"]["Score"]["p_holm"] < 0.01
        assert fam["arms"]["chat-only"]["paired"]["Safety"]["difference"] == 0.0


# ------------------------------------------------------------------------------------- subset intervals

def test_subset_bootstrap_estimate_is_the_subset_accuracy():
    subsets, correct = synthetic(30, p=0.75, seed=7)
    ci = subset_bootstrap_ci(subsets, correct, n_boot=500, seed=1)
    acc = rb.subset_accuracies(subsets, correct)
    assert list(ci) == list(rb.SUBSETS)
    for s in rb.SUBSETS:
        assert ci[s]["estimate"] == pytest.approx(acc[s], abs=1e-15) and ci[s]["n"] == 30
        assert ci[s]["low"] <= ci[s]["estimate"] <= ci[s]["high"]
    assert ci == subset_bootstrap_ci(subsets, correct, n_boot=500, seed=1)
    part = subset_bootstrap_ci(["hep-go"] * 4 + ["math-prm"] * 2, [1, 1, 1, 1, 0, 0], n_boot=50)
    assert list(part) == ["math-prm", "hep-go"]  # any subset of the 23, in benchmark order
    assert part["hep-go"] == {"estimate": 1.0, "low": 1.0, "high": 1.0, "n": 4}


def test_subset_bootstrap_coverage_is_near_nominal():
    """A subset of 120 rows at true accuracy 0.8: the 95% interval covers 0.8 in ~95% of 200 draws."""
    hits = 0
    for seed in range(200):
        correct = np.random.default_rng(1000 + seed).random(120) < 0.8
        ci = subset_bootstrap_ci(["llmbar-natural"] * 120, correct, n_boot=400, seed=seed)["llmbar-natural"]
        hits += ci["low"] <= 0.8 <= ci["high"]
    assert 0.88 <= hits / 200 <= 0.99


# ------------------------------------------------------------------------------------------------ seeds

def test_seed_summary_is_the_hand_computed_t_interval():
    values = [0.921, 0.934, 0.928, 0.940]
    mean = sum(values) / 4
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / 3)
    half = 3.182446305284263 * sd / 2  # t_{0.975, 3} (tables: 3.182), sqrt(4) = 2
    out = seed_summary(values)
    assert out["n"] == 4 and out["mean"] == pytest.approx(mean) and out["sd"] == pytest.approx(sd)
    assert (out["low"], out["high"]) == pytest.approx((mean - half, mean + half), abs=1e-12)
    assert seed_summary([0.93]) == {"n": 1, "mean": 0.93, "sd": None, "low": None, "high": None}
    narrow = seed_summary(values, level=0.5)
    assert out["low"] < narrow["low"] < narrow["high"] < out["high"]


def test_compare_seed_means_is_welch():
    a, b = [0.938, 0.941, 0.935, 0.944, 0.939], [0.931, 0.936, 0.925]
    out = compare_seed_means(a, b)
    ma, mb = sum(a) / 5, sum(b) / 3
    va = sum((x - ma) ** 2 for x in a) / 4 / 5
    vb = sum((x - mb) ** 2 for x in b) / 2 / 3
    df = (va + vb) ** 2 / (va ** 2 / 4 + vb ** 2 / 2)
    half = sps.t.ppf(0.975, df) * math.sqrt(va + vb)
    assert out["difference"] == pytest.approx(ma - mb) and out["df"] == pytest.approx(df)
    assert (out["low"], out["high"]) == pytest.approx((ma - mb - half, ma - mb + half))
    assert out["p_value"] == pytest.approx(sps.ttest_ind(a, b, equal_var=False).pvalue)
    t_stat = (ma - mb) / math.sqrt(va + vb)
    assert out["p_value"] == pytest.approx(2 * sps.t.sf(abs(t_stat), df))
    flat = compare_seed_means([0.9, 0.9], [0.9, 0.9])
    assert flat["p_value"] is None and flat["low"] == flat["high"] == 0.0


# ---------------------------------------------------------------------------------- detectable differences

def test_mdd_reproduces_connors_published_example():
    """Connor (1987) as worked at powerandsamplesize.com (McNemar Z-test, 2-sided): p10 = 0.05, p01 = 0.45,
    alpha 0.05, power 0.8 -> n = 22.0..., ceiling 23. Inverting: delta = 0.4 at that n and d = 0.5."""
    za, zb = sps.norm.ppf(0.975), sps.norm.ppf(0.8)
    n = ((za * math.sqrt(0.5) + zb * math.sqrt(0.5 - 0.4 ** 2)) / 0.4) ** 2
    assert math.ceil(n) == 23
    assert minimum_detectable_difference(n, 0.5) == pytest.approx(0.4, abs=1e-12)
    assert minimum_detectable_difference(23, 0.5) < 0.4 < minimum_detectable_difference(22, 0.5)
    for n, d in ((50, 0.3), (2985, 0.05), (358.0, 0.1)):  # round trip through the sample-size formula
        delta = minimum_detectable_difference(n, d)
        assert ((za * math.sqrt(d) + zb * math.sqrt(d - delta ** 2)) / delta) ** 2 == pytest.approx(n)
    assert minimum_detectable_difference(5, 0.01) is None  # nothing <= d is detectable


def test_mdd_has_the_stated_power_in_simulation():
    n, d = 1500, 0.08
    delta = minimum_detectable_difference(n, d)
    rng = np.random.default_rng(0)

    def power(diff):
        cells = rng.multinomial(n, [(d + diff) / 2, (d - diff) / 2, 1 - d], size=4000)
        b, c = cells[:, 0], cells[:, 1]
        z = (b - c) / np.sqrt(np.maximum(b + c, 1))
        return float(np.mean(np.abs(z) > sps.norm.ppf(0.975)))

    assert 0.76 <= power(delta) <= 0.84
    assert power(0.6 * delta) < 0.55 and power(0.0) < 0.075


def test_mdd_table_uses_the_effective_size_of_each_weighted_mean():
    table = mdd_table((0.001, 0.002, 0.005, 0.01, 0.05))["table"]
    assert table["Chat"]["n_eff"] == pytest.approx(358) and table["Chat Hard"]["n_eff"] == pytest.approx(456)
    assert table["Safety"]["n_eff"] == pytest.approx(740)
    reasoning = 1 / (447 * (0.5 / 447) ** 2 + 984 * (0.5 / 984) ** 2)  # half math-prm, half the six hep-*
    assert table["Reasoning"]["n_eff"] == pytest.approx(reasoning)
    assert table["Score"]["n_eff"] == pytest.approx(16 / (1 / 358 + 1 / 456 + 1 / 740 + 1 / reasoning))
    assert table["Score"]["n"] == 2985 and table["Reasoning"]["n"] == 1431
    legacy = mdd_table(0.05, weights="legacy")["table"]["Safety"]
    assert legacy["n_eff"] < 740 and legacy["mdd"][0] > table["Safety"]["mdd"][-1]
    for row in table.values():
        # at small discordance nothing is detectable (the solution exceeds the discordance): None first
        assert row["mdd"][:2] == [None, None] and row["mdd"][-1] is not None
        found = [x for x in row["mdd"] if x is not None]
        assert row["mdd"][len(row["mdd"]) - len(found):] == found
        assert found == sorted(found)  # more disagreement -> larger detectable gap
        # a 0.1-point gap (BT 93.8 vs temperature-BT 93.7) is detectable at no discordance (d >= the gap)
        assert all(x > 0.001 for x in found)
    json.dumps(mdd_table(), allow_nan=False)


# ------------------------------------------------------------------------------------------------ bad input

def test_bad_input_is_refused_with_the_problem_named():
    subsets, a = synthetic(3)
    nan = a.astype(float)
    nan[5] = np.nan
    with pytest.raises(ValueError, match=r"NaN.*row 5"):
        subset_bootstrap_ci(subsets, nan)
    with pytest.raises(ValueError, match=r"correct_b.*NaN"):
        mcnemar(subsets, a, nan)
    with pytest.raises(ValueError, match=r"others\['x'\].*NaN"):
        compare_family(subsets, a, {"x": nan})
    with pytest.raises(ValueError, match=r"correct_b has 68 rows but subsets has 69"):
        mcnemar(subsets, a, a[:-1])
    with pytest.raises(ValueError, match=r"base_correct has 68 rows"):
        compare_family(subsets, a[:-1], {"x": a})
    bad = subsets.copy()
    bad[0] = "alpacaeval-medium"
    with pytest.raises(ValueError, match="unknown RewardBench subset.*alpacaeval-medium"):
        mcnemar(bad, a, a)
    with pytest.raises(ValueError, match="unknown RewardBench subset"):
        subset_bootstrap_ci(bad, a)
    with pytest.raises(ValueError, match="missing RewardBench subset.*hep-rust"):
        compare_family(subsets[subsets != "hep-rust"], a[subsets != "hep-rust"], {"x": a[subsets != "hep-rust"]})
    with pytest.raises(ValueError, match="other than 0/1"):
        mcnemar(subsets, a * 0.5, a)
    with pytest.raises(ValueError, match="non-empty"):
        compare_family(subsets, a, {})
    with pytest.raises(ValueError, match=r"'b'.*not a number in \[0, 1\]"):
        holm({"a": 0.1, "b": float("nan")})
    with pytest.raises(ValueError, match="not a number"):
        holm([0.2, 1.5])
    with pytest.raises(ValueError, match="non-finite"):
        seed_summary([0.9, float("nan")])
    with pytest.raises(ValueError, match="empty"):
        seed_summary([])
    with pytest.raises(ValueError, match="at least 2 seeds"):
        compare_seed_means([0.9], [0.8, 0.85])
    with pytest.raises(ValueError, match="discordance"):
        minimum_detectable_difference(100, 0.0)
    with pytest.raises(ValueError, match="power"):
        minimum_detectable_difference(100, 0.1, power=0.3)
