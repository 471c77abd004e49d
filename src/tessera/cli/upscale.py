"""`tessera upscale INPUT -o OUTPUT [--model NAME|PATH] [--scale S] [engine options]`."""
from __future__ import annotations

import argparse
import time
from typing import Any

from . import (add_stream_arguments, add_task_arguments, check_before_work, check_output_fits, run_task, say,
               say_streamed, stream_if_too_large, write_output)
from ..options import AUTO_DEFAULT_SCALE

NEURAL_SUGGESTION = "realesr-animevideov3"


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..options import UpscaleOptions

    parser = subparsers.add_parser("upscale", help="tiled super-resolution with any network spandrel loads",
                                   description="Upscale a photo tile by tile within a memory budget.")
    add_task_arguments(parser, UpscaleOptions, title="upscale and engine options")
    add_stream_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..options import UpscaleOptions

    started = time.perf_counter()
    options = check_before_work(args, UpscaleOptions, "upscale")
    scale = expected_scale(options)
    check_output_fits(args, scale)
    streamed = stream_if_too_large(args, "upscale", scale or AUTO_DEFAULT_SCALE)
    if streamed is not None:
        say_streamed(streamed, args.output, started)
        return 0
    from ..tasks.upscale import upscale  # torch: only once the checks passed, so that errors come at once

    done = run_task(args, upscale, UpscaleOptions)
    result, report = done.image, done.report
    path = write_output(result, args)
    if report.chosen:
        say(report.chosen)
    elif report.weight_free:
        say(f"upscaled with the weight-free {report.model} method; for a neural upscaler leave --model auto or "
            f"name one, e.g. `--model {NEURAL_SUGGESTION}`")
    for number, plan in enumerate(report.passes, 1):
        say(f"pass {number}: {report.model} x{plan.scale}: {plan.describe()}"
            + (f"; backed off: {', '.join(plan.backoffs)}" if plan.backoffs else ""))
    if report.finish:
        say(f"finished with {report.finish}")
    say(f"wrote {path} ({result.width}x{result.height}) in {time.perf_counter() - started:.1f}s")
    return 0


def expected_scale(options: Any) -> float | None:
    """The output scale known before the model is loaded: the one asked for, the weight-free or auto default, or
    the catalog's factor of a named model (None for a model file of unknown factor)."""
    from ..models.catalog import find_entry
    from ..options import AUTO_DEFAULT_SCALE, WEIGHT_FREE_DEFAULT_SCALE, WEIGHT_FREE_NAMES

    if options.scale:
        return float(options.scale)
    if options.model is None or options.model.strip().lower() in WEIGHT_FREE_NAMES:
        return WEIGHT_FREE_DEFAULT_SCALE
    if options.model.strip().lower() == "auto":
        return AUTO_DEFAULT_SCALE
    entry = find_entry(options.model)
    return float(entry.scale) if entry is not None and entry.scale else None
