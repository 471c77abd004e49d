"""Pictures in memory: :class:`Picture` and the conversions between pixel dtypes.

Every other module of the package, and the engine, tiling and task modules, build on these; they need numpy and
nothing else (no decoder), so that importing them never loads Pillow, OpenCV or tifffile. The two helpers that
resize or convert a plane import OpenCV when they are called.

Pixel values are uint8, uint16 or float32 in [0, 1] (:data:`DTYPES`); conversions between the two integer
types are exact integer paths, and to and from float are true divisions and rounded multiplications.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tessera.errors import InputError

__all__ = ["DTYPES", "Picture", "convert_dtype", "from_float", "max_value", "single_channel", "to_float"]

DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
"""The dtypes of a Picture's pixels: uint8, uint16, or float32 in [0, 1]."""


class _Keep:
    """Marker for "leave this field as it is" in :meth:`Picture.with_pixels`."""

    def __repr__(self) -> str:
        return "<keep>"


_KEEP: Any = _Keep()


@dataclass
class Picture:
    """A decoded picture and the metadata to write back with it.

    ``pixels`` is always HxWx3 RGB, C-contiguous, uint8, uint16 or float32 in [0, 1]; ``alpha`` is HxW of the same
    dtype or None. ``gray`` records that the source had one colour channel, so that ``save_image`` writes one
    back. ``exif`` starts with ``b"Exif\\0\\0"`` and has its orientation reset to 1. ``format`` is the Pillow-style
    name of the source format (PNG, JPEG, WEBP, TIFF, BMP...).
    """

    pixels: np.ndarray
    alpha: np.ndarray | None = None
    gray: bool = False
    icc_profile: bytes | None = None
    exif: bytes | None = None
    source: Path | None = None
    format: str | None = None

    def __post_init__(self) -> None:
        pixels = self.pixels
        if not isinstance(pixels, np.ndarray) or pixels.ndim != 3 or pixels.shape[2] != 3:
            raise InputError(f"picture pixels must be an HxWx3 RGB array, got {_describe_array(pixels)}")
        if pixels.dtype not in DTYPES:
            raise InputError(f"picture pixels must be uint8, uint16 or float32, got {pixels.dtype}")
        if pixels.shape[0] == 0 or pixels.shape[1] == 0:
            raise InputError(f"picture pixels must not be empty, got shape {pixels.shape}")
        self.pixels = np.ascontiguousarray(pixels)
        if self.alpha is not None:
            alpha = self.alpha
            if not isinstance(alpha, np.ndarray) or alpha.shape != pixels.shape[:2]:
                raise InputError(
                    f"picture alpha must be an array of shape {pixels.shape[:2]}, got {_describe_array(alpha)}"
                )
            if alpha.dtype != pixels.dtype:
                raise InputError(f"picture alpha must have the pixels' dtype {pixels.dtype}, got {alpha.dtype}")
            self.alpha = np.ascontiguousarray(alpha)

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def max_value(self) -> int | float:
        """The value of full intensity: 255, 65535 or 1.0."""
        return max_value(self.pixels.dtype)

    def with_pixels(self, pixels: np.ndarray, alpha: np.ndarray | None = _KEEP) -> Picture:
        """Return a copy with new pixels (and alpha) and the same metadata.

        With ``alpha`` left out, the current alpha is kept: resized to the new size when it differs (Lanczos when
        enlarging, area averaging when shrinking) and converted to the new dtype. Pass ``alpha=None`` to drop it.
        """
        pixels = np.asarray(pixels)
        if alpha is _KEEP:
            alpha = self.alpha
            if alpha is not None and pixels.ndim >= 2 and alpha.shape != pixels.shape[:2]:
                alpha = _resize_plane(alpha, pixels.shape[1], pixels.shape[0])
        if alpha is not None and pixels.dtype in DTYPES:
            alpha = convert_dtype(np.asarray(alpha), pixels.dtype)
        return dataclasses.replace(self, pixels=pixels, alpha=alpha)


def to_float(pixels: np.ndarray) -> np.ndarray:
    """Return ``pixels`` as float32 in [0, 1]: integers are divided by their full-scale value, floats kept."""
    pixels = np.asarray(pixels)
    # a true division (not a multiplication by 1/255) gives the same floats as ``tensor / 255``, so a tiled
    # result can match an untiled reference computed the usual way to the last bit
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / np.float32(255)
    if pixels.dtype == np.uint16:
        return pixels.astype(np.float32) / np.float32(65535)
    if pixels.dtype == np.bool_:
        return pixels.astype(np.float32)
    if pixels.dtype.kind == "f":
        return pixels.astype(np.float32, copy=False)
    raise InputError(f"cannot convert {pixels.dtype} pixels to float: expected uint8, uint16, bool or float")


def from_float(array: np.ndarray, dtype: Any) -> np.ndarray:
    """Return float ``array`` (nominally [0, 1]) as ``dtype``: scaled, rounded and clipped; NaN becomes 0."""
    dtype = np.dtype(dtype)
    if dtype not in DTYPES:
        raise InputError(f"cannot convert pixels to {dtype}: expected uint8, uint16 or float32")
    array = np.nan_to_num(np.asarray(array, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    if dtype == np.float32:
        return np.clip(array, 0.0, 1.0)
    scaled = np.rint(array * np.float32(max_value(dtype)))
    return np.clip(scaled, 0, max_value(dtype)).astype(dtype)


def convert_dtype(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Return ``array`` in ``dtype`` at the same intensity; exact integer paths between uint8 and uint16."""
    dtype = np.dtype(dtype)
    if array.dtype == dtype:
        return array
    if array.dtype == np.uint8 and dtype == np.uint16:
        return array.astype(np.uint16) * np.uint16(257)
    if array.dtype == np.uint16 and dtype == np.uint8:
        return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    return from_float(to_float(array), dtype)


def max_value(dtype: np.dtype) -> int | float:
    if dtype == np.uint8:
        return 255
    if dtype == np.uint16:
        return 65535
    return 1.0


def _resize_plane(plane: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize one HxW plane: area averaging when shrinking (no aliasing), Lanczos when enlarging."""
    import cv2

    shrinking = width * height < plane.shape[0] * plane.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LANCZOS4
    source = plane if plane.dtype in DTYPES else plane.astype(np.float32)
    resized = cv2.resize(source, (int(width), int(height)), interpolation=interpolation)
    if resized.dtype == np.float32:
        resized = np.clip(resized, 0.0, 1.0)
    return resized


def _describe_array(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"shape {value.shape} {value.dtype}"
    return type(value).__name__


def single_channel(pixels: np.ndarray) -> np.ndarray:
    """HxWx1 from RGB: the channel itself when all three are equal, the luma (BT.601 weights) otherwise."""
    red = pixels[:, :, 0]
    if np.array_equal(red, pixels[:, :, 1]) and np.array_equal(red, pixels[:, :, 2]):
        return pixels[:, :, :1]
    import cv2

    return cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)[:, :, None]
