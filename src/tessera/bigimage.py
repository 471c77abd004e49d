"""Images larger than memory: read lazily region by region, process block by block, stream out a tiled BigTIFF.

A 40000 x 40000 scan does not fit the usual read -> process -> write flow: its pixels alone are 4.8 GB, its x4
result 77 GB. Here nothing of image size is ever held:

- :class:`TiffRegions` reads any rectangle of a TIFF without decoding the rest: uncompressed contiguous files by
  plain positioned reads (no memory map, whose touched pages would count against the process), tiled or
  strip-compressed files through tifffile's zarr store (only the tiles or strips that meet the rectangle).
- the output is a grid of square blocks, each one TIFF tile (``block * scale`` output pixels a side). Blocks are
  produced row by row in groups of ``batch`` (one engine batch), each group by :func:`tessera.engine.tiled_apply`
  on its input window plus the network's context, and handed straight to tifffile's tile writer, which compresses
  and appends them. Memory is one group's window and result: it does not depend on the image size at all.
- with a context at least the network's receptive field, every block equals the same pixels of the in-memory
  result (the block's window edges are either the image's or ``context`` pixels away from what it keeps).

:func:`stream_upscale` upscales (integer scales, multi-pass for factors beyond the model's, alpha by Lanczos, gray
kept gray); :func:`stream_inpaint` inpaints: a coarse occupancy map of the mask (one cell per 32 x 32 pixels) is
built in one lazy pass, groups of holes with their context become crops that :func:`tessera.tasks.inpaint.inpaint`
fills one at a time, and the output is the input streamed through with each group's changed pixels laid over it.
Memory then follows the largest group of holes, not the image.
"""
from __future__ import annotations

import math
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import numpy as np
import tifffile

from .engine import ProgressCallback, Runtime, choose_tile, infer_scale, measure_context, tiled_apply
from .errors import ImageReadError, InputError, OptionError, ResourceError
from .masks import threshold
from .models.descriptor import Model

DEFAULT_RAM_FRACTION = 0.5        # --max-ram default: this share of the machine's memory
IN_MEMORY_COPIES = 3              # an in-memory task holds about input + 3 outputs (result, copy, encoder buffer)
MAX_TILE_SIDE = 2048              # output TIFF tiles no larger than this (viewers read whole tiles)
TILE_QUANTUM = 16                 # TIFF tile sides are multiples of 16
MASK_CELL = 32                    # pixels per side of a cell of the coarse mask occupancy map
MASK_SCAN_BLOCK = 2048            # mask rows/columns read at once while building the occupancy map
INPAINT_TILE = 512                # TIFF tile side of a streamed inpainting result
STREAM_SUFFIXES = (".tif", ".tiff")
STREAM_ZLIB_LEVEL = 1             # deflate level of streamed TIFFs: ~3 % larger than level 6, ~40 % faster
COMPRESSION_THREADS = 4           # tiles compressed at once (zlib releases the GIL)


def default_max_ram() -> int:
    """The default RAM budget for one image: a share of the machine's physical memory."""
    import psutil

    return int(psutil.virtual_memory().total * DEFAULT_RAM_FRACTION)


def in_memory_bytes(width: int, height: int, *, scale: float = 1.0, itemsize: int = 1, channels: int = 4) -> int:
    """Host memory the in-memory flow needs for an image: the input plus about three outputs."""
    pixels = width * height
    return int(pixels * channels * itemsize * (1 + IN_MEMORY_COPIES * scale * scale))


def in_memory_estimate(path: str | Path, *, scale: float = 1.0) -> tuple[int, int, int]:
    """``(width, height, bytes)``: the image's size and what processing it in memory would take.

    Reads the header only: TIFF's sample type and count from tifffile, 8-bit RGBA assumed for other formats.
    """
    from .image import read_image_size

    width, height = read_image_size(path)
    itemsize, channels = 1, 4
    if Path(path).suffix.lower() in STREAM_SUFFIXES:
        try:
            with tifffile.TiffFile(path) as tiff:
                page = tiff.pages.first
                itemsize, channels = max(1, page.dtype.itemsize if page.dtype else 1), max(3, page.samplesperpixel)
        except (tifffile.TiffFileError, OSError, ValueError):
            pass  # read_image_size accepted it; keep the defaults
    return width, height, in_memory_bytes(width, height, scale=scale, itemsize=itemsize, channels=channels)


def needs_streaming(path: str | Path, *, scale: float = 1.0, max_ram: int | None = None) -> bool:
    """Whether ``path`` is too large to process in memory within ``max_ram`` bytes (default:
    :func:`default_max_ram`), from its header alone."""
    budget = default_max_ram() if max_ram is None else int(max_ram)
    return in_memory_estimate(path, scale=scale)[2] > budget

# ----------------------------------------------------------------------------------------------- reading

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


class ArrayRegions:
    """The :class:`TiffRegions` interface over an array already in memory (small masks, tests)."""

    def __init__(self, array: np.ndarray):
        array = np.asarray(array)
        self.array = array[:, :, None] if array.ndim == 2 else array
        self.shape = tuple(self.array.shape)
        self.dtype = self.array.dtype
        self.iccprofile = None

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        return np.array(self.array[y0:y1, x0:x1])

    def close(self) -> None:
        pass

    def __enter__(self: _Reader) -> _Reader:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def open_regions(source: Any) -> TiffRegions | ArrayRegions:
    """A lazy region reader for a TIFF path; other image files are loaded whole (they cannot be read lazily)."""
    if isinstance(source, np.ndarray):
        return ArrayRegions(source)
    path = Path(source)
    if path.suffix.lower() in STREAM_SUFFIXES:
        return TiffRegions(path)
    from .image import load_image

    picture = load_image(path, max_pixels=None)
    planes = [picture.pixels[:, :, :1] if picture.gray else picture.pixels]
    if picture.alpha is not None:
        planes.append(picture.alpha[:, :, None])
    return ArrayRegions(np.concatenate(planes, axis=2) if len(planes) > 1 else planes[0])

# ----------------------------------------------------------------------------------------------- writing


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
    from .errors import look_up_option
    from .image import write_atomically

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

# ----------------------------------------------------------------------------------------------- blocks


@dataclass
class StreamReport:
    """What a streamed job did: sizes, block plan and timing."""

    input_shape: tuple[int, int, int]
    output_shape: tuple[int, int, int]
    block: int
    context: int
    batch: int
    blocks: int
    model: str
    seconds: float = 0.0
    regions: int = 0


def _block_side(core: int, scale: int, align: int) -> int:
    """The block side (input pixels) nearest ``core`` whose output is a valid TIFF tile side."""
    step = math.lcm(align, TILE_QUANTUM // math.gcd(TILE_QUANTUM, scale))
    largest = max(step, (MAX_TILE_SIDE // scale) // step * step)
    return min(largest, max(step, core // step * step))


def _blocks_of_groups(height: int, width: int, block: int, group: int) -> Iterator[tuple[int, int, int, int]]:
    """Row-major (y0, y1, x0, x1) rectangles of ``group`` blocks side by side: TIFF tile order, group by group."""
    for y0 in range(0, height, block):
        for x0 in range(0, width, block * group):
            yield y0, min(y0 + block, height), x0, min(x0 + block * group, width)


def _cut_tiles(result: np.ndarray, side: int) -> Iterator[np.ndarray]:
    """Split a group's output (one tile high) into TIFF tiles, left to right."""
    for x in range(0, result.shape[1], side):
        yield result[:, x:x + side]

# ----------------------------------------------------------------------------------------------- models


def _adapt_channels(model: Model, channels: int, context: int) -> Model:
    """``model`` (RGB in, RGB out) as a model of ``channels`` (1, 2 or 4) samples: gray is run as RGB and brought
    back to one channel (BT.601 luma), alpha is resized with Lanczos alongside. ``context``: the model's, in px."""
    import torch

    from .models.classical.lanczos import lanczos_model

    alpha_model = lanczos_model(model.scale) if channels in (2, 4) else None
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)

    def call(network: Model, x: Any, mask: Any = None) -> Any:
        colour = x[:, :3] if channels >= 3 else x[:, :1].expand(-1, 3, -1, -1)
        y = network(colour)
        if channels <= 2:
            y = (y * luma.to(y.device, y.dtype)).sum(dim=1, keepdim=True)
        if alpha_model is not None:
            y = torch.cat([y, alpha_model(x[:, -1:]).to(y.dtype)], dim=1)
        return y

    if alpha_model is not None:
        context = max(context, alpha_model.context or 0)
    return replace(model, network=model, call_fn=call, input_channels=channels, output_channels=channels,
                   input_range=(0.0, 1.0), context=context)


def _chain(network: Model, factors: list[int], runtime: Runtime, levels: int | None) -> Model:
    """The passes of a multi-pass upscale as one model, so each block runs all passes (tile-exact).

    Between passes the values are clamped and rounded to ``levels`` (255, 65535; None for float images), as the
    in-memory upscale stores each pass in the image's dtype: the streamed result is the same.
    """
    from .tasks.upscale import pooled

    radius = measure_context(network, runtime)
    if len(factors) == 1:
        step = pooled(network, factors[0])
        return step if step is network else replace(step, context=radius)
    steps = [pooled(network, f) for f in factors]
    context, reach = 0, 1
    for factor in factors:  # each pass's context, in the chain's input pixels
        context += math.ceil(radius / reach)
        reach *= factor

    def call(_network: Any, x: Any, mask: Any = None) -> Any:
        for number, step in enumerate(steps):
            x = step(x)
            if levels and number + 1 < len(steps):
                x = (x.float() * levels).round() / levels
        return x

    return replace(network, network=network, call_fn=call, scale=math.prod(factors), input_range=(0.0, 1.0),
                   context=context, name=f"{network.name} ({' then '.join(f'x{f}' for f in factors)})")


def resolve_upscaler(model: Any, options: Any, dtype: np.dtype, runtime: Runtime | None = None, *,
                     model_dir: str | None = None, progress: ProgressCallback | None = None,
                     cancel: threading.Event | None = None) -> tuple[Model, Runtime]:
    """The one model a streamed upscale of an image of ``dtype`` runs per block (all passes chained), and its
    runtime.

    ``options``: validated :class:`~tessera.options.UpscaleOptions`. The target scale must be an integer that
    whole passes of the model reach (any integer for the weight-free method).
    """
    from .models.classical.lanczos import lanczos_model
    from .tasks.upscale import plan_passes, resolve_auto, resolve_model

    model, _chosen, default_scale = resolve_auto(model, options, model_dir)
    network, weight_free = resolve_model(model, options, model_dir)
    if runtime is None:
        runtime = Runtime.create(options.device, options.precision, options.max_memory, model=network,
                                 progress=progress, cancel=cancel)
    runtime.prepare(network)
    if not weight_free and not network.scale:
        infer_scale(network, runtime)
    target = float(options.scale or (default_scale if weight_free else network.scale))
    if abs(target - round(target)) > 1e-9:
        raise OptionError(f"scale {target:g}: streaming a large image needs an integer scale")
    if weight_free:
        return lanczos_model(round(target), options.sharpen), runtime
    factors, rest = plan_passes(network.scale, target)
    if abs(rest - 1.0) > 1e-9:
        raise OptionError(f"scale {target:g} cannot be reached with x{network.scale} passes while streaming; "
                          f"choose a power of {network.scale}")
    levels = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}.get(np.dtype(dtype))
    return _chain(network, factors, runtime, levels), runtime

# ----------------------------------------------------------------------------------------------- upscale


def stream_upscale(source: str | Path | np.ndarray, output: str | Path, *, model: Any = "auto",
                   scale: float | None = None, progress: ProgressCallback | None = None,
                   cancel: threading.Event | None = None, model_dir: str | None = None,
                   compression: str = "zlib", report: list[StreamReport] | None = None,
                   **options: Any) -> Path:
    """Upscale ``source`` (a TIFF path, read lazily) into a tiled BigTIFF at ``output``, in bounded memory.

    ``model``/``scale`` as :func:`tessera.tasks.upscale.upscale` (the scale must be an integer); engine options
    (``device``, ``precision``, ``max_memory``, ``tile``, ``tile_pad``, ``tile_batch``, ``blend``) and ``sharpen``
    are validated by :class:`~tessera.options.UpscaleOptions`. ``tile`` sets the block side. Progress is
    reported as stage ``"blocks"``. ``report``: a list that receives a :class:`StreamReport`.
    """
    from .options import UpscaleOptions, parse_options

    opts = parse_options(UpscaleOptions, model=model if isinstance(model, (str, type(None))) else None,
                         scale=scale, **options)
    _check_output(output)
    started = time.monotonic()
    with open_regions(source) as reader:
        height, width, channels = reader.shape
        network, runtime = resolve_upscaler(model, opts, reader.dtype, model_dir=model_dir, progress=progress,
                                            cancel=cancel)
        context = measure_context(network, runtime) if opts.tile_pad == "auto" else int(opts.tile_pad)
        if context < 0:
            raise OptionError(f"tile pad must be >= 0, got {opts.tile_pad}")
        if channels != 3:
            network = _adapt_channels(network, channels, context)
            context = network.context
        align = network.size_requirements.multiple_of
        core, batch = choose_tile(network, runtime, height, width, context) if opts.tile == "auto" \
            else (int(opts.tile), 1)
        if core < 1:
            raise OptionError(f"tile must be a positive number of pixels or 'auto', got {opts.tile}")
        batch = batch if opts.tile_batch == "auto" else int(opts.tile_batch)
        s = network.scale
        block = _block_side(core, s, align)
        layout = TileLayout((height * s, width * s, channels), reader.dtype, block * s)
        done = StreamReport(reader.shape, layout.shape, block, context, batch,
                            math.ceil(height / block) * math.ceil(width / block), network.name)
        quiet = replace(runtime, progress=None)

        def tiles() -> Iterator[np.ndarray]:
            finished = 0
            runtime.report("blocks", 0, done.blocks)
            for y0, y1, x0, x1 in _blocks_of_groups(height, width, block, max(1, batch)):
                runtime.check_cancelled()
                wy0, wy1 = max(0, y0 - context), min(height, y1 + context)
                wx0, wx1 = max(0, x0 - context), min(width, x1 + context)
                window = reader.read(wy0, wy1, wx0, wx1)
                result = tiled_apply(network, window, tile=block, pad=context, batch=batch, blend=opts.blend,
                                     runtime=quiet)
                kept = result[(y0 - wy0) * s:(y1 - wy0) * s, (x0 - wx0) * s:(x1 - wx0) * s]
                del window, result
                yield from _cut_tiles(kept, layout.tile)
                finished += math.ceil((x1 - x0) / block)
                runtime.report("blocks", finished, done.blocks)

        path = write_tiled_tiff(output, layout, tiles(), iccprofile=reader.iccprofile, compression=compression)
    done.seconds = time.monotonic() - started
    if report is not None:
        report.append(done)
    return path


def _check_output(output: str | Path) -> None:
    from .errors import OutputError

    if Path(output).suffix.lower() not in STREAM_SUFFIXES:
        raise OptionError(f"{output}: a streamed result is a tiled BigTIFF; name the output .tif or .tiff")
    if not Path(output).parent.is_dir():
        raise OutputError(f"{output}: cannot write, folder {Path(output).parent} does not exist")

# ----------------------------------------------------------------------------------------------- inpaint


@dataclass(frozen=True)
class _Group:
    """One crop of holes to inpaint: ``box`` (y0, y1, x0, x1) in image pixels and its own cells."""

    box: tuple[int, int, int, int]
    cells: np.ndarray  # bool, the group's occupied cells inside the box, in cell units


def mask_occupancy(mask: TiffRegions | ArrayRegions, cell: int = MASK_CELL) -> np.ndarray:
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

    from .tasks.inpaint_plan import QUANTUM, auto_margin

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
                   report: list[StreamReport] | None = None, **options: Any) -> Path:
    """Inpaint ``source`` (a TIFF path, read lazily) where ``mask`` is set, into a tiled BigTIFF at ``output``.

    ``mask``: a TIFF of the image's size (read lazily; the alpha sample is the mask when there is one, else any
    colour above half scale) or another image file (loaded whole). Options as
    :func:`tessera.tasks.inpaint.inpaint`. Each group of holes is filled by that function on its own crop; a
    crop larger than ``max_ram`` raises :class:`ResourceError`. Pixels outside the holes are the input's, bit for
    bit. Progress: stage ``"regions"`` while filling, then ``"blocks"`` while writing.
    """
    from .options import InpaintOptions, parse_options
    from .tasks.inpaint import resolve_inpaint_model

    opts = parse_options(InpaintOptions, model=model if isinstance(model, str) else "auto", **options)
    _check_output(output)
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
        with tempfile.TemporaryDirectory(prefix=".tessera-", dir=Path(output).parent) as scratch:
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
                for finished, (y0, y1, x0, x1) in enumerate(_blocks_of_groups(height, width, block, 1), 1):
                    runtime.check_cancelled()
                    tile = reader.read(y0, y1, x0, x1)
                    for box, path in rows.get(y0 // block, ()):
                        _lay_patch(tile, (y0, y1, x0, x1), box, path)
                    yield tile
                    runtime.report("blocks", finished, done.blocks)

            path = write_tiled_tiff(output, layout, tiles(), iccprofile=reader.iccprofile, compression=compression)
    done.seconds = time.monotonic() - started
    if report is not None:
        report.append(done)
    return path


def _fill_group(group: _Group, reader: Any, holes: Any, network: Model, options: dict[str, Any], budget: int,
                scratch: Path, mask_name: Any) -> tuple[tuple[int, int, int, int], Path]:
    """Inpaint one group's crop; save its changed pixels (values and where, over their bounding box) to
    ``scratch``.values.npy / .where.npy, and return that box in image pixels."""
    from .tasks.inpaint import inpaint

    y0, y1, x0, x1 = group.box
    needed = in_memory_bytes(x1 - x0, y1 - y0, itemsize=reader.dtype.itemsize)
    if needed > budget:
        raise ResourceError(f"mask {mask_name}: a group of holes needs a {x1 - x0}x{y1 - y0} crop "
                            f"({needed / 2**30:.1f} GiB), over the RAM budget of {budget / 2**30:.1f} GiB")
    crop = reader.read(y0, y1, x0, x1)
    own = np.repeat(np.repeat(group.cells, MASK_CELL, axis=0), MASK_CELL, axis=1)[:y1 - y0, :x1 - x0]
    local = _mask_values(holes.read(y0, y1, x0, x1)) & own
    channels = crop.shape[2]
    # inpaint takes gray as HxW, RGB(A) as HxWx3(4); gray+alpha is filled as gray, its alpha kept as it is
    result = np.asarray(inpaint(crop[:, :, 0] if channels <= 2 else crop, local, model=network, **options))
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
