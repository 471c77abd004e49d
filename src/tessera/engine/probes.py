"""Measurements the engine makes once per network: peak memory of a forward, receptive field, output scale.

Each is cached per network (not per :class:`Model` wrapper), so wrapping the same module again, as
``tiled_apply(module, ...)`` does on every call, measures nothing twice.
"""
from __future__ import annotations

import math
import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..errors import OptionError
from ..models.descriptor import PRECISION_DTYPES, Model
from ..receptive import auto_context, non_local_reason, tile_period
from .runtime import Runtime, default_budget, probe_errors, trim_host_heap


class HostPeak:
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

    def __enter__(self) -> "HostPeak":
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
    with HostPeak() as peak:
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
_context_cache: "weakref.WeakKeyDictionary[Any, Reach]" = weakref.WeakKeyDictionary()


def _cache_key(model: Model) -> Any:
    """The object measurements are cached under: the network itself where it can be weakly referenced."""
    try:
        weakref.ref(model.network)
        return model.network
    except TypeError:
        return model


def valid_size(model: Model, size: int) -> int:
    req = model.size_requirements
    size = max(size, req.minimum)
    return -(-size // req.multiple_of) * req.multiple_of


def probe_input(model: Model, size: int, runtime: Runtime, batch: int = 1,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    shape = (batch, model.input_channels, size, size)
    x = torch.rand(shape, generator=generator).to(runtime.device, runtime.dtype)
    mask = None
    if model.takes_mask:
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
    small = valid_size(model, 64)
    large = valid_size(model, 2 * small)
    readings = []
    with torch.inference_mode(), probe_errors(model, runtime, "measuring the memory of a forward"):
        for size in (small, small, large):  # the first run warms up allocators and kernels
            x, mask = probe_input(model, size, runtime)
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


@dataclass(frozen=True)
class Reach:
    """How far a network looks: the context ``pad`` a tile needs on each side, and whether that makes tiles
    exact (``local``). A network that is not local (``note`` says why) gets the pad past which the centre of a
    probe changes by less than half a uint8 level: tiles are then feathered, and one window used where it fits."""

    pad: int
    local: bool = True
    note: str | None = None


def measure_context(model: Model, runtime: Runtime | None = None, *, largest_probe: int = 512) -> int:
    """The context (input pixels) a tile needs on each side: :func:`measure_reach`'s ``pad``."""
    return measure_reach(model, runtime, largest_probe=largest_probe).pad


def measure_reach(model: Model, runtime: Runtime | None = None, *, largest_probe: int = 512) -> Reach:
    """The context a tile needs and whether the network is local, known or measured once per network.

    Known without measuring where it can be: declared by the model or its catalog entry (``context``,
    ``local``), declared for the architecture or a module (:func:`tessera.receptive.non_local_reason`), or counted
    for convolution-only architectures (:func:`tessera.receptive.auto_context`). Otherwise measured with
    forwards only (any callable, no gradients): the centre of a random probe is compared with the same probe
    whose pixels beyond a radius are replaced. If nothing beyond the probe's border reaches the centre, the
    smallest such radius is the pad, exactly (a tile with one pixel less differs); else the probe grows (to
    ``largest_probe`` px, while a forward fits the memory budget and the probe's time stays under
    :data:`PROBE_SECONDS`), and past that the network is not local in practice: the radius beyond which the
    centre moves by under half a level.
    """
    key = _cache_key(model)
    if model.context is not None:
        return Reach(model.context, model.local is not False,
                     None if model.local is not False else non_local_reason(model))
    if key in _context_cache:
        return _context_cache[key]
    known = auto_context(model)
    if known is not None:
        reach = Reach(known)
    else:
        reach = _probe_reach(model, runtime, largest_probe)
        why = non_local_reason(model) if model.local is not True else None
        if why is not None or model.local is False:
            reach = Reach(reach.pad, False, why or reach.note or "declared not local")
    _context_cache[key] = reach
    return reach


def known_locality(model: Model) -> bool:
    """Whether ``model`` is local as far as is known without probing (measured before, declared, or its
    architecture's): what ``blend="auto"`` goes by when the caller gives the pad, so no probe runs for it."""
    if _cache_key(model) in _context_cache:
        return _context_cache[_cache_key(model)].local
    return model.local is not False and non_local_reason(model) is None


PROBE_SECONDS = 30.0  # a context probe stops growing once its next size would take longer than this
_PRACTICAL_LEVELS = 0.5  # a non-local network's pad keeps the centre of the probe within this many uint8 levels


def _probe_reach(model: Model, runtime: Runtime | None, largest_probe: int) -> Reach:
    """Measure the reach of ``model`` with forward probes (see :func:`measure_reach`)."""
    if runtime is None:  # the model where it is, in its own dtype, with the device's default budget
        precision = next((p for p, d in PRECISION_DTYPES.items() if d == model.dtype), "fp32")
        runtime = Runtime(model.device, precision, default_budget(model.device))
    memory = measure_memory(model, runtime)
    smallest = valid_size(model, 4 * tile_period(model))  # room for a block of the lattice and its surroundings
    size = max(valid_size(model, 64), smallest)
    while size > smallest and memory.bytes_for(size, size) > runtime.budget:
        size = max(valid_size(model, size // 2), smallest)
    started = time.monotonic()
    generator = torch.Generator().manual_seed(0)
    while True:
        with probe_errors(model, runtime, f"probing the context at {size}px"):
            probe = _Probe(model, size, generator)
            border = probe.border
            if probe.change(border) <= probe.exact:  # nothing beyond the probe reaches the centre: local
                return Reach(_smallest_radius(probe.change, border, probe.exact))  # the pad, exactly
            spent = time.monotonic() - started
            larger = valid_size(model, size * 2)
            forwards = 2 + math.ceil(math.log2(larger))  # the next size's own test and its radius search
            fits = memory.bytes_for(larger, larger) <= runtime.budget
            if larger > largest_probe or not fits or spent + probe.seconds * 4.5 * forwards > PROBE_SECONDS:
                radius = _smallest_radius(probe.cropped, border, _PRACTICAL_LEVELS / 255)
                return Reach(radius + 1, False, f"its output depends on pixels beyond a {size}px probe")
        size = larger


def _smallest_radius(change: Callable[[int], float], border: int, tolerance: float) -> int:
    """The smallest radius r <= ``border`` with ``change(r) <= tolerance``, or ``border`` when there is none
    (the change shrinks as r grows: a binary search)."""
    if change(border) > tolerance:
        return border
    low, high = 0, border  # change(high) <= tolerance holds; find the smallest such radius
    while low < high:
        middle = (low + high) // 2
        if change(middle) <= tolerance:
            high = middle
        else:
            low = middle + 1
    return low


def _photo_like(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """A random input with the structure of a photograph: smooth regions of different brightness and colour
    (so a part of it has other statistics than the whole, as in a photo) with fine grain on top."""
    coarse = torch.rand((*shape[:2], 6, 6), generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=shape[2:], mode="bicubic", align_corners=False)
    return (smooth + 0.1 * torch.rand(shape, generator=generator) - 0.05).clamp(0, 1)


class _Probe:
    """A photo-like ``size`` px input and the output over a centre block: one period of the network's lattice
    (a windowed network reaches farther from some positions of its window than from others), at least 8 px.
    :meth:`change` replaces the pixels farther than a radius from the block (Chebyshev) with another input and
    measures how the block's output moves: exactly zero beyond a local network's reach. :meth:`cropped` runs the
    network on a window reaching that radius around the block instead, as a tile would: what a non-local
    network's practical pad is chosen by."""

    def __init__(self, model: Model, size: int, generator: torch.Generator):
        self.model, self.size = model, size
        self.period = math.lcm(tile_period(model), model.size_requirements.multiple_of)
        self.block = -(-8 // self.period) * self.period
        self.top = max(0, (size - self.block) // 2 // self.period * self.period)
        self.border = min(self.top, size - self.top - self.block) - 1  # the largest radius inside the probe
        shape = (1, model.input_channels, size, size)
        self.x = _photo_like(shape, generator).to(model.device, model.dtype)
        self.other = _photo_like(shape, generator).to(model.device, model.dtype)
        self.mask = None
        if model.takes_mask:
            self.mask = torch.zeros((1, 1, size, size), device=model.device, dtype=model.dtype)
            self.mask[..., : size // 4, : size // 4] = 1
        steps = torch.arange(size)
        along = torch.maximum(self.top - steps, steps - (self.top + self.block - 1)).clamp(min=0)
        self.distance = torch.maximum(along[:, None], along[None, :]).to(model.device)
        # a centre whose inputs did not change comes out bit for bit the same in float32 on the CPU (influence
        # far out can be 1e-9 and still real); GPU kernels may sum in another order, half precisions round
        cpu = self.distance.device.type == "cpu"
        self.exact = (0.0 if cpu else 1e-6) if model.dtype == torch.float32 else 1e-3
        start = time.monotonic()
        self.base = self._centre(self.x)
        self.seconds = time.monotonic() - start

    def _centre(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """The output over the centre block for ``x``, a window of the probe starting at ``offset``."""
        mask = None if self.mask is None else self.mask[..., offset:offset + x.shape[-2], offset:offset + x.shape[-1]]
        with torch.inference_mode():
            y = self.model(x, mask, clamp=False)
        top, s = self.top - offset, y.shape[-1] // x.shape[-1]
        return y[..., top * s:(top + self.block) * s, top * s:(top + self.block) * s].float()

    def cropped(self, radius: int) -> float:
        """Largest difference of the block's output between the whole probe and a window reaching ``radius``
        pixels around the block (its origin on the network's lattice, its size one the network takes)."""
        start = max(0, (self.top - radius) // self.period * self.period)
        side = max(self.top + self.block + radius - start, self.model.size_requirements.minimum)
        stop = min(self.size, start + -(-side // self.period) * self.period)
        window = self.x[..., start:stop, start:stop]
        return float((self._centre(window, start) - self.base).abs().max())

    def change(self, radius: int) -> float:
        """Largest change of the centre output when every input pixel farther than ``radius`` is replaced."""
        x = torch.where(self.distance > radius, self.other, self.x)
        return float((self._centre(x) - self.base).abs().max())


def infer_scale(model: Model, runtime: Runtime) -> Model:
    """``model`` with the scale and output channels of a network that does not declare them, read from the output
    of a small forward."""
    size = valid_size(model, 16)
    x, mask = probe_input(model, size, runtime)
    with torch.inference_mode(), probe_errors(model, runtime, "reading the output scale"):
        y = model(x, mask)
    if y.ndim != 4 or y.shape[-1] % size or y.shape[-2] % size or y.shape[-1] != y.shape[-2]:
        raise OptionError(f"model {model.name} maps {size}x{size} to {tuple(y.shape)}: not an integer scale of NCHW")
    return replace(model, scale=y.shape[-1] // size, output_channels=y.shape[1])
