"""How an inpainting crop is sized for one model and runtime: shapes the network runs well at, within the memory
budget and ``max_size``.

A crop's sides are rounded up to a multiple of :data:`QUANTUM` px (or a power of two where the network's FFT runs
in half precision), it is shifted to stay inside the photo rather than clipped (a hole at the border keeps its
full amount of context), and it runs downscaled only when it does not fit at full resolution.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..errors import ResourceError
from .inpaint_regions import Box, Hole, Region

QUANTUM = 64           # crop sides are multiples of this, so crops share shapes and batch together
MIN_RUN_SIDE = 64      # below this the network has too little to see: refuse rather than produce mush

FitsFn = Callable[[int, int], bool]


def round_up(value: int, quantum: int, pow2: bool) -> int:
    """``value`` rounded up to a multiple of ``quantum``, or to a power of two when ``pow2``."""
    if pow2:
        return 1 << max(0, math.ceil(math.log2(max(value, 1))))
    return -(-value // quantum) * quantum


def round_down(value: int, quantum: int, pow2: bool) -> int:
    """``value`` rounded down to a multiple of ``quantum`` (at least one), or to a power of two when ``pow2``."""
    if pow2:
        return 1 << max(0, math.floor(math.log2(max(value, 1))))
    return max(quantum, value // quantum * quantum)


def place(center: tuple[float, float], size: tuple[int, int], height: int, width: int) -> Box:
    """A box of ``size`` centred on ``center``, shifted (not clipped) to lie inside the photo."""
    h, w = min(size[0], height), min(size[1], width)
    y0 = round(center[0] - h / 2)
    x0 = round(center[1] - w / 2)
    y0 = min(max(y0, 0), height - h)
    x0 = min(max(x0, 0), width - w)
    return Box(y0, x0, y0 + h, x0 + w)


@dataclass(frozen=True)
class Sizing:
    """How crops are shaped for one model and runtime.

    ``quantum``: crop sides are multiples of it (1 for weight-free methods); ``pow2``: sides are powers of two
    (half-precision FFT); ``max_size``: never run above this many pixels per side (None: no cap);
    ``fits``: whether a run of (height, width) fits the memory budget (None: anything fits); ``estimate``:
    the bytes such a run needs and ``budget`` the bytes allowed (for messages; None: not known).
    """

    quantum: int = QUANTUM
    pow2: bool = False
    max_size: int | None = None
    fits: FitsFn | None = None
    estimate: Callable[[int, int], float] | None = None
    budget: int | None = None

    def up(self, value: int) -> int:
        return round_up(value, self.quantum, self.pow2)

    def down(self, value: int) -> int:
        return round_down(value, self.quantum, self.pow2)


def full_region(height: int, width: int, holes: Sequence[Hole], run_shape: tuple[int, int],
                sizing: Sizing) -> Region:
    """The whole photo as one region run at ``run_shape`` (strategies ``full`` and ``resize``)."""
    crop = Box(0, 0, height, width)
    pad_to = (sizing.up(run_shape[0]), sizing.up(run_shape[1])) if sizing.pow2 else None
    return Region(crop, tuple(h.box for h in holes), run_shape, pad_to)


def _scaled_region(center: tuple[float, float], want: tuple[int, int], holes: tuple[Box, ...], scale: float,
                   height: int, width: int, sizing: Sizing) -> Region:
    """A region whose network input is ``want`` scaled by ``scale`` and rounded up to the sizing's quantum;
    the crop is enlarged to match that input where the photo allows (more real context, same cost)."""
    run = tuple(sizing.up(math.ceil(side * scale - 1e-9)) for side in want)
    crop = place(center, (math.ceil(run[0] / scale - 1e-9), math.ceil(run[1] / scale - 1e-9)), height, width)
    if scale >= 1.0:
        run_shape = (crop.height, crop.width)
    else:
        run_shape = (max(1, min(run[0], round(crop.height * scale))), max(1, min(run[1], round(crop.width * scale))))
    pad_to = run if sizing.pow2 and tuple(run) != run_shape else None
    return Region(crop, holes, run_shape, pad_to)


def fitting_scale(want: tuple[int, int], sizing: Sizing, use_budget: bool) -> float:
    """The largest scale (<= 1) at which a crop of ``want`` runs within max_size and, if asked, the budget."""
    longest = max(want)
    scale = 1.0
    if sizing.max_size is not None and sizing.up(longest) > sizing.max_size:
        scale = sizing.down(sizing.max_size) / longest  # the longest side then runs at down(max_size) exactly
    if not use_budget or sizing.fits is None:
        return scale
    previous = None
    while True:
        run = [sizing.up(math.ceil(side * scale - 1e-9)) for side in want]
        if sizing.fits(run[0], run[1]):
            return scale
        if max(run) <= MIN_RUN_SIDE or run == previous:  # rounding up to the quantum stops the shrinking
            raise ResourceError(f"the memory budget does not fit even a {run[1]}x{run[0]} inpainting pass; "
                                f"raise --max-memory")
        previous = run
        scale *= 0.8 if not sizing.pow2 else 0.5


def check_full_photo_fits(height: int, width: int, run: tuple[int, int], sizing: Sizing) -> None:
    """Refuse, before any work, a whole-photo pass the memory budget cannot hold (strategy ``full``)."""
    if sizing.fits is None or sizing.fits(*run):
        return
    from ..options import format_bytes

    need = f" about {format_bytes(sizing.estimate(*run))}" if sizing.estimate is not None else " more memory"
    budget = f" of {format_bytes(sizing.budget)}" if sizing.budget is not None else ""
    raise ResourceError(f"--strategy full runs the whole {width}x{height} photo in one pass, which needs{need}, "
                        f"over the memory budget{budget}; use --strategy auto (crops around the holes) or "
                        f"resize, or raise --max-memory")


def group_region(hole_box: Box, context: Box, holes: tuple[Box, ...], photo: tuple[int, int], sizing: Sizing,
                 use_budget: bool, *, phase: int = 0) -> Region:
    """The region of holes ``holes`` (bounding box ``hole_box``) wanting ``context``: full resolution when it
    fits, else downscaled; centred on the holes and shifted inside the photo."""
    height, width = photo
    want = (min(context.height, height), min(context.width, width))
    center = ((hole_box.y0 + hole_box.y1) / 2, (hole_box.x0 + hole_box.x1) / 2)
    scale = fitting_scale(want, sizing, use_budget=use_budget)
    region = _scaled_region(center, want, holes, scale, height, width, sizing)
    return dataclasses.replace(region, phase=phase) if phase else region
