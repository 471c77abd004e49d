"""`tessera enhance INPUT -o OUTPUT [--model NAME|PATH] [--upscale S] [--background ...] [options]`."""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from . import add_task_arguments, check_before_work, check_output_fits, run_task, say, write_output


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..options import FaceOptions

    parser = subparsers.add_parser(
        "enhance", help="restore faces (GPEN, GFPGAN, CodeFormer, RestoreFormer); cost follows the faces",
        description="Detect the faces of a photo, restore each aligned face in batches and paste it back; "
                    "optionally upscale the background. Pixels away from the faces are not touched.")
    add_task_arguments(parser, FaceOptions, title="face and engine options")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..options import FaceOptions

    started = time.perf_counter()
    options = check_before_work(args, FaceOptions, "enhance")
    check_output_fits(args, options.upscale)
    from ..tasks.faces import WEIGHT_FREE_HINT, enhance_faces  # torch: only once the checks passed

    result, report = run_task(args, enhance_faces, FaceOptions)
    if not report.faces:
        say(f"no face found in {args.input} (detector {report.detector}); the output is an unchanged copy"
            + ("" if report.scale == (1.0, 1.0) else f" resized x{report.scale[0]:g}"))
        if report.scale == (1.0, 1.0) and _same_format(args.input, args.output):
            path = _copy_unchanged(args.input, args.output, overwrite=args.overwrite)
            say(f"wrote {path} in {time.perf_counter() - started:.1f}s")
            return 0
    path = write_output(result, args)
    if report.weight_free:
        say(f"faces cleaned up with the weight-free method ({report.model}); for GPEN run "
            f"`tessera models pull {WEIGHT_FREE_HINT}` and add `--model {WEIGHT_FREE_HINT}`")
    elif report.faces:
        say(f"faces restored with {report.model}")
    if report.faces:
        sizes = sorted(face.size for face in report.faces)
        say(f"{len(report.faces)} face(s) found by {report.detector}, aligned at {sizes[0]}"
            + (f"-{sizes[-1]}" if sizes[-1] != sizes[0] else "") + " px; background: " + report.background)
    say(f"wrote {path} ({result.width}x{result.height}) in {time.perf_counter() - started:.1f}s")
    return 0


def _same_format(source: Path, target: Path) -> bool:
    aliases = {".jpeg": ".jpg", ".tif": ".tiff"}
    suffix = source.suffix.lower()
    return aliases.get(suffix, suffix) == aliases.get(target.suffix.lower(), target.suffix.lower())


def _copy_unchanged(source: Path, target: Path, *, overwrite: bool) -> Path:
    """The input's bytes as the output (no re-encoding); refuses to replace the input unless --overwrite."""
    from ..errors import OutputError
    from ..image import copy_atomically

    if target.exists() and os.path.samefile(source, target):
        if not overwrite:
            raise OutputError(f"{target}: the output would replace the input (add --overwrite)")
        return target
    copy_atomically(source, target)
    return target
