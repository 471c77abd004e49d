"""The geometry of an inpainting plan: boxes, holes, regions; and the holes of a mask and their grouping.

A hole is one connected component of the grown mask with the context margin it wants around it (``auto``:
scaled to the hole, at least :data:`MIN_MARGIN` px); holes whose context boxes overlap are grouped, and each group
becomes one or more :class:`Region` (network passes) in :mod:`.inpaint_plan`.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import OptionError

MIN_MARGIN = 64        # px of context around even the smallest hole: LaMa needs some surroundings to imitate


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


def bounding_box(boxes: Iterable[Box]) -> Box:
    """The smallest box holding all of ``boxes`` (at least one)."""
    return functools.reduce(Box.union, boxes)
