"""Inpainting an image larger than memory: holes found in one lazy pass, filled group by group, streamed out.

A coarse occupancy map of the mask (one cell per 32 x 32 pixels) is built in one lazy pass; groups of holes with
their context become crops that :func:`tessera.tasks.inpaint.inpaint` fills one at a time (each crop's changed
pixels kept in a scratch folder beside the output); then the input is streamed through, tile by tile, with each
group's changed pixels laid over it, into a tiled BigTIFF. Memory follows the largest group of holes, not the
image; pixels outside the holes are the input's, bit for bit.
"""
from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import Runtime
from ..errors import InputError, ResourceError
from ..image.atomic import scratch_folder
from ..image.regions import TileLayout, check_streamed_output, open_regions, write_tiled_tiff
from ..masks import threshold
from ..models.descriptor import Model
from ..options import InpaintOptions, format_bytes, parse_options
from ..progress import ProgressCallback
from .files import default_max_ram, in_memory_bytes
from .inpaint import inpaint, resolve_inpaint_model
from .inpaint_regions import auto_margin
from .inpaint_sizing import QUANTUM
from .result import Result, StreamReport

MASK_CELL = 32                    # pixels per side of a cell of the coarse mask occupancy map
MASK_SCAN_BLOCK = 2048            # mask rows/columns read at once while building the occupancy map
INPAINT_TILE = 512                # TIFF tile side of a streamed inpainting result


def _blocks(height: int, width: int, block: int) -> Iterator[tuple[int, int, int, int]]:
    """Row-major (y0, y1, x0, x1) rectangles of ``block`` pixels: the output file's tiles in file order."""
    for y0 in range(0, height, block):
        for x0 in range(0, width, block):
            yield y0, min(y0 + block, height), x0, min(x0 + block, width)


@dataclass(frozen=True)
class _Group:
    """One crop of holes to inpaint: ``box`` (y0, y1, x0, x1) in image pixels and its own cells."""

    box: tuple[int, int, int, int]
    cells: np.ndarray  # bool, the group's occupied cells inside the box, in cell units


def mask_occupancy(mask: Any, cell: int = MASK_CELL) -> np.ndarray:
    """A boolean map with one entry per ``cell`` x ``cell`` pixels: whether any pixel there is in the mask.

    Read in blocks of :data:`MASK_SCAN_BLOCK` pixels: memory is the map (1/cell^2 of the mask) plus one block.
    """
    height, width = mask.shape[:2]
    rows, cols = math.ceil(height / cell), math.ceil(width / cell)
    occupied = np.zeros((rows, cols), dtype=bool)
    step = MASK_SCAN_BLOCK // cell * cell
    for y0 in range(0, height, step):
        for x0 in range(0, width, step):
            y1, x1 = min(y0 + step, height), min(x0 + step, width)
            hole = _mask_values(mask.read(y0, y1, x0, x1))
            ph, pw = -(y1 - y0) % cell, -(x1 - x0) % cell
            if ph or pw:
                hole = np.pad(hole, ((0, ph), (0, pw)))
            h, w = hole.shape
            occupied[y0 // cell:y0 // cell + h // cell, x0 // cell:x0 // cell + w // cell] = \
                hole.reshape(h // cell, cell, w // cell, cell).any(axis=(1, 3))
    return occupied


def _mask_values(region: np.ndarray) -> np.ndarray:
    """Holes of a mask region: the alpha sample when there is one (C = 2, 4), else the brightest colour."""
    channels = region.shape[2]
    values = region[:, :, -1] if channels in (2, 4) else region.max(axis=2)
    return threshold(values)


def plan_groups(occupied: np.ndarray, *, cell: int, margin: int | str, grow: int,
                shape: tuple[int, int]) -> list[_Group]:
    """Groups of holes whose context boxes touch, from the occupancy map; each with its crop box.

    A hole's context is ``margin`` pixels (``auto``: as the inpainting planner, from the hole's area) plus
    ``grow``, plus one planner quantum so the planner's own crop fits inside ours.
    """
    import cv2

    height, width = shape
    count, _labels, stats, _ = cv2.connectedComponentsWithStats(occupied.view(np.uint8), connectivity=8,
                                                                ltype=cv2.CV_32S)
    reach = np.zeros_like(occupied)
    for x, y, w, h, area in stats[1:count].tolist():
        pixels = margin if margin != "auto" else auto_margin(area * cell * cell)
        pad = math.ceil((int(pixels) + grow + QUANTUM) / cell)
        reach[max(0, y - pad):y + h + pad, max(0, x - pad):x + w + pad] = True
    count, areas, stats, _ = cv2.connectedComponentsWithStats(reach.view(np.uint8), connectivity=8,
                                                              ltype=cv2.CV_32S)
    groups = []
    for index, (x, y, w, h, _area) in enumerate(stats[1:count].tolist(), 1):
        own = occupied[y:y + h, x:x + w] & (areas[y:y + h, x:x + w] == index)
        box = (y * cell, min(height, (y + h) * cell), x * cell, min(width, (x + w) * cell))
        groups.append(_Group(box, own))
    return groups


def stream_inpaint(source: str | Path | np.ndarray, mask: str | Path | np.ndarray, output: str | Path, *,
                   model: Any = "auto", progress: ProgressCallback | None = None,
                   cancel: threading.Event | None = None, model_dir: str | None = None,
                   compression: str = "zlib", max_ram: int | None = None,
                   **options: Any) -> Result[StreamReport]:
    """Inpaint ``source`` (a TIFF path, read lazily) where ``mask`` is set, into a tiled BigTIFF at ``output``.

    ``mask``: a TIFF of the image's size (read lazily; the alpha sample is the mask when there is one, else any
    colour above half scale) or another image file (loaded whole). Options as
    :func:`tessera.tasks.inpaint.inpaint`. Each group of holes is filled by that function on its own crop; a
    crop larger than ``max_ram`` raises :class:`ResourceError`. Pixels outside the holes are the input's, bit for
    bit. Progress: stage ``"regions"`` while filling, then ``"blocks"`` while writing.
    """
    opts = parse_options(InpaintOptions, model=model if isinstance(model, str) else "auto", **options)
    check_streamed_output(output)
    started = time.monotonic()
    network, _notice = resolve_inpaint_model(model, model_dir)
    runtime = Runtime.create(opts.device, opts.precision, opts.max_memory, model=network, progress=progress,
                             cancel=cancel)
    budget = default_max_ram() if max_ram is None else int(max_ram)
    task_options = opts.model_dump(exclude={"model", "save_regions", "resize_mask"})
    with open_regions(source) as reader, open_regions(mask) as holes:
        height, width = reader.shape[:2]
        if holes.shape[:2] != (height, width):
            raise InputError(f"mask {mask} is {holes.shape[1]}x{holes.shape[0]} but the photo is "
                             f"{width}x{height}; streaming needs a mask of the photo's size")
        occupied = mask_occupancy(holes)
        if not occupied.any():
            raise InputError(f"mask {mask} is empty: no pixel above half scale, nothing to inpaint")
        groups = plan_groups(occupied, cell=MASK_CELL, margin=opts.crop_margin, grow=opts.grow + opts.feather,
                             shape=(height, width))
        block = INPAINT_TILE
        layout = TileLayout(reader.shape, reader.dtype, block)
        done = StreamReport(reader.shape, layout.shape, block, 0, 1,
                            math.ceil(height / block) * math.ceil(width / block), network.name, regions=len(groups))
        with scratch_folder(Path(output).parent) as scratch:
            patches: list[tuple[tuple[int, int, int, int], Path]] = []
            runtime.report("regions", 0, len(groups))
            for number, group in enumerate(groups, 1):
                runtime.check_cancelled()
                patches.append(_fill_group(group, reader, holes, network, task_options, budget,
                                           Path(scratch) / f"group{number}", mask))
                runtime.report("regions", number, len(groups))
            rows = _patches_by_block_row(patches, block)

            def tiles() -> Iterator[np.ndarray]:
                runtime.report("blocks", 0, done.blocks)
                for finished, (y0, y1, x0, x1) in enumerate(_blocks(height, width, block), 1):
                    runtime.check_cancelled()
                    tile = reader.read(y0, y1, x0, x1)
                    patches_here = rows.get(y0 // block, ())
                    if patches_here:
                        tile = np.array(tile)  # the reader may hand out a view of the caller's photo
                    for box, path in patches_here:
                        _lay_patch(tile, (y0, y1, x0, x1), box, path)
                    yield tile
                    runtime.report("blocks", finished, done.blocks)

            path = write_tiled_tiff(output, layout, tiles(), iccprofile=reader.iccprofile, compression=compression)
    done.seconds = time.monotonic() - started
    return Result(path, done)


def _fill_group(group: _Group, reader: Any, holes: Any, network: Model, options: dict[str, Any], budget: int,
                scratch: Path, mask_name: Any) -> tuple[tuple[int, int, int, int], Path]:
    """Inpaint one group's crop; save its changed pixels (values and where, over their bounding box) to
    ``scratch``.values.npy / .where.npy, and return that box in image pixels."""
    y0, y1, x0, x1 = group.box
    needed = in_memory_bytes(x1 - x0, y1 - y0, itemsize=reader.dtype.itemsize)
    if needed > budget:
        raise ResourceError(f"mask {mask_name}: a group of holes needs a {x1 - x0}x{y1 - y0} crop "
                            f"({format_bytes(needed)}), over the RAM budget of {format_bytes(budget)}")
    crop = reader.read(y0, y1, x0, x1)
    own = np.repeat(np.repeat(group.cells, MASK_CELL, axis=0), MASK_CELL, axis=1)[:y1 - y0, :x1 - x0]
    local = _mask_values(holes.read(y0, y1, x0, x1)) & own
    channels = crop.shape[2]
    # inpaint takes gray as HxW, RGB(A) as HxWx3(4); gray+alpha is filled as gray, its alpha kept as it is
    result = np.asarray(inpaint(crop[:, :, 0] if channels <= 2 else crop, local, model=network, **options).image)
    if result.ndim == 2:
        result = np.dstack([result, crop[:, :, 1]]) if channels == 2 else result[:, :, None]
    changed = np.any(result != crop, axis=2)
    rows, cols = np.nonzero(changed.any(axis=1))[0], np.nonzero(changed.any(axis=0))[0]
    if not len(rows):
        rows = cols = np.array([0])
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    np.save(scratch.with_suffix(".values.npy"), result[top:bottom, left:right])
    np.save(scratch.with_suffix(".where.npy"), changed[top:bottom, left:right])
    return (y0 + top, y0 + bottom, x0 + left, x0 + right), scratch


def _patches_by_block_row(patches: list[tuple[tuple[int, int, int, int], Path]], block: int
                          ) -> dict[int, list[tuple[tuple[int, int, int, int], Path]]]:
    rows: dict[int, list[tuple[tuple[int, int, int, int], Path]]] = {}
    for box, path in patches:
        y0, y1 = box[0], box[1]
        for row in range(y0 // block, -(-y1 // block)):
            rows.setdefault(row, []).append((box, path))
    return rows


def _lay_patch(tile: np.ndarray, where: tuple[int, int, int, int], box: tuple[int, int, int, int],
               path: Path) -> None:
    """Copy a saved patch's changed pixels into ``tile`` (which covers ``where``) where the two meet."""
    ty0, ty1, tx0, tx1 = where
    py0, py1, px0, px1 = box
    y0, y1, x0, x1 = max(ty0, py0), min(ty1, py1), max(tx0, px0), min(tx1, px1)
    if y0 >= y1 or x0 >= x1:
        return
    part = slice(y0 - py0, y1 - py0), slice(x0 - px0, x1 - px0)
    values = np.load(path.with_suffix(".values.npy"), mmap_mode="r")[part]
    changed = np.load(path.with_suffix(".where.npy"), mmap_mode="r")[part]
    view = tile[y0 - ty0:y1 - ty0, x0 - tx0:x1 - tx0]
    view[changed] = values[changed]
