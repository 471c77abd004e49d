"""Inpainting masks: read one from any image, fit it to the photo, grow it, and check it is usable.

A mask says which pixels to fill. Users make them in many tools, so any image is accepted: grey (L), RGB
white-on-black (any channel counts, so coloured brush strokes work too), or RGBA/LA, where the alpha channel is
the mask whenever it varies (strokes painted on a transparent layer). A pixel is in the mask when its value is
above half of full scale: above 127 in 8 bits, above 32767 in 16 bits, at least 0.5 in float.

Brush strokes leave soft or anti-aliased halos that the threshold cuts off, so :func:`grow_mask` dilates the
mask by a distance (Euclidean, computed per component, so the cost follows the marks, not the photo).
"""
from __future__ import annotations

import warnings
from os import PathLike
from typing import Any

import cv2
import numpy as np

from .errors import InputError, OptionError

COVERAGE_WARNING = 0.30  # above this fraction of the photo, inpainting quality drops (guidance of the seed tool)
MIN_CONTEXT = 0.01       # below this fraction of the photo left outside the mask there is nothing to fill from


class LargeMaskWarning(UserWarning):
    """The mask covers so much of the photo that the fill has little context left to draw from."""


def mask_from_array(array: np.ndarray, *, what: str = "mask") -> np.ndarray:
    """A boolean HxW mask from an HxW, HxWx1, HxWx2 (LA), HxWx3 (RGB) or HxWx4 (RGBA) array.

    Alpha is the mask when it varies over the image; otherwise (fully opaque or fully transparent layers) the
    colour channels are, through their maximum.
    """
    array = np.asarray(array)
    if array.ndim == 3 and array.shape[2] in (1, 2, 3, 4):
        channels = array.shape[2]
        if channels in (2, 4):
            alpha = array[:, :, -1]
            if alpha.size and alpha.min() != alpha.max():
                return threshold(alpha, what=what)
            array = array[:, :, :-1]
        array = array.max(axis=2)
    if array.ndim != 2:
        raise InputError(f"{what} has shape {array.shape}; expected HxW, HxWx3 (RGB) or HxWx4 (RGBA)")
    return threshold(array, what=what)


def threshold(values: np.ndarray, *, what: str = "mask") -> np.ndarray:
    """Pixels above half of full scale: > 127 for uint8, > 32767 for uint16, >= 0.5 for floats in [0, 1]."""
    if values.dtype == bool:
        return values.copy()
    if values.dtype == np.uint8:
        return values > 127
    if values.dtype == np.uint16:
        return values > 32767
    if np.issubdtype(values.dtype, np.floating):
        return values >= 0.5
    if np.issubdtype(values.dtype, np.integer):  # e.g. 0/1 label images or int32 arrays from user code
        top = int(values.max()) if values.size else 0
        return values > (127 if top > 1 else 0)
    raise InputError(f"{what} has unsupported dtype {values.dtype}")


def mask_values(picture: Any) -> np.ndarray:
    """The HxW values a :class:`tessera.image.pixels.Picture` gives as a mask: its alpha when that varies, else the
    maximum of its colour channels (so white, or any coloured stroke, on black counts)."""
    alpha = getattr(picture, "alpha", None)
    if alpha is not None and alpha.size and alpha.min() != alpha.max():
        return alpha
    pixels = np.asarray(picture.pixels)
    return pixels.max(axis=2) if pixels.ndim == 3 else pixels


def mask_from_picture(picture: Any, *, what: str = "mask") -> np.ndarray:
    """A boolean mask from a :class:`tessera.image.pixels.Picture` (alpha first, when it varies; then the colours)."""
    return threshold(mask_values(picture), what=what)


def load_mask(source: Any, *, what: str | None = None) -> np.ndarray:
    """A boolean HxW mask from a path, a Picture, or an array (see :func:`mask_from_array`).

    Files are read by :func:`tessera.image.read.load_image` (EXIF orientation applied, like the photo's), so an
    unreadable or non-image file raises :class:`~tessera.errors.ImageReadError`.
    """
    if isinstance(source, (str, PathLike)):
        from .image.read import load_image

        label = what or f"mask {source}"
        return mask_from_picture(load_image(source), what=label)
    if isinstance(source, np.ndarray):
        return mask_from_array(source, what=what or "mask")
    if hasattr(source, "pixels"):
        return mask_from_picture(source, what=what or "mask")
    raise InputError(f"mask must be a path, a Picture or a numpy array, got {type(source).__name__}")


def fit_mask(mask: np.ndarray, shape: tuple[int, int], *, resize: bool = False, what: str = "mask") -> np.ndarray:
    """Check the mask has the photo's ``(height, width)``; with ``resize``, scale it to that size instead.

    Shrinking keeps every output pixel any part of which was masked (thin strokes survive); enlarging keeps
    pixels whose interpolated coverage is at least one half.
    """
    height, width = shape
    if mask.shape == (height, width):
        return mask
    if not resize:
        raise InputError(f"{what} is {mask.shape[1]}x{mask.shape[0]} but the photo is {width}x{height} "
                         f"(use --resize-mask to scale it)")
    coverage = mask.astype(np.float32)
    shrinking = height * width < mask.shape[0] * mask.shape[1]
    scaled = cv2.resize(coverage, (width, height),
                        interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return scaled > 1e-6 if shrinking else scaled >= 0.5


def grow_mask(mask: np.ndarray, pixels: int) -> np.ndarray:
    """Dilate ``mask`` by ``pixels`` (Euclidean distance), working only around its components."""
    if pixels < 0:
        raise OptionError(f"option grow: must be >= 0 (got {pixels})")
    if pixels == 0 or not mask.any():
        return mask
    height, width = mask.shape
    grown = mask.copy()
    count, _labels, stats, _ = cv2.connectedComponentsWithStats(
        np.ascontiguousarray(mask).view(np.uint8), connectivity=8, ltype=cv2.CV_32S)
    del _labels
    for x, y, w, h, _area in stats[1:count]:
        y0, x0 = max(0, y - pixels), max(0, x - pixels)
        y1, x1 = min(height, y + h + pixels), min(width, x + w + pixels)
        # distance of every pixel in the box to the nearest mask pixel (mask pixels are the zeros)
        outside = np.where(mask[y0:y1, x0:x1], 0, 255).astype(np.uint8)
        distance = cv2.distanceTransform(outside, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        grown[y0:y1, x0:x1] |= distance <= pixels
    return grown


def coverage(mask: np.ndarray) -> float:
    """Fraction of the photo inside the mask."""
    return float(np.count_nonzero(mask)) / max(mask.size, 1)


def require_context(mask: np.ndarray, label: str = "mask", *, how: str = "") -> None:
    """Refuse a mask that leaves less than MIN_CONTEXT of the photo to fill from (InputError): a fill of the
    whole photo would invent everything or, worse, hand the input back unchanged. ``how``: what made the
    mask this large (", grown by 8 px"), for the message."""
    left = 1.0 - coverage(mask)
    if left < MIN_CONTEXT:
        kept = "no pixel" if left == 0 else f"only {left:.2%} of the photo"
        raise InputError(f"{label}{how} leaves {kept} outside it: nothing to fill from (at least "
                         f"{MIN_CONTEXT:.0%} must stay); mask less of the photo")


def prepare_mask(source: Any, shape: tuple[int, int], *, grow: int = 0, resize: bool = False,
                 what: str | None = None) -> np.ndarray:
    """Load, fit, and grow a mask for a photo of ``shape`` (height, width); the grown boolean mask.

    Raises :class:`~tessera.errors.InputError` when the mask is empty, of another size (without ``resize``) or
    covers (grown) so much that too little is left to fill from (:func:`require_context`); warns
    (:class:`LargeMaskWarning`) when it covers more than 30 % of the photo.
    """
    label = what or (f"mask {source}" if isinstance(source, (str, PathLike)) else "mask")
    mask = fit_mask(load_mask(source, what=label), shape, resize=resize, what=label)
    if not mask.any():
        raise InputError(f"{label} is empty: no pixel above 127, nothing to inpaint")
    mask = grow_mask(mask, grow)
    require_context(mask, label, how=f", grown by {grow} px," if grow else "")
    share = coverage(mask)
    if share > COVERAGE_WARNING:
        warnings.warn(f"{label} covers {share:.0%} of the photo (over {COVERAGE_WARNING:.0%}): the fill has "
                      f"little context and quality drops; mask less at a time", LargeMaskWarning, stacklevel=2)
    return mask
