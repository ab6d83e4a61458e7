"""Build a curated dataset only: `python -m repro.curate [--data NAME] [--out DIR] [--skywork-format]`.

Reads the data preset `conf/data/NAME.yaml` (plain YAML, validated into `repro.config.DataConfig`),
runs every source loader and curation step, and writes into `--out`:

    pairs.parquet         canonical pairs (id, source, prompt, chosen, rejected, category, score)
    manifest.json         per source: rows read, pairs kept, drops by reason; SHA-256 of the pairs
    train-00000-of-00001.parquet   with --skywork-format: the released Skywork-Reward-Preference-80K layout
                          (chosen/rejected conversations + source), to diff against the released set

and prints the per-source counts, drop reasons and duplicate pairs (`duplicates: drop|keep` in the recipe).
Every error (a broken recipe, an unusable `--out`, bad data) is one line on stderr and exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from repro import config as config_mod
from repro.data.schema import DataError
from repro.results import OutputDirError, writable_dir

CONF_DATA = Path(__file__).resolve().parents[1] / "conf" / "data"


def data_config(name_or_file: str) -> config_mod.DataConfig:
    path = Path(name_or_file)
    if not path.suffix:
        path = CONF_DATA / f"{name_or_file}.yaml"
        if not path.is_file():
            names = sorted(p.stem for p in CONF_DATA.glob("*.yaml"))
            raise config_mod.ConfigError(f"data={name_or_file!r} is not a known preset; valid: {', '.join(names)}")
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
    head = f"{'source':<{width}}" + "".join(f"{st:>15}" for st in steps)
    lines = [head]
    for s in manifest["sources"]:
        lines.append(f"{s['label']:<{width}}" + "".join(f"{s['steps'][st]:>15,}" for st in steps))
    lines.append(f"{'total':<{width}}" + "".join(f"{sum(s['steps'][st] for s in manifest['sources']):>15,}"
                                                for st in steps))
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m repro.curate", description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="fixture", help="a preset name in conf/data/ or a YAML file")
    ap.add_argument("--out", type=Path, default=Path("curated"), help="output folder (default ./curated)")
    ap.add_argument("--skywork-format", action="store_true", help="also write the released 80K parquet layout")
    args = ap.parse_args(argv)
    try:
        import pyarrow as pa

        from repro.data.mixture import build, write_curation
        from repro.data.sources.skywork80k import SCHEMA as SKYWORK_SCHEMA
        from repro.results import atomic_write_parquet

        cfg = data_config(args.data)
        writable_dir(args.out, "--out")  # before curating: a bad --out fails in a second, not after the data
        table, manifest, side = build(cfg)
        if args.skywork_format:
            atomic_write_parquet(args.out / "train-00000-of-00001.parquet",
                                 pa.Table.from_pylist(to_skywork_rows(table.to_pylist()), schema=SKYWORK_SCHEMA))
        write_curation(args.out, table, manifest, side)
    except (config_mod.ConfigError, DataError, OutputDirError, OSError) as e:
        print("error: " + " ".join(str(e).split("\n")), file=sys.stderr)  # one line, whatever the message
        return 2
    print(format_manifest(manifest))
    print(f"wrote {args.out}/ (pairs.parquet, manifest.json{', train-00000-of-00001.parquet' if args.skywork_format else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
