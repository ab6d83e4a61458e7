"""N-gram decontamination speed: repro.data.decontam vs scikit-learn CountVectorizer, same data, same answer.

    python benchmarks/decontam_speed.py [--sizes 94568,189137,378273] [--sklearn-max 378273]
                                        [--out benchmarks/results/decontam_speed.json]

Data (synthetic, deterministic, seed 0): a pool of training prompts of 50-150 words drawn from a
30,000-word vocabulary with Zipf(1.1) frequencies, with commas, full stops, capitals and ~5% of rows with
non-ASCII text (curly quotes, dashes, accented words); 5% of the rows carry a planted phrase of 7-20
consecutive words copied from a benchmark prompt (contaminated), 2% a phrase of exactly 6 words (not
contaminated unless by chance). Benchmark: 2,985 prompts (RewardBench `filtered`'s row count) of 10-200
words from the same vocabulary. Sizes: 1/4, 1/2 and all of the paper's 378,273-pair pool.

Methods, each timed in its own fresh process (peak RSS: that process's VmHWM, data loading included; and
its RSS just before the timed part, with the data loaded):
  repro    `build_index(bench)` + `index.scan(train)` on Arrow string arrays (mask + matched pairs)
  sklearn  `CountVectorizer(ngram_range=(7, 13)).fit(bench)`, `transform` of both, sparse product
           `X_train @ X_bench.T`; contaminated = rows with a non-zero (the RewardBench maintainers' script)
Timed: from the Arrow array / Python list in memory to the boolean mask (data generation and loading
excluded). The driver checks both methods flag the same rows wherever both ran.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

FULL = 378_273
BENCH = 2_985


def rss_mib(field: str = "VmHWM") -> float:
    """This process's peak (VmHWM) or current (VmRSS) resident memory, MiB. Read from /proc: `getrusage`'s
    ru_maxrss survives exec on Linux, so a child would report its parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def vocabulary(size: int, rng: np.random.Generator) -> np.ndarray:
    """Distinct pseudo-words of 1-4 syllables."""
    onsets = ["", "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "z",
              "ch", "sh", "th", "st", "tr", "pl", "gr"]
    vowels = ["a", "e", "i", "o", "u", "ai", "ou", "ea"]
    codas = ["", "", "n", "r", "s", "t", "l", "nd", "st"]
    words: dict[str, None] = {}
    while len(words) < size:
        k = int(rng.integers(1, 5))
        w = "".join(onsets[rng.integers(len(onsets))] + vowels[rng.integers(len(vowels))]
                    + codas[rng.integers(len(codas))] for _ in range(k))
        if len(w) >= 2:
            words[w] = None
    return np.array(list(words), dtype=object)


def make_data(n_train: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """(training prompts, benchmark prompts); the first n rows of a size-N pool equal the smaller pools'."""
    rng = np.random.default_rng(seed)
    vocab = vocabulary(30_000, rng)
    p = 1.0 / np.arange(1, len(vocab) + 1) ** 1.1
    cdf = np.cumsum(p / p.sum())
    cdf[-1] = 1.0

    def text(n_words: int, r: np.random.Generator) -> list[str]:
        words = vocab[np.searchsorted(cdf, r.random(n_words), side="right")].tolist()
        for i in np.flatnonzero(r.random(n_words) < 0.08):
            words[i] += "," if r.random() < 0.6 else "."
        if words:
            words[0] = words[0].capitalize()
        return words

    brng = np.random.default_rng(seed + 1)
    bench = [" ".join(text(int(brng.integers(10, 201)), brng)) for _ in range(BENCH)]
    bench_words = [b.split() for b in bench]
    train = []
    for i in range(n_train):
        r = np.random.default_rng([seed, i])  # row i is the same at every pool size
        words = text(int(r.integers(50, 151)), r)
        u = r.random()
        if u < 0.05:  # contaminated: 7-20 consecutive benchmark words, punctuation and case as written there
            b = bench_words[int(r.integers(BENCH))]
            k = min(int(r.integers(7, 21)), len(b))
            s = int(r.integers(0, len(b) - k + 1))
            at = int(r.integers(0, len(words) + 1))
            words[at:at] = b[s:s + k]
        elif u < 0.05 + 0.02:  # a near miss: only 6 benchmark words
            b = bench_words[int(r.integers(BENCH))]
            s = int(r.integers(0, len(b) - 5))
            at = int(r.integers(0, len(words) + 1))
            words[at:at] = b[s:s + 6]
        if r.random() < 0.05:  # non-ASCII text: Python's own tokenisation path
            words.insert(int(r.integers(0, len(words) + 1)), ["\u201cnaïve\u201d", "café\u2014", "Straße", "ΟΔΟΣ"][i % 4])
        train.append(" ".join(words))
    return train, bench


def run_repro(train_arr, bench_arr) -> np.ndarray:
    from repro.data.decontam import build_index

    return build_index(bench_arr).scan(train_arr).mask


def run_sklearn(train: list[str], bench: list[str]) -> np.ndarray:
    from sklearn.feature_extraction.text import CountVectorizer

    cv = CountVectorizer(ngram_range=(7, 13)).fit(bench)
    overlap = cv.transform(train) @ cv.transform(bench).T
    return np.diff(overlap.tocsr().indptr) > 0


def child(method: str, data: Path, out: Path) -> dict:
    """One timed run in this (fresh) process; the flagged row indices go to `out` (.npy)."""
    import pyarrow.parquet as pq

    train_arr = pq.read_table(data / "train.parquet").column("prompt")
    bench_arr = pq.read_table(data / "bench.parquet").column("prompt")
    if method == "sklearn":
        import sklearn.feature_extraction.text  # noqa: F401 - imports are not timed
        train, bench = train_arr.to_pylist(), bench_arr.to_pylist()
        del train_arr, bench_arr
    else:
        import repro.data.decontam  # noqa: F401
    rss_before = rss_mib("VmRSS")
    t0 = time.perf_counter()
    mask = run_repro(train_arr, bench_arr) if method == "repro" else run_sklearn(train, bench)
    seconds = time.perf_counter() - t0
    np.save(out, np.flatnonzero(mask))
    return {"seconds": seconds, "rows": int(len(mask)), "flagged": int(mask.sum()),
            "peak_rss_mib": rss_mib("VmHWM"), "rss_before_timed_part_mib": rss_before}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=f"{FULL // 4},{FULL // 2},{FULL}")
    ap.add_argument("--sklearn-max", type=int, default=FULL, help="largest size scikit-learn is run at")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "decontam_speed.json")
    ap.add_argument("--child", nargs=3, metavar=("METHOD", "DATA", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        method, data, out = args.child
        print(json.dumps(child(method, Path(data), Path(out))))
        return
    import pyarrow as pa
    import pyarrow.parquet as pq

    sizes = [int(s) for s in args.sizes.split(",")]
    t0 = time.perf_counter()
    train, bench = make_data(max(sizes))
    print(f"generated {len(train)} training and {len(bench)} benchmark prompts in {time.perf_counter() - t0:.0f} s",
          flush=True)
    words = np.array([len(t.split()) for t in train])
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            data = Path(tmp) / f"n{size}"
            data.mkdir()
            pq.write_table(pa.table({"prompt": pa.array(train[:size])}), data / "train.parquet")
            pq.write_table(pa.table({"prompt": pa.array(bench)}), data / "bench.parquet")
            row = {"train_prompts": size, "benchmark_prompts": len(bench)}
            flagged = {}
            for method in ("repro", "sklearn"):
                if method == "sklearn" and size > args.sklearn_max:
                    row[method] = None
                    continue
                out = data / f"{method}.npy"
                proc = subprocess.run([sys.executable, __file__, "--child", method, str(data), str(out)],
                                      capture_output=True, text=True)
                if proc.returncode:
                    raise SystemExit(f"{method} at {size} failed:\n{proc.stderr[-3000:]}")
                row[method] = json.loads(proc.stdout.strip().splitlines()[-1])
                flagged[method] = np.load(out)
                print(size, method, row[method], flush=True)
            if len(flagged) == 2:
                row["same_flagged_rows"] = bool(np.array_equal(flagged["repro"], flagged["sklearn"]))
                row["speedup"] = row["sklearn"]["seconds"] / row["repro"]["seconds"]
                if not row["same_flagged_rows"]:
                    raise SystemExit(f"repro and sklearn flag different rows at size {size}")
            results.append(row)
    from repro.results import env_info
    import sklearn

    record = {
        "command": "python benchmarks/decontam_speed.py" + (f" --sizes {args.sizes}" if args.sizes != ap.get_default("sizes") else "")
                   + (f" --sklearn-max {args.sklearn_max}" if args.sklearn_max != FULL else ""),
        "setup": {"benchmark_prompts": len(bench), "vocabulary": 30_000, "zipf": 1.1,
                  "train_words_per_prompt": {"min": int(words.min()), "median": float(np.median(words)),
                                             "max": int(words.max())},
                  "train_bytes_full": int(sum(len(t.encode()) for t in train)),
                  "planted": "5% with 7-20 benchmark words, 2% with 6 words, 5% non-ASCII rows"},
        "sklearn_version": sklearn.__version__, "pyarrow_version": pa.__version__, "numpy_version": np.__version__,
        "env": env_info(), "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print("wrote", args.out)


if __name__ == "__main__":
    main()
