"""Read a Hugging Face dataset from the Hub or from a local folder laid out like the Hub repo.

Both go through `datasets.load_dataset(path, ...)`, so the fixture folders shipped with the package
exercise the same code that reads the real data. Failures become one `DataError` line naming the
dataset (and the key that is missing), never a bare traceback from inside `datasets`.

Required columns are checked file by file for local folders before loading: `datasets` fills a column
that one shard lacks with nulls, which would turn a broken shard into rows silently dropped downstream.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
from collections.abc import Callable, Iterable
from pathlib import Path

from repro.data.schema import DataError
from repro.fixtures import resolve


def looks_local(path: str) -> bool:
    return path.startswith((".", "/", "~")) or Path(path).exists()


def dataset_tag(path: str) -> str:
    """A short, machine-independent name for a dataset: the Hub id, `fixture:<name>`, or a folder's name."""
    return Path(path).expanduser().name if looks_local(path) else path


def load_split(path: str, split: str, *, name: str | None = None, data_dir: str | None = None,
               columns: Iterable[str] = (), project: bool = True):
    """`load_dataset(path, name, data_dir=..., split=split)` with clear errors and a check that `columns`
    exist. With `project` (default) a parquet dataset is read with only `columns`; `project=False` keeps
    every column."""
    import datasets

    where = resolve(path)
    if looks_local(where) and not Path(where).expanduser().is_dir():
        raise DataError(f"{where}: dataset folder not found")
    label = where if name is None else f"{where} (config {name})"
    columns = list(columns)
    files = split_files(path, split, name=name, data_dir=data_dir) if columns else []  # resolved once
    if columns and looks_local(where):
        check_file_columns(files, columns, label=f"split {split!r} of {label}")
    # `datasets` keys its cache of a local folder whose README.md declares `configs:` by the folder name and
    # the file patterns only, not the files' contents: an edited copy would be served stale. Such folders
    # are converted afresh on every load, without checking split sizes against that stale cache's record
    # (the Hub's own cache is keyed by commit and is not affected).
    fresh = looks_local(where) and (Path(where).expanduser() / "README.md").is_file()
    kwargs = {"download_mode": "force_redownload", "verification_mode": "no_checks"} if fresh else {}
    if project and files and all(f.endswith(".parquet") for f in files):
        # Parquet: only the loader's columns are read and cached (Magpie Ultra's 1,024-d embeddings and
        # the DPO sets' generation configs never leave their files): a cold load converts far less.
        kwargs["columns"] = columns
    try:
        ds = datasets.load_dataset(where, name, data_dir=data_dir, split=split, **kwargs)
    except ValueError as e:
        if "split" in str(e).lower():
            raise DataError(f"{label}: no split {split!r} ({e})") from None
        raise DataError(f"{label}: cannot load dataset ({type(e).__name__}: {e})") from None
    except Exception as e:  # noqa: BLE001 - surface any reader failure as one clear line
        raise DataError(f"{label}: cannot load dataset ({type(e).__name__}: {e})") from None
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise DataError(f"{label} split {split!r}: missing column(s) {missing}; found {ds.column_names}"
                        + (f" (files: {', '.join(files)})" if files else ""))
    return ds


# How many leading rows of a JSON-lines file are read for its column names (keys may be absent in a row).
JSON_ROWS_FOR_COLUMNS = 1000


def file_columns(file: str) -> list[str] | None:
    """Column names of one local data file, read cheaply; None where unknown (not local, other format, unreadable).

    Parquet: the footer schema. JSON lines (optionally .gz): the union of the keys of the first rows.
    CSV (optionally .gz): the header. An unreadable file is left to `load_dataset`'s own error.
    """
    p = Path(file)
    if not p.is_file():
        return None
    lower = p.name.lower()
    base = lower[:-3] if lower.endswith(".gz") else lower
    try:
        if lower.endswith(".parquet"):
            import pyarrow.parquet as pq

            return pq.read_schema(p).names
        if not base.endswith((".jsonl", ".json", ".csv")):
            return None
        opener = gzip.open if lower.endswith(".gz") else open
        with opener(p, "rb") as raw, io.TextIOWrapper(raw, encoding="utf-8") as f:
            if base.endswith(".csv"):
                return next(csv.reader(f), None)
            keys: dict[str, None] = {}
            for n, line in enumerate(f):
                if n >= JSON_ROWS_FOR_COLUMNS:
                    break
                if line.strip():
                    row = json.loads(line)
                    if not isinstance(row, dict):
                        return None
                    keys.update(dict.fromkeys(row))
            return list(keys) or None
    except Exception:  # noqa: BLE001 - a pretty-printed .json, a corrupt file: load_dataset reports those
        return None


def check_file_columns(files: Iterable[str], columns: Iterable[str], *, label: str) -> None:
    """DataError naming the first local file (of `files`, the split's) that lacks a required column (Hub
    files: skipped)."""
    for f in files:
        have = file_columns(f)
        if have is None:
            continue
        missing = [c for c in columns if c not in have]
        if missing:
            raise DataError(f"{f}: missing column(s) {missing}; it has {have} ({label}: every file needs every "
                            "column)")


def split_files(path: str, split: str, *, name: str | None = None, data_dir: str | None = None) -> list[str]:
    """The data files `datasets` reads for a split (local paths, or hf:// URLs for the Hub); [] if unknown."""
    import datasets

    try:
        data_files = datasets.load_dataset_builder(resolve(path), name, data_dir=data_dir).config.data_files
        return [str(f) for f in (data_files or {}).get(split, [])]
    except Exception:  # noqa: BLE001 - only used to word an error message better
        return []


def row_locator(path: str, split: str, *, name: str | None = None,
                data_dir: str | None = None) -> Callable[[int], str]:
    """A function: row index in the loaded split -> "FILE row N" (the file and its own row number).

    Rows of a split are the concatenation of its files in order; for local parquet files the row counts
    come from the parquet footers. Elsewhere it falls back to the dataset, split and global row index.
    """
    files = split_files(path, split, name=name, data_dir=data_dir)
    spans, start = [], 0
    if files and all(f.endswith(".parquet") and Path(f).is_file() for f in files):
        import pyarrow.parquet as pq

        for f in files:
            n = pq.ParquetFile(f).metadata.num_rows
            spans.append((start, start + n, f))
            start += n

    def locate(i: int) -> str:
        for lo, hi, f in spans:
            if lo <= i < hi:
                return f"{f} row {i - lo}"
        return f"{resolve(path)} split {split!r} row {i}"

    return locate
