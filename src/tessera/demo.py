"""`make demo`: build a large photo from scikit-image's bundled pictures and run the default upscale on it.

Prints the model, the tile plan, the time and the peak memory, and writes ``demo-output/``. Nothing is
downloaded: the default upscaler is weight-free.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import cv2
import numpy as np


def build_mosaic(width: int = 6000, height: int = 4000) -> np.ndarray:
    """A width x height RGB mosaic of skimage's astronaut, coffee, chelsea and rocket photos (uint8)."""
    from skimage import data

    photos = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    cell_h, cell_w = height // 2, width // 2
    rows = []
    for r in range(2):
        cells = []
        for c in range(2):
            photo = photos[r * 2 + c]
            cells.append(cv2.resize(photo, (cell_w, cell_h), interpolation=cv2.INTER_CUBIC))
        rows.append(np.concatenate(cells, axis=1))
    return np.ascontiguousarray(np.concatenate(rows, axis=0))


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def main(argv: list[str] | None = None) -> int:
    from .options import format_bytes
    from .image import Picture, save_image
    from .tasks.upscale import UpscaleReport, upscale

    parser = argparse.ArgumentParser(prog="python -m tessera.demo", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo-output"))
    parser.add_argument("--size", default="6000x4000", help="WIDTHxHEIGHT of the generated photo")
    parser.add_argument("--scale", type=float, default=2.0)
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))

    args.out.mkdir(parents=True, exist_ok=True)
    mosaic = build_mosaic(width, height)
    source = save_image(Picture(pixels=mosaic), args.out / "input.jpg", quality=92)
    print(f"input   {source} ({width}x{height}, {width * height / 1e6:.0f} MP, built from scikit-image photos)")

    baseline = _peak_rss_bytes()
    reports: list[UpscaleReport] = []
    started = time.perf_counter()
    result = upscale(source, scale=args.scale, report=reports)
    elapsed = time.perf_counter() - started
    output = save_image(result, args.out / "upscaled.jpg", quality=92)
    report = reports[0]
    print(f"model   {report.model} (weight-free default; `tessera models pull realesrgan-x4plus` for a network)")
    for number, plan in enumerate(report.passes, 1):
        print(f"pass {number}  x{plan.scale}: {plan.describe()}")
    if report.finish:
        print(f"finish  {report.finish}")
    print(f"output  {output} ({result.width}x{result.height}, {result.width * result.height / 1e6:.0f} MP)")
    print(f"time    {elapsed:.1f} s for the upscale")
    print(f"memory  peak RSS {format_bytes(_peak_rss_bytes())} "
          f"(input + output pixels: {format_bytes(mosaic.nbytes + result.pixels.nbytes)}; "
          f"before the upscale: {format_bytes(baseline)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
