"""`tessera models`: list the known models, pull one into the cache, verify what is cached, import ncnn models.

Thin: parses, calls :mod:`tessera.models.download` and :mod:`tessera.models.catalog`, prints. Errors propagate as
TesseraError for ``tessera.cli.main`` to report; ``verify`` returns exit code 2 when a file would not load (its
checksum differs, or nothing vouches for it). A model with no published checksum is installed only after its sha256
is shown and confirmed: ``--trust`` (or ``--sha256 HEX``), or a yes at the prompt when the pull runs on a terminal.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import ModelError, OptionError
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
    commands = parser.add_subparsers(dest="models_command", metavar="{list,pull,verify,import}")
    commands.required = True
    commands.add_parser("list", parents=[common], help="known models, which are cached, their sizes")
    pull = commands.add_parser("pull", parents=[common], help="download models into the cache (resumable, checked)")
    pull.add_argument("names", nargs="+", metavar="NAME", help="model name, e.g. gpen-bfr-512 or realesrgan-x4plus")
    pull.add_argument("--force", action="store_true", help="download again even if the file is cached")
    pull.add_argument("--trust", action="store_true",
                      help="install a model that has no published checksum, with the sha256 the pull shows "
                           "(a file already in the cache that was never pulled is recorded as it is)")
    pull.add_argument("--sha256", metavar="HEX", default=None,
                      help="the sha256 the download must have (pins it; implies --trust; one model only)")
    pull.add_argument("--url", dest="urls", action="append", metavar="URL", default=None,
                      help="download from this mirror instead of the catalog's URLs (repeatable, tried in order; "
                           "one model only; the published checksum still applies)")
    pull.add_argument("--max-download", metavar="SIZE", default=None,
                      help="most bytes to receive for a model whose size is not published "
                           "(default $TESSERA_MAX_DOWNLOAD_BYTES or 4G)")
    verify = commands.add_parser("verify", parents=[common], help="recompute checksums of cached models")
    verify.add_argument("name", nargs="?", metavar="NAME", help="one model (default: every cached model)")
    imports = commands.add_parser("import", parents=[common],
                                  help="convert an ncnn model (.param with its .bin) into the cache, once")
    imports.add_argument("param", metavar="FILE.param", help="the ncnn graph; its .bin is read from beside it")
    imports.add_argument("--bin", dest="weights", metavar="FILE.bin", default=None,
                         help="the weights, when they are not FILE.bin")
    imports.add_argument("--name", default=None, help="the name to use it by (default: the file's stem)")
    imports.add_argument("--force", action="store_true", help="replace an imported model of the same name")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.models_command == "list":
        return list_models(args.model_dir)
    if args.models_command == "pull":
        return pull_models(args.names, args.model_dir, force=args.force, trust=args.trust, sha256=args.sha256,
                           urls=args.urls, max_download=args.max_download)
    if args.models_command == "import":
        return import_model(args.param, args.model_dir, name=args.name, weights=args.weights, force=args.force)
    return verify_models(args.name, args.model_dir)


# ---------------------------------------------------------------------------------------------------- list
def _short_license(text: str) -> str:
    return text.split(" (")[0]


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def _checksum_cell(entry, model_dir: str | None, cached: bool) -> str:
    """What vouches for the model: its published checksum, or for the others whether a user trusted the file."""
    from ..models.checksums import read_record

    if entry.checksum_kind == "bundled":
        return "bundled (package files checked)"
    if entry.checksum_kind != "none":
        return entry.checksum_kind
    if not cached:
        return "none (confirm at pull)"
    try:
        record = read_record(entry, model_dir)
    except ModelError:
        return "none (pull record unreadable)"
    return "none: unverified (trusted at pull)" if record else "none (not trusted: pull --trust)"


def _cached_cell(entry, cached: bool) -> str:
    """"yes" for a file in the cache; "bundled" for a model its installed package carries (converted on first use)."""
    from ..models.ncnn_cache import bundled_available

    if cached:
        return "yes"
    return "bundled" if bundled_available(entry) else "no"


def list_models(model_dir: str | None) -> int:
    from ..models.catalog import CATALOG, model_path, models_dir
    from ..models.ncnn_cache import imported_models

    rows = [("NAME", "TASK", "ARCHITECTURE", "LICENCE", "SIZE", "CACHED", "CHECKSUM")]
    for entry in CATALOG:
        path = model_path(entry, model_dir)
        cached = path.is_file()
        size = path.stat().st_size if cached else entry.size_bytes
        task = f"{entry.task} (helper)" if entry.auxiliary else entry.task
        size_text = format_bytes(size) if size is not None else "?"
        rows.append((entry.name, task, entry.architecture, _short_license(entry.license), size_text,
                     _cached_cell(entry, cached), _checksum_cell(entry, model_dir, cached)))
    for model in imported_models(model_dir):
        rows.append((model.name, "upscale", model.description.split(",")[0], "as its source", format_bytes(
            model.path.stat().st_size), "imported", "recorded at import"))
    print(f"model cache: {models_dir(model_dir)}")
    print(_table(rows))
    return 0


# ---------------------------------------------------------------------------------------------------- import
def import_model(param: str, model_dir: str | None, *, name: str | None = None, weights: str | None = None,
                 force: bool = False) -> int:
    from ..models.ncnn_cache import import_ncnn

    imported = import_ncnn(param, name=name, weights=weights, model_dir=model_dir, force=force)
    flag = f" --model-dir {model_dir}" if model_dir is not None else ""
    print(f"{imported.name}: {imported.description}; converted into {imported.path} (sha256 {imported.sha256}); "
          f"use it with `--model {imported.name}`{flag}")
    return 0


# ---------------------------------------------------------------------------------------------------- pull
class _ProgressBar:
    """A tqdm byte counter on a terminal's stderr, opened on the first bytes (a pull that downloads nothing shows
    nothing; a pull whose stderr is a log gets no bar, so an error stays one line)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.bar = None

    def __call__(self, done: int, total: int | None) -> None:
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(desc=self.name, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                            leave=False, disable=None)  # None: no bar when stderr is not a terminal
        if total is not None and self.bar.total != total:
            self.bar.total = total
        self.bar.update(done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _can_ask() -> bool:
    """Whether a person is there to answer a question (stdin and stderr are terminals)."""
    return sys.stdin.isatty() and sys.stderr.isatty()


def _confirmed(name: str, sha256: str, size: int) -> bool:
    """Ask on the terminal whether to install a download nothing published vouches for."""
    print(f"{name}: no checksum is published for this model; the download has sha256 {sha256} "
          f"({format_bytes(size)}).", file=sys.stderr)
    try:
        answer = input("Install it? [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _cached_line(entry, target, model_dir: str | None) -> str:
    """What to say about a model found in the cache: where it is, and whether it will load."""
    from ..models.checksums import pull_command, read_record

    if entry.checksum_kind == "none" and read_record(entry, model_dir) is None:
        return (f"{entry.name}: already in the cache at {target}; it was never pulled and no checksum is published, "
                f"so it will not load until you run `{pull_command(entry, model_dir)} --trust`")
    return f"{entry.name}: already in the cache at {target} (`tessera models verify {entry.name}` checks it)"


def _pull_one(entry, model_dir: str | None, **options) -> None:
    """Pull one model and print where it is and what its checksum was checked against."""
    from ..models.catalog import model_path
    from ..models.checksums import read_record
    from ..models.download import UntrustedModelError, pull

    target = model_path(entry, model_dir)
    was_cached = target.is_file() and not options["force"]
    if was_cached and not options["trust"] and options["sha256"] is None:
        print(_cached_line(entry, target, model_dir))
        return
    record_before = read_record(entry, model_dir)
    progress = _ProgressBar(entry.name)
    try:
        try:
            path = pull(entry.name, model_dir=model_dir, progress=progress, **options)
        except UntrustedModelError as error:
            progress.close()
            if not (_can_ask() and _confirmed(entry.name, error.sha256, error.size)):
                raise
            # the kept download is installed only if it still has the sha256 just shown
            path = pull(entry.name, model_dir=model_dir, **{**options, "trust": True})
    finally:
        progress.close()
    record = read_record(entry, model_dir)
    if was_cached and record == record_before:  # nothing to trust: it was pulled (or is published) already
        print(_cached_line(entry, target, model_dir))
        return
    sha256 = (record or {}).get("sha256", "?")
    if entry.checksum_kind == "bundled":
        note = (f"converted from {entry.bundled.distribution}, whose files match their release sha256; "
                f"sha256 {sha256}")
    elif entry.checksum_kind == "none":
        note = (f"no checksum is published; installed with the sha256 you trusted, {sha256}; "
                f"`tessera models verify` reports it as unverified")
    else:
        note = f"matches the published {entry.checksum_kind}; sha256 {sha256}"
    print(f"{entry.name}: {path} ({note})")


def pull_models(names: Sequence[str], model_dir: str | None, *, force: bool = False, trust: bool = False,
                sha256: str | None = None, urls: Sequence[str] | None = None,
                max_download: str | None = None) -> int:
    from ..models.catalog import get_entry

    entries = [get_entry(name) for name in names]  # unknown names fail before any download
    if len(entries) > 1 and (sha256 is not None or urls):
        raise OptionError(f"--sha256 and --url apply to one model, not {len(entries)}: pull the others separately")
    for entry in entries:
        _pull_one(entry, model_dir, force=force, trust=trust, sha256=sha256, urls=urls, max_bytes=max_download)
    return 0


# ---------------------------------------------------------------------------------------------------- verify
def verify_models(name: str | None, model_dir: str | None) -> int:
    from ..models.catalog import get_entry, models_dir
    from ..models.checksums import pull_command, verify

    results = verify(name, model_dir=model_dir)
    if not results:
        print(f"no known models in the cache {models_dir(model_dir)}")
        return 0
    for result in results:
        command = pull_command(get_entry(result.name), model_dir)
        if result.status == "mismatch":
            print(f"MISMATCH   {result.name}: {result.path} has {result.actual}, {result.kind} is {result.expected}; "
                  f"it will not load (`{command} --force` downloads it again)")
        elif result.status == "unchecked":
            print(f"unchecked  {result.name}: {result.path} ({result.kind}); it will not load until you run "
                  f"`{command} --trust`")
        elif result.status == "unverified":
            print(f"unverified {result.name}: {result.path} (matches the {result.kind}, but no checksum is "
                  f"published to check the download against)")
        else:
            print(f"ok         {result.name}: {result.path} ({result.kind})")
    return 0 if all(result.ok for result in results) else EXIT_MISMATCH
