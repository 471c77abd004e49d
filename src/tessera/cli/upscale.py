"""`tessera upscale INPUT -o OUTPUT [--model NAME|PATH] [--scale S] [engine options]`."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import (ProgressBar, add_input_arguments, add_options, add_output_arguments, options_from_args, read_input,
               say, write_output)

NEURAL_SUGGESTION = "realesrgan-x4plus"


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..options import UpscaleOptions

    parser = subparsers.add_parser("upscale", help="tiled super-resolution with any network spandrel loads",
                                   description="Upscale a photo tile by tile within a memory budget.")
    add_input_arguments(parser)
    add_output_arguments(parser)
    parser.add_argument("--model-dir", type=Path, default=None, help="model cache (default: $TESSERA_HOME)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_options(parser, UpscaleOptions, title="upscale and engine options")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..options import UpscaleOptions
    from ..tasks.upscale import upscale

    picture = read_input(args)
    bar = ProgressBar(enabled=not args.quiet and sys.stderr.isatty())
    reports: list = []
    started = time.perf_counter()
    try:
        result = upscale(picture, progress=bar, model_dir=args.model_dir, report=reports,
                         **options_from_args(args, UpscaleOptions))
    finally:
        bar.close()
    path = write_output(result, args)
    report = reports[0]
    if report.weight_free:
        say(f"upscaled with the weight-free {report.model} method; for a neural upscaler run "
            f"`tessera models pull {NEURAL_SUGGESTION}` and add `--model {NEURAL_SUGGESTION}`")
    for number, plan in enumerate(report.passes, 1):
        say(f"pass {number}: {report.model} x{plan.scale}: {plan.describe()}"
            + (f"; backed off: {', '.join(plan.backoffs)}" if plan.backoffs else ""))
    if report.finish:
        say(f"finished with {report.finish}")
    say(f"wrote {path} ({result.width}x{result.height}) in {time.perf_counter() - started:.1f}s")
    return 0
