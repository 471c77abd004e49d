"""`tessera resize PATH... --max-side N [-o OUT_DIR]`: shrink photos so that no side exceeds N pixels.

Like ``mogrify -resize NxN>``: only shrinks, keeps the aspect ratio, the format and the metadata, and rewrites
each file atomically (in place unless ``-o`` names another folder). Every page of a TIFF and every frame of an
animation (GIF, APNG, WEBP) is kept, palette pictures stay palette; a file that cannot be kept whole fails with
its reason and is left as it is. Exit code 1 when some files failed. Imports no torch.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from . import say
from .display import progress_display


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("resize", help="shrink photos to a largest side (never enlarges)",
                                   description="Shrink images so their longest side is at most --max-side pixels. "
                                               "Files that are already small enough are not touched. Every page "
                                               "of a TIFF and every frame of a GIF, APNG or WEBP animation is "
                                               "kept; palette images stay palette.")
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                        help="image files or folders (PNG, JPEG, WEBP, TIFF, BMP, GIF)")
    parser.add_argument("--max-side", type=int, required=True, metavar="N", help="longest side in pixels")
    parser.add_argument("-o", "--output", type=Path, default=None,
                        help="write into this folder (tree mirrored) instead of replacing the files")
    parser.add_argument("--recursive", action="store_true", help="include subfolders of the folders given")
    parser.add_argument("--pattern", default=None, metavar="GLOB", help="only files matching this glob")
    parser.add_argument("--quality", type=int, default=95, help="JPEG/WEBP quality (default: 95)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..batch.resize import resize_files
    from ..progress import ProgressEvent
    from ..image.write import check_output_folder, check_quality

    check_quality(args.quality)  # --max-side is checked by resize_files before it touches a file
    if args.output is not None:
        check_output_folder(args.output)
    bar = progress_display(args.quiet)
    count = [0]

    def on_outcome(outcome) -> None:
        count[0] += 1
        bar(ProgressEvent("files", count[0], count[0], 0.0, None, outcome.file))
        if outcome.status == "failed":
            say(f"failed: {outcome.file}: {outcome.error}")

    try:
        outcomes = resize_files(args.paths, args.max_side, output_dir=args.output, recursive=args.recursive,
                                pattern=args.pattern, quality=args.quality, on_outcome=on_outcome)
    finally:
        bar.close()
    tally = {s: sum(1 for o in outcomes if o.status == s) for s in ("done", "skipped", "failed")}
    say(f"resized {tally['done']}, left {tally['skipped']} already within {args.max_side} px, "
        f"{tally['failed']} failed")
    return 1 if tally["failed"] else 0
