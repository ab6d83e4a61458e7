"""N-gram decontamination against a benchmark (the RewardBench maintainers' rule), Arrow-native and exact.

Rule (PAPER.md, "Decontamination -> v0.2"): a training prompt is *contaminated* if it shares at least one
word n-gram of length 7..13 with any benchmark prompt, tokenised as scikit-learn's `CountVectorizer`
default: `str.lower()`, then the tokens of `re.findall(r"(?u)\\b\\w\\w+\\b", text)` (no accent stripping).
Sharing an n-gram of length 7..13 is the same as sharing a 7-gram (a longer shared n-gram starts with a
shared 7-gram), so the index holds the benchmark's 7-grams and each training prompt's 7-grams are looked
up once: linear time, instead of generating every 7..13-gram string of every prompt.

How (all vectorised over Arrow buffers with numpy; no per-row Python work except where said):
1. Tokens. Rows that are pure ASCII are tokenised on their UTF-8 bytes: lower-case by a byte table,
   tokens = maximal runs of `[0-9a-z_]` of 2+ bytes — exactly what Python's `re` finds in ASCII text.
   Rows with any non-ASCII character go through Python's own `str.lower()` and `re.findall` (the very
   calls scikit-learn makes), one row at a time, so Unicode case rules and `\\w` are Python's to the letter.
2. Token ids: every token is looked up in the benchmark's vocabulary (`pyarrow.compute.index_in` on the
   token strings: exact, no hashing); a token the benchmark never uses cannot be part of a shared 7-gram.
3. 7-grams: windows of 7 consecutive known tokens of one row get a 64-bit hash, pass a bitmap pre-filter
   (~3% false positives), are found in the sorted hashes of the benchmark's distinct 7-grams, and every
   hit is verified by comparing its 7 token ids with
   the benchmark 7-gram's (distinct benchmark 7-grams never share a hash: the index picks a multiplier for
   which they don't). So the flagged set is exactly scikit-learn's; hashing only makes it fast.

"The prompt" of a preference pair: the text of its user turns before the judged (last assistant) answer.
`prompts_from_messages(..., turns="all")` joins all user turns with "\\n" (the default; an n-gram may then
span two turns, as it would in one text), `turns="last"` keeps only the last user turn. For RewardBench,
the `prompt` column.

API: `build_index(benchmark_prompts) -> NgramIndex`; `index.contaminated(prompts)` / `contaminated(prompts,
index)` -> numpy bool mask; `index.scan(prompts)` -> `Scan` (mask, matched (training row, benchmark row)
pairs); `report(prompts, index, sources=..., benchmark_subsets=...)` -> Table 4's counts per source.
Prompts are lists of str or Arrow string (chunked) arrays. Text is processed in pieces of ~32 MB, so
memory stays bounded whatever the dataset's size. Everything here is a pure function of its arguments
(no file or network I/O).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# scikit-learn CountVectorizer defaults (lowercase=True, strip_accents=None, token_pattern) and the
# RewardBench maintainers' n-gram range.
TOKEN_PATTERN = r"(?u)\b\w\w+\b"
NGRAM_RANGE = (7, 13)
TURNS = ("all", "last")
TURN_SEPARATOR = "\n"

_TOKEN_RE = re.compile(TOKEN_PATTERN)
# Bytes per piece of a scan: bounds the numpy work arrays (~20 bytes of temporaries per text byte).
_PIECE_BYTES = 1 << 25
# Byte tables: ASCII lower-casing, and which bytes belong to a token. Bytes >= 0x80 only occur in rows
# already tokenised by Python and re-joined with spaces, where every non-space byte is part of a token.
_LOWER = np.arange(256, dtype=np.uint8)
_LOWER[ord("A"):ord("Z") + 1] += 32
_WORD = np.zeros(256, dtype=bool)
for _lo, _hi in (("0", "9"), ("a", "z"), ("_", "_")):
    _WORD[ord(_lo):ord(_hi) + 1] = True
_WORD[0x80:] = True
# Odd 64-bit multipliers for the polynomial 7-gram hash; the index uses the first with no collision.
_MULTIPLIERS = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93,
                0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53, 0x94D049BB133111EB, 0xBF58476D1CE4E5B9)


# ---------------------------------------------------------------------------------------------------
# Reference tokenisation (what scikit-learn does), for single strings.

def tokenize(text: str) -> list[str]:
    """scikit-learn's default tokens of one text: `re.findall(TOKEN_PATTERN, text.lower())`."""
    return _TOKEN_RE.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int = NGRAM_RANGE[0]) -> list[tuple[str, ...]]:
    """The word n-grams (tuples of n consecutive tokens) of a token list, in order; [] if it has fewer."""
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


def word_ngrams(text: str, ngram_range: tuple[int, int] = NGRAM_RANGE) -> list[str]:
    """The features `CountVectorizer(ngram_range=ngram_range)` extracts from one text (space-joined)."""
    tokens = tokenize(text)
    lo, hi = ngram_range
    return [" ".join(g) for n in range(lo, min(hi, len(tokens)) + 1) for g in ngrams(tokens, n)]


# ---------------------------------------------------------------------------------------------------
# Prompts out of Arrow columns.

def as_string_chunks(prompts) -> list[pa.Array]:
    """Prompts (a list of str/None, a pyarrow string array or chunked array, a numpy array) as Arrow
    string chunks without nulls (a null prompt becomes "")."""
    if isinstance(prompts, pa.ChunkedArray):
        chunks = list(prompts.chunks)
    elif isinstance(prompts, pa.Array):
        chunks = [prompts]
    else:
        chunks = [pa.array(list(prompts), type=pa.large_string())]
    out = []
    for c in chunks:
        if not (pa.types.is_string(c.type) or pa.types.is_large_string(c.type)):
            t = c.type.value_type if pa.types.is_dictionary(c.type) else c.type
            if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
                    or pa.types.is_null(t)):
                raise TypeError(f"prompts must be strings, got Arrow type {c.type}")
            c = c.cast(pa.large_string())
        if c.null_count:
            c = pc.fill_null(c, "")
        out.append(c)
    return out


def prompts_from_messages(messages, turns: str = "all") -> pa.Array:
    """The prompt text of each conversation: its user turns (`turns="all"`, joined with "\\n") or its
    last user turn (`turns="last"`). `messages` is an Arrow list<struct<role, content>> array or chunked
    array (or a Python list of such lists). A null conversation, or one with no user turn, gives ""; a
    message whose content is null is skipped. Vectorised: no per-row Python."""
    if turns not in TURNS:
        raise ValueError(f"turns must be one of {TURNS}, got {turns!r}")
    if not isinstance(messages, (pa.Array, pa.ChunkedArray)):
        messages = pa.array(list(messages))
    chunks = messages.chunks if isinstance(messages, pa.ChunkedArray) else [messages]
    out = [_user_text(c, turns) for c in chunks]
    if not out:
        return pa.array([], type=pa.large_string())
    return pa.concat_arrays(out) if len(out) > 1 else out[0]


def check_messages_type(t: pa.DataType) -> str | None:
    """Why an Arrow type is not a list of {role, content} string messages, or None if it is."""
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)):
        return f"expected a list of {{role, content}} messages, got {t}"
    v = t.value_type
    if not pa.types.is_struct(v) or v.get_field_index("role") < 0 or v.get_field_index("content") < 0:
        return f"expected messages with fields role and content, got {t}"
    for name in ("role", "content"):
        ft = v.field(name).type
        if not (pa.types.is_string(ft) or pa.types.is_large_string(ft) or pa.types.is_null(ft)):
            return f"message field {name!r} must be a string, got {ft}"
    return None


def _user_text(lists: pa.Array, turns: str) -> pa.Array:
    n = len(lists)
    problem = check_messages_type(lists.type)
    if problem:
        raise TypeError(problem)
    flat = lists.flatten()  # honours slicing and skips the children of null lists
    parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    role, content = pc.struct_field(flat, "role"), pc.struct_field(flat, "content")
    keep = pc.fill_null(pc.and_(pc.equal(role, "user"), pc.is_valid(content)), False)
    content = pc.filter(content, keep).cast(pa.large_string())
    parents = parents[keep.to_numpy(zero_copy_only=False)]
    if turns == "last":
        last = np.flatnonzero(np.r_[parents[1:] != parents[:-1], True]) if len(parents) else np.zeros(0, np.int64)
        take = np.full(n, -1, dtype=np.int64)
        take[parents[last]] = last
        got = pc.take(content, pa.array(take, mask=take < 0))
        return pc.fill_null(got, "")
    counts = np.bincount(parents, minlength=n)
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=offsets[1:])
    grouped = pa.LargeListArray.from_arrays(pa.array(offsets), content)
    return pc.binary_join(grouped, pa.scalar(TURN_SEPARATOR, pa.large_string()))


# ---------------------------------------------------------------------------------------------------
# Tokenisation of many rows at once.

@dataclass
class _Tokens:
    """Tokens of a batch of rows: strings (Arrow), and row r's tokens are [row_offsets[r], row_offsets[r+1])."""
    strings: pa.Array
    row_offsets: np.ndarray  # int64, len(rows) + 1

    @property
    def row_ids(self) -> np.ndarray:
        return np.repeat(np.arange(len(self.row_offsets) - 1, dtype=np.int64), np.diff(self.row_offsets))


def byte_view(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets int64 of len(arr)+1, the data bytes) of a null-free string array, zero-copy."""
    bufs = arr.buffers()
    odt = np.dtype(np.int32 if pa.types.is_string(arr.type) else np.int64)
    offsets = np.frombuffer(bufs[1], dtype=odt, count=len(arr) + 1, offset=arr.offset * odt.itemsize).astype(np.int64)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None and bufs[2].size else np.zeros(0, np.uint8)
    return offsets, data


def _byte_tokens(arr: pa.Array) -> _Tokens:
    """Tokens of rows that are ASCII, or already "token token ..." strings, from their bytes (see module doc)."""
    offsets, data = byte_view(arr)
    lo, hi = int(offsets[0]), int(offsets[-1])
    b = _LOWER[data[lo:hi]]
    rel = offsets - lo
    w = _WORD[b]
    # A token starts at a word byte whose predecessor is not one (or that begins a row), and ends likewise.
    prev = np.zeros_like(w)
    prev[1:] = w[:-1]
    nxt = np.zeros_like(w)
    nxt[:-1] = w[1:]
    nonempty = rel[1:] > rel[:-1]
    prev[rel[:-1][nonempty]] = False
    nxt[rel[1:][nonempty] - 1] = False
    starts = np.flatnonzero(w & ~prev)
    ends = np.flatnonzero(w & ~nxt) + 1
    short = ends - starts < 2
    if short.any():  # one-character tokens are not tokens (`\w\w+`): take their bytes out
        w[starts[short]] = False
        starts, ends = starts[~short], ends[~short]
    lengths = ends - starts
    tok_offsets = np.zeros(len(starts) + 1, dtype=np.int64)
    np.cumsum(lengths, out=tok_offsets[1:])
    strings = pa.LargeStringArray.from_buffers(len(starts), pa.py_buffer(tok_offsets), pa.py_buffer(b[w]))
    return _Tokens(strings, np.searchsorted(starts, rel, side="left").astype(np.int64))


def _python_normalised(arr: pa.Array) -> pa.Array:
    """Rows tokenised by Python exactly as scikit-learn does, re-joined with single spaces."""
    return pa.array([" ".join(_TOKEN_RE.findall(s.lower())) for s in arr.to_pylist()], type=pa.large_string())


def _pieces(chunks: list[pa.Array]) -> Iterable[tuple[int, pa.Array]]:
    """(first row, slice) pieces of at most ~_PIECE_BYTES text bytes (at least one row each)."""
    start = 0
    for c in chunks:
        offsets, _ = byte_view(c)
        i = 0
        while i < len(c):
            j = int(np.searchsorted(offsets, offsets[i] + _PIECE_BYTES, side="right")) - 1
            j = min(max(j, i + 1), len(c))
            yield start + i, c.slice(i, j - i)
            i = j
        start += len(c)


def _tokens_by_path(piece: pa.Array) -> list[tuple[np.ndarray, _Tokens]]:
    """[(row indices within the piece, their tokens)] for the ASCII rows and the other rows."""
    ascii_rows = pc.string_is_ascii(piece).to_numpy(zero_copy_only=False)
    if ascii_rows.all():
        return [(np.arange(len(piece)), _byte_tokens(piece))]
    out = []
    for sel in (np.flatnonzero(ascii_rows), np.flatnonzero(~ascii_rows)):
        if len(sel):
            part = pc.take(piece, pa.array(sel))
            if not ascii_rows[sel[0]]:
                part = _python_normalised(part)
            out.append((sel, _byte_tokens(part)))
    return out


# ---------------------------------------------------------------------------------------------------
# The index and the scan.

def _window_starts(ids: np.ndarray, row_ids: np.ndarray, n: int) -> np.ndarray:
    """Token positions i where tokens i..i+n-1 lie in one row and are all known (id >= 0)."""
    if len(ids) < n:
        return np.zeros(0, dtype=np.int64)
    unknown = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(ids < 0, out=unknown[1:])
    ok = (unknown[n:] == unknown[:-n]) & (row_ids[n - 1:] == row_ids[:len(ids) - n + 1])
    return np.flatnonzero(ok)


def _gram_ids(ids: np.ndarray, starts: np.ndarray, n: int) -> np.ndarray:
    """(len(starts), n) int32 token ids of the windows."""
    return ids[starts[:, None] + np.arange(n)]


def _hash(grams: np.ndarray, multiplier: int) -> np.ndarray:
    """Polynomial hash mod 2**64 of (k, n) int32 id rows: sum of (id_j + 1) * multiplier**(n-1-j)."""
    m = np.uint64(multiplier)
    h = np.zeros(len(grams), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(grams.shape[1]):
            h = h * m + grams[:, k].astype(np.uint64) + np.uint64(1)
    return h


def _hash_windows(ids: np.ndarray, n: int, multiplier: int) -> np.ndarray:
    """`_hash` of every window ids[i:i+n] (i = 0..len-n), computed with n strided passes."""
    m = np.uint64(multiplier)
    size = len(ids) - n + 1
    h = np.zeros(size, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(n):
            h *= m
            h += ids[k:k + size].astype(np.uint64)
            h += np.uint64(1)
    return h


@dataclass(frozen=True, eq=False)
class NgramIndex:
    """The distinct n-grams of a benchmark's prompts, and which benchmark prompts hold each."""
    n: int
    n_prompts: int
    vocabulary: pa.Array          # distinct benchmark tokens (token id = position)
    grams: np.ndarray             # (G, n) int32 token ids of the distinct n-grams, sorted by hash
    hashes: np.ndarray            # (G,) uint64, sorted, all distinct
    multiplier: int
    prompt_offsets: np.ndarray    # CSR: gram g is in benchmark prompts prompt_rows[prompt_offsets[g]:...[g+1]]
    prompt_rows: np.ndarray
    bitmap: np.ndarray            # bool, 2**bits: True at the top `bits` bits of every gram hash (a pre-filter)

    @property
    def bits(self) -> int:
        return self.bitmap.size.bit_length() - 1

    @classmethod
    def build(cls, prompts, n: int = NGRAM_RANGE[0]) -> "NgramIndex":
        """Index the n-grams of benchmark prompts (list of str, Arrow string array or chunked array)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        chunks = as_string_chunks(prompts)
        n_prompts = sum(len(c) for c in chunks)
        parts = [(start + sel, toks) for start, piece in _pieces(chunks) for sel, toks in _tokens_by_path(piece)]
        strings = [t.strings for _, t in parts]
        vocab = pc.unique(pa.concat_arrays(strings)) if strings else pa.array([], type=pa.large_string())
        all_grams, all_rows = [np.zeros((0, n), np.int32)], [np.zeros(0, np.int64)]
        for rows, toks in parts:
            ids = pc.index_in(toks.strings, value_set=vocab).to_numpy(zero_copy_only=False).astype(np.int32)
            row_ids = toks.row_ids
            starts = _window_starts(ids, row_ids, n)
            all_grams.append(_gram_ids(ids, starts, n))
            all_rows.append(rows[row_ids[starts]])
        grams_all, rows_all = np.concatenate(all_grams), np.concatenate(all_rows)
        for multiplier in _MULTIPLIERS:
            hashes, first, inverse = np.unique(_hash(grams_all, multiplier), return_index=True, return_inverse=True)
            # collision-free: every window has the same token ids as the first window with its hash
            if (grams_all == grams_all[first[inverse]]).all():
                break
        else:  # pragma: no cover - 8 independent 64-bit collisions among a benchmark's n-grams
            raise RuntimeError("could not find a collision-free hash for the benchmark's n-grams")
        width = max(n_prompts, 1)
        key = np.unique(inverse.astype(np.int64) * width + rows_all)  # (gram, prompt) pairs, sorted by gram
        prompt_offsets = np.searchsorted(key // width, np.arange(len(hashes) + 1)).astype(np.int64)
        bits = max(10, min(30, int(np.ceil(np.log2(max(len(hashes), 1) * 32)))))
        bitmap = np.zeros(1 << bits, dtype=bool)
        bitmap[hashes >> np.uint64(64 - bits)] = True
        return cls(n=n, n_prompts=n_prompts, vocabulary=vocab, grams=grams_all[first], hashes=hashes,
                   multiplier=multiplier, prompt_offsets=prompt_offsets, prompt_rows=key % width, bitmap=bitmap)

    def __len__(self) -> int:
        return len(self.hashes)

    def scan(self, prompts) -> "Scan":
        """Find every training prompt that shares an n-gram with the benchmark, and with which prompts."""
        chunks = as_string_chunks(prompts)
        total = sum(len(c) for c in chunks)
        mask = np.zeros(total, dtype=bool)
        n_tokens = np.zeros(total, dtype=np.int64)
        hit_rows, hit_grams = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
        for start, piece in _pieces(chunks):
            for sel, toks in _tokens_by_path(piece):
                n_tokens[start + sel] = np.diff(toks.row_offsets)
                if len(self):
                    rows, grams = self._matches(toks)
                    rows = start + sel[rows]
                    mask[rows] = True
                    hit_rows.append(rows)
                    hit_grams.append(grams)
        return Scan(mask, np.concatenate(hit_rows), np.concatenate(hit_grams), n_tokens, self)

    def contaminated(self, prompts) -> np.ndarray:
        """Boolean mask: True where a prompt shares an n-gram (so a 7..13-gram for n=7) with the benchmark."""
        return self.scan(prompts).mask

    def _matches(self, toks: _Tokens) -> tuple[np.ndarray, np.ndarray]:
        """Unique (row within toks, gram index) pairs of verified matches."""
        ids = pc.index_in(toks.strings, value_set=self.vocabulary)
        ids = pc.fill_null(ids, -1).to_numpy(zero_copy_only=False).astype(np.int32)
        row_ids = toks.row_ids
        starts = _window_starts(ids, row_ids, self.n)
        if not len(starts):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        h = _hash_windows(ids, self.n, self.multiplier)[starts]
        maybe = self.bitmap[h >> np.uint64(64 - self.bits)]  # drops ~97% of the windows that cannot match
        starts, h = starts[maybe], h[maybe]
        pos = np.minimum(np.searchsorted(self.hashes, h), len(self.hashes) - 1)
        found = np.flatnonzero(self.hashes[pos] == h)
        starts, pos = starts[found], pos[found].astype(np.int64)
        same = (self.grams[pos] == _gram_ids(ids, starts, self.n)).all(axis=1)  # exact: same token ids
        key = np.unique(row_ids[starts[same]] * len(self) + pos[same])
        return key // len(self), key % len(self)


@dataclass(frozen=True, eq=False)
class Scan:
    """Result of `NgramIndex.scan`: the mask, and the (training row, benchmark n-gram) matches."""
    mask: np.ndarray      # (rows,) bool: shares an n-gram with the benchmark
    rows: np.ndarray      # training row of each match (a row appears once per distinct shared n-gram)
    grams: np.ndarray     # index of the shared n-gram in the NgramIndex
    n_tokens: np.ndarray  # (rows,) tokens per training prompt
    index: NgramIndex

    def benchmark_pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Unique (training row, benchmark prompt) pairs that share at least one n-gram, sorted."""
        idx = self.index
        counts = idx.prompt_offsets[self.grams + 1] - idx.prompt_offsets[self.grams]
        train = np.repeat(self.rows, counts)
        firsts = np.repeat(idx.prompt_offsets[self.grams], counts)
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        bench = idx.prompt_rows[firsts + within]
        width = max(idx.n_prompts, 1)
        key = np.unique(train.astype(np.int64) * width + bench)
        return key // width, key % width


def build_index(benchmark_prompts, n: int = NGRAM_RANGE[0]) -> NgramIndex:
    """`NgramIndex.build`: the n-grams (default 7, the low end of 7..13) of the benchmark's prompts."""
    return NgramIndex.build(benchmark_prompts, n=n)


def contaminated(prompts, index: NgramIndex) -> np.ndarray:
    """Boolean numpy mask over `prompts`: True where a prompt shares an n-gram with the indexed benchmark."""
    return index.contaminated(prompts)


# ---------------------------------------------------------------------------------------------------
# The report (Table 4's columns, per source).

def _labels(values, total: int) -> tuple[list, np.ndarray]:
    """(distinct labels in first-seen order, code per row) of a per-row label column (None allowed)."""
    if values is None:
        return ["all"], np.zeros(total, dtype=np.int64)
    arr = values if isinstance(values, (pa.Array, pa.ChunkedArray)) else pa.array(list(values))
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks else pa.array([], type=arr.type)
    if len(arr) != total:
        raise ValueError(f"{len(arr)} labels for {total} prompts")
    enc = pc.dictionary_encode(arr, null_encoding="encode")
    labels = enc.dictionary.to_pylist()
    codes = enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    return labels, codes


def report(prompts, index: NgramIndex, *, sources=None, benchmark_subsets=None,
           benchmark_prompts=None, scan: Scan | None = None) -> dict:
    """Per source: training prompts scanned and contaminated, and benchmark prompts matched.

    `sources` (one label per training prompt; None: one group, "all") groups the training rows, in first-seen
    order. `benchmark_subsets` (one label per benchmark prompt, e.g. RewardBench's `subset`) splits the
    matched benchmark prompts by subset. `benchmark_prompts` (the indexed texts) adds the number of
    distinct matched prompt texts (a benchmark can hold one prompt in several rows). Returns

        {"sources": [{"source", "scanned", "contaminated", "too_short", "benchmark_rows_matched",
                      ["benchmark_prompts_matched"], ["benchmark_subsets": {subset: rows matched}]}, ...],
         "total": {same keys, source "total"}}

    `contaminated` and `benchmark_rows_matched` are the two columns of the paper's Table 4 (contaminated
    training prompts; benchmark prompts with a 7-gram match). `too_short` counts prompts with fewer than n
    tokens (empty or missing ones included), which can never be contaminated. `scan`: a finished
    `index.scan(prompts)` to reuse (the prompts are then not scanned again).
    """
    scan = scan if scan is not None else index.scan(prompts)
    total = len(scan.mask)
    labels, codes = _labels(sources, total)
    sub_labels, sub_codes = (None, None) if benchmark_subsets is None else _labels(benchmark_subsets, index.n_prompts)
    prompt_codes = None
    if benchmark_prompts is not None:
        texts = pa.chunked_array([c.cast(pa.large_string()) for c in as_string_chunks(benchmark_prompts)],
                                 type=pa.large_string())
        _, prompt_codes = _labels(texts, index.n_prompts)
    train_rows, bench_rows = scan.benchmark_pairs()

    def entry(name, rows_mask, bench):
        bench = np.unique(bench)
        e = {"source": name, "scanned": int(rows_mask.sum()), "contaminated": int(scan.mask[rows_mask].sum()),
             "too_short": int((scan.n_tokens[rows_mask] < index.n).sum()), "benchmark_rows_matched": int(len(bench))}
        if prompt_codes is not None:
            e["benchmark_prompts_matched"] = int(len(np.unique(prompt_codes[bench])))
        if sub_codes is not None:
            counts = np.bincount(sub_codes[bench], minlength=len(sub_labels))
            e["benchmark_subsets"] = {str(sub_labels[i]): int(counts[i]) for i in np.argsort(
                [str(s) for s in sub_labels], kind="stable") if counts[i]}
        return e

    pair_codes = codes[train_rows]
    out = [entry(lab, codes == i, bench_rows[pair_codes == i]) for i, lab in enumerate(labels)]
    return {"sources": out, "total": entry("total", np.ones(total, dtype=bool), bench_rows)}
