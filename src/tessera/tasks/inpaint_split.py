"""Splitting a long or sparse group of holes on a cell grid, so that thin holes run at full resolution.

On a grid of :data:`CELL` px cells, cells holding a thick part of a hole (a disc of :data:`THICK_RADIUS` fits
inside) and their neighbours form clusters that run like groups (downscaled if they must); the other, thin cells
are gathered into pieces of at most :data:`PIECE` px that run at full resolution. Each hole pixel lies in exactly
one cell, so it is pasted by exactly one region. Pieces run in phases (thick clusters first, then thin pieces in a
2x2 checkerboard of :data:`PIECE` blocks): a piece sees its neighbours of earlier phases already filled
(:attr:`Region.known`), so the fill continues across piece boundaries.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .inpaint_regions import MIN_MARGIN, Box, Region, auto_margin, bounding_box
from .inpaint_sizing import Sizing, group_region

CELL = 64              # px: the grid on which a long or sparse group is split; thickness is judged per cell
PIECE = 512            # px: the longest stretch of a thin hole one piece fills (a block of 8x8 cells)
THICK_RADIUS = 32      # px: a hole part holding a disc of this radius is "large" and may run downscaled


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
        bounds = bounding_box(holes)
        regions.append(group_region(bounds, bounds.expand(pad), holes, photo, sizing, use_budget, phase=phase))
    return _with_known(regions, block)


def _tiles_of(box: Box, size: int) -> Iterator[tuple[int, int]]:
    """The (row, col) tiles of a ``size`` px grid that ``box`` touches."""
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
