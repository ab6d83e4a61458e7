"""Decontaminate any dataset against a benchmark: `python -m repro.decontaminate [--train] TRAIN [options]`.

A training prompt is contaminated if it shares a word n-gram of length 7..13 (`--min-n`, `--max-n`) with
any benchmark prompt (the RewardBench maintainers' rule, scikit-learn `CountVectorizer` tokenisation;
`repro.data.decontam`).

    --train TRAIN         (or TRAIN as the first argument) a Hub id, a local folder laid out like the Hub
                          repo, `fixture:<name>`, or one .parquet / .jsonl / .json file (optionally .gz),
                          e.g. a JSONL file with `id` and `prompt` fields
    --min-n, --max-n      the n-gram lengths (default 7 and 13); sharing an n-gram of length min-n..max-n
                          is sharing a min-n-gram, so --max-n only needs to be >= --min-n
    --id-column           the training rows' ids (default `id` where the data has it, else the row index);
                          the benchmark's ids are its `id` column (else its row index)
    --split               split of TRAIN (default train; a single file is always split train)
    --prompt-column COL   the prompt is a string column, or
    --messages-column COL the prompt is the user turns of a list of {role, content} messages (Skywork-80K's
                          `chosen`); --turns all (default: every user turn, joined with "\\n") or last.
                          Neither given: a string column `prompt`, else a messages column `chosen`.
    --source-column COL   report per value of this column (Skywork-80K: `source`)
    --benchmark           default allenai/reward-bench (`fixture:reward-bench` offline), --benchmark-split
                          filtered, --benchmark-column prompt; per-subset counts from its `subset` column
    --out DIR             writes report.json and flagged.parquet (row index in the split of every
                          contaminated row, its source value, the benchmark rows and ids it shares an n-gram
                          with); with --write-clean also DIR/data/<split>-00000-of-00001.parquet: the kept
                          rows in the schema they were read with (DIR loads as a dataset folder)

Prints JSON on stdout: `train_contaminated` (sorted ids), `benchmark_matched` (sorted ids of the benchmark
rows that share an n-gram with a training prompt), `train_contaminated_count`, `benchmark_matched_count`
(Table 4's two columns) and the per-source report; with --out the same JSON goes to
DIR/decontamination.json. A per-source table (prompts scanned, too short to match, contaminated,
benchmark prompts matched) goes to stderr. Every bad input is one `error: ...` line on stderr, exit 2.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import time
from pathlib import Path

from repro.data.schema import DataError
from repro.results import OutputDirError, writable_dir

DEFAULT_BENCHMARK = "allenai/reward-bench"
FILE_SUFFIXES = {".parquet": "parquet", ".jsonl": "json", ".json": "json"}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2 (argparse's default prints the usage first)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(2)


def file_builder(path: Path) -> str | None:
    """The `datasets` builder for a single data file ("parquet", "json"), or None if not a known data file."""
    name = path.name.lower()
    if name.endswith(".gz"):
        name = name[:-3]
    return next((b for s, b in FILE_SUFFIXES.items() if name.endswith(s)), None)


@contextlib.contextmanager
def quiet_datasets():
    """No progress bars or log lines from `datasets` while loading: a failure is reported as one line."""
    import datasets
    import datasets.utils.logging as dlog

    bars_off, level = datasets.are_progress_bars_disabled(), dlog.get_verbosity()
    datasets.disable_progress_bars()
    dlog.set_verbosity(logging.CRITICAL)
    try:
        yield
    finally:
        dlog.set_verbosity(level)
        if not bars_off:
            datasets.enable_progress_bars()


def root_cause(e: BaseException) -> str:
    """`Type: message` of the innermost exception of a chain (datasets wraps the reader's own error)."""
    seen = {id(e)}
    while (nxt := e.__cause__ or e.__context__) is not None and id(nxt) not in seen:
        seen.add(id(nxt))
        e = nxt
    return f"{type(e).__name__}: {e}"


def load_table(path: str, split: str, columns: list[str], *, name: str | None = None, data_dir: str | None = None):
    """(pyarrow Table of the split, the files it came from or a label) through `datasets.load_dataset`."""
    with quiet_datasets():
        return _load_table(path, split, columns, name=name, data_dir=data_dir)


def _load_table(path: str, split: str, columns: list[str], *, name: str | None = None, data_dir: str | None = None):
    from repro.data.hub import file_columns, load_split, split_files
    from repro.fixtures import resolve

    try:
        where = resolve(path)
    except FileNotFoundError as e:
        raise DataError(str(e)) from None
    p = Path(where).expanduser()
    if p.is_file():
        builder = file_builder(p)
        if builder is None:
            raise DataError(f"{p}: not a dataset folder or a .parquet/.jsonl/.json(.gz) file")
        if split != "train":
            raise DataError(f"{p}: a single data file has only the split 'train', not {split!r}")
        if name is not None or data_dir is not None:
            raise DataError(f"{p}: --config and --data-dir apply to dataset folders and Hub ids, not to one file")
        have = file_columns(str(p))
        missing = [c for c in columns if have is not None and c not in have]
        if missing:
            raise DataError(f"{p}: missing column(s) {missing}; it has {have}")
        import datasets

        try:
            ds = datasets.load_dataset(builder, data_files=str(p), split="train")
        except Exception as e:  # noqa: BLE001 - any reader failure becomes one line naming the file
            raise DataError(f"{p}: cannot read ({root_cause(e)})") from None
        if missing := [c for c in columns if c not in ds.column_names]:
            raise DataError(f"{p}: missing column(s) {missing}; it has {ds.column_names}")
        files = [str(p)]
    else:
        if not p.exists() and (where.startswith((".", "/", "~")) or p.suffix.lower() in (*FILE_SUFFIXES, ".gz")):
            raise DataError(f"{where}: no such file or folder")
        ds = load_split(path, split, name=name, data_dir=data_dir, columns=columns, project=False)
        files = split_files(path, split, name=name, data_dir=data_dir) or [f"{where} split {split!r}"]
    table = ds.data.table if getattr(ds, "_indices", None) is None else ds.with_format("arrow")[:]
    return table, files


def where_label(files: list[str]) -> str:
    return files[0] if len(files) == 1 else f"{files[0]} (+{len(files) - 1} more file(s))"


def pick_prompt(table, files: list[str], prompt_column: str | None, messages_column: str | None) -> tuple[str, str]:
    """(kind "string" or "messages", column), checking the column's type."""
    import pyarrow as pa

    from repro.data.decontam import check_messages_type

    cols = table.column_names
    if prompt_column is None and messages_column is None:
        if "prompt" in cols and (pa.types.is_string(table.schema.field("prompt").type)
                                 or pa.types.is_large_string(table.schema.field("prompt").type)):
            prompt_column = "prompt"
        elif "chosen" in cols and check_messages_type(table.schema.field("chosen").type) is None:
            messages_column = "chosen"
        else:
            raise DataError(f"{where_label(files)}: no string column 'prompt' and no messages column 'chosen'; "
                            f"say where the prompt is with --prompt-column or --messages-column (columns: {cols})")
    if prompt_column is not None:
        t = table.schema.field(prompt_column).type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)
                or pa.types.is_null(t)):
            hint = " (a list of messages: use --messages-column)" if check_messages_type(t) is None else ""
            raise DataError(f"{where_label(files)}: --prompt-column {prompt_column!r} is {t}, not a string "
                            f"column{hint}")
        return "string", prompt_column
    problem = check_messages_type(table.schema.field(messages_column).type)
    if problem:
        raise DataError(f"{where_label(files)}: --messages-column {messages_column!r}: {problem}")
    return "messages", messages_column


def format_report(rep: dict) -> str:
    has_prompts = "benchmark_prompts_matched" in rep["total"]
    width = max(16, *(len(str(s["source"])) + 2 for s in rep["sources"]))
    head = (f"{'source':<{width}}{'scanned':>9}{'too short':>11}{'contaminated':>14}{'%':>7}"
            f"{'benchmark rows matched':>24}" + (f"{'(distinct prompts)':>20}" if has_prompts else ""))
    lines = [head]
    for s in [*rep["sources"], rep["total"]]:
        pct = 100 * s["contaminated"] / s["scanned"] if s["scanned"] else 0.0
        name = "(none)" if s["source"] is None else str(s["source"])
        lines.append(f"{name:<{width}}{s['scanned']:>9}{s['too_short']:>11}{s['contaminated']:>14}{pct:>7.2f}"
                     f"{s['benchmark_rows_matched']:>24}"
                     + (f"{s['benchmark_prompts_matched']:>20}" if has_prompts else ""))
    subsets = rep["total"].get("benchmark_subsets")
    if subsets:
        lines.append("benchmark rows matched by subset: " + ", ".join(f"{k} {v}" for k, v in subsets.items()))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = _Parser(prog="python -m repro.decontaminate", description=__doc__.splitlines()[0])
    ap.add_argument("train_pos", nargs="?", metavar="TRAIN",
                    help="Hub id, local dataset folder, fixture:<name>, or a data file (or --train)")
    ap.add_argument("--train", dest="train_opt", metavar="TRAIN", help="the same as TRAIN")
    ap.add_argument("--min-n", type=int, default=7, help="shortest shared word n-gram that contaminates (7)")
    ap.add_argument("--max-n", type=int, default=13, help="longest n-gram of the rule (13; >= --min-n)")
    ap.add_argument("--id-column", help="column of the training rows' ids (default: id, if present)")
    ap.add_argument("--split", default="train")
    ap.add_argument("--config", default=None, help="dataset config name of TRAIN (load_dataset's name)")
    ap.add_argument("--data-dir", default=None, help="data_dir of TRAIN (load_dataset's data_dir)")
    where = ap.add_mutually_exclusive_group()
    where.add_argument("--prompt-column", help="string column holding the prompt")
    where.add_argument("--messages-column", help="list-of-{role, content} column; prompt = its user turns")
    ap.add_argument("--turns", choices=("all", "last"), default="all",
                    help="with --messages-column: all user turns joined with a newline (default), or the last")
    ap.add_argument("--source-column", help="report per value of this column")
    ap.add_argument("--benchmark", default=DEFAULT_BENCHMARK, help=f"default {DEFAULT_BENCHMARK}")
    ap.add_argument("--benchmark-split", default=None, help="default filtered (train for a single data file)")
    ap.add_argument("--benchmark-column", default="prompt")
    ap.add_argument("--benchmark-subset-column", default="subset",
                    help="per-subset counts from this benchmark column, if it has it ('' for none)")
    ap.add_argument("--out", type=Path, help="folder for report.json, flagged.parquet (and the clean split)")
    ap.add_argument("--write-clean", action="store_true", help="write the kept rows to OUT/data/")
    args = ap.parse_args(argv)
    if (args.train_pos is None) == (args.train_opt is None):
        ap.error("give the training data once: TRAIN or --train TRAIN")
    args.train = args.train_pos or args.train_opt
    if not 1 <= args.min_n <= args.max_n:
        ap.error(f"--min-n {args.min_n} --max-n {args.max_n}: need 1 <= min-n <= max-n")
    if args.write_clean and args.out is None:
        ap.error("--write-clean needs --out (the folder to write the kept rows to)")
    if args.turns != "all" and args.prompt_column is not None:
        ap.error("--turns applies to --messages-column only")
    try:
        if args.out is not None:
            writable_dir(args.out, "--out")  # before any loading: a bad --out fails at once
        rep, outputs = run(args)
    except (DataError, OutputDirError, OSError) as e:
        print("error: " + " ".join(str(e).split()), file=sys.stderr)  # one line, whatever the message
        return 2
    print(format_report(rep), file=sys.stderr)
    t = rep["timing_seconds"]
    print(f"{rep['train']['rows']} prompts ({rep['train']['prompt']}) against {rep['benchmark']['rows']} benchmark "
          f"prompts ({rep['benchmark']['path']} split {rep['benchmark']['split']!r}, {rep['benchmark']['ngrams']} "
          f"distinct {args.min_n}-grams): {rep['total']['contaminated']} contaminated; scan {t['scan']:.2f} s",
          file=sys.stderr)
    if outputs:
        print(f"wrote {args.out}/ ({', '.join(outputs)})", file=sys.stderr)
    print(json.dumps(rep["ids"]))
    return 0


def _sorted_ids(values: list) -> list:
    """Ids sorted: numbers numerically, anything else as text."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return sorted(values)
    return sorted(values, key=str)


def run(args) -> tuple[dict, list[str]]:
    import numpy as np
    import pyarrow as pa

    from repro.data import decontam
    from repro.results import atomic_write_json, atomic_write_parquet

    columns = [c for c in (args.prompt_column, args.messages_column, args.source_column, args.id_column) if c]
    table, files = load_table(args.train, args.split, columns, name=args.config, data_dir=args.data_dir)
    kind, column = pick_prompt(table, files, args.prompt_column, args.messages_column)
    if args.source_column and args.source_column not in table.column_names:
        raise DataError(f"{where_label(files)}: missing column {args.source_column!r}; it has {table.column_names}")

    bench_cols = [args.benchmark_column]
    if args.benchmark_split is None:  # a single data file has one split, train; a dataset: RewardBench's filtered
        from repro.fixtures import resolve

        args.benchmark_split = "train" if Path(resolve(args.benchmark)).expanduser().is_file() else "filtered"
    try:
        btable, bfiles = load_table(args.benchmark, args.benchmark_split, bench_cols)
    except DataError as e:
        if "offline" not in str(e).lower() and "connection" not in str(e).lower():
            raise
        raise DataError(f"{e} (no network? --benchmark also takes a local copy of the dataset folder, "
                        f"or fixture:reward-bench)") from None
    bt = btable.schema.field(args.benchmark_column).type
    if not (pa.types.is_string(bt) or pa.types.is_large_string(bt)):
        raise DataError(f"{where_label(bfiles)}: benchmark column {args.benchmark_column!r} is {bt}, not a string column")
    subsets = btable.column(args.benchmark_subset_column) \
        if args.benchmark_subset_column and args.benchmark_subset_column in btable.column_names else None
    bench_ids = btable.column("id").to_numpy() if "id" in btable.column_names else None

    t0 = time.perf_counter()
    bench_prompts = btable.column(args.benchmark_column)
    index = decontam.build_index(bench_prompts, n=args.min_n)
    t1 = time.perf_counter()
    prompts = table.column(column) if kind == "string" else decontam.prompts_from_messages(table.column(column),
                                                                                             args.turns)
    sources = None
    if args.source_column:
        sources = table.column(args.source_column)
        if not (pa.types.is_string(sources.type) or pa.types.is_large_string(sources.type)):
            try:
                sources = sources.cast(pa.string())  # labels must be text in report.json
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise DataError(f"{where_label(files)}: --source-column {args.source_column!r} is {sources.type}; "
                                f"it needs values that read as text (strings, numbers)") from None
    scan = index.scan(prompts)
    rep = decontam.report(prompts, index, sources=sources, benchmark_subsets=subsets,
                          benchmark_prompts=bench_prompts, scan=scan)
    t2 = time.perf_counter()
    train_rows, bench_rows = scan.benchmark_pairs()
    id_col = args.id_column or ("id" if "id" in table.column_names else None)
    flagged_rows = np.flatnonzero(scan.mask)
    train_ids = (table.column(id_col).take(pa.array(flagged_rows)).to_pylist() if id_col
                 else flagged_rows.tolist())
    matched = np.unique(bench_rows)
    bench_matched = bench_ids[matched].tolist() if bench_ids is not None else matched.tolist()
    ids = {"train_contaminated": _sorted_ids(train_ids), "benchmark_matched": _sorted_ids(bench_matched),
           "train_contaminated_count": len(train_ids), "benchmark_matched_count": len(bench_matched),
           "ngram_range": [args.min_n, args.max_n], "train": args.train, "train_rows": table.num_rows,
           "train_id_column": id_col, "benchmark": args.benchmark, "benchmark_split": args.benchmark_split,
           "benchmark_rows": btable.num_rows, "benchmark_id_column": "id" if bench_ids is not None else None}
    meta = {
        "rule": {"ngram_range": [args.min_n, args.max_n], "token_pattern": decontam.TOKEN_PATTERN,
                 "lowercase": True, "strip_accents": None,
                 "contaminated": f"shares at least one word n-gram of length {args.min_n}..{args.max_n} with a "
                                 "benchmark prompt"},
        "train": {"path": args.train, "split": args.split, "files": files, "rows": table.num_rows,
                  "prompt": f"{column} ({'string' if kind == 'string' else 'user turns: ' + args.turns})",
                  "source_column": args.source_column},
        "benchmark": {"path": args.benchmark, "split": args.benchmark_split, "files": bfiles,
                      "column": args.benchmark_column, "rows": btable.num_rows, "ngrams": len(index),
                      "subset_column": args.benchmark_subset_column if subsets is not None else None},
    }
    rep = {**meta, **rep, "timing_seconds": {"index": t1 - t0, "scan": t2 - t1}}
    ids["report"] = {"sources": rep["sources"], "total": rep["total"]}
    outputs = []
    if args.out is not None:
        atomic_write_json(args.out / "decontamination.json", ids)
        outputs.append("decontamination.json")
        flagged = flagged_rows
        starts = np.searchsorted(train_rows, flagged)
        offsets = np.r_[starts, len(train_rows)].astype(np.int64)
        cols = {"row": pa.array(flagged, pa.int64())}
        if args.source_column:
            cols["source"] = sources.take(pa.array(flagged)) if len(flagged) else pa.array([], pa.string())
        cols["benchmark_rows"] = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(bench_rows, pa.int64()))
        if bench_ids is not None:
            cols["benchmark_ids"] = pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(bench_ids[bench_rows]))
        atomic_write_parquet(args.out / "flagged.parquet", pa.table(cols))
        outputs.append("flagged.parquet")
        if args.write_clean:
            clean = f"data/{args.split}-00000-of-00001.parquet"
            atomic_write_parquet(args.out / clean, table.filter(pa.array(~scan.mask)))
            rep["clean"] = {"file": clean, "rows": int((~scan.mask).sum())}
            outputs.append(clean)
        atomic_write_json(args.out / "report.json", rep)
        outputs.insert(0, "report.json")
    rep["ids"] = ids
    return rep, outputs


if __name__ == "__main__":
    sys.exit(main())
