"""The context a tile needs, known without measuring: counted for convolution-only architectures, or declared.

A convolution-only network is exactly local: an output pixel depends on the input within the sum of its
convolutions' radii, each in input pixels (a 3x3 convolution at twice the input's resolution reaches half an
input pixel). :func:`receptive_radius` counts them on one tiny forward pass with hooks, at no cost worth naming,
for the architectures whose spandrel implementations hold nothing else with spatial reach (no pooling, attention,
Fourier units or resampling beyond nearest-neighbour): ESRGAN, Compact and SPAN.

Being local in principle is not being local in practice: ESRGAN x4plus reaches 350 input pixels, yet tiles with
far less context give the untiled pixels within one level. For such networks the auto context is the smallest
one that does so on real photographs, measured once with real weights (bench/real_models.py) and declared in the
catalog (``tile_pad``); :data:`PRACTICAL_CONTEXT` carries that figure to other files of the same architecture.
"""
from __future__ import annotations

import math
from typing import Any

import torch

from .models.descriptor import Model

# spandrel architectures made of convolutions, elementwise operations, nearest upsampling and pixel (un)shuffles
LOCAL_ARCHITECTURES = frozenset({"ESRGAN", "Compact", "SPAN"})

# Architecture -> context at which tiled output stays within 1 uint8 level of the untiled network on real
# photographs, measured with realesrgan-x4plus (the deepest ESRGAN in the catalog); used when a file's receptive
# field is larger. See bench/real_models.py and bench/results/real_models.json.
PRACTICAL_CONTEXT: dict[str, int] = {"ESRGAN": 40}


def receptive_radius(model: Model) -> int | None:
    """The receptive-field radius (input pixels, plus one) of a convolution-only network; None for others."""
    if model.architecture not in LOCAL_ARCHITECTURES or not model.is_module:
        return None
    req = model.size_requirements
    size = -(-max(8, req.minimum) // req.multiple_of) * req.multiple_of
    reach: list[float] = []

    def count(module: torch.nn.Conv2d, inputs: tuple[torch.Tensor, ...], _output: Any) -> None:
        relative = inputs[0].shape[-1] / size  # the resolution the convolution runs at, in input pixels
        kernel, dilation = max(module.kernel_size), max(module.dilation)
        reach.append(dilation * (kernel - 1) / 2 / relative)

    hooks = [m.register_forward_hook(count) for m in model.network.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        x = torch.zeros((1, model.input_channels, size, size), device=model.device, dtype=model.dtype)
        with torch.inference_mode():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    if not reach:
        return None
    radius = math.ceil(sum(reach) - 1e-9) + 1
    if model.output_resize:
        radius += 1  # a bicubic resize of the output reads up to one input pixel further
    return radius


def auto_context(model: Model) -> int | None:
    """The context ``--tile-pad auto`` uses without measuring: declared, or counted (capped where a practical
    figure is known for the architecture); None when only a measurement can tell."""
    if model.context is not None:
        return model.context
    radius = receptive_radius(model)
    if radius is None:
        return None
    practical = PRACTICAL_CONTEXT.get(model.architecture)
    return radius if practical is None else min(radius, practical)
