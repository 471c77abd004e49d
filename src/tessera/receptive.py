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

# Architectures with a path over the whole input: no context makes their tiles exact (tessera feathers them and
# uses one window where it fits). What the path is, read from their spandrel implementations and confirmed on
# small random networks (a change in one corner moves the opposite one: bench/architectures.py). PLKSR is left
# to the probe: its RealPLKSR variant normalises over the whole image, the plain one is local.
_CHANNEL_ATTENTION = "channel attention over all pixels"
_POOLED = "channel attention from global average pooling"
NON_LOCAL_ARCHITECTURES: dict[str, str] = {
    "ATD": "attention over tokens grouped from the whole image",
    "AdaCode": "group normalisation over the whole image",
    "AuraSR": "full attention in its bottleneck",
    "CRAFT": _CHANNEL_ATTENTION,
    "DAT": _CHANNEL_ATTENTION,
    "DCTLSA": "shifted windows that wrap round the image border",
    "FBCNN": "a quality estimate pooled over the whole image",
    "FDAT": _CHANNEL_ATTENTION,
    "FeMaSR": "group normalisation over the whole image",
    "HAT": _POOLED,
    "HVICIDNet": _CHANNEL_ATTENTION,
    "IPT": "spandrel runs it in patches laid out over the whole image",
    "KBNet": _POOLED,
    "LaMa": "Fourier convolutions over the whole image",
    "M3SNet": _POOLED,
    "MIRNet2": _POOLED,
    "MMRealSR": "a degradation estimate pooled over the whole image",
    "MPRNet": _POOLED,
    "MixDehazeNet": _POOLED,
    "NAFNet": _POOLED,
    "OmniSR": "grid attention across the whole image",
    "RCAN": _POOLED,
    "RGT": "attention to summaries of the whole image",
    "RealCUGAN": "squeeze-and-excitation pooled over the whole input",
    "Restormer": _CHANNEL_ATTENTION,
    "RetinexFormer": _CHANNEL_ATTENTION,
    "SeemoRe": "an expert router pooled over the whole image",
}

# Modules whose reach depends on the content: DySample moves each output sample by an offset the network
# predicts, with no bound (MoESR, MoSR, RealPLKSR and FDAT can be built with it).
_UNBOUNDED_MODULES = {"DySample": "dynamic upsampling: sampling offsets predicted from the content, unbounded"}


def non_local_reason(model: Model) -> str | None:
    """Why no context makes ``model``'s tiles exact (its architecture or one of its modules), or None."""
    if model.architecture in NON_LOCAL_ARCHITECTURES:
        return NON_LOCAL_ARCHITECTURES[model.architecture]
    if model.is_module:
        for module in model.network.modules():
            if type(module).__name__ in _UNBOUNDED_MODULES:
                return _UNBOUNDED_MODULES[type(module).__name__]
    return None


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


# Attributes of a network module that name the lattice it works on: attention windows it pads its input to,
# patches, a padder's multiple (SwinIR, HAT, Swin2SR, SRFormer, DITN, OmniSR, GRL, NAFNet, KBNet, DAT...).
_PERIOD_ATTRIBUTES = ("window_size", "patch_size", "patch_sizes", "pad_size", "padder_size", "split_size")
# Architectures that pad to a multiple no attribute names: SCUNet's windows of 8 at 1/8 resolution (it pads to 64)
_ARCHITECTURE_PERIODS = {"SCUNet": 64}


def tile_period(model: Model) -> int:
    """The multiple every tile origin keeps, so each window sees the lattice the untiled network sees.

    The size requirement's ``multiple_of``, and the window or patch sizes a windowed network pads its input to
    (read from the module's attributes): a window starting off that lattice would split the attention windows
    of the untiled call differently and give other pixels everywhere, not only at the borders."""
    period = math.lcm(max(1, model.size_requirements.multiple_of), _ARCHITECTURE_PERIODS.get(model.architecture, 1))
    if not model.is_module:
        return period
    for name in _PERIOD_ATTRIBUTES:
        value = getattr(model.network, name, None)
        for item in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(item, int) and not isinstance(item, bool) and 1 < item <= 256:
                period = math.lcm(period, item)
    return period


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
