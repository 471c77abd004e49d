"""Planning for inpainting: which crops of the photo go through the network, at what size.

The cost of inpainting should follow the mask, not the photo. The grown mask is split into connected components
(holes); each hole wants a context margin around it (``auto``: scaled to the hole, at least 64 px); holes whose
context boxes overlap are grouped, and each group becomes one :class:`Region`:

- its crop is the group's holes plus their margins, enlarged to a shape the network runs well at (a multiple of
  64 px, or a power of two where the network's FFT runs in half precision) and shifted to stay inside the photo
  rather than clipped, so a hole at the border keeps its full amount of context;
- a crop that fits the memory budget and ``max_size`` runs at full resolution; a larger one runs downscaled,
  and only its holes receive the upscaled result;
- only pixels of the group's own holes are replaced (paste mask), even where a crop overlaps another group's.

A group that would run downscaled, or whose one crop is mostly empty (a diagonal scratch), is split on a cell
grid so that its thin parts run at full resolution (:func:`~.inpaint_split.split_group`).

This module decides per strategy; the pieces live below it: boxes, holes, regions and grouping in
:mod:`.inpaint_regions`, crop shapes and the budget in :mod:`.inpaint_sizing`, the split in :mod:`.inpaint_split`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from ..errors import OptionError
from .inpaint_regions import Region, bounding_box, find_holes, group_holes
from .inpaint_sizing import Sizing, check_full_photo_fits, fitting_scale, full_region, group_region
from .inpaint_split import CELL, split_group

RESIZE_LIMIT = 2048    # longest side of the whole-photo pass of strategy "resize" when max_size is auto
SPARSE = 8             # a full-resolution group is worth splitting when its crop exceeds SPARSE x its hole pixels

Strategy = str  # "auto" | "crop" | "resize" | "full"


def plan_regions(mask: np.ndarray, *, strategy: Strategy = "auto", margin: int | str = "auto",
                 sizing: Sizing = Sizing(), split: bool = True) -> list[Region]:
    """The regions that inpaint ``mask`` (the grown mask, HxW bool) under ``strategy``.

    ``auto``: one crop per group, full resolution when it fits the budget and ``max_size``, else downscaled;
    a group that would downscale or whose crop is mostly empty is split (:func:`split_group`) so that thin
    holes run at full resolution. ``crop``: the same crops, never downscaled for the budget (only for an
    explicit ``max_size``). ``resize``: the whole photo in one pass, downscaled to ``max_size`` (or what fits,
    at most 2048 px). ``full``: the whole photo in one pass at full resolution (refused when it does not fit).
    ``split`` False: one region per group, as before groups were split (for comparisons).
    """
    height, width = mask.shape
    holes = find_holes(mask, margin)
    if not holes:
        return []
    if strategy == "full":
        if sizing.max_size is not None and max(height, width) > sizing.max_size:
            raise OptionError(f"--strategy full runs the whole {width}x{height} photo at full size, over "
                              f"--max-size {sizing.max_size}; use --strategy auto or resize")
        region = full_region(height, width, holes, (height, width), sizing)
        check_full_photo_fits(height, width, region.pad_to or region.run_shape, sizing)
        return [region]
    if strategy == "resize":
        cap = sizing.max_size if sizing.max_size is not None else RESIZE_LIMIT
        limited = dataclasses.replace(sizing, max_size=cap)
        scale = fitting_scale((height, width), limited, use_budget=sizing.max_size is None)
        shape = (max(1, round(height * scale)), max(1, round(width * scale))) if scale < 1 else (height, width)
        return [full_region(height, width, holes, shape, sizing)]
    if strategy not in ("auto", "crop"):
        raise OptionError(f"unknown strategy {strategy!r} (choose from auto, crop, resize, full)")
    use_budget = strategy == "auto"
    regions = []
    for group in group_holes(holes, height, width):
        hole_box = bounding_box(h.box for h in group)
        context = bounding_box(h.context for h in group)
        region = group_region(hole_box, context, tuple(h.box for h in group), (height, width), sizing, use_budget)
        crop_pixels = region.crop.height * region.crop.width
        several_cells = max(hole_box.height, hole_box.width) > CELL
        if split and several_cells and (region.downscaled or sum(h.area for h in group) * SPARSE < crop_pixels):
            pieces = split_group(mask, hole_box, margin, sizing, use_budget)
            if len(pieces) > 1 and (region.downscaled or _run_pixels(pieces) * 2 < _run_pixels([region])):
                regions.extend(pieces)
                continue
        regions.append(region)
    return regions


def _run_pixels(regions: Sequence[Region]) -> int:
    """The pixels the network processes for ``regions``, the cost a split is weighed by."""
    return sum(r.run_shape[0] * r.run_shape[1] for r in regions)
