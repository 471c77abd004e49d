"""`tessera deblur INPUT -o OUTPUT [--method M] [--length L --angle A] [--tile N]`: remove a straight motion blur.

The blur (length and direction) is estimated from the photo unless ``--length`` and ``--angle`` give it; the whole
photo is then deconvolved tile by tile (:func:`tessera.filters.deblur`), so memory stays near the input and output
sizes. A photo without a measurable blur is written unchanged: its own bytes when the output has its format.
"""
from __future__ import annotations

import argparse
import time

from . import (add_input_arguments, add_options, add_output_arguments, check_output_arguments, copy_input_unchanged,
               options_from_args, read_input, say, write_output)
from .display import progress_display


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..options import DeblurOptions

    parser = subparsers.add_parser("deblur", help="remove a straight motion blur from the whole photo",
                                   description="Estimate a straight motion blur (or take --length and --angle) and "
                                               "deconvolve the whole photo with it, tile by tile.")
    add_input_arguments(parser)
    add_output_arguments(parser)
    parser.add_argument("--quiet", action="store_true", help="no progress display")
    add_options(parser, DeblurOptions, title="deblur options")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..filters import MotionBlur, deblur, estimate_motion_blur
    from ..options import DeblurOptions, parse_options

    started = time.perf_counter()
    options = parse_options(DeblurOptions, options_from_args(args, DeblurOptions))  # all before the input is read
    check_output_arguments(args, source=args.input)
    picture = read_input(args)
    if options.length is not None:
        blur, origin = MotionBlur(options.length, options.angle % 180.0), "given"
    else:
        blur, origin = estimate_motion_blur(picture.pixels), "estimated"
    if not blur.significant:
        say(f"no motion blur found in {args.input}: the output is an unchanged copy (give --length and --angle to "
            f"deblur anyway)")
        path = copy_input_unchanged(args)
        if path is not None:
            say(f"wrote {path} in {time.perf_counter() - started:.1f}s")
            return 0
        result = picture
    else:
        say(f"{origin} blur: {blur.length:.1f} px at {blur.angle:.0f} degrees; deconvolving with {options.method}")
        display = progress_display(args.quiet)
        try:
            result = deblur(picture, method=options.method, blur=blur, tile=options.tile, progress=display)
        finally:
            display.close()
    path = write_output(result, args)
    say(f"wrote {path} ({result.width}x{result.height}) in {time.perf_counter() - started:.1f}s")
    return 0
