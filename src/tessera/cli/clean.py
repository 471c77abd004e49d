"""`tessera clean [--older-than 7d] [--dry-run] [--output-dir DIR]`: delete old web UI results.

The same sweep `tessera serve` runs at start and hourly: files older than the age in the job folders of the
output folder, then the folders left empty. Only a folder marked as tessera's results folder is touched.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from . import say


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "clean", help="delete web UI results older than an age",
        description="Delete results of `tessera serve` older than --older-than from its output folder.")
    parser.add_argument("--older-than", default="7d",
                        help="age: 7d, 12h, 30m, 2w; a bare number counts days (default: 7d)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="the results folder (default: $TESSERA_HOME/results, ~/.cache/tessera/results)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..web.retention import default_output_dir, parse_age, sweep

    folder = args.output_dir or default_output_dir()
    age = parse_age(args.older_than)
    if args.output_dir is None and not folder.exists():
        say(f"no results folder yet ({folder}): nothing to delete")
        return 0
    report = sweep(folder, age, dry_run=args.dry_run)
    if args.dry_run:
        for path in report.files:
            print(path)
    say(report.describe())
    return 0
