"""`tessera serve [--host 127.0.0.1] [--port 7860] [--auth USER:PASS] [--output-dir DIR] [--keep-days 7]
[--model-dir CACHE] [--models-from DIR ...]`.

Starts the local web UI (Inpaint, Faces, Upscale). Results go to the output folder and are deleted after
``--keep-days`` by a sweep at start and every hour. Binding to a non-loopback address needs ``--auth`` or
``--insecure``; failed logins are throttled per client address.

Models: a client chooses from a list and never sends a path. The list holds the catalog's models (those in the
cache, ``--model-dir``, as for every other command) and the weight files (.pth .pt .ckpt .safetensors .bin)
found, when the server starts, directly in each ``--models-from`` folder, offered by file name.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from . import say


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve", help="the local web UI: inpaint with a brush, enhance faces, upscale",
        description="Start the web UI. Jobs run one at a time per device, with progress and Cancel; results are "
                    "kept in the output folder for --keep-days.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default: 127.0.0.1; others need --auth or --insecure)")
    parser.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    parser.add_argument("--auth", metavar="USER:PASS", default=None, help="require this user name and password")
    parser.add_argument("--insecure", action="store_true",
                        help="allow a non-loopback --host without --auth (anyone who can reach it can use it)")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="where results are kept (default: $TESSERA_HOME/results, ~/.cache/tessera/results)")
    parser.add_argument("--keep-days", type=float, default=7.0, help="delete results older than this (default: 7)")
    parser.add_argument("--max-upload", default="200MB", help="largest upload, e.g. 200MB (default: 200MB)")
    parser.add_argument("--max-megapixels", type=float, default=100.0,
                        help="largest photo in megapixels, checked before decoding (default: 100)")
    parser.add_argument("--preview-size", type=int, default=1280,
                        help="longest side of the previews shown in the page (default: 1280)")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="model cache of the catalog's models, as for `tessera models pull` "
                             "(default: $TESSERA_HOME)")
    parser.add_argument("--models-from", type=Path, action="append", default=[], metavar="DIR",
                        help="also offer the weight files directly in DIR (by file name; repeatable); clients "
                             "choose from the list and can never name a path")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import OptionError
    from ..options import parse_size
    from ..web.access import check_exposure, parse_auth
    from ..web.limits import Limits
    from ..web.retention import RetentionSweeper, default_output_dir, prepare_output_dir

    auth = parse_auth(args.auth)
    check_exposure(args.host, auth, args.insecure)
    if not args.keep_days > 0:
        raise OptionError(f"--keep-days must be above 0, got {args.keep_days:g}")
    if not args.max_megapixels > 0:
        raise OptionError(f"--max-megapixels must be above 0, got {args.max_megapixels:g}")
    if not 64 <= args.preview_size <= 8192:
        raise OptionError(f"--preview-size must be between 64 and 8192, got {args.preview_size}")
    try:
        max_upload = parse_size(args.max_upload)
    except ValueError as error:
        raise OptionError(f"--max-upload: {error}") from None
    from ..web.models import scan_model_folder

    for folder in args.models_from:  # a missing or unreadable folder is an OptionError before anything starts
        say(f"models from {folder}: {len(scan_model_folder(folder))} weight file(s)")

    from ..web.app import WebConfig, build_app, launch

    output_dir = prepare_output_dir(args.output_dir or default_output_dir())
    config = WebConfig(output_dir=output_dir, keep_days=args.keep_days,
                       limits=Limits(max_upload_bytes=int(max_upload),
                                     max_pixels=int(args.max_megapixels * 1_000_000)),
                       preview_side=args.preview_size, model_dir=args.model_dir,
                       model_folders=tuple(args.models_from))
    sweeper = RetentionSweeper(output_dir, args.keep_days * 86400).start()
    say(f"results in {output_dir}, deleted after {args.keep_days:g} day(s)")
    blocks, _app = build_app(config)
    try:
        launch(blocks, config, host=args.host, port=args.port, auth=auth, insecure=args.insecure)
    finally:
        sweeper.stop()
    return 0
