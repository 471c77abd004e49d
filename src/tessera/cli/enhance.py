"""`tessera enhance INPUT -o OUTPUT [--model NAME|PATH] [--upscale S] [--background ...] [options]`,
`tessera enhance INPUT --list-faces` and `tessera enhance-stitch MANIFEST -o OUTPUT`.

``enhance`` restores the faces of a photo; ``--list-faces`` only detects them and prints their indices (the ones
``--faces`` takes), boxes and scores; ``enhance-stitch`` puts back the faces ``enhance --save-faces DIR`` wrote,
after some were edited by hand.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from . import (add_output_arguments, add_task_arguments, check_before_work, check_output_arguments,
               check_output_fits, copy_input_unchanged, options_from_args, read_input, run_task, say, write_output)


def register(subparsers: argparse._SubParsersAction) -> None:
    from ..options import FaceOptions

    parser = subparsers.add_parser(
        "enhance", help="restore faces (GPEN, GFPGAN, CodeFormer, RestoreFormer); cost follows the faces",
        description="Detect the faces of a photo, restore each aligned face in batches and paste it back; "
                    "optionally upscale the background. Pixels away from the faces are not touched. Faces are "
                    "numbered largest first (--list-faces prints them; --faces 0,2 restores those only).")
    add_task_arguments(parser, FaceOptions, title="face and engine options", output_unless="--list-faces")
    parser.add_argument("--list-faces", action="store_true",
                        help="only detect the faces and print index, box and score of each (no -o needed)")
    parser.set_defaults(func=run)

    stitch = subparsers.add_parser(
        "enhance-stitch", help="put back the faces written by `enhance --save-faces` (after editing them)",
        description="Paste the restored face files listed in a --save-faces manifest into the photo, exactly as "
                    "enhance did: unedited files give enhance's output.")
    stitch.add_argument("manifest", type=Path, help="manifest.json written by --save-faces")
    stitch.add_argument("--input", type=Path, default=None, help="the photo (default: the one the manifest names)")
    stitch.add_argument("--background", default=None,
                        help="upscaling model for the background (default: the one the manifest names)")
    stitch.add_argument("--model-dir", type=Path, default=None, help="model cache (default: $TESSERA_HOME)")
    add_output_arguments(stitch)
    stitch.set_defaults(func=run_stitch)


def run(args: argparse.Namespace) -> int:
    from ..errors import OptionError
    from ..options import FaceOptions

    if args.list_faces:
        return list_faces(args)
    if args.output is None:
        raise OptionError("give the output file with -o OUTPUT (or --list-faces to only list the faces)")
    started = time.perf_counter()
    options = check_before_work(args, FaceOptions, "enhance")
    check_output_fits(args, options.upscale)
    from ..tasks.faces import WEIGHT_FREE_HINT, enhance_faces  # torch: only once the checks passed

    done = run_task(args, enhance_faces, FaceOptions)
    result, report = done.image, done.report
    if not report.faces:
        found = "no face found" if not report.found else f"none of the {report.found} face(s) found was chosen"
        say(f"{found} in {args.input} (detector {report.detector}); the output is an unchanged copy"
            + ("" if report.scale == (1.0, 1.0) else f" resized x{report.scale[0]:g}"))
        path = copy_input_unchanged(args) if report.scale == (1.0, 1.0) else None
        if path is not None:
            say(f"wrote {path} in {time.perf_counter() - started:.1f}s")
            return 0
    path = write_output(result, args)
    if report.weight_free:
        say(f"faces cleaned up with the weight-free method ({report.model}); for GPEN run "
            f"`tessera models pull {WEIGHT_FREE_HINT}` and add `--model {WEIGHT_FREE_HINT}`")
    elif report.faces:
        say(f"faces restored with {report.model}" + (f" at strength {report.strength:g}"
                                                       if report.strength != 1 else ""))
    if report.aligned:
        face = report.faces[0]
        width, height = round(face.face.width), round(face.face.height)
        say(f"aligned input restored whole at {face.size}x{face.size} px"
            + ("" if width == height else f" (the {width}x{height} input was stretched to a square and back)"))
    elif report.faces:
        sizes = sorted(face.size for face in report.faces)
        chosen = "" if len(report.faces) == report.found else (
            f" (of {report.found}: " + ",".join(str(i) for i in sorted(f.index for f in report.faces)) + ")")
        say(f"{len(report.faces)} face(s){chosen} found by {report.detector}, aligned at {sizes[0]}"
            + (f"-{sizes[-1]}" if sizes[-1] != sizes[0] else "") + " px; background: " + report.background)
    if report.manifest is not None:
        say(f"faces written to {report.manifest.parent} (after editing, run `tessera enhance-stitch "
            f"{report.manifest} -o OUTPUT`)")
    say(f"wrote {path} ({result.width}x{result.height}) in {time.perf_counter() - started:.1f}s")
    return 0


def list_faces(args: argparse.Namespace) -> int:
    """Detect only, and print one line per face on stdout: index, box (x0 y0 x1 y1), size and score."""
    from ..options import FaceOptions, parse_options
    from ..tasks.faces import find_faces

    options = parse_options(FaceOptions, options_from_args(args, FaceOptions))
    if options.aligned:
        from ..errors import OptionError

        raise OptionError("--list-faces detects faces; an --aligned input is one face and nothing is detected")
    picture = read_input(args)
    faces = find_faces(picture.pixels, options)
    print("index  x0 y0 x1 y1  size  score")
    for index, face in enumerate(faces):
        x0, y0, x1, y1 = (round(v) for v in face.box)
        print(f"{index}  {x0} {y0} {x1} {y1}  {round(face.size)}  {face.score:.2f}")
    say(f"{len(faces)} face(s) in {args.input}, largest first; restore some with --faces INDEX,INDEX")
    return 0


def run_stitch(args: argparse.Namespace) -> int:
    from ..tasks.faces_manifest import read_face_manifest, stitch_faces

    started = time.perf_counter()
    manifest = read_face_manifest(args.manifest)
    photo = args.input or manifest.input
    check_output_arguments(args, source=photo)
    result = stitch_faces(manifest, photo if photo is None else str(photo), background=args.background,
                          model_dir=str(args.model_dir) if args.model_dir else None)
    path = write_output(result, args)
    say(f"wrote {path} ({result.width}x{result.height}) with {len(manifest.faces)} face(s) in "
        f"{time.perf_counter() - started:.1f}s")
    return 0
