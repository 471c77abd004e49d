"""`tessera inpaint INPUT --mask MASK -o OUTPUT [options]` and `tessera stitch MANIFEST -o OUTPUT`.

``inpaint`` fills the masked parts of a photo at a cost that follows the mask; ``stitch`` puts back the region
files ``inpaint --save-regions DIR`` wrote, after some were fixed by hand.
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

from . import (add_output_arguments, add_stream_arguments, add_task_arguments, check_before_work,
               check_output_arguments, run_task, say, say_streamed, stream_if_too_large, write_output)


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..options import InpaintOptions

    parser = subparsers.add_parser(
        "inpaint", help="remove objects and defects: LaMa or weight-free methods, cost follows the mask",
        description="Fill the masked parts of a photo. Only pixels inside the (grown) mask change.")
    parser.add_argument("--mask", required=True, type=Path,
                        help="mask image: white (above 127) or opaque alpha marks the pixels to fill")
    add_task_arguments(parser, InpaintOptions, title="inpaint and engine options")
    add_stream_arguments(parser)
    parser.set_defaults(func=run)

    stitch = subparsers.add_parser(
        "stitch", help="put back the regions written by `inpaint --save-regions` (after editing them)",
        description="Paste the region results listed in a --save-regions manifest into the photo.")
    stitch.add_argument("manifest", type=Path, help="manifest.json written by --save-regions")
    stitch.add_argument("--input", type=Path, default=None, help="the photo (default: the one the manifest names)")
    add_output_arguments(stitch)
    stitch.set_defaults(func=run_stitch)


def run(args: argparse.Namespace) -> int:
    from ..options import InpaintOptions

    started = time.perf_counter()
    options = check_before_work(args, InpaintOptions, "inpaint")
    check_mask_header(args.mask, args.input, resize=options.resize_mask)
    streamed = stream_if_too_large(args, "inpaint", 1.0, mask=args.mask)
    if streamed is not None:
        say_streamed(streamed, args.output, started)
        return 0
    from ..tasks.inpaint import inpaint  # torch: only once the checks passed, so that errors come at once

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            done = run_task(args, lambda picture, **kw: inpaint(picture, str(args.mask), **kw), InpaintOptions)
        finally:
            _show(caught)
    result, report = done.image, done.report
    path = write_output(result, args)
    if report.fallback:
        say(report.fallback)
    say(f"inpainted {report.describe()}")
    if report.manifest is not None:
        say(f"regions written to {report.manifest.parent} (after editing, run `tessera stitch {report.manifest} "
            f"-o OUTPUT`)")
    say(f"wrote {path} ({result.width}x{result.height}) in {time.perf_counter() - started:.1f}s")
    return 0


def _show(caught: list[warnings.WarningMessage]) -> None:
    """tessera's own warnings as one `tessera: warning:` line each (once); others as Python shows them."""
    seen: set[str] = set()
    for item in caught:
        if item.category.__module__.startswith("tessera"):
            if str(item.message) not in seen:
                seen.add(str(item.message))
                say(f"warning: {item.message}")
        else:
            warnings.showwarning(item.message, item.category, item.filename, item.lineno)


def check_mask_header(mask: Path, photo: Path, *, resize: bool) -> None:
    """The mask is an image of the photo's size (unless --resize-mask), read from both headers, not decoded."""
    from ..errors import ImageReadError, InputError
    from ..image.read import read_image_size

    try:
        mask_size = read_image_size(mask)
    except ImageReadError as error:
        raise ImageReadError(f"mask {error}") from None
    photo_size = read_image_size(photo)
    if mask_size != photo_size and not resize:
        raise InputError(f"mask {mask} is {mask_size[0]}x{mask_size[1]} but the photo is "
                         f"{photo_size[0]}x{photo_size[1]} (use --resize-mask to scale it)")


def run_stitch(args: argparse.Namespace) -> int:
    from ..tasks.inpaint import stitch, stitch_photo
    from ..tasks.inpaint_paste import read_manifest

    started = time.perf_counter()
    manifest = read_manifest(args.manifest)
    photo = stitch_photo(manifest, args.input)
    check_output_arguments(args, source=photo)
    result = stitch(manifest, photo)
    path = write_output(result, args)
    say(f"wrote {path} ({result.width}x{result.height}) in {time.perf_counter() - started:.1f}s")
    return 0
