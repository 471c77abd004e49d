"""Tiled against untiled on every architecture of bench/architectures.py, at auto settings, one run.

For each small random-weight network: the untiled output (spandrel's own call, which pads the image as the
network requires), then ``tiled_apply`` with ``tile_pad`` and ``blend`` auto, cut into several tiles in both
directions (at auto tile a photo this small fits one window, which is exact by construction and proves
nothing): a local network with a fixed 32 px tile, a non-local one at auto tile under a memory budget that
holds a 96 px window (what a photo larger than the device's largest window gets: the pad at most a quarter of
the window, feathered). Recorded per architecture: the measured context, whether
tessera found the network local, the blend auto chose, the lattice tiles are aligned to, the largest difference
in uint8 levels, the share of pixels off by more than one level, and the seconds the context probe took.

    .venv/bin/python bench/sweep.py                 # all, writes bench/results/sweep.json and prints the table
    .venv/bin/python bench/sweep.py SwinIR DITN     # some: their rows of the JSON are refreshed

The bounds the table is held to (``check``): local networks at most 1 level; networks tessera declares or
measures non-local (a whole-image path: global pooling, channel attention over all pixels, Fourier units) are
feathered, and their difference is the price of tiling them, stated per architecture in the table.
"""
from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from architectures import ARCHITECTURES  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "sweep.json"
HEIGHT, WIDTH = 130, 166  # multiples of no period: far-border windows are cut short on both axes
TILE = 32  # local networks
WINDOW = 96  # non-local networks: the largest window the budget holds
LOCAL_BOUND = 1  # uint8 levels


def photo(height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """A real photograph (scikit-image's astronaut, area-downscaled): textures, edges and flat regions."""
    import cv2
    from skimage import data

    return cv2.resize(data.astronaut(), (width, height), interpolation=cv2.INTER_AREA)


def untiled(descriptor, image: np.ndarray) -> np.ndarray:
    """The whole image through spandrel's own call (its padding for size requirements), rounded to uint8."""
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    with torch.inference_mode():
        y = descriptor(x).clamp(0, 1)
    return np.round(y[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)


def sweep_one(name: str, image: np.ndarray | None = None, tile: int = TILE) -> dict:
    """Build ``name``, run it untiled and tiled at auto settings on ``image``; the row of the table."""
    from tessera.engine import Runtime, apply_tiles, measure_memory, measure_reach
    from tessera.models.loader import as_model

    image = photo() if image is None else image
    torch.manual_seed(0)
    descriptor = ARCHITECTURES[name]()
    reference = untiled(descriptor, image)
    model = as_model(descriptor)
    runtime = Runtime.create("cpu", "fp32", model=model)
    started = time.monotonic()
    reach = measure_reach(runtime.prepare(model), runtime)
    probe_seconds = time.monotonic() - started
    if reach.local:
        options = {"tile": tile}
        window = -(-(tile + 2 * reach.pad) // done_align(model)) * done_align(model)
        if window + tile > min(image.shape[:2]):  # a wide context: a larger photo, so that it is cut still
            image = photo(window + tile + 11, window + tile + 37)
            reference = untiled(descriptor, image)
    else:
        side = max(WINDOW, 3 * done_align(model))  # a window of at least 2 lattice periods, after the pad
        runtime.budget = int(measure_memory(model, runtime).bytes_for(side, side))
        if side * 3 // 2 > min(image.shape[:2]):  # a large lattice: a larger photo, so that it is cut still
            image = photo(side * 3 // 2 + 11, side * 3 // 2 + 37)
            reference = untiled(descriptor, image)
        options = {}
    started = time.monotonic()
    done = apply_tiles(model, image, runtime=runtime, **options)
    seconds = time.monotonic() - started
    off = np.abs(done.output.astype(np.int32) - reference.astype(np.int32))
    return {"architecture": name, "spandrel": descriptor.architecture.id, "scale": descriptor.scale,
            "local": reach.local, "why": reach.note, "pad": done.plan.pad, "align": done.plan.align,
            "blend": done.plan.blend, "tiles": done.plan.tiles, "max_levels": int(off.max()),
            "share_over_1": round(float((off > 1).mean()), 5), "probe_s": round(probe_seconds, 2),
            "image": f"{image.shape[1]}x{image.shape[0]}", "tiled_s": round(seconds, 2)}


def done_align(model) -> int:
    from tessera.receptive import tile_period

    return tile_period(model)


def check(row: dict) -> str | None:
    """What is wrong with a row, or None: a local network more than LOCAL_BOUND levels off, or a non-local one
    not feathered."""
    if row["local"] and row["max_levels"] > LOCAL_BOUND:
        return f"{row['architecture']}: local, yet {row['max_levels']} levels off"
    if not row["local"] and row["blend"] != "feather":
        return f"{row['architecture']}: not local, yet blended with {row['blend']}"
    return None


def table(rows: list[dict]) -> str:
    lines = ["| architecture | scale | local | pad | align | blend | tiles | max levels | > 1 level | probe s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['architecture']} | | error: {r['error']} | | | | | | | |")
            continue
        lines.append(f"| {r['architecture']} | x{r['scale']} | {'yes' if r['local'] else 'no'} | {r['pad']} | "
                     f"{r['align']} | {r['blend']} | {r['tiles']} | {r['max_levels']} | "
                     f"{100 * r['share_over_1']:.2f} % | {r['probe_s']} |")
    return "\n".join(lines)


def main(names: list[str]) -> int:
    torch.set_num_threads(2)
    rows, problems = [], []
    for name in names or list(ARCHITECTURES):
        try:
            row = sweep_one(name)
        except Exception as error:  # noqa: BLE001 - one architecture's failure is a row of the table
            row = {"architecture": name, "error": f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"}
        rows.append(row)
        problem = check(row) if "error" not in row else row["error"]
        if problem:
            problems.append(problem)
        print(json.dumps(row), flush=True)
    print(table(rows))
    if names and RESULTS.is_file():  # refresh these rows of the committed table, keep the others
        fresh = {row["architecture"]: row for row in rows}
        rows = [fresh.pop(row["architecture"], row) for row in json.loads(RESULTS.read_text())["rows"]]
        rows += list(fresh.values())
        problems = [p for p in (check(r) if "error" not in r else r["error"] for r in rows) if p]
    RESULTS.write_text(json.dumps({
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "image": f"astronaut {WIDTH}x{HEIGHT}", "tile_local": TILE, "window_non_local": WINDOW,
        "local_bound_levels": LOCAL_BOUND,
        "rows": rows, "problems": problems}, indent=1) + "\n")
    for problem in problems:
        print("problem:", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
