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
import torch.nn.functional as F

from ..errors import OptionError, ResourceError
from ..image.pixels import from_float, to_float
from ..models.descriptor import Model
from ..options import format_bytes
from ..progress import ProgressCallback
from ..tiling import ArraySource, Canvas, Tile, split_tile
from .probes import infer_scale, measure_context, measure_memory
from .runtime import Runtime, free_memory, is_out_of_memory

# On the CPU a small window keeps the feature maps in cache: bench/tiling.py measured a 128 px tile fastest for
# Compact x4 (window 150 px, padding overhead 1.37) and larger ones up to 2x slower. So tiles grow only until
# the padding overhead (T + 2p)^2 / T^2 falls under 1.4, from at least 128 px.
_CPU_TILE_OVERHEAD = 1.40
_CPU_MIN_TILE = 128
_MIN_TILE = 16
_MAX_BATCH = 16


def choose_tile(model: Model, runtime: Runtime, height: int, width: int, pad: int) -> tuple[int, int]:
    """The tile (core size, input pixels) and batch for an image, from the measured memory model.

    On a GPU: the largest tile whose window fits the budget, evened out over the image, then as many tiles
    per batch as fit. On the CPU the same, but no larger than needed to bring the padding overhead
    ``(T + 2p)^2 / T^2`` under 1.4 (from 128 px): beyond that, larger windows fall out of cache and run slower.
    """
    memory = measure_memory(model, runtime)
    align = model.size_requirements.multiple_of
    window = int(math.isqrt(memory.max_pixels(runtime.budget)))
    window -= window % align
    tile = window - 2 * pad
    if tile < max(_MIN_TILE, align):
        raise ResourceError(
            f"memory budget {format_bytes(runtime.budget)} is too small for {model.name}: a "
            f"{_MIN_TILE}px tile with {pad}px context needs "
            f"{format_bytes(memory.bytes_for(_MIN_TILE + 2 * pad, _MIN_TILE + 2 * pad))}")
    if runtime.device.type == "cpu":
        efficient = math.ceil(2 * pad / (math.sqrt(_CPU_TILE_OVERHEAD) - 1))
        tile = min(tile, max(_CPU_MIN_TILE, efficient))
    longest = max(height, width)
    if tile >= longest:
        tile = longest
    else:  # even out: the same number of tiles, each as small as that count allows
        count = math.ceil(longest / tile)
        tile = -(-math.ceil(longest / count) // align) * align
    batch = 1
    if runtime.device.type != "cpu":
        side = min(tile + 2 * pad, height), min(tile + 2 * pad, width)
        batch = max(1, min(_MAX_BATCH, memory.max_pixels(runtime.budget, 1) // max(side[0] * side[1], 1)))
    return tile, batch


def _forward(model: Model, batch: np.ndarray, runtime: Runtime, masks: np.ndarray | None = None) -> torch.Tensor:
    """Run one NHWC float32 batch through the model; returns NCHW float32 on the host."""
    req = model.size_requirements
    n, h, w, _ = batch.shape
    x = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))
    m = None if masks is None else torch.from_numpy(np.ascontiguousarray(masks[:, None]))
    pad_w, pad_h = req.get_padding(w, h)
    if pad_w or pad_h:
        x = _pad(x, pad_w, pad_h)
        m = None if m is None else _pad(m, pad_w, pad_h)
    if runtime.device.type == "cuda":
        x = x.pin_memory()
    x = x.to(runtime.device, runtime.dtype, non_blocking=True)
    if m is not None:
        m = m.to(runtime.device, runtime.dtype, non_blocking=True)
    with torch.inference_mode():
        y = model(x, m)
    y = y[..., : h * model.scale, : w * model.scale]
    return y.float().cpu()


def _pad(t: torch.Tensor, pad_w: int, pad_h: int) -> torch.Tensor:
    """Pad right/bottom: reflect as far as the image allows, then replicate (as spandrel does)."""
    rw, rh = min(pad_w, t.shape[-1] - 1), min(pad_h, t.shape[-2] - 1)
    t = F.pad(t, (0, rw, 0, rh), mode="reflect")
    if pad_w - rw or pad_h - rh:
        t = F.pad(t, (0, pad_w - rw, 0, pad_h - rh), mode="replicate")
    return t


def run_model(model: Model, images: Sequence[np.ndarray], runtime: Runtime, *,
              masks: Sequence[np.ndarray] | None = None, batch: int | str = "auto",
              stage: str = "regions") -> list[np.ndarray]:
    """Run ``model`` on independent HxWxC float32 inputs (crops, faces), batching those of one shape.

    Outputs come back in input order as HxWxC float32 arrays, ``scale`` times larger. On out-of-memory the batch
    is halved and only the unfinished inputs are retried; one input alone that does not fit raises
    :class:`ResourceError`.
    """
    runtime.prepare(model)
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
                size = max(1, min(_MAX_BATCH, len(indices),
                                  measure_memory(model, runtime).max_pixels(runtime.budget) // (shape[0] * shape[1])))
        else:
            size = int(batch)
        pending = list(indices)
        while pending:
            runtime.check_cancelled()
            chunk = pending[:size]
            stack = np.stack([images[i] for i in chunk]).astype(np.float32, copy=False)
            mask_stack = None if masks is None else np.stack([masks[i] for i in chunk]).astype(np.float32)
            try:
                out = _forward(model, stack, runtime, mask_stack)
            except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
                if not is_out_of_memory(exc):
                    raise
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

    def describe(self) -> str:
        return (f"{self.tiles} tile(s) of {self.tile}px + {self.pad}px context, batch {self.batch}, "
                f"{self.blend} blend, {self.device} {self.precision}")


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
                tile_batch: int | str = "auto", blend: str = "crop", device: str | torch.device | None = None,
                precision: str | None = None, max_memory: int | str | None = None,
                progress: ProgressCallback | None = None, cancel: threading.Event | None = None,
                out: Any = None, runtime: Runtime | None = None) -> Tiled:
    """Apply ``model`` to ``image`` tile by tile; return the merged output and the :class:`TilePlan` used.

    ``model``: a tessera :class:`Model`, a spandrel descriptor, or any module/callable mapping NCHW float [0,1] to
    NCHW float [0,1] at an integer scale (inferred). ``image``: numpy HxWxC (uint8, uint16, float32), an NCHW
    tensor (the result has the same kind and dtype), or a region reader (``shape``, ``dtype``, ``read``: a
    lazy TIFF reader reads only each window). ``tile``/``tile_pad``/``tile_batch``: ints or "auto" (largest tile
    that fits the budget; measured receptive field; as many as fit), the names of the option schema.
    ``blend``: "crop" (exact for local networks) or "feather" (also a raised-cosine blend over the inner
    overlap). ``out``: where the result goes: None (a new array), a preallocated array (e.g. a memory map), or
    a canvas (``plan`` and ``consume``, such as :class:`tessera.image.regions.TiffCanvas`, which writes a
    tiled BigTIFF tile by tile: then nothing of image size is held).
    """
    from ..models.loader import as_model

    model = as_model(model)
    if blend not in ("crop", "feather"):
        raise OptionError(f"unknown blend {blend!r} (choose from crop, feather)")
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
    context = measure_context(model, runtime) if tile_pad == "auto" else int(tile_pad)
    if context < 0:
        raise OptionError(f"tile pad must be >= 0, got {tile_pad}")
    if tile == "auto":
        core, auto_batch = choose_tile(model, runtime, height, width, context)
    else:
        core, auto_batch = int(tile), 1
        if core < 1:
            raise OptionError(f"tile must be a positive number of pixels or 'auto', got {tile}")
    size = auto_batch if tile_batch == "auto" else int(tile_batch)
    if size < 1:
        raise OptionError(f"tile batch must be >= 1 or 'auto', got {tile_batch}")
    scale = model.scale
    canvas = _canvas(out, (height * scale, width * scale, model.output_channels), source.dtype, blend)
    align = model.size_requirements.multiple_of
    planned = canvas.plan(height, width, core, context, align=align, feather=blend == "feather")
    tiles = [t.with_weights(scale) for t in planned]
    info = TilePlan(core, context, size, len(tiles), blend, str(runtime.device), runtime.precision, scale)
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
    """Run the tile queue one batch at a time, yielding each ``(tile, result)`` as soon as it is back (the
    canvas merges it at once); back off on out-of-memory without redoing finished tiles."""
    height, width = source.shape[:2]
    pending = list(tiles)
    done = 0
    runtime.report("tiles", 0, len(pending))
    while pending:
        runtime.check_cancelled()
        chunk = _leading_run(pending, batch)
        stack = np.stack([to_float(source.read(t.y.start, t.y.stop, t.x.start, t.x.stop)) for t in chunk])
        try:
            result = _forward(model, stack, runtime)
        except Exception as exc:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
            if not is_out_of_memory(exc):
                raise
            del stack
            free_memory(runtime.device)
            pending = _back_off(model, pending, chunk, runtime, info, height, width)
            batch = info.batch
            continue
        del stack
        yield from zip(chunk, result.permute(0, 2, 3, 1).numpy())
        pending = pending[len(chunk):]
        done += len(chunk)
        runtime.report("tiles", done, done + len(pending))


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
    align = model.size_requirements.multiple_of
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
