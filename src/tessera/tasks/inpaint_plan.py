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

A group that would run downscaled, or whose one crop is mostly empty (a diagonal scratch), is split
(:func:`split_group`): on a grid of :data:`CELL` px cells, cells holding a thick part of a hole (a disc of
:data:`THICK_RADIUS` fits inside) and their neighbours form clusters that run as above (downscaled if they must);
the other, thin cells are gathered into pieces of at most :data:`PIECE` px that run at full resolution. Each
hole pixel lies in exactly one cell, so it is pasted by exactly one region. Pieces run in phases (thick clusters
first, then thin pieces in a 2x2 checkerboard of :data:`PIECE` blocks): a piece sees its neighbours of earlier
phases already filled (:attr:`Region.known`), so the fill continues across piece boundaries.
"""
from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import OptionError, ResourceError

MIN_MARGIN = 64        # px of context around even the smallest hole: LaMa needs some surroundings to imitate
QUANTUM = 64           # crop sides are multiples of this, so crops share shapes and batch together
RESIZE_LIMIT = 2048    # longest side of the whole-photo pass of strategy "resize" when max_size is auto
MIN_RUN_SIDE = 64      # below this the network has too little to see: refuse rather than produce mush
CELL = 64              # px: the grid on which a long or sparse group is split; thickness is judged per cell
PIECE = 512            # px: the longest stretch of a thin hole one piece fills (a block of 8x8 cells)
THICK_RADIUS = 32      # px: a hole part holding a disc of this radius is "large" and may run downscaled
SPARSE = 8             # a full-resolution group is worth splitting when its crop exceeds SPARSE x its hole pixels

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
    networks whose half-precision FFT needs power-of-two sides. ``phase``: regions run in increasing phase;
    ``known``: boxes (photo coordinates, inside the crop) that regions of earlier phases have filled: the
    region reads them from the output canvas as known pixels instead of holes.
    """

    crop: Box
    holes: tuple[Box, ...]
    run_shape: tuple[int, int]
    pad_to: tuple[int, int] | None = None
    phase: int = 0
    known: tuple[Box, ...] = ()

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
    ``fits``: whether a run of (height, width) fits the memory budget (None: anything fits); ``estimate``:
    the bytes such a run needs and ``budget`` the bytes allowed (for messages; None: not known).
    """

    quantum: int = QUANTUM
    pow2: bool = False
    max_size: int | None = None
    fits: FitsFn | None = None
    estimate: Callable[[int, int], float] | None = None
    budget: int | None = None

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


def _full_photo_fits(height: int, width: int, run: tuple[int, int], sizing: Sizing) -> None:
    """Refuse, before any work, a whole-photo pass the memory budget cannot hold (strategy ``full``)."""
    if sizing.fits is None or sizing.fits(*run):
        return
    from ..options import format_bytes

    need = f" about {format_bytes(sizing.estimate(*run))}" if sizing.estimate is not None else " more memory"
    budget = f" of {format_bytes(sizing.budget)}" if sizing.budget is not None else ""
    raise ResourceError(f"--strategy full runs the whole {width}x{height} photo in one pass, which needs{need}, "
                        f"over the memory budget{budget}; use --strategy auto (crops around the holes) or "
                        f"resize, or raise --max-memory")


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
        region = _full_region(height, width, holes, (height, width), sizing)
        _full_photo_fits(height, width, region.pad_to or region.run_shape, sizing)
        return [region]
    if strategy == "resize":
        cap = sizing.max_size if sizing.max_size is not None else RESIZE_LIMIT
        limited = dataclasses.replace(sizing, max_size=cap)
        scale = _fitting_scale((height, width), limited, use_budget=sizing.max_size is None)
        shape = (max(1, round(height * scale)), max(1, round(width * scale))) if scale < 1 else (height, width)
        return [_full_region(height, width, holes, shape, sizing)]
    if strategy not in ("auto", "crop"):
        raise OptionError(f"unknown strategy {strategy!r} (choose from auto, crop, resize, full)")
    use_budget = strategy == "auto"
    regions = []
    for group in group_holes(holes, height, width):
        hole_box = _bounds(h.box for h in group)
        context = _bounds(h.context for h in group)
        region = _group_region(hole_box, context, tuple(h.box for h in group), (height, width), sizing, use_budget)
        crop_pixels = region.crop.height * region.crop.width
        several_cells = max(hole_box.height, hole_box.width) > CELL
        if split and several_cells and (region.downscaled or sum(h.area for h in group) * SPARSE < crop_pixels):
            pieces = split_group(mask, hole_box, margin, sizing, use_budget)
            if len(pieces) > 1 and (region.downscaled or _run_pixels(pieces) * 2 < _run_pixels([region])):
                regions.extend(pieces)
                continue
        regions.append(region)
    return regions


def _bounds(boxes: Iterable[Box]) -> Box:
    return functools.reduce(Box.union, boxes)


def _run_pixels(regions: Sequence[Region]) -> int:
    return sum(r.run_shape[0] * r.run_shape[1] for r in regions)


def _group_region(hole_box: Box, context: Box, holes: tuple[Box, ...], photo: tuple[int, int], sizing: Sizing,
                  use_budget: bool, *, phase: int = 0) -> Region:
    """The region of holes ``holes`` (bounding box ``hole_box``) wanting ``context``: full resolution when it
    fits, else downscaled; centred on the holes and shifted inside the photo."""
    height, width = photo
    want = (min(context.height, height), min(context.width, width))
    center = ((hole_box.y0 + hole_box.y1) / 2, (hole_box.x0 + hole_box.x1) / 2)
    scale = _fitting_scale(want, sizing, use_budget=use_budget)
    region = _scaled_region(center, want, holes, scale, height, width, sizing)
    return dataclasses.replace(region, phase=phase) if phase else region


# ---------------------------------------------------------------------------------------------- splitting


@dataclass
class CellGrid:
    """Per-cell facts of a grid of CELL px cells laid over ``box``: mask pixels, a thick part, tight bounds.

    ``area``, ``deep``: (rows, cols) arrays; ``tight``: (rows, cols, 4) y0, x0, y1, x1 of the cell's mask
    pixels in photo coordinates (meaningful where ``area`` > 0).
    """

    box: Box
    area: np.ndarray
    deep: np.ndarray
    tight: np.ndarray

    def cell_box(self, row: int, col: int) -> Box:
        return Box(*(int(v) for v in self.tight[row, col]))


def cell_grid(mask: np.ndarray, box: Box, block: int = PIECE) -> CellGrid:
    """Measure the cells of ``box`` block by block (memory bounded by the block, cost by the box's area).

    A cell is deep when one of its mask pixels lies farther than THICK_RADIUS from any unmasked pixel (the
    distance is taken over the block and THICK_RADIUS + 1 px around it, so a block's edge is no boundary).
    """
    photo_h, photo_w = mask.shape
    rows, cols = -(-box.height // CELL), -(-box.width // CELL)
    area = np.zeros((rows, cols), np.int64)
    deep = np.zeros((rows, cols), bool)
    tight = np.zeros((rows, cols, 4), np.int64)
    step = max(1, block // CELL)
    for row0 in range(0, rows, step):
        for col0 in range(0, cols, step):
            part = Box(box.y0 + row0 * CELL, box.x0 + col0 * CELL,
                       min(box.y1, box.y0 + (row0 + step) * CELL), min(box.x1, box.x0 + (col0 + step) * CELL))
            holes = mask[part.slices]
            if not holes.any():
                continue
            outer = part.expand(THICK_RADIUS + 1).clip(photo_h, photo_w)
            far = cv2.distanceTransform(np.where(mask[outer.slices], 255, 0).astype(np.uint8), cv2.DIST_L2,
                                        cv2.DIST_MASK_PRECISE)[part.relative_to(outer).slices] > THICK_RADIUS
            extra = ((0, -holes.shape[0] % CELL), (0, -holes.shape[1] % CELL))
            cells = np.pad(holes, extra).reshape(-1, CELL, (holes.shape[1] + extra[1][1]) // CELL, CELL)
            n_rows, n_cols = cells.shape[0], cells.shape[2]
            here = slice(row0, row0 + n_rows), slice(col0, col0 + n_cols)
            area[here] = cells.sum(axis=(1, 3))
            deep[here] = np.pad(far, extra).reshape(cells.shape).any(axis=(1, 3))
            in_rows = cells.any(axis=3)          # (n_rows, CELL, n_cols): which rows of each cell hold holes
            in_cols = cells.any(axis=1)          # (n_rows, n_cols, CELL)
            first_row = in_rows.argmax(axis=1)
            last_row = CELL - in_rows[:, ::-1].argmax(axis=1)
            first_col = in_cols.argmax(axis=2)
            last_col = CELL - in_cols[:, :, ::-1].argmax(axis=2)
            top = part.y0 + np.arange(n_rows)[:, None] * CELL
            left = part.x0 + np.arange(n_cols)[None, :] * CELL
            tight[here] = np.stack([top + first_row, left + first_col, top + last_row, left + last_col], axis=2)
    return CellGrid(box, area, deep, tight)


def split_group(mask: np.ndarray, hole_box: Box, margin: int | str, sizing: Sizing, use_budget: bool) -> list[Region]:
    """The regions of one group (its holes' bounding box ``hole_box``) split on the cell grid.

    Deep cells and their 8 neighbours that hold holes form thick clusters (phase 0, each run like a group:
    downscaled if it must). The other cells are thin: those of one PIECE block make one piece, at full
    resolution when it fits, in phase 1-4 by the block's row and column parity, so that any two neighbouring
    blocks run in different phases; with ``margin`` auto its context is MIN_MARGIN (about its thickness) and the
    block shrinks under ``max_size`` so that piece and context fit. Each region's ``known`` lists the
    earlier-phase holes inside its crop.
    """
    photo = mask.shape
    block = PIECE
    if sizing.max_size is not None:  # a piece and its context must fit max_size at full resolution
        block = max(CELL, min(PIECE, (sizing.max_size - 2 * MIN_MARGIN) // CELL * CELL))
    grid = cell_grid(mask, hole_box, block)
    occupied = grid.area > 0
    thick = cv2.dilate(grid.deep.view(np.uint8), np.ones((3, 3), np.uint8)).view(bool) & occupied
    _count, labels = cv2.connectedComponents(thick.view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    regions: list[Region] = []
    clusters: dict[int, list[tuple[int, int]]] = {}
    for row, col in zip(*(axis.tolist() for axis in np.nonzero(thick))):
        clusters.setdefault(int(labels[row, col]), []).append((row, col))
    step = block // CELL
    thin_rows, thin_cols = np.nonzero(occupied & ~thick)
    pieces: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for row, col in zip(thin_rows.tolist(), thin_cols.tolist()):
        pieces.setdefault((row // step, col // step), []).append((row, col))
    parts = [(0, cells) for _label, cells in sorted(clusters.items())]
    parts += [(1 + 2 * (key[0] % 2) + key[1] % 2, cells) for key, cells in sorted(pieces.items())]
    for phase, cells in parts:
        holes = tuple(grid.cell_box(row, col) for row, col in cells)
        if margin != "auto":
            pad = int(margin)
        elif phase:  # a thin piece is at most 2 x THICK_RADIUS thick: its context follows that, not its length
            pad = max(MIN_MARGIN, 2 * THICK_RADIUS)
        else:
            pad = auto_margin(int(sum(grid.area[row, col] for row, col in cells)))
        bounds = _bounds(holes)
        regions.append(_group_region(bounds, bounds.expand(pad), holes, photo, sizing, use_budget, phase=phase))
    return _with_known(regions, block)


def _tiles_of(box: Box, size: int) -> Iterator[tuple[int, int]]:
    for row in range(box.y0 // size, (box.y1 - 1) // size + 1):
        for col in range(box.x0 // size, (box.x1 - 1) // size + 1):
            yield row, col


def _with_known(regions: Sequence[Region], size: int) -> list[Region]:
    """``regions`` with ``known`` set: the holes of earlier phases in each crop, clipped to it.

    Hole boxes are indexed on a grid of ``size`` px, so the cost follows the crops' areas, not the square of the
    number of regions."""
    index: dict[tuple[int, int], list[tuple[int, Box]]] = {}
    for region in regions:
        for box in region.holes:
            for tile in _tiles_of(box, size):
                index.setdefault(tile, []).append((region.phase, box))
    result = []
    for region in regions:
        crop = region.crop
        known: dict[Box, None] = {}  # ordered and without repeats (a box may lie in several tiles)
        if region.phase:
            for tile in _tiles_of(crop, size):
                for phase, box in index.get(tile, ()):
                    if phase < region.phase and box.overlaps(crop):
                        known[Box(max(box.y0, crop.y0), max(box.x0, crop.x0), min(box.y1, crop.y1),
                                  min(box.x1, crop.x1))] = None
        result.append(dataclasses.replace(region, known=tuple(known)) if known else region)
    return result
