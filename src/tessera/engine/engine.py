"""The engine: tile size and batch choice, batched forwards, out-of-memory back-off, merging into a canvas.

Every task runs its network through here. :func:`tiled_apply` cuts an image into a grid (``tiling.py``), runs the
windows in batches of one shape on the device, and merges each result into a canvas as soon as it is back: the
device only ever holds one batch. :func:`run_model` does the same for a list of independent regions
(inpainting crops, aligned faces). Both back off on out-of-memory (smaller batch, then smaller tiles) without
redoing finished work, and fail with :class:`ResourceError` rather than return a partial image.
"""
from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import OptionError, ResourceError
from ..image.pixels import from_float, to_float
from ..models.descriptor import Model
from ..options import format_bytes
from ..progress import ProgressCallback
from ..receptive import non_local_reason, tile_period
from ..tiling import ArraySource, Canvas, PaddedSource, Tile, evened_tile, split_tile
from .cpu_tiles import cpu_candidates, fastest_cpu_tile
from .pipeline import Launched, Streams, in_flight_bytes, launch, loader, stage_batch, tuned_for_same_shapes
from .probes import MemoryModel, Reach, infer_scale, known_locality, measure_memory, measure_reach
from .runtime import Runtime, free_memory, is_out_of_memory, precision_failure

# On the CPU a window's cost per pixel grows once its feature maps fall out of the cache, and then levels off:
# for realesr-animevideov3 (channels-last, 2 cores) ~1.0x up to ~290 px, 1.3x at 384 px, ~1.4x from 576 px
# (bench/cpu_engine.py section ``tiles``). Tiles are chosen to minimise the padded area times that factor, so a
# small image runs as one window (no context overhead) and a large one in windows near the cache-friendly size.
_CPU_CACHE_WINDOW = 288
_CPU_CACHE_PENALTY = 0.45
_MIN_TILE = 16
_MAX_BATCH = 16


def choose_tile(model: Model, runtime: Runtime, height: int, width: int, pad: int, *,
                local: bool = True) -> tuple[int, int]:
    """The tile (core size, input pixels) and batch for an image, from the measured memory model.

    On a GPU, and for a network that is not ``local`` (fewest seams: one window where it fits): the largest
    tile whose window fits the budget (with what the pipeline keeps in flight), evened out over the image, then
    as many tiles per batch as fit. On the CPU: of a few candidate tiles that fit, the fastest, timed on this
    machine (:func:`tessera.engine.cpu_tiles.fastest_cpu_tile`; the cost model :func:`_cpu_cost` decides where
    timing is not worth it), one per batch.
    """
    memory = measure_memory(model, runtime)
    align = tile_period(model)
    window = largest_window(model, runtime)
    largest = window - 2 * pad
    if largest < max(_MIN_TILE, align):
        smallest = -(-(max(_MIN_TILE, align) + 2 * pad) // align) * align
        lattice = f" (windows on its {align}px lattice)" if align > 1 else ""
        raise ResourceError(
            f"memory budget {format_bytes(runtime.budget)} is too small for {model.name}: a "
            f"{max(_MIN_TILE, align)}px tile with {pad}px context{lattice} needs "
            f"{format_bytes(memory.bytes_for(smallest, smallest))}")
    longest = max(height, width)
    fewest = math.ceil(longest / largest)
    tile = evened_tile(longest, fewest, align)
    if runtime.device.type == "cpu" and local:  # measured on a few candidates; the cost model where not
        def estimated(candidates: list[int]) -> int:
            return min(candidates, key=lambda t: _cpu_cost(t, pad, height, width))

        candidates = cpu_candidates(longest, tile, align)
        return fastest_cpu_tile(model, runtime, height, width, pad, candidates, fallback=estimated), 1
    if runtime.device.type == "cpu":
        return tile, 1
    side = min(tile + 2 * pad, height) * min(tile + 2 * pad, width)
    batch = max(1, min(_MAX_BATCH, _pixels_that_fit(memory, model, runtime) // max(side, 1)))
    return tile, batch


def largest_window(model: Model, runtime: Runtime) -> int:
    """The side of the largest square window (on the network's lattice) one forward can take in the budget."""
    align = tile_period(model)
    window = int(math.isqrt(_pixels_that_fit(measure_memory(model, runtime), model, runtime)))
    return window - window % align


def _cpu_cost(tile: int, pad: int, height: int, width: int) -> float:
    """Estimated CPU time of a grid of ``tile`` px tiles with ``pad`` px context, in cache-friendly pixels."""
    win_h, win_w = min(tile + 2 * pad, height), min(tile + 2 * pad, width)
    beyond = max(0, max(win_h, win_w) - _CPU_CACHE_WINDOW) / _CPU_CACHE_WINDOW
    count = math.ceil(height / tile) * math.ceil(width / tile)
    return count * win_h * win_w * (1 + _CPU_CACHE_PENALTY * min(1.0, beyond))


def _pixels_that_fit(memory: MemoryModel, model: Model, runtime: Runtime) -> int:
    """Window pixels (summed over a batch) that fit the budget: the forward's measured peak plus what the
    pipeline holds in flight (:func:`tessera.engine.pipeline.in_flight_bytes`)."""
    extra = in_flight_bytes(model, runtime, 1, 1, 1)
    return int(max(runtime.budget - memory.fixed, 0) / (memory.per_pixel + extra))


def run_model(model: Model, images: Sequence[np.ndarray], runtime: Runtime, *,
              masks: Sequence[np.ndarray] | None = None, batch: int | str = "auto",
              stage: str = "regions") -> list[np.ndarray]:
    """Run ``model`` on independent HxWxC float32 inputs (crops, faces), batching those of one shape.

    Outputs come back in input order as HxWxC float32 arrays, ``scale`` times larger. On out-of-memory the batch
    is halved and only the unfinished inputs are retried; one input alone that does not fit raises
    :class:`ResourceError`.
    """
    runtime.prepare(model)
    streams = Streams(runtime.device)
    results: list[np.ndarray | None] = [None] * len(images)
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, image in enumerate(images):
        groups.setdefault(image.shape, []).append(index)
    done = 0
    runtime.report(stage, 0, len(images))
    for shape, indices in groups.items():
        if batch == "auto":
            size = 1
            if runtime.device.type != "cpu":
                fit = measure_memory(model, runtime).max_pixels(runtime.budget)  # one batch at a time here
                size = max(1, min(_MAX_BATCH, len(indices), fit // (shape[0] * shape[1])))
        else:
            size = int(batch)
        pending = list(indices)
        while pending:
            runtime.check_cancelled()
            chunk = pending[:size]
            stack = stage_batch([images[i] for i in chunk], runtime, _as_float32)
            mask_stack = None if masks is None else stage_batch([masks[i][:, :, None] for i in chunk], runtime,
                                                                   _as_float32)
            try:
                out = launch(model, stack, runtime, streams, mask_stack).collect()
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
                if not is_out_of_memory(exc):
                    failure = precision_failure(exc, model, runtime)
                    if failure is not None:
                        raise failure from None
                    raise
                out = None  # handled below, once the exception (and the frames it holds) is gone
            if out is None:
                del stack, mask_stack
                free_memory(runtime.device)
                if size == 1:
                    raise ResourceError(
                        f"out of memory running {model.name} on one {shape[1]}x{shape[0]} input on "
                        f"{runtime.device} (budget {format_bytes(runtime.budget)})") from None
                size = max(1, size // 2)
                continue
            for i, result in zip(chunk, out.permute(0, 2, 3, 1).numpy()):
                results[i] = result
            pending = pending[len(chunk):]
            done += len(chunk)
            runtime.report(stage, done, len(images))
    return results  # type: ignore[return-value]


def _as_float32(array: np.ndarray) -> np.ndarray:
    return array.astype(np.float32, copy=False)

# ----------------------------------------------------------------------------------------------- tiled_apply


@dataclass
class TilePlan:
    """What tiled_apply decided: for logs, the demo and benchmarks."""

    tile: int
    pad: int
    batch: int
    tiles: int
    blend: str
    device: str
    precision: str
    scale: int
    backoffs: list[str] = field(default_factory=list)
    align: int = 1  # every window origin is a multiple of this (the network's lattice, see tile_period)
    note: str | None = None  # what a user should know about the result (a non-local network's tiles)

    def describe(self) -> str:
        text = (f"{self.tiles} tile(s) of {self.tile}px + {self.pad}px context, batch {self.batch}, "
                f"{self.blend} blend, {self.device} {self.precision}")
        return text if self.note is None else f"{text}; note: {self.note}"


def _as_image(image: Any) -> tuple[Any, str]:
    """Validate the image argument; returns it with its kind: 'numpy' (HxWxC), 'tensor' (NCHW) or 'source' (a
    region reader: ``shape`` (H, W, C), ``dtype`` and ``read(y0, y1, x0, x1)``, such as a lazy TIFF reader)."""
    if isinstance(image, torch.Tensor):
        if image.ndim != 4:
            raise OptionError(f"a tensor image must be NCHW, got shape {tuple(image.shape)}")
        return image, "tensor"
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = image[:, :, None]
        if image.ndim != 3:
            raise OptionError(f"a numpy image must be HxW or HxWxC, got shape {image.shape}")
        if image.dtype not in (np.uint8, np.uint16, np.float32):
            raise OptionError(f"unsupported image dtype {image.dtype} (use uint8, uint16 or float32)")
        return ArraySource(image), "numpy"
    if callable(getattr(image, "read", None)) and len(getattr(image, "shape", ())) == 3:
        return image, "source"
    raise OptionError(f"image must be a numpy array, a torch tensor or a region reader, got {type(image).__name__}")


@dataclass(frozen=True)
class Tiled:
    """What :func:`apply_tiles` returns: the merged output (what the canvas returns) and the plan it ran."""

    output: Any
    plan: TilePlan


def tiled_apply(model: Any, image: Any, **options: Any) -> Any:
    """Apply ``model`` to ``image`` tile by tile, in bounded memory, and return the merged result.

    The same pixels as the untiled network for local networks (with ``tile_pad`` at least its receptive field).
    Options as :func:`apply_tiles`, which also returns the tile plan.
    """
    return apply_tiles(model, image, **options).output


def apply_tiles(model: Any, image: Any, *, tile: int | str = "auto", tile_pad: int | str = "auto",
                tile_batch: int | str = "auto", blend: str = "auto", device: str | torch.device | None = None,
                precision: str | None = None, max_memory: int | str | None = None,
                progress: ProgressCallback | None = None, cancel: threading.Event | None = None,
                out: Any = None, runtime: Runtime | None = None) -> Tiled:
    """Apply ``model`` to ``image`` tile by tile; return the merged output and the :class:`TilePlan` used.

    ``model``: a tessera :class:`Model`, a spandrel descriptor, or any module/callable mapping NCHW float [0,1] to
    NCHW float [0,1] at an integer scale (inferred). ``image``: numpy HxWxC (uint8, uint16, float32), an NCHW
    tensor (the result has the same kind and dtype), or a region reader (``shape``, ``dtype``, ``read``: a
    lazy TIFF reader reads only each window). ``tile``/``tile_pad``/``tile_batch``: ints or "auto" (largest tile
    that fits the budget; measured receptive field; as many as fit), the names of the option schema.
    ``blend``: "crop" (exact for local networks), "feather" (also a raised-cosine blend over the inner
    overlap) or "auto" (crop for local networks, feather for the others, see :func:`measure_reach`).
    ``out``: where the result goes: None (a new array), a preallocated array (e.g. a memory map), or
    a canvas (``plan`` and ``consume``, such as :class:`tessera.image.regions.TiffCanvas`, which writes a
    tiled BigTIFF tile by tile: then nothing of image size is held).
    """
    from ..models.loader import as_model

    model = as_model(model)
    if blend not in ("auto", "crop", "feather"):
        raise OptionError(f"unknown blend {blend!r} (choose from auto, crop, feather)")
    if runtime is None:
        runtime = Runtime.create(device, precision, max_memory, model=model, progress=progress, cancel=cancel)
    source, kind = _as_image(image)
    if kind == "tensor":
        return _apply_tensor(model, source, tile=tile, tile_pad=tile_pad, tile_batch=tile_batch, blend=blend,
                             runtime=runtime)
    runtime.prepare(model)
    if not model.scale:
        model = infer_scale(model, runtime)
    height, width, channels = source.shape
    if channels != model.input_channels:
        raise OptionError(f"model {model.name} takes {model.input_channels} channels, the image has {channels}")
    if tile_pad == "auto":
        reach = measure_reach(model, runtime)
        local = reach.local
        context = reach.pad if local else min(reach.pad, largest_window(model, runtime) // 4)  # a practical pad
    else:  # the caller's pad: nothing is probed
        context, local = int(tile_pad), known_locality(model)
        reach = Reach(context, local, None if local else non_local_reason(model))
    if context < 0:
        raise OptionError(f"tile pad must be >= 0, got {tile_pad}")
    if blend == "auto":  # feather where no pad is exact, unless the canvas writes block by block
        blend = "crop" if local or callable(getattr(out, "consume", None)) else "feather"
    if tile == "auto":
        core, auto_batch = choose_tile(model, runtime, height, width, context, local=local)
    else:
        core, auto_batch = int(tile), 1
        if core < 1:
            raise OptionError(f"tile must be a positive number of pixels or 'auto', got {tile}")
    size = auto_batch if tile_batch == "auto" else int(tile_batch)
    if size < 1:
        raise OptionError(f"tile batch must be >= 1 or 'auto', got {tile_batch}")
    scale = model.scale
    canvas = _canvas(out, (height * scale, width * scale, model.output_channels), source.dtype, blend)
    align = tile_period(model)
    pad_w, pad_h = model.size_requirements.get_padding(width, height)
    extent = (height + pad_h, width + pad_w)
    if pad_w or pad_h:  # padded once as the untiled call pads it: border windows read the same pixels
        source = PaddedSource(source, *extent)
    planned = canvas.plan(height, width, core, context, align=align, feather=blend == "feather", extent=extent)
    tiles = [t.with_weights(scale) for t in planned]
    info = TilePlan(core, context, size, len(tiles), blend, str(runtime.device), runtime.precision, scale,
                    align=align)
    if not local and len(tiles) > 1:
        info.note = (f"{model.name} is not local ({reach.note or 'measured'}): its {len(tiles)} tiles are "
                     f"blended and differ from one untiled run; more memory (max_memory) means fewer tiles")
    output = canvas.consume(_run_tiles(model, source, tiles, runtime, info, size), scale)
    return Tiled(output, info)


def _canvas(out: Any, shape: tuple[int, int, int], dtype: np.dtype, blend: str) -> Any:
    """The canvas ``out`` names: itself when it is one, else an in-memory canvas over a new or given array."""
    if callable(getattr(out, "consume", None)):
        return out
    if out is None:
        out = np.empty(shape, dtype=dtype)
    elif tuple(out.shape) != shape:
        raise OptionError(f"output array has shape {tuple(out.shape)}, expected {shape}")
    return Canvas(out, feather=blend == "feather", convert=lambda a: from_float(a, dtype))


def _run_tiles(model: Model, source: Any, tiles: list[Tile], runtime: Runtime, info: TilePlan,
               batch: int) -> Iterator[tuple[Tile, np.ndarray]]:
    """Run the tile queue in batches, yielding each ``(tile, result)`` for the canvas to merge; back off on
    out-of-memory without redoing finished tiles.

    Pipelined (:mod:`tessera.engine.pipeline`): while batch *i* runs, a loader thread reads and stages batch
    *i + 1*; on a GPU the results of batch *i - 1* are merged meanwhile and the copies in and out overlap the
    forward (on the CPU each batch is merged as soon as it has run). A source is read on the loader thread only,
    one window at a time.
    """
    height, width = source.shape[:2]
    streams = Streams(runtime.device)

    def staged(chunk: list[Tile]) -> tuple[list[Tile], torch.Tensor]:
        windows = [source.read(t.y.start, t.y.stop, t.x.start, t.x.stop) for t in chunk]
        return chunk, stage_batch(windows, runtime, to_float)

    pending = list(tiles)  # not yet launched
    in_flight: tuple[list[Tile], Launched] | None = None
    done = 0

    def merged(chunk: list[Tile], launched: Launched) -> Iterator[tuple[Tile, np.ndarray]]:
        nonlocal done
        yield from zip(chunk, launched.collect().permute(0, 2, 3, 1).numpy())
        done += len(chunk)
        runtime.report("tiles", done, done + len(pending) + (len(in_flight[0]) if in_flight else 0))

    runtime.report("tiles", 0, len(pending))
    with loader(runtime.pipelined) as pool, tuned_for_same_shapes(runtime.device, tiles):
        queued = pool.submit(staged, _leading_run(pending, batch)) if pending else None
        while queued is not None:
            runtime.check_cancelled()
            chunk, host = queued.result()
            rest = pending[len(chunk):]
            queued = pool.submit(staged, _leading_run(rest, batch)) if rest else None
            try:
                launched = launch(model, host, runtime, streams)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
                if not is_out_of_memory(exc):
                    failure = precision_failure(exc, model, runtime)
                    if failure is not None:
                        raise failure from None
                    raise
                launched = None  # handled below, once the exception (and the frames it holds) is gone
            del host
            if launched is None:
                if queued is not None and not queued.cancel():
                    queued.exception()  # let the staging of the next batch end: it is planned again
                if in_flight is not None:  # what was launched before is kept
                    previous, in_flight = in_flight, None
                    yield from merged(*previous)
                free_memory(runtime.device)
                pending = _back_off(model, pending, chunk, runtime, info, height, width)
                batch = info.batch
                queued = pool.submit(staged, _leading_run(pending, batch))
                continue
            pending = rest
            previous, in_flight = in_flight, (chunk, launched)
            if previous is not None:  # merged on the host while the batch just launched runs on the device
                yield from merged(*previous)
            if not (streams.cuda and runtime.pipelined):  # the forward has run already: nothing to overlap with
                current, in_flight = in_flight, None
                yield from merged(*current)
        if in_flight is not None:
            current, in_flight = in_flight, None
            yield from merged(*current)


def _leading_run(pending: list[Tile], batch: int) -> list[Tile]:
    """The next batch: up to ``batch`` tiles from the front of the queue, all of the first one's window shape.

    Only a contiguous run: the queue is then consumed from the front, each tile exactly once and in order, which
    a tiled-file canvas relies on (it writes blocks in file order). Block grids have windows of several shapes
    (smaller at the borders), so same-shape tiles further on are left for a later batch.
    """
    shape = pending[0].window_shape
    run = 1
    while run < min(batch, len(pending)) and pending[run].window_shape == shape:
        run += 1
    return pending[:run]


def _back_off(model: Model, pending: list[Tile], failed: list[Tile], runtime: Runtime, info: TilePlan,
              height: int, width: int) -> list[Tile]:
    """After an out-of-memory error: halve the batch, or at batch 1 halve the tile and re-plan what is left."""
    if info.batch > 1:
        info.batch = max(1, info.batch // 2)
        info.backoffs.append(f"batch -> {info.batch}")
        return pending
    align = info.align
    smaller = max(align, (info.tile // 2) // align * align)
    if smaller < _MIN_TILE or smaller >= info.tile:
        raise ResourceError(
            f"out of memory running {model.name} on {runtime.device} even with a {info.tile}px tile and "
            f"batch 1 (budget {format_bytes(runtime.budget)}); free memory or lower --max-memory")
    info.tile = smaller
    info.backoffs.append(f"tile -> {smaller}")
    replanned: list[Tile] = []
    for t in pending:
        replanned.extend(split_tile(t, height, width, smaller, info.pad, align=align, scale=info.scale))
    return replanned


def _apply_tensor(model: Model, image: torch.Tensor, **options: Any) -> Tiled:
    """NCHW tensors: each image of the batch goes through the numpy path; the result keeps device and dtype."""
    outputs, plan = [], None
    for item in image:
        hwc = item.detach().permute(1, 2, 0).float().cpu().numpy()
        done = apply_tiles(model, hwc, **options)
        outputs.append(torch.from_numpy(done.output).permute(2, 0, 1))
        plan = done.plan
    return Tiled(torch.stack(outputs).to(image.device, image.dtype), plan)
