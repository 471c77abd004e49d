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
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import OptionError, ResourceError

MIN_MARGIN = 64        # px of context around even the smallest hole: LaMa needs some surroundings to imitate
QUANTUM = 64           # crop sides are multiples of this, so crops share shapes and batch together
RESIZE_LIMIT = 2048    # longest side of the whole-photo pass of strategy "resize" when max_size is auto
MIN_RUN_SIDE = 64      # below this the network has too little to see: refuse rather than produce mush

Strategy = str  # "auto" | "crop" | "resize" | "full"
FitsFn = Callable[[int, int], bool]


@dataclass(frozen=True)
class Box:
    """A half-open rectangle ``[y0, y1) x [x0, x1)`` in photo pixels."""

    y0: int
    x0: int
    y1: int
    x1: int

    @property
    def height(self) -> int:
        return self.y1 - self.y0

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)

    def expand(self, margin: int) -> Box:
        return Box(self.y0 - margin, self.x0 - margin, self.y1 + margin, self.x1 + margin)

    def union(self, other: Box) -> Box:
        return Box(min(self.y0, other.y0), min(self.x0, other.x0), max(self.y1, other.y1), max(self.x1, other.x1))

    def clip(self, height: int, width: int) -> Box:
        return Box(max(self.y0, 0), max(self.x0, 0), min(self.y1, height), min(self.x1, width))

    def overlaps(self, other: Box) -> bool:
        return self.y0 < other.y1 and other.y0 < self.y1 and self.x0 < other.x1 and other.x0 < self.x1

    def relative_to(self, outer: Box) -> Box:
        return Box(self.y0 - outer.y0, self.x0 - outer.x0, self.y1 - outer.y0, self.x1 - outer.x0)

    def as_list(self) -> list[int]:
        return [self.y0, self.x0, self.y1, self.x1]


@dataclass(frozen=True)
class Hole:
    """One connected component of the grown mask: its bounding box, pixel count and context margin."""

    box: Box
    area: int
    margin: int

    @property
    def context(self) -> Box:
        return self.box.expand(self.margin)


@dataclass(frozen=True)
class Region:
    """One network pass: read ``crop``, run it at ``run_shape`` (padded to ``pad_to``), replace ``holes`` only.

    ``run_shape`` equals the crop's shape at full resolution; when smaller the crop is downscaled for the
    network and the result upscaled back. ``pad_to`` (or None) is the input shape the network must see, for
    networks whose half-precision FFT needs power-of-two sides.
    """

    crop: Box
    holes: tuple[Box, ...]
    run_shape: tuple[int, int]
    pad_to: tuple[int, int] | None = None

    @property
    def downscaled(self) -> bool:
        return self.run_shape != (self.crop.height, self.crop.width)

    @property
    def scale(self) -> float:
        return self.run_shape[0] / self.crop.height

    def paste_mask(self, mask: np.ndarray) -> np.ndarray:
        """The pixels this region replaces: the grown mask inside its own holes, in crop coordinates."""
        own = np.zeros((self.crop.height, self.crop.width), dtype=bool)
        for hole in self.holes:
            local = hole.relative_to(self.crop)
            own[local.slices] = mask[hole.slices]
        return own


# ---------------------------------------------------------------------------------------------- holes and groups


def auto_margin(area: int) -> int:
    """Context margin for a hole of ``area`` pixels: its typical width (sqrt of the area), at least MIN_MARGIN.

    The square root follows what the fill needs: a 60x60 blob and a 4000x1 px scratch both need about their
    thickness of surroundings, not their length.
    """
    return max(MIN_MARGIN, math.ceil(math.sqrt(area)))


def find_holes(mask: np.ndarray, margin: int | str = "auto") -> list[Hole]:
    """Connected components (8-connected) of the mask, with their context margins."""
    if margin != "auto" and int(margin) < 0:
        raise OptionError(f"option crop_margin: must be >= 0 or auto (got {margin})")
    count, _labels, stats, _ = cv2.connectedComponentsWithStats(
        np.ascontiguousarray(mask).view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    del _labels
    holes = []
    for x, y, w, h, area in stats[1:count].tolist():
        pad = auto_margin(area) if margin == "auto" else int(margin)
        holes.append(Hole(Box(y, x, y + h, x + w), area, pad))
    return holes


def group_holes(holes: Sequence[Hole], height: int, width: int) -> list[list[Hole]]:
    """Group holes whose context boxes (clipped to the photo) overlap, transitively, until groups are stable.

    A group's context is the bounding box of its members' contexts; when that grows into another group's
    context the two merge too, so no two final groups' contexts overlap.
    """
    groups: list[tuple[Box, list[Hole]]] = [(h.context.clip(height, width), [h]) for h in holes]
    changed = True
    while changed:
        changed = False
        groups.sort(key=lambda g: g[0].x0)
        merged: list[tuple[Box, list[Hole]]] = []
        active: list[int] = []  # indices into merged whose x-extent may still reach the sweep line
        for box, members in groups:
            active = [i for i in active if merged[i][0].x1 > box.x0]
            target = next((i for i in active if merged[i][0].overlaps(box)), None)
            if target is None:
                merged.append((box, members))
                active.append(len(merged) - 1)
            else:
                other_box, other_members = merged[target]
                merged[target] = (other_box.union(box), other_members + members)
                changed = True
        groups = merged
    return [members for _box, members in sorted(groups, key=lambda g: (g[0].y0, g[0].x0))]


# ---------------------------------------------------------------------------------------------- shapes


def round_up(value: int, quantum: int, pow2: bool) -> int:
    if pow2:
        return 1 << max(0, math.ceil(math.log2(max(value, 1))))
    return -(-value // quantum) * quantum


def round_down(value: int, quantum: int, pow2: bool) -> int:
    if pow2:
        return 1 << max(0, math.floor(math.log2(max(value, 1))))
    return max(quantum, value // quantum * quantum)


def place(center: tuple[float, float], size: tuple[int, int], height: int, width: int) -> Box:
    """A box of ``size`` centred on ``center``, shifted (not clipped) to lie inside the photo."""
    h, w = min(size[0], height), min(size[1], width)
    y0 = round(center[0] - h / 2)
    x0 = round(center[1] - w / 2)
    y0 = min(max(y0, 0), height - h)
    x0 = min(max(x0, 0), width - w)
    return Box(y0, x0, y0 + h, x0 + w)


@dataclass(frozen=True)
class Sizing:
    """How crops are shaped for one model and runtime.

    ``quantum``: crop sides are multiples of it (1 for weight-free methods); ``pow2``: sides are powers of two
    (half-precision FFT); ``max_size``: never run above this many pixels per side (None: no cap);
    ``fits``: whether a run of (height, width) fits the memory budget (None: anything fits).
    """

    quantum: int = QUANTUM
    pow2: bool = False
    max_size: int | None = None
    fits: FitsFn | None = None

    def up(self, value: int) -> int:
        return round_up(value, self.quantum, self.pow2)

    def down(self, value: int) -> int:
        return round_down(value, self.quantum, self.pow2)


def _full_region(height: int, width: int, holes: Sequence[Hole], run_shape: tuple[int, int],
                 sizing: Sizing) -> Region:
    crop = Box(0, 0, height, width)
    pad_to = (sizing.up(run_shape[0]), sizing.up(run_shape[1])) if sizing.pow2 else None
    return Region(crop, tuple(h.box for h in holes), run_shape, pad_to)


def _scaled_region(center: tuple[float, float], want: tuple[int, int], holes: tuple[Box, ...], scale: float,
                   height: int, width: int, sizing: Sizing) -> Region:
    """A region whose network input is ``want`` scaled by ``scale`` and rounded up to the sizing's quantum;
    the crop is enlarged to match that input where the photo allows (more real context, same cost)."""
    run = tuple(sizing.up(math.ceil(side * scale - 1e-9)) for side in want)
    crop = place(center, (math.ceil(run[0] / scale - 1e-9), math.ceil(run[1] / scale - 1e-9)), height, width)
    if scale >= 1.0:
        run_shape = (crop.height, crop.width)
    else:
        run_shape = (max(1, min(run[0], round(crop.height * scale))), max(1, min(run[1], round(crop.width * scale))))
    pad_to = run if sizing.pow2 and tuple(run) != run_shape else None
    return Region(crop, holes, run_shape, pad_to)


def _fitting_scale(want: tuple[int, int], sizing: Sizing, use_budget: bool) -> float:
    """The largest scale (<= 1) at which a crop of ``want`` runs within max_size and, if asked, the budget."""
    longest = max(want)
    scale = 1.0
    if sizing.max_size is not None and sizing.up(longest) > sizing.max_size:
        scale = sizing.down(sizing.max_size) / longest  # the longest side then runs at down(max_size) exactly
    if not use_budget or sizing.fits is None:
        return scale
    previous = None
    while True:
        run = [sizing.up(math.ceil(side * scale - 1e-9)) for side in want]
        if sizing.fits(run[0], run[1]):
            return scale
        if max(run) <= MIN_RUN_SIDE or run == previous:  # rounding up to the quantum stops the shrinking
            raise ResourceError(f"the memory budget does not fit even a {run[1]}x{run[0]} inpainting pass; "
                                f"raise --max-memory")
        previous = run
        scale *= 0.8 if not sizing.pow2 else 0.5


def plan_regions(mask: np.ndarray, *, strategy: Strategy = "auto", margin: int | str = "auto",
                 sizing: Sizing = Sizing()) -> list[Region]:
    """The regions that inpaint ``mask`` (the grown mask, HxW bool) under ``strategy``.

    ``auto``: one crop per group, full resolution when it fits the budget and ``max_size``, else downscaled.
    ``crop``: the same crops, never downscaled for the budget (only for an explicit ``max_size``).
    ``resize``: the whole photo in one pass, downscaled to ``max_size`` (or what fits, at most 2048 px).
    ``full``: the whole photo in one pass at full resolution.
    """
    height, width = mask.shape
    holes = find_holes(mask, margin)
    if not holes:
        return []
    if strategy == "full":
        if sizing.max_size is not None and max(height, width) > sizing.max_size:
            raise OptionError(f"--strategy full runs the whole {width}x{height} photo at full size, over "
                              f"--max-size {sizing.max_size}; use --strategy auto or resize")
        return [_full_region(height, width, holes, (height, width), sizing)]
    if strategy == "resize":
        cap = sizing.max_size if sizing.max_size is not None else RESIZE_LIMIT
        limited = Sizing(sizing.quantum, sizing.pow2, cap, sizing.fits)
        scale = _fitting_scale((height, width), limited, use_budget=sizing.max_size is None)
        shape = (max(1, round(height * scale)), max(1, round(width * scale))) if scale < 1 else (height, width)
        return [_full_region(height, width, holes, shape, sizing)]
    if strategy not in ("auto", "crop"):
        raise OptionError(f"unknown strategy {strategy!r} (choose from auto, crop, resize, full)")
    regions = []
    for group in group_holes(holes, height, width):
        hole_box = group[0].box
        context = group[0].context
        for hole in group[1:]:
            hole_box = hole_box.union(hole.box)
            context = context.union(hole.context)
        want = (min(context.height, height), min(context.width, width))
        center = ((hole_box.y0 + hole_box.y1) / 2, (hole_box.x0 + hole_box.x1) / 2)
        scale = _fitting_scale(want, sizing, use_budget=strategy == "auto")
        regions.append(_scaled_region(center, want, tuple(h.box for h in group), scale, height, width, sizing))
    return regions
