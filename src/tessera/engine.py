"""The engine: device, precision, memory budget, automatic tile size, batching, out-of-memory back-off, progress.

Every task runs its network through here. :func:`tiled_apply` cuts an image into a grid (``tiling.py``), runs the
windows in batches of one shape on the device, and merges each result into a host canvas as soon as it is back:
the device only ever holds one batch. :func:`run_model` does the same for a list of independent regions
(inpainting crops, aligned faces). Both back off on out-of-memory (smaller batch, then smaller tiles) without
redoing finished work, and fail with :class:`ResourceError` rather than return a partial image.
"""
from __future__ import annotations

import ctypes
import gc
import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .errors import CancelledError, OptionError, ResourceError
from .image import from_float, to_float
from .models.descriptor import PRECISION_DTYPES, Model
from .options import format_bytes
from .progress import ProgressCallback, ProgressEvent
from .receptive import auto_context
from .tiling import Canvas, Tile, plan_grid, split_tile

# ----------------------------------------------------------------------------------------------- progress


# ----------------------------------------------------------------------------------------------- runtime

_CPU_DEFAULT_BUDGET_FRACTION = 0.25  # of available host memory, when no --max-memory is given
_GPU_DEFAULT_BUDGET_FRACTION = 0.85  # of free device memory


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto``/None -> cuda, then mps, then cpu; anything else is checked to exist."""
    name = str(device or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise OptionError(f"unknown device {device!r} (choose from auto, cpu, cuda, cuda:N, mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise OptionError(f"device {device!r} requested but CUDA is not available here")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise OptionError(f"device {device!r} does not exist ({torch.cuda.device_count()} CUDA devices)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise OptionError(f"device {device!r} requested but MPS is not available here")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise OptionError(f"unsupported device {device!r} (choose from auto, cpu, cuda, mps)")
    return dev


def resolve_precision(precision: str | None, device: torch.device, model: Model | None) -> str:
    """``auto`` -> bf16/fp16 on a GPU where the model supports it, fp32 on the CPU; explicit values are checked."""
    name = str(precision or "auto").lower()
    if name == "auto":
        if device.type == "cpu" or model is None:
            return "fp32"
        if device.type == "cuda" and model.supports_bfloat16 and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp16" if model.supports_half else "fp32"
    if name not in PRECISION_DTYPES:
        raise OptionError(f"unknown precision {precision!r} (choose from auto, fp32, fp16, bf16)")
    if model is not None and name not in model.precisions:
        raise OptionError(f"model {model.name} does not support {name} (supports {', '.join(model.precisions)})")
    return name


def available_host_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def default_budget(device: torch.device) -> int:
    """Bytes the engine may use when no ``max_memory`` is given: most of the free device memory on a GPU,
    a quarter of the available host memory on the CPU."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * _GPU_DEFAULT_BUDGET_FRACTION)
    if device.type == "mps":
        recommended = getattr(torch.mps, "recommended_max_memory", lambda: available_host_memory())()
        return int((recommended - torch.mps.driver_allocated_memory()) * _GPU_DEFAULT_BUDGET_FRACTION)
    return int(available_host_memory() * _CPU_DEFAULT_BUDGET_FRACTION)


@dataclass
class Runtime:
    """Where and how a job runs; created once per job and passed down (no per-call state on models)."""

    device: torch.device
    precision: str = "fp32"
    budget: int = 1 << 30
    progress: ProgressCallback | None = None
    cancel: threading.Event | None = None
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def create(cls, device: str | torch.device | None = "auto", precision: str | None = "auto",
               max_memory: int | str | None = None, *, model: Model | None = None,
               progress: ProgressCallback | None = None, cancel: threading.Event | None = None) -> "Runtime":
        from .options import parse_size

        dev = resolve_device(device)
        if model is not None and not model.is_module and str(device or "auto").lower() == "auto":
            dev = torch.device("cpu")  # weight-free methods compute on the host: no round trip to a GPU
        try:
            budget = parse_size(max_memory) if max_memory is not None else default_budget(dev)
        except ValueError as exc:
            raise OptionError(f"option max_memory: {exc}") from None
        return cls(dev, resolve_precision(precision, dev, model), int(budget), progress, cancel)

    @property
    def dtype(self) -> torch.dtype:
        return PRECISION_DTYPES[self.precision]

    def report(self, stage: str, done: int, total: int, message: str = "") -> None:
        """Send a progress event (with an ETA from the elapsed time) to the subscriber, if any."""
        if self.progress is None:
            return
        elapsed = time.monotonic() - self.started
        eta = elapsed / done * (total - done) if done else None
        self.progress(ProgressEvent(stage, done, total, elapsed, eta, message))

    def check_cancelled(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise CancelledError("cancelled")

    def prepare(self, model: Model) -> Model:
        """Move the model to this runtime's device and precision (in place)."""
        if model.is_module and (model.device != self.device or model.dtype != self.dtype):
            model.to(self.device, self.precision)
        return model

# ----------------------------------------------------------------------------------------------- out of memory


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA, MPS and CPU allocation failures, whatever exception class the backend used."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                              or "not enough memory" in text or "failed to allocate" in text)


def free_memory(device: torch.device) -> None:
    """Give cached blocks back after an out-of-memory error so the retry starts clean."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
    else:
        trim_host_heap()


def trim_host_heap() -> None:
    """Hand freed heap memory back to the OS (glibc keeps it per thread otherwise); a no-op elsewhere."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass

# ----------------------------------------------------------------------------------------------- measuring


class _HostPeak:
    """Peak resident memory of this process while the block runs, sampled every half millisecond."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm", "rb") as f:
                return int(f.read().split()[1]) * self._page
        except OSError:
            import psutil

            return psutil.Process().memory_info().rss

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(0.0005)

    def __enter__(self) -> "_HostPeak":
        trim_host_heap()
        self.base = self._rss()
        self.peak = self.base
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def used(self) -> int:
        return max(0, self.peak - self.base)


def _peak_bytes_of(fn: Callable[[], Any], device: torch.device) -> int:
    """Bytes a call needs at its peak on ``device`` beyond what was allocated before it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    if device.type == "mps":
        before = torch.mps.current_allocated_memory()
        result = fn()
        torch.mps.synchronize()
        used = torch.mps.current_allocated_memory() - before
        del result
        return max(used, 0) * 2  # MPS exposes no peak: assume intermediates as large as what stays
    with _HostPeak() as peak:
        fn()
    return peak.used


@dataclass(frozen=True)
class MemoryModel:
    """Peak bytes of one forward as ``fixed + per_pixel * batch * window pixels`` (fitted from two probes)."""

    fixed: float
    per_pixel: float

    def bytes_for(self, height: int, width: int, batch: int = 1) -> float:
        return self.fixed + self.per_pixel * batch * height * width

    def max_pixels(self, budget: int, batch: int = 1) -> int:
        return int(max(budget - self.fixed, 0) / max(self.per_pixel, 1e-9) / batch)


# Measurements are cached per network (not per Model wrapper), so wrapping the same module again, as
# ``tiled_apply(module, ...)`` does on every call, measures nothing twice.
_memory_cache: "weakref.WeakKeyDictionary[Any, dict[tuple[str, str, int], MemoryModel]]" = weakref.WeakKeyDictionary()
_context_cache: "weakref.WeakKeyDictionary[Any, int]" = weakref.WeakKeyDictionary()


def _cache_key(model: Model) -> Any:
    """The object measurements are cached under: the network itself where it can be weakly referenced."""
    try:
        weakref.ref(model.network)
        return model.network
    except TypeError:
        return model


def _valid_size(model: Model, size: int) -> int:
    req = model.size_requirements
    size = max(size, req.minimum)
    return -(-size // req.multiple_of) * req.multiple_of


def _probe_input(model: Model, size: int, runtime: Runtime, batch: int = 1,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    shape = (batch, model.input_channels, size, size)
    x = torch.rand(shape, generator=generator).to(runtime.device, runtime.dtype)
    mask = None
    if model.task == "inpaint":
        mask = torch.zeros((batch, 1, size, size))
        mask[..., size // 4: 3 * size // 4, size // 4: 3 * size // 4] = 1
        mask = mask.to(runtime.device, runtime.dtype)
    return x, mask


def measure_memory(model: Model, runtime: Runtime) -> MemoryModel:
    """Fit the peak memory of a forward from two small probes on the runtime's device (cached per model)."""
    key = (str(runtime.device), runtime.precision, model.scale)
    per_model = _memory_cache.setdefault(_cache_key(model), {})
    if key in per_model:
        return per_model[key]
    runtime.prepare(model)
    small = _valid_size(model, 64)
    large = _valid_size(model, 2 * small)
    readings = []
    with torch.inference_mode():
        for size in (small, small, large):  # the first run warms up allocators and kernels
            x, mask = _probe_input(model, size, runtime)
            readings.append((size * size, _peak_bytes_of(lambda x=x, mask=mask: model(x, mask), runtime.device)))
            del x, mask
    (p1, m1), (p2, m2) = readings[1], readings[2]
    per_pixel = max((m2 - m1) / (p2 - p1), m2 / p2 * 0.5, 1.0)
    fixed = max(m2 - per_pixel * p2, 0.0)
    result = MemoryModel(fixed, per_pixel)
    per_model[key] = result
    return result


def fits(model: Model, height: int, width: int, runtime: Runtime, batch: int = 1) -> bool:
    """Whether ``batch`` inputs of ``height`` x ``width`` fit the runtime's memory budget (measured, extrapolated)."""
    return measure_memory(model, runtime).bytes_for(height, width, batch) <= runtime.budget


def measure_context(model: Model, runtime: Runtime | None = None, *, largest_probe: int = 512) -> int:
    """The context (input pixels) a tile needs on each side for the network to give the untiled result.

    Known without measuring where it can be (:func:`tessera.receptive.auto_context`): declared by the model or
    its catalog entry, or counted for convolution-only architectures. Otherwise measured once per model from the
    gradient of a centre output block with respect to a random input: for a local network it is exactly zero
    beyond the receptive field, whose radius is returned (plus one pixel). Probes grow while the influence reaches
    their border, up to ``largest_probe`` px and only while a backward pass fits the memory budget (taken as
    three forward peaks); then the network is not local in practice (FFT, attention) and the radius holding all
    but 1e-4 of the influence is returned, and feathering is advised.
    """
    if model.context is not None:
        return model.context
    if _cache_key(model) in _context_cache:
        return _context_cache[_cache_key(model)]
    known = auto_context(model)
    if known is not None:
        _context_cache[_cache_key(model)] = known
        return known
    device = runtime.device if runtime else model.device
    dtype = torch.float32 if device.type == "cpu" else (runtime.dtype if runtime else model.dtype)
    generator = torch.Generator().manual_seed(0)
    size = _valid_size(model, 64)
    if runtime is not None:
        memory = measure_memory(model, runtime)
        while size > 16 and _GRADIENT_COST * memory.bytes_for(size, size) > runtime.budget:
            size = _valid_size(model, size // 2)
    radius = None
    while radius is None:
        influence = torch.zeros(size, size, dtype=torch.float64)
        for _ in range(2):  # two random inputs, so no path is dead in both by chance
            x = torch.rand((1, model.input_channels, size, size), generator=generator).to(device, dtype)
            x.requires_grad_(True)
            mask = None
            if model.task == "inpaint":
                mask = torch.zeros((1, 1, size, size), device=device, dtype=dtype)
                mask[..., : size // 4, : size // 4] = 1
            with torch.enable_grad():
                y = model(x, mask, clamp=False)
                c, s = size // 2, y.shape[-1] // size
                block = y[..., c * s:(c + 1) * s, c * s:(c + 1) * s]
                weights = torch.randn(block.shape, generator=generator).to(device, block.dtype)
                (grad,) = torch.autograd.grad((block * weights).sum(), x)
            influence += grad.detach().abs().sum(dim=(0, 1)).double().cpu()
        rows, cols = torch.nonzero(influence > 0, as_tuple=True)
        if len(rows) == 0:  # the output ignores the input (a constant network): no context needed
            radius = 0
            break
        c = size // 2
        reach = int(max((rows - c).abs().max(), (cols - c).abs().max()))
        if reach < c - 1:
            radius = reach + 1
        elif size * 2 <= largest_probe and (runtime is None or _GRADIENT_COST * memory.bytes_for(
                2 * size, 2 * size) <= runtime.budget):
            size = _valid_size(model, size * 2)
        else:
            radius = _radius_of_mass(influence, 1e-4)
    _context_cache[_cache_key(model)] = radius
    return radius


_GRADIENT_COST = 3  # a forward with gradients, and its backward, as a multiple of an inference forward's peak


def _radius_of_mass(influence: torch.Tensor, tail: float) -> int:
    """Smallest Chebyshev radius around the centre holding all but ``tail`` of the total influence."""
    size = influence.shape[0]
    c = size // 2
    ys, xs = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    dist = torch.maximum((ys - c).abs(), (xs - c).abs())
    total = influence.sum()
    for r in range(size):
        if influence[dist <= r].sum() >= total * (1 - tail):
            return r + 1
    return c

# ----------------------------------------------------------------------------------------------- tile choice

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


def _batches(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield list(items[i:i + size])


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


def _as_hwc(image: Any) -> tuple[np.ndarray | torch.Tensor, str]:
    """Validate the image argument; returns it with its kind: 'numpy' (HxWxC) or 'tensor' (NCHW)."""
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
        return image, "numpy"
    raise OptionError(f"image must be a numpy array or a torch tensor, got {type(image).__name__}")


def infer_scale(model: Model, runtime: Runtime) -> int:
    """Scale of a network that does not declare one, from the output size of a small forward."""
    size = _valid_size(model, 16)
    x, mask = _probe_input(model, size, runtime)
    with torch.inference_mode():
        y = model(x, mask)
    if y.ndim != 4 or y.shape[-1] % size or y.shape[-2] % size or y.shape[-1] != y.shape[-2]:
        raise OptionError(f"model {model.name} maps {size}x{size} to {tuple(y.shape)}: not an integer scale of NCHW")
    model.scale = y.shape[-1] // size
    model.output_channels = y.shape[1]
    return model.scale


def tiled_apply(model: Any, image: Any, *, tile: int | str = "auto", pad: int | str = "auto",
                batch: int | str = "auto", blend: str = "crop", device: str | torch.device | None = None,
                precision: str | None = None, max_memory: int | str | None = None,
                progress: ProgressCallback | None = None, cancel: threading.Event | None = None,
                out: np.ndarray | None = None, runtime: Runtime | None = None,
                plan: list[TilePlan] | None = None) -> Any:
    """Apply ``model`` to ``image`` tile by tile, in bounded memory, and return the merged result.

    ``model``: a tessera :class:`Model`, a spandrel descriptor, or any module/callable mapping NCHW float [0,1] to
    NCHW float [0,1] at an integer scale (inferred). ``image``: numpy HxWxC (uint8, uint16, float32) or an NCHW
    tensor; the result has the same kind and dtype. ``tile``/``pad``/``batch``: ints or "auto" (largest tile that
    fits the budget; measured receptive field; as many as fit). ``blend``: "crop" (exact for local networks) or
    "feather" (also a raised-cosine blend over the inner overlap). ``out``: an optional preallocated output
    array (e.g. a memory map) for numpy images. ``plan``: a list that receives the :class:`TilePlan` used.
    """
    from .models.loader import as_model

    model = as_model(model)
    if blend not in ("crop", "feather"):
        raise OptionError(f"unknown blend {blend!r} (choose from crop, feather)")
    if runtime is None:
        runtime = Runtime.create(device, precision, max_memory, model=model, progress=progress, cancel=cancel)
    image, kind = _as_hwc(image)
    if kind == "tensor":
        return _tiled_apply_tensor(model, image, tile=tile, pad=pad, batch=batch, blend=blend, runtime=runtime,
                                   plan=plan)
    runtime.prepare(model)
    if not model.scale:
        infer_scale(model, runtime)
    height, width, channels = image.shape
    if channels != model.input_channels:
        raise OptionError(f"model {model.name} takes {model.input_channels} channels, the image has {channels}")
    context = measure_context(model, runtime) if pad == "auto" else int(pad)
    if context < 0:
        raise OptionError(f"tile pad must be >= 0, got {pad}")
    if tile == "auto":
        core, auto_batch = choose_tile(model, runtime, height, width, context)
    else:
        core, auto_batch = int(tile), 1
        if core < 1:
            raise OptionError(f"tile must be a positive number of pixels or 'auto', got {tile}")
    size = auto_batch if batch == "auto" else int(batch)
    if size < 1:
        raise OptionError(f"tile batch must be >= 1 or 'auto', got {batch}")
    scale = model.scale
    out_shape = (height * scale, width * scale, model.output_channels)
    if out is None:
        out = np.empty(out_shape, dtype=image.dtype)
    elif tuple(out.shape) != out_shape:
        raise OptionError(f"output array has shape {tuple(out.shape)}, expected {out_shape}")
    feather = blend == "feather"
    align = model.size_requirements.multiple_of
    tiles = [t.with_weights(scale) for t in plan_grid(height, width, core, context, align=align, feather=feather)]
    info = TilePlan(core, context, size, len(tiles), blend, str(runtime.device), runtime.precision, scale)
    if plan is not None:
        plan.append(info)
    canvas = Canvas(out, feather=feather, convert=lambda a: from_float(a, image.dtype))
    _run_tiles(model, image, tiles, canvas, runtime, info, size)
    return canvas.finish()


def _run_tiles(model: Model, image: np.ndarray, tiles: list[Tile], canvas: Canvas, runtime: Runtime,
               info: TilePlan, batch: int) -> None:
    """Run the tile queue: one batch at a time, merging each result at once; back off on out-of-memory."""
    height, width = image.shape[:2]
    pending = list(tiles)
    done = 0
    runtime.report("tiles", 0, len(pending))
    while pending:
        runtime.check_cancelled()
        shape = pending[0].window_shape
        chunk = [t for t in pending[:batch] if t.window_shape == shape]
        stack = np.stack([to_float(image[t.y.start:t.y.stop, t.x.start:t.x.stop]) for t in chunk])
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
        for t, r in zip(chunk, result.permute(0, 2, 3, 1).numpy()):
            canvas.add(t, r, info.scale)
        pending = pending[len(chunk):]
        done += len(chunk)
        runtime.report("tiles", done, done + len(pending))


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


def _tiled_apply_tensor(model: Model, image: torch.Tensor, **kwargs: Any) -> torch.Tensor:
    """NCHW tensors: each image of the batch goes through the numpy path; the result keeps device and dtype."""
    outputs = []
    for item in image:
        hwc = item.detach().permute(1, 2, 0).float().cpu().numpy()
        result = tiled_apply(model, hwc, **kwargs)
        outputs.append(torch.from_numpy(result).permute(2, 0, 1))
    return torch.stack(outputs).to(image.device, image.dtype)
