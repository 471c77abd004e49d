"""What every decoder of the package shares: the pixel limit, the decoded pieces, the band-by-band helpers.

The limit is checked from a file's header before any pixel is decoded (:func:`check_limits`: decompression
bombs, and pictures whose decoding would not fit in the memory available). Decoders hand a :class:`Decoded`
to :func:`tessera.image.exif.assemble`, which turns it upright into a Picture. Pixels are converted and moved a
band of rows at a time (:func:`band_rows`), so that a picture is never held twice while it is decoded.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from tessera.errors import ImageReadError, ImageTooLargeError, OptionError

__all__ = [
    "BAND_BYTES",
    "DECODE_ERRORS",
    "DECODE_PEAK",
    "DEFAULT_MAX_PIXELS",
    "Decoded",
    "FirstFrameWarning",
    "MEMORY_SHARE",
    "READABLE_FORMATS",
    "band_rows",
    "check_limits",
    "check_max_pixels",
    "corrupt",
    "front_channels",
    "planes",
]

DEFAULT_MAX_PIXELS = 500_000_000
"""The default limit's absolute cap: pictures with more pixels are refused before decoding, unless the caller
sets its own ``max_pixels``. The default limit is lower where the decoded pixels would not fit in memory."""

READABLE_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF")
"""The formats :func:`load_image` decodes, recognised by their content whatever the file is called."""

MEMORY_SHARE = 0.75
"""Under the default limit (``max_pixels="auto"``), decoding may take at most this share of the memory available
when the file is opened. Decoding peaks at 1.5 times the decoded pixels for most files, so these may take half of
the available memory; progressive JPEG and WEBP peak higher (their libraries buffer a whole frame of their own)."""

# Peak memory of decoding, as a multiple of the decoded pixels: tessera's decoders stay within 1.5 (the peaks of
# libjpeg's progressive JPEG and libwebp's frames are in tessera.image.pillow).
DECODE_PEAK = 1.5

BAND_BYTES = 4 << 20  # the rows converted at a time take about this much (their copies included)


class FirstFrameWarning(UserWarning):
    """An animated image (GIF, APNG or WEBP) of which only the first frame is read."""


class Decoded(NamedTuple):
    """What a decoder hands to :func:`assemble`.

    ``pixels`` is HxWx3 (gray sources have three equal channels) and ``alpha`` HxW or None, both as stored (EXIF
    orientation not applied yet); ``info`` is the metadata found while decoding (Pillow's ``info``).
    """

    pixels: np.ndarray
    alpha: np.ndarray | None
    gray: bool
    info: dict[str, Any]
    animated: bool = False


def check_max_pixels(max_pixels: object) -> None:
    """Refuse a ``max_pixels`` that is neither a positive integer, ``"auto"`` nor None (see load_image)."""
    if max_pixels is None or (isinstance(max_pixels, str) and max_pixels == "auto"):
        return
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels < 1:
        raise OptionError(f"max_pixels must be a positive integer, 'auto' or None, got {max_pixels!r}")


def check_limits(
    path: Path,
    width: int,
    height: int,
    bytes_per_pixel: int,
    max_pixels: int | str | None,
    peak: float = DECODE_PEAK,
) -> None:
    """Refuse, from the header alone, a corrupt size or one over the limit ``max_pixels`` sets (see load_image).

    ``bytes_per_pixel`` is what a pixel of the Picture will take, ``peak`` the decoder's peak memory in decoded
    pixels.
    """
    if width <= 0 or height <= 0:
        raise ImageReadError(f"{path}: corrupt header (size {width}x{height})")
    if max_pixels is None:
        return
    automatic = isinstance(max_pixels, str)
    limit = DEFAULT_MAX_PIXELS if automatic else int(max_pixels)  # type: ignore[arg-type]
    if width * height > limit:
        raise ImageTooLargeError(
            f"{path}: {width}x{height} = {width * height:,} pixels is over the limit of {limit:,} pixels "
            f"(raise max_pixels, --max-pixels on the command line, to read it)"
        )
    if automatic:
        _check_fits_in_memory(path, width, height, bytes_per_pixel, peak)


def _check_fits_in_memory(path: Path, width: int, height: int, bytes_per_pixel: int, peak: float) -> None:
    """Refuse pixels whose decoding would take more than :data:`MEMORY_SHARE` of the memory available now."""
    import psutil

    available = int(psutil.virtual_memory().available)
    budget = available * MEMORY_SHARE
    decoded = width * height * bytes_per_pixel
    if decoded * peak > budget:
        from tessera.options import format_bytes

        raise ImageTooLargeError(
            f"{path}: {width}x{height} = {width * height:,} pixels take {format_bytes(decoded)} decoded and up to "
            f"{format_bytes(decoded * peak)} while decoding, more than {MEMORY_SHARE:.0%} of the "
            f"{format_bytes(available)} of memory available: the limit is {int(budget / (bytes_per_pixel * peak)):,} "
            f"pixels now (raise max_pixels, --max-pixels on the command line, to read it anyway)"
        )


def corrupt(path: Path, error: BaseException) -> ImageReadError:
    """The error for a file whose data a decoder refused with ``error``."""
    reason = str(error) or type(error).__name__
    return ImageReadError(f"{path}: truncated or corrupt image data ({reason})")


# Errors Pillow, tifffile and zlib raise on bad data; anything else is a bug and is left to propagate.
DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, struct.error, zlib.error)


def band_rows(row_bytes: int) -> int:
    """How many rows of ``row_bytes`` bytes make one band of the band-by-band conversions."""
    return max(1, BAND_BYTES // max(1, row_bytes))


def front_channels(array: np.ndarray, keep: int) -> np.ndarray:
    """The first ``keep`` channels of an HxWxC array as a C-contiguous array, in the array's own memory if it can.

    A C-contiguous array is compacted in place, band by band: each band is copied out before its rows are
    written, and the rows written (at ``keep``/C of their place) never reach a row not yet read, so the picture
    is never held twice. Any other array is copied.
    """
    height, width, count = array.shape
    if keep == count and array.flags.c_contiguous:
        return array
    if not (array.flags.c_contiguous and array.flags.writeable):
        return np.ascontiguousarray(array[:, :, :keep])
    front = array.reshape(-1)[: height * width * keep].reshape(height, width, keep)
    rows = band_rows(width * count * array.itemsize)
    for top in range(0, height, rows):
        band = array[top : top + rows, :, :keep].copy()
        front[top : top + len(band)] = band
    return front


def planes(channels: np.ndarray, has_alpha: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """HxWx3 pixels and HxW alpha from HxW(xC) gray or RGB channels with alpha last, copying as little as it can."""
    if channels.ndim == 2:
        channels = channels[:, :, None]
    alpha = np.ascontiguousarray(channels[:, :, -1]) if has_alpha else None
    if channels.shape[2] - has_alpha == 1:
        return np.repeat(channels[:, :, :1], 3, axis=2), alpha
    return front_channels(channels, 3), alpha
