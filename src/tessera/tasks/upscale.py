"""Upscaling: tiled super-resolution or restoration with any network, multi-pass beyond the model's own factor.

A target scale is reached in passes of the model: whole passes at its factor ``s``; a remaining integer factor
``r`` that divides ``s`` by one more pass whose output is averaged down by ``s / r`` inside each tile (x4 then x2
for 8x; exact under tiling, memory bounded by the final size); whatever non-integer factor is left is finished
with Lanczos. Without a model the weight-free Lanczos upscaler runs through the same engine.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch.nn.functional as F

from ..engine import ProgressCallback, Runtime, TilePlan, measure_context, tiled_apply
from ..errors import OptionError
from ..models.classical.lanczos import lanczos_model, resize
from ..models.descriptor import Model
from ..options import WEIGHT_FREE_DEFAULT_SCALE, UpscaleOptions, parse_options
from .common import deliver, open_picture


@dataclass
class UpscaleReport:
    """What an upscale did: the model, each pass's tile plan, and the final resize if any."""

    model: str
    scale: float
    passes: list[TilePlan] = field(default_factory=list)
    finish: str | None = None
    weight_free: bool = False


def plan_passes(model_scale: int, target: float) -> tuple[list[int], float]:
    """Split ``target`` into model passes (each the effective integer factor of one pass) and a Lanczos rest.

    ``plan_passes(4, 8) == ([4, 2], 1.0)``; ``plan_passes(4, 6) == ([4], 1.5)``; ``plan_passes(2, 2) == ([2], 1.0)``.
    A pass of factor ``r < s`` runs the model and averages its output down by ``s / r``.
    """
    if target <= 0:
        raise OptionError(f"scale must be positive, got {target}")
    factors: list[int] = []
    remaining = float(target)
    while remaining >= model_scale - 1e-9 and model_scale > 1:
        factors.append(model_scale)
        remaining /= model_scale
    if model_scale == 1 and not factors:
        factors.append(1)
    divisors = [d for d in range(model_scale - 1, 1, -1) if model_scale % d == 0 and d <= remaining + 1e-9]
    if divisors:
        factors.append(divisors[0])
        remaining /= divisors[0]
    return factors, remaining


def pooled(model: Model, factor: int) -> Model:
    """``model`` followed by ``s/factor`` average pooling: an exact, tileable pass of integer ``factor``."""
    if factor == model.scale:
        return model
    pool = model.scale // factor

    def call(network: Model, x: Any, mask: Any = None) -> Any:
        return F.avg_pool2d(network(x, clamp=False), pool)

    return replace(model, network=model, call_fn=call, scale=factor, input_range=(0.0, 1.0),
                   name=f"{model.name} (x{model.scale} pooled to x{factor})",
                   context=model.context)


def upscale(image: Any, *, model: str | Model | Any | None = None, scale: float | None = None,
            progress: ProgressCallback | None = None, cancel: threading.Event | None = None,
            model_dir: str | None = None, report: list[UpscaleReport] | None = None, **options: Any) -> Any:
    """Upscale ``image`` (path, :class:`Picture` or numpy array) and return the result in the same form.

    ``model``: a model name, a path, a loaded model, or None for the weight-free Lanczos method (default scale 2).
    ``scale``: the output scale (default: the model's factor). Engine options (``device``, ``precision``,
    ``max_memory``, ``tile``, ``tile_pad``, ``tile_batch``, ``blend``) and ``sharpen`` are validated by
    :class:`UpscaleOptions`. Alpha is upscaled with Lanczos; 16-bit stays 16-bit; metadata is kept.
    ``report``: a list that receives an :class:`UpscaleReport`.
    """
    opts = parse_options(UpscaleOptions, model=model if isinstance(model, (str, type(None))) else None,
                         scale=scale, **options)
    picture, kind = open_picture(image)
    network, weight_free = resolve_model(model, opts, model_dir)
    target = opts.scale or (WEIGHT_FREE_DEFAULT_SCALE if weight_free else float(network.scale or 1))
    runtime = Runtime.create(opts.device, opts.precision, opts.max_memory, model=network,
                             progress=progress, cancel=cancel)
    runtime.prepare(network)
    if weight_free:
        network = lanczos_model(max(1, math.floor(target + 1e-9)), opts.sharpen)
    elif not network.scale:
        from ..engine import infer_scale

        infer_scale(network, runtime)
    factors, _rest = plan_passes(network.scale, target)
    if weight_free and target != network.scale:
        factors = []  # one exact Lanczos resize beats an integer pass followed by a second resampling
    done = UpscaleReport(network.name, target, weight_free=weight_free)
    pixels = picture.pixels
    for number, factor in enumerate(factors, 1):
        runtime.report("passes", number - 1, len(factors), f"pass {number}/{len(factors)}: x{factor}")
        step = pooled(network, factor)
        if opts.tile_pad == "auto" and step is not network:
            step.context = measure_context(network, runtime)
        pixels = tiled_apply(step, pixels, tile=opts.tile, pad=opts.tile_pad,
                             batch=opts.tile_batch, blend=opts.blend, runtime=runtime, plan=done.passes)
    height, width = picture.height, picture.width
    final_w, final_h = round(width * target), round(height * target)
    if (pixels.shape[1], pixels.shape[0]) != (final_w, final_h):
        done.finish = f"Lanczos {pixels.shape[1]}x{pixels.shape[0]} -> {final_w}x{final_h}"
        pixels = _resize_pixels(pixels, final_w, final_h)
    if report is not None:
        report.append(done)
    return deliver(picture.with_pixels(pixels), kind)


def _resize_pixels(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize keeping the dtype (uint8/uint16 rounded and clipped)."""
    out = resize(pixels, width, height)
    if pixels.dtype == np.float32:
        return np.clip(out, 0.0, 1.0)
    return out.astype(pixels.dtype)


def resolve_model(model: Any, opts: UpscaleOptions, model_dir: str | None) -> tuple[Model, bool]:
    """The network to run and whether it is the weight-free fallback."""
    if model is None:
        return lanczos_model(1), True
    from ..models.loader import as_model, load_model

    network = load_model(model, model_dir=model_dir) if isinstance(model, str) else as_model(model)
    if network.task not in ("upscale", "restore"):
        raise OptionError(f"model {network.name} is a {network.task} model, not an upscaler")
    return network, False
