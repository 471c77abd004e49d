"""What every task does first and last: accept a picture in any form, and hand the result back in that form."""
from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import OptionError
from ..image.pixels import Picture, single_channel
from ..image.read import load_image


def open_picture(image: Any) -> tuple[Picture, str]:
    """Accept a path, a :class:`Picture` or a numpy array (HxW, HxWx3, HxWx4); return the picture and its kind."""
    if isinstance(image, Picture):
        return image, "picture"
    if isinstance(image, (str, os.PathLike)):
        return load_image(image), "picture"
    if isinstance(image, np.ndarray):
        if image.dtype not in (np.uint8, np.uint16, np.float32):
            raise OptionError(f"unsupported array dtype {image.dtype} (use uint8, uint16 or float32)")
        if image.ndim == 2:
            return Picture(pixels=np.repeat(image[:, :, None], 3, axis=2), alpha=None, gray=True), "array"
        if image.ndim == 3 and image.shape[2] in (3, 4):
            alpha = image[:, :, 3].copy() if image.shape[2] == 4 else None
            return Picture(pixels=np.ascontiguousarray(image[:, :, :3]), alpha=alpha, gray=False), "array"
        raise OptionError(f"an image array must be HxW, HxWx3 or HxWx4, got shape {image.shape}")
    raise OptionError(f"cannot read an image from a {type(image).__name__}")


def deliver(picture: Picture, kind: str) -> Any:
    """Return ``picture`` in the kind the caller gave: a Picture, or an array (alpha appended as a 4th channel)."""
    if kind == "picture":
        return picture
    pixels = single_channel(picture.pixels)[:, :, 0] if picture.gray else picture.pixels
    if picture.alpha is not None:
        base = pixels if pixels.ndim == 3 else pixels[:, :, None]
        return np.concatenate([base, picture.alpha[:, :, None]], axis=2)
    return pixels
