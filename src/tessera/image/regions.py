"""Images larger than memory: a lazy TIFF region reader, a tiled BigTIFF writer, and the canvas that joins them.

A 40000 x 40000 scan does not fit the read -> process -> write flow: its pixels alone are 4.8 GB, its x4 result
77 GB. These three hold nothing of image size:

- :class:`TiffRegions` reads any rectangle of a TIFF without decoding the rest: uncompressed contiguous files by
  plain positioned reads (no memory map, whose touched pages would count against the process), tiled or
  strip-compressed files through tifffile's zarr store (only the tiles or strips that meet the rectangle).
- :func:`write_tiled_tiff` compresses and appends tiles as they come (a few at a time, in threads).
- :class:`TiffCanvas` is the engine's canvas for such a file: it plans a grid of blocks, one output TIFF tile
  each, and hands every finished block straight to the writer. With :func:`tessera.engine.tiled_apply` reading
  windows from a :class:`TiffRegions`, memory is one batch of windows and results, whatever the image size.
"""
from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import numpy as np
import tifffile

from ..errors import ImageReadError, OptionError, OutputError, look_up_option
from ..tiling import ArraySource, Tile, plan_blocks
from .atomic import write_atomically
from .pixels import from_float

STREAM_SUFFIXES = (".tif", ".tiff")
MAX_TILE_SIDE = 2048              # output TIFF tiles no larger than this (viewers read whole tiles)
TILE_QUANTUM = 16                 # TIFF tile sides are multiples of 16
STREAM_ZLIB_LEVEL = 1             # deflate level of streamed TIFFs: ~3 % larger than level 6, ~40 % faster
COMPRESSION_THREADS = 4           # tiles compressed at once (zlib releases the GIL)


def tiff_sample_layout(path: str | Path, default: tuple[int, int]) -> tuple[int, int]:
    """``(bytes per sample, samples per pixel)`` of a TIFF's first page from its header (at least 3 samples,
    as the in-memory flow holds RGB); ``default`` when the header cannot tell."""
    try:
        with tifffile.TiffFile(path) as tiff:
            page = tiff.pages.first
            return max(1, page.dtype.itemsize if page.dtype else 1), max(3, page.samplesperpixel)
    except (tifffile.TiffFileError, OSError, ValueError):
        return default


_Reader = TypeVar("_Reader")


class TiffRegions:
    """Lazy reader of the first image of a TIFF: ``shape`` (H, W, C), ``dtype``, and :meth:`read` of a rectangle.

    Supports RGB and gray samples, with or without alpha (C = 1, 2, 3, 4), uint8, uint16 or float32, any
    compression tifffile decodes. Use as a context manager, or call :meth:`close`.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self._tiff = tifffile.TiffFile(self.path)
        except FileNotFoundError:
            raise ImageReadError(f"{self.path}: no such file") from None
        except (tifffile.TiffFileError, OSError, ValueError) as error:
            raise ImageReadError(f"{self.path}: not a readable TIFF ({error})") from None
        try:
            self._open_page()
        except BaseException:
            self._tiff.close()
            raise

    def _open_page(self) -> None:
        page = self._tiff.pages.first
        photometric = tifffile.PHOTOMETRIC
        if page.imagedepth > 1 or page.photometric not in (photometric.RGB, photometric.MINISBLACK):
            raise ImageReadError(f"{self.path}: cannot stream a TIFF of {page.photometric.name} samples "
                                 f"(RGB or gray needed); convert it first")
        orientation = page.tags.valueof(274, 1)
        if orientation not in (None, 1):
            raise ImageReadError(f"{self.path}: cannot stream a TIFF with EXIF orientation {orientation}; "
                                 f"rotate it first")
        dtype = np.dtype(page.dtype)
        if dtype not in (np.uint8, np.uint16, np.float32):
            raise ImageReadError(f"{self.path}: cannot stream TIFF samples of type {dtype} "
                                 f"(uint8, uint16 or float32 needed)")
        channels = int(page.samplesperpixel)
        if channels not in (1, 2, 3, 4):
            raise ImageReadError(f"{self.path}: cannot stream a TIFF of {channels} samples per pixel")
        self.shape = (int(page.imagelength), int(page.imagewidth), channels)
        self.dtype = dtype
        self.iccprofile = page.tags.valueof(34675)
        self._file_dtype = dtype.newbyteorder(self._tiff.byteorder)
        self._contiguous = bool(page.is_contiguous) and page.planarconfig == tifffile.PLANARCONFIG.CONTIG \
            and int(page.bitspersample) == dtype.itemsize * 8 and page.fillorder == 1
        self._offset = int(page.dataoffsets[0])
        self._zarr = None
        if not self._contiguous:
            try:
                import zarr
            except ImportError:
                raise ImageReadError(f"{self.path}: reading a compressed or tiled TIFF region by region needs "
                                     f"the zarr package (pip install zarr)") from None
            self._store = page.aszarr()
            self._zarr = zarr.open(self._store, mode="r")

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """The samples of rows ``[y0, y1)`` and columns ``[x0, x1)`` as an (y1-y0) x (x1-x0) x C native array."""
        height, width, channels = self.shape
        if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
            raise OptionError(f"{self.path}: region [{y0}:{y1}, {x0}:{x1}] is outside the {width}x{height} image")
        if self._zarr is not None:
            region = np.asarray(self._zarr[y0:y1, x0:x1])
            region = region.reshape(y1 - y0, x1 - x0, channels)
        else:
            region = self._read_contiguous(y0, y1, x0, x1)
        if region.dtype != self.dtype:
            region = region.astype(self.dtype)
        if self.dtype == np.float32:
            region = np.nan_to_num(np.clip(region, 0.0, 1.0), nan=0.0)
        return region

    def _read_contiguous(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Positioned reads straight into the result: one read for whole rows, one per row otherwise."""
        _height, width, channels = self.shape
        item = self._file_dtype.itemsize * channels
        out = np.empty((y1 - y0, x1 - x0, channels), dtype=self._file_dtype)
        handle = self._tiff.filehandle
        with handle.lock:
            if x0 == 0 and x1 == width:
                handle.seek(self._offset + y0 * width * item)
                self._fill(handle, memoryview(out).cast("B"))
            else:
                for row in range(y0, y1):
                    handle.seek(self._offset + (row * width + x0) * item)
                    self._fill(handle, memoryview(out[row - y0]).cast("B"))
        return out

    def _fill(self, handle: Any, view: memoryview) -> None:
        got = handle.readinto(view)
        if got != len(view):
            raise ImageReadError(f"{self.path}: truncated image data (file ends inside the pixels)")

    def close(self) -> None:
        if self._zarr is not None:
            self._store.close()
        self._tiff.close()

    def __enter__(self: _Reader) -> _Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_regions(source: Any) -> TiffRegions | ArraySource:
    """A lazy region reader for a TIFF path; other image files, and arrays, are held whole (they cannot be read
    lazily)."""
    if isinstance(source, np.ndarray):
        return ArraySource(source)
    path = Path(source)
    if path.suffix.lower() in STREAM_SUFFIXES:
        return TiffRegions(path)
    from .read import load_image

    picture = load_image(path, max_pixels=None)
    planes = [picture.pixels[:, :, :1] if picture.gray else picture.pixels]
    if picture.alpha is not None:
        planes.append(picture.alpha[:, :, None])
    return ArraySource(np.concatenate(planes, axis=2) if len(planes) > 1 else planes[0])


@dataclass(frozen=True)
class TileLayout:
    """Output geometry: ``shape`` (H, W, C) in output pixels and the square TIFF ``tile`` side."""

    shape: tuple[int, int, int]
    dtype: np.dtype
    tile: int


def write_tiled_tiff(path: str | Path, layout: TileLayout, tiles: Iterator[np.ndarray], *,
                     iccprofile: bytes | None = None, compression: str = "zlib") -> Path:
    """Write ``tiles`` (row-major, edge tiles may be short) to a tiled BigTIFF at ``path``, atomically.

    Tiles are compressed a few at a time (one per compression thread) and appended: memory does not depend on
    the image size. ``compression``: "zlib" (deflate with the horizontal predictor) or "none". Gray (C = 1, 2)
    is written as minisblack, C = 2 and 4 with an unassociated alpha sample.
    """
    compression = look_up_option(compression, ("zlib", "none"), "TIFF compression")

    height, width, channels = layout.shape
    integer = layout.dtype != np.float32
    options: dict[str, Any] = {
        "shape": (height, width, channels) if channels > 1 else (height, width),
        "dtype": layout.dtype,
        "tile": (layout.tile, layout.tile),
        "photometric": "rgb" if channels >= 3 else "minisblack",
        "planarconfig": "contig" if channels > 1 else None,
        "extrasamples": ("unassalpha",) if channels in (2, 4) else None,
        "compression": None if compression == "none" else compression,
        "compressionargs": {"level": STREAM_ZLIB_LEVEL} if compression == "zlib" else None,
        "predictor": integer and compression != "none",
        "iccprofile": iccprofile if isinstance(iccprofile, bytes) else None,
        "metadata": None,
        "software": False,
    }
    squeeze = channels == 1
    workers = max(1, min(COMPRESSION_THREADS, os.cpu_count() or 1))
    # tifffile compresses `workers` tiles at a time in threads; its buffer holds just those tiles
    tile_bytes = layout.tile * layout.tile * channels * layout.dtype.itemsize
    options.update(maxworkers=workers, buffersize=workers * tile_bytes)

    def write(file: BinaryIO) -> None:
        with tifffile.TiffWriter(file, bigtiff=True, byteorder="<") as writer:
            writer.write((t[:, :, 0] if squeeze else t for t in tiles), **options)

    out = Path(path)
    write_atomically(out, write, "TIFF")
    return out


def block_side(core: int, scale: int, align: int) -> int:
    """The block side (input pixels) nearest ``core`` whose output is a valid TIFF tile side."""
    step = math.lcm(align, TILE_QUANTUM // math.gcd(TILE_QUANTUM, scale))
    largest = max(step, (MAX_TILE_SIDE // scale) // step * step)
    return min(largest, max(step, core // step * step))


def check_streamed_output(output: str | Path) -> None:
    """A streamed result is a tiled BigTIFF in an existing folder; refuse anything else before any work."""
    if Path(output).suffix.lower() not in STREAM_SUFFIXES:
        raise OptionError(f"{output}: a streamed result is a tiled BigTIFF; name the output .tif or .tiff")
    if not Path(output).parent.is_dir():
        raise OutputError(f"{output}: cannot write, folder {Path(output).parent} does not exist")


class TiffCanvas:
    """The engine's canvas for an output larger than memory: a tiled BigTIFF written block by block.

    :meth:`plan` turns the engine's tile size into blocks whose output is one TIFF tile each
    (:func:`tessera.tiling.plan_blocks`); :meth:`consume` converts each block's result to the output dtype and
    hands it to :func:`write_tiled_tiff` in file order. A block that the engine split on out-of-memory is
    assembled from its pieces first. Crop blend only: feather needs overlapping neighbours held at once.
    """

    def __init__(self, path: str | Path, shape: tuple[int, int, int], dtype: Any, *,
                 iccprofile: bytes | None = None, compression: str = "zlib"):
        check_streamed_output(path)
        self.path = Path(path)
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.iccprofile = iccprofile
        self.compression = look_up_option(compression, ("zlib", "none"), "TIFF compression")
        self.block = 0

    def plan(self, height: int, width: int, tile: int, pad: int, *, align: int = 1, feather: bool = False,
             extent: tuple[int, int] | None = None) -> list[Tile]:
        """Blocks of about ``tile`` input pixels, each with ``pad`` context (window origins on multiples of
        ``align``, read from a source of ``extent``), whose outputs are TIFF tiles."""
        if feather:
            raise OptionError("blend feather is not available for a streamed result (written block by block); "
                              "use blend crop")
        self.block = block_side(tile, self.shape[0] // height, align)
        return plan_blocks(height, width, self.block, pad, align=align, extent=extent)

    def consume(self, results: Iterator[tuple[Tile, np.ndarray]], scale: int) -> Path:
        """Write every block the engine yields; returns the path once the file is complete and in place."""
        layout = TileLayout(self.shape, self.dtype, self.block * scale)
        return write_tiled_tiff(self.path, layout, self._file_tiles(results, scale), iccprofile=self.iccprofile,
                                compression=self.compression)

    def _file_tiles(self, results: Iterator[tuple[Tile, np.ndarray]], scale: int) -> Iterator[np.ndarray]:
        """Each block's output in file order; pieces of a split block are gathered until the block is whole."""
        side = self.block * scale
        partial: dict[tuple[int, int], tuple[np.ndarray, list[int]]] = {}
        for tile, result in results:
            top, bottom, left, right = (v * scale for v in tile.keep)
            oy, ox = tile.y.start * scale, tile.x.start * scale
            piece = from_float(result[top - oy:bottom - oy, left - ox:right - ox], self.dtype)
            by, bx = top // side * side, left // side * side
            whole = (min(by + side, self.shape[0]) - by, min(bx + side, self.shape[1]) - bx)
            if piece.shape[:2] == whole:
                yield piece
                continue
            buffer, filled = partial.setdefault((by, bx), (np.empty((*whole, self.shape[2]), self.dtype), [0]))
            buffer[top - by:bottom - by, left - bx:right - bx] = piece
            filled[0] += piece.shape[0] * piece.shape[1]
            if filled[0] == whole[0] * whole[1]:
                del partial[(by, bx)]
                yield buffer
