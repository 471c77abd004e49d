"""Upscaling an image larger than memory: a TIFF read region by region into a tiled BigTIFF, through the engine.

The same engine as in memory (:func:`tessera.engine.apply_tiles`), with two other ends: the image is a lazy
:class:`~tessera.image.regions.TiffRegions` and the canvas a :class:`~tessera.image.regions.TiffCanvas`, whose
blocks are output TIFF tiles written as soon as they are computed. Memory is one batch of windows, whatever the
image size. What differs from the in-memory task is declared here: all passes of a multi-pass upscale run per
block as one chained model (so each block is finished at once), and gray or alpha samples are adapted around the
RGB network (:func:`adapt_channels`), where the in-memory task handles them on the whole picture. Only scales
that exact passes reach are streamed: one the in-memory task reaches by a full pass and area averaging of its
whole output (x3 or x6 with an x4 model) is refused here.
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import Runtime, apply_tiles, infer_scale, measure_context, measure_reach
from ..errors import OptionError
from ..image.regions import TiffCanvas, check_streamed_output, open_regions
from ..models.classical.lanczos import lanczos_model
from ..models.descriptor import Model
from ..options import UpscaleOptions, parse_options
from ..progress import ProgressCallback
from .result import Result, StreamReport
from .upscale import plan_passes, pooled, resolve_auto, resolve_model


def resolve_upscaler(model: Any, options: Any, dtype: np.dtype, runtime: Runtime | None = None, *,
                     model_dir: str | None = None, progress: ProgressCallback | None = None,
                     cancel: threading.Event | None = None) -> tuple[Model, Runtime]:
    """The one model a streamed upscale of an image of ``dtype`` runs per block (all passes chained), and its
    runtime.

    ``options``: validated :class:`~tessera.options.UpscaleOptions`. The target scale must be an integer that
    whole passes of the model reach (any integer for the weight-free method).
    """
    model, _chosen, default_scale = resolve_auto(model, options, model_dir)
    network, weight_free = resolve_model(model, options, model_dir)
    if runtime is None:
        runtime = Runtime.create(options.device, options.precision, options.max_memory, model=network,
                                 progress=progress, cancel=cancel)
    runtime.prepare(network)
    if not weight_free and not network.scale:
        network = infer_scale(network, runtime)
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
    return chain_passes(network, factors, runtime, levels), runtime


def chain_passes(network: Model, factors: list[int], runtime: Runtime, levels: int | None) -> Model:
    """The passes of a multi-pass upscale as one model, so each block runs all passes (tile-exact).

    Between passes the values are clamped and rounded to ``levels`` (255, 65535; None for float images), as the
    in-memory upscale stores each pass in the image's dtype: the streamed result is the same.
    """
    reach = measure_reach(network, runtime)
    radius = reach.pad
    if len(factors) == 1:
        step = pooled(network, factors[0])
        return step if step is network else replace(step, context=radius, local=reach.local)
    steps = [pooled(network, f) for f in factors]
    context, magnified = 0, 1
    for factor in factors:  # each pass's context, in the chain's input pixels
        context += math.ceil(radius / magnified)
        magnified *= factor

    def call(_network: Any, x: Any, mask: Any = None) -> Any:
        for number, step in enumerate(steps):
            x = step(x)
            if levels and number + 1 < len(steps):
                x = (x.float() * levels).round() / levels
        return x

    return replace(network, network=network, call_fn=call, scale=math.prod(factors), input_range=(0.0, 1.0),
                   context=context, local=reach.local, name=f"{network.name} ({' then '.join(f'x{f}' for f in factors)})")


def adapt_channels(model: Model, channels: int, context: int) -> Model:
    """``model`` (RGB in, RGB out) as a model of ``channels`` (1, 2 or 4) samples: gray is run as RGB and brought
    back to one channel (BT.601 luma), alpha is resized with Lanczos alongside. ``context``: the model's, in px."""
    import torch

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


def stream_upscale(source: str | Path | np.ndarray, output: str | Path, *, model: Any = "auto",
                   scale: float | None = None, progress: ProgressCallback | None = None,
                   cancel: threading.Event | None = None, model_dir: str | None = None,
                   compression: str = "zlib", **options: Any) -> Result[StreamReport]:
    """Upscale ``source`` (a TIFF path, read lazily) into a tiled BigTIFF at ``output``, in bounded memory.

    ``model``/``scale`` as :func:`tessera.tasks.upscale.upscale` (the scale must be an integer); engine options
    (``device``, ``precision``, ``max_memory``, ``tile``, ``tile_pad``, ``tile_batch``, ``blend``) and ``sharpen``
    are validated by :class:`~tessera.options.UpscaleOptions`. ``tile`` sets the block side. Progress is the
    engine's stage ``"tiles"``. Returns the output path and a :class:`StreamReport`.
    """
    opts = parse_options(UpscaleOptions, model=model if isinstance(model, (str, type(None))) else None,
                         scale=scale, **options)
    check_streamed_output(output)
    started = time.monotonic()
    with open_regions(source) as reader:
        height, width, channels = reader.shape
        network, runtime = resolve_upscaler(model, opts, reader.dtype, model_dir=model_dir, progress=progress,
                                            cancel=cancel)
        context = measure_context(network, runtime) if opts.tile_pad == "auto" else int(opts.tile_pad)
        if context < 0:
            raise OptionError(f"tile pad must be >= 0, got {opts.tile_pad}")
        if channels != 3:
            network = adapt_channels(network, channels, context)
            context = network.context
        s = network.scale
        canvas = TiffCanvas(output, (height * s, width * s, channels), reader.dtype, iccprofile=reader.iccprofile,
                            compression=compression)
        tiled = apply_tiles(network, reader, tile=opts.tile, tile_pad=context, tile_batch=opts.tile_batch,
                            blend=opts.blend, runtime=runtime, out=canvas)
    report = StreamReport(reader.shape, canvas.shape, canvas.block, context, tiled.plan.batch, tiled.plan.tiles,
                          network.name, time.monotonic() - started)
    return Result(tiled.output, report)
