"""Tile grids and merging: where each tile reads, where it writes, and how its result is blended in.

A grid is the product of two 1-D plans. Along an axis of length ``L`` every window has the same size ``S`` (the
core tile plus ``pad`` context on both sides) and lies inside the image: the last window is shifted back rather
than padded, so a window border is either the image border (which the untiled network sees too) or at least
``pad`` pixels away from what the window keeps. With ``pad`` at least the network's receptive-field radius the
merged result therefore equals the untiled one.

Networks that work on a lattice (window attention, patches, pixel unshuffles) see the same lattice in every
window when window origins are multiples of its period (``align``). The last window then starts at the first
aligned position past ``L - S`` and is shorter; a size-constrained network's image is read through
:class:`PaddedSource`, padded once as the untiled call pads it, so every window, the last included, sees the
pixels and the lattice the untiled network sees.

``blend="crop"`` gives each output pixel to exactly one window (the overlap is split at its middle);
``blend="feather"`` lets neighbouring windows share the inner overlap with raised-cosine weights that sum to one,
for networks that are not local.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .errors import OptionError


@dataclass(frozen=True)
class Span:
    """One window along one axis: it reads ``[start, start + size)`` and keeps ``[keep_start, keep_end)``.

    ``ramp_in``/``ramp_out`` are the lengths (input pixels) of the raised-cosine ramps at the start and end of the
    kept part in feather mode; 0 in crop mode.
    """

    start: int
    size: int
    keep_start: int
    keep_end: int
    ramp_in: int = 0
    ramp_out: int = 0

    @property
    def stop(self) -> int:
        return self.start + self.size

    def weights(self, scale: int) -> np.ndarray | None:
        """Blend weights over the kept part at output resolution, or None when the window keeps all of it."""
        if not (self.ramp_in or self.ramp_out):
            return None
        n = (self.keep_end - self.keep_start) * scale
        w = np.ones(n, dtype=np.float32)
        if self.ramp_in:
            w[: self.ramp_in * scale] = raised_cosine(self.ramp_in * scale)
        if self.ramp_out:
            w[n - self.ramp_out * scale:] = 1.0 - raised_cosine(self.ramp_out * scale)
        return w


def raised_cosine(n: int) -> np.ndarray:
    """Rising half-cosine of ``n`` samples, sampled at pixel centres; ``r + r[::-1] == 1`` exactly in float32."""
    t = (np.arange(n, dtype=np.float64) + 0.5) / n
    return (0.5 - 0.5 * np.cos(np.pi * t)).astype(np.float32)


@dataclass(frozen=True)
class Tile:
    """A 2-D window: the product of a span along y and a span along x, plus inherited blend weights."""

    y: Span
    x: Span
    weight_y: np.ndarray | None = field(default=None, compare=False, repr=False)
    weight_x: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def window_shape(self) -> tuple[int, int]:
        return self.y.size, self.x.size

    @property
    def keep(self) -> tuple[int, int, int, int]:
        """Kept rectangle in input pixels: (top, bottom, left, right)."""
        return self.y.keep_start, self.y.keep_end, self.x.keep_start, self.x.keep_end

    @property
    def keep_area(self) -> int:
        top, bottom, left, right = self.keep
        return (bottom - top) * (right - left)

    def with_weights(self, scale: int) -> "Tile":
        """This tile with its spans' feather weights computed (no-op in crop mode)."""
        return Tile(self.y, self.x, self.y.weights(scale), self.x.weights(scale))


def evened_tile(longest: int, count: int, align: int) -> int:
    """The smallest aligned tile that covers ``longest`` pixels in ``count`` tiles (the whole side for one)."""
    if count <= 1:
        return longest
    return min(longest, -(-math.ceil(longest / count) // align) * align)


def _aligned_down(value: int, align: int) -> int:
    return value - value % align


def _aligned_up(value: int, align: int) -> int:
    return -(-value // align) * align


def plan_axis(length: int, window: int, pad: int, *, cover: tuple[int, int] | None = None, align: int = 1,
              feather: bool = False) -> list[Span]:
    """Plan windows of one size along an axis of ``length`` so that their kept parts cover ``cover``.

    ``window`` is the window size (core + 2 * pad); every window origin is a multiple of ``align``, so a window
    pushed against the far border starts at the first aligned position past ``length - window`` and is shorter
    (by less than ``align``). Kept parts partition ``cover`` (crop) or overlap with ramps (feather).
    """
    a, b = cover if cover is not None else (0, length)
    if not (0 <= a < b <= length):
        raise OptionError(f"tile region [{a}, {b}) is not inside an axis of length {length}")
    if window >= length:
        return [Span(0, length, a, b)]
    core = window - 2 * pad
    if core < align:
        raise OptionError(f"tile window {window} leaves no room inside a context pad of {pad} px")
    far = _aligned_up(length - window, align)  # the window against the far border starts here

    def size(s: int) -> int:
        return min(window, length - s)

    def lo(s: int) -> int:  # first pixel a window starting at s computes exactly
        return 0 if s == 0 else s + pad

    def hi(s: int) -> int:
        return length if s + size(s) == length else s + window - pad

    first = _aligned_down(min(max(a - pad, 0), length - window), align)
    last = min(_aligned_up(max(b + pad - window, 0), align), far)
    if last <= first:
        starts = [first]
    else:
        count = 1 + math.ceil((last - first) / core)
        while True:
            starts = [first] + [_aligned_down(first + round(i * (last - first) / (count - 1)), align)
                                for i in range(1, count - 1)] + [last]
            if all(hi(s) >= lo(t) for s, t in zip(starts, starts[1:])):
                break
            count += 1
    spans = []
    keep_start = a
    for i, s in enumerate(starts):
        if i + 1 < len(starts):
            overlap_lo, overlap_hi = max(lo(starts[i + 1]), a), min(hi(s), b)
            if feather:
                keep_end = overlap_hi
            else:
                keep_end = (overlap_lo + overlap_hi) // 2
        else:
            keep_end = b
        ramp_in = 0
        if feather and i > 0:
            ramp_in = max(0, min(hi(starts[i - 1]), b) - keep_start)
        ramp_out = 0
        if feather and i + 1 < len(starts):
            ramp_out = max(0, keep_end - max(lo(starts[i + 1]), a))
        spans.append(Span(s, size(s), keep_start, keep_end, ramp_in, ramp_out))
        keep_start = max(lo(starts[i + 1]), a) if (feather and i + 1 < len(starts)) else keep_end
    return spans


def plan_grid(height: int, width: int, tile: int, pad: int, *, align: int = 1, feather: bool = False,
              region: tuple[int, int, int, int] | None = None) -> list[Tile]:
    """Plan a grid of same-shape tiles whose kept parts cover ``region`` (top, bottom, left, right).

    ``tile`` is the core size in input pixels (what a window keeps, before context). Tiles come row by row.
    """
    if tile < 1 or pad < 0:
        raise OptionError(f"tile must be >= 1 and pad >= 0 (got tile={tile}, pad={pad})")
    top, bottom, left, right = region if region is not None else (0, height, 0, width)
    window = -(-(tile + 2 * pad) // align) * align
    ys = plan_axis(height, window, pad, cover=(top, bottom), align=align, feather=feather)
    xs = plan_axis(width, window, pad, cover=(left, right), align=align, feather=feather)
    return [Tile(y, x) for y in ys for x in xs]


def split_tile(parent: Tile, height: int, width: int, tile: int, pad: int, *, align: int, scale: int) -> list[Tile]:
    """Re-plan one tile's kept rectangle with smaller windows (out-of-memory back-off).

    The children's kept parts partition the parent's; they inherit the parent's blend weights, sliced, so the
    merged result is the same as if the parent had run.
    """
    top, bottom, left, right = parent.keep
    children = plan_grid(height, width, tile, pad, align=align, region=(top, bottom, left, right))
    out = []
    for child in children:
        wy = wx = None
        if parent.weight_y is not None:
            wy = parent.weight_y[(child.y.keep_start - top) * scale:(child.y.keep_end - top) * scale]
        if parent.weight_x is not None:
            wx = parent.weight_x[(child.x.keep_start - left) * scale:(child.x.keep_end - left) * scale]
        out.append(Tile(child.y, child.x, wy, wx))
    return out


def block_axis(length: int, block: int, pad: int, *, align: int = 1, extent: int | None = None) -> list[Span]:
    """Windows that keep consecutive blocks of ``block`` pixels, each read with ``pad`` context on both sides
    (the start moved back to a multiple of ``align``), clipped at the image border (the last block may be short).

    Unlike :func:`plan_axis` the kept parts sit on a fixed lattice (multiples of ``block``), so each one is one
    tile of a tiled output file, produced in file order; windows at the border are smaller. ``extent`` (at least
    ``length``) is how far a padded source can be read (:class:`PaddedSource`).
    """
    extent = length if extent is None else extent
    spans = []
    for keep_start in range(0, length, block):
        keep_end = min(keep_start + block, length)
        start, stop = _aligned_down(max(0, keep_start - pad), align), min(extent, keep_end + pad)
        spans.append(Span(start, stop - start, keep_start, keep_end))
    return spans


def plan_blocks(height: int, width: int, block: int, pad: int, *, align: int = 1,
                extent: tuple[int, int] | None = None) -> list[Tile]:
    """A row-major grid of block tiles (see :func:`block_axis`): what a tiled-file canvas is filled with."""
    if block < 1 or pad < 0:
        raise OptionError(f"block must be >= 1 and pad >= 0 (got block={block}, pad={pad})")
    ey, ex = extent if extent is not None else (height, width)
    return [Tile(y, x) for y in block_axis(height, block, pad, align=align, extent=ey)
            for x in block_axis(width, block, pad, align=align, extent=ex)]


class PaddedSource:
    """A region reader over ``source`` padded on the right and bottom to ``height`` x ``width``, as spandrel pads
    an image for a size-constrained network: mirrored (without repeating the edge) as far as the image allows,
    then the last mirrored pixel repeated.

    The engine plans windows over this extent and keeps only the image's own pixels, so a window touching the
    far border reads the same padding the untiled call adds to the whole image.
    """

    def __init__(self, source, height: int, width: int):
        self.source = source
        h, w, c = source.shape
        self.shape = (height, width, c)
        self.dtype = source.dtype
        self._rows, self._cols = _padded_index(h, height), _padded_index(w, width)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        rows, cols = self._rows[y0:y1], self._cols[x0:x1]
        inner = self.source.read(int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1)
        if rows[-1] == y1 - 1 and cols[-1] == x1 - 1:  # inside the image: the region as the source gives it
            return inner
        return inner[np.ix_(rows - rows.min(), cols - cols.min())]


def _padded_index(length: int, padded: int) -> np.ndarray:
    """For each index of an axis padded from ``length`` to ``padded``, the image index it copies."""
    index = np.arange(padded)
    mirrored = min(padded - length, length - 1)
    beyond = index >= length
    index[beyond] = np.maximum(2 * (length - 1) - index[beyond], length - 1 - mirrored)
    return index


class ArraySource:
    """A region reader over an image already in memory: ``shape`` (H, W, C), ``dtype``, :meth:`read`.

    The interface the engine reads windows through, shared with the lazy TIFF reader
    (:class:`tessera.image.regions.TiffRegions`). :meth:`read` returns a view, no copy (the engine converts
    each window to float anyway): a caller that changes a region copies it first.
    """

    def __init__(self, array: np.ndarray):
        array = np.asarray(array)
        self.array = array[:, :, None] if array.ndim == 2 else array
        self.shape = tuple(self.array.shape)
        self.dtype = self.array.dtype
        self.iccprofile = None

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return self.array[y0:y1, x0:x1]

    def close(self) -> None:
        pass

    def __enter__(self) -> "ArraySource":
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class Canvas:
    """The output image on the host, filled tile by tile.

    A canvas plans the grid it is filled with (:meth:`plan`) and consumes the engine's results as they come
    (:meth:`consume`); this one holds the whole output in memory. The tiled BigTIFF canvas
    (:class:`tessera.image.regions.TiffCanvas`) has the same two methods and writes each finished file tile to
    disk instead.

    In crop mode results are converted to the output dtype and written in place (``target`` may be a numpy
    array or any array-like supporting slice assignment, such as a memory-mapped file). In feather mode they are
    accumulated in float32, but only over a band of rows: the canvas counts, per input row, the kept pixels the
    planned tiles still owe it, and converts rows into ``target`` as soon as they are complete. Tiles come row by
    row, so the band spans about one row of windows and feather costs no more host memory than crop plus that
    band, whatever the image's height. Tiles added without :meth:`plan` are accumulated over the whole output
    and converted at :meth:`finish`.
    """

    def __init__(self, target: np.ndarray, *, feather: bool, convert):
        self.target = target
        self._convert = convert
        self._feather = feather
        self._owed: np.ndarray | None = None  # per input row: kept pixels still to come (planned feather only)
        self._band: np.ndarray | None = None  # float32 sums for input rows [_band_top, _band_top + rows)
        self._band_top = 0
        self._scale = 1
        self.largest_band = 0  # the most output rows the band held at once: for tests and benchmarks

    def plan(self, height: int, width: int, tile: int, pad: int, *, align: int = 1, feather: bool = False,
             extent: tuple[int, int] | None = None) -> list[Tile]:
        """Same-shape windows evened out over the image (:func:`plan_grid`), read from a source of ``extent``
        (a :class:`PaddedSource`; default the image itself); in feather mode also what each row is owed, so
        finished rows leave the band."""
        ey, ex = extent if extent is not None else (height, width)
        tiles = plan_grid(ey, ex, tile, pad, align=align, feather=feather, region=(0, height, 0, width))
        if self._feather:
            self._owed = np.zeros(height, dtype=np.int64)
            for t in tiles:
                top, bottom, left, right = t.keep
                self._owed[top:bottom] += right - left
        return tiles

    def consume(self, results, scale: int) -> np.ndarray:
        """Merge every ``(tile, result)`` the engine yields, then return the finished output."""
        for tile, result in results:
            self.add(tile, result, scale)
        return self.finish()

    def add(self, tile: Tile, result: np.ndarray, scale: int) -> None:
        """Merge ``result`` (the window's output, HxWxC float32 at output scale) for ``tile``."""
        top, bottom, left, right = tile.keep
        oy, ox = tile.y.start * scale, tile.x.start * scale
        piece = result[top * scale - oy:bottom * scale - oy, left * scale - ox:right * scale - ox]
        if not self._feather:
            self.target[top * scale:bottom * scale, left * scale:right * scale] = self._convert(piece)
            return
        if tile.weight_y is not None:
            piece = piece * tile.weight_y[:, None, None]
        if tile.weight_x is not None:
            piece = piece * tile.weight_x[None, :, None]
        band = self._band_over(top, bottom, scale)
        rows = slice((top - self._band_top) * scale, (bottom - self._band_top) * scale)
        band[rows, left * scale:right * scale] += piece
        if self._owed is not None:
            self._owed[top:bottom] -= right - left
            self._flush_finished_rows(scale)

    def _band_over(self, top: int, bottom: int, scale: int) -> np.ndarray:
        """The float32 band, grown to hold input rows ``[top, bottom)`` (rows added where missing).

        Rows that left the band are finished: no planned tile still adds to them, so a tile's rows are always
        either in the band or new."""
        self._scale = scale
        if self._owed is None:  # unplanned: the whole output at once
            top, bottom = 0, self.target.shape[0] // scale
        if self._band is None:
            self._band_top = top
            self._band = np.zeros(((bottom - top) * scale, *self.target.shape[1:]), dtype=np.float32)
        start, end = self._band_top, self._band_top + self._band.shape[0] // scale
        if top < start or bottom > end:
            new_start, new_end = min(top, start), max(bottom, end)
            grown = np.zeros(((new_end - new_start) * scale, *self.target.shape[1:]), dtype=np.float32)
            grown[(start - new_start) * scale:(end - new_start) * scale] = self._band
            self._band, self._band_top = grown, new_start
        self.largest_band = max(self.largest_band, self._band.shape[0])
        return self._band

    def _flush_finished_rows(self, scale: int) -> None:
        """Convert the band's leading rows that no tile still owes anything into ``target``, and drop them."""
        assert self._band is not None and self._owed is not None
        rows = self._band.shape[0] // scale
        done = 0
        while done < rows and self._owed[self._band_top + done] == 0:
            done += 1
        if not done:
            return
        self._write(self._band_top * scale, self._band[:done * scale])
        self._band = self._band[done * scale:].copy() if done < rows else None
        self._band_top += done

    def finish(self) -> np.ndarray:
        """The output, with what is left in the band converted into it."""
        if self._band is not None:
            self._write(self._band_top * self._scale, self._band)
            self._band = None
        return self.target

    _WRITE_ROWS = 128  # output rows converted at once: the conversion's float temporaries stay small

    def _write(self, top: int, rows: np.ndarray) -> None:
        """Convert accumulated ``rows`` into ``target`` from output row ``top``, a few rows at a time."""
        for start in range(0, rows.shape[0], self._WRITE_ROWS):
            chunk = rows[start:start + self._WRITE_ROWS]
            self.target[top + start:top + start + chunk.shape[0]] = self._convert(chunk)
