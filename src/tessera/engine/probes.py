"""Measurements the engine makes once per network: peak memory of a forward, receptive field, output scale.

Each is cached per network (not per :class:`Model` wrapper), so wrapping the same module again, as
``tiled_apply(module, ...)`` does on every call, measures nothing twice.
"""
from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from ..errors import OptionError
from ..models.descriptor import Model
from ..receptive import auto_context
from .runtime import Runtime, trim_host_heap


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
_context_cache: "weakref.WeakKeyDictionary[Any, int]" = weakref.WeakKeyDictionary()


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
    with torch.inference_mode():
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
    dtype = model.dtype  # the network's own (after the runtime prepared it): probes must match its weights
    generator = torch.Generator().manual_seed(0)
    size = valid_size(model, 64)
    if runtime is not None:
        memory = measure_memory(model, runtime)
        while size > 16 and _GRADIENT_COST * memory.bytes_for(size, size) > runtime.budget:
            size = valid_size(model, size // 2)
    radius = None
    while radius is None:
        influence = torch.zeros(size, size, dtype=torch.float64)
        for _ in range(2):  # two random inputs, so no path is dead in both by chance
            x = torch.rand((1, model.input_channels, size, size), generator=generator).to(device, dtype)
            x.requires_grad_(True)
            mask = None
            if model.takes_mask:
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
            size = valid_size(model, size * 2)
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


def infer_scale(model: Model, runtime: Runtime) -> Model:
    """``model`` with the scale and output channels of a network that does not declare them, read from the output
    of a small forward."""
    size = valid_size(model, 16)
    x, mask = probe_input(model, size, runtime)
    with torch.inference_mode():
        y = model(x, mask)
    if y.ndim != 4 or y.shape[-1] % size or y.shape[-2] % size or y.shape[-1] != y.shape[-2]:
        raise OptionError(f"model {model.name} maps {size}x{size} to {tuple(y.shape)}: not an integer scale of NCHW")
    return replace(model, scale=y.shape[-1] // size, output_channels=y.shape[1])
