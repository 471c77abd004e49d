"""Lanczos upscaling, optionally with a mild unsharp mask: the weight-free default of ``tessera upscale``.

It is wrapped as a :class:`Model` with an integer scale so it runs through the same tiling engine as a network
(bounded memory on any image size); its context is the Lanczos-4 support plus the sharpening blur.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import torch

from ..descriptor import Model

_LANCZOS_SUPPORT = 4  # cv2.INTER_LANCZOS4 reads 4 source pixels on each side
_SHARPEN_SIGMA = 1.0  # output pixels


def sharpen(image: np.ndarray, amount: float, sigma: float = _SHARPEN_SIGMA) -> np.ndarray:
    """Unsharp mask on an HxWxC float32 image in [0, 1]: ``image + amount * (image - blur(image))``."""
    if amount <= 0:
        return image
    blurred = cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    return np.clip(image + amount * (image - blurred), 0.0, 1.0)


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Lanczos-4 when enlarging, area averaging when shrinking (no aliasing)."""
    shrinking = width < image.shape[1] or height < image.shape[0]
    flags = cv2.INTER_AREA if shrinking else cv2.INTER_LANCZOS4
    out = cv2.resize(image, (width, height), interpolation=flags)
    return out[:, :, None] if out.ndim == 2 else out


class _LanczosNetwork:
    """NCHW float tensor in, NCHW float tensor ``scale`` times larger out (computed with OpenCV on the host)."""

    def __init__(self, scale: int, amount: float):
        self.scale = scale
        self.amount = amount

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        for item in x.detach().float().cpu().permute(0, 2, 3, 1).numpy():
            h, w = item.shape[:2]
            up = resize(item, w * self.scale, h * self.scale)
            outputs.append(sharpen(up, self.amount))
        return torch.from_numpy(np.stack(outputs)).permute(0, 3, 1, 2).to(x.device, x.dtype)


def lanczos_model(scale: int, sharpen_amount: float = 0.0) -> Model:
    """The weight-free upscaler as a tessera Model (integer ``scale``)."""
    blur_reach = math.ceil(3 * _SHARPEN_SIGMA / scale) if sharpen_amount > 0 else 0
    return Model(
        network=_LanczosNetwork(scale, sharpen_amount),
        name="lanczos" if sharpen_amount <= 0 else f"lanczos+sharpen{sharpen_amount:g}",
        task="upscale",
        architecture="Lanczos-4 (weight-free)",
        scale=scale,
        context=_LANCZOS_SUPPORT + 1 + blur_reach,
        license="n/a",
    )
