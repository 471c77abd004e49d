"""The CPU tile size, measured: time one window per candidate tile size and keep the cheapest grid.

How a CPU's time per pixel changes with the window size depends on its caches, its core count and the network:
on one machine 128 px tiles are the fastest, on another 384 px tiles run 2.7x faster than 128 px ones (issue
#15). No fixed rule holds on every CPU, so :func:`fastest_cpu_tile` measures instead: the time of one window of
each candidate size (its forward and the merge of its kept part into a uint8 image; after a warm-up, the best
of two or more), times the number of windows that size needs over the image, is the estimated time of the
whole grid; the cheapest candidate wins.

Probing is bounded. Candidates are probed smallest first and:

- stop at the first whose grid is no faster than a smaller one's: past the size where the cache stops helping,
  a larger tile only saves context margin (``(tile + 2 * pad) ** 2 / tile ** 2``, a few per cent between the
  candidates offered) while the time per pixel stays or rises;
- stop before one whose probe is predicted (the last probe scaled by window pixels) to take a forward longer
  than :data:`_SLOW_FORWARD_S`, or to bring the probing past :data:`_PROBE_BUDGET_S` or past the estimated
  job at the best candidate so far (probing cannot save more than the job costs), whichever is less, unless
  all of it stays under :data:`_FREE_PROBE_S`;
- stop after a forward that took longer than :data:`_SLOW_FORWARD_S` (timed once: the warm-up); at worst the
  probing is then one forward of the smallest window, one window of the job's many.

An image of fewer than :data:`_FEW_TILES` windows of the smallest candidate is not probed: it is cheap whatever
the tile, and the fewest windows are taken (or the caller's fallback decides).

Timings are cached per network (weakly, as :mod:`.probes` caches its measurements), device, precision,
thread count (``torch.get_num_threads()``), window shape and kept part (the context, ``pad``), so other images
reuse the windows they share;
decisions are cached per image size, context and candidate list as well, so the same call never runs a forward
twice. The probes are random windows, not the image: a convolution's time does not depend on the pixels.
"""
from __future__ import annotations

import math
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import OptionError
from ..image.pixels import from_float
from ..models.descriptor import Model
from ..receptive import tile_period
from ..tiling import evened_tile, plan_axis
from .probes import _cache_key
from .runtime import Runtime

_SLOW_FORWARD_S = 2.0  # one forward slower than this: no repeat, no larger candidate
_PROBE_BUDGET_S = 5.0  # all probes of one decision together (warm-ups included)
_PROBE_JOB_FACTOR = 1.0  # ... and at most this times the estimated job, unless under _FREE_PROBE_S
_FREE_PROBE_S = 0.25  # (a small image may still compare its candidates)
_FEW_TILES = 4  # an image of fewer windows of the smallest candidate is not worth probing
_REPEATS = 2  # timed forwards per window after the warm-up, at least; the best is kept
_ONE_TIMING_S = 0.5  # ... but one only after a warm-up slower than this (a long forward varies little)
_MAX_REPEATS = 5  # ... more, up to this, while they add up to less than _MIN_TIMED_S (a busy machine's spikes)
_MIN_TIMED_S = 0.1
_CANDIDATE_TARGETS = (128, 256, 384, 512)  # beyond 512 px a tile saves only context margin, and takes seconds

# network -> {(device, precision, threads, channels_last, window height and width, kept rows and columns):
#             (best, warm-up seconds)}
_window_cache: "weakref.WeakKeyDictionary[Any, dict[tuple, tuple[float, float]]]" = weakref.WeakKeyDictionary()
# network -> {(device, precision, threads, height, width, pad, candidates): CpuTileChoice}
_choice_cache: "weakref.WeakKeyDictionary[Any, dict[tuple, CpuTileChoice]]" = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class CandidateCost:
    """One candidate tile: its (largest) window in input pixels, the windows over the image, their pixels in
    units of that window's (``load``: the window count, less where border windows are shorter) and the measured
    forward time of the window (None when it was not probed)."""

    tile: int
    window: tuple[int, int]
    windows: int
    load: float
    seconds: float | None

    @property
    def grid_seconds(self) -> float | None:
        """Estimated forward time of the whole grid: one window's time times the load."""
        return None if self.seconds is None else self.seconds * self.load


@dataclass(frozen=True)
class CpuTileChoice:
    """What :func:`measure_cpu_tiles` decided: the tile, every candidate's cost, the seconds spent probing
    (0 when cached) and why probing stopped or was skipped ('' when every candidate was probed)."""

    tile: int
    candidates: tuple[CandidateCost, ...]
    probe_seconds: float
    note: str = ""

    @property
    def timed(self) -> int:
        """How many candidates were timed (0 when the image was too small to probe)."""
        return sum(c.seconds is not None for c in self.candidates)


def cpu_candidates(longest: int, fewest_tile: int, align: int = 1) -> list[int]:
    """At most four tile sizes to probe for an image whose longest side is ``longest`` px, when the largest tile
    that fits the memory budget is ``fewest_tile`` px (already evened over the image).

    Each target of :data:`_CANDIDATE_TARGETS` (about 128, 256, 384 and 512 px: windows of about 1.7-4x the
    pixels of the one before) is evened over the image: the smallest aligned tile covering ``longest`` in as
    many tiles as the target needs (on 1024 px: 128, 256, 342, 512). Targets above ``fewest_tile`` are
    replaced by it; duplicates are dropped. Smaller tiles are not offered: their context margin and per-window
    overhead make them slower on every CPU measured (bench/cpu_engine.py, bench/cpu_tiles.py). Larger ones are
    not either: they save only context margin (``2 * pad / tile``), and a window that size takes seconds to
    probe.
    """
    if longest < 1 or fewest_tile < 1 or align < 1:
        raise OptionError(f"cpu_candidates needs positive sizes (longest={longest}, fewest_tile={fewest_tile}, "
                          f"align={align})")
    largest = min(fewest_tile, longest)
    tiles: list[int] = []
    for target in _CANDIDATE_TARGETS:
        tile = largest if target >= largest else min(largest, evened_tile(longest, math.ceil(longest / target), align))
        if tile not in tiles:
            tiles.append(tile)
        if tile >= largest:
            break
    return sorted(tiles)


def fastest_cpu_tile(model: Model, runtime: Runtime, height: int, width: int, pad: int,
                     candidates: Sequence[int], *,
                     fallback: Callable[[list[int]], int] | None = None) -> int:
    """The candidate tile (core px) whose grid over a ``height`` x ``width`` image with ``pad`` px context runs
    fastest here, measured (see the module docstring; details in :func:`measure_cpu_tiles`).

    ``fallback`` (given the sorted candidates, returns one) decides where the measurement cannot: fewer than
    two candidates timed (an image too small to probe, a first window slower than :data:`_SLOW_FORWARD_S`).
    Without one, the fewest windows are taken for a small image and the one timed candidate otherwise.
    """
    choice = measure_cpu_tiles(model, runtime, height, width, pad, candidates)
    if fallback is not None and choice.timed < 2:
        return fallback([c.tile for c in choice.candidates])
    return choice.tile


def measure_cpu_tiles(model: Model, runtime: Runtime, height: int, width: int, pad: int,
                      candidates: Sequence[int], *, budget_s: float = _PROBE_BUDGET_S) -> CpuTileChoice:
    """Probe the candidates (bounded, cached) and return the choice with every candidate's cost."""
    tiles = sorted({int(t) for t in candidates})
    if not tiles or tiles[0] < 1 or height < 1 or width < 1 or pad < 0:
        raise OptionError(f"measure_cpu_tiles needs candidates >= 1, a non-empty image and pad >= 0 "
                          f"(candidates={list(candidates)}, image {width}x{height}, pad {pad})")
    threads = torch.get_num_threads()
    decision_key = (str(runtime.device), runtime.precision, threads, height, width, pad, tuple(tiles))
    decisions = _choice_cache.setdefault(_cache_key(model), {})
    if decision_key in decisions:
        cached = decisions[decision_key]
        return CpuTileChoice(cached.tile, cached.candidates, 0.0, cached.note)
    align = tile_period(model)
    grids = [_grid(tile, pad, height, width, align) for tile in tiles]
    choice = _probe(model, runtime, tiles, grids, threads, budget_s, height, width, pad)
    decisions[decision_key] = choice
    return choice


def _grid(tile: int, pad: int, height: int, width: int, align: int) -> tuple[tuple[int, int], int, float]:
    """The windows of a ``tile`` px grid as :func:`tessera.tiling.plan_grid` plans them: the largest window's
    shape, the number of windows, and their load: their pixels in units of the largest one's (windows against
    an aligned border may be shorter)."""
    window = -(-(tile + 2 * pad) // align) * align
    rows = [s.size for s in plan_axis(height, window, pad, align=align)]
    cols = [s.size for s in plan_axis(width, window, pad, align=align)]
    shape = (max(rows), max(cols))
    return shape, len(rows) * len(cols), sum(rows) * sum(cols) / (shape[0] * shape[1])


def _probe(model: Model, runtime: Runtime, tiles: list[int], grids: list[tuple[tuple[int, int], int, float]],
           threads: int, budget_s: float, height: int, width: int, pad: int) -> CpuTileChoice:
    """Time the windows smallest first, within the bounds; the fewest windows when probing cannot pay."""
    fewest = min(range(len(tiles)), key=lambda i: (grids[i][1], tiles[i]))
    if len(tiles) == 1 or grids[0][1] < _FEW_TILES:
        note = "one candidate" if len(tiles) == 1 else f"fewer than {_FEW_TILES} windows: not probed"
        costs = tuple(CandidateCost(t, *g, None) for t, g in zip(tiles, grids))
        return CpuTileChoice(tiles[fewest], costs, 0.0, note)
    runtime.prepare(model)
    timings = _window_cache.setdefault(_cache_key(model), {})
    seconds: list[float | None] = [None] * len(tiles)
    spent, note = 0.0, ""
    last_pixels = last_forward = last_warm_up = 0.0
    for i, ((win_h, win_w), _count, load) in enumerate(grids):
        kept = (win_h - 2 * pad if win_h < height else height, win_w - 2 * pad if win_w < width else width)
        key = (str(runtime.device), runtime.precision, threads, bool(model.channels_last), win_h, win_w, kept)
        if key not in timings:
            if last_pixels:
                ratio = win_h * win_w / last_pixels
                job = min(s * grids[j][2] for j, s in enumerate(seconds) if s is not None)
                limit = min(budget_s, max(_PROBE_JOB_FACTOR * job, _FREE_PROBE_S))
                warm = ratio * last_warm_up
                predicted = warm + (1 if warm > _ONE_TIMING_S else _REPEATS) * ratio * last_forward
                if last_forward * ratio > _SLOW_FORWARD_S or spent + predicted > limit:
                    note = (f"stopped before the {tiles[i]}px tile: its probe would take ~{predicted:.1f} s "
                            f"after {spent:.1f} s (limit {limit:.1f} s)")
                    break
            started = time.perf_counter()
            timings[key] = _time_window(model, runtime, win_h, win_w, kept)
            spent += time.perf_counter() - started
        best, warm_up = timings[key]
        seconds[i] = best
        last_pixels, last_forward, last_warm_up = win_h * win_w, best, warm_up
        if best > _SLOW_FORWARD_S:
            note = f"the {tiles[i]}px window took {best:.1f} s: larger ones not probed"
            break
        earlier = [s * grids[j][2] for j, s in enumerate(seconds[:i]) if s is not None]
        if earlier and best * load >= min(earlier) and i + 1 < len(tiles):
            note = f"the {tiles[i]}px grid is no faster than a smaller one's: larger ones not probed"
            break
    costs = tuple(CandidateCost(t, *g, s) for t, g, s in zip(tiles, grids, seconds))
    measured = [c for c in costs if c.grid_seconds is not None]
    best_cost = min(measured, key=lambda c: (c.grid_seconds, c.windows))
    return CpuTileChoice(best_cost.tile, costs, spent, note)


def _time_window(model: Model, runtime: Runtime, height: int, width: int,
                 kept: tuple[int, int] | None = None) -> tuple[float, float]:
    """Seconds of one window on the runtime's device, and of its warm-up (the first call at a shape chooses its
    kernels): a forward of a ``height`` x ``width`` window, then the merge of its kept part (``kept``: rows and
    columns of input pixels, centred; default all) as the engine merges it: the output read as HxWxC and
    converted to uint8 (:func:`tessera.image.pixels.from_float`), a host cost that grows with the window on
    the CPU (the kept part is read out of a larger output). The best of :data:`_REPEATS` timed forwards, more (up to
    :data:`_MAX_REPEATS`) while together under :data:`_MIN_TIMED_S`, one only after a warm-up slower than
    :data:`_ONE_TIMING_S`, and none after one slower than :data:`_SLOW_FORWARD_S` (its own setup is then a small
    part of it)."""
    req = model.size_requirements
    pad_w, pad_h = req.get_padding(width, height)
    h, w = height + pad_h, width + pad_w
    layout = torch.channels_last if model.channels_last else torch.contiguous_format
    x = torch.rand((1, model.input_channels, h, w)).to(runtime.device, runtime.dtype).contiguous(
        memory_format=layout)
    mask = None
    if model.takes_mask:
        mask = torch.zeros((1, 1, h, w))
        mask[..., h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 1
        mask = mask.to(runtime.device, runtime.dtype)
    timings: list[float] = []
    with torch.inference_mode():
        warm_up = _forward_seconds(model, runtime, x, mask, kept)
        if warm_up > _SLOW_FORWARD_S:
            return warm_up, warm_up
        least = 1 if warm_up > _ONE_TIMING_S else _REPEATS
        while len(timings) < least or (len(timings) < _MAX_REPEATS and sum(timings) < _MIN_TIMED_S):
            timings.append(_forward_seconds(model, runtime, x, mask, kept))
    return min(timings), warm_up


def _forward_seconds(model: Model, runtime: Runtime, x: torch.Tensor, mask: torch.Tensor | None,
                     kept: tuple[int, int] | None = None) -> float:
    """Seconds of one forward of ``x`` and the uint8 conversion of its output's centred ``kept`` part."""
    start = time.perf_counter()
    y = model(x, mask)
    _synchronize(runtime.device)
    if kept is not None and y.ndim == 4:
        scale = max(1, y.shape[-1] // x.shape[-1])
        rows, cols = (min(k, n) * scale for k, n in zip(kept, x.shape[-2:]))
        top, left = (y.shape[-2] - rows) // 2, (y.shape[-1] - cols) // 2
        output = y.float().cpu().permute(0, 2, 3, 1).numpy()
        from_float(output[0, top:top + rows, left:left + cols], np.uint8)
    return time.perf_counter() - start


def _synchronize(device: torch.device) -> None:
    """Wait for queued work, so a timing covers the forward (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()
