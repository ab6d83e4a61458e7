"""Chat-template rendering, pair tokenisation, and the token cache that training reads.

Render the whole conversation (prompt turns + the judged assistant turn) with the tokenizer's chat
template, then encode it *without* adding special tokens: the template already writes BOS, and letting
the tokenizer add another gives the doubled BOS the paper warns about. Pairs longer than `max_length`
are dropped and counted, never silently truncated (training); evaluation truncates from the left, as
the official RewardBench script does.

Training tokenises its pairs once, not once per process: `tokenized_pairs` writes the token ids of the
kept pairs to an Arrow IPC file (`<root>/<key>/tokens.arrow`: int32 id lists plus their lengths, in the
curated order) and every process memory-maps it, so a rank holds no copy of the data in its own memory.
The key is the SHA-256 of the curated pairs, a fingerprint of the tokenizer (vocabulary, merges,
normaliser, added and special tokens, chat template) and `max_length`: a second run on the same data with
the same tokenizer and max length reuses the file. It is written under a temporary name and renamed when
complete, so a writer killed half-way never leaves a cache that looks complete. Rendering and encoding go
a batch of pairs at a time (one fast-tokenizer call encodes a batch on all cores); the writer holds at
most one batch of text and ids, whatever the size of the data.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from repro.model import prepare_messages  # Gemma-2: a system turn merged into the first user turn

log = logging.getLogger(__name__)

TOKEN_CACHE_VERSION = 1  # bump when what the cache holds, or how it is computed, changes
TOKENS_FILE, META_FILE = "tokens.arrow", "meta.json"  # META_FILE is written last: it marks completeness
BATCH_PAIRS = 1024  # pairs rendered and encoded per tokenizer call
PAIR_INPUT = ("id", "prompt", "chosen", "rejected")  # the columns of a pair table that tokenisation reads
IDS = pa.list_(pa.int32())
TOKEN_SCHEMA = pa.schema([("id", pa.string()), ("chosen_ids", IDS), ("rejected_ids", IDS),
                          ("chosen_len", pa.int32()), ("rejected_len", pa.int32())])


class TokenizationError(ValueError):
    pass


def too_long(max_length: int) -> str:
    """The drop reason of a pair with a conversation longer than `max_length` tokens."""
    return f"longer than max_length={max_length} tokens"


def _check_bos(tokenizer, ids: list[int], pair_id=None) -> None:
    bos = tokenizer.bos_token_id
    if bos is not None and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
        raise TokenizationError("chat template produced a doubled BOS" + (f" (pair {pair_id})" if pair_id else ""))


def encode_conversation(tokenizer, messages: list[dict]) -> list[int]:
    text = tokenizer.apply_chat_template(prepare_messages(tokenizer, messages), tokenize=False)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    _check_bos(tokenizer, ids)
    return ids


def encode_pair(tokenizer, prompt: list[dict], chosen: str, rejected: str) -> tuple[list[int], list[int]]:
    c = encode_conversation(tokenizer, prompt + [{"role": "assistant", "content": chosen}])
    r = encode_conversation(tokenizer, prompt + [{"role": "assistant", "content": rejected}])
    return c, r


def tokenize_pairs(tokenizer, pairs: list[dict], max_length: int) -> tuple[list[dict], Counter]:
    """[{"id", "chosen_ids", "rejected_ids"}] for pairs that fit in `max_length`; drops counted by reason.

    The list form, one pair at a time (evaluation-sized data); training reads `tokenized_pairs`.
    """
    out, drops = [], Counter()
    for p in pairs:
        c, r = encode_pair(tokenizer, p["prompt"], p["chosen"], p["rejected"])
        if max(len(c), len(r)) > max_length:
            drops[too_long(max_length)] += 1
            continue
        out.append({"id": p["id"], "chosen_ids": c, "rejected_ids": r})
    return out, drops


def encode_batch(tokenizer, batch: pa.RecordBatch) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids of the chosen and of the rejected conversation of every pair of a batch (columns `id`,
    `prompt`, `chosen`, `rejected`): exactly what `encode_pair` gives for each row, with each
    conversation rendered by the chat template on its own and all of them encoded in one call."""
    n = batch.num_rows
    if n == 0:
        return [], []
    prompts = batch.column("prompt").to_pylist()
    convs = [prepare_messages(tokenizer, p + [{"role": "assistant", "content": a}]) for side in ("chosen", "rejected")
             for p, a in zip(prompts, batch.column(side).to_pylist())]
    texts = tokenizer.apply_chat_template(convs, tokenize=False)
    ids = tokenizer(texts, add_special_tokens=False, return_attention_mask=False,
                    return_token_type_ids=False)["input_ids"]
    bos = tokenizer.bos_token_id
    if bos is not None:
        for i, row in enumerate(ids):
            if len(row) >= 2 and row[0] == bos and row[1] == bos:
                _check_bos(tokenizer, row, batch.column("id")[i % n].as_py())
    return ids[:n], ids[n:]


def int32_values(arr) -> np.ndarray:
    """An Arrow int32 array or chunked array without nulls as one numpy array, read from its buffers
    (pyarrow's `to_numpy` would import pandas: seconds on a busy machine, for a rank that only opens)."""
    chunks = arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr]
    parts = [np.frombuffer(c.buffers()[1], dtype=np.int32)[c.offset: c.offset + len(c)] for c in chunks if len(c)]
    return np.concatenate(parts) if parts else np.zeros(0, np.int32)


def _ids_array(ids: list[list[int]]) -> tuple[pa.Array, np.ndarray]:
    """An Arrow list<int32> array of `ids`, and the length of every list."""
    lens = np.fromiter(map(len, ids), np.int64, len(ids))
    offsets = np.zeros(len(ids) + 1, np.int64)
    np.cumsum(lens, out=offsets[1:])
    values = np.fromiter(itertools.chain.from_iterable(ids), np.int32, int(offsets[-1]))
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), pa.array(values)), lens


def tokenize_batch(tokenizer, batch: pa.RecordBatch, max_length: int) -> tuple[pa.RecordBatch, Counter]:
    """The kept pairs of a batch as a record batch in TOKEN_SCHEMA (input order), and the drops by reason."""
    chosen, rejected = encode_batch(tokenizer, batch)
    c_ids, c_len = _ids_array(chosen)
    r_ids, r_len = _ids_array(rejected)
    keep = np.maximum(c_len, r_len) <= max_length
    out = pa.record_batch([batch.column("id").cast(pa.string()), c_ids, r_ids, pa.array(c_len.astype(np.int32)),
                           pa.array(r_len.astype(np.int32))], schema=TOKEN_SCHEMA)
    dropped = int((~keep).sum())
    return (out.filter(pa.array(keep)) if dropped else out), Counter({too_long(max_length): dropped} if dropped else {})


def pair_batches(pairs, batch_pairs: int = BATCH_PAIRS,
                 columns: Sequence[str] = PAIR_INPUT) -> Iterator[pa.RecordBatch]:
    """`columns` of `pairs` a batch at a time: a parquet file (read a batch at a time, never whole), an
    Arrow table, or a list of dicts with those keys."""
    if isinstance(pairs, (str, os.PathLike)):
        import pyarrow.parquet as pq

        # Curation writes one row group per million pairs: read its column chunks through a small buffer as
        # they are decoded, rather than each whole chunk (gigabytes at full size) first.
        reader = pq.ParquetFile(pairs, pre_buffer=False, buffer_size=1 << 22)
        yield from reader.iter_batches(batch_size=batch_pairs, columns=list(columns))
        return
    if not isinstance(pairs, pa.Table):
        pairs = list(pairs)
        if not pairs:
            return
        pairs = pa.Table.from_pylist([{c: p[c] for c in columns} for p in pairs])
    yield from pairs.select(list(columns)).to_batches(max_chunksize=batch_pairs)


def tokenizer_fingerprint(tokenizer) -> str:
    """SHA-256 of everything that decides the token ids of a rendered pair: the backend tokenizer's
    vocabulary, merges, normaliser, pre-tokenizer and added tokens (call-time truncation and padding
    settings left out), the chat template and the special tokens with their ids."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        if backend.truncation is not None or backend.padding is not None:
            from tokenizers import Tokenizer

            backend = Tokenizer.from_str(backend.to_str())  # a copy: the caller's settings stay
            backend.no_truncation()
            backend.no_padding()
        h.update(backend.to_str().encode())  # vocabulary in id order, merges, added tokens: deterministic
    else:  # a slow (Python) tokenizer: its vocabulary files and settings
        with tempfile.TemporaryDirectory() as d:
            for f in sorted(tokenizer.save_vocabulary(d)):
                h.update(Path(f).name.encode() + Path(f).read_bytes())
        h.update(json.dumps({k: v for k, v in tokenizer.init_kwargs.items()
                             if k != "name_or_path" and not k.endswith("_file")}, sort_keys=True, default=str).encode())
    special = {name: [value, getattr(tokenizer, f"{name}_id", None)]
               for name, value in tokenizer.special_tokens_map.items()}
    h.update(json.dumps({"class": type(tokenizer).__name__, "chat_template": tokenizer.chat_template,
                         "special": special, "added": sorted(tokenizer.get_added_vocab().items())},
                        sort_keys=True, default=str).encode())
    return h.hexdigest()


def code_fingerprint() -> str:
    """Hash of the code that renders and encodes a pair (this module and the message preparation it
    calls): editing it makes new token caches."""
    import inspect

    code = Path(__file__).read_bytes() + inspect.getsource(prepare_messages).encode()
    return hashlib.sha256(code).hexdigest()[:16]


def token_cache_key(data_sha256: str, tokenizer, max_length: int) -> str:
    """The token cache's folder name: curated data x tokenizer x max_length (x the code that computes it)."""
    blob = json.dumps({"version": TOKEN_CACHE_VERSION, "code": code_fingerprint(), "data": data_sha256,
                       "max_length": max_length, "tokenizer": tokenizer_fingerprint(tokenizer)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class TokenizedPairs:
    """Tokenised pairs as Arrow record batches in TOKEN_SCHEMA, what `repro.engine.train` reads: memory-
    mapped from the token cache (`open`), or built in memory from a list (`from_examples`).

    Row i is the i-th kept pair in the curated order. `lengths` is what the length-grouped sampler needs;
    `take(idx)` fetches the rows of a micro-batch in the order asked, touching only their pages of the file.
    """

    def __init__(self, batches: Iterable[pa.RecordBatch], *, dropped: dict | None = None,
                 pairs_in: int | None = None, folder: Path | None = None, reused: bool = False):
        self.batches = [b for b in batches if b.num_rows]
        self._starts = np.cumsum([0, *(b.num_rows for b in self.batches)])
        self.dropped = Counter(dropped or {})
        self.pairs_in = len(self) + sum(self.dropped.values()) if pairs_in is None else pairs_in
        self.folder, self.reused = folder, reused
        self._lengths = None

    def __len__(self) -> int:
        return int(self._starts[-1])

    @property
    def table(self) -> pa.Table:
        """All rows as one Arrow table (zero-copy over the batches)."""
        return pa.Table.from_batches(self.batches, schema=TOKEN_SCHEMA)

    @property
    def lengths(self) -> np.ndarray:
        """Tokens of the longer conversation of every pair (int64), from the length columns only."""
        if self._lengths is None:
            c, r = (int32_values(self.table.column(k)).astype(np.int64) for k in ("chosen_len", "rejected_len"))
            self._lengths = np.maximum(c, r)
        return self._lengths

    def take(self, idx: Sequence[int]) -> pa.Table:
        """Rows `idx`, in that order. (Arrow's own `Table.take` would first concatenate every chunk of the
        table, i.e. read the whole file into memory; this slices one row of its batch per index.)"""
        idx = np.asarray(idx, dtype=np.int64)
        if len(idx) and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} tokenised pairs")
        chunk = np.searchsorted(self._starts, idx, side="right") - 1
        rows = [self.batches[c].slice(int(i - self._starts[c]), 1) for c, i in zip(chunk.tolist(), idx.tolist())]
        return pa.Table.from_batches(rows, schema=TOKEN_SCHEMA)

    @classmethod
    def from_examples(cls, examples: list[dict], dropped: dict | None = None) -> TokenizedPairs:
        """From the list form (`tokenize_pairs`): {"chosen_ids", "rejected_ids"} and optionally "id"."""
        batches = []
        for a in range(0, len(examples), BATCH_PAIRS):  # int32 offsets: a record batch per BATCH_PAIRS pairs
            part = examples[a: a + BATCH_PAIRS]
            (c_ids, c_len), (r_ids, r_len) = (_ids_array([e[k] for e in part]) for k in ("chosen_ids", "rejected_ids"))
            ids = pa.array([str(e.get("id", a + i)) for i, e in enumerate(part)], pa.string())
            batches.append(pa.record_batch([ids, c_ids, r_ids, pa.array(c_len.astype(np.int32)),
                                            pa.array(r_len.astype(np.int32))], schema=TOKEN_SCHEMA))
        return cls(batches, dropped=dropped)

    @classmethod
    def of(cls, examples) -> TokenizedPairs:
        """`examples` as TokenizedPairs: itself, or built from the list form."""
        return examples if isinstance(examples, cls) else cls.from_examples(list(examples))

    @classmethod
    def open(cls, folder: str | Path, *, reused: bool = False) -> TokenizedPairs:
        """Memory-map a complete token cache folder."""
        folder = Path(folder)
        meta = json.loads((folder / META_FILE).read_text())
        reader = pa.ipc.open_file(pa.memory_map(str(folder / TOKENS_FILE)))
        batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
        n = sum(b.num_rows for b in batches)
        if not reader.schema.equals(TOKEN_SCHEMA) or n != meta["pairs"]:
            raise TokenizationError(f"{folder}: token cache does not match its {META_FILE} ({n} rows, "
                                    f"{meta['pairs']} expected): delete the folder and rerun to rebuild it")
        return cls(batches, dropped=meta["dropped"], pairs_in=meta["pairs_in"], folder=folder, reused=reused)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_stale_temps(folder: Path) -> None:
    """Temporary folders of this key left by killed writers on this host (their process is gone)."""
    prefix, host = f".tmp-{folder.name}-", socket.gethostname()
    for p in folder.parent.glob(prefix + "*"):
        h, _, pid = p.name[len(prefix):].rpartition("-")
        if h == host and pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(p, ignore_errors=True)


def write_token_cache(tokenizer, pairs, max_length: int, folder: str | Path, *, info: dict | None = None,
                      batch_pairs: int | None = None) -> dict:
    """Tokenise `pairs` (see `pair_batches`) into the token cache `folder`; returns its metadata.

    Written to `.tmp-<key>-<host>-<pid>/` beside it, `meta.json` last, then renamed: a folder named
    `<key>` is always complete. If another writer finished the same key first, its folder is kept.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(folder)
    tmp = folder.parent / f".tmp-{folder.name}-{socket.gethostname()}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.mkdir(tmp)  # mode 0777 less the user's umask, as every file the package writes
    t0, drops, pairs_in, kept, tokens = time.perf_counter(), Counter(), 0, 0, 0
    try:
        with pa.OSFile(str(tmp / TOKENS_FILE), "wb") as sink, pa.ipc.new_file(sink, TOKEN_SCHEMA) as writer:
            for batch in pair_batches(pairs, batch_pairs or BATCH_PAIRS):
                out, dropped = tokenize_batch(tokenizer, batch, max_length)
                pairs_in, kept, drops = pairs_in + batch.num_rows, kept + out.num_rows, drops + dropped
                tokens += int(np.sum(int32_values(out.column("chosen_len")), dtype=np.int64)
                              + np.sum(int32_values(out.column("rejected_len")), dtype=np.int64))
                if out.num_rows:
                    writer.write_batch(out)
        meta = {"version": TOKEN_CACHE_VERSION, "key": folder.name, **(info or {}), "max_length": max_length,
                "pairs_in": pairs_in, "pairs": kept, "tokens": tokens, "dropped": dict(sorted(drops.items())),
                "seconds": round(time.perf_counter() - t0, 3)}
        (tmp / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / META_FILE).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another writer of the same key finished first
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def tokenized_pairs(tokenizer, pairs, max_length: int, *, data_sha256: str, cache_root: str | Path,
                    write: bool = True) -> TokenizedPairs:
    """The token cache of `pairs` (a parquet file, an Arrow table or a list of dicts, whose rows have the
    SHA-256 `data_sha256`) under `cache_root`, memory-mapped: reused when it exists, else written.

    Training's main process calls it with `write=True` while the other processes wait, then they call it
    with `write=False`: they only open the folder the main process wrote, and stop with one line naming
    it if it is not there (their tokenizer differs, or the folder is not shared between them).
    """
    folder = Path(cache_root) / token_cache_key(data_sha256, tokenizer, max_length)
    if (folder / META_FILE).is_file():
        data = TokenizedPairs.open(folder, reused=True)
        if write:
            log.info("reusing the token cache %s: %d of %d pairs (same data, tokenizer and max_length=%d)",
                     folder, len(data), data.pairs_in, max_length)
        return data
    if not write:
        raise TokenizationError(f"token cache {folder} not found after the main process prepared it: this "
                                "process's tokenizer differs from the main process's, or the folder is not shared")
    meta = write_token_cache(tokenizer, pairs, max_length, folder, info={"data_sha256": data_sha256})
    log.info("tokenised %d pairs in %.1f s: %d kept (%d tokens)%s; token cache %s", meta["pairs_in"], meta["seconds"],
             meta["pairs"], meta["tokens"], f", dropped {meta['dropped']}" if meta["dropped"] else "", folder)
    return TokenizedPairs.open(folder)
