"""`tessera upscale INPUT -o OUTPUT [--model NAME|PATH] [--scale S] [engine options]`."""
from __future__ import annotations

import argparse
import time

from . import add_task_arguments, run_task, say, write_output

NEURAL_SUGGESTION = "realesrgan-x4plus"


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..options import UpscaleOptions

    parser = subparsers.add_parser("upscale", help="tiled super-resolution with any network spandrel loads",
                                   description="Upscale a photo tile by tile within a memory budget.")
    add_task_arguments(parser, UpscaleOptions, title="upscale and engine options")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..options import UpscaleOptions
    from ..tasks.upscale import upscale

    started = time.perf_counter()
    result, report = run_task(args, upscale, UpscaleOptions)
    path = write_output(result, args)
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
