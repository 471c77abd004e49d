"""`tessera batch {inpaint,enhance,upscale} INPUT_DIR -o OUT_DIR [batch options] [task options]`.

Runs one task over a folder: resumable (outputs finished with the same settings are skipped), a bad file
failing alone, a JSON-lines report, on this machine's processes or a Ray cluster. Exit code 0 when every image
is done or skipped, 1 when some failed (the report and the summary name them).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from . import add_options, options_from_args, say
from .display import progress_display

# Options of the single-image commands that make no sense for a folder (they name one output file or folder).
_PER_IMAGE_OPTIONS = ("save_regions", "save_faces")
_SHOWN_FAILURES = 10


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..tasks.registry import TASKS

    parser = subparsers.add_parser("batch", help="run a task over a folder: resumable, on processes or Ray",
                                   description="Process every image of a folder; run it again to resume.")
    tasks = parser.add_subparsers(dest="task", metavar="TASK", required=True)
    for name, task in TASKS.items():
        what = task.summary + (" (masks matched by file stem)" if task.takes_mask else "")
        sub = tasks.add_parser(name, help=what, description=f"batch {name}: {what}.")
        _add_batch_arguments(sub, task.takes_mask)
        add_options(sub, task.schema, skip=_PER_IMAGE_OPTIONS, title=f"{name} and engine options")
        sub.set_defaults(func=run)


def _add_batch_arguments(parser: argparse.ArgumentParser, takes_mask: bool) -> None:
    from ..batch import FORMATS, REPORT_NAME

    parser.add_argument("input", type=Path, help="folder of images")
    parser.add_argument("-o", "--output", required=True, type=Path, help="output folder (the tree is mirrored)")
    group = parser.add_argument_group("batch options")
    if takes_mask:
        group.add_argument("--masks", type=Path, required=True,
                           help="folder of masks matched by file stem, or one mask file for every image")
    group.add_argument("--recursive", action="store_true", help="include subfolders")
    group.add_argument("--pattern", default=None, metavar="GLOB", help="only files matching this glob (e.g. '*.tif')")
    group.add_argument("--format", default="same", choices=FORMATS, help="output format (default: same as input)")
    group.add_argument("--quality", type=int, default=95, help="JPEG/WEBP quality (default: 95)")
    group.add_argument("--workers", type=int, default=None, metavar="N",
                       help="local worker processes, each loading the model once (default: one per GPU, else "
                            "1). More than one helps with several GPUs; on a CPU the workers share the cores and "
                            "each loads its own model: 8 photos on 2 cores took 1.27x as long with 2 workers as "
                            "with 1 (bench/workers.py)")
    group.add_argument("--ray", default=None, metavar="ADDRESS",
                       help="run on a Ray cluster: its address, or auto for the one `ray start --head` started")
    group.add_argument("--max-ram", default=None, metavar="SIZE",
                       help="memory one image may take (e.g. 8G) before it is streamed region by region into a "
                            "tiled BigTIFF (default: half the machine's memory, shared among the workers)")
    group.add_argument("--report", type=Path, default=None, help=f"JSON-lines report (default: OUT/{REPORT_NAME})")
    resume = group.add_mutually_exclusive_group()
    resume.add_argument("--redo", action="store_true", help="process every image again, even those whose output "
                                                            "is already there")
    resume.add_argument("--skip-existing", action="store_true",
                        help="keep every finished output, even one made with other settings (by default an output "
                             "is kept only when the report says it was made with the same task options, model "
                             "and weights; the others are made again)")
    group.add_argument("--model-dir", type=Path, default=None, help="model cache (default: $TESSERA_HOME)")
    group.add_argument("--quiet", action="store_true", help="no progress bars")


def run(args: argparse.Namespace) -> int:
    from ..batch import run_batch
    from ..progress import ProgressEvent
    from ..tasks.registry import get_task

    bar = progress_display(args.quiet)

    def on_outcome(outcome, finished: int, total: int) -> None:
        bar(ProgressEvent("images", finished, total, 0.0, None, outcome.file))

    options = options_from_args(args, get_task(args.task).schema)
    try:
        summary = run_batch(args.task, args.input, args.output, masks=getattr(args, "masks", None),
                            recursive=args.recursive, pattern=args.pattern, format=args.format,
                            workers=args.workers, ray=args.ray, max_ram=args.max_ram, quality=args.quality,
                            model_dir=str(args.model_dir) if args.model_dir else None, report=args.report,
                            redo=args.redo, skip_existing=args.skip_existing, on_outcome=on_outcome, progress=bar,
                            **options)
    finally:
        bar.close()
    for notice in summary.notices:
        say(notice)
    for outcome in summary.failed[:_SHOWN_FAILURES]:
        say(f"failed: {outcome.file}: {outcome.error}")
    if len(summary.failed) > _SHOWN_FAILURES:
        say(f"... and {len(summary.failed) - _SHOWN_FAILURES} more failures")
    streamed = sum(1 for o in summary.outcomes if o.streamed)
    if streamed:
        say(f"{streamed} image(s) over the RAM budget were streamed into tiled BigTIFFs")
    if not summary.outcomes:
        say(f"no images found in {args.input}" + ("" if args.recursive else " (add --recursive for subfolders)"))
    say(f"batch {args.task}: {summary.describe()}; report: {summary.report}")
    return 1 if summary.failed else 0
