"""Curation of the full 378K pool: `repro.data.mixture.build` vs a pandas + scikit-learn pipeline, same files.

    nice -n 10 python benchmarks/curation_speed.py [--scales 0.25,0.5,1.0] [--pandas-max 1.0]
                                                   [--data-root /tmp/curation_speed] [--keep-data]
                                                   [--out benchmarks/results/curation_speed.json]
    python benchmarks/curation_speed.py --make-data DIR --scale F      # only write a synthetic pool

Data (synthetic, deterministic, numpy seed 0; generating it is not timed): the seven raw sources of the
paper's Preference 378K in their real on-disk layouts and Arrow schemas (the fixture folders' files, and
every parquet schema copied from the fixture file with `pyarrow.parquet.read_schema`), at F x the full
size: HelpSteer2 14,442 rating rows (7,221 prompts x 2 responses, 45% single-turn, NeMo turn markers;
plus a validation file), OffsetBias 8,504 rows, WildGuardMix train 86,759 rows (48,783 prompt-only,
18,548 prompts with a refusal and a compliance, 880 one-sided rows; 47% adversarial; plus the test
config), Magpie Ultra 50,000 rows in two files (every column, 1,024-d `embedding`), and the three Magpie
DPO sets, 98,000 train + 2,000 test rows each (5 responses, `rewards_armorm`, chosen/rejected): 378,273
candidate pairs. Text lengths: Table 1's average prompt/response tokens per source x 0.75 words/token,
gamma-distributed; words from a 30,000-word Zipf(1.1) vocabulary with punctuation and ~0.2% non-ASCII
words. Task categories: Math 25% of the pool (27% of the Magpie pairs), Coding & Debugging 11% of the
Magpie pairs; ArmoRM scores ~N(0.15, 0.03) per row (Air +0.03) with per-response noise. Benchmark: a
RewardBench-shaped `filtered` split, 2,985 prompts of 10-200 words in the 23 subsets (rows per subset as
in `repro.eval.rewardbench.SUBSET_COUNTS`).
Contamination: 1.5% of magpie-ultra instructions and 0.15% of Magpie Pro Llama-3.1 instructions embed
7-20 consecutive words of a benchmark prompt.

Recipe timed (`mixture.build(cfg)`): all seven sources from local folders, Magpie selection on (paper
defaults), WildGuard stage 1 on, stage 2 off (no scorer model), decontamination against the benchmark
folder (split `filtered`) removing from magpie_ultra, report on; duplicates dropped; Table 1 stats with
whitespace words. Each run is a fresh process (`--child`): `cold` with an empty HF_DATASETS_CACHE (so
`datasets.load_dataset` converts every source file into its Arrow cache), then `warm` with that same
cache filled (the OS page cache holds the files just written: a best case). Per-step times come from
wrapping, in the child only, the loaders, `datasets.load_dataset`, `hub.load_split` and the step
functions of `repro.data.mixture` / `decontam` / `stats` (no library code edited); a sampling thread
records RSS (VmRSS, RssAnon, RssFile) every 20 ms and per step. Peak RSS = VmHWM of the child.

`pandas`: what a user would otherwise write: `pd.read_json` / `pd.read_parquet` of the same files
(only the columns the rule needs), pairs with pandas ops, Magpie selection with `groupby().rank()`, stage 1
a boolean filter, decontamination with the RewardBench maintainers' method (scikit-learn
`CountVectorizer(ngram_range=(7, 13))` fitted on the benchmark, sparse product), duplicates with
`duplicated()`. No manifest, no canonical pair table, no Table 1 statistics, no row-level checks. Run up
to `--pandas-max`. The driver checks both pipelines keep the same pairs per source (hence the same Magpie
pairs) and flag the same number of contaminated prompts.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from decontam_speed import vocabulary  # noqa: E402 - same helpers as the decontamination benchmark

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "repro" / "fixtures"

# Full sizes (PAPER.md section 1, DATASETS.md).
HS2_PROMPTS, HS2_VAL_ROWS = 7_221, 1_038
OFFSETBIAS = 8_504
WG_PROMPT_ONLY, WG_PAIRS, WG_ONE_SIDED, WG_TEST = 48_783, 18_548, 880, 1_725  # 48,783 + 2 x 18,548 + 880 = 86,759
WG_ADVERSARIAL = 40_956 / 86_759
ULTRA = 50_000
DPO_TRAIN, DPO_TEST = 98_000, 2_000
POOL = HS2_PROMPTS + OFFSETBIAS + WG_PAIRS + ULTRA + 3 * DPO_TRAIN  # 378,273
BENCH_PROMPTS = 2_985

# Table 1 (paper/table1_composition.csv): average prompt / response tokens; words = 0.75 x tokens.
TABLE1_TOKENS = {
    "helpsteer2": (21.3, 690.0), "offsetbias": (69.1, 222.1), "wildguard": (164.3, 349.9),
    "magpie_ultra": (76.7, 670.0), "magpie_pro": (34.2, 621.5), "magpie_pro_llama3.1": (118.8, 584.3),
    "magpie_air": (66.6, 240.0),
}
WORDS_PER_TOKEN = 0.75
DPO = {  # folder -> (source name, generator, has input_generator, ArmoRM mean)
    "magpie-pro-llama3.1-dpo": ("magpie_pro_llama3.1", "meta-llama/Meta-Llama-3.1-70B-Instruct", True, 0.15),
    "magpie-pro-dpo": ("magpie_pro", "meta-llama/Meta-Llama-3-70B-Instruct", True, 0.14),
    "magpie-air-dpo": ("magpie_air", "meta-llama/Meta-Llama-3-8B-Instruct", False, 0.17),
}
CATEGORIES = ("Math", "Coding & Debugging", "Information seeking", "Reasoning", "Planning", "Editing",
              "Data analysis", "Creative writing", "Advice seeking", "Brainstorming", "Role playing", "Others")
ULTRA_SHARES = (0.35, 0.15, 0.12, 0.08, 0.05, 0.04, 0.05, 0.05, 0.05, 0.03, 0.02, 0.01)
DPO_SHARES = (0.26, 0.10, 0.23, 0.08, 0.06, 0.04, 0.05, 0.06, 0.07, 0.03, 0.015, 0.005)
ULTRA_CONTAMINATED, PRO31_CONTAMINATED = 0.015, 0.0015
ROWS_PER_GROUP = 1_000   # parquet row groups of the long-text files
EMBEDDING_DIM = 1_024    # Alibaba-NLP/gte-large-en-v1.5
SEED = 0


# ----------------------------------------------------------------------------------------------------------
# Text: slices of a pre-built word stream (one Python op per text, none per word).

class Words:
    """Texts of a given number of words: contiguous slices (at word boundaries) of a `stream_words`-word
    stream drawn once from a Zipf(1.1) vocabulary (frequent words short); ~5% of words carry a comma, ~3% a full stop, ~0.2% are
    non-ASCII (curly-quoted words or accented spellings)."""

    def __init__(self, seed: int, stream_words: int = 12_000_000, vocab_size: int = 30_000):
        rng = np.random.default_rng(seed)
        # the same vocabulary for every stream; shorter words are more frequent, as in English (~5 letters a word)
        vocab = sorted(vocabulary(vocab_size, np.random.default_rng(12345)).tolist(), key=len)
        accented = set(np.random.default_rng(54321).choice(np.arange(200, vocab_size), vocab_size // 200,
                                                           replace=False).tolist())
        vocab = [w.replace("a", "ä", 1).replace("e", "é", 1) if i in accented else w for i, w in enumerate(vocab)]
        tokens = []
        for w in vocab:  # variants: plain, comma, full stop, curly-quoted
            tokens += [f"{w} ", f"{w}, ", f"{w}. ", f"\u201c{w}\u201d "]
        tok = [t.encode() for t in tokens]
        p = 1.0 / np.arange(1, vocab_size + 1) ** 1.1
        cdf = np.cumsum(p / p.sum())
        cdf[-1] = 1.0
        ids = np.searchsorted(cdf, rng.random(stream_words), side="right").astype(np.int64)
        variant = np.searchsorted(np.cumsum([0.918, 0.05, 0.03]), rng.random(stream_words), side="right")
        ids = ids * 4 + variant
        lengths = np.array([len(t) for t in tok], dtype=np.int64)[ids]
        self.word_off = np.concatenate([[0], np.cumsum(lengths)])
        self.stream = b"".join([tok[i] for i in ids.tolist()])
        self.view = memoryview(self.stream)
        self.n = stream_words

    def bytes_list(self, rng: np.random.Generator, n_words: np.ndarray) -> tuple[list, np.ndarray]:
        n_words = np.minimum(np.maximum(np.asarray(n_words, dtype=np.int64), 1), self.n // 2)
        start = rng.integers(0, self.n - n_words)
        a, b = self.word_off[start], self.word_off[start + n_words] - 1  # no trailing space
        view = self.view
        return [view[x:y] for x, y in zip(a.tolist(), b.tolist())], b - a

    def arrow(self, rng: np.random.Generator, n_words: np.ndarray):
        """pa.StringArray of len(n_words) texts."""
        import pyarrow as pa

        pieces, lengths = self.bytes_list(rng, n_words)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32 if lengths.sum() < 2**31 - 1 else np.int64)
        data = b"".join(pieces)
        typ = pa.string() if offsets.dtype == np.int32 else pa.large_string()
        return pa.Array.from_buffers(typ, len(pieces), [None, pa.py_buffer(offsets), pa.py_buffer(data)])

    def strings(self, rng: np.random.Generator, n_words: np.ndarray) -> list[str]:
        pieces, _ = self.bytes_list(rng, n_words)
        return [bytes(p).decode() for p in pieces]


def lengths(rng: np.random.Generator, n: int, mean_words: float, shape: float, lo: int = 2) -> np.ndarray:
    """Gamma-distributed word counts with the given mean (at least `lo`, at most 8 x the mean)."""
    x = rng.gamma(shape, mean_words / shape, n)
    return np.clip(np.rint(x), lo, 8 * mean_words).astype(np.int64)


def table1_words(source: str) -> tuple[float, float]:
    p, r = TABLE1_TOKENS[source]
    return p * WORDS_PER_TOKEN, r * WORDS_PER_TOKEN


def contaminate(rng: np.random.Generator, texts: list[str], rate: float, bench_words: list[list[str]]) -> int:
    """Insert 7-20 consecutive words of a random benchmark prompt into `rate` of the texts (in place)."""
    rows = np.flatnonzero(rng.random(len(texts)) < rate)
    for i in rows.tolist():
        b = bench_words[int(rng.integers(len(bench_words)))]
        k = min(int(rng.integers(7, 21)), len(b))
        s = int(rng.integers(0, len(b) - k + 1))
        words = texts[i].split(" ")
        at = int(rng.integers(0, len(words) + 1))
        words[at:at] = b[s:s + k]
        texts[i] = " ".join(words)
    return len(rows)


# ----------------------------------------------------------------------------------------------------------
# Writers, one per source folder (schemas read from the fixture files).

def _schema(rel: str):
    import pyarrow.parquet as pq

    return pq.read_schema(FIXTURES / rel)


def _const(value, n: int, typ):
    import pyarrow as pa

    return pa.array([value], type=typ).take(pa.array(np.zeros(n, dtype=np.int64)))


def _choice(rng, values, n: int, p=None):
    import pyarrow as pa

    return pa.array(list(values)).take(pa.array(rng.choice(len(values), n, p=p)))


def _messages(typ, contents: list, roles: list[str]):
    """list<struct<content, role>> of len(contents[0]) conversations, one message per (contents[k], roles[k])."""
    import pyarrow as pa

    n, m = len(contents[0]), len(contents)
    flat = pa.concat_arrays([c.cast(pa.string()) for c in contents])
    take = (np.arange(m)[None, :] * n + np.arange(n)[:, None]).ravel()  # row-major interleave
    content = flat.take(pa.array(take))
    role = pa.array(roles).take(pa.array(np.tile(np.arange(m), n)))
    struct = pa.StructArray.from_arrays([content, role], fields=list(typ.value_type))
    return pa.ListArray.from_arrays(pa.array(np.arange(0, n * m + 1, m, dtype=np.int32)), struct, type=typ)


def _write_groups(path: Path, schema, n: int, make_group, rng) -> None:
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    with pq.ParquetWriter(path, schema) as w:
        for start in range(0, n, ROWS_PER_GROUP):
            t = make_group(rng, start, min(ROWS_PER_GROUP, n - start))
            w.write_table(t.cast(schema), row_group_size=ROWS_PER_GROUP)


def write_helpsteer2(out: Path, words: Words, scale: float, rng) -> dict:
    p_words, r_words = table1_words("helpsteer2")
    folder = out / "helpsteer2"
    folder.mkdir(parents=True, exist_ok=True)
    rows_out = {}
    for fname, prompts in (("train.jsonl.gz", round(HS2_PROMPTS * scale)), ("validation.jsonl.gz",
                                                                            round(HS2_VAL_ROWS * scale / 2))):
        k_user = rng.choice([1, 2, 3, 4], prompts, p=[0.45, 0.25, 0.2, 0.1])  # mean 3.9 messages per pair
        n_turns = 2 * k_user - 1
        per_turn = np.repeat(p_words / n_turns, n_turns)  # a prompt's turns share its Table-1 words
        lo = np.repeat(np.where(n_turns == 1, 6, 2), n_turns)  # >= 6 words alone: no two prompts alike by chance
        turn_words = words.strings(rng, np.maximum(lo, np.rint(rng.gamma(1.5, 1 / 1.5, len(per_turn)) * per_turn)))
        responses = words.strings(rng, lengths(rng, 2 * prompts, r_words, 2.5, 5))
        helpful = np.array([rng.choice(5, 2, replace=False) for _ in range(prompts)])
        others = rng.integers(0, 5, (2 * prompts, 4))
        lines, t = [], 0
        for i in range(prompts):
            turns = turn_words[t:t + n_turns[i]]
            t += n_turns[i]
            prompt = turns[0]
            for k in range(1, len(turns), 2):
                prompt += f"<extra_id_1>Assistant\n{turns[k]}<extra_id_1>User\n{turns[k + 1]}"
            for j in range(2):
                c, co, cx, v = others[2 * i + j].tolist()
                lines.append(json.dumps({"prompt": prompt, "response": responses[2 * i + j],
                                         "helpfulness": int(helpful[i, j]), "correctness": c, "coherence": co,
                                         "complexity": cx, "verbosity": v}))
        with gzip.open(folder / fname, "wt", encoding="utf-8", compresslevel=6) as f:
            f.write("\n".join(lines) + "\n")
        rows_out[fname] = len(lines)
    (folder / "preference").mkdir(exist_ok=True)
    shutil.copy(FIXTURES / "helpsteer2" / "preference" / "preference.jsonl.gz", folder / "preference")
    return rows_out


def write_offsetbias(out: Path, words: Words, scale: float, rng) -> dict:
    p_words, r_words = table1_words("offsetbias")
    n = round(OFFSETBIAS * scale)
    instr = words.strings(rng, lengths(rng, n, p_words, 1.5, 3))
    o1 = words.strings(rng, lengths(rng, n, r_words, 2.5, 3))
    o2 = words.strings(rng, lengths(rng, n, r_words, 2.5, 3))
    label = rng.integers(1, 3, n)
    folder = out / "offsetbias"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "train.jsonl", "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"instruction": instr[i], "output_1": o1[i], "output_2": o2[i],
                                "label": int(label[i])}) + "\n")
    return {"train.jsonl": n}


HARM_SUBCATEGORIES = ("violence_and_physical_harm", "cyberattack", "fraud_assisting_illegal_activities",
                      "private_information_individual", "toxic_language_hate_speech", "sexual_content",
                      "misinformation_harms", "others")


def write_wildguard(out: Path, words: Words, scale: float, rng) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    p_words, r_words = table1_words("wildguard")
    n_only, n_pairs, n_one = (round(x * scale) for x in (WG_PROMPT_ONLY, WG_PAIRS, WG_ONE_SIDED))
    n_prompts = n_only + n_pairs + n_one
    prompts = words.arrow(rng, lengths(rng, n_prompts, p_words, 2.0, 5))
    adversarial = rng.random(n_prompts) < WG_ADVERSARIAL
    harmful = rng.random(n_prompts) < 0.5
    # rows: prompt-only (one per prompt), pairs (a refusal and a compliance), one-sided (one response)
    prompt_of = np.concatenate([np.arange(n_only), np.repeat(np.arange(n_only, n_only + n_pairs), 2),
                                np.arange(n_only + n_pairs, n_prompts)])
    n_rows = len(prompt_of)
    has_response = np.ones(n_rows, dtype=bool)
    has_response[:n_only] = False
    refusal = np.zeros(n_rows, dtype=bool)
    refusal[n_only:n_only + 2 * n_pairs:2] = True
    refusal[n_only + 2 * n_pairs:] = rng.random(n_one) < 0.5
    order = rng.permutation(n_rows)
    prompt_of, has_response, refusal = prompt_of[order], has_response[order], refusal[order]
    n_resp = int(has_response.sum())
    responses = words.arrow(rng, lengths(rng, n_resp, r_words, 2.0, 3))
    resp_idx = np.full(n_rows, -1)
    resp_idx[has_response] = np.arange(n_resp)
    h = harmful[prompt_of]
    str_or_null = lambda vals, mask: pa.array(np.where(mask, vals, None).tolist(), type=pa.string())  # noqa: E731
    # `response` with nulls: take with a null index gives a null value
    resp = responses.take(pa.array(resp_idx, mask=~has_response))
    refusal_label = str_or_null(np.where(refusal, "refusal", "compliance"), has_response)
    complied_harm = h & ~refusal
    response_harm = str_or_null(np.where(complied_harm, "harmful", "unharmful"), has_response)
    sub = np.where(h, np.array(HARM_SUBCATEGORIES)[rng.integers(0, len(HARM_SUBCATEGORIES), n_rows)], "benign")
    table = pa.table({
        "prompt": prompts.take(pa.array(prompt_of)), "adversarial": pa.array(adversarial[prompt_of]),
        "response": resp, "prompt_harm_label": pa.array(np.where(h, "harmful", "unharmful").tolist()),
        "response_refusal_label": refusal_label, "response_harm_label": response_harm,
        "subcategory": pa.array(sub.tolist()),
    })
    folder = out / "wildguardmix"
    (folder / "train").mkdir(parents=True, exist_ok=True)
    (folder / "test").mkdir(parents=True, exist_ok=True)
    pq.write_table(table.cast(_schema("wildguardmix/train/wildguard_train.parquet")),
                   folder / "train" / "wildguard_train.parquet", row_group_size=10_000)
    n_test = round(WG_TEST * scale)
    tp = words.arrow(rng, lengths(rng, n_test, p_words, 2.0, 5))
    tr = words.arrow(rng, lengths(rng, n_test, r_words, 2.0, 3))
    th = rng.random(n_test) < 0.5
    trf = rng.random(n_test) < 0.5
    test_schema = _schema("wildguardmix/test/wildguard_test.parquet")
    test = pa.table({
        "prompt": tp, "response": tr, "adversarial": pa.array(rng.random(n_test) < 0.5),
        "prompt_harm_label": pa.array(np.where(th, "harmful", "unharmful").tolist()),
        "response_refusal_agreement": rng.uniform(0.6, 1, n_test),
        "response_refusal_label": pa.array(np.where(trf, "refusal", "compliance").tolist()),
        "response_harm_label": pa.array(np.where(th & ~trf, "harmful", "unharmful").tolist()),
        "subcategory": pa.array(np.where(th, "others", "benign").tolist()),
        "prompt_harm_agreement": rng.uniform(0.6, 1, n_test), "response_harm_agreement": rng.uniform(0.6, 1, n_test),
    }).select(test_schema.names)
    pq.write_table(test.cast(test_schema), folder / "test" / "wildguard_test.parquet")
    shutil.copy(FIXTURES / "wildguardmix" / "README.md", folder / "README.md")
    return {"train/wildguard_train.parquet": n_rows, "test/wildguard_test.parquet": n_test,
            "train_prompt_only": int(n_only), "train_adversarial": int(adversarial[prompt_of].sum())}


def _ultra_group(words: Words, bench_words, counters: dict):
    import pyarrow as pa

    p_words, r_words = table1_words("magpie_ultra")
    schema = _schema("magpie-ultra/data/train-00000-of-00002.parquet")
    tag_json = {c: json.dumps({"primary_tag": c, "other_tags": []}) for c in CATEGORIES}

    def make(rng, start, n):
        instr = words.strings(rng, lengths(rng, n, p_words, 1.5, 3))
        counters["contaminated"] += contaminate(rng, instr, ULTRA_CONTAMINATED, bench_words)
        instr = pa.array(instr, type=pa.string())
        response = words.arrow(rng, lengths(rng, n, r_words, 2.5, 5))
        base = words.arrow(rng, lengths(rng, n, r_words, 2.5, 5))
        cat = rng.choice(len(CATEGORIES), n, p=ULTRA_SHARES)
        row = rng.normal(0.14, 0.03, n)
        score, score_base = np.round(row + rng.normal(0, 0.015, n), 6), np.round(row + rng.normal(0, 0.015, n), 6)
        same = score == score_base
        score_base[same] += 1e-6
        n_other = rng.integers(0, 3, n)
        other_flat = np.array(CATEGORIES)[rng.integers(0, len(CATEGORIES), int(n_other.sum()))].tolist()
        cols = {
            "model_name_response_base": _const("meta-llama/Meta-Llama-3.1-405B-FP8", n, pa.string()),
            "instruction": instr, "response": response, "response_base": base,
            "intent": words.arrow(rng, lengths(rng, n, 14, 4.0)), "knowledge": words.arrow(rng, lengths(rng, n, 16, 4.0)),
            "difficulty": _choice(rng, ("very easy", "easy", "medium", "hard", "very hard"), n),
            "model_name_difficulty": _const("meta-llama/Meta-Llama-3.1-8B-Instruct", n, pa.string()),
            "explanation": words.arrow(rng, lengths(rng, n, 60, 4.0)),
            "quality": _choice(rng, ("very poor", "poor", "average", "good", "excellent"), n),
            "model_name_quality": _const("meta-llama/Meta-Llama-3.1-8B-Instruct", n, pa.string()),
            "primary_tag": pa.array(np.array(CATEGORIES)[cat].tolist()),
            "other_tags": pa.ListArray.from_arrays(pa.array(np.concatenate([[0], np.cumsum(n_other)]).astype(np.int32)),
                                                   pa.array(other_flat, type=pa.string())),
            "model_name_classification": _const("meta-llama/Meta-Llama-3.1-8B-Instruct", n, pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(rng.normal(0, 0.03, n * EMBEDDING_DIM), EMBEDDING_DIM)
            .cast(pa.list_(pa.float64())),
            "model_name_embeddings": _const("Alibaba-NLP/gte-large-en-v1.5", n, pa.string()),
            "score": score, "score_base": score_base,
            "distilabel_metadata": pa.StructArray.from_arrays(
                [pa.array([tag_json[CATEGORIES[c]] for c in cat.tolist()])], names=["raw_output_assign_tags_0"]),
            "nn_indices": pa.FixedSizeListArray.from_arrays(rng.integers(0, ULTRA, 5 * n), 5).cast(pa.list_(pa.int64())),
            "nn_scores": pa.FixedSizeListArray.from_arrays(np.sort(rng.uniform(0.6, 0.95, (n, 5)))[:, ::-1].ravel(), 5)
            .cast(pa.list_(pa.float64())),
            "messages": _messages(schema.field("messages").type, [instr, response], ["user", "assistant"]),
            "guard": _const("\n\nsafe", n, pa.string()),
            "model_name_guard": _const("meta-llama/Llama-Guard-3-8B", n, pa.string()),
            "safe": _const(True, n, pa.bool_()), "hazard_category": _const(None, n, pa.string()),
            "score_difference": score - score_base,
        }
        return pa.table(cols)
    return schema, make


def write_ultra(out: Path, words: Words, scale: float, rng, bench_words) -> dict:
    n = round(ULTRA * scale)
    counters = {"contaminated": 0}
    schema, make = _ultra_group(words, bench_words, counters)
    files = {}
    for k in range(2):
        rows = n // 2 + (n % 2 if k == 0 else 0)
        name = f"data/train-0000{k}-of-00002.parquet"
        _write_groups(out / "magpie-ultra" / name, schema, rows, make, rng)
        files[name] = rows
    return {**files, "contaminated_instructions": counters["contaminated"]}


def _dpo_group(folder: str, words: Words, bench_words, counters: dict, contaminated_rate: float):
    import pyarrow as pa

    source, generator, input_generator, mu = DPO[folder]
    p_words, r_words = table1_words(source)
    schema = _schema(f"{folder}/data/train-00000-of-00001.parquet")
    prefix = "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n"
    suffix = "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"

    def make(rng, start, n):
        import pyarrow.compute as pc

        instr = words.strings(rng, lengths(rng, n, p_words, 1.5, 3))
        counters["contaminated"] += contaminate(rng, instr, contaminated_rate, bench_words)
        instr = pa.array(instr, type=pa.string())
        responses = words.arrow(rng, lengths(rng, 5 * n, r_words, 2.5, 5))
        scores = np.round(rng.normal(mu, 0.03, n)[:, None] + rng.normal(0, 0.015, (n, 5)), 6)
        best, worst = scores.argmax(1), scores.argmin(1)
        rows = np.arange(n) * 5
        chosen_text, rejected_text = responses.take(pa.array(rows + best)), responses.take(pa.array(rows + worst))
        gen_in = [_const(generator.replace("-Instruct", ""), n, pa.string())] if input_generator else []
        gen_in += [_const(1.0, n, pa.float64()), _const(1.0, n, pa.float64())]
        gen_resp = [
            _const("vllm", n, pa.string()), _const(4096, n, pa.int64()), _const(generator, n, pa.string()),
            pc.binary_join_element_wise(_const(prefix, n, pa.string()), instr, _const(suffix, n, pa.string()), ""),
            _const(1.0, n, pa.float64()),
            pa.ListArray.from_arrays(pa.array(np.arange(0, 2 * n + 1, 2, dtype=np.int32)),
                                     pa.array(["<|eot_id|>", "<|end_of_text|>"] * n)),
            _const(0.8, n, pa.float64()), _const(1.0, n, pa.float64()),
        ]
        cols = {
            "uuid": pa.array([str(uuid.UUID(bytes=bytes(r), version=4))
                              for r in rng.integers(0, 256, (n, 16), dtype=np.uint8)]),
            "instruction": instr,
            "gen_input_configs": pa.StructArray.from_arrays(gen_in, fields=list(schema.field("gen_input_configs").type)),
            "intent": words.arrow(rng, lengths(rng, n, 14, 4.0)), "knowledge": words.arrow(rng, lengths(rng, n, 16, 4.0)),
            "difficulty": _choice(rng, ("very easy", "easy", "medium", "hard", "very hard"), n),
            "input_quality": _choice(rng, ("very poor", "poor", "average", "good", "excellent"), n),
            "quality_explanation": words.arrow(rng, lengths(rng, n, 60, 4.0)),
            "task_category": pa.array(np.array(CATEGORIES)[rng.choice(len(CATEGORIES), n, p=DPO_SHARES)].tolist()),
            "input_length": pc.utf8_length(instr).cast(pa.int64()),
            "responses": pa.ListArray.from_arrays(pa.array(np.arange(0, 5 * n + 1, 5, dtype=np.int32)), responses),
            "gen_response_configs": pa.StructArray.from_arrays(
                gen_resp, fields=list(schema.field("gen_response_configs").type)),
            "rewards_armorm": pa.ListArray.from_arrays(
                pa.array(np.arange(0, 5 * n + 1, 5, dtype=np.int32)),
                pa.StructArray.from_arrays([pa.array(scores.ravel())], names=["score"])),
            "chosen": _messages(schema.field("chosen").type, [instr, chosen_text], ["user", "assistant"]),
            "rejected": _messages(schema.field("rejected").type, [instr, rejected_text], ["user", "assistant"]),
        }
        return pa.table(cols)
    return schema, make


def write_dpo(out: Path, folder: str, words: Words, scale: float, rng, bench_words) -> dict:
    counters = {"contaminated": 0}
    rate = PRO31_CONTAMINATED if DPO[folder][0] == "magpie_pro_llama3.1" else 0.0
    files = {}
    for split, rows in (("train", round(DPO_TRAIN * scale)), ("test", round(DPO_TEST * scale))):
        schema, make = _dpo_group(folder, words, bench_words, counters, rate if split == "train" else 0.0)
        name = f"data/{split}-00000-of-00001.parquet"
        _write_groups(out / folder / name, schema, rows, make, rng)
        files[name] = rows
    return {**files, "contaminated_instructions": counters["contaminated"]}


def write_benchmark(out: Path, rng) -> list[str]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from repro.eval.rewardbench import SUBSET_COUNTS

    bw = Words(SEED + 1000, stream_words=2_000_000)  # an independent stream: no planted overlap by chance
    n = sum(SUBSET_COUNTS.values())
    assert n == BENCH_PROMPTS
    prompts = bw.strings(rng, rng.integers(10, 201, n))
    subsets = [s for s, k in SUBSET_COUNTS.items() for _ in range(k)]
    models = ("gpt-4", "claude-3-opus", "Llama-2-70b-chat", "human", "tulu-2-dpo-70b")
    t = pa.table({
        "prompt": prompts, "chosen": bw.arrow(rng, lengths(rng, n, 200, 2.0, 3)),
        "chosen_model": _choice(rng, models, n), "rejected": bw.arrow(rng, lengths(rng, n, 200, 2.0, 3)),
        "rejected_model": _choice(rng, models, n), "subset": subsets, "id": np.arange(n, dtype=np.int64) + 30,
    })
    path = out / "reward-bench" / "data" / "filtered-00000-of-00001.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(t.cast(_schema("reward-bench/data/filtered-00000-of-00001.parquet")), path)
    return prompts


def make_data(out: Path, scale: float, seed: int = SEED) -> dict:
    """Write the synthetic pool at `scale` x the full size under `out`; returns what was written."""
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, int(round(scale * 1e6))])
    words = Words(seed)
    bench = write_benchmark(out, np.random.default_rng([seed, 99]))
    bench_words = [b.split(" ") for b in bench]
    info = {"scale": scale, "helpsteer2": write_helpsteer2(out, words, scale, rng),
            "offsetbias": write_offsetbias(out, words, scale, rng),
            "wildguardmix": write_wildguard(out, words, scale, rng),
            "magpie-ultra": write_ultra(out, words, scale, rng, bench_words)}
    for folder in DPO:
        info[folder] = write_dpo(out, folder, words, scale, rng, bench_words)
    info["reward-bench"] = {"data/filtered-00000-of-00001.parquet": len(bench)}
    info["candidate_pairs"] = (round(HS2_PROMPTS * scale) + round(OFFSETBIAS * scale) + round(WG_PAIRS * scale)
                               + round(ULTRA * scale) + 3 * round(DPO_TRAIN * scale))
    info["bytes_on_disk"] = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    info["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "pool.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


# ----------------------------------------------------------------------------------------------------------
# Measurement helpers (run in the child).

def _status() -> dict[str, float]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key = line.split(":", 1)[0]
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile", "RssShmem"):
            out[key] = int(line.split()[1]) / 1024
    return out


def _cpu_seconds() -> float:
    """User + system CPU time of this process (all its threads)."""
    t = os.times()
    return t.user + t.system


class Probe:
    """Inclusive wall time per named step (nested allowed) and RSS sampled every 20 ms, per innermost step."""

    def __init__(self, interval: float = 0.02):
        self.times: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.peak: dict[str, dict[str, float]] = {}
        self.marks: dict[str, dict[str, float]] = {}
        self.stack: list[str] = ["(outside steps)"]
        self.overall = {"VmRSS": 0.0, "RssAnon": 0.0, "RssFile": 0.0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.sample()

    def sample(self) -> None:
        s = _status()
        for path in set(self.stack):
            p = self.peak.setdefault(path, {})
            for k in ("VmRSS", "RssAnon", "RssFile"):
                p[k] = max(p.get(k, 0.0), s.get(k, 0.0))
        for k in self.overall:
            self.overall[k] = max(self.overall[k], s.get(k, 0.0))

    def wrap(self, name: str, fn):
        probe = self

        def timed(*a, **kw):
            probe.stack.append(name)
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                probe.times[name] = probe.times.get(name, 0.0) + time.perf_counter() - t0
                probe.calls[name] = probe.calls.get(name, 0) + 1
                probe.sample()
                probe.stack.pop()
        timed.__wrapped__ = fn
        return timed

    def mark(self, name: str) -> None:
        self.marks[name] = _status()

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        self.sample()
        return {"seconds": {k: round(v, 3) for k, v in self.times.items()}, "calls": self.calls,
                "rss_peak_mib_by_step": {k: {kk: round(vv) for kk, vv in v.items()} for k, v in self.peak.items()},
                "rss_peak_mib_sampled": {k: round(v) for k, v in self.overall.items()},
                "rss_marks_mib": {k: {kk: round(vv) for kk, vv in v.items()} for k, v in self.marks.items()}}


def recipe(data: Path):
    from repro.config import DataConfig, DecontamConfig, MagpieConfig, SourceConfig, WildGuardConfig

    def src(name, folder, **options):
        return SourceConfig(name=name, path=str(data / folder), split="train", options=options)

    return DataConfig(
        name="curation_speed",
        sources=[src("helpsteer2", "helpsteer2"), src("offsetbias", "offsetbias"),
                 src("wildguard", "wildguardmix", config="wildguardtrain"), src("magpie_ultra", "magpie-ultra"),
                 src("magpie_pro_llama3.1", "magpie-pro-llama3.1-dpo"), src("magpie_pro", "magpie-pro-dpo"),
                 src("magpie_air", "magpie-air-dpo")],
        duplicates="drop", magpie=MagpieConfig(), wildguard=WildGuardConfig(adversarial_only=True, stage2=False),
        decontamination=DecontamConfig(benchmark=str(data / "reward-bench"), split="filtered",
                                       remove_from=["magpie_ultra"], report=True),
        stats_tokenizer=None)


def child_repro(data: Path) -> dict:
    """Time `mixture.build(recipe)` with per-step wrappers (imports not timed)."""
    probe = Probe()
    import datasets
    import pyarrow as pa

    import repro.data.decontam as decontam
    import repro.data.hub as hub
    import repro.data.mixture as mixture
    import repro.data.select as select
    import repro.data.stats as stats
    from repro.data import sources
    from repro.data.sources import helpsteer2, magpie_ultra, offsetbias, rewardbench, wildguard

    cfg = recipe(data)
    current = {"source": None}
    load_dataset = datasets.load_dataset

    def load_dataset_timed(*a, **kw):
        name = f"load/{current['source']}/datasets.load_dataset"
        return probe.wrap(name, load_dataset)(*a, **kw)
    datasets.load_dataset = load_dataset_timed
    load_split = hub.load_split

    def load_split_timed(*a, **kw):
        return probe.wrap(f"load/{current['source']}/hub.load_split", load_split)(*a, **kw)
    for mod in (helpsteer2, offsetbias, wildguard, magpie_ultra, rewardbench):
        mod.load_split = load_split_timed
    for name, fn in list(sources.SOURCES.items()):
        def loader(*a, _fn=fn, _name=name, **kw):
            current["source"] = _name
            try:
                return probe.wrap(f"load/{_name}", _fn)(*a, **kw)
            finally:
                probe.mark(f"after load/{_name}")
        sources.SOURCES[name] = loader
    for name in ("_load_sources", "_magpie", "_wildguard", "_decontaminate", "_dedupe", "table_sha256",
                 "category_table", "code_version"):
        setattr(mixture, name, probe.wrap(name, getattr(mixture, name)))
    mixture._Ledger.record = probe.wrap("ledger.record", mixture._Ledger.record)
    select.select = probe.wrap("_magpie/select.select", select.select)
    select.drop = probe.wrap("ledger.drop (select.drop)", select.drop)
    stats.table1 = probe.wrap("stats.table1", stats.table1)
    bench = mixture._benchmark_prompts

    def bench_timed(*a, **kw):
        current["source"] = "rewardbench"
        return probe.wrap("_decontaminate/_benchmark_prompts", bench)(*a, **kw)
    mixture._benchmark_prompts = bench_timed
    for name in ("build_index", "prompts_from_messages", "report"):
        setattr(decontam, name, probe.wrap(f"_decontaminate/decontam.{name}", getattr(decontam, name)))
    decontam.NgramIndex.scan = probe.wrap("_decontaminate/index.scan", decontam.NgramIndex.scan)

    load_avg = os.getloadavg()
    rss_before = _status()
    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()
    table, manifest, side = mixture.build(cfg)
    seconds = time.perf_counter() - t0
    cpu = _cpu_seconds() - cpu0
    end = _status()
    prof = probe.stop()
    after_load = prof["rss_marks_mib"].get("after load/magpie_air", {})
    dec = manifest["decontamination"]
    return {
        "seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2),
        "pairs_in": sum(s["steps"]["paired"] for s in manifest["sources"]),
        "pairs_out": manifest["pairs"],
        "pairs_per_s": round(sum(s["steps"]["paired"] for s in manifest["sources"]) / seconds),
        "peak_rss_mib": round(end["VmHWM"]), "rss_before_mib": round(rss_before["VmRSS"]),
        "rss_after_loading_mib": after_load.get("VmRSS"), "rss_anon_after_loading_mib": after_load.get("RssAnon"),
        "rss_at_end_mib": {k: round(v) for k, v in end.items()},
        "steps_by_source": {s["label"]: s["steps"] for s in manifest["sources"]},
        "dropped_by_source": {s["label"]: s["dropped"] for s in manifest["sources"]},
        "magpie_categories": manifest["magpie"]["categories"], "wildguard": manifest["wildguard"],
        "contamination": {"scanned": dec["total"]["scanned"], "contaminated": dec["total"]["contaminated"],
                          "removed": dec["removed"],
                          "by_source": {e["source"]: e["contaminated"] for e in dec["sources"]},
                          "benchmark_rows_matched": dec["total"]["benchmark_rows_matched"]},
        "duplicates": manifest["duplicates"]["found"], "table1": manifest["table1"],
        "load_average_at_start": [round(x, 2) for x in load_avg],
        "hf_datasets_cache_bytes": sum(f.stat().st_size for f in Path(os.environ["HF_DATASETS_CACHE"]).rglob("*")
                                       if f.is_file()),
        "profile": prof, "pyarrow_threads": pa.cpu_count(),
    }


# ----------------------------------------------------------------------------------------------------------
# The pandas + scikit-learn pipeline.

def _hs2_user_text(prompt: str) -> str | None:
    """User turns of a NeMo-flattened HelpSteer2 prompt joined with "\\n" (None: malformed)."""
    first, *rest = prompt.split("<extra_id_1>")
    users = [first.strip()]
    for piece in rest:
        header, nl, content = piece.partition("\n")
        if not nl or header.strip() not in ("User", "Assistant"):
            return None
        if header.strip() == "User":
            users.append(content.strip())
    return "\n".join(users)


def child_pandas(data: Path) -> dict:
    probe = Probe()
    import pandas as pd
    from sklearn.feature_extraction.text import CountVectorizer

    def step(name):
        return lambda fn: probe.wrap(name, fn)

    load_avg = os.getloadavg()
    rss_before = _status()
    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()
    frames = []  # per source: DataFrame(prompt_text, prompt_key, chosen, rejected, category, raw)

    @step("load/helpsteer2")
    def hs2():
        df = pd.read_json(data / "helpsteer2" / "train.jsonl.gz", lines=True, compression="gzip")
        df = df[df["prompt"].map(type) == str]
        df = df[df.groupby("prompt", sort=False)["prompt"].transform("size") == 2]
        df = df.assign(k=df.groupby("prompt", sort=False).cumcount())
        a = df[df.k == 0].set_index("prompt")
        b = df[df.k == 1].set_index("prompt").loc[a.index]
        ok = a["helpfulness"].to_numpy() != b["helpfulness"].to_numpy()
        a, b = a[ok], b[ok]
        first = a["helpfulness"].to_numpy() > b["helpfulness"].to_numpy()
        text = a.index.to_series().map(_hs2_user_text)
        good = text.notna().to_numpy()
        return pd.DataFrame({"prompt_text": text.to_numpy()[good], "prompt_key": a.index.to_numpy()[good],
                             "chosen": np.where(first, a["response"], b["response"])[good],
                             "rejected": np.where(first, b["response"], a["response"])[good]})

    @step("load/offsetbias")
    def offsetbias():
        df = pd.read_json(data / "offsetbias" / "train.jsonl", lines=True)
        df = df[df["label"].isin([1, 2])]
        one = (df["label"] == 1).to_numpy()
        return pd.DataFrame({"prompt_text": df["instruction"].to_numpy(), "prompt_key": df["instruction"].to_numpy(),
                             "chosen": np.where(one, df["output_1"], df["output_2"]),
                             "rejected": np.where(one, df["output_2"], df["output_1"])})

    @step("load/wildguard (pairs + stage 1)")
    def wildguard():
        df = pd.read_parquet(data / "wildguardmix" / "train" / "wildguard_train.parquet",
                             columns=["prompt", "adversarial", "response", "prompt_harm_label", "response_refusal_label"])
        df = df[df["prompt"].notna() & df["response"].notna()
                & df["response_refusal_label"].isin(["refusal", "compliance"])]
        g = df.groupby("prompt", sort=False)
        agree = (g["prompt_harm_label"].transform("nunique", dropna=False) == 1) & \
                (g["adversarial"].transform("nunique", dropna=False) == 1) & \
                df["prompt_harm_label"].isin(["harmful", "unharmful"]) & df["adversarial"].notna()
        df = df[agree].drop_duplicates(["prompt", "response_refusal_label"])
        ref = df[df["response_refusal_label"] == "refusal"].set_index("prompt")
        com = df[df["response_refusal_label"] == "compliance"].set_index("prompt")
        p = ref.merge(com[["response"]], how="inner", left_index=True, right_index=True, suffixes=("", "_c"))
        pairs = len(p)
        p = p[p["adversarial"].astype(bool)]  # stage 1
        harmful = (p["prompt_harm_label"] == "harmful").to_numpy()
        out = pd.DataFrame({"prompt_text": p.index.to_numpy(), "prompt_key": p.index.to_numpy(),
                            "chosen": np.where(harmful, p["response"], p["response_c"]),
                            "rejected": np.where(harmful, p["response_c"], p["response"])})
        return out, pairs

    @step("load/magpie_ultra")
    def ultra():
        df = pd.concat([pd.read_parquet(f, columns=["instruction", "response", "response_base", "primary_tag", "score",
                                                    "score_base", "score_difference"])
                        for f in sorted((data / "magpie-ultra" / "data").glob("train-*.parquet"))], ignore_index=True)
        df = df[df["primary_tag"].notna() & df["score"].notna() & df["score_base"].notna()
                & df["score_difference"].notna() & (df["score_difference"] != 0)]
        pos = (df["score_difference"] > 0).to_numpy()
        return pd.DataFrame({"prompt_text": df["instruction"].to_numpy(), "prompt_key": df["instruction"].to_numpy(),
                             "chosen": np.where(pos, df["response"], df["response_base"]),
                             "rejected": np.where(pos, df["response_base"], df["response"]),
                             "category": df["primary_tag"].replace({"Other": "Others"}).to_numpy(),
                             "raw": ((df["score"] + df["score_base"]) / 2).to_numpy()})

    def dpo(folder):
        @step(f"load/{DPO[folder][0]}")
        def load():
            df = pd.read_parquet(data / folder / "data" / "train-00000-of-00001.parquet",
                                 columns=["task_category", "rewards_armorm", "chosen", "rejected"])
            raw = df["rewards_armorm"].explode().str.get("score").astype(float).groupby(level=0).mean()
            prompt = df["chosen"].str.get(0).str.get("content")
            return pd.DataFrame({"prompt_text": prompt.to_numpy(), "prompt_key": prompt.to_numpy(),
                                 "chosen": df["chosen"].str.get(-1).str.get("content").to_numpy(),
                                 "rejected": df["rejected"].str.get(-1).str.get("content").to_numpy(),
                                 "category": df["task_category"].replace({"Other": "Others"}).to_numpy(),
                                 "raw": raw.to_numpy()})
        return load()

    names = ["helpsteer2", "offsetbias", "wildguard", "magpie_ultra", "magpie_pro_llama3.1", "magpie_pro", "magpie_air"]
    wg, wg_pairs = wildguard()
    frames = [hs2(), offsetbias(), wg, ultra()] + [dpo(f) for f in DPO]
    paired = {n: len(f) for n, f in zip(names, frames)}
    paired["wildguard"] = wg_pairs
    probe.mark("after loading")

    @step("magpie selection")
    def magpie():
        offsets = {"magpie_air": -0.1, "magpie_pro": -0.05}
        pool = pd.concat([f.assign(source=n, adj=f["raw"] + offsets.get(n, 0.0))
                          for n, f in zip(names, frames) if n.startswith("magpie")], ignore_index=True)
        rank = pool.groupby("category")["adj"].rank(method="first", ascending=False)
        size = pool.groupby("category")["adj"].transform("size")
        frac = pool["category"].map({"Math": 0.3, "Coding & Debugging": 0.3}).fillna(0.1)
        k = np.floor(np.round(frac * size, 9))
        return pool[(rank <= k).to_numpy()]
    kept = magpie()
    selected = {n: int((kept["source"] == n).sum()) for n in names if n.startswith("magpie")}
    table = pd.concat([f.assign(source=n) for n, f in zip(names, frames) if not n.startswith("magpie")] + [kept],
                      ignore_index=True)[["source", "prompt_text", "prompt_key", "chosen", "rejected"]]
    del frames, kept

    bench = pd.read_parquet(data / "reward-bench" / "data" / "filtered-00000-of-00001.parquet",
                            columns=["prompt"])["prompt"].tolist()

    @step("decontamination (CountVectorizer 7-13)")
    def decontaminate():
        cv = probe.wrap("decontamination/fit benchmark", CountVectorizer(ngram_range=(7, 13)).fit)(bench)
        xb = probe.wrap("decontamination/transform benchmark", cv.transform)(bench)
        xt = probe.wrap("decontamination/transform training prompts", cv.transform)(table["prompt_text"].tolist())
        overlap = (xt @ xb.T).tocsr()
        return np.diff(overlap.indptr) > 0
    flagged = decontaminate()
    by_source = table.assign(f=flagged).groupby("source", sort=False)["f"].sum()
    remove = flagged & (table["source"] == "magpie_ultra").to_numpy()
    table = table[~remove]

    @step("duplicates")
    def dedupe():
        return table.duplicated(subset=["prompt_key", "chosen", "rejected"]).to_numpy()
    dup = dedupe()
    table = table[~dup]
    seconds = time.perf_counter() - t0
    cpu = _cpu_seconds() - cpu0
    end = _status()
    prof = probe.stop()
    return {"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "pairs_in": sum(paired.values()),
            "pairs_out": len(table),
            "pairs_per_s": round(sum(paired.values()) / seconds),
            "peak_rss_mib": round(end["VmHWM"]), "rss_before_mib": round(rss_before["VmRSS"]),
            "rss_after_loading_mib": prof["rss_marks_mib"]["after loading"].get("VmRSS"),
            "paired": paired, "magpie_selected": selected,
            "kept": {n: int((table["source"] == n).sum()) for n in names},
            "contamination": {"scanned": int(len(flagged)), "contaminated": int(flagged.sum()),
                              "removed": int(remove.sum()), "by_source": {k: int(v) for k, v in by_source.items()}},
            "duplicates": int(dup.sum()), "load_average_at_start": [round(x, 2) for x in load_avg], "profile": prof}


# ----------------------------------------------------------------------------------------------------------
# Driver.

def run_child(method: str, data: Path, cache: Path) -> dict:
    env = {**os.environ, "HF_DATASETS_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_DATASETS_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", method, str(data)], capture_output=True, text=True,
                          env=env)
    if proc.returncode:
        raise SystemExit(f"{method} on {data} failed:\n{proc.stderr[-5000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_seconds"] = round(time.perf_counter() - t0, 2)
    return out


def compare(lib: dict, pd_: dict) -> dict:
    kept_lib = {k: v["kept"] for k, v in lib["steps_by_source"].items()}
    sel_lib = {k: v["selected"] for k, v in lib["steps_by_source"].items() if k.startswith("magpie")}
    return {"same_kept_per_source": kept_lib == pd_["kept"], "same_magpie_selected": sel_lib == pd_["magpie_selected"],
            "same_contaminated": lib["contamination"]["contaminated"] == pd_["contamination"]["contaminated"],
            "same_contaminated_by_source": lib["contamination"]["by_source"] == pd_["contamination"]["by_source"],
            "same_removed": lib["contamination"]["removed"] == pd_["contamination"]["removed"],
            "kept_repro": kept_lib, "kept_pandas": pd_["kept"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--make-data", type=Path, metavar="DIR", help="only write a synthetic pool to DIR")
    ap.add_argument("--scale", type=float, default=1.0, help="with --make-data: fraction of the full pool")
    ap.add_argument("--scales", default="0.25,0.5,1.0")
    ap.add_argument("--pandas-max", type=float, default=1.0, help="largest scale the pandas pipeline is run at")
    ap.add_argument("--data-root", type=Path, default=Path(tempfile.gettempdir()) / "curation_speed")
    ap.add_argument("--keep-data", action="store_true", help="keep the pools and caches under --data-root")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "curation_speed.json")
    ap.add_argument("--child", nargs=2, metavar=("METHOD", "DATA"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        method, data = args.child
        print(json.dumps(child_repro(Path(data)) if method == "repro" else child_pandas(Path(data))))
        return
    if args.make_data:
        print(json.dumps(make_data(args.make_data, args.scale), indent=2))
        return

    results = []
    for scale in [float(s) for s in args.scales.split(",")]:
        data = args.data_root / f"pool-{scale:g}"
        if (data / "pool.json").is_file():
            pool = json.loads((data / "pool.json").read_text())
        else:
            shutil.rmtree(data, ignore_errors=True)
            pool = make_data(data, scale)
        print(f"scale {scale:g}: {pool['candidate_pairs']} candidate pairs, {pool['bytes_on_disk'] / 2**30:.2f} GiB "
              f"on disk (generated in {pool['seconds']} s)", flush=True)
        row = {"scale": scale, "pool": pool}
        cache = args.data_root / f"hf-cache-{scale:g}"
        shutil.rmtree(cache, ignore_errors=True)
        cache.mkdir(parents=True)
        for mode in ("cold", "warm"):
            row[f"repro_{mode}"] = r = run_child("repro", data, cache)
            print(f"  repro {mode}: {r['seconds']} s ({r['cpu_seconds']} s CPU), peak RSS {r['peak_rss_mib']} MiB, {r['pairs_in']} -> "
                  f"{r['pairs_out']} pairs", flush=True)
        if scale <= args.pandas_max:
            row["pandas"] = r = run_child("pandas", data, cache)
            print(f"  pandas: {r['seconds']} s ({r['cpu_seconds']} s CPU), peak RSS {r['peak_rss_mib']} MiB, {r['pairs_in']} -> "
                  f"{r['pairs_out']} pairs", flush=True)
            row["check"] = compare(row["repro_warm"], r)
            print("  check:", {k: v for k, v in row["check"].items() if k.startswith("same")}, flush=True)
        results.append(row)
        if not args.keep_data:
            shutil.rmtree(cache, ignore_errors=True)
            shutil.rmtree(data, ignore_errors=True)

    import datasets
    import pandas as pd
    import pyarrow as pa
    import sklearn

    from repro.results import env_info

    try:
        import torch
        torch_version = torch.__version__
    except ImportError:
        torch_version = None
    cmd = "nice -n 10 python benchmarks/curation_speed.py"
    for flag in ("scales", "pandas_max"):
        if getattr(args, flag) != ap.get_default(flag):
            cmd += f" --{flag.replace('_', '-')} {getattr(args, flag)}"
    record = {
        "command": cmd,
        "goal": "<= 60 s wall and <= 4 GiB peak RSS for the full 378K pool on the 2-core machine, linear in the pool",
        "setup": {"pool_full": POOL, "benchmark_prompts": BENCH_PROMPTS, "table1_tokens": TABLE1_TOKENS,
                  "words_per_token": WORDS_PER_TOKEN, "ultra_contaminated_rate": ULTRA_CONTAMINATED,
                  "pro31_contaminated_rate": PRO31_CONTAMINATED, "embedding_dim": EMBEDDING_DIM,
                  "category_shares": {"magpie_ultra": dict(zip(CATEGORIES, ULTRA_SHARES)),
                                      "dpo_sets": dict(zip(CATEGORIES, DPO_SHARES))},
                  "recipe": "7 sources, Magpie selection (paper defaults), WildGuard stage 1 on / stage 2 off, "
                            "decontamination (filtered, 7-13-grams) removing from magpie_ultra, duplicates dropped"},
        "versions": {"datasets": datasets.__version__, "pyarrow": pa.__version__, "pandas": pd.__version__,
                     "scikit-learn": sklearn.__version__, "numpy": np.__version__, "torch": torch_version},
        "cpu_count": os.cpu_count(), "env": env_info(), "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
