"""Recipe -> curated pair table + manifest: the paper's curation as a chain of table -> table steps.

    candidates      candidate pairs of each source split: one per row, or one per prompt group for sources
                    whose pairs join several rows (HelpSteer2, WildGuardMix); `rows_read` gives the rows
    paired          canonical pairs its loader built (repro/data/sources/; bad candidates counted by reason)
    selected        after Magpie selection (repro.data.select; other sources pass)
    filtered        after WildGuard stage 1 (adversarial only) and stage 2 (a scorer's ranking) (repro.data.stages)
    decontaminated  after removing pairs whose prompt shares a 7-13-gram with the benchmark, for the sources
                    in `data.decontamination.remove_from` (repro.data.decontam)
    kept            after dropping duplicate pairs (`data.duplicates`)

Every step is a pure function of an Arrow table (`repro.data.schema.PAIR_SCHEMA`) plus a drop count by
reason; the manifest holds, per configured source, the pairs left after every step and every drop by
reason, so `candidates - kept = sum of drops` for each source. It also holds the Magpie category table, the
WildGuard stage counts, Table 4's contamination counts, Table 1's statistics, the SHA-256 of the curated
rows and the code version. `curate` caches the result in a folder keyed by a hash of the data config, the
data code and the state of local source folders, so sweeps over losses or seeds reuse it.

Duplicate pairs: a pair whose (prompt messages, chosen, rejected) equals an earlier pair's, within one
source or across the sources of the mixture, is a duplicate. `data.duplicates: drop` (the default) keeps
the first occurrence in source order, then row order, and counts the rest as the drop reason "duplicate
pair"; `keep` trains on every copy. Either way the manifest's `duplicates` entry counts them. Pairs are
compared by the SHA-256 of a length-framed key of their texts (`pair_keys`; one digest per distinct pair).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from repro.data.schema import PAIR_COLUMNS, PAIR_SCHEMA, DataError, rows_read
from repro.results import atomic_write_json, atomic_write_parquet

log = logging.getLogger(__name__)

# Bump when a data step changes what it outputs: it invalidates every cached curation.
# 2: duplicate pairs across the mixture are dropped (data.duplicates) and counted in the manifest.
# 3: raw sources, Magpie selection, WildGuard stages, decontamination; pair table gains scores/adversarial.
CURATION_VERSION = 3
DUPLICATE_REASON = "duplicate pair"
STEPS = ("candidates", "paired", "selected", "filtered", "decontaminated", "kept")
ORIGIN = "_origin"  # transient column: index of the configured source a pair came from
CONTAMINATED = "prompt shares a {n}-gram with {benchmark} (decontamination)"
SCORER_ERROR = "WildGuard stage 2 is on but no scorer was given: curate through `python -m repro.train`, or " \
               "set data.wildguard.scorer to a run dir, Hub id or model folder"
ScoreFn = Callable[[pa.Table], pa.Table]  # WildGuard pairs -> (id, score_chosen, score_rejected)


def code_fingerprint() -> str:
    """Hash of the data code (every .py under repro/data): editing a loader or a rule invalidates the cache."""
    h = hashlib.sha256()
    root = Path(__file__).resolve().parent
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode() + f.read_bytes())
    return h.hexdigest()[:16]


def source_fingerprint(path: str | None) -> list:
    """(file, size, mtime) of every file of a local folder; Hub ids are left to `datasets`' own cache."""
    from repro.data.hub import looks_local
    from repro.fixtures import resolve

    if not path:
        return []
    folder = Path(resolve(path)).expanduser()
    if not looks_local(str(folder)) or not folder.is_dir():
        return []
    return [(f.relative_to(folder).as_posix(), f.stat().st_size, f.stat().st_mtime_ns)
            for f in sorted(folder.rglob("*")) if f.is_file() and ".lock" not in f.name]


def data_key(data_cfg, scorer: str | None = None) -> str:
    """Cache key: the data config, the data code, the state of local source files (and of the scorer)."""
    d = data_cfg.decontamination
    files = [source_fingerprint(s.path) for s in data_cfg.active_sources()]
    if d.remove_from or d.report:
        files.append(source_fingerprint(d.benchmark))
    blob = json.dumps({"cfg": dataclasses.asdict(data_cfg), "version": CURATION_VERSION, "code": code_fingerprint(),
                       "files": files, "scorer": [scorer, source_fingerprint(scorer)]}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _framed(text: pa.Array) -> pa.Array:
    """Each string as "<byte length>:<string>": concatenations of framed strings are unambiguous."""
    return pc.binary_join_element_wise(pc.binary_length(text).cast(pa.string()), ":", text, "")


def pair_keys(batch: pa.RecordBatch | pa.Table) -> pa.Array:
    """The identity of every pair for duplicate detection, built by Arrow kernels (no per-row Python):
    its prompt messages (role, content) then chosen and rejected, each framed by its byte length."""
    prompt = batch.column("prompt")
    if isinstance(prompt, pa.ChunkedArray):
        prompt = prompt.combine_chunks()
    flat = prompt.flatten()
    messages = pc.binary_join_element_wise(_framed(pc.fill_null(flat.field("role"), "")),
                                           _framed(pc.fill_null(flat.field("content"), "")), "")
    offsets = prompt.offsets  # of a sliced array they start past 0, while flatten() starts at its first value
    per_row = pa.ListArray.from_arrays(pc.subtract(offsets, offsets[0]), messages)
    return pc.binary_join_element_wise(_framed(pc.binary_join(per_row, "")), _framed(batch.column("chosen")),
                                       _framed(batch.column("rejected")), "")


def _digests(table: pa.Table) -> list[bytes]:
    """SHA-256 of every pair's key (`pair_keys`), a batch at a time."""
    out = []
    for batch in table.select(["prompt", "chosen", "rejected"]).to_batches(max_chunksize=8192):
        out += [hashlib.sha256(k).digest() for k in pair_keys(batch).cast(pa.binary()).to_pylist()]
    return out


def table_sha256(table: pa.Table) -> str:
    """SHA-256 of the rows of a pair table (the PAIR_COLUMNS of each row as canonical JSON, in order)."""
    h = hashlib.sha256()
    for batch in table.select(list(PAIR_COLUMNS)).to_batches(max_chunksize=8192):
        for row in zip(*(batch.column(c).to_pylist() for c in PAIR_COLUMNS)):
            h.update(json.dumps(list(row), sort_keys=True).encode())
    return h.hexdigest()


def pairs_sha256(pairs: list[dict]) -> str:
    return table_sha256(pa.Table.from_pylist(pairs, schema=PAIR_SCHEMA))


def source_labels(sources) -> list[str]:
    """Manifest keys for the configured sources: the name, or `name[i]` where two sources share a name."""
    names = [s.name for s in sources]
    return [n if names.count(n) == 1 else f"{n}[{i}]" for i, n in enumerate(names)]


class _Ledger:
    """Per configured source: pairs left after each step and drops by reason."""

    def __init__(self, n: int):
        self.counts = [dict.fromkeys(STEPS, 0) for _ in range(n)]
        self.drops = [Counter() for _ in range(n)]
        self.rows: list[int | None] = [None] * n

    def record(self, step: str, table: pa.Table) -> None:
        origin = table.column(ORIGIN).to_numpy(zero_copy_only=False)
        for i, c in enumerate(np.bincount(origin, minlength=len(self.counts)).tolist()):
            self.counts[i][step] = c

    def drop(self, table: pa.Table, masks: dict[str, np.ndarray]) -> pa.Table:
        """`table` without the rows the {reason: rows to drop} masks mark, each drop counted per source."""
        from repro.data.select import drop

        origin = table.column(ORIGIN).to_numpy(zero_copy_only=False)
        for reason, m in masks.items():
            for i, c in enumerate(np.bincount(origin[m], minlength=len(self.counts)).tolist()):
                if c:
                    self.drops[i][reason] += c
        return drop(table, masks)[0]


def _load_sources(data_cfg, ledger: _Ledger) -> pa.Table:
    from repro.data.sources import SOURCES

    tables = []
    from tqdm.auto import tqdm

    active = data_cfg.active_sources()
    for i, src in enumerate(tqdm(active, desc="read sources", unit="source", leave=False)):
        try:
            table, drops = SOURCES[src.name](src.path, src.split, **src.options)
        except TypeError as e:
            if "unexpected keyword" in str(e):
                raise DataError(f"data.sources[{i}] ({src.name}): {e}".replace("load() ", "")) from None
            raise
        n = table.num_rows
        ledger.counts[i]["candidates"] = n + sum(drops.values())
        ledger.rows[i] = rows_read(table)
        ledger.counts[i]["paired"] = n
        ledger.drops[i].update(drops)
        tables.append(table.append_column(ORIGIN, pa.array(np.full(n, i, dtype=np.int32))))
        log.info("source %s (%s, %s): %d rows -> %d pairs %s", src.name, src.path, src.split, n + sum(drops.values()),
                 n, dict(drops) or "")
    schema = PAIR_SCHEMA.append(pa.field(ORIGIN, pa.int32()))
    return pa.concat_tables([t.cast(schema) for t in tables])


def _raw_rows(table: pa.Table, cfg) -> np.ndarray:
    """Rows read by a raw-source loader (selection and the WildGuard stages skip already curated sets)."""
    from repro.data.sources import RELEASED

    raw = np.array([s.name not in RELEASED for s in cfg.active_sources()])
    return raw[table.column(ORIGIN).to_numpy(zero_copy_only=False)]


def _magpie(table, cfg, ledger):
    from repro.data import select

    table, scores, masks = select.select(table, cfg.magpie, _raw_rows(table, cfg))
    return ledger.drop(table, masks), scores


def category_table(scores: pa.Table) -> list[dict]:
    """The Magpie category table: per category, pairs pooled and kept, and the kept share (%)."""
    if not scores.num_rows:
        return []
    df = scores.select(["category", "kept"]).to_pandas()
    g = df.groupby("category", dropna=True)["kept"].agg(["size", "sum"])
    total = int(g["sum"].sum())
    rows = [{"category": c, "pairs": int(r["size"]), "kept": int(r["sum"]),
             "percentage": round(100 * r["sum"] / total, 2) if total else 0.0} for c, r in g.iterrows()]
    return sorted(rows, key=lambda r: (-r["kept"], r["category"]))


def _wildguard(table, cfg, ledger, score_fn: ScoreFn | None):
    from repro.data import stages

    w = cfg.wildguard
    report = {"source": w.source, "adversarial_only": w.adversarial_only, "stage2": w.stage2, "scorer": None,
              "pairs": 0, "after_stage1": 0, "after_stage2": None}  # after_stage2: None when stage 2 did not run
    def mine(t):
        return pc.equal(t.column("source"), w.source).to_numpy(zero_copy_only=False) & _raw_rows(t, cfg)

    report["pairs"] = int(mine(table).sum())
    if w.adversarial_only:
        table = ledger.drop(table, stages.adversarial_only(table, w.source, _raw_rows(table, cfg)))
    report["after_stage1"] = int(mine(table).sum())
    scores = None
    if w.stage2 and report["after_stage1"]:
        if score_fn is None:
            raise DataError(SCORER_ERROR)
        scores = score_fn(table.filter(pa.array(mine(table))).drop_columns([ORIGIN]))
        table = ledger.drop(table, stages.scorer_agrees(table, scores, w.source, _raw_rows(table, cfg)))
        report["after_stage2"] = int(mine(table).sum())
    return table, report, scores


def _benchmark_prompts(d) -> tuple[list[str], list[str]]:
    from repro.data.sources import rewardbench as rb_source

    rows = rb_source.load(d.benchmark, d.split, require_all_subsets=False, allow_partial=True)
    return [r["prompt"][-1]["content"] for r in rows], [r["subset"] for r in rows]


def _decontaminate(table, cfg, ledger):
    from repro.data import decontam
    from repro.data.hub import dataset_tag

    d = cfg.decontamination
    if not d.remove_from and not d.report:
        return table, None
    bench, subsets = _benchmark_prompts(d)
    index = decontam.build_index(bench, n=d.min_n)
    prompts = decontam.prompts_from_messages(table.column("prompt"), d.turns)
    scan = index.scan(prompts)
    rep = decontam.report(prompts, index, sources=table.column("source"), benchmark_subsets=subsets,
                          benchmark_prompts=bench, scan=scan)
    remove = scan.mask & np.isin(table.column("source").to_numpy(zero_copy_only=False), list(d.remove_from))
    reason = CONTAMINATED.format(n=f"{d.min_n}-{d.max_n}", benchmark=dataset_tag(d.benchmark))
    contaminated = table.select(["id", "source"]).filter(pa.array(scan.mask)).append_column(
        "removed", pa.array(remove[scan.mask]))
    table = ledger.drop(table, {reason: remove})
    report = {"benchmark": dataset_tag(d.benchmark), "split": d.split, "benchmark_prompts": len(bench),
              "ngram_range": [d.min_n, d.max_n], "turns": d.turns, "remove_from": list(d.remove_from),
              "removed": int(remove.sum()), **rep}
    return table, (report, contaminated)


def _dedupe(table, cfg, ledger) -> tuple[pa.Table, dict]:
    seen: set[bytes] = set()
    dup = np.zeros(table.num_rows, dtype=bool)
    for i, d in enumerate(_digests(table)):
        if d in seen:
            dup[i] = True
        else:
            seen.add(d)
    origin = table.column(ORIGIN).to_numpy(zero_copy_only=False)
    by_source = np.bincount(origin[dup], minlength=len(ledger.counts)).tolist()
    if cfg.duplicates == "drop":
        table = ledger.drop(table, {DUPLICATE_REASON: dup})
    labels = source_labels(cfg.active_sources())
    return table, {"policy": cfg.duplicates, "found": int(dup.sum()),
                   "dropped": int(dup.sum()) if cfg.duplicates == "drop" else 0,
                   "by_source": dict(zip(labels, by_source))}


def build(data_cfg, *, score_fn: ScoreFn | None = None) -> tuple[pa.Table, dict, dict[str, pa.Table]]:
    """Run every step: (curated pair table, manifest, side tables to save: magpie_scores, wildguard_scores,
    contaminated). Pure apart from reading the sources (and calling `score_fn` for WildGuard stage 2)."""
    from repro.data import stats

    from tqdm.auto import tqdm

    ledger = _Ledger(len(data_cfg.active_sources()))
    table = _load_sources(data_cfg, ledger)
    side: dict[str, pa.Table] = {}
    with tqdm(total=len(STEPS) - 2, desc="curate", unit="step", leave=False) as progress:
        progress.set_postfix_str("Magpie selection")
        table, magpie_scores = _magpie(table, data_cfg, ledger)
        ledger.record("selected", table)
        if magpie_scores.num_rows:
            side["magpie_scores"] = magpie_scores
        progress.update()
        progress.set_postfix_str("WildGuard stages")
        table, wildguard, wg_scores = _wildguard(table, data_cfg, ledger, score_fn)
        ledger.record("filtered", table)
        if wg_scores is not None:
            side["wildguard_scores"] = wg_scores
        progress.update()
        progress.set_postfix_str("decontamination")
        table, contamination = _decontaminate(table, data_cfg, ledger)
        ledger.record("decontaminated", table)
        if contamination is not None:
            side["contaminated"] = contamination[1]
        progress.update()
        progress.set_postfix_str("duplicates")
        table, duplicates = _dedupe(table, data_cfg, ledger)
        ledger.record("kept", table)
        progress.update()
    table = table.drop_columns([ORIGIN])
    per_source = []
    active = data_cfg.active_sources()
    for src, label, counts, drops, rows in zip(active, source_labels(active), ledger.counts,
                                         ledger.drops, ledger.rows):
        assert counts["candidates"] - counts["kept"] == sum(drops.values()), (label, counts, drops)
        per_source.append({"name": src.name, "label": label, "path": src.path, "split": src.split,
                           "options": dict(src.options), "rows_read": rows, "kept": counts["kept"],
                           "steps": counts, "dropped": dict(sorted(drops.items())),
                           "duplicates": duplicates["by_source"][label]})
    manifest = {
        "data": data_cfg.name,
        "curation_version": CURATION_VERSION,
        "code_version": code_version(),
        "steps": list(STEPS),
        "excluded": list(data_cfg.exclude),
        "sources": per_source,
        "pairs": table.num_rows,
        "pairs_by_source_value": dict(sorted(Counter(table.column("source").to_pylist()).items())),
        "dropped": sum(sum(s["dropped"].values()) for s in per_source),
        "duplicates": duplicates,
        "magpie": {**dataclasses.asdict(data_cfg.magpie), "categories": category_table(magpie_scores)},
        "wildguard": wildguard,
        "decontamination": contamination[0] if contamination else None,
        "table1": stats.table1(table, data_cfg.stats_tokenizer),
        "sha256": table_sha256(table),
    }
    return table, manifest, side


def code_version() -> dict:
    """The package version, the data code's fingerprint and, in a git checkout, the commit."""
    import subprocess
    from importlib import metadata

    try:
        version = metadata.version("repro")
    except metadata.PackageNotFoundError:
        version = None
    commit = None
    try:
        root = Path(__file__).resolve().parents[2]
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"package": version, "data_code": code_fingerprint(), "git_commit": commit}


def write_pairs(path: str | Path, pairs) -> Path:
    table = pairs if isinstance(pairs, pa.Table) else pa.Table.from_pylist(pairs, schema=PAIR_SCHEMA)
    return atomic_write_parquet(path, table)


def write_curation(folder: str | Path, table: pa.Table, manifest: dict, side: dict[str, pa.Table]) -> None:
    """pairs.parquet, every side table as <name>.parquet, then manifest.json (last: it marks completeness)."""
    folder = Path(folder)
    write_pairs(folder / "pairs.parquet", table)
    for name, t in side.items():
        atomic_write_parquet(folder / f"{name}.parquet", t)
    atomic_write_json(folder / "manifest.json", manifest)


def curate(data_cfg, cache_root: str | Path, *, scorer: str | None = None,
           score_fn: ScoreFn | None = None) -> tuple[list[dict], dict, Path]:
    """Curated pairs, their manifest, and the cache folder (reused when the same config was curated).

    `scorer` names the WildGuard stage-2 scorer (part of the cache key); `score_fn` scores with it."""
    folder = Path(cache_root) / data_key(data_cfg, scorer)
    manifest_path, pairs_path = folder / "manifest.json", folder / "pairs.parquet"
    if manifest_path.is_file() and pairs_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        log.info("curated data cached at %s (%d pairs)", folder, manifest["pairs"])
        return pq.read_table(pairs_path).to_pylist(), manifest, folder
    table, manifest, side = build(data_cfg, score_fn=score_fn)
    if not table.num_rows:
        raise DataError(f"curation of data={data_cfg.name!r} kept no pairs: {manifest['sources']}")
    if scorer:
        manifest["wildguard"]["scorer"] = scorer
    # Parallel sweep points curating the same data may race here: each writes the same bytes under its
    # own temp name, and whichever rename lands last leaves a complete entry.
    write_curation(folder, table, manifest, side)
    return table.to_pylist(), manifest, folder
