"""The pixel work of ``tessera resize``: the fitted size, area-averaged shrinking of any sample array, and the
mapping of shrunk colours back onto a palette.

Shrinking is OpenCV's area averaging (``INTER_AREA``: every source pixel counts, no aliasing), called directly so
that the command never imports torch. Samples of every numeric type and any number of channels are shrunk in
their own type (OpenCV's unsupported integer types through float64, which holds them exactly); bilevel samples
are averaged and thresholded back to two levels. Colour with a straight alpha is shrunk premultiplied, so that
the colour of transparent pixels (arbitrary in a GIF) does not bleed into the visible edge.
"""
from __future__ import annotations

import numpy as np

__all__ = ["fitted_size", "nearest_in_palette", "shrink_array", "shrink_premultiplied"]

_OPENCV_TYPES = (np.uint8, np.uint16, np.int16, np.float32, np.float64)
_CHANNELS_AT_ONCE = 4  # OpenCV resizes at most a few hundred channels at a time; groups of 4 are always safe


def fitted_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The size of a ``width`` x ``height`` picture fitted inside ``max_side`` squared (unchanged if it fits)."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    ratio = max_side / longest
    return max(1, round(width * ratio)), max(1, round(height * ratio))


def shrink_array(samples: np.ndarray, width: int, height: int) -> np.ndarray:
    """HxW or HxWxC ``samples`` of any numeric or boolean type shrunk to ``width`` x ``height``, same type and
    shape otherwise (area averaging; integers rounded and clipped to their type; booleans thresholded at half)."""
    import cv2

    if samples.shape[1] == width and samples.shape[0] == height:
        return samples
    if samples.dtype == np.bool_:
        return shrink_array(samples.astype(np.float32), width, height) >= 0.5
    if samples.ndim == 3 and samples.shape[2] > _CHANNELS_AT_ONCE:
        groups = [shrink_array(samples[:, :, start:start + _CHANNELS_AT_ONCE], width, height)
                  for start in range(0, samples.shape[2], _CHANNELS_AT_ONCE)]
        return np.concatenate(groups, axis=2)
    dtype = samples.dtype
    source = samples if dtype in _OPENCV_TYPES else samples.astype(np.float64)
    shrunk = cv2.resize(np.ascontiguousarray(source), (int(width), int(height)), interpolation=cv2.INTER_AREA)
    if samples.ndim == 3 and shrunk.ndim == 2:
        shrunk = shrunk[:, :, None]  # OpenCV drops a single channel's axis
    return shrunk if shrunk.dtype == dtype else _back_to(shrunk, dtype)


def shrink_premultiplied(colour: np.ndarray, alpha: np.ndarray, width: int, height: int,
                         full: float) -> tuple[np.ndarray, np.ndarray]:
    """HxWxC ``colour`` with its straight HxW ``alpha`` (``full`` = opaque) shrunk to ``width`` x ``height``,
    averaged premultiplied: a transparent pixel adds nothing to its neighbours' colour. Types are kept."""
    if alpha.min(initial=full) >= full:  # opaque: nothing to weigh, shrunk in its own type
        return shrink_array(colour, width, height), shrink_array(alpha, width, height)
    weight = alpha.astype(np.float32) / np.float32(full)
    premultiplied = np.empty((*alpha.shape, colour.shape[2] + 1), np.float32)
    np.multiply(colour, weight[:, :, None], out=premultiplied[:, :, :-1])
    premultiplied[:, :, -1] = weight
    del weight
    shrunk = shrink_array(premultiplied, width, height)
    coverage = shrunk[:, :, -1]
    with np.errstate(divide="ignore", invalid="ignore"):
        straight = np.where(coverage[:, :, None] > 0, shrunk[:, :, :-1] / coverage[:, :, None], 0.0)
    return _back_to(straight, colour.dtype), _back_to(coverage * np.float32(full), alpha.dtype)


def _back_to(values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``values`` in ``dtype``: integers rounded and clipped to its range."""
    if dtype.kind in "iu":
        limits = np.iinfo(dtype)
        return np.clip(np.rint(values), limits.min, limits.max).astype(dtype)
    return values.astype(dtype)


def nearest_in_palette(rgb: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """The index, in the Kx3 uint8 ``palette`` (1 <= K <= 256), of the colour nearest each pixel of the HxWx3
    uint8 ``rgb`` (Pillow's palette matching, without dithering: flat areas stay flat and compress well)."""
    from PIL import Image

    matcher = Image.new("P", (1, 1))
    matcher.putpalette(np.ascontiguousarray(palette, dtype=np.uint8).tobytes())
    image = Image.frombytes("RGB", (rgb.shape[1], rgb.shape[0]), np.ascontiguousarray(rgb).tobytes())
    return np.asarray(image.quantize(palette=matcher, dither=Image.Dither.NONE))
