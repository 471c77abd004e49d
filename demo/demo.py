"""`make demo`: enlarge a real photograph 4x with a real trained network, and write a before/after picture.

The photo is scikit-image's astronaut (512x512); a 256x256 region around the face is upscaled by
realesrgan-x4plus, converted on first use from Real-ESRGAN's ncnn release that the offline-models extra installs
(nothing is downloaded), tiled within the memory budget. About a minute on two CPU cores. Prints the model, the
tile plan, the time and the peak memory, and writes ``demo-output/``: the region, the result, and
``before-after.png`` (Lanczos on the left, the network on the right).

It lives outside the package (``demo/``, not ``bench/``: it compares nothing and writes no results JSON) and
uses the public API (``import tessera``) as a user's script would; run it with ``python demo/demo.py``.
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import cv2
import numpy as np

NETWORK = "realesrgan-x4plus-ncnn"
FALLBACK = "realesr-animevideov3"


def demo_region(size: int = 256) -> np.ndarray:
    """A ``size`` x ``size`` RGB region of scikit-image's astronaut photo, around her face (uint8)."""
    from skimage import data

    photo = data.astronaut()
    top, left = max(0, min(10, 512 - size)), max(0, min(130, 512 - size))
    return np.ascontiguousarray(photo[top:top + size, left:left + size])


def side_by_side(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """``before`` and ``after`` next to each other, each labelled in its top-left corner."""
    panels = []
    for label, image in (("Lanczos", before), ("real network", after)):
        panel = image.copy()
        cv2.putText(panel, label, (12, 36), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (0, 0, 0), 5, cv2.LINE_AA)
        cv2.putText(panel, label, (12, 36), cv2.FONT_HERSHEY_SIMPLEX, 1.0, (255, 255, 255), 2, cv2.LINE_AA)
        panels.append(panel)
    return np.concatenate(panels, axis=1)


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def main(argv: list[str] | None = None) -> int:
    from tessera import Picture, save_image, upscale
    from tessera.models.catalog import get_entry
    from tessera.models.ncnn_cache import bundled_available
    from tessera.options import format_bytes

    parser = argparse.ArgumentParser(prog="python demo/demo.py", description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("demo-output"))
    parser.add_argument("--size", type=int, default=256, choices=range(16, 513), metavar="16..512",
                        help="side of the region to upscale, in pixels")
    parser.add_argument("--model", default=None, help=f"the network (default {NETWORK}, else {FALLBACK})")
    args = parser.parse_args(argv)

    model = args.model or next((name for name in (NETWORK, FALLBACK) if bundled_available(get_entry(name))),
                               "lanczos")
    args.out.mkdir(parents=True, exist_ok=True)
    region = demo_region(args.size)
    source = save_image(Picture(pixels=region), args.out / "region.png")
    print(f"input   {source} ({args.size}x{args.size} of scikit-image's astronaut photo)")
    if model == "lanczos":
        print("model   no real network is installed (pip install 'tessera[offline-models]'): weight-free Lanczos")

    baseline = _peak_rss_bytes()
    started = time.perf_counter()
    done = upscale(source, model=model, scale=4)
    elapsed = time.perf_counter() - started
    result, report = done.image, done.report
    output = save_image(result, args.out / "upscaled.png")
    print(f"model   {report.model}" + ("" if report.weight_free else
                                      f" ({get_entry(report.model).notes}; no download)"))
    for number, plan in enumerate(report.passes, 1):
        print(f"pass {number}  x{plan.scale}: {plan.describe()}")
    print(f"output  {output} ({result.width}x{result.height})")
    lanczos = upscale(region, model="lanczos", scale=4).image
    comparison = save_image(Picture(pixels=side_by_side(lanczos, result.pixels)), args.out / "before-after.png")
    print(f"compare {comparison} (Lanczos | {report.model})")
    print(f"time    {elapsed:.1f} s for the upscale")
    print(f"memory  peak RSS {format_bytes(_peak_rss_bytes())} (before the upscale: {format_bytes(baseline)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
