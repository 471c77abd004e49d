"""`tessera models`: list the known models, pull one into the cache, verify what is cached.

Thin: parses, calls :mod:`tessera.models.download` and :mod:`tessera.models.catalog`, prints. Errors propagate as
TesseraError for ``tessera.cli.main`` to report; ``verify`` returns exit code 2 when a file does not match.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..options import format_bytes

EXIT_MISMATCH = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``models`` command (with ``list``, ``pull``, ``verify``) to the CLI's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model-dir", metavar="DIR", default=None,
                        help="cache folder (weights under DIR/models); default $TESSERA_HOME or ~/.cache/tessera")
    parser = subparsers.add_parser(
        "models", help="list, download and check model weights",
        description="Known models and the local weight cache. Nothing is downloaded except by `pull`.")
    commands = parser.add_subparsers(dest="models_command", metavar="{list,pull,verify}")
    commands.required = True
    commands.add_parser("list", parents=[common], help="known models, which are cached, their sizes")
    pull = commands.add_parser("pull", parents=[common], help="download models into the cache (resumable, checked)")
    pull.add_argument("names", nargs="+", metavar="NAME", help="model name, e.g. gpen-bfr-512 or realesrgan-x4plus")
    pull.add_argument("--force", action="store_true", help="download again even if the file is cached")
    verify = commands.add_parser("verify", parents=[common], help="recompute checksums of cached models")
    verify.add_argument("name", nargs="?", metavar="NAME", help="one model (default: every cached model)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.models_command == "list":
        return list_models(args.model_dir)
    if args.models_command == "pull":
        return pull_models(args.names, args.model_dir, force=args.force)
    return verify_models(args.name, args.model_dir)


# ---------------------------------------------------------------------------------------------------- commands
def _short_license(text: str) -> str:
    return text.split(" (")[0]


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def list_models(model_dir: str | None) -> int:
    from ..models.catalog import CATALOG, model_path, models_dir

    rows = [("NAME", "TASK", "ARCHITECTURE", "LICENCE", "SIZE", "CACHED", "CHECKSUM")]
    for entry in CATALOG:
        path = model_path(entry, model_dir)
        cached = path.is_file()
        size = path.stat().st_size if cached else entry.size_bytes
        task = f"{entry.task} (helper)" if entry.auxiliary else entry.task
        checksum = entry.checksum_kind if entry.checksum_kind != "none" else "none (recorded on pull)"
        size_text = format_bytes(size) if size is not None else "?"
        rows.append((entry.name, task, entry.architecture, _short_license(entry.license), size_text,
                     "yes" if cached else "no", checksum))
    print(f"model cache: {models_dir(model_dir)}")
    print(_table(rows))
    return 0


def _progress_bar(name: str):
    """A tqdm byte counter on stderr and the ``progress(done, total)`` callback that feeds it."""
    from tqdm import tqdm

    bar = tqdm(desc=name, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, leave=False)

    def progress(done: int, total: int | None) -> None:
        if total is not None and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    return bar, progress


def pull_models(names: Sequence[str], model_dir: str | None, *, force: bool = False) -> int:
    from ..models.catalog import get_entry, model_path
    from ..models.download import pull, read_record

    entries = [get_entry(name) for name in names]  # unknown names fail before any download
    for entry in entries:
        target = model_path(entry, model_dir)
        if target.is_file() and not force:
            print(f"{entry.name}: already in the cache at {target} (`tessera models verify {entry.name}` checks it)")
            continue
        bar, progress = _progress_bar(entry.name)
        try:
            path = pull(entry.name, model_dir=model_dir, progress=progress, force=force)
        finally:
            bar.close()
        record = read_record(entry, model_dir) or {}
        sha256 = record.get("sha256", "?")
        if entry.checksum_kind == "none":
            note = f"no checksum is published; recorded sha256 {sha256} (trust on first use)"
        else:
            note = f"matches the published {entry.checksum_kind}; sha256 {sha256}"
        print(f"{entry.name}: {path} ({note})")
    return 0


def verify_models(name: str | None, model_dir: str | None) -> int:
    from ..models.catalog import models_dir
    from ..models.download import verify

    results = verify(name, model_dir=model_dir)
    if not results:
        print(f"no known models in the cache {models_dir(model_dir)}")
        return 0
    for result in results:
        if result.status == "mismatch":
            print(f"MISMATCH  {result.name}: {result.path} has {result.actual}, {result.kind} is {result.expected}")
        elif result.status == "unchecked":
            print(f"unchecked {result.name}: {result.path} ({result.kind})")
        else:
            print(f"ok        {result.name}: {result.path} ({result.kind})")
    return 0 if all(result.ok for result in results) else EXIT_MISMATCH
