"""The engine's own choices on the CPU, measured (issue #13): the tile size rule and the pipeline.

- ``tiles``: a 1024x1024 photo (skimage's astronaut, bicubic 2x) upscaled 4x by realesr-animevideov3 through the
  engine at fixed tiles and at ``tile="auto"`` (one run each, after the model's load and memory probes); and the
  bare channels-last forward's cost per window pixel by window side for animevideov3 and x4plus, against the
  cache factor the engine's CPU tile rule models (``_CPU_CACHE_WINDOW``, ``_CPU_CACHE_PENALTY`` in
  ``tessera/engine/engine.py``).
- ``pipeline``: a 2048x2048 photo upscaled 4x (animevideov3, auto tiles) by the pipelined engine and one batch at
  a time (``Runtime.pipelined = False``), same settings, in one run: seconds and whether the pixels are identical.

    .venv/bin/python bench/cpu_engine.py                    # both (~6 min on 2 idle cores): bench/results/cpu_engine.json
    .venv/bin/python bench/cpu_engine.py --section pipeline # one section
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_speed import best_of, merge, photo  # noqa: E402 - the shared helpers of the CPU benchmarks

RESULTS = Path(__file__).resolve().parent / "results" / "cpu_engine.json"


# ---------------------------------------------------------------------------------------------------- tiles
def window_cost() -> dict[str, Any]:
    """The bare forward's cost per window pixel by window side (channels-last, fp32), relative to the smallest:
    the cache factor the engine's CPU tile choice models (``_CPU_CACHE_WINDOW``, ``_CPU_CACHE_PENALTY``)."""
    from tessera.engine.engine import _CPU_CACHE_PENALTY, _CPU_CACHE_WINDOW
    from tessera.models.loader import load_model

    sides = {"realesr-animevideov3": (96, 192, 288, 384, 576, 768), "realesrgan-x4plus-ncnn": (64, 128, 192, 256)}
    rows = []
    for name, windows in sides.items():
        net = load_model(name).network.eval().to(memory_format=torch.channels_last)
        first = None
        for side in windows:
            x = torch.rand(1, 3, side, side).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                seconds, _ = best_of(lambda: net(x), 2 if side <= 384 else 1)
            per_pixel = seconds / side ** 2
            first = first or per_pixel
            modelled = 1 + _CPU_CACHE_PENALTY * min(1.0, max(0, side - _CPU_CACHE_WINDOW) / _CPU_CACHE_WINDOW)
            rows.append({"network": name, "window": side, "seconds": seconds, "us_per_pixel": per_pixel * 1e6,
                         "factor": per_pixel / first, "modelled_factor": modelled})
            print(f"{name} window {side}: {per_pixel * 1e6:.1f} us/px, x{per_pixel / first:.2f} "
                  f"(modelled x{modelled:.2f})", flush=True)
    return {"rows": rows}


def tiles() -> dict[str, Any]:
    """End to end through the engine on a 1024x1024 photo (astronaut, bicubic 2x) with animevideov3: fixed tiles
    against the auto choice; plus the window cost curve (:func:`window_cost`)."""
    from tessera.engine import apply_tiles
    from tessera.models.loader import load_model

    image = cv2.resize(photo(512), (1024, 1024), interpolation=cv2.INTER_CUBIC)
    model = load_model("realesr-animevideov3")
    apply_tiles(model, image[:64, :64], device="cpu")  # loads, measures memory once
    rows = []
    for tile in (128, 192, 256, 342, 512, 1024, "auto"):
        start = time.perf_counter()
        plan = apply_tiles(model, image, tile=tile, device="cpu").plan
        seconds = time.perf_counter() - start
        rows.append({"tile": tile, "chosen": plan.tile, "tiles": plan.tiles, "pad": plan.pad, "seconds": seconds})
        print(f"tile {tile}: {plan.describe()}: {seconds:.1f} s", flush=True)
    best = min(r["seconds"] for r in rows if r["tile"] != "auto")
    auto = next(r for r in rows if r["tile"] == "auto")
    return {"photo": "astronaut 1024x1024", "network": "realesr-animevideov3", "rows": rows,
            "auto_vs_best_fixed": auto["seconds"] / best, "window_cost": window_cost()}


# ---------------------------------------------------------------------------------------------------- pipeline
def pipeline() -> dict[str, Any]:
    """A 2048x2048 x4 upscale (animevideov3, auto tiles) with the pipelined engine and one batch at a time
    (``Runtime.pipelined = False``), alternately, same settings: seconds and whether the pixels are identical."""
    from tessera.engine import Runtime, apply_tiles
    from tessera.models.loader import load_model

    image = cv2.resize(photo(512), (2048, 2048), interpolation=cv2.INTER_CUBIC)
    model = load_model("realesr-animevideov3")
    apply_tiles(model, image[:64, :64], device="cpu")
    outputs, rows = {}, []
    for pipelined in (False, True):
        runtime = Runtime.create("cpu", "fp32", model=model)
        runtime.pipelined = pipelined
        start = time.perf_counter()
        done = apply_tiles(model, image, runtime=runtime)
        seconds = time.perf_counter() - start
        outputs[pipelined] = done.output
        rows.append({"engine": "pipelined" if pipelined else "one batch at a time", "seconds": seconds,
                     "plan": done.plan.describe()})
        print(f"{rows[-1]['engine']}: {seconds:.1f} s ({done.plan.describe()})", flush=True)
    return {"image": "astronaut 2048x2048 -> 8192x8192", "rows": rows,
            "pipelined_over_sequential": rows[1]["seconds"] / rows[0]["seconds"],
            "identical": bool(np.array_equal(outputs[False], outputs[True]))}


SECTIONS = {"tiles": tiles, "pipeline": pipeline}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--section", action="append", choices=sorted(SECTIONS), help="run only this section")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON file (default: %(default)s)")
    args = parser.parse_args(argv)
    for name in args.section or list(SECTIONS):
        print(f"== {name}", flush=True)
        started, load = time.perf_counter(), os.getloadavg()[0]
        section = {**SECTIONS[name](), "seconds": round(time.perf_counter() - started, 1),
                   "load_average_before_after": [round(load, 2), round(os.getloadavg()[0], 2)]}
        merge(args.out, name, section)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
