"""Curate a dataset: `python -m repro.curate [--data NAME] [KEY=VALUE ...] [--out DIR] [--skywork-format]
[--compare-to DATASET]`.

Composes the data preset `conf/data/NAME.yaml` (Hydra, so a recipe may build on another) or reads a
self-contained YAML file, runs every source loader and curation step (read -> paired -> selected ->
filtered -> decontaminated -> kept, see `repro.data.mixture`), and writes into `--out`:

    pairs.parquet           canonical pairs (repro.data.schema.PAIR_SCHEMA)
    manifest.json           per source the pairs after every step and drops by reason; Magpie categories,
                            WildGuard stages, Table 4 counts, Table 1 statistics, SHA-256, code version
    magpie_scores.parquet   every Magpie pair's raw and adjusted score, category, rank, kept (Figure 2)
    wildguard_scores.parquet  the stage-2 scorer's scores of every WildGuard pair it judged
    contaminated.parquet    the pairs whose prompt shares a 7-13-gram with the benchmark, and if removed
    *.csv                   the paper artefacts' data (Table 1, Figure 1, Magpie categories, Table 4)
    train-00000-of-00001.parquet   with --skywork-format: the released Skywork-Reward-Preference-80K layout
    compare.json            with --compare-to: per source, pairs in both, only ours, only theirs

A recipe with WildGuard stage 2 and `scorer_run` trains that scorer run first under `--runs-root` (or
reuses it when done). Prints the per-source step table and drop reasons. Every error (a broken recipe,
an unusable `--out`, bad data) is one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from repro import config as config_mod
from repro.data.schema import DataError
from repro.model import ModelError
from repro.results import OutputDirError, writable_dir

CONF_DATA = Path(__file__).resolve().parents[1] / "conf" / "data"


def data_config(name_or_file: str, overrides: list[str] = ()) -> config_mod.DataConfig:
    """A data preset of conf/data/ (composed by Hydra, so a recipe may build on another through its
    `defaults:`) with `overrides` of its keys (`magpie.offsets={}`), or a self-contained YAML file."""
    path = Path(name_or_file)
    if not path.suffix:
        if not (CONF_DATA / f"{name_or_file}.yaml").is_file():
            names = sorted(p.stem for p in CONF_DATA.glob("*.yaml"))
            raise config_mod.ConfigError(f"data={name_or_file!r} is not a known preset; valid: {', '.join(names)}")
        return config_mod.compose([f"data={name_or_file}", *(f"data.{o}" for o in overrides)],
                                  key="--data").data
    if overrides:
        raise config_mod.ConfigError(f"{path}: overrides apply to the presets of conf/data/, not to a YAML file")
    if not path.is_file():
        raise config_mod.ConfigError(f"{path}: data config file not found")
    recipe = config_mod.read_yaml(path)
    if recipe is None:
        recipe = {}
    if not isinstance(recipe, dict):
        raise config_mod.ConfigError(f"{path}: a data recipe must be a mapping of data keys (name, sources, ...), "
                                     f"got {type(recipe).__name__}")
    try:
        cfg = config_mod.build_dataclass(config_mod.DataConfig, recipe, "data")
        config_mod.validate(config_mod.RunConfig(data=cfg))
    except config_mod.ConfigError as e:
        raise config_mod.ConfigError(f"{path}: {e}") from None
    return cfg


def to_skywork_rows(pairs: list[dict]) -> list[dict]:
    """Canonical pairs in the released 80K schema: full conversations and the source string."""
    def conv(prompt, answer):
        return [{"content": m["content"], "role": m["role"]} for m in prompt] + \
            [{"content": answer, "role": "assistant"}]

    return [{"chosen": conv(p["prompt"], p["chosen"]), "rejected": conv(p["prompt"], p["rejected"]),
             "source": p["source"]} for p in pairs]


def format_manifest(manifest: dict) -> str:
    steps = manifest["steps"]
    width = max([len("source")] + [len(s["label"]) for s in manifest["sources"]]) + 2

    def rows(s):
        return "" if s["rows_read"] is None else f"{s['rows_read']:,}"
    head = f"{'source':<{width}}{'rows':>10}" + "".join(f"{st:>15}" for st in steps)
    lines = [head]
    for s in manifest["sources"]:
        lines.append(f"{s['label']:<{width}}{rows(s):>10}" + "".join(f"{s['steps'][st]:>15,}" for st in steps))
    total_rows = sum(s["rows_read"] or 0 for s in manifest["sources"])
    lines.append(f"{'total':<{width}}{total_rows:>10,}" + "".join(
        f"{sum(s['steps'][st] for s in manifest['sources']):>15,}" for st in steps))
    lines.append("(candidates: one per row, or per prompt group where a pair joins rows; "
                 "candidates - kept = the drops below)")
    lines.append("")
    lines.append("drops by reason:")
    for s in manifest["sources"]:
        for reason, n in s["dropped"].items():
            lines.append(f"  {s['label']:<{width}}{n:>9,}  {reason}")
    dup = manifest.get("duplicates")
    if dup:
        lines.append(f"duplicate pairs: {dup['found']} found, {dup['dropped']} dropped (duplicates: {dup['policy']})")
    lines.append("pairs by source value: " + ", ".join(f"{k} {v}" for k, v in manifest["pairs_by_source_value"].items()))
    return "\n".join(lines)


def artefact_tables(manifest: dict) -> dict[str, list[dict]]:
    """The paper artefacts' data from a manifest, one CSV each (measured numbers, never the paper's):

    table1_composition.csv      Table 1: per source pairs, avg turns, avg prompt / response tokens
    figure1_composition.csv     Figure 1: per configured source, pairs before selection (paired) and kept
    magpie_task_categories.csv  the Magpie category table: per category pooled, kept, share of kept (%)
    table4_contamination.csv    Table 4: per source prompts scanned, contaminated, benchmark prompts matched
    (Figure 2 reads magpie_scores.parquet: the adjusted score of every Magpie pair, kept or not.)
    """
    t1 = manifest["table1"]
    tables = {
        "table1_composition": [{**r, "tokenizer": t1["tokenizer"]} for r in [*t1["sources"], t1["total"]]],
        "figure1_composition": [{"source": s["label"], "pool_pairs": s["steps"]["paired"], "kept_pairs": s["kept"]}
                                for s in manifest["sources"]],
        "magpie_task_categories": manifest["magpie"]["categories"],
    }
    d = manifest.get("decontamination")
    if d:
        removed = set(d["remove_from"])
        tables["table4_contamination"] = [
            {"source": e["source"], "prompts_scanned": e["scanned"], "contaminated_prompts": e["contaminated"],
             "benchmark_rows_matched": e["benchmark_rows_matched"],
             "benchmark_prompts_matched": e.get("benchmark_prompts_matched"),
             "removed": e["source"] in removed or (e["source"] == "total" and bool(removed))}
            for e in [*d["sources"], d["total"]]]
    return tables


def write_csv(path: Path, rows: list[dict]) -> None:
    import csv
    import io

    from repro.results import atomic_write_text

    buf = io.StringIO()
    if rows:
        w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    atomic_write_text(path, buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m repro.curate", description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="fixture", help="a preset name in conf/data/ or a YAML file")
    ap.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                    help="overrides of the recipe's keys, as after data. in repro.train: magpie.offsets={} "
                         "wildguard.stage2=false exclude=[wildguard]")
    ap.add_argument("--out", type=Path, default=Path("curated"), help="output folder (default ./curated)")
    ap.add_argument("--skywork-format", action="store_true", help="also write the released 80K parquet layout")
    ap.add_argument("--compare-to", metavar="DATASET",
                    help="a released set in the 80K format (Hub id, e.g. Skywork/Skywork-Reward-Preference-80K-v0.1, "
                         "or a local copy): report per source the pairs in both, only ours, only theirs "
                         "(written to compare.json)")
    ap.add_argument("--runs-root", type=Path, default=Path("runs"),
                    help="where a recipe's WildGuard scorer run is trained or found (default ./runs)")
    args = ap.parse_args(argv)
    try:
        import pyarrow as pa

        from repro.data.mixture import build, write_curation
        from repro.data.sources.skywork80k import SCHEMA as SKYWORK_SCHEMA
        from repro.results import atomic_write_json, atomic_write_parquet

        cfg = data_config(args.data, args.overrides)
        writable_dir(args.out, "--out")  # before curating: a bad --out fails in a second, not after the data
        from repro import scorer

        run_cfg = config_mod.RunConfig(data=cfg, runs_root=str(args.runs_root))
        model = scorer.resolve(run_cfg)  # WildGuard stage 2: trains (or reuses) the recipe's scorer run
        table, manifest, side = build(cfg, score_fn=scorer.score_fn(model, run_cfg) if model else None)
        if model:
            manifest["wildguard"]["scorer"] = model
        if args.skywork_format:
            atomic_write_parquet(args.out / "train-00000-of-00001.parquet",
                                 pa.Table.from_pylist(to_skywork_rows(table.to_pylist()), schema=SKYWORK_SCHEMA))
        comparison = None
        if args.compare_to:
            from repro.data.compare import compare
            from repro.data.sources import skywork80k

            theirs, _ = skywork80k.load(args.compare_to, "train")
            comparison = {"compared_to": args.compare_to, **compare(table, theirs)}
            atomic_write_json(args.out / "compare.json", comparison)
        written = []
        for name, rows in artefact_tables(manifest).items():
            write_csv(args.out / f"{name}.csv", rows)
            written.append(f"{name}.csv")
        write_curation(args.out, table, manifest, side)
        written += ["pairs.parquet", "manifest.json", *(f"{n}.parquet" for n in side)]
        written += ["train-00000-of-00001.parquet"] * args.skywork_format + ["compare.json"] * bool(comparison)
    except (config_mod.ConfigError, DataError, ModelError, OutputDirError, OSError) as e:
        print("error: " + " ".join(str(e).split("\n")), file=sys.stderr)  # one line, whatever the message
        return 2
    print(format_manifest(manifest))
    if comparison:
        from repro.data.compare import format_comparison

        print(format_comparison(comparison, args.compare_to))
    print(f"wrote {args.out}/: {', '.join(sorted(written))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
