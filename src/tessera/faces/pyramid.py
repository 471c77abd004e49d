"""Multi-scale face search: each finer level only where the coarser one leaves a reason to look.

A detector finds faces reliably only above a size in the raster it sees (:data:`RESOLVED_PX`). A photo is first
searched whole on a copy of at most ``max_side`` px (level 0). A finer level (twice the scale, up to full
resolution) is searched only in windows around what the coarser level found near that limit: faces (in a group
photo, faces smaller than those found lie next to them: a back row, a child) and weak detections, places whose
scale the coarser level could not resolve (:data:`LOOK_SCORE`). A photo in which no face is found at all gets a
bounded number of finer levels over the whole photo (:data:`EMPTY_LEVELS`), not full-resolution tiles
everywhere. The search stops when a level finds nothing new near its limit, when full resolution is reached, or
when the faces a finer level could add would be smaller than ``min_face``.

Candidates are then judged across scales. A finer-level detection that a coarser level searched at a size it
resolves well (:data:`UNSEEN_PX`) yet did not report is dropped: a true face does not vanish when it gets larger.
Every remaining face is detected again in a crop around it at another scale (:data:`VERIFY_PX`) and keeps the
lower of its two scores: a face holds at both scales, face-like texture (a wall stain, the gap between two legs)
rarely does. Overlapping detections are merged by :func:`merge_faces`, finest level first.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from ..tiling import plan_axis
from .backends import Backend, as_uint8_bgr
from .boxes import Face, merge_faces, same_face

# YuNet finds faces whose box is at least this many pixels in the raster it searches reliably; a face found
# smaller than this is near the limit, and smaller ones next to it were probably missed.
RESOLVED_PX = 32
LEVEL_STEP = 2.0  # each finer level doubles the scale
MIN_LEVEL_STEP = 1.25  # a level less than this much finer than the previous one would see nothing new
EMPTY_LEVELS = 1  # finer levels searched over the whole photo while no face at all has been found
# A weak detection (a score from this up to min_score) that is small for its level marks a place the level
# could not resolve: a face too small to judge there, or texture. The next level looks there too.
LOOK_SCORE = 0.2
WINDOW_FACES = 4.0  # a small face opens a window reaching this many of its sizes beyond its box at the next level
WINDOW_MIN_PX = 256  # and at least this far (px of the next level): faces spread thinly, a call's fixed cost
# A finer detection whose box would have been at least this large in a coarser level that searched its place,
# with no detection there, is taken as texture that only looks like a face at the finer scale.
UNSEEN_PX = 40
VERIFY_PX = (48, 72)  # a face is detected again with its box brought to these sizes, the first that confirms it
VERIFY_CONTEXT = 3.0  # the verification crop's side, in face sizes
TILE = 960  # detection tiles: YuNet in yuface is tuned for inputs up to 960 px
TILE_OVERLAP = 128  # px of a level's raster: wider than any face that level is searched for


@dataclass(frozen=True)
class Region:
    """A rectangle of the photo (x0, y0, x1, y1), in photo pixels, half-open."""

    x0: int
    y0: int
    x1: int
    y1: int

    def contains(self, x: float, y: float) -> bool:
        return self.x0 <= x < self.x1 and self.y0 <= y < self.y1

    def overlaps(self, other: Region) -> bool:
        return self.x0 < other.x1 and other.x0 < self.x1 and self.y0 < other.y1 and other.y0 < self.y1

    def union(self, other: Region) -> Region:
        return Region(min(self.x0, other.x0), min(self.y0, other.y0), max(self.x1, other.x1),
                      max(self.y1, other.y1))


@dataclass
class Level:
    """One searched level: its scale (level px per photo px), the photo regions it searched, what it found."""

    scale: float
    regions: list[Region]
    faces: list[Face] = field(default_factory=list)
    hints: list[Face] = field(default_factory=list)  # weak detections (LOOK_SCORE <= score < min_score)

    def searched(self, face: Face) -> bool:
        return any(region.contains(*face.centre) for region in self.regions)


class PyramidSearch:
    """One photo's search: its pixels, the backend, the thresholds, the runtime (progress, cancellation)."""

    def __init__(self, pixels: np.ndarray, backend: Backend, min_score: float, min_face: float,
                 runtime: Any = None) -> None:
        self.pixels = pixels
        self.backend = backend
        self.min_score = min_score
        self.min_face = min_face
        self.runtime = runtime
        self.rows, self.cols = pixels.shape[:2]
        self._done = 0
        self._total = 0

    @property
    def whole(self) -> Region:
        return Region(0, 0, self.cols, self.rows)

    # ------------------------------------------------------------------------------------------- levels
    def first_level(self, max_side: int) -> Level:
        """Level 0: the whole photo at most ``max_side`` px (one detector call when it fits)."""
        scale = min(1.0, max_side / max(self.rows, self.cols))
        return self.search(scale, [self.whole], tile=max(TILE, max_side))

    def finer_levels(self, first: Level) -> list[Level]:
        """The levels after ``first``, each only where the previous one leaves a reason to look."""
        levels = [first]
        empty_levels = 0
        while True:
            coarse = levels[-1]
            scale = min(1.0, coarse.scale * LEVEL_STEP)
            if scale < coarse.scale * MIN_LEVEL_STEP or RESOLVED_PX / coarse.scale <= self.min_face:
                break  # nothing new to resolve: the photo's own pixels, or only faces smaller than min_face
            if not any(level.faces for level in levels) and empty_levels < EMPTY_LEVELS:
                regions, empty_levels = [self.whole], empty_levels + 1
            else:
                regions = self.windows(coarse, scale)
            if not regions:
                break
            levels.append(self.search(scale, regions))
        return levels

    def full_resolution(self) -> Level:
        """The whole photo in full-resolution tiles (``tiles="always"``)."""
        return self.search(1.0, [self.whole])

    def windows(self, level: Level, next_scale: float) -> list[Region]:
        """Where the next level looks, merged where they meet: around each face this level found near its limit,
        and around each weak detection at such a size (something the level could not resolve)."""
        windows = []
        for face in level.faces + level.hints:
            if face.size * level.scale >= RESOLVED_PX:
                continue
            (cx, cy), reach = face.centre, max((WINDOW_FACES + 0.5) * face.size, WINDOW_MIN_PX / next_scale)
            windows.append(Region(max(0, math.floor(cx - reach)), max(0, math.floor(cy - reach)),
                                  min(self.cols, math.ceil(cx + reach)), min(self.rows, math.ceil(cy + reach))))
        return merge_regions(windows)

    # ------------------------------------------------------------------------------------------- search
    def search(self, scale: float, regions: list[Region], tile: int = TILE) -> Level:
        """Detect in ``regions`` of the photo seen at ``scale``, in overlapping tiles of at most ``tile`` px.

        A face cut by a tile's or a region's border inside the photo is dropped: an overlapping tile has it whole,
        or it lies at the edge of the window, far from the face that opened it.
        """
        level = Level(scale, regions)
        plans = [(region, self._tiles(region, scale, tile)) for region in regions]
        self._total += sum(len(tiles) for _, tiles in plans)
        self._report()
        for region, tiles in plans:
            raster, factor_x, factor_y = self._raster(region, scale)
            for (ty0, ty1), (tx0, tx1) in tiles:
                if self.runtime is not None:
                    self.runtime.check_cancelled()
                view = raster[ty0:ty1, tx0:tx1]
                inner = Region(round(region.x0 + tx0 * factor_x), round(region.y0 + ty0 * factor_y),
                               round(region.x0 + tx1 * factor_x), round(region.y0 + ty1 * factor_y))
                for face in self.backend(as_uint8_bgr(view), min(self.min_score, LOOK_SCORE)):
                    face = _to_photo(face.mapped(1.0, tx0, ty0), factor_x, factor_y, region)
                    if not self._cut_by(face, inner, 2.0 * max(factor_x, factor_y)):
                        (level.faces if face.score >= self.min_score else level.hints).append(face)
                self._done += 1
                self._report()
        return level

    def _tiles(self, region: Region, scale: float, tile: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
        height, width = _scaled_size(region, scale)
        spans_y = [(s.start, s.stop) for s in plan_axis(height, _even_window(height, tile), TILE_OVERLAP // 2)]
        spans_x = [(s.start, s.stop) for s in plan_axis(width, _even_window(width, tile), TILE_OVERLAP // 2)]
        return [(sy, sx) for sy in spans_y for sx in spans_x]

    def _raster(self, region: Region, scale: float) -> tuple[np.ndarray, float, float]:
        """The region's pixels at ``scale``, and the photo px per raster px along x and y."""
        crop = self.pixels[region.y0:region.y1, region.x0:region.x1]
        height, width = _scaled_size(region, scale)
        if (height, width) != crop.shape[:2]:
            # INTER_AREA also where a small face's verification crop is enlarged: it keeps the pixels' edges, on
            # which YuNet confirms tiny faces better than on a smooth (linear, cubic) enlargement (30 vs 28 of
            # the 16 px faces of tests/test_faces.py's group photo).
            crop = cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA)
        return crop, (region.x1 - region.x0) / width, (region.y1 - region.y0) / height

    def _cut_by(self, face: Face, tile: Region, edge: float) -> bool:
        """Whether ``face`` touches a border of ``tile`` that is not the photo's border."""
        bx0, by0, bx1, by1 = face.box
        return ((tile.x0 > 0 and bx0 <= tile.x0 + edge) or (tile.y0 > 0 and by0 <= tile.y0 + edge)
                or (tile.x1 < self.cols and bx1 >= tile.x1 - edge)
                or (tile.y1 < self.rows and by1 >= tile.y1 - edge))

    def _report(self) -> None:
        if self.runtime is not None:
            self.runtime.report("detect", self._done, self._total)

    # ------------------------------------------------------------------------------------------- judging
    def judge(self, levels: list[Level]) -> list[Face]:
        """Merge the levels (finest first), drop what a coarser level should have seen, verify the rest."""
        kept = [[face for face in level.faces if not _unseen_above(face, levels[:index])]
                for index, level in enumerate(levels)]
        merged = merge_faces(kept[::-1])
        second = [0.0] * len(merged)
        for target in VERIFY_PX:
            pending = [index for index, score in enumerate(second) if score < self.min_score]
            for chunk in _chunks(pending, (TILE // _cell_side(target)) ** 2):
                for index, score in zip(chunk, self._verify(target, [merged[i] for i in chunk])):
                    second[index] = max(second[index], score)
        return [face.rescored(min(face.score, score)) for face, score in zip(merged, second)
                if min(face.score, score) >= self.min_score]

    def _verify(self, target: int, faces: list[Face]) -> list[float]:
        """Each face's best score when detected again, its box brought to ``target`` px.

        The crops around the faces (VERIFY_CONTEXT face sizes wide) are laid side by side in one mosaic, with a
        gray gutter between them, so that verifying many faces costs one detector call.
        """
        cell = _cell_side(target)
        per_row = max(1, TILE // cell)
        height = -(-len(faces) // per_row) * cell
        mosaic = np.full((height, min(len(faces), per_row) * cell, 3), 128, np.uint8)
        placed = []
        for slot, face in enumerate(faces):
            (cx, cy), reach = face.centre, VERIFY_CONTEXT * face.size / 2
            region = Region(max(0, math.floor(cx - reach)), max(0, math.floor(cy - reach)),
                            min(self.cols, math.ceil(cx + reach)), min(self.rows, math.ceil(cy + reach)))
            raster, factor_x, factor_y = self._raster(region, min(target / max(face.size, 1.0),
                                                                  (cell - _GUTTER) / max(region.x1 - region.x0,
                                                                                         region.y1 - region.y0)))
            top, left = (slot // per_row) * cell + _GUTTER // 2, (slot % per_row) * cell + _GUTTER // 2
            mosaic[top:top + raster.shape[0], left:left + raster.shape[1]] = as_uint8_bgr(raster)[..., ::-1]
            placed.append((top, left, raster.shape[:2], factor_x, factor_y, region))
        if self.runtime is not None:
            self.runtime.check_cancelled()
        scores = [0.0] * len(faces)
        for found in self.backend(as_uint8_bgr(mosaic), self.min_score):
            cx, cy = found.centre
            slot = int(cy // cell) * per_row + int(cx // cell)
            if slot >= len(faces):
                continue
            top, left, (rows, cols), factor_x, factor_y, region = placed[slot]
            if not (left <= cx < left + cols and top <= cy < top + rows):
                continue  # in the gutter: not a detection of this crop
            back = _to_photo(found.mapped(1.0, -left, -top), factor_x, factor_y, region)
            if _agrees(back, faces[slot]):
                scores[slot] = max(scores[slot], found.score)
        return scores


_GUTTER = 16  # px of plain gray between two verification crops in a mosaic


def _cell_side(target: int) -> int:
    return math.ceil(VERIFY_CONTEXT * target) + _GUTTER


def _chunks(items: list[int], size: int) -> list[list[int]]:
    return [items[start:start + size] for start in range(0, len(items), size)]


def _even_window(length: int, tile: int) -> int:
    """The smallest window of at most ``tile`` px whose overlapping copies cover ``length`` in as few as can,
    a multiple of 32 px (YuNet's coarsest stride; on 726 px windows its boxes of the 16 px faces of
    tests/test_faces.py came out a pixel smaller, under min_face)."""
    if length <= tile:
        return length
    count = math.ceil((length - TILE_OVERLAP) / (tile - TILE_OVERLAP))
    return min(tile, -(-(length + (count - 1) * TILE_OVERLAP) // (count * 32)) * 32)


def _scaled_size(region: Region, scale: float) -> tuple[int, int]:
    return (max(1, round((region.y1 - region.y0) * scale)), max(1, round((region.x1 - region.x0) * scale)))


def _to_photo(face: Face, factor_x: float, factor_y: float, region: Region) -> Face:
    """A face found in a region's scaled raster, in photo pixels (the axes' factors differ by rounding only)."""
    if factor_x == factor_y == 1.0:
        return face.mapped(1.0, region.x0, region.y0)
    x0, y0, x1, y1 = face.box
    box = (region.x0 + x0 * factor_x, region.y0 + y0 * factor_y, region.x0 + x1 * factor_x,
           region.y0 + y1 * factor_y)
    points = (face.landmarks + 0.5) * np.array([factor_x, factor_y]) - 0.5 + np.array([region.x0, region.y0])
    return Face(tuple(float(v) for v in box), face.score, points)


def _agrees(found: Face, face: Face) -> bool:
    """Whether a verification detection is the same face: its centre inside the face's box, a similar size."""
    cx, cy = found.centre
    return (face.box[0] <= cx <= face.box[2] and face.box[1] <= cy <= face.box[3]
            and 0.5 <= found.size / max(face.size, 1e-6) <= 2.0)


def _unseen_above(face: Face, coarser: list[Level]) -> bool:
    """Whether a coarser level searched this face's place, at a size it resolves well, and did not find it."""
    for level in coarser:
        if face.size * level.scale >= UNSEEN_PX and level.searched(face):
            if not any(same_face(face, other) for other in level.faces):
                return True
    return False


def merge_regions(regions: list[Region]) -> list[Region]:
    """Regions that overlap replaced by their bounding box, until none overlaps another."""
    merged = list(regions)
    changed = True
    while changed:
        changed = False
        for i in range(len(merged)):
            for j in range(i + 1, len(merged)):
                if merged[i].overlaps(merged[j]):
                    merged[i] = merged[i].union(merged.pop(j))
                    changed = True
                    break
            if changed:
                break
    return merged
