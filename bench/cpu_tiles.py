"""The measured CPU tile choice against a sweep of fixed tiles (issue #15 item 5).

Network and photo as ``bench/tiling.py``: spandrel's Compact x4 (num_feat=32, num_conv=8, random weights) on a
1024x1024 mosaic of scikit-image photos. For each thread count (``torch.set_num_threads``; 1 and 2 by default):

1. the measured choice: :func:`tessera.engine.cpu_tiles.measure_cpu_tiles` over the candidates of
   :func:`~tessera.engine.cpu_tiles.cpu_candidates` (largest tile fitting the memory budget as ``choose_tile``
   computes it), from an empty cache: the tile, each candidate's window time and the probing seconds;
2. ``tiled_apply`` end to end at fixed tiles 96, 128, 192, 256, 384, 512, at the measured tile and at
   ``tile="auto"`` (the engine's own rule at the time of the run), best of ``--repeats`` runs taken round-robin
   (so a busy spell of the machine hits every tile alike);
3. the ratios measured / best fixed (goal <= 1.10), with and without the probing time, and auto / best fixed.

The 1-minute load average before and after each thread count is recorded: on a machine that other work shares
the figures mean little (two threads on two busy cores run several times slower, and unevenly).

Writes ``bench/results/cpu_tiles.json``. Run: ``.venv/bin/python bench/cpu_tiles.py`` (~3 min on 2 idle cores);
``--size 512 --repeats 1`` for a quick look.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiling import network, photo  # noqa: E402 - the tiling benchmark's network and photo

RESULTS = Path(__file__).resolve().parent / "results" / "cpu_tiles.json"
FIXED = (96, 128, 192, 256, 384, 512)


def fewest_tile(model: Any, runtime: Any, longest: int, pad: int) -> int:
    """The largest tile whose window fits the memory budget, evened over the image (as ``choose_tile`` does)."""
    from tessera.engine.probes import measure_memory

    window = math.isqrt(measure_memory(model, runtime).max_pixels(runtime.budget))
    align = model.size_requirements.multiple_of
    largest = max(align, window - window % align - 2 * pad)
    count = math.ceil(longest / largest)
    return longest if count <= 1 else min(longest, -(-math.ceil(longest / count) // align) * align)


def sweep(threads: int, size: int, repeats: int) -> dict[str, Any]:
    """Sections 1-3 for one thread count."""
    from tessera.engine import Runtime, apply_tiles, measure_context
    from tessera.engine import cpu_tiles
    from tessera.models.loader import as_model

    torch.set_num_threads(threads)
    load = os.getloadavg()[0]
    net = network()
    image = photo(size)
    model = as_model(net)
    apply_tiles(model, image[:64, :64], tile=32, device="cpu", precision="fp32")  # layout, scale, memory probes
    runtime = Runtime.create("cpu", "fp32", model=model)
    runtime.prepare(model)
    pad = measure_context(model, runtime)
    candidates = cpu_tiles.cpu_candidates(size, fewest_tile(model, runtime, size, pad),
                                          model.size_requirements.multiple_of)
    choice = cpu_tiles.measure_cpu_tiles(model, runtime, size, size, pad, candidates)
    print(f"{threads} thread(s): candidates {candidates}: measured {choice.tile}px in {choice.probe_seconds:.2f} s"
          f"{' (' + choice.note + ')' if choice.note else ''}", flush=True)
    for c in choice.candidates:
        if c.seconds is not None:
            print(f"  {c.tile:4d}px: window {c.window[0]}x{c.window[1]} {c.seconds * 1e3:7.1f} ms x {c.windows:3d}"
                  f" = {c.grid_seconds:.2f} s", flush=True)

    settings: list[Any] = [*FIXED, "measured", "auto"]
    best: dict[str, float] = {}
    plans: dict[str, str] = {}
    for _ in range(repeats):
        for setting in settings:
            tile = choice.tile if setting == "measured" else setting
            started = time.perf_counter()
            plan = apply_tiles(model, image, tile=tile, device="cpu", precision="fp32").plan
            seconds = time.perf_counter() - started
            best[str(setting)] = min(best.get(str(setting), math.inf), seconds)
            plans[str(setting)] = plan.describe()
    rows = [{"tile": s, "seconds": round(best[str(s)], 3), "plan": plans[str(s)]} for s in settings]
    fixed_best = min(FIXED, key=lambda t: best[str(t)])
    result = {
        "threads": threads,
        "candidates": candidates,
        "measured_tile": choice.tile,
        "probe_seconds": round(choice.probe_seconds, 3),
        "probe_note": choice.note,
        "window_ms": {str(c.tile): None if c.seconds is None else round(c.seconds * 1e3, 2)
                      for c in choice.candidates},
        "rows": rows,
        "best_fixed_tile": fixed_best,
        "measured_vs_best_fixed": round(best["measured"] / best[str(fixed_best)], 3),
        "measured_with_probe_vs_best_fixed": round((best["measured"] + choice.probe_seconds)
                                                   / best[str(fixed_best)], 3),
        "auto_vs_best_fixed": round(best["auto"] / best[str(fixed_best)], 3),
        "load_average_before_after": [round(load, 2), round(os.getloadavg()[0], 2)],
    }
    for row in rows:
        print(f"  tile {str(row['tile']):>8s}: {row['seconds']:6.2f} s  ({row['plan']})", flush=True)
    print(f"  best fixed {fixed_best}px; measured / best fixed {result['measured_vs_best_fixed']:.2f}x "
          f"(with probing {result['measured_with_probe_vs_best_fixed']:.2f}x); auto / best fixed "
          f"{result['auto_vs_best_fixed']:.2f}x", flush=True)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=1024, help="photo side in pixels (default: %(default)s)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default: 1 2)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per tile, best kept (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="JSON file (default: %(default)s)")
    args = parser.parse_args(argv)
    started, load = time.perf_counter(), os.getloadavg()[0]
    runs = [sweep(threads, args.size, args.repeats) for threads in args.threads]
    result = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "network": "spandrel Compact x4 num_feat=32 num_conv=8, random weights",
        "image": f"skimage mosaic {args.size}x{args.size}",
        "repeats": args.repeats,
        "runs": runs,
        "seconds": round(time.perf_counter() - started, 1),
        "load_average_before_after": [round(load, 2), round(os.getloadavg()[0], 2)],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
