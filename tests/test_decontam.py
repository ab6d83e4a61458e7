"""N-gram decontamination (repro.data.decontam, python -m repro.decontaminate) against scikit-learn.

The reference is the RewardBench maintainers' method itself: `CountVectorizer(ngram_range=(7, 13))` fitted
on the benchmark prompts, both sides transformed, and the sparse product X_train @ X_bench.T — a
training prompt is contaminated where its row has a non-zero.
"""
from __future__ import annotations

import json
import random
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.feature_extraction.text import CountVectorizer  # the test extra: a missing one fails, never skips

from repro.data import decontam
from repro.fixtures import FIXTURE_ROOT

from conftest import run_cli

SKYWORK = FIXTURE_ROOT / "skywork80k" / "data" / "train-00000-of-00001.parquet"
REWARDBENCH = FIXTURE_ROOT / "reward-bench" / "data" / "filtered-00000-of-00001.parquet"


def sklearn_overlap(train: list[str], bench: list[str], ngram_range=(7, 13)):
    """(contaminated mask, sorted (train row, bench row) pairs sharing a 7..13-gram) the maintainers' way."""
    cv = CountVectorizer(ngram_range=ngram_range).fit(bench)
    m = (cv.transform(train) @ cv.transform(bench).T).tocoo()
    mask = np.zeros(len(train), dtype=bool)
    mask[m.row] = True
    return mask, sorted(set(zip(m.row.tolist(), m.col.tolist())))


def our_pairs(scan) -> list[tuple[int, int]]:
    t, b = scan.benchmark_pairs()
    return list(zip(t.tolist(), b.tolist()))


# ---------------------------------------------------------------------------------------------------
# Tokenisation

TRICKY = [
    "Hello, World! It's 2024_05 and snake_case_names matter.", "a b c d e f g h i j", "x",
    "", "   \n\t ", "ΟΔΟΣ ΟΔΟΣ Σ ΣΑΣ.", "İstanbul'da İİ", "Straße STRASSE ß", "café cafe\u0301 CAFÉ",
    "日本語のテキスト、と English_words 混在", "ＡＢＣ ｄｅｆ fullwidth", "x² ² 2² ½ ⅓ ①②", "__init__ _ __ a_",
    "tab\tseparated\nnew line\r\ncarriage", "em—dash en–dash “curly” ‘quotes’ naïve",
    "ǅemal ǈ Titlecase ﬁne ligature", "ﬁnal ﬂow ǰ ŉ", "Ǆ DŽ", "ÀÉÎÕÜ àéîõü", "Ⅻ roman Ⅻ numerals",
]


def test_tokenize_and_word_ngrams_equal_sklearn():
    cv = CountVectorizer(ngram_range=(7, 13))
    tokenizer, pre, analyzer = cv.build_tokenizer(), cv.build_preprocessor(), cv.build_analyzer()
    long = " ".join(TRICKY) * 2
    for text in [*TRICKY, long]:
        assert decontam.tokenize(text) == tokenizer(pre(text)), text
        assert decontam.word_ngrams(text) == analyzer(text), text
    assert decontam.tokenize("It's A_b x2 é!") == ["it", "a_b", "x2"]
    assert decontam.ngrams(["a", "b", "c"], 2) == [("a", "b"), ("b", "c")]
    assert decontam.ngrams(["a", "b"], 7) == []


def test_byte_path_tokens_equal_python_tokens():
    """The ASCII fast path and the Python path give scikit-learn's tokens, row by row."""
    rows = [t for t in TRICKY] + ["UPPER lower MiXeD_42 a1 1a __ x y z!", "", "no-ascii-here but ASCII ONLY"]
    arr = pa.array(rows + [None], type=pa.string()).slice(1)  # a sliced array with a null
    chunks = decontam.as_string_chunks(arr)
    got = {}
    for start, piece in decontam._pieces(chunks):
        for sel, toks in decontam._tokens_by_path(piece):
            strings = toks.strings.to_pylist()
            for r, a, b in zip(sel, toks.row_offsets[:-1], toks.row_offsets[1:]):
                got[start + int(r)] = strings[a:b]
    assert [got[i] for i in range(len(arr))] == [decontam.tokenize(t or "") for t in rows[1:] + [None]]


# ---------------------------------------------------------------------------------------------------
# The flagged set equals scikit-learn's

WORDS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "Lambda", "MU",
         "nu_x", "xi2", "2024", "café", "ΟΔΟΣ", "İstanbul", "straße", "日本語", "x", "7", "_", "naïve", "ＡＢ"]
SEPARATORS = [" ", ", ", "\n", "! ", " - ", " — ", "\t", "'s ", "… "]


def generated(seed: int = 0):
    """(train, bench, kinds): ~420 prompts of known kinds against 48 benchmark prompts."""
    rng = random.Random(seed)

    def text(tokens):
        out = tokens[0] if tokens else ""
        for t in tokens[1:]:
            out += rng.choice(SEPARATORS) + t
        return out

    def recase(t):
        return rng.choice([t, t.upper(), t.lower(), t.capitalize()])

    bench_tokens = [rng.choices(WORDS, k=rng.randint(4, 30)) for _ in range(48)]
    bench = [text(t) for t in bench_tokens]
    bench[0] = "What is the capital of France and why is it Paris?"  # pure ASCII benchmark prompts
    bench[1] = "Write a python function that reverses a linked list in place."
    bench_tokens[0], bench_tokens[1] = bench[0].split(), bench[1].split()
    train, kinds = [], []
    for i in range(420):
        kind = ["long", "six", "random", "short", "ascii_copy"][i % 5]
        toks = rng.choices(WORDS, k=rng.randint(0, 25))
        if kind in ("long", "six"):
            b = bench_tokens[rng.randrange(len(bench_tokens))]
            k = min(rng.randint(7, 15), len(b)) if kind == "long" else min(6, len(b))
            s = rng.randint(0, len(b) - k)
            at = rng.randint(0, len(toks))
            toks[at:at] = [recase(t) for t in b[s:s + k]]
        elif kind == "short":
            toks = toks[:rng.randint(0, 6)]
        elif kind == "ascii_copy":  # an ASCII training row copying an ASCII benchmark phrase, or not quite
            src = bench[i % 2].split()
            toks = ["Please"] + src[: rng.randint(5, len(src))] + ["thanks"]
        train.append(text(toks))
        kinds.append(kind)
    train[3] = None  # a missing prompt
    return train, bench, kinds


@pytest.mark.parametrize("piece_bytes", [None, 97])
def test_flagged_set_and_matches_equal_sklearn(monkeypatch, piece_bytes):
    if piece_bytes:  # many small pieces: row and token offsets across piece boundaries
        monkeypatch.setattr(decontam, "_PIECE_BYTES", piece_bytes)
    train, bench, kinds = generated()
    ref_mask, ref_pairs = sklearn_overlap([t or "" for t in train], bench)
    by_kind = Counter(k for k, m in zip(kinds, ref_mask) if m)
    # the data exercise what they should: most long copies match, six-word copies and short prompts never
    assert by_kind["long"] >= 60 and by_kind["short"] == 0 and by_kind["ascii_copy"] >= 20, by_kind
    assert ref_mask.sum() < len(train) - 150
    non_ascii_flagged = [t for t, m in zip(train, ref_mask) if m and not t.isascii()]
    assert len(non_ascii_flagged) >= 20

    index = decontam.build_index(pa.array(bench))
    chunked = pa.chunked_array([pa.array(train[:150]), pa.array(["dropped"] + train[150:]).slice(1)])
    for prompts in (train, chunked, pa.array(train, type=pa.large_string())):
        scan = index.scan(prompts)
        assert scan.mask.dtype == bool and scan.mask.shape == (len(train),)
        assert np.array_equal(scan.mask, ref_mask), np.flatnonzero(scan.mask != ref_mask)
        assert our_pairs(scan) == ref_pairs
    assert np.array_equal(decontam.contaminated(train, index), ref_mask)


def test_hash_collisions_are_resolved(monkeypatch):
    """With a hash that collides on purpose (multiplier 1: the sum of the ids), a permuted 7-gram has the
    benchmark 7-gram's hash but is not flagged; and benchmark 7-grams that collide make the index move on."""
    monkeypatch.setattr(decontam, "_MULTIPLIERS", (1,))
    bench = ["one two three four five six seven"]
    index = decontam.build_index(bench)
    permuted = "seven six five four three two one"
    ids = decontam.pc.index_in(pa.array(permuted.split(), pa.large_string()), value_set=index.vocabulary)
    assert decontam._hash(np.array([ids.to_numpy()], dtype=np.int32), 1)[0] == index.hashes[0]  # a collision
    assert decontam.contaminated([permuted, "x " + bench[0]], index).tolist() == [False, True]

    bench2 = [bench[0], permuted]  # two distinct benchmark 7-grams with one sum
    with pytest.raises(RuntimeError, match="collision-free"):
        decontam.build_index(bench2)
    monkeypatch.setattr(decontam, "_MULTIPLIERS", (1, 3))
    index2 = decontam.build_index(bench2)
    assert index2.multiplier == 3 and len(index2) == 2
    train = [permuted, bench[0], "seven six five four three two two"]
    assert decontam.contaminated(train, index2).tolist() == sklearn_overlap(train, bench2)[0].tolist()


# ---------------------------------------------------------------------------------------------------
# Golden numbers by hand

def test_golden_tiny_case():
    bench = ["one two three four five six seven eight",        # 2 seven-grams
             "Alpha beta gamma delta epsilon zeta eta",         # 1
             "short prompt",                                    # 0
             "ONE two three four five six seven"]               # 1 (the same as bench 0's first)
    train = ["x one two three four five six seven y",           # bench 0 and 3
             "ONE, two; three... four five six!",               # 6 tokens
             "two three four five six seven eight nine",        # bench 0
             "alpha-beta-gamma-delta-epsilon-zeta-eta theta",   # bench 1
             "alpha beta gamma delta epsilon zeta",             # 6 tokens
             "a one two three four five six seven",             # "a" is no token: bench 0 and 3
             "one two three four five six sevenx",              # 7 tokens, no shared 7-gram
             ""]
    sources = ["s1", "s1", "s2", "s2", "s2", "s1", "s1", None]
    index = decontam.build_index(bench)
    assert len(index) == 3 and index.n_prompts == 4
    assert decontam.contaminated(train, index).tolist() == [True, False, True, True, False, True, False, False]
    rep = decontam.report(train, index, sources=sources, benchmark_subsets=["a", "b", "a", "c"],
                          benchmark_prompts=bench)
    assert rep["sources"] == [
        {"source": "s1", "scanned": 4, "contaminated": 2, "too_short": 1, "benchmark_rows_matched": 2,
         "benchmark_prompts_matched": 2, "benchmark_subsets": {"a": 1, "c": 1}},
        {"source": "s2", "scanned": 3, "contaminated": 2, "too_short": 1, "benchmark_rows_matched": 2,
         "benchmark_prompts_matched": 2, "benchmark_subsets": {"a": 1, "b": 1}},
        {"source": None, "scanned": 1, "contaminated": 0, "too_short": 1, "benchmark_rows_matched": 0,
         "benchmark_prompts_matched": 0, "benchmark_subsets": {}},
    ]
    assert rep["total"] == {"source": "total", "scanned": 8, "contaminated": 4, "too_short": 3,
                            "benchmark_rows_matched": 3, "benchmark_prompts_matched": 3,
                            "benchmark_subsets": {"a": 1, "b": 1, "c": 1}}
    assert decontam.report(train, index)["sources"][0]["source"] == "all"
    empty = decontam.build_index(["too short", None])
    assert len(empty) == 0 and not decontam.contaminated(train, empty).any()


def test_prompts_from_messages():
    msg = lambda role, content: {"role": role, "content": content}  # noqa: E731
    convs = [
        [msg("user", "Hi there"), msg("assistant", "Hello")],
        [msg("system", "Be brief"), msg("user", "First"), msg("assistant", "A"), msg("user", "Second"),
         msg("assistant", "B")],
        None,
        [msg("assistant", "no user turn")],
        [msg("user", None), msg("user", "only this"), msg("assistant", "x")],
        [],
        [msg("user", "ends with the user")],
    ]
    arr = pa.array([[msg("user", "dropped by the slice")]] + convs).slice(1)
    assert decontam.prompts_from_messages(arr).to_pylist() == [
        "Hi there", "First\nSecond", "", "", "only this", "", "ends with the user"]
    assert decontam.prompts_from_messages(pa.chunked_array([arr.slice(0, 2), arr.slice(2)]),
                                          turns="last").to_pylist() == [
        "Hi there", "Second", "", "", "only this", "", "ends with the user"]
    with pytest.raises(TypeError, match="role and content"):
        decontam.prompts_from_messages(pa.array([[{"text": "x"}]]))


# ---------------------------------------------------------------------------------------------------
# The fixture: Skywork-80K copy vs the RewardBench copy

# (source, scanned, contaminated, benchmark rows matched), checked against scikit-learn below
FIXTURE_GOLDEN = [("magpie_pro_llama3.1", 260, 51, 37), ("magpie_ultra", 261, 66, 42), ("wildguard", 201, 35, 18),
                  ("magpie_pro", 101, 9, 8), ("helpsteer2", 160, 34, 21), ("offsetbias", 142, 18, 13),
                  ("magpie_air", 60, 23, 27), (None, 1, 0, 0)]
FIXTURE_TOTAL = ("total", 1186, 236, 81)


def fixture_prompts():
    train = pq.read_table(SKYWORK)
    bench = pq.read_table(REWARDBENCH)
    return train, bench


def test_fixture_report_golden_and_equal_sklearn():
    train, bench = fixture_prompts()
    prompts = decontam.prompts_from_messages(train.column("chosen"))
    index = decontam.build_index(bench.column("prompt"))
    rep = decontam.report(prompts, index, sources=train.column("source"), benchmark_subsets=bench.column("subset"))
    got = [(s["source"], s["scanned"], s["contaminated"], s["benchmark_rows_matched"]) for s in rep["sources"]]
    assert got == FIXTURE_GOLDEN
    t = rep["total"]
    assert (t["source"], t["scanned"], t["contaminated"], t["benchmark_rows_matched"]) == FIXTURE_TOTAL

    # independently: prompt texts in plain Python, scikit-learn's overlap, counted per source
    rows = train.to_pylist()
    texts = ["\n".join(m["content"] for m in (r["chosen"] or []) if m["role"] == "user" and m["content"] is not None)
             for r in rows]
    mask, pairs = sklearn_overlap(texts, bench.column("prompt").to_pylist())
    assert np.array_equal(index.scan(prompts).mask, mask)
    for source, scanned, contaminated, matched in FIXTURE_GOLDEN:
        mine = [i for i, r in enumerate(rows) if r["source"] == source]
        assert len(mine) == scanned and int(mask[mine].sum()) == contaminated
        assert len({b for t_, b in pairs if rows[t_]["source"] == source}) == matched
    subsets = bench.column("subset").to_pylist()
    assert t["benchmark_subsets"] == dict(sorted(Counter(subsets[b] for b in {b for _, b in pairs}).items()))


# ---------------------------------------------------------------------------------------------------
# The command

def test_cli_end_to_end(tmp_path):
    out = tmp_path / "out"
    proc = run_cli(["-m", "repro.decontaminate", "fixture:skywork80k", "--messages-column", "chosen",
                    "--source-column", "source", "--benchmark", "fixture:reward-bench", "--out", str(out),
                    "--write-clean"], tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()  # the human-readable table; stdout is the JSON result
    assert lines[0].split()[:4] == ["source", "scanned", "too", "short"]
    total = next(line for line in lines if line.startswith("total")).split()
    assert [total[1], total[3], total[5]] == ["1186", str(FIXTURE_TOTAL[2]), str(FIXTURE_TOTAL[3])]
    assert any(line.startswith("magpie_ultra") and line.split()[3] == "66" for line in lines)

    rep = json.loads((out / "report.json").read_text())
    assert rep["total"]["contaminated"] == 236 and rep["total"]["benchmark_rows_matched"] == 81
    assert [s["source"] for s in rep["sources"]] == [g[0] for g in FIXTURE_GOLDEN]
    assert rep["train"]["rows"] == 1186 and rep["benchmark"]["rows"] == 192 and rep["clean"]["rows"] == 950

    train, bench = fixture_prompts()
    texts = ["\n".join(m["content"] for m in (r or []) if m["role"] == "user" and m["content"] is not None)
             for r in train.column("chosen").to_pylist()]
    mask, pairs = sklearn_overlap(texts, bench.column("prompt").to_pylist())
    flagged = pq.read_table(out / "flagged.parquet").to_pylist()
    assert [f["row"] for f in flagged] == np.flatnonzero(mask).tolist()
    ids = bench.column("id").to_pylist()
    assert sorted((f["row"], b) for f in flagged for b in f["benchmark_rows"]) == pairs
    assert all(f["benchmark_ids"] == [ids[b] for b in f["benchmark_rows"]] for f in flagged)
    assert flagged[0]["source"] == train.column("source")[flagged[0]["row"]].as_py()

    clean = pq.read_table(out / "data" / "train-00000-of-00001.parquet")
    assert clean.schema.equals(train.schema) and clean.num_rows == 950
    assert clean.to_pylist() == [r for r, m in zip(train.to_pylist(), mask) if not m]
    from repro.data.hub import load_split

    assert load_split(str(out), "train", columns=["chosen", "source"]).num_rows == 950  # a dataset folder again


def test_cli_data_file_and_prompt_column(tmp_path, capsys):
    from repro.decontaminate import main

    rows = [{"prompt": "x one two three four five six seven y", "src": "a"},
            {"prompt": "nothing in common here at all, really nothing", "src": "a"},
            {"prompt": "Alpha beta gamma delta epsilon zeta eta theta", "src": "b"}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.table({"prompt": ["one two three four five six seven eight",
                                        "alpha beta gamma delta epsilon zeta eta"], "subset": ["s", "t"]}),
                   tmp_path / "bench.parquet")
    rc = main([str(tmp_path / "train.jsonl"), "--prompt-column", "prompt", "--source-column", "src",
               "--benchmark", str(tmp_path / "bench.parquet"), "--benchmark-split", "train", "--out",
               str(tmp_path / "o")])
    assert rc == 0
    rep = json.loads((tmp_path / "o" / "report.json").read_text())
    assert [(s["source"], s["scanned"], s["contaminated"]) for s in rep["sources"]] == [("a", 2, 1), ("b", 1, 1)]
    assert rep["total"]["benchmark_subsets"] == {"s": 1, "t": 1}
    assert pq.read_table(tmp_path / "o" / "flagged.parquet").column("row").to_pylist() == [0, 2]
    assert "total" in capsys.readouterr().out


BENCH = ["--benchmark", "fixture:reward-bench"]


def test_cli_turns_last(tmp_path, capsys):
    """--turns last: only the last user turn of each conversation is the prompt (one fixture pair is
    contaminated only through its first turn)."""
    from repro.decontaminate import main

    assert main(["fixture:skywork80k", "--turns", "last", *BENCH, "--out", str(tmp_path)]) == 0
    rep = json.loads((tmp_path / "report.json").read_text())
    train, bench = fixture_prompts()
    texts = [[m["content"] for m in (r or []) if m["role"] == "user" and m["content"] is not None]
             for r in train.column("chosen").to_pylist()]
    mask, _ = sklearn_overlap([t[-1] if t else "" for t in texts], bench.column("prompt").to_pylist())
    assert rep["total"]["contaminated"] == int(mask.sum()) == FIXTURE_TOTAL[2] - 1
    assert rep["train"]["prompt"] == "chosen (user turns: last)"
    capsys.readouterr()


@pytest.mark.parametrize("argv, words", [
    (["fixture:skywork80k", "--prompt-column", "nope", *BENCH],
     ["train-00000-of-00001.parquet", "missing column", "'nope'", "'chosen', 'rejected', 'source'"]),
    (["fixture:skywork80k", "--source-column", "src", *BENCH], ["missing column", "'src'", "'source'"]),
    (["fixture:skywork80k", "--prompt-column", "chosen", *BENCH], ["not a string column", "--messages-column"]),
    (["fixture:skywork80k", "--messages-column", "source", *BENCH], ["'source'", "list of {role, content}"]),
    (["fixture:reward-bench", "--split", "filtered", "--messages-column", "chosen", *BENCH], ["'chosen'"]),
    (["fixture:skywork80k", "--benchmark", "fixture:skywork80k", "--benchmark-split", "train"],
     ["missing column", "'prompt'"]),
    (["./no/such/folder", *BENCH], ["./no/such/folder", "no such file or folder"]),
    (["/no/such/train.parquet", *BENCH], ["/no/such/train.parquet", "no such file or folder"]),
    (["fixture:nope", *BENCH], ["unknown fixture"]),
    (["fixture:skywork80k", "--split", "test", *BENCH], ["no split 'test'"]),
    (["fixture:skywork80k", *BENCH, "--write-clean"], ["--write-clean needs --out"]),
    (["fixture:skywork80k", *BENCH, "--prompt-column", "a", "--messages-column", "b"], ["not allowed with"]),
    (["fixture:skywork80k", *BENCH, "--turns", "first"], ["--turns", "invalid choice"]),
])
def test_cli_bad_input_is_one_line(argv, words, capsys):
    from repro.decontaminate import main

    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own errors exit from inside parse_args
        rc = e.code
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)


def test_cli_bad_files_one_line(tmp_path, capsys):
    from repro.decontaminate import main

    (tmp_path / "a_file").write_text("x")
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really a parquet file")
    (tmp_path / "notes.txt").write_text("hello")
    cases = [
        (["fixture:skywork80k", *BENCH, "--out", str(tmp_path / "a_file")], ["--out=", "a_file", "is a file"]),
        ([str(tmp_path / "broken.parquet"), *BENCH], ["broken.parquet", "cannot read"]),
        ([str(tmp_path / "notes.txt"), *BENCH], ["notes.txt", "not a dataset folder"]),
        ([str(tmp_path / "broken.parquet"), "--split", "test", *BENCH], ["only the split 'train'"]),
    ]
    for argv, words in cases:
        assert main(argv) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("error: ") and err.count("\n") == 1, err
        assert all(w in err for w in words), (words, err)


def test_cli_bad_input_in_a_real_process(tmp_path):
    """As a user sees it (`datasets`' own log lines included): one line on stderr, exit
    status 2, no traceback, nothing written."""
    (tmp_path / "broken.jsonl").write_text('{"prompt": "fine"}\n{"prompt": broken\n')
    proc = run_cli(["-m", "repro.decontaminate", str(tmp_path / "broken.jsonl"), *BENCH, "--out",
                    str(tmp_path / "o")], tmp_path, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert "broken.jsonl: cannot read" in proc.stderr and not (tmp_path / "o" / "report.json").exists()


def test_cli_issue_form_prints_sorted_ids_as_json(tmp_path):
    """`--train T.jsonl --benchmark B.jsonl --min-n N --max-n M --out DIR`: JSON with the sorted ids of the
    contaminated training rows and of the matched benchmark rows, checked against scikit-learn's
    CountVectorizer(ngram_range=(N, M)) + sparse product (the RewardBench maintainers' script)."""
    train, bench = fixture_prompts()
    bench_rows = [{"id": 1000 + i, "prompt": p} for i, p in enumerate(bench.column("prompt").to_pylist())]
    texts = ["\n".join(m["content"] for m in (r or []) if m["role"] == "user" and m["content"] is not None)
             for r in train.column("chosen").to_pylist()]
    train_rows = [{"id": f"t{i:04d}", "prompt": t} for i, t in enumerate(texts)]
    for name, rows in (("train.jsonl", train_rows), ("bench.jsonl", bench_rows)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    for lo, hi in ((7, 13), (5, 9)):
        out = tmp_path / f"out{lo}"
        proc = run_cli(["-m", "repro.decontaminate", "--train", str(tmp_path / "train.jsonl"), "--benchmark",
                        str(tmp_path / "bench.jsonl"), "--min-n", str(lo), "--max-n", str(hi), "--out", str(out)],
                       tmp_path, timeout=120)
        assert proc.returncode == 0, proc.stderr[-2000:]
        got = json.loads(proc.stdout)
        assert got == json.loads((out / "decontamination.json").read_text())
        mask, pairs = sklearn_overlap(texts, [r["prompt"] for r in bench_rows], ngram_range=(lo, hi))
        want_train = sorted(train_rows[i]["id"] for i in np.flatnonzero(mask))
        want_bench = sorted({bench_rows[b]["id"] for _, b in pairs})
        assert got["train_contaminated"] == want_train and got["train_contaminated_count"] == len(want_train) > 0
        assert got["benchmark_matched"] == want_bench and got["benchmark_matched_count"] == len(want_bench) > 0
        assert got["ngram_range"] == [lo, hi]
    proc = run_cli(["-m", "repro.decontaminate", "--train", str(tmp_path / "train.jsonl"), "--min-n", "9",
                    "--max-n", "7"], tmp_path)
    assert proc.returncode == 2 and "need 1 <= min-n <= max-n" in proc.stderr
