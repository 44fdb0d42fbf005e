"""`rcmae` command line: thin wrappers over the library, one subcommand per stage."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from rcmae.config import ConfigError, describe, load_config


def _add_config_args(parser: argparse.ArgumentParser, preset_default: str = "tiny") -> None:
    parser.add_argument("--preset", default=preset_default, choices=["tiny", "paper"],
                        help="config preset (default: %(default)s)")
    parser.add_argument("--config", type=Path, help="YAML config file (overrides --preset)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value, e.g. --set pretrain.epochs=5 (repeatable)")


def _config_from(args: argparse.Namespace):
    import yaml

    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects SECTION.KEY=VALUE, got {item!r}")
        overrides[key] = yaml.safe_load(value)
    return load_config(args.preset, args.config, overrides)


# ---------------------------------------------------------------- subcommands
def cmd_synth(args: argparse.Namespace) -> int:
    from rcmae.data.synth import synthesize

    root = synthesize(args.out, preset=args.preset, seed=args.seed, progress=not args.quiet)
    print(f"wrote {root} and {Path(args.out) / 'manifest.json'}")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from rcmae.data.layout import index_clips

    index = index_clips(args.data, lenient=args.lenient)
    for path, reason in index.skipped:
        print(f"skipped: {reason}", file=sys.stderr)
    if args.out:
        pq.write_table(index.table, args.out)
    counts = index.table.group_by(["machine_type", "split", "label"]).aggregate([("path", "count")])
    for row in sorted(counts.to_pylist(), key=lambda r: (r["machine_type"], r["split"], r["label"])):
        print(f"{row['machine_type']:12s} {row['split']:5s} {row['label']:8s} {row['path_count']}")
    print(f"{len(index)} clips" + (f", {len(index.skipped)} skipped" if index.skipped else ""))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    config = _config_from(args)
    if args.out:
        config.to_yaml(args.out)
        print(f"wrote {args.out}")
    else:
        print(describe(config))
    return 0


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rcmae", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synth", help="write the toy-factory data set (DCASE 2020 dev layout)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--preset", default="small", choices=["small", "full"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("index", help="index a DCASE-layout data root into a clip table")
    p.add_argument("--data", required=True, type=Path)
    p.add_argument("--out", type=Path, help="write the table as Parquet")
    p.add_argument("--lenient", action="store_true", help="skip (and report) files with unknown names")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("config", help="print a preset's fields with their meaning, or write it as YAML")
    _add_config_args(p)
    p.add_argument("--out", type=Path)
    p.set_defaults(func=cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, ValueError, FileNotFoundError) as error:
        print(f"rcmae {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
