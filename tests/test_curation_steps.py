"""The curation steps of PAPER.md section 1 on small hand-built pair tables.

Every expected value is worked out by hand or by `reference_select` below, a plain-Python re-implementation
of the Magpie rule as PAPER.md states it (pooled across subsets, per task category the top fraction by
score + offset, ties by pool order), with exact rational arithmetic (fractions.Fraction) for the kept count.
The functions under test are never used to compute their own expectations.
"""
from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from repro.config import DataConfig, DecontamConfig, MagpieConfig, SourceConfig, WildGuardConfig
from repro.data import mixture, select, stages, stats
from repro.data import sources as source_registry
from repro.data.schema import PAIR_SCHEMA, DataError, PairTable, make_pair
from repro.data.sources import skywork80k
from repro.fixtures import resolve

# The paper's subsets (the `source` values pooled by default).
ULTRA, PRO31, PRO, AIR = "magpie_ultra", "magpie_pro_llama3.1", "magpie_pro", "magpie_air"
MAGPIE = (ULTRA, PRO31, PRO, AIR)
PAPER_OFFSETS = {AIR: -0.1, PRO: -0.05}
PAPER_FRACTIONS = {"Math": 0.3, "Coding & Debugging": 0.3}


# ---------------------------------------------------------------------------------------------------
# helpers

def pair(id, source=ULTRA, category="Information seeking", scores=(0.0,), *, prompt=None, chosen=None,
         rejected=None, score=None, adversarial=None, messages=None):
    return make_pair(id=id, source=source, prompt=messages or [{"role": "user", "content": prompt or f"prompt {id}"}],
                     chosen=chosen or f"chosen {id}", rejected=rejected or f"rejected {id}", category=category,
                     score=score, scores=None if scores is None else list(scores), adversarial=adversarial)


def table(pairs, batch_rows=3):
    """A pair table built as the loaders build it; small batches so every column has several chunks."""
    t = PairTable(batch_rows=batch_rows)
    for p in pairs:
        t.add(p)
    return t.table()


def mean_fn(xs):
    return statistics.fmean(xs)


REF_SCORE = {"mean": mean_fn, "max": max, "min": min, "margin": lambda xs: max(xs) - min(xs)}


def exact_keep(n, fraction, rounding):
    """Kept pairs of a category of n: rounding(fraction x n) in exact rational arithmetic (no float noise)."""
    x = Fraction(str(fraction)) * n
    k = {"floor": math.floor, "ceil": math.ceil, "round": lambda v: math.floor(v + Fraction(1, 2))}[rounding](x)
    return min(n, max(0, k))


def reference_select(pairs, *, sources=MAGPIE, offsets=None, fractions=None, default=0.1, rounding="floor",
                     score="mean", eligible=None):
    """{category: [kept ids in rank order]}, {id: adjusted score} for the pool, in plain Python."""
    offsets = PAPER_OFFSETS if offsets is None else offsets
    fractions = PAPER_FRACTIONS if fractions is None else fractions
    pool = [p for i, p in enumerate(pairs) if p["source"] in sources and (eligible is None or eligible[i])]
    by_cat: dict[str, list[int]] = {}
    adjusted = {}
    for pos, p in enumerate(pool):
        if not p["scores"] or any(s is None or s != s for s in p["scores"]) or p["category"] is None:
            continue
        adjusted[p["id"]] = REF_SCORE[score](p["scores"]) + offsets.get(p["source"], 0.0)
        by_cat.setdefault(p["category"], []).append(pos)
    kept = {}
    for cat, members in by_cat.items():
        order = sorted(members, key=lambda pos: (-adjusted[pool[pos]["id"]], pos))
        k = exact_keep(len(members), fractions.get(cat, default), rounding)
        kept[cat] = [pool[pos]["id"] for pos in order[:k]]
    return kept, adjusted


def kept_ids(t, masks):
    out, _ = select.drop(t, masks)
    return out.column("id").to_pylist()


def magpie_cfg(**kw):
    return MagpieConfig(**kw)


def fillers(n, category, source=ULTRA, score=-1.0, prefix="f"):
    return [pair(f"{prefix}{category[:3]}{source[-3:]}{i}", source, category, [score] * 5) for i in range(n)]


# ---------------------------------------------------------------------------------------------------
# score functions

def test_raw_scores_each_function_over_chunked_and_sliced_columns():
    rows = [[1.0, 2.0, 3.0, 4.0, 5.0], [0.2, 0.9, -0.1, 0.4, 0.6], [7.0], None, [], [0.5, float("nan")],
            [0.25, None]]
    chunked = pa.chunked_array([pa.array(rows[:2], type=pa.list_(pa.float64())),
                                pa.array(rows[2:], type=pa.list_(pa.float64()))])
    expected = {"mean": [3.0, 0.4, 7.0], "max": [5.0, 0.9, 7.0], "min": [1.0, -0.1, 7.0], "margin": [4.0, 1.0, 0.0]}
    for name, want in expected.items():
        got = select.raw_scores(chunked, name)
        assert got[:3] == pytest.approx(want), name
        assert np.isnan(got[3:]).all(), (name, got)  # no scores / empty / a NaN / a missing value -> NaN
    # a sliced array (non-zero offset) reads its own rows only
    sliced = pa.array([[100.0, 100.0], [1.0, 3.0], [5.0]], type=pa.list_(pa.float64())).slice(1)
    assert select.raw_scores(sliced, "mean") == pytest.approx([2.0, 5.0])
    assert len(select.raw_scores(pa.array([], type=pa.list_(pa.float64())))) == 0
    assert set(select.SCORE_FUNCTIONS) == {"mean", "max", "min", "margin"}


# Four candidates of one category, each the winner under exactly one score function (5 DPO scores each):
#            mean   max   min   margin
#   B       .54    .90   .45   .45
#   C       .40    .60  -.40  1.00
#   D       .52    .52   .52   0
#   E       .19    .95   0     .95
CANDIDATES = {"B": [0.9, 0.45, 0.45, 0.45, 0.45], "C": [0.6, 0.6, 0.6, 0.6, -0.4], "D": [0.52] * 5,
              "E": [0.95, 0.0, 0.0, 0.0, 0.0]}


@pytest.mark.parametrize("function,winner", [("mean", "B"), ("max", "E"), ("min", "D"), ("margin", "C")])
def test_score_function_decides_the_winner(function, winner):
    pairs = [pair(k, ULTRA, "Editing", v) for k, v in CANDIDATES.items()] + fillers(6, "Editing")  # 10 -> keep 1
    ref, _ = reference_select(pairs, score=function)
    assert ref == {"Editing": [winner]}
    t, scores, masks = select.select(table(pairs), magpie_cfg(score=function))
    assert kept_ids(t, masks) == [winner]
    assert dict(zip(scores.column("id").to_pylist(), scores.column("raw_score").to_pylist()))[winner] == \
        pytest.approx(REF_SCORE[function](CANDIDATES[winner]))


def test_pairs_without_usable_scores_or_category_are_dropped_under_their_own_reason():
    pairs = ([pair(f"m{i}", ULTRA, "Math", [0.1 * i] * 5) for i in range(10)]
             + [pair("none", ULTRA, "Math", None), pair("empty", ULTRA, "Math", []),
                pair("nan", ULTRA, "Math", [0.9, float("nan")]), pair("nocat", ULTRA, None, [0.99] * 5),
                pair("neither", ULTRA, None, None)])
    t, scores, masks = select.select(table(pairs), magpie_cfg())
    ids = [p["id"] for p in pairs]

    def dropped(reason):
        return sorted(np.asarray(ids, dtype=object)[masks[reason]].tolist())

    assert dropped(select.NO_SCORES) == ["empty", "nan", "neither", "none"]  # no scores wins over no category
    assert dropped(select.NO_CATEGORY) == ["nocat"]
    # the category holds the 10 scored pairs only: 0.3 x 10 = 3 kept (the three best)
    assert sorted(kept_ids(t, masks)) == ["m7", "m8", "m9"]
    assert dropped(select.DROP_REASON) == [f"m{i}" for i in range(7)]
    assert sum(m.astype(int) for m in masks.values()).max() == 1  # reasons are disjoint
    by_id = {r["id"]: r for r in scores.to_pylist()}
    assert by_id["none"]["raw_score"] is None and by_id["none"]["rank"] is None and not by_id["none"]["kept"]
    assert by_id["nocat"]["rank"] is None and not by_id["nocat"]["kept"]
    assert by_id["m9"]["category_pairs"] == 10 and by_id["m9"]["category_kept"] == 3
    _, counts = select.drop(table(pairs), masks)
    assert counts == Counter({select.DROP_REASON: 7, select.NO_SCORES: 4, select.NO_CATEGORY: 1})


# ---------------------------------------------------------------------------------------------------
# offsets

# raw:     Air 0.80 (-0.1 -> 0.70)   Pro 0.77 (-0.05 -> 0.72)   Ultra 0.74 (0)   fillers 0.0
OFFSET_PAIRS = ([pair("air", AIR, "Information seeking", [0.80] * 5), pair("pro", PRO, "Information seeking", [0.77] * 5),
                 pair("ultra", ULTRA, "Information seeking", [0.74] * 5)]
                + fillers(7, "Information seeking", PRO31, 0.0))


@pytest.mark.parametrize("offsets,winner", [
    (PAPER_OFFSETS, "ultra"),          # both offsets: Ultra 0.74 > Pro 0.72 > Air 0.70
    ({}, "air"),                       # raw ArmoRM prefers the weak Air generator
    ({AIR: -0.1}, "pro"),              # without the Pro offset, Pro 0.77 wins
])
def test_offsets_per_source_change_the_winner(offsets, winner):
    ref, _ = reference_select(OFFSET_PAIRS, offsets=offsets)
    assert ref == {"Information seeking": [winner]}
    t, scores, masks = select.select(table(OFFSET_PAIRS), magpie_cfg(offsets=dict(offsets)))
    assert kept_ids(t, masks) == [winner]
    got = {r["id"]: r for r in scores.to_pylist()}
    for pid, src in (("air", AIR), ("pro", PRO), ("ultra", ULTRA)):
        assert got[pid]["offset"] == pytest.approx(offsets.get(src, 0.0))
        assert got[pid]["score"] == pytest.approx(got[pid]["raw_score"] + offsets.get(src, 0.0))


def test_default_config_offsets_are_the_papers():
    cfg = MagpieConfig()
    assert cfg.offsets == PAPER_OFFSETS
    assert cfg.top_fraction == PAPER_FRACTIONS and cfg.default_fraction == 0.1
    assert set(cfg.sources) == set(MAGPIE) and cfg.score == "mean" and cfg.rounding == "floor"


# ---------------------------------------------------------------------------------------------------
# pooling, fractions, rounding

def test_fraction_is_of_the_pooled_category_not_per_subset():
    # Math: 5 Ultra pairs scored high, 5 Pro-3.1 pairs scored low. Pooled: 0.3 x 10 = 3, all Ultra.
    # Per subset it would be floor(1.5) + floor(1.5) = 2 (one of each).
    pairs = [pair(f"u{i}", ULTRA, "Math", [0.9 - 0.01 * i] * 5) for i in range(5)] + \
            [pair(f"p{i}", PRO31, "Math", [0.5 - 0.01 * i] * 5) for i in range(5)]
    ref, _ = reference_select(pairs)
    assert ref == {"Math": ["u0", "u1", "u2"]}
    t, scores, masks = select.select(table(pairs), magpie_cfg())
    assert kept_ids(t, masks) == ["u0", "u1", "u2"]
    assert set(scores.column("category_pairs").to_pylist()) == {10}
    assert set(scores.column("category_kept").to_pylist()) == {3}


def category_pairs(counts, source_cycle=MAGPIE):
    """`counts[cat]` pairs per category, subsets interleaved, distinct descending scores within a category."""
    out = []
    for cat, n in counts.items():
        for i in range(n):
            out.append(pair(f"{cat}-{i}", source_cycle[i % len(source_cycle)], cat, [1.0 - i / 100] * 5))
    return out


def kept_per_category(t, masks):
    out = Counter()
    for pid in kept_ids(t, masks):
        out[pid.rsplit("-", 1)[0]] += 1
    return dict(out)


def test_per_category_fractions_math_coding_and_others():
    counts = {"Math": 20, "Coding & Debugging": 10, "Editing": 10, "Information seeking": 30, "Reasoning": 9}
    pairs = category_pairs(counts)
    # Math 0.3 x 20 = 6, Coding 0.3 x 10 = 3, others 0.1: 1, 3, floor(0.9) = 0
    want = {"Math": 6, "Coding & Debugging": 3, "Editing": 1, "Information seeking": 3}
    ref, _ = reference_select(pairs)
    assert {c: len(v) for c, v in ref.items() if v} == want
    t, _, masks = select.select(table(pairs), magpie_cfg())
    assert kept_per_category(t, masks) == want
    # default_fraction moves only the categories without their own fraction
    t, _, masks = select.select(table(pairs), magpie_cfg(default_fraction=0.2))
    assert kept_per_category(t, masks) == {"Math": 6, "Coding & Debugging": 3, "Editing": 2,
                                           "Information seeking": 6, "Reasoning": 1}
    # a category of its own in top_fraction
    t, _, masks = select.select(table(pairs), magpie_cfg(top_fraction={"Math": 0.3, "Coding & Debugging": 0.3,
                                                                       "Editing": 0.5}))
    assert kept_per_category(t, masks) == {**want, "Editing": 5}
    # and the kept pairs are the reference's (best adjusted scores of each category)
    t, _, masks = select.select(table(pairs), magpie_cfg())
    assert set(kept_ids(t, masks)) == {i for ids in ref.values() for i in ids}


@pytest.mark.parametrize("n,fraction,rounding,want", [
    (10, 0.3, "floor", 3), (10, 0.3, "round", 3), (10, 0.3, "ceil", 3),   # 0.3 x 10 is 3 exactly
    (100, 0.29, "floor", 29),    # 0.29 * 100 == 28.999999999999996 in floats
    (100, 0.07, "ceil", 7),      # 0.07 * 100 == 7.000000000000001 in floats
    (90, 0.7, "floor", 63),      # 0.7 * 90 == 62.99999999999999
    (15, 0.1, "floor", 1), (15, 0.1, "round", 2), (15, 0.1, "ceil", 2),
    (14, 0.1, "floor", 1), (14, 0.1, "round", 1), (14, 0.1, "ceil", 2),
    (25, 0.1, "round", 3),       # half rounds up (not to even)
    (9, 0.1, "floor", 0), (9, 0.1, "ceil", 1), (0, 0.3, "ceil", 0),
    (5, 1.5, "floor", 5), (5, -0.1, "floor", 0),   # clamped to [0, n]
])
def test_keep_count(n, fraction, rounding, want):
    assert exact_keep(n, fraction, rounding) == want  # the test's own rule agrees with the table
    assert select.keep_count(n, fraction, rounding) == want


@pytest.mark.parametrize("rounding", ["floor", "round", "ceil"])
def test_rounding_in_selection(rounding):
    counts = {"Math": 10, "Editing": 15, "Reasoning": 14, "Planning": 100}
    pairs = category_pairs(counts)
    fractions = {**PAPER_FRACTIONS, "Planning": 0.07}
    want = {c: exact_keep(n, fractions.get(c, 0.1), rounding) for c, n in counts.items()}
    want = {c: k for c, k in want.items() if k}
    t, scores, masks = select.select(table(pairs), magpie_cfg(rounding=rounding, top_fraction=fractions))
    assert kept_per_category(t, masks) == want
    by_hand = {"floor": {"Math": 3, "Editing": 1, "Reasoning": 1, "Planning": 7},
               "round": {"Math": 3, "Editing": 2, "Reasoning": 1, "Planning": 7},
               "ceil": {"Math": 3, "Editing": 2, "Reasoning": 2, "Planning": 7}}[rounding]
    assert want == by_hand


# ---------------------------------------------------------------------------------------------------
# ties, pool, eligible, enabled

def test_ties_are_broken_by_pool_order():
    tie = [0.9] * 5
    base = [pair(f"t{i}", MAGPIE[i % 4], "Reasoning", tie if i in (3, 7, 12) else [0.1] * 5) for i in range(20)]
    # 20 pairs -> 2 kept; three tie at the top: the first two in pool order win
    ref, _ = reference_select(base, offsets={})
    assert ref == {"Reasoning": ["t3", "t7"]}
    t, scores, masks = select.select(table(base), magpie_cfg(offsets={}))
    assert kept_ids(t, masks) == ["t3", "t7"]
    rank = dict(zip(scores.column("id").to_pylist(), scores.column("rank").to_pylist()))
    assert [rank["t3"], rank["t7"], rank["t12"]] == [0, 1, 2]
    # the same pairs in another order: now t12 comes first
    shuffled = base[12:] + base[:12]
    t, _, masks = select.select(table(shuffled), magpie_cfg(offsets={}))
    assert sorted(kept_ids(t, masks)) == ["t12", "t3"]
    # all equal: the first k rows win
    flat = [pair(f"e{i}", MAGPIE[(3 * i) % 4], "Editing", [0.5] * 5) for i in range(30)]
    t, _, masks = select.select(table(flat), magpie_cfg(offsets={}))
    assert kept_ids(t, masks) == ["e0", "e1", "e2"]


def test_non_magpie_sources_pass_untouched():
    pairs = ([pair(f"m{i}", ULTRA, "Math", [i / 10] * 5) for i in range(10)]
             + [pair("ob", "offsetbias", None, None, score=0.7), pair("wg", "wildguard", None, None, adversarial=True),
                pair("other", "magpie_other", "Math", [5.0] * 5), pair("hs", "helpsteer2", "Math", [9.0] * 5)])
    t0 = table(pairs)
    t, scores, masks = select.select(t0, magpie_cfg())
    assert not any(m[10:].any() for m in masks.values())
    assert sorted(scores.column("id").to_pylist()) == sorted(f"m{i}" for i in range(10))
    assert t.slice(10).to_pylist() == t0.slice(10).to_pylist()  # score 0.7 kept, others still None
    assert kept_ids(t, masks) == ["m7", "m8", "m9", "ob", "wg", "other", "hs"]
    # `sources` names the pooled subsets: Pro pairs outside it pass
    pairs2 = [pair(f"u{i}", ULTRA, "Math", [0.5] * 5) for i in range(10)] + \
             [pair(f"p{i}", PRO, "Math", [0.9] * 5) for i in range(10)]
    t, scores, masks = select.select(table(pairs2), magpie_cfg(sources=[ULTRA]))
    assert kept_ids(t, masks) == ["u0", "u1", "u2"] + [f"p{i}" for i in range(10)]
    assert set(scores.column("source").to_pylist()) == {ULTRA}


def test_eligible_mask_excludes_rows_from_the_pool():
    # 10 eligible Math pairs + 4 ineligible ones with the best scores: k = 0.3 x 10 = 3 of the eligible ones
    # (pooling all 14 would keep floor(4.2) = 4, and the ineligible ones would win)
    pairs = [pair(f"x{i}", ULTRA, "Math", [0.99] * 5) for i in range(4)] + \
            [pair(f"m{i}", PRO31, "Math", [0.5 - i / 100] * 5) for i in range(10)]
    eligible = np.array([False] * 4 + [True] * 10)
    ref, _ = reference_select(pairs, eligible=eligible)
    assert ref == {"Math": ["m0", "m1", "m2"]}
    t, scores, masks = select.select(table(pairs), magpie_cfg(), eligible)
    assert kept_ids(t, masks) == ["x0", "x1", "x2", "x3", "m0", "m1", "m2"]
    assert "x0" not in scores.column("id").to_pylist() and scores.num_rows == 10
    assert t.column("score").to_pylist()[:4] == [None] * 4  # untouched
    # nothing eligible: nothing selected
    t, scores, masks = select.select(table(pairs), magpie_cfg(), np.zeros(14, dtype=bool))
    assert masks == {} and scores.num_rows == 0


def test_disabled_selection_passes_everything():
    pairs = category_pairs({"Math": 10, "Editing": 10})
    t0 = table(pairs)
    t, scores, masks = select.select(t0, magpie_cfg(enabled=False))
    assert masks == {} and scores.num_rows == 0 and scores.schema == select.SCORES_SCHEMA
    assert t.to_pylist() == t0.to_pylist()


def test_scores_side_table_and_score_column():
    pairs = [pair("a", AIR, "Math", [0.9, 0.7, 0.8, 0.6, 1.0]),     # raw 0.8, adj 0.7
             pair("ob", "offsetbias", None, None),
             pair("b", PRO, "Math", [0.75] * 5),                    # adj 0.70 - tie broken below by value
             pair("c", ULTRA, "Math", [0.6] * 5),
             pair("d", PRO31, "Editing", [0.2] * 5),
             pair("e", ULTRA, "Math", [0.3] * 5)]
    t, scores, masks = select.select(table(pairs), magpie_cfg(top_fraction={"Math": 0.5}))
    # Math pool (a, b, c, e): adjusted 0.7, 0.7, 0.6, 0.3 -> k = 2 -> a (pool order first), b
    # Editing pool (d): k = floor(0.1) = 0
    assert scores.schema == select.SCORES_SCHEMA
    rows = scores.to_pylist()
    assert [r["id"] for r in rows] == ["a", "b", "c", "d", "e"]  # one row per pooled pair, in pool order
    want = {  # id: source, category, raw, offset, adjusted, rank, category_pairs, category_kept, kept
        "a": (AIR, "Math", 0.8, -0.1, 0.7, 0, 4, 2, True),
        "b": (PRO, "Math", 0.75, -0.05, 0.7, 1, 4, 2, True),
        "c": (ULTRA, "Math", 0.6, 0.0, 0.6, 2, 4, 2, False),
        "d": (PRO31, "Editing", 0.2, 0.0, 0.2, 0, 1, 0, False),
        "e": (ULTRA, "Math", 0.3, 0.0, 0.3, 3, 4, 2, False),
    }
    for r in rows:
        src, cat, raw, off, adj, rank, n, k, kept = want[r["id"]]
        assert (r["source"], r["category"], r["rank"], r["category_pairs"], r["category_kept"], r["kept"]) == \
            (src, cat, rank, n, k, kept), r
        assert r["raw_score"] == pytest.approx(raw) and r["offset"] == pytest.approx(off)
        assert r["score"] == pytest.approx(adj)
    out, counts = select.drop(t, masks)
    assert out.column("id").to_pylist() == ["a", "ob", "b"]
    assert out.column("score").to_pylist()[0] == pytest.approx(0.7)   # kept pairs carry the adjusted score
    assert out.column("score").to_pylist()[2] == pytest.approx(0.7)
    assert out.column("score").to_pylist()[1] is None                  # other sources: untouched
    assert counts == Counter({select.DROP_REASON: 3})
    assert out.schema == PAIR_SCHEMA


def test_selection_matches_the_reference_on_a_mixed_pool():
    rng = np.random.default_rng(0)
    cats = ["Math", "Coding & Debugging", "Editing", "Information seeking", "Planning"]
    pairs = []
    for i in range(400):
        src = MAGPIE[int(rng.integers(4))]
        # coarse scores so ties happen, also across subsets after offsets
        pairs.append(pair(f"r{i}", src, cats[int(rng.integers(5))], (rng.integers(0, 20, 5) / 20).tolist()))
    for rounding in ("floor", "round", "ceil"):
        ref, _ = reference_select(pairs, rounding=rounding)
        t, _, masks = select.select(table(pairs, batch_rows=64), magpie_cfg(rounding=rounding))
        got = set(kept_ids(t, masks))
        assert got == {i for ids in ref.values() for i in ids}, rounding


# ---------------------------------------------------------------------------------------------------
# WildGuard stages

def wg_table():
    return table([pair("w-adv", "wildguard", None, None, adversarial=True),
                  pair("w-van", "wildguard", None, None, adversarial=False),
                  pair("w-null", "wildguard", None, None, adversarial=None),
                  pair("ob-van", "offsetbias", None, None, adversarial=False),
                  pair("ob-null", "offsetbias", None, None),
                  pair("w-adv2", "wildguard", None, None, adversarial=True)])


def ids_of(t, mask):
    return [i for i, m in zip(t.column("id").to_pylist(), mask) if m]


def test_stage1_drops_vanilla_and_missing_flag_of_its_source_only():
    t = wg_table()
    masks = stages.adversarial_only(t)
    assert ids_of(t, masks[stages.NOT_ADVERSARIAL]) == ["w-van"]
    assert ids_of(t, masks[stages.NO_FLAG]) == ["w-null"]
    assert stages.NOT_ADVERSARIAL != stages.NO_FLAG
    assert select.drop(t, masks)[0].column("id").to_pylist() == ["w-adv", "ob-van", "ob-null", "w-adv2"]
    # the source value it applies to is a parameter
    masks = stages.adversarial_only(t, source="offsetbias")
    assert ids_of(t, masks[stages.NOT_ADVERSARIAL]) == ["ob-van"] and ids_of(t, masks[stages.NO_FLAG]) == ["ob-null"]
    # eligible rows only
    masks = stages.adversarial_only(t, eligible=np.array([True, False, True, True, True, True]))
    assert ids_of(t, masks[stages.NOT_ADVERSARIAL]) == [] and ids_of(t, masks[stages.NO_FLAG]) == ["w-null"]


def scorer(rows):
    return pa.table({"id": [r[0] for r in rows], "score_chosen": [r[1] for r in rows],
                     "score_rejected": [r[2] for r in rows]}, schema=stages.SCORES_SCHEMA)


def test_stage2_keeps_strictly_agreeing_pairs():
    t = table([pair("w1", "wildguard", None, None, adversarial=True), pair("ob", "offsetbias", None, None),
               pair("w2", "wildguard", None, None, adversarial=True), pair("w3", "wildguard", None, None),
               pair("w4", "wildguard", None, None)])
    # scores in another order than the table, plus a score of a pair not in the table
    # (in two chunks, as a scorer working in batches returns them)
    s = pa.concat_tables([scorer([("w4", 0.5, 0.5000001), ("w3", 1.0, 1.0)]),
                          scorer([("zz", 0.0, 1.0), ("w2", -0.2, -0.3), ("w1", 2.0, -1.0)])])
    masks = stages.scorer_agrees(t, s)
    assert list(masks) == [stages.SCORER_DISAGREES]
    assert ids_of(t, masks[stages.SCORER_DISAGREES]) == ["w3", "w4"]  # tie dropped; ob needs no score


def test_stage2_missing_score_is_an_error_naming_the_pair():
    t = table([pair("w1", "wildguard", None, None), pair("w-missing", "wildguard", None, None),
               pair("ob", "offsetbias", None, None)])
    with pytest.raises(DataError, match="w-missing"):
        stages.scorer_agrees(t, scorer([("w1", 1.0, 0.0), ("ob", 1.0, 0.0)]))
    # an ineligible WildGuard pair needs no score
    masks = stages.scorer_agrees(t, scorer([("w1", 1.0, 0.0)]), eligible=np.array([True, False, True]))
    assert not masks[stages.SCORER_DISAGREES].any()


# ---------------------------------------------------------------------------------------------------
# Table 1 statistics

def msg(role, content):
    return {"role": role, "content": content}


def test_table1_per_source_in_first_seen_order_and_total():
    rows = [
        # source Z: turns 2, prompt 3 words, responses (2 + 4) / 2 = 3
        pair("a1", "Z", messages=[msg("user", "one two three")], chosen="a b", rejected="a b c d"),
        # source B: system + user: turns 3, prompt 2 + 1 = 3, responses (5 + 1) / 2 = 3
        pair("b1", "B", messages=[msg("system", "s s"), msg("user", "u")], chosen="one two three four five",
             rejected="x"),
        # source Z: 3 prompt turns -> 4 turns; prompt 1 + 2 + 4 = 7 (any whitespace separates words); responses 1
        pair("a2", "Z", messages=[msg("user", "x"), msg("assistant", " y\tz "), msg("user", "w w\nw  w")],
             chosen="a", rejected="b"),
        # source Z: turns 2, prompt 1, responses (2 + 6) / 2 = 4
        pair("a3", "Z", messages=[msg("user", "q")], chosen="c c", rejected="r r r r r r"),
        # source M: turns 2, prompt 4, responses (1 + 2) / 2 = 1.5
        pair("c1", "M", messages=[msg("user", "p p p p")], chosen="z", rejected="z z"),
    ]
    got = stats.table1(table(rows, batch_rows=2))
    assert got["tokenizer"] == stats.WORDS == "whitespace words"
    assert [s["source"] for s in got["sources"]] == ["Z", "B", "M"]  # first seen, not sorted
    by = {s["source"]: s for s in got["sources"]}
    assert by["Z"] == {"source": "Z", "pairs": 3, "avg_turns": round(8 / 3, 1), "avg_prompt_tokens": round(11 / 3, 1),
                       "avg_response_tokens": round(8 / 3, 1)}
    assert by["Z"]["avg_turns"] == 2.7 and by["Z"]["avg_prompt_tokens"] == 3.7
    assert by["B"] == {"source": "B", "pairs": 1, "avg_turns": 3.0, "avg_prompt_tokens": 3.0, "avg_response_tokens": 3.0}
    assert by["M"] == {"source": "M", "pairs": 1, "avg_turns": 2.0, "avg_prompt_tokens": 4.0, "avg_response_tokens": 1.5}
    assert got["total"] == {"source": "total", "pairs": 5, "avg_turns": round(13 / 5, 1),
                            "avg_prompt_tokens": round(18 / 5, 1), "avg_response_tokens": round(12.5 / 5, 1)}


def test_table1_empty_prompt_does_not_shift_its_neighbours():
    rows = [pair("x1", "A", messages=[msg("user", "a b")], chosen="c", rejected="r"),
            pair("x2", "A", messages=[msg("user", "a")], chosen="c", rejected="r"),
            pair("x3", "B", messages=[msg("user", "a b c d e f")], chosen="c", rejected="r")]
    empty = make_pair(id="x0", source="E", prompt=[], chosen="c c", rejected="r r")
    for pos in range(4):  # the prompt-less pair at every position
        t = table(rows[:pos] + [empty] + rows[pos:], batch_rows=2)
        by = {s["source"]: s for s in stats.table1(t)["sources"]}
        assert by["A"]["avg_prompt_tokens"] == 1.5 and by["B"]["avg_prompt_tokens"] == 6.0, pos
        assert by["E"] == {"source": "E", "pairs": 1, "avg_turns": 1.0, "avg_prompt_tokens": 0.0,
                           "avg_response_tokens": 2.0}, pos


def test_table1_of_no_pairs():
    got = stats.table1(PAIR_SCHEMA.empty_table())
    assert got["sources"] == [] and got["total"]["pairs"] == 0 and got["total"]["avg_turns"] is None


# ---------------------------------------------------------------------------------------------------
# mixture.build end to end

TOKEN = re.compile(r"(?u)\b\w\w+\b")


def benchmark_prompts(k=3):
    """k distinct RewardBench fixture prompts of >= 7 scikit-learn tokens."""
    rb = pq.read_table(f"{resolve('fixture:reward-bench')}/data/filtered-00000-of-00001.parquet")
    out = []
    for p in rb.column("prompt").to_pylist():
        if len(TOKEN.findall(p.lower())) >= 7 and p not in out:
            out.append(p)
    assert len(out) >= k
    return out[:k]


def conv(prompt, answer):
    return [{"content": prompt, "role": "user"}, {"content": answer, "role": "assistant"}]


def write_skywork(folder, rows):
    path = folder / "data" / "train-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=skywork80k.SCHEMA), path)
    return str(folder)


CONTAMINATED = "prompt shares a 7-13-gram with fixture:reward-bench (decontamination)"


@pytest.fixture
def mixture_setup(tmp_path, monkeypatch):
    rb1, rb2, rb3 = benchmark_prompts()
    # A raw source (registered for the test): Magpie, WildGuard and OffsetBias pairs, plus 2 unusable rows.
    raw = ([pair(f"math{i}", ULTRA, "Math", [0.9 - i / 100] * 5) for i in range(10)]         # keep 3
           + [pair(f"edit{i}", PRO, "Editing", [0.8 - i / 100] * 5) for i in range(10)]       # keep 1
           + [pair("nocat", PRO31, None, [0.99] * 5)]
           + [pair("wg-adv-ok", "wildguard", None, None, adversarial=True),
              pair("wg-adv-tie", "wildguard", None, None, adversarial=True),
              pair("wg-van", "wildguard", None, None, adversarial=False),
              pair("wg-null", "wildguard", None, None, adversarial=None)]
           + [pair("ob-dirty", "offsetbias", None, None, prompt=f"Quick question. {rb2} Thanks a lot!"),
              pair("ob-clean", "offsetbias", None, None, prompt="short clean prompt", chosen="yes", rejected="no")])
    # the best Math pair (kept by selection) holds a benchmark prompt verbatim
    raw[0]["prompt"] = [{"role": "user", "content": f"Before we start: {rb1}"}]
    raw_table = table(raw, batch_rows=8)

    def fake_raw(path, split, **options):
        return raw_table, Counter({"bad row": 2})

    monkeypatch.setitem(source_registry.SOURCES, "fake_raw", fake_raw)
    # The released set (skywork80k layout): its magpie_ultra pairs have no scores and its wildguard pairs no
    # adversarial flag, so selection or stage 1 would drop them all if they were applied.
    released = [
        {"chosen": conv("released ultra one", "good"), "rejected": conv("released ultra one", "bad"), "source": ULTRA},
        {"chosen": conv(f"Please answer: {rb3}", "good"), "rejected": conv(f"Please answer: {rb3}", "bad"),
         "source": ULTRA},
        {"chosen": conv("released guard one", "good"), "rejected": conv("released guard one", "bad"),
         "source": "wildguard"},
        {"chosen": conv(rb1, "good"), "rejected": conv(rb1, "bad"), "source": "wildguard"},
        # duplicate of the raw source's ob-clean pair (same prompt, chosen, rejected)
        {"chosen": conv("short clean prompt", "yes"), "rejected": conv("short clean prompt", "no"),
         "source": "offsetbias"},
        # not a pair: the prompts differ
        {"chosen": conv("one prompt", "a"), "rejected": conv("another prompt", "b"), "source": ULTRA},
    ]
    folder = write_skywork(tmp_path / "sky", released)
    calls = []

    def score_fn(t):
        calls.append(t)
        ids = t.column("id").to_pylist()
        return scorer([(i, 1.0, 0.0) if i == "wg-adv-ok" else (i, 0.25, 0.25) for i in ids])

    cfg = DataConfig(
        sources=[SourceConfig(name="fake_raw", path="unused"), SourceConfig(name="skywork80k", path=folder)],
        magpie=MagpieConfig(), wildguard=WildGuardConfig(stage2=True),
        decontamination=DecontamConfig(benchmark="fixture:reward-bench", remove_from=[ULTRA]))
    return cfg, score_fn, calls


def test_build_counts_every_step_per_source(mixture_setup):
    cfg, score_fn, calls = mixture_setup
    t, manifest, side = mixture.build(cfg, score_fn=score_fn)
    raw, sky = manifest["sources"]
    assert raw["steps"] == {"candidates": 29, "paired": 27, "selected": 10, "filtered": 7, "decontaminated": 6, "kept": 6}
    assert raw["dropped"] == {"bad row": 2, select.DROP_REASON: 16, select.NO_CATEGORY: 1,
                              stages.NOT_ADVERSARIAL: 1, stages.NO_FLAG: 1, stages.SCORER_DISAGREES: 1,
                              CONTAMINATED: 1}
    # the released set: selection and the WildGuard stages pass it; decontamination and duplicates apply
    assert sky["steps"] == {"candidates": 6, "paired": 5, "selected": 5, "filtered": 5, "decontaminated": 4, "kept": 3}
    assert sky["dropped"] == {"chosen and rejected prompts differ": 1, CONTAMINATED: 1, mixture.DUPLICATE_REASON: 1}
    for s in (raw, sky):
        assert s["steps"]["candidates"] - s["kept"] == sum(s["dropped"].values())
    assert manifest["pairs"] == t.num_rows == 9
    assert manifest["dropped"] == 23 + 3
    got = t.column("id").to_pylist()
    assert got[:6] == ["math1", "math2", "edit0", "wg-adv-ok", "ob-dirty", "ob-clean"]
    assert [r["source"] for r in t.slice(6).to_pylist()] == [ULTRA, "wildguard", "wildguard"]
    score = dict(zip(got, t.column("score").to_pylist()))
    assert score["math1"] == pytest.approx(0.89) and score["edit0"] == pytest.approx(0.8 - 0.05)  # adjusted
    assert t.slice(3).column("score").to_pylist() == [None] * 6  # WildGuard, OffsetBias, released: no score
    # the scorer saw the raw source's WildGuard pairs left after stage 1, never the released ones
    assert len(calls) == 1 and calls[0].column("id").to_pylist() == ["wg-adv-ok", "wg-adv-tie"]
    assert mixture.ORIGIN not in calls[0].column_names
    assert manifest["wildguard"]["pairs"] == 4 and manifest["wildguard"]["after_stage1"] == 2
    assert manifest["wildguard"]["after_stage2"] == 1
    # the Magpie side table holds the raw source's 21 Magpie pairs only
    ms = side["magpie_scores"]
    assert ms.num_rows == 21 and not any(i.startswith("Skywork") or ":" in i for i in ms.column("id").to_pylist())
    assert manifest["magpie"]["categories"] == [
        {"category": "Math", "pairs": 10, "kept": 3, "percentage": 75.0},
        {"category": "Editing", "pairs": 10, "kept": 1, "percentage": 25.0}]
    assert manifest["duplicates"]["found"] == 1 and manifest["duplicates"]["by_source"] == {"fake_raw": 0,
                                                                                           "skywork80k": 1}


def test_build_decontaminates_only_the_listed_source_value_and_reports_all(mixture_setup):
    cfg, score_fn, _ = mixture_setup
    rb1, rb2, rb3 = benchmark_prompts()
    t, manifest, side = mixture.build(cfg, score_fn=score_fn)
    prompts = {p[-1]["content"]: s for p, s in zip(t.column("prompt").to_pylist(), t.column("source").to_pylist())}
    assert f"Before we start: {rb1}" not in prompts and f"Please answer: {rb3}" not in prompts  # magpie_ultra: gone
    assert prompts[rb1] == "wildguard" and prompts[f"Quick question. {rb2} Thanks a lot!"] == "offsetbias"  # kept
    d = manifest["decontamination"]
    assert d["removed"] == 2 and d["remove_from"] == [ULTRA] and d["benchmark"] == "fixture:reward-bench"
    contaminated = {s["source"]: s["contaminated"] for s in d["sources"]}
    assert contaminated == {ULTRA: 2, PRO: 0, "wildguard": 1, "offsetbias": 1}  # every source value scanned
    assert d["total"]["contaminated"] == 4
    side_rows = sorted((r["source"], r["removed"]) for r in side["contaminated"].to_pylist())
    assert side_rows == [("magpie_ultra", True), ("magpie_ultra", True), ("offsetbias", False), ("wildguard", False)]
    # naming another source value removes its pairs too; the counts stay the same
    cfg.decontamination = DecontamConfig(benchmark="fixture:reward-bench", remove_from=["wildguard"])
    t2, m2, _ = mixture.build(cfg, score_fn=score_fn)
    assert m2["decontamination"]["removed"] == 1
    assert {s["source"]: s["contaminated"] for s in m2["decontamination"]["sources"]} == contaminated
    kept2 = [p[-1]["content"] for p in t2.column("prompt").to_pylist()]
    assert rb1 not in kept2 and f"Please answer: {rb3}" in kept2 and f"Before we start: {rb1}" in kept2
    assert m2["sources"][1]["steps"]["decontaminated"] == 4 and m2["sources"][0]["steps"]["decontaminated"] == 7
