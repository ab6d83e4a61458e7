"""Read a Hugging Face dataset from the Hub or from a local folder laid out like the Hub repo.

Both go through `datasets.load_dataset(path, ...)`, so the fixture folders shipped with the package
exercise the same code that reads the real data. Failures become one `DataError` line naming the
dataset (and the key that is missing), never a bare traceback from inside `datasets`.
"""
from __future__ import annotations

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
               columns: Iterable[str] = ()):
    """`load_dataset(path, name, data_dir=..., split=split)` with clear errors and a column check."""
    import datasets

    where = resolve(path)
    if looks_local(where) and not Path(where).expanduser().is_dir():
        raise DataError(f"{where}: dataset folder not found")
    label = where if name is None else f"{where} (config {name})"
    try:
        ds = datasets.load_dataset(where, name, data_dir=data_dir, split=split)
    except ValueError as e:
        if "split" in str(e).lower():
            raise DataError(f"{label}: no split {split!r} ({e})") from None
        raise DataError(f"{label}: cannot load dataset ({type(e).__name__}: {e})") from None
    except Exception as e:  # noqa: BLE001 - surface any reader failure as one clear line
        raise DataError(f"{label}: cannot load dataset ({type(e).__name__}: {e})") from None
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        files = split_files(path, split, name=name, data_dir=data_dir)
        raise DataError(f"{label} split {split!r}: missing column(s) {missing}; found {ds.column_names}"
                        + (f" (files: {', '.join(files)})" if files else ""))
    return ds


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
