"""Recipe -> curated dataset + manifest.

`curate(data_cfg, cache_root)` loads every configured source through the registry, drops bad pairs with
a counted reason, concatenates, and writes `pairs.parquet` + `manifest.json` into a cache folder keyed
by a hash of the data config and the curation code version, so sweeps over losses or seeds reuse it.
The manifest lists, per source, rows read, pairs kept and drops by reason, and the SHA-256 of the
curated rows, so two curations can be compared by a glance at their manifests. The cache key also covers
the data code and the files of local source folders, so an edited loader or dataset is curated afresh.

Duplicate pairs: a pair whose (prompt messages, chosen, rejected) equals an earlier pair's, within one
source or across the sources of the mixture, is a duplicate. `data.duplicates: drop` (the default) keeps
the first occurrence in source order, then row order, and counts the rest as the per-source drop reason
"duplicate pair"; `keep` trains on every copy. Either way the manifest's `duplicates` entry counts them,
so what is trained never changes silently. Pairs are compared by the SHA-256 of their canonical JSON: one
pass, holding one 32-byte digest per distinct pair (~100 bytes with Python's overhead; 700K pairs ~70 MB).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from repro.data.schema import PAIR_COLUMNS
from repro.results import atomic_write_json, atomic_write_parquet

log = logging.getLogger(__name__)

# Bump when a data step changes what it outputs: it invalidates every cached curation.
# 2: duplicate pairs across the mixture are dropped (data.duplicates) and counted in the manifest.
CURATION_VERSION = 2
DUPLICATE_REASON = "duplicate pair"

_MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])
PAIR_SCHEMA = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("prompt", pa.list_(_MESSAGE)), ("chosen", pa.string()),
    ("rejected", pa.string()), ("category", pa.string()), ("score", pa.float64()),
])
assert tuple(PAIR_SCHEMA.names) == PAIR_COLUMNS


def code_fingerprint() -> str:
    """Hash of the data code (every .py under repro/data): editing a loader or a rule invalidates the cache."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode() + f.read_bytes())
    return h.hexdigest()[:16]


def source_fingerprint(path: str) -> list:
    """(file, size, mtime) of every file of a local dataset folder; Hub ids are left to `datasets`' own cache."""
    from repro.data.hub import looks_local
    from repro.fixtures import resolve

    folder = Path(resolve(path)).expanduser()
    if not looks_local(str(folder)) or not folder.is_dir():
        return []
    return [(f.relative_to(folder).as_posix(), f.stat().st_size, f.stat().st_mtime_ns)
            for f in sorted(folder.rglob("*")) if f.is_file()]


def data_key(data_cfg) -> str:
    """Cache key: the data config, the data code, and the state of local source files."""
    blob = json.dumps({"cfg": dataclasses.asdict(data_cfg), "version": CURATION_VERSION, "code": code_fingerprint(),
                       "files": [source_fingerprint(s.path) for s in data_cfg.sources]}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pairs_sha256(pairs: list[dict]) -> str:
    h = hashlib.sha256()
    for p in pairs:
        h.update(json.dumps([p[c] for c in PAIR_COLUMNS], sort_keys=True).encode())
    return h.hexdigest()


def pair_digest(pair: dict) -> bytes:
    """Identity of a pair for duplicate detection: SHA-256 of its (prompt, chosen, rejected) as canonical JSON."""
    return hashlib.sha256(json.dumps([pair["prompt"], pair["chosen"], pair["rejected"]],
                                     sort_keys=True).encode()).digest()


def source_labels(sources) -> list[str]:
    """Manifest keys for the configured sources: the name, or `name[i]` where two sources share a name."""
    names = [s.name for s in sources]
    return [n if names.count(n) == 1 else f"{n}[{i}]" for i, n in enumerate(names)]


def build(data_cfg) -> tuple[list[dict], dict]:
    """Load and clean every source: (curated pairs, manifest). Pure apart from reading the sources."""
    from repro.data.sources import SOURCES

    drop_duplicates = data_cfg.duplicates == "drop"
    seen: set[bytes] = set()
    pairs, per_source, duplicates = [], [], {}
    for src, label in zip(data_cfg.sources, source_labels(data_cfg.sources)):
        got, drops = SOURCES[src.name](src.path, src.split)
        drops = Counter(drops)
        rows_read = len(got) + sum(drops.values())
        kept, found = [], 0
        for p in got:
            digest = pair_digest(p)
            if digest in seen:
                found += 1
                if drop_duplicates:
                    continue
            else:
                seen.add(digest)
            kept.append(p)
        if drop_duplicates and found:
            drops[DUPLICATE_REASON] += found
        duplicates[label] = found
        per_source.append({"name": src.name, "path": src.path, "split": src.split,
                           "rows_read": rows_read, "kept": len(kept), "dropped": dict(sorted(drops.items())),
                           "duplicates": found})
        log.info("source %s (%s): kept %d, dropped %d %s; %d duplicate pair(s) (%s)", src.name, src.path,
                 len(kept), sum(drops.values()), dict(drops) or "", found, data_cfg.duplicates)
        pairs += kept
    found = sum(duplicates.values())
    by_source = Counter(p["source"] for p in pairs)
    manifest = {
        "data": data_cfg.name,
        "curation_version": CURATION_VERSION,
        "sources": per_source,
        "pairs": len(pairs),
        "pairs_by_source_value": dict(sorted(by_source.items())),
        "dropped": sum(sum(s["dropped"].values()) for s in per_source),
        "duplicates": {"policy": data_cfg.duplicates, "found": found,
                       "dropped": found if drop_duplicates else 0, "by_source": duplicates},
        "sha256": pairs_sha256(pairs),
    }
    return pairs, manifest


def write_pairs(path: str | Path, pairs: list[dict]) -> Path:
    return atomic_write_parquet(path, pa.Table.from_pylist(pairs, schema=PAIR_SCHEMA))


def curate(data_cfg, cache_root: str | Path) -> tuple[list[dict], dict, Path]:
    """Curated pairs, their manifest, and the cache folder (reused when the same config was curated)."""
    folder = Path(cache_root) / data_key(data_cfg)
    manifest_path, pairs_path = folder / "manifest.json", folder / "pairs.parquet"
    if manifest_path.is_file() and pairs_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        log.info("curated data cached at %s (%d pairs)", folder, manifest["pairs"])
        return pq.read_table(pairs_path).to_pylist(), manifest, folder
    pairs, manifest = build(data_cfg)
    if not pairs:
        from repro.data.schema import DataError

        raise DataError(f"curation of data={data_cfg.name!r} kept no pairs: {manifest['sources']}")
    # Parallel sweep points curating the same data may race here: each writes the same bytes under its
    # own temp name, and whichever rename lands last leaves a complete entry.
    write_pairs(pairs_path, pairs)
    atomic_write_json(manifest_path, manifest)  # written last: its presence marks a complete cache entry
    return pairs, manifest, folder
