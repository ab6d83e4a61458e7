"""Tokenising the training set: the token cache (tokenise once, memory-map on every rank) vs the list path.

    nice -n 10 python benchmarks/tokenize_cache.py [--scales 80000,700000] [--list-max 80000]
                                                   [--work /tmp/tokenize_cache] [--keep]
                                                   [--out benchmarks/results/tokenize_cache.json]

Data (synthetic, deterministic, numpy seed 0; generating it is not timed): curated pairs in
`PAIR_SCHEMA`, written as curation writes them (`repro.data.mixture.write_pairs`: one parquet file, one
row group below 1Mi rows), at 80K and 700K pairs, with Table 1's mix (pairs per source, average prompt and
response tokens: `../shared/docs/paper/table1_composition.csv`): prompt tokens gamma-distributed with
shape 1.5, chosen and rejected responses independently with shape 2.5 (the shapes of
`curation_speed.py`'s pool), HelpSteer2 prompts of 1, 3 or 5 messages (mean 2.9); text from
`curation_speed.Words` (a 30,000-word Zipf vocabulary with punctuation and a few non-ASCII words), with
as many words per text as the tokenizer needs for the target tokens (words per token measured on held-out
text). Tokenizer: the tiny backbone's byte-level BPE (`repro.model.build_tiny_tokenizer`, a fast
tokenizer with the Llama-3-style chat template) trained on 2M words of the same stream with a 32,000-token
vocabulary (~3.9 characters a token, near Llama's); `max_length` 4,096, as the paper presets.

Each measurement is a fresh process; RSS comes from /proc/self/status (VmHWM = peak; RssAnon = the
process's private memory; RssFile = file pages mapped, i.e. the memory-mapped token cache, which the
page cache shares between all processes of a machine), sampled every 20 ms by a thread. `baseline` is
the process after importing torch/transformers and loading the tokenizer, before any data.
- `list`: today's path (the code before the token cache): `pq.read_table(...).to_pylist()`, then
  `tokenize_pairs` (one pair at a time) into lists of ints, then the lengths list. Every rank did this.
  Run up to `--list-max` pairs (at 700K it would need ~46 GiB per rank, more than this 24 GiB machine has).
- `rank0`: `tokenized_pairs(write=True)`: render and encode a batch of 1,024 pairs at a time from the
  parquet file, write `tokens.arrow` (int32), memory-map it, lengths from its length column.
- `rank1`, started at the same moment: waits (polls for the cache's `meta.json`, as the other ranks
  wait in `accelerator.main_process_first()`), then `tokenized_pairs(write=False)`: opens and
  memory-maps. Its time after the cache appears is what a second rank adds.
- `rerun`: `tokenized_pairs(write=True)` again, as a second run on the same data: reuses the cache.
Then each process pads every micro-batch of one epoch (8 pairs, the engine's length-grouped order)
with `PairCollator`, to show memory once training has touched every token.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

TABLE1 = {  # source -> (pairs in the 80K set, avg prompt tokens, avg response tokens): Table 1
    "helpsteer2": (7_221, 21.3, 690.0), "offsetbias": (8_504, 69.1, 222.1), "wildguard": (6_709, 164.3, 349.9),
    "magpie_ultra": (27_785, 76.7, 670.0), "magpie_pro": (2_030, 34.2, 621.5),
    "magpie_pro_llama3.1": (29_682, 118.8, 584.3), "magpie_air": (42, 66.6, 240.0),
}
PROMPT_SHAPE, RESPONSE_SHAPE = 1.5, 2.5
HS2_PROMPT_MESSAGES = ((1, 3, 5), (0.3, 0.45, 0.25))
VOCAB_SIZE, TOKENIZER_WORDS = 32_000, 2_000_000
MAX_LENGTH, MICRO_BATCH = 4096, 8
MIB = 1024 * 1024


def status() -> dict:
    """VmRSS, VmHWM, RssAnon, RssFile of this process, in bytes."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0]) * 1024
    return out


class Sampler(threading.Thread):
    """Max of RssAnon and VmRSS every 20 ms (the kernel keeps the peak of VmRSS only)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.max_anon, self.max_rss, self.stop = 0, 0, False

    def run(self):
        while not self.stop:
            s = status()
            self.max_anon, self.max_rss = max(self.max_anon, s["RssAnon"]), max(self.max_rss, s["VmRSS"])
            time.sleep(0.02)

    def snapshot(self) -> dict:
        s = status()
        return {"rss_mib": s["VmRSS"] / MIB, "peak_rss_mib": s["VmHWM"] / MIB, "anon_mib": s["RssAnon"] / MIB,
                "file_mib": s["RssFile"] / MIB, "peak_anon_mib": max(self.max_anon, s["RssAnon"]) / MIB}


# --------------------------------------------------------------------------------------------------------
# Data (not timed)

def make_data(folder: Path, n_pairs: int, seed: int = 0) -> dict:
    import pyarrow as pa

    from curation_speed import Words
    from repro.data.mixture import write_pairs
    from repro.data.schema import MESSAGE, PAIR_SCHEMA
    from repro.model import build_tiny_tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    words = Words(seed, stream_words=4_000_000)
    tok_dir = folder / "tokenizer"
    if not (tok_dir / "tokenizer.json").is_file():
        sample = words.strings(np.random.default_rng(1), np.full(TOKENIZER_WORDS // 500, 500))
        build_tiny_tokenizer(sample, vocab_size=VOCAB_SIZE).save_pretrained(tok_dir)
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(tok_dir)
    held_out = words.strings(np.random.default_rng(2), np.full(400, 500))
    words_per_token = 400 * 500 / sum(map(len, tok(held_out, add_special_tokens=False)["input_ids"]))

    rng = np.random.default_rng(seed)
    names = list(TABLE1)
    share = np.array([TABLE1[k][0] for k in names], dtype=float)
    src = rng.choice(len(names), n_pairs, p=share / share.sum())
    p_mean, r_mean = (np.array([TABLE1[k][i] for k in names])[src] for i in (1, 2))
    prompt_tokens = rng.gamma(PROMPT_SHAPE, p_mean / PROMPT_SHAPE)
    chosen_tokens, rejected_tokens = (rng.gamma(RESPONSE_SHAPE, r_mean / RESPONSE_SHAPE) for _ in (0, 1))
    n_msgs = np.where(src == names.index("helpsteer2"),
                      rng.choice(HS2_PROMPT_MESSAGES[0], n_pairs, p=HS2_PROMPT_MESSAGES[1]), 1)

    def n_words(tokens):
        return np.maximum(np.rint(tokens * words_per_token), 1).astype(np.int64)

    chunks, step = [], 50_000
    for a in range(0, n_pairs, step):
        b = min(a + step, n_pairs)
        m = n_msgs[a:b]
        per_msg = np.repeat(np.maximum(prompt_tokens[a:b] / m, 1), m)
        roles = np.concatenate([np.array(["user", "assistant"])[np.arange(k) % 2] for k in m]).tolist()
        messages = pa.StructArray.from_arrays([pa.array(roles, pa.string()), words.arrow(rng, n_words(per_msg))],
                                              fields=list(MESSAGE))
        offsets = np.concatenate([[0], np.cumsum(m)]).astype(np.int32)
        n = b - a
        none = pa.nulls(n)
        chunks.append(pa.table({
            "id": pa.array([f"synthetic:train:{i}" for i in range(a, b)]),
            "source": pa.array(np.array(names)[src[a:b]].tolist()),
            "prompt": pa.ListArray.from_arrays(pa.array(offsets), messages),
            "chosen": words.arrow(rng, n_words(chosen_tokens[a:b])),
            "rejected": words.arrow(rng, n_words(rejected_tokens[a:b])),
            "category": none.cast(pa.string()), "score": none.cast(pa.float64()),
            "scores": none.cast(pa.list_(pa.float64())), "adversarial": none.cast(pa.bool_()),
        }).cast(PAIR_SCHEMA))
    table = pa.concat_tables(chunks)
    del chunks
    path = folder / "pairs.parquet"
    write_pairs(path, table)
    del table
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    info = {"pairs": n_pairs, "sha256": h.hexdigest(), "parquet_mib": path.stat().st_size / MIB,
            "words_per_token": words_per_token, "vocab_size": VOCAB_SIZE,
            "target_mean_tokens": {"prompt": float(prompt_tokens.mean()), "chosen": float(chosen_tokens.mean()),
                                   "rejected": float(rejected_tokens.mean())},
            "sources": {k: int((src == i).sum()) for i, k in enumerate(names)},
            "prompt_messages_mean": float(n_msgs.mean())}
    (folder / "data.json").write_text(json.dumps(info, indent=1))
    return info


# --------------------------------------------------------------------------------------------------------
# One measurement (a fresh process)

def epoch_pass(collate, lengths, take) -> float:
    """Pad every micro-batch of one epoch, in the engine's order; returns seconds."""
    from repro.data.batching import length_grouped_order

    order = length_grouped_order(lengths, MICRO_BATCH, seed=0)
    t0 = time.perf_counter()
    for k in range(0, len(order) - MICRO_BATCH + 1, MICRO_BATCH):
        collate(take(order[k: k + MICRO_BATCH]))
    return time.perf_counter() - t0


def role(name: str, data: Path, cache: Path) -> dict:
    import torch  # noqa: F401 - a training rank has torch loaded
    from transformers import PreTrainedTokenizerFast

    from repro.data.batching import PairCollator
    from repro.data.tokenize import token_cache_key, tokenize_pairs, tokenized_pairs

    tok = PreTrainedTokenizerFast.from_pretrained(data / "tokenizer")
    info = json.loads((data / "data.json").read_text())
    sampler = Sampler()
    sampler.start()
    out = {"role": name, "pid": os.getpid(), "loadavg_start": os.getloadavg()[0], "baseline": sampler.snapshot()}
    collate = PairCollator(tok.pad_token_id)
    path = data / "pairs.parquet"
    if name == "rank1":
        ready = cache / token_cache_key(info["sha256"], tok, MAX_LENGTH) / "meta.json"
        t0 = time.perf_counter()
        while not ready.is_file():
            time.sleep(0.2)
        out["waited_seconds"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    if name == "list":
        import pyarrow.parquet as pq

        pairs = pq.read_table(path).to_pylist()
        out["after_read"] = sampler.snapshot()
        examples, drops = tokenize_pairs(tok, pairs, MAX_LENGTH)
        del pairs
        lengths = [max(len(e["chosen_ids"]), len(e["rejected_ids"])) for e in examples]
        out.update(seconds_to_ready=time.perf_counter() - t0, pairs=len(examples), dropped=dict(drops))
        out["ready"] = sampler.snapshot()
        out["epoch_pass_seconds"] = epoch_pass(collate, lengths, lambda idx: [examples[i] for i in idx])
    else:
        data_ = tokenized_pairs(tok, path, MAX_LENGTH, data_sha256=info["sha256"], cache_root=cache,
                                write=name != "rank1")
        lengths = data_.lengths
        out.update(seconds_to_ready=time.perf_counter() - t0, pairs=len(data_), dropped=dict(data_.dropped),
                   reused=data_.reused)
        out["ready"] = sampler.snapshot()
        meta = json.loads((data_.folder / "meta.json").read_text())
        out["cache"] = {"tokens": meta["tokens"], "mib": (data_.folder / "tokens.arrow").stat().st_size / MIB,
                        "write_seconds": meta["seconds"]}
        out["epoch_pass_seconds"] = epoch_pass(collate, lengths, data_.take)
    out["after_epoch"] = sampler.snapshot()
    out["loadavg_end"] = os.getloadavg()[0]
    sampler.stop = True
    return out


def run_role(name: str, data: Path, cache: Path, nice: int) -> subprocess.Popen:
    return subprocess.Popen(["nice", "-n", str(nice), sys.executable, __file__, "--role", name, "--data", str(data),
                             "--cache", str(cache)], stdout=subprocess.PIPE, text=True)


def result(proc: subprocess.Popen) -> dict:
    stdout, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"a measurement failed (exit {proc.returncode})")
    return json.loads(stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scales", default="80000,700000")
    ap.add_argument("--list-max", type=int, default=80_000, help="largest scale for the list path")
    ap.add_argument("--work", type=Path, default=Path("/tmp/tokenize_cache"))
    ap.add_argument("--keep", action="store_true", help="keep the data and caches")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "tokenize_cache.json")
    ap.add_argument("--make-data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--pairs", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--role", choices=["list", "rank0", "rank1", "rerun"], help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.make_data:
        print(json.dumps(make_data(args.make_data, args.pairs)))
        return
    if args.role:
        print(json.dumps(role(args.role, args.data, args.cache)))
        return
    from repro.results import env_info

    runs = []
    for n in (int(s) for s in args.scales.split(",")):
        data, cache = args.work / f"pairs_{n}", args.work / f"pairs_{n}" / "tokenized"
        shutil.rmtree(cache, ignore_errors=True)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--make-data", str(data), "--pairs", str(n)], check=True,
                       stdout=subprocess.DEVNULL)
        entry = {"pairs": n, "data": json.loads((data / "data.json").read_text()),
                 "data_seconds": time.perf_counter() - t0}
        print(f"{n} pairs: data written in {entry['data_seconds']:.0f} s", file=sys.stderr)
        if n <= args.list_max:
            entry["list"] = result(run_role("list", data, cache, 0))
            print(f"  list path: {entry['list']['seconds_to_ready']:.0f} s", file=sys.stderr)
        r1 = run_role("rank1", data, cache, 0)  # waits for rank 0's cache
        entry["rank0"] = result(run_role("rank0", data, cache, 0))
        entry["rank1"] = result(r1)
        entry["rerun"] = result(run_role("rerun", data, cache, 0))
        print(f"  cache: rank 0 {entry['rank0']['seconds_to_ready']:.0f} s, rank 1 +"
              f"{entry['rank1']['seconds_to_ready']:.2f} s, rerun {entry['rerun']['seconds_to_ready']:.2f} s",
              file=sys.stderr)
        runs.append(entry)
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)
    out = {"command": "nice -n 10 python benchmarks/tokenize_cache.py " + " ".join(sys.argv[1:]),
           "goal": "peak RSS per rank for the data < 1 GiB at 700K pairs; other ranks add no tokenisation time",
           "setup": {"table1": TABLE1, "prompt_gamma_shape": PROMPT_SHAPE, "response_gamma_shape": RESPONSE_SHAPE,
                     "tokenizer": f"repro.model.build_tiny_tokenizer, byte-level BPE, vocab {VOCAB_SIZE}, trained "
                                  f"on {TOKENIZER_WORDS:,} words of the same stream", "max_length": MAX_LENGTH,
                     "micro_batch": MICRO_BATCH, "cpus": os.cpu_count()},
           "runs": runs, "env": env_info()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
