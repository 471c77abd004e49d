"""`tessera ...`: a thin command line over the Python API.

Each command lives in its own module with ``register(subparsers)``; its flags come from the shared pydantic
option schema (``tessera.options``), so the CLI, the API and the web UI accept the same values. Errors of the
library become one line on stderr and an exit code (2 for bad input, options or models, 4 for resources).

Every image command checks what it can before it works (:func:`check_before_work`): the options, the output
(format, folder, writable, not the input), the device and the model names, before the input is decoded or a
model loaded. SIGTERM ends a command like Ctrl-C does, so that no temporary file is left behind.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import threading
import time
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from ..errors import TesseraError
from .display import progress_display

# Command modules, in the order `tessera --help` lists them.
COMMANDS = ["inpaint", "enhance", "upscale", "deblur", "batch", "resize", "serve", "clean", "models"]


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="tessera", description="Restore photographs of any size: inpaint, enhance faces, upscale.")
    parser.add_argument("--version", action="version", version=f"tessera {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `tessera` console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        with sigterm_as_exception():
            return int(args.func(args) or 0)
    except TesseraError as exc:
        print(f"tessera: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Terminated:
        _quiet_abandoned_tasks()
        print("tessera: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        _quiet_abandoned_tasks()
        print("tessera: interrupted", file=sys.stderr)
        return 130


def _quiet_abandoned_tasks() -> None:
    """An interrupted read of a TIFF through zarr leaves its asyncio task or coroutine pending; asyncio and the
    warnings module would report it, with its repr, as the process exits. The one line the command prints says
    what happened."""
    import inspect
    import logging
    import warnings

    logging.getLogger("asyncio").disabled = True
    warnings.filterwarnings("ignore", message="coroutine .* was never awaited", category=RuntimeWarning)
    previous = sys.unraisablehook

    def drop_abandoned_coroutines(unraisable: Any) -> None:
        if not inspect.iscoroutine(unraisable.object):
            previous(unraisable)

    sys.unraisablehook = drop_abandoned_coroutines


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt, so that ``finally`` blocks run (a
    temporary file being written is removed) and the command exits cleanly instead of dying on the spot."""


def _raise_terminated(signum: int, frame: Any) -> None:
    signal.signal(signum, signal.SIG_DFL)  # a second SIGTERM during the clean-up ends the process at once
    raise Terminated(f"signal {signum}")


@contextlib.contextmanager
def sigterm_as_exception() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` (main thread only; the previous handler comes back
    after it). Installed by :func:`main`, never at import, so the library leaves signals to its callers."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def say(message: str) -> None:
    """A one-line notice on stderr (stdout stays free for results)."""
    print(f"tessera: {message}", file=sys.stderr)

# ----------------------------------------------------------------------------------------------- options


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _choices(annotation: Any) -> list[str] | None:
    """Literal choices of a field (``Literal["auto", ...]`` possibly inside a Union/Annotated)."""
    origin = get_origin(annotation)
    if origin is Literal:
        return [str(a) for a in get_args(annotation)]
    if origin is typing.Annotated:
        return _choices(get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        found = [c for arg in get_args(annotation) for c in (_choices(arg) or [])]
        has_other = any(get_origin(arg) is not Literal and arg is not type(None) for arg in get_args(annotation))
        return None if has_other else (found or None)
    return None


def add_options(parser: argparse.ArgumentParser, schema: type, *, skip: tuple[str, ...] = (),
                title: str | None = None) -> None:
    """Add one flag per field of a pydantic options ``schema``; values are validated by the schema itself."""
    group = parser.add_argument_group(title) if title else parser
    for name, field in schema.model_fields.items():
        if name in skip:
            continue
        help_text = field.description or ""
        if field.default not in (None, False):
            help_text += f" (default: {field.default})"
        if field.annotation is bool:
            group.add_argument(_flag(name), dest=name, action="store_true", default=None, help=help_text)
            continue
        group.add_argument(_flag(name), dest=name, default=None, choices=_choices(field.annotation),
                           metavar=name.upper(), help=help_text)


def options_from_args(args: argparse.Namespace, schema: type) -> dict[str, Any]:
    """The flags the user gave for ``schema``'s fields, as keyword arguments for the API."""
    return {name: getattr(args, name) for name in schema.model_fields
            if getattr(args, name, None) is not None}


def add_input_arguments(parser: argparse.ArgumentParser) -> None:
    """The INPUT positional and the decompression-bomb guard."""
    parser.add_argument("input", type=Path, help="input image")
    parser.add_argument("--max-pixels", type=int, default=None,
                        help="refuse inputs with more pixels than this, before decoding (default: 500000000, "
                             "and no more than fits in the available memory)")


def _pixel_limit(args: argparse.Namespace) -> dict[str, int]:
    """``max_pixels`` for load_image when --max-pixels is given (else load_image's default applies)."""
    from ..errors import OptionError

    if args.max_pixels is None:
        return {}
    if args.max_pixels < 1:
        raise OptionError(f"--max-pixels must be at least 1, got {args.max_pixels}")
    return {"max_pixels": args.max_pixels}


def read_input(args: argparse.Namespace) -> Any:
    """Load ``args.input`` within ``--max-pixels``."""
    from ..image.read import load_image

    return load_image(args.input, **_pixel_limit(args))


def add_output_arguments(parser: argparse.ArgumentParser, *, unless: str | None = None) -> None:
    """-o OUTPUT, --quality, --overwrite. ``unless``: a flag that makes -o optional (the command checks it)."""
    help_text = "output file (format from the extension)" + (f" (required unless {unless})" if unless else "")
    parser.add_argument("-o", "--output", required=unless is None, type=Path, help=help_text)
    parser.add_argument("--quality", type=int, default=95, help="JPEG/WEBP quality (default: 95)")
    parser.add_argument("--overwrite", action="store_true", help="allow the output to replace the input file")


def check_output_arguments(args: argparse.Namespace, source: Path | None) -> str:
    """-o, --quality and --overwrite, checked before any work (:func:`tessera.image.write.check_output`); the format."""
    from ..image.write import check_output

    return check_output(args.output, quality=args.quality, source=source, overwrite_input=args.overwrite)


def write_output(picture: Any, args: argparse.Namespace) -> Path:
    """Save atomically to ``args.output``; refuses to replace the input unless --overwrite."""
    from ..image.write import save_image

    return save_image(picture, args.output, quality=args.quality, overwrite_input=args.overwrite)


def copy_input_unchanged(args: argparse.Namespace) -> Path | None:
    """The input's own bytes as ``args.output`` when both have one format (no re-encoding); None otherwise.

    For a command that found nothing to change. Refuses to replace the input unless --overwrite."""
    from ..image.write import copy_unchanged

    return copy_unchanged(args.input, args.output, overwrite_input=args.overwrite)


def add_task_arguments(parser: argparse.ArgumentParser, schema: type, title: str,
                       output_unless: str | None = None) -> None:
    """What every image task takes: INPUT, -o OUTPUT (optional with ``output_unless``: see
    :func:`add_output_arguments`), --model-dir, --quiet, and the flags of its option schema."""
    add_input_arguments(parser)
    add_output_arguments(parser, unless=output_unless)
    parser.add_argument("--model-dir", type=Path, default=None, help="model cache (default: $TESSERA_HOME)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_options(parser, schema, title=title)


def check_before_work(args: argparse.Namespace, schema: type, task: str) -> Any:
    """Refuse now what would otherwise fail after the work: returns the validated options of ``schema``.

    In this order, none of it decoding the input or loading a model: the options (the shared schema, which the
    API and the web UI apply too), --max-pixels, the output (:func:`check_output_arguments`), the folders the
    options name (--save-regions, --save-faces), the device, and the model names of ``task`` (resolved to
    files, not loaded).
    """
    from ..batch import check_models
    from ..image.write import check_output_folder
    from ..options import parse_options

    given = options_from_args(args, schema)
    options = parse_options(schema, given)
    _pixel_limit(args)
    check_output_arguments(args, source=args.input)
    for name in ("save_regions", "save_faces"):
        if getattr(options, name, None) is not None:
            check_output_folder(getattr(options, name))
    if str(options.device).lower() not in ("auto", "cpu"):  # those always exist; asking needs torch
        from ..engine import resolve_device

        resolve_device(options.device)
    check_models(task, given, str(args.model_dir) if args.model_dir else None)
    return options


def check_output_fits(args: argparse.Namespace, scale: float | None) -> None:
    """Refuse an output the format of -o cannot hold at ``scale`` times the input (read from its header)."""
    from ..image.read import read_image_size
    from ..image.write import check_output_size

    if not scale:
        return
    width, height = read_image_size(args.input)
    check_output_size(args.output, round(width * scale), round(height * scale))


def run_task(args: argparse.Namespace, task: Any, schema: type, **extra: Any) -> Any:
    """Read the input, run ``task`` with the user's options and a progress bar; returns the task's
    :class:`~tessera.tasks.result.Result` (the output Picture and the task's report).

    The command has called :func:`check_before_work` first."""
    picture = read_input(args)
    bar = progress_display(args.quiet)
    try:
        return task(picture, progress=bar, model_dir=args.model_dir, **extra, **options_from_args(args, schema))
    finally:
        bar.close()


def add_stream_arguments(parser: argparse.ArgumentParser) -> None:
    """--max-ram: the memory one image may take before the command streams it (a TIFF into a tiled BigTIFF)."""
    parser.add_argument("--max-ram", default=None, metavar="SIZE",
                        help="memory the image may take in memory (e.g. 8G); a larger TIFF is streamed region by "
                             "region into a tiled BigTIFF at -o, which must then be .tif (default: half the "
                             "machine's memory)")


def stream_if_too_large(args: argparse.Namespace, task_name: str, scale: float, *,
                        mask: Path | None = None) -> Any:
    """Stream the job when the in-memory flow would take more than --max-ram: returns the job's
    :class:`~tessera.tasks.result.StreamReport`, or None when the image fits in memory (nothing done).

    ``scale``: the output scale known before the model is loaded. Decided from the headers alone
    (:func:`tessera.tasks.files.stream_decision`): an image the in-memory flow would refuse (over --max-ram, or
    over its pixel limit, --max-pixels, or the mask's) is streamed; one that cannot be streamed (not a TIFF)
    goes the in-memory way, whose limits then apply.
    """
    from ..errors import OptionError
    from ..options import parse_size
    from ..tasks.files import stream_decision, stream_file
    from ..tasks.registry import get_task

    task = get_task(task_name)
    try:
        max_ram = parse_size(args.max_ram)
    except ValueError as error:
        raise OptionError(f"--max-ram: {error}") from None
    pixel_limit = "default" if args.max_pixels is None else None  # a limit given refuses, it never streams
    if not stream_decision(task, args.input, scale, max_ram, strict=False, pixel_limit=pixel_limit, mask=mask):
        return None
    bar = progress_display(args.quiet)
    try:
        return stream_file(task, args.input, args.output, mask=mask, max_ram=max_ram, progress=bar,
                           model_dir=str(args.model_dir) if args.model_dir else None,
                           **options_from_args(args, task.schema)).report
    finally:
        bar.close()


def say_streamed(report: Any, output: Path, started: float) -> None:
    """The lines a streamed job prints: what was streamed, how, and where it went."""
    height, width = report.output_shape[:2]
    say(f"streamed {report.model}: {report.blocks} block(s) of {report.block}px + {report.context}px context"
        + (f", {report.regions} group(s) of holes" if report.regions else "")
        + " (over --max-ram: read region by region into a tiled BigTIFF)")
    say(f"wrote {output} ({width}x{height}) in {time.perf_counter() - started:.1f}s")
