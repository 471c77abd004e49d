"""Read and write pictures: the first and last step of every task.

``load_image`` turns a file into a :class:`Picture`: RGB pixels (uint8, uint16 or float32 in [0, 1]) with the
alpha channel kept aside, a ``gray`` flag for one-channel sources, the ICC profile and the EXIF block carried
along, and the EXIF orientation already applied. The pixel count is read from the header and checked against a
limit before anything is decoded (decompression bombs). ``save_image`` writes a picture back atomically: the
encoder writes a temporary file in the target folder, which is renamed over the target only once complete.

Decoders, an allow-list recognised by content (never by suffix): PNG, JPEG, BMP and GIF (first frame) through
Pillow's plugins of these formats only, never another one (EPS, PDF ... are refused, no external program ever
runs); 16-bit PNG through Pillow too, in two passes (it keeps 8 bits a sample); WEBP through libwebp
(imagecodecs); TIFF through tifffile (16-bit, float, BigTIFF, tiled), with OpenCV's libtiff as the fallback
for compressions tifffile cannot decode without ``imagecodecs``. Each decodes into memory tessera provides and
converts band by band, so loading peaks at about 1.5 times the decoded pixels at most (see ``_Storage``).

Conventions:
- ``Picture.exif`` always starts with ``b"Exif\\0\\0"`` and has its orientation set to 1 (it was applied).
- CMYK sources are converted to RGB through their embedded ICC profile when there is one (the result is sRGB, so
  ``icc_profile`` is then None), with Pillow's naive formula otherwise. 16-bit CMYK goes through 8 bits.
- Float sources are clipped to [0, 1] (NaN becomes 0).
- On save, uint16 stays 16-bit in PNG and TIFF; float32 stays float in TIFF and becomes 16-bit in PNG; JPEG, WEBP
  and BMP get 8 bits. Alpha is written to PNG, WEBP and TIFF and dropped for JPEG and BMP. Gray pictures are
  written with one channel, except to WEBP, which has no gray mode.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import functools
import hashlib
import importlib.util
import io
import logging
import math
import mmap
import os
import re
import secrets
import socket
import stat
import struct
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import cv2
import numpy as np
import tifffile
from PIL import Image, TiffImagePlugin
# The Pillow plugins of the formats tessera reads, registered here without Image.init()'s every other plugin.
from PIL import BmpImagePlugin, GifImagePlugin, JpegImagePlugin, PngImagePlugin, WebPImagePlugin  # noqa: F401

from tessera.errors import (
    ImageReadError,
    ImageTooLargeError,
    InputError,
    OptionError,
    OutputError,
    ResourceError,
    look_up_option,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FirstFrameWarning",
    "IMAGE_SUFFIXES",
    "MEMORY_SHARE",
    "Picture",
    "READABLE_FORMATS",
    "from_float",
    "load_image",
    "read_image_size",
    "save_image",
    "to_float",
]

DEFAULT_MAX_PIXELS = 500_000_000
"""The default limit's absolute cap: pictures with more pixels are refused before decoding, unless the caller
sets its own ``max_pixels``. The default limit is lower where the decoded pixels would not fit in memory."""

IMAGE_SUFFIXES: dict[str, str] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}
"""The file suffixes ``save_image`` writes, with the format each one selects."""

_WRITABLE_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP")
_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
_LARGEST_SIDE = {"JPEG": 65_535, "WEBP": 16_383, "PNG": 2**31 - 1, "BMP": 2**31 - 1, "TIFF": 2**32 - 1}
_BIGTIFF_FROM_BYTES = 2**32 - 2**25  # classic TIFF offsets are 32-bit; keep a margin for tags and the EXIF block
_EXIF_PREFIX = b"Exif\x00\x00"
_ORIENTATION_TAG = 0x0112
_EXIF_IFD_TAG = 0x8769
_GPS_IFD_TAG = 0x8825
_INTEROP_IFD_TAG = 0xA005
# IFD0 tags that describe the photograph rather than the file layout: carried between TIFF and EXIF blocks.
_DESCRIPTIVE_TAGS = (0x010E, 0x010F, 0x0110, 0x0131, 0x0132, 0x013B, 0x8298)
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


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
        if pixels.dtype not in _DTYPES:
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
        return _max_value(self.pixels.dtype)

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
        if alpha is not None and pixels.dtype in _DTYPES:
            alpha = _convert_dtype(np.asarray(alpha), pixels.dtype)
        return dataclasses.replace(self, pixels=pixels, alpha=alpha)


# --------------------------------------------------------------------------------------------- value conversions


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
    if dtype not in _DTYPES:
        raise InputError(f"cannot convert pixels to {dtype}: expected uint8, uint16 or float32")
    array = np.nan_to_num(np.asarray(array, dtype=np.float32), nan=0.0, posinf=1.0, neginf=0.0)
    if dtype == np.float32:
        return np.clip(array, 0.0, 1.0)
    scaled = np.rint(array * np.float32(_max_value(dtype)))
    return np.clip(scaled, 0, _max_value(dtype)).astype(dtype)


def _convert_dtype(array: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Return ``array`` in ``dtype`` at the same intensity; exact integer paths between uint8 and uint16."""
    dtype = np.dtype(dtype)
    if array.dtype == dtype:
        return array
    if array.dtype == np.uint8 and dtype == np.uint16:
        return array.astype(np.uint16) * np.uint16(257)
    if array.dtype == np.uint16 and dtype == np.uint8:
        return ((array.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    return from_float(to_float(array), dtype)


def _max_value(dtype: np.dtype) -> int | float:
    if dtype == np.uint8:
        return 255
    if dtype == np.uint16:
        return 65535
    return 1.0


def _resize_plane(plane: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize one HxW plane: area averaging when shrinking (no aliasing), Lanczos when enlarging."""
    shrinking = width * height < plane.shape[0] * plane.shape[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_LANCZOS4
    source = plane if plane.dtype in _DTYPES else plane.astype(np.float32)
    resized = cv2.resize(source, (int(width), int(height)), interpolation=interpolation)
    if resized.dtype == np.float32:
        resized = np.clip(resized, 0.0, 1.0)
    return resized


def _describe_array(value: object) -> str:
    if isinstance(value, np.ndarray):
        return f"shape {value.shape} {value.dtype}"
    return type(value).__name__


# --------------------------------------------------------------------------------------------------- reading


READABLE_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF", "BMP", "GIF")
"""The formats :func:`load_image` decodes, recognised by their content whatever the file is called."""

MEMORY_SHARE = 0.75
"""Under the default limit (``max_pixels="auto"``), decoding may take at most this share of the memory available
when the file is opened. Decoding peaks at 1.5 times the decoded pixels for most files, so these may take half of
the available memory; progressive JPEG and WEBP peak higher (their libraries buffer a whole frame of their own)."""

# The Pillow plugins ever tried (TIFF goes to tifffile): Pillow is never left to pick one of its other plugins by
# content, some of which hand the file to external programs (EPS and PS to Ghostscript).
_PILLOW_FORMATS = tuple(name for name in READABLE_FORMATS if name != "TIFF")
# Formats people rename by mistake (or to attack), named in the refusal.
_REFUSED_SIGNATURES = (
    (b"%!PS", "PostScript/EPS"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
    (b"%PDF", "PDF"),
    (b"8BPS", "Photoshop PSD"),
)
# Pillow's 8-bit modes of 4 bytes a pixel, whose storage tessera provides: the RGB pixels fit in it (_Storage).
_STORAGE_PIXEL_BYTES = dict.fromkeys(("LA", "La", "PA", "RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr"), 4)
# Gray and palette modes, whose pixels cannot fit in their storage: provided for PNG only, to check its last row.
_PNG_STORAGE_PIXEL_BYTES = {**_STORAGE_PIXEL_BYTES, "1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2}
_BAND_BYTES = 4 << 20  # the rows converted at a time take about this much (their copies included)
_BAND_PIXEL_BYTES = 16  # the most bytes a pixel of a band takes in a conversion (source, copies, result)
# Peak memory of decoding, as a multiple of the decoded pixels: tessera's decoders stay within 1.5; libjpeg holds
# every coefficient of a progressive JPEG, and libwebp a whole ARGB frame of a lossless WEBP.
_DECODE_PEAK = 1.5
_PROGRESSIVE_JPEG_PEAK = 2.5
_WEBP_PEAK = 3.5
# Sound lower bounds of an encoded size (no valid file is smaller), used to refuse headers that lie:
_DEFLATE_BEST_RATIO = 1032  # a 258-byte deflate match costs at least 2 bits (a length and a distance code)
_PNG_SAMPLES = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # samples a pixel of each PNG colour type
_JPEG_HUFFMAN_FRAMES = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7})  # >= 1 bit per 8x8 block
_GIF_BYTES_PER_PIXEL = 3 / 8192  # an LZW code stands for at most 4096 pixels, and then takes 12 bits
# Pillow keeps 8 bits a sample; the raw modes that give the high and the low byte of 16-bit PNG samples:
_PNG16_PASSES = {
    "RGB;16B": ("RGB;16B", "RGB;16L"),
    "RGBA;16B": ("RGBA;16B", "RGBA;16L"),
    "LA;16B": ("RGBA",),  # gray+alpha's 4 bytes a pixel fit Pillow's RGBA pixel as they are
}


class FirstFrameWarning(UserWarning):
    """An animated image (GIF, APNG or WEBP) of which only the first frame is read."""


class _Decoded(NamedTuple):
    """What a decoder hands to :func:`_assemble`.

    ``pixels`` is HxWx3 (gray sources have three equal channels) and ``alpha`` HxW or None, both as stored (EXIF
    orientation not applied yet); ``info`` is the metadata found while decoding (Pillow's ``info``).
    """

    pixels: np.ndarray
    alpha: np.ndarray | None
    gray: bool
    info: dict[str, Any]
    animated: bool = False


def read_image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Return ``(width, height)`` of the image at ``path`` as displayed (EXIF orientation applied).

    Reads the header only, never the pixel data, so it is cheap on any size of file. Only the formats of
    :data:`READABLE_FORMATS` are recognised, as by :func:`load_image`.
    """
    path = Path(path)
    with _open_for_reading(path) as file:
        if _is_tiff(file):
            with _tifffile_messages(path, warn=False), _open_tiff(file, path) as tiff:
                page = _first_tiff_page(tiff, path)
                width, height = int(page.imagewidth), int(page.imagelength)
                orientation = _valid_orientation(page.tags.valueof(274, 1))
        else:
            with _open_with_pillow(file, path) as image:
                width, height = image.size
                orientation = _orientation(_normalise_exif(image.info.get("exif")))
    return (height, width) if orientation >= 5 else (width, height)


def load_image(path: str | os.PathLike[str], *, max_pixels: int | str | None = "auto") -> Picture:
    """Read the image at ``path`` into a :class:`Picture` (see the module's docstring for the conventions).

    Only PNG, JPEG, WEBP, TIFF, BMP and GIF are read (:data:`READABLE_FORMATS`), recognised by their content;
    anything else is refused. Of an animation (GIF, APNG, WEBP) the first frame is read, with a
    :class:`FirstFrameWarning`. ``max_pixels`` is checked against the header before any pixel is decoded:
    ``"auto"`` (the default) allows :data:`DEFAULT_MAX_PIXELS` pixels, and no more than can be decoded within
    :data:`MEMORY_SHARE` of the memory available now (the decoded pixels within half of it, for most files); an
    integer allows that many pixels whatever the memory; None sets no limit. A header that claims more pixels
    than the file could hold is refused as truncated before anything is allocated. Decoding takes at most 1.5
    times the decoded pixels' bytes, except where a library buffers a frame of its own (progressive JPEG, WEBP)
    and for EXIF orientations that transpose (one more copy).

    Raises ImageReadError (missing, not an image tessera reads, truncated or corrupt, unsupported mode),
    ImageTooLargeError, or OptionError for a ``max_pixels`` that is none of the above.
    """
    _check_max_pixels(max_pixels)
    path = Path(path)
    with _open_for_reading(path) as file:
        if _is_tiff(file):
            with _tifffile_messages(path):
                return _load_tiff(file, path, max_pixels)
        return _load_with_pillow(file, path, max_pixels)


def _open_for_reading(path: Path) -> BinaryIO:
    """Open ``path`` for reading; a folder, pipe, device or socket is refused (a pipe without blocking on it)."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
    try:
        descriptor = os.open(path, flags)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageReadError(f"{path}: is a folder, not an image file") from None
    except PermissionError:
        raise ImageReadError(f"{path}: permission denied") from None
    except OSError as error:
        raise ImageReadError(f"{path}: cannot open ({error.strerror or error})") from None
    kind = os.fstat(descriptor).st_mode
    if not stat.S_ISREG(kind):
        os.close(descriptor)
        if stat.S_ISDIR(kind):
            raise ImageReadError(f"{path}: is a folder, not an image file")
        raise ImageReadError(f"{path}: not a regular file (a pipe, device or socket), not an image file")
    return os.fdopen(descriptor, "rb")


def _check_max_pixels(max_pixels: object) -> None:
    if max_pixels is None or (isinstance(max_pixels, str) and max_pixels == "auto"):
        return
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels < 1:
        raise OptionError(f"max_pixels must be a positive integer, 'auto' or None, got {max_pixels!r}")


def _check_limits(
    path: Path,
    width: int,
    height: int,
    bytes_per_pixel: int,
    max_pixels: int | str | None,
    peak: float = _DECODE_PEAK,
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
        from .options import format_bytes

        raise ImageTooLargeError(
            f"{path}: {width}x{height} = {width * height:,} pixels take {format_bytes(decoded)} decoded and up to "
            f"{format_bytes(decoded * peak)} while decoding, more than {MEMORY_SHARE:.0%} of the "
            f"{format_bytes(available)} of memory available: the limit is {int(budget / (bytes_per_pixel * peak)):,} "
            f"pixels now (raise max_pixels, --max-pixels on the command line, to read it anyway)"
        )


def _corrupt(path: Path, error: BaseException) -> ImageReadError:
    reason = str(error) or type(error).__name__
    return ImageReadError(f"{path}: truncated or corrupt image data ({reason})")


# Errors Pillow, tifffile and zlib raise on bad data; anything else is a bug and is left to propagate.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, struct.error, zlib.error)


def _assemble(
    path: Path,
    decoded: _Decoded,
    *,
    orientation: int,
    icc_profile: bytes | None,
    exif: bytes | None,
    format: str | None,
) -> Picture:
    """Turn decoded pixels upright and make them a Picture; warn about an animation only now that all went well."""
    pixels = _orient(decoded.pixels, orientation)
    alpha = None if decoded.alpha is None else _orient(decoded.alpha, orientation)
    if decoded.animated:
        warnings.warn(f"{path}: animated {format}: only its first frame is read", FirstFrameWarning, stacklevel=4)
    return Picture(
        pixels=pixels,
        alpha=alpha,
        gray=decoded.gray,
        icc_profile=icc_profile or None,
        exif=_reset_orientation(exif) if exif else None,
        source=path,
        format=format,
    )


def _band_rows(row_bytes: int) -> int:
    """How many rows of ``row_bytes`` bytes make one band of the band-by-band conversions."""
    return max(1, _BAND_BYTES // max(1, row_bytes))


def _front_channels(array: np.ndarray, keep: int) -> np.ndarray:
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
    rows = _band_rows(width * count * array.itemsize)
    for top in range(0, height, rows):
        band = array[top : top + rows, :, :keep].copy()
        front[top : top + len(band)] = band
    return front


def _planes(channels: np.ndarray, has_alpha: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """HxWx3 pixels and HxW alpha from HxW(xC) gray or RGB channels with alpha last, copying as little as it can."""
    if channels.ndim == 2:
        channels = channels[:, :, None]
    alpha = np.ascontiguousarray(channels[:, :, -1]) if has_alpha else None
    if channels.shape[2] - has_alpha == 1:
        return np.repeat(channels[:, :, :1], 3, axis=2), alpha
    return _front_channels(channels, 3), alpha


def _orient(array: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an HxW(xC) array stored with EXIF ``orientation`` upright.

    The mirrorings and the half turn (2, 3, 4) are done in place, band by band; the transpositions (5 to 8) need
    a new array (one more copy of the pixels while it is made).
    """
    if orientation >= 5:
        return _transposed(array, orientation)
    if orientation in (2, 3):
        _mirror_in_place(array)
    if orientation in (3, 4):
        _flip_in_place(array)
    return array


def _mirror_in_place(array: np.ndarray) -> None:
    rows = _band_rows(array[:1].nbytes)
    for top in range(0, array.shape[0], rows):
        array[top : top + rows] = array[top : top + rows, ::-1]  # numpy buffers the overlapping band


def _flip_in_place(array: np.ndarray) -> None:
    height = array.shape[0]
    rows = _band_rows(array[:1].nbytes)
    for top in range(0, height // 2, rows):
        bottom = min(top + rows, height // 2)
        upper = array[top:bottom].copy()
        array[top:bottom] = array[height - bottom : height - top][::-1]
        array[height - bottom : height - top] = upper[::-1]


# ---------------------------------------------------------------------------------------------------- Pillow


def _open_with_pillow(file: BinaryIO, path: Path) -> Image.Image:
    """Identify ``file`` with the Pillow plugins of the allowed formats only, lazily (header only).

    This is ``PIL.Image.open(file, formats=...)`` without its decompression-bomb check: that check reads the
    process-wide ``Image.MAX_IMAGE_PIXELS`` and would refuse pictures our own, per-call limit allows. Our limit is
    checked by the caller, from the size found here, before decoding. No file name is given to Pillow, so that it
    never memory-maps the file in place of the storage tessera provides.
    """
    prefix = file.read(16)
    if not prefix:
        raise ImageReadError(f"{path}: not an image (empty file)")
    broken: BaseException | None = None  # why the plugin that recognised the signature could not read on
    for name in _PILLOW_FORMATS:
        factory, accept = Image.OPEN.get(name, (None, None))
        verdict = accept(prefix) if accept else factory is not None
        if not verdict or isinstance(verdict, str):
            continue
        file.seek(0)
        try:
            with _own_limit_only(path):
                return factory(file, "")  # type: ignore[misc]
        except (SyntaxError, IndexError, TypeError, struct.error) as error:
            broken = broken or error
        except (OSError, ValueError, EOFError) as error:
            raise _corrupt(path, error) from None
    if broken is not None:
        raise _corrupt(path, broken)
    raise _not_readable(path, prefix)


@contextlib.contextmanager
def _own_limit_only(path: Path) -> Iterator[None]:
    """Pillow's process-wide decompression-bomb guard, which some plugins apply themselves (GIF frames), in
    tessera's terms: its warning is silenced (tessera's own limit was checked), its error is ImageTooLargeError."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            yield
        except Image.DecompressionBombError as error:
            raise ImageTooLargeError(f"{path}: too large for Pillow's reader ({error})") from None


def _not_readable(path: Path, prefix: bytes) -> ImageReadError:
    kind = next((name for signature, name in _REFUSED_SIGNATURES if prefix.startswith(signature)), None)
    what = f"{kind} is not read" if kind else "unknown or unsupported format"
    return ImageReadError(f"{path}: not an image tessera reads ({what}; it reads {', '.join(READABLE_FORMATS)})")


def _load_with_pillow(file: BinaryIO, path: Path, max_pixels: int | str | None) -> Picture:
    with _open_with_pillow(file, path) as image:
        width, height = image.size
        sixteen_bit = image.format == "PNG" and _png_header(file)[0] == 16
        bytes_per_pixel = _pillow_bytes_per_pixel(image, sixteen_bit)
        _check_limits(path, width, height, bytes_per_pixel, max_pixels, _pillow_decode_peak(image))
        _check_encoded_size(file, path, image)
        format_name = image.format
        cmyk = image.mode == "CMYK"
        last_row = _png_last_row(file, height) if format_name == "PNG" else None
        if format_name == "PNG" and last_row is None:
            _check_png_rows(file, path, width, height)
        if sixteen_bit and image.mode != "I;16":
            decoded = _decode_png16(file, path, image, last_row)
        elif format_name == "WEBP":
            decoded = _decode_webp(file, path, image)
        else:
            decoded = _decode_with_pillow(image, path, last_row)
    exif = _normalise_exif(decoded.info.get("exif"))  # PNG's eXIf may come after IDAT: taken after decoding
    return _assemble(
        path,
        decoded,
        orientation=_orientation(exif),
        icc_profile=None if cmyk else decoded.info.get("icc_profile"),  # CMYK pixels are sRGB now
        exif=exif,
        format=format_name,
    )


def _pillow_bytes_per_pixel(image: Image.Image, sixteen_bit: bool) -> int:
    """Bytes a pixel of the Picture made from ``image`` takes (three colour samples, and alpha), from the header."""
    mode = image.mode
    itemsize = 2 if sixteen_bit or mode.startswith("I;16") or mode == "I" else 4 if mode == "F" else 1
    has_alpha = mode in ("RGBA", "LA", "La", "PA", "RGBa") or "transparency" in image.info
    return (3 + has_alpha) * itemsize


def _pillow_decode_peak(image: Image.Image) -> float:
    """The peak memory of decoding ``image``, in decoded pixels (see _DECODE_PEAK)."""
    if image.format == "WEBP":
        return _WEBP_PEAK
    if image.format in ("JPEG", "MPO") and image.info.get("progressive"):
        return _PROGRESSIVE_JPEG_PEAK
    return _DECODE_PEAK


def _is_animated(image: Image.Image) -> bool:
    """Whether a GIF, PNG (APNG) or WEBP has more than one frame (a multi-picture JPEG is not an animation)."""
    if image.format not in ("GIF", "PNG", "WEBP"):
        return False
    try:
        return bool(getattr(image, "is_animated", False))
    except _DECODE_ERRORS:
        return False  # the frames after the first are unreadable; the first one was read


class _Storage:
    """Memory tessera provides for a Pillow image to decode into: an anonymous memory map.

    Pillow keeps 4 bytes a pixel for RGB and every other colour mode; decoding into a map tessera owns lets the
    RGB samples then be moved to the front of the same memory (:func:`_front_channels`) and the unused quarter be
    given back (:meth:`keep`), instead of copying the whole picture out of Pillow's storage. It also lets a PNG's
    last row be checked (:func:`_plant_sentinel`).
    """

    def __init__(self, image: Image.Image, pixel_bytes: int):
        width, height = image.size
        flags = {"flags": mmap.MAP_PRIVATE} if hasattr(mmap, "MAP_PRIVATE") else {}
        self.memory = mmap.mmap(-1, width * height * pixel_bytes, **flags)
        self.pixel_bytes = pixel_bytes
        self.row_bytes = width * pixel_bytes
        self.core: Any = Image.core.map_buffer(self.memory, image.size, "raw", 0, (image.mode, self.row_bytes, 1))
        image.im = self.core

    @classmethod
    def attach(cls, image: Image.Image, modes: dict[str, int] = _STORAGE_PIXEL_BYTES) -> _Storage | None:
        """Give ``image`` its storage before it is loaded; None for a mode not in ``modes`` (Pillow allocates)."""
        pixel_bytes = modes.get(image.mode)
        if pixel_bytes is None:
            return None
        try:
            return cls(image, pixel_bytes)
        except (AttributeError, TypeError, ValueError, OSError):
            return None  # a Pillow that cannot map a buffer: it allocates its own storage

    def row(self, index: int) -> np.ndarray:
        """The bytes of row ``index``, as a view."""
        return np.frombuffer(self.memory, dtype=np.uint8, count=self.row_bytes, offset=index * self.row_bytes)

    def array(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """The first items of the storage as an array of ``shape`` (a view: the storage stays alive with it)."""
        return np.frombuffer(self.memory, dtype=dtype, count=math.prod(shape)).reshape(shape)

    def keep(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """Like :meth:`array`, after giving the rest of the storage back to the system.

        The map is shrunk only where the platform can and no view of it is left (Python refuses otherwise, and the
        map then stays whole): the caller drops its views first.
        """
        self.core = None
        try:
            self.memory.resize(math.prod(shape) * np.dtype(dtype).itemsize)
        except (BufferError, OSError, SystemError, ValueError, TypeError):
            pass
        return self.array(shape, dtype)


def _decode_with_pillow(image: Image.Image, path: Path, last_row: int | None = None) -> _Decoded:
    """Decode with the Pillow plugin that recognised the file, into a :class:`_Storage`, then convert in bands.

    Peak memory: 4/3 of the RGB pixels for colour sources (Pillow's storage, which then holds them), the pixels
    plus a third for gray and palette ones (their storage, then the pixels), plus a band. Progressive JPEGs add
    libjpeg's buffer of all the coefficients (about the size of the pixels), which no decoder can avoid.
    ``last_row`` is the row a PNG decoder writes last (:func:`_png_last_row`), checked to have been written.
    """
    png = last_row is not None
    storage = _Storage.attach(image, _PNG_STORAGE_PIXEL_BYTES if png else _STORAGE_PIXEL_BYTES)
    if png and storage is None:
        _check_png_rows(image.fp, path, *image.size)  # type: ignore[arg-type]
    _load_checked(image, path, storage.row(last_row) if storage is not None and last_row is not None else None)
    if storage is not None and image.im is not storage.core:
        storage = None  # the plugin replaced it (not PNG's): convert from Pillow's own storage
    pixels, alpha, gray, in_storage = _convert_bands(image, path, storage)
    info = dict(image.info)
    with _own_limit_only(path):
        animated = _is_animated(image)
    Image.Image.close(image)  # drops the core and its view of the storage (ImageFile.close would close our file)
    if storage is not None and in_storage:
        shape, dtype = pixels.shape, pixels.dtype
        del pixels  # the storage can shrink only once no view of it is left
        pixels = storage.keep(shape, dtype)
    return _Decoded(pixels, alpha, gray, info, animated)


def _load_checked(image: Image.Image, path: Path, last_row: np.ndarray | None = None) -> None:
    """Decode ``image`` (Pillow's ``load``), its decoder's errors made ImageReadError.

    ``last_row`` is where, in the storage given to ``image``, its PNG decoder writes its last row: random bytes
    planted there must be gone once it has decoded into that storage (:func:`_sentinel_intact`).
    """
    storage = image.im if last_row is not None else None
    sentinel = _plant_sentinel(last_row) if last_row is not None else b""
    try:
        with _own_limit_only(path):
            image.load()
    except _DECODE_ERRORS as error:
        raise _corrupt(path, error) from None
    if last_row is not None and image.im is storage and _sentinel_intact(last_row, sentinel):
        raise _rows_missing(path, image.size)


def _convert_bands(
    image: Image.Image, path: Path, storage: _Storage | None
) -> tuple[np.ndarray, np.ndarray | None, bool, bool]:
    """Convert a loaded Pillow image of any mode to HxWx3 pixels and HxW alpha, a band of rows at a time.

    The pixels are written to the front of ``storage`` when they take no more bytes than Pillow's pixels there
    (RGB, RGBA, LA, CMYK ...: each band is copied out before its rows are overwritten, and the rows written never
    reach a row not yet read), to a new array otherwise (gray, palette and 16-bit gray sources). Returns
    ``(pixels, alpha, gray, in_storage)``.
    """
    width, height = image.size
    rows = _band_rows(width * _BAND_PIXEL_BYTES)
    # a CMYK picture's colour transform is built once for all its bands (building one takes about as long as
    # converting a band with it)
    cmyk_to_rgb = _cmyk_converter(image.info.get("icc_profile"), path) if image.mode == "CMYK" else None
    first, gray, has_alpha = _band_channels(image, 0, rows, path, cmyk_to_rgb)
    dtype = first.dtype
    in_storage = storage is not None and 3 * dtype.itemsize <= storage.pixel_bytes
    shape = (height, width, 3)
    pixels = storage.array(shape, dtype) if storage is not None and in_storage else np.empty(shape, dtype)
    alpha = np.empty((height, width), dtype) if has_alpha else None
    channels = first
    for top in range(0, height, rows):
        if top:
            channels = _band_channels(image, top, top + rows, path, cmyk_to_rgb)[0]
        bottom = top + channels.shape[0]
        pixels[top:bottom] = channels[:, :, :3] if not has_alpha else channels[:, :, :-1]  # gray: broadcast
        if alpha is not None:
            alpha[top:bottom] = channels[:, :, -1]
    return pixels, alpha, gray, in_storage


def _band_channels(
    image: Image.Image, top: int, bottom: int, path: Path, cmyk_to_rgb: _ToRGB | None
) -> tuple[np.ndarray, bool, bool]:
    """:func:`_pillow_channels` of rows ``top`` to ``bottom`` (a copy), always HxWxC.

    The band is cut by Pillow's core, as ``Image.crop`` does but without its check of the process-wide
    ``Image.MAX_IMAGE_PIXELS`` (the limit is tessera's own, checked from the header).
    """
    band = image._new(image.im.crop((0, top, image.size[0], min(bottom, image.size[1]))))
    channels, gray, has_alpha = _pillow_channels(band, path, cmyk_to_rgb)
    return (channels[:, :, None] if channels.ndim == 2 else channels), gray, has_alpha


def _pillow_channels(image: Image.Image, path: Path, cmyk_to_rgb: _ToRGB | None) -> tuple[np.ndarray, bool, bool]:
    """Return (HxWxC array, gray, has_alpha) for a loaded Pillow image of any common mode (CMYK through
    ``cmyk_to_rgb`` when given: the :func:`_cmyk_converter` of its file, built once for all its bands)."""
    mode = image.mode
    has_transparency = "transparency" in image.info
    if mode in ("1", "L"):
        return np.asarray(image.convert("LA" if has_transparency else "L")), True, has_transparency
    if mode == "P" and _palette_is_gray(image):
        if has_transparency:
            return np.asarray(image.convert("RGBA"))[:, :, [0, 3]], True, True
        return np.asarray(image.convert("L")), True, False
    if mode in ("LA", "La"):
        return np.asarray(image.convert("LA")), True, True
    if mode.startswith("I;16"):
        values = np.asarray(image).astype(np.uint16)
        key = image.info.get("transparency")
        if isinstance(key, int):  # a 16-bit gray PNG's transparent value
            return np.dstack([values, np.where(values == key, 0, 65535).astype(np.uint16)]), True, True
        return values, True, False
    if mode == "I":
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageReadError(f"{path}: unsupported image mode I (32-bit integers beyond the 16-bit range)")
        return values.astype(np.uint16), True, False
    if mode == "F":
        return from_float(np.asarray(image), np.float32), True, False
    if mode == "CMYK":
        convert = cmyk_to_rgb or _cmyk_converter(image.info.get("icc_profile"), path)
        return np.asarray(convert(image)), False, False
    if mode in ("PA", "RGBA", "RGBa") or (mode in ("P", "RGB") and has_transparency):
        return np.asarray(image.convert("RGBA")), False, True
    if mode in ("P", "RGB", "RGBX", "YCbCr", "HSV"):
        return np.asarray(image.convert("RGB")), False, False
    raise ImageReadError(f"{path}: unsupported image mode {mode}")


def _palette_is_gray(image: Image.Image) -> bool:
    palette = image.getpalette("RGB") or []
    entries = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    return bool(len(entries)) and bool((entries == entries[:, :1]).all())


_ToRGB = Callable[[Image.Image], Image.Image]


def _cmyk_converter(icc_profile: object, path: Path) -> _ToRGB:
    """How the CMYK images of one file become sRGB: through its ICC profile when it has a usable one (the
    transform is built here, once), with Pillow's formula otherwise (with one warning for an unusable profile)."""
    if isinstance(icc_profile, bytes) and icc_profile:
        try:
            from PIL import ImageCms

            source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
            target = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
            return ImageCms.ImageCmsTransform(source, target, "CMYK", "RGB").apply
        except (ImportError, OSError, ValueError, TypeError) as error:  # PyCMSError is an OSError
            warnings.warn(f"{path}: ICC profile unusable ({error}); converting CMYK naively", stacklevel=3)
    return lambda image: image.convert("RGB")


# --------------------------------------------------------------------------------------- headers that lie


def _check_encoded_size(file: BinaryIO, path: Path, image: Image.Image) -> None:
    """Refuse a header that claims more pixels than the file's bytes could encode, before anything is allocated.

    Only sound lower bounds are used, which no valid file falls below (see ``_least_encoded_bytes``); a file
    above its bound that is still short of data is refused when its decoder runs out of it.
    """
    size = os.fstat(file.fileno()).st_size
    least = _least_encoded_bytes(file, image)
    if size < least:
        from .options import format_bytes

        width, height = image.size
        raise ImageReadError(
            f"{path}: truncated or corrupt image data (the header claims {width}x{height} pixels, which take at "
            f"least {format_bytes(least)} as {image.format}; the file has {format_bytes(size)})"
        )


def _least_encoded_bytes(file: BinaryIO, image: Image.Image) -> int:
    """The fewest bytes a valid file of ``image``'s format could encode its pixels in; 0 where no bound is sound.

    PNG: deflate packs at most 1032 bytes in 2 bits. Huffman-coded JPEG: every 8x8 block of the full-resolution
    component costs at least one bit. GIF: an LZW code stands for at most 4096 pixels. Uncompressed BMP: every
    row is stored. WEBP, arithmetic-coded JPEG and run-length BMP have no such bound (a flat picture can take
    almost nothing) and are left to their decoders, which refuse missing data.
    """
    width, height = image.size
    tile = image.tile[0] if image.tile else None
    if image.format == "PNG":
        depth, colour_type, _ = _png_header(file)
        samples = _PNG_SAMPLES.get(colour_type, 1)
        return height * ((width * samples * depth + 7) // 8) // _DEFLATE_BEST_RATIO
    if image.format in ("JPEG", "MPO") and _jpeg_frame_marker(file) in _JPEG_HUFFMAN_FRAMES:
        return -(-width // 8) * -(-height // 8) // 8
    if image.format == "GIF" and tile is not None:
        left, upper, right, lower = tile[1]
        return int((right - left) * (lower - upper) * _GIF_BYTES_PER_PIXEL)
    if image.format == "BMP" and tile is not None and tile[0] == "raw" and isinstance(tile[3], tuple):
        return int(tile[2]) + int(tile[3][1]) * height
    return 0


def _png_header(file: BinaryIO) -> tuple[int, int, bool]:
    """Bit depth, colour type and interlacing from a PNG's IHDR (8-bit RGB, not interlaced, when there is none)."""
    file.seek(0)
    header = file.read(29)
    if len(header) < 29 or not header.startswith(_PNG_SIGNATURE):
        return 8, 2, False
    return header[24], header[25], header[28] == 1


def _png_last_row(file: BinaryIO, height: int) -> int | None:
    """The row a PNG decoder writes last: the last one, or with Adam7 the last odd one (that of the last pass);
    None for an interlaced picture one row high, whose last pass writes part of a row only."""
    if not _png_header(file)[2]:
        return height - 1
    if height < 2:
        return None
    return height - 1 if (height - 1) % 2 else height - 2


def _plant_sentinel(row: np.ndarray) -> bytes:
    """Fill ``row`` with random bytes before decoding, and return them (see :func:`_sentinel_intact`)."""
    pattern = secrets.token_bytes(row.nbytes)
    row[:] = np.frombuffer(pattern, dtype=np.uint8)
    return pattern


def _sentinel_intact(row: np.ndarray, pattern: bytes) -> bool:
    """Whether the decoder left ``row`` as planted: it never wrote its last row, the data ended early.

    Pillow takes a zlib stream that ends before the last row as the end of the picture and leaves the rows it
    lacks black; random bytes the decoded row would have to match exactly tell the two apart for free.
    """
    return row.tobytes() == pattern


def _rows_missing(path: Path, size: tuple[int, int]) -> ImageReadError:
    width, height = size
    return ImageReadError(
        f"{path}: truncated or corrupt image data (its compressed rows end before the {height:,} rows of "
        f"{width:,} pixels its header claims)"
    )


def _check_png_rows(file: BinaryIO, path: Path, width: int, height: int) -> None:
    """Refuse a PNG whose compressed data holds fewer rows than its header claims, by inflating it.

    The stream is inflated once, its output counted and thrown away (a band of memory at most), before any pixel
    is allocated. It costs a third of decoding, so it is used only where the last row cannot be checked instead
    (:func:`_sentinel_intact`): an interlaced picture one row high, a Pillow that cannot decode into our memory.
    """
    depth, colour_type, interlaced = _png_header(file)
    bits = depth * _PNG_SAMPLES.get(colour_type, 1)
    expected = _png_filtered_bytes(width, height, bits, interlaced)
    inflater = zlib.decompressobj()
    produced = 0
    try:
        for piece in _png_data_pieces(file):
            while piece and produced < expected:
                produced += len(inflater.decompress(piece, _BAND_BYTES))
                piece = inflater.unconsumed_tail
            if produced >= expected or inflater.eof:
                break
    except zlib.error as error:
        raise _corrupt(path, error) from None
    if produced < expected:
        raise ImageReadError(
            f"{path}: truncated or corrupt image data (its compressed rows hold {produced:,} of the {expected:,} "
            f"bytes that {width}x{height} pixels need)"
        )


def _png_filtered_bytes(width: int, height: int, bits: int, interlaced: bool) -> int:
    """The bytes of a PNG's filtered rows (a filter byte, then the samples) once inflated; Adam7 when interlaced."""
    if not interlaced:
        return height * (1 + (width * bits + 7) // 8)
    total = 0
    for top, left, step_y, step_x in ((0, 0, 8, 8), (0, 4, 8, 8), (4, 0, 8, 4), (0, 2, 4, 4), (2, 0, 4, 2),
                                      (0, 1, 2, 2), (1, 0, 2, 1)):  # fmt: skip
        rows, columns = -(-(height - top) // step_y), -(-(width - left) // step_x)
        if rows > 0 and columns > 0:
            total += rows * (1 + (columns * bits + 7) // 8)
    return total


def _png_data_pieces(file: BinaryIO) -> Iterator[bytes]:
    """The payload of a PNG's IDAT chunks, in pieces of at most 1 MiB (chunk CRCs not checked)."""
    file.seek(len(_PNG_SIGNATURE))
    started = False
    while True:
        header = file.read(8)
        if len(header) < 8:
            return
        length, kind = struct.unpack(">I4s", header)
        if kind != b"IDAT":
            if started or kind == b"IEND":
                return
            file.seek(length + 4, io.SEEK_CUR)
            continue
        started = True
        while length:
            piece = file.read(min(length, 1 << 20))
            if not piece:
                return
            length -= len(piece)
            yield piece
        file.seek(4, io.SEEK_CUR)


def _jpeg_frame_marker(file: BinaryIO) -> int | None:
    """The code of a JPEG's start-of-frame marker (0xC0 baseline ... 0xCF), from its segment headers."""
    file.seek(2)
    while True:
        if file.read(1) != b"\xff":
            return None
        marker = file.read(1)
        while marker == b"\xff":  # fill bytes
            marker = file.read(1)
        if not marker:
            return None
        code = marker[0]
        if 0xC0 <= code <= 0xCF and code not in (0xC4, 0xC8, 0xCC):  # DHT, JPG and DAC are not frames
            return code
        if code in (0xD9, 0xDA):  # the image ends, or its data starts, before any frame header
            return None
        if code == 0x01 or 0xD0 <= code <= 0xD8:  # markers without a length
            continue
        length = file.read(2)
        if len(length) < 2 or struct.unpack(">H", length)[0] < 2:
            return None
        file.seek(struct.unpack(">H", length)[0] - 2, io.SEEK_CUR)


# ------------------------------------------------------------------------------------------ 16-bit PNG, WEBP


def _decode_png16(file: BinaryIO, path: Path, image: Image.Image, last_row: int | None) -> _Decoded:
    """Decode a 16-bit colour PNG at full depth with Pillow, whose samples have 8 bits.

    Pillow's ``;16B`` and ``;16L`` raw modes keep the high and the low byte of each big-endian sample, so RGB and
    RGBA are decoded twice (gray+alpha once: its 4 bytes a pixel fit Pillow's RGBA pixel as they are). Each pass
    writes Pillow's 4-byte pixels at the start of the rows of the final 6-byte-a-pixel array; between the passes
    the high bytes wait in the remaining 2 bytes and in a plane of the samples left over, so the peak is the
    decoded pixels plus at most a quarter of them. ``last_row`` is checked to have been written by each pass.
    """
    rawmode = image.tile[0][3] if image.tile else None
    passes = _PNG16_PASSES.get(rawmode)  # type: ignore[arg-type]
    if passes is None:
        raise ImageReadError(f"{path}: unsupported image mode (16-bit PNG, raw mode {rawmode})")
    width, height = image.size
    animated = _is_animated(image)
    pixels = np.empty((height, width, 3), np.uint16)
    rows = pixels.view(np.uint8).reshape(height, width * 6)
    decoded = rows[:, : width * 4].reshape(height, width, 4)  # where Pillow writes a pass
    band = _band_rows(width * 6 * 4)
    if len(passes) == 1:  # gray+alpha: high and low bytes of L and A side by side
        info = _decode_png_pass(file, path, rows, passes[0], last_row)
        alpha = np.empty((height, width), np.uint16)
        for top in range(0, height, band):
            parts = decoded[top : top + band].astype(np.uint16)
            pixels[top : top + band] = ((parts[:, :, 0] << 8) | parts[:, :, 1])[:, :, None]
            alpha[top : top + band] = (parts[:, :, 2] << 8) | parts[:, :, 3]
        return _Decoded(pixels, alpha, True, info, animated)
    samples = 4 if rawmode == "RGBA;16B" else 3
    waiting = rows[:, width * 4 :].reshape(height, width, 2)
    leftover = np.empty((height, width, samples - 2), np.uint8)
    _decode_png_pass(file, path, rows, passes[0], last_row)
    for top in range(0, height, band):
        high = decoded[top : top + band, :, :samples].copy()
        waiting[top : top + band] = high[:, :, :2]
        leftover[top : top + band] = high[:, :, 2:]
    info = _decode_png_pass(file, path, rows, passes[1], last_row)
    key = info.get("transparency")
    has_alpha = samples == 4 or isinstance(key, tuple)
    alpha = np.empty((height, width), np.uint16) if has_alpha else None
    for top in range(0, height, band):
        high = np.concatenate([waiting[top : top + band], leftover[top : top + band]], axis=2).astype(np.uint16)
        values = (high << 8) | decoded[top : top + band, :, :samples]
        pixels[top : top + band] = values[:, :, :3]
        if alpha is not None:
            opaque = values[:, :, 3] if samples == 4 else np.where((values == key).all(axis=2), 0, 65535)
            alpha[top : top + band] = opaque
    return _Decoded(pixels, alpha, False, info, animated)


def _decode_png_pass(
    file: BinaryIO, path: Path, rows: np.ndarray, rawmode: str, last_row: int | None
) -> dict[str, Any]:
    """Decode the PNG in ``file`` with Pillow in raw mode ``rawmode`` into ``rows`` (Pillow's 4-byte pixels at the
    start of each row), checking that ``last_row`` was written; returns Pillow's info."""
    file.seek(0)
    with _open_with_pillow(file, path) as image:
        tile = image.tile[0]
        image.tile = [tile._replace(args=rawmode) if hasattr(tile, "_replace") else (*tile[:3], rawmode)]
        image.im = Image.core.map_buffer(rows, image.size, "raw", 0, (image.mode, rows.shape[1], 1))
        _load_checked(image, path, rows[last_row, : image.size[0] * 4] if last_row is not None else None)
        info = dict(image.info)
        Image.Image.close(image)
    return info


def _decode_webp(file: BinaryIO, path: Path, image: Image.Image) -> _Decoded:
    """Decode a WEBP (of an animation, its first frame) with libwebp through imagecodecs, straight into its array.

    Pillow's WEBP loader holds the frame three times over; libwebp writes it once, into the array given.
    """
    import imagecodecs

    width, height = image.size
    has_alpha = image.mode == "RGBA"
    channels = np.empty((height, width, 4 if has_alpha else 3), np.uint8)
    file.seek(0)
    data = file.read()
    try:
        imagecodecs.webp_decode(data, index=0, hasalpha=has_alpha, out=channels)
    except (RuntimeError, ValueError) as error:  # imagecodecs.WebpError is a RuntimeError
        raise _corrupt(path, error) from None
    del data
    pixels, alpha = _planes(channels, has_alpha)
    return _Decoded(pixels, alpha, False, dict(image.info), _is_animated(image))


def _decode_with_opencv(data: bytes, path: Path) -> np.ndarray:
    """Decode bytes with OpenCV, unchanged (bit depth and alpha kept, orientation not applied), as RGB(A)."""
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise ImageReadError(f"{path}: truncated or corrupt image data (the decoder rejected it)")
    if decoded.dtype not in (np.uint8, np.uint16, np.float32):
        raise ImageReadError(f"{path}: unsupported sample type {decoded.dtype}")
    if decoded.ndim == 3 and decoded.shape[2] == 3:
        return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
    if decoded.ndim == 3 and decoded.shape[2] == 4:
        return cv2.cvtColor(decoded, cv2.COLOR_BGRA2RGBA)
    return decoded


# ---------------------------------------------------------------------------------------------------- TIFF


class _TifffileMessages(logging.Filter):
    """Keeps what tifffile logs while this thread reads a TIFF, instead of letting it reach stderr.

    tifffile logs its doubts about a file (wrong strip counts, bad offsets) as warnings, which Python prints when
    nothing is configured: for a file that is refused they would add lines to its one-line error, and for one
    that is read they become a single Python warning (:func:`_tifffile_messages`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        messages = getattr(self.local, "messages", None)
        if messages is None:
            return True
        messages.append(record.getMessage())
        return False


_TIFFFILE_MESSAGES = _TifffileMessages()


@contextlib.contextmanager
def _tifffile_messages(path: Path, *, warn: bool = True) -> Iterator[None]:
    """Within the block, tifffile's log records of this thread are kept; on success they become one warning
    (unless not ``warn``: a header read leaves them to the full read that follows)."""
    logger = logging.getLogger("tifffile")
    if _TIFFFILE_MESSAGES not in logger.filters:
        logger.addFilter(_TIFFFILE_MESSAGES)  # once, on the first TIFF read, not at import
    outer = getattr(_TIFFFILE_MESSAGES.local, "messages", None)
    messages: list[str] = []
    _TIFFFILE_MESSAGES.local.messages = messages
    try:
        yield
    finally:
        _TIFFFILE_MESSAGES.local.messages = outer
    if messages and warn:
        warnings.warn(f"{path}: tifffile: {'; '.join(dict.fromkeys(messages))}", stacklevel=4)


def _is_tiff(file: BinaryIO) -> bool:
    file.seek(0)
    signature = file.read(4)
    file.seek(0)
    return signature in _TIFF_SIGNATURES


def _open_tiff(file: BinaryIO, path: Path) -> tifffile.TiffFile:
    try:
        return tifffile.TiffFile(file, name=path.name)
    except (tifffile.TiffFileError, *_DECODE_ERRORS) as error:
        raise _corrupt(path, error) from None


def _first_tiff_page(tiff: tifffile.TiffFile, path: Path) -> tifffile.TiffPage:
    try:
        page = tiff.pages.first
    except (tifffile.TiffFileError, *_DECODE_ERRORS) as error:
        raise _corrupt(path, error) from None
    if page.imagedepth > 1:
        raise ImageReadError(f"{path}: unsupported image mode (volumetric TIFF, depth {page.imagedepth})")
    return page


def _load_tiff(file: BinaryIO, path: Path, max_pixels: int | str | None) -> Picture:
    with _open_tiff(file, path) as tiff:
        page = _first_tiff_page(tiff, path)
        _check_limits(path, int(page.imagewidth), int(page.imagelength), _tiff_bytes_per_pixel(page), max_pixels)
        _check_tiff_complete(file, page, path)
        icc_profile = page.tags.valueof(34675)
        orientation = _valid_orientation(page.tags.valueof(274, 1))
        try:
            samples = page.asarray()
        except _DECODE_ERRORS as error:
            if "imagecodecs" not in str(error):
                raise _corrupt(path, error) from None
            samples = None  # a compression tifffile needs imagecodecs for: let OpenCV's libtiff decode it
        if samples is None:
            file.seek(0)
            channels = _decode_with_opencv(file.read(), path)
            gray = channels.ndim == 2 or channels.shape[2] == 2
            pixels, alpha = _planes(channels, channels.ndim == 3 and channels.shape[2] in (2, 4))
        else:
            pixels, alpha, gray = _tiff_channels(page, samples, icc_profile, path)
            del samples
            if int(page.photometric) == tifffile.PHOTOMETRIC.SEPARATED:
                icc_profile = None  # CMYK converted to sRGB
        exif = _tiff_exif(file, tiff, page, path)
    return _assemble(
        path,
        _Decoded(pixels, alpha, gray, {}),
        orientation=orientation,
        icc_profile=icc_profile if isinstance(icc_profile, bytes) else None,
        exif=exif,
        format="TIFF",
    )


def _tiff_bytes_per_pixel(page: tifffile.TiffPage) -> int:
    """Bytes a pixel of the Picture made from ``page`` takes (three colour samples, and alpha), from its tags."""
    dtype = page.dtype
    eight_bit = int(page.photometric) in (tifffile.PHOTOMETRIC.PALETTE, tifffile.PHOTOMETRIC.SEPARATED)
    if dtype is None or eight_bit or dtype.kind == "b":
        itemsize = 1
    else:
        itemsize = 4 if dtype.kind == "f" else min(2, dtype.itemsize)
    return (3 + bool(page.extrasamples)) * itemsize


def _check_tiff_complete(file: BinaryIO, page: tifffile.TiffPage, path: Path) -> None:
    """Refuse a TIFF whose strips or tiles reach past the end of the file (tifffile would fill them in)."""
    size = os.fstat(file.fileno()).st_size
    ends = [offset + count for offset, count in zip(page.dataoffsets, page.databytecounts) if count]
    if ends and max(ends) > size:
        raise ImageReadError(f"{path}: truncated or corrupt image data (image data ends past the end of the file)")
    expected = math.prod(page.chunked)
    if len(page.dataoffsets) < expected or len(page.databytecounts) < expected:
        raise ImageReadError(
            f"{path}: truncated or corrupt image data (the header claims {page.imagewidth}x{page.imagelength} "
            f"pixels in {expected:,} strips or tiles, the file lists {len(page.dataoffsets):,})"
        )


def _tiff_channels(
    page: tifffile.TiffPage, samples: np.ndarray, icc_profile: object, path: Path
) -> tuple[np.ndarray, np.ndarray | None, bool]:
    """Return (HxWx3 pixels, HxW alpha or None, gray) for the samples of one TIFF page.

    The samples' own memory is reused where it can be (values normalised and inverted in place, colour moved
    to the front once the alpha plane is copied out), so an RGB or RGBA page is never held twice.
    """
    axes = page.axes
    if axes.startswith("S") and samples.ndim == 3:
        samples = np.moveaxis(samples, 0, -1)  # planar: a view, copied when the pixels are made contiguous
        axes = axes[1:] + "S"
    if axes not in ("YX", "YXS"):
        raise ImageReadError(f"{path}: unsupported TIFF layout (axes {page.axes})")
    if samples.ndim == 2:
        samples = samples[:, :, None]
    photometric = tifffile.PHOTOMETRIC
    kind = int(page.photometric)
    extras = tuple(int(value) for value in page.extrasamples)

    if kind == photometric.PALETTE:
        colormap = page.colormap
        if colormap is None or samples.shape[2] != 1:
            raise ImageReadError(f"{path}: unsupported TIFF palette")
        table = np.ascontiguousarray(colormap.T)  # N x 3, 16-bit
        if table.max(initial=0) < 256:  # some writers store 8-bit palettes
            table = table.astype(np.uint16) * 257
        return _convert_dtype(table.astype(np.uint16), np.dtype(np.uint8))[samples[:, :, 0]], None, False

    samples = _normalise_tiff_values(samples, page, path)
    count = samples.shape[2]
    if kind == photometric.SEPARATED:
        colour_count = 4
    elif kind == photometric.RGB:
        colour_count = 3
    elif kind in (photometric.MINISBLACK, photometric.MINISWHITE):
        colour_count = 1 if count <= 2 else 3  # some writers label RGB data as grey
    else:
        raise ImageReadError(f"{path}: unsupported image mode (TIFF {page.photometric.name}, {count} samples)")
    if count < colour_count:
        raise ImageReadError(f"{path}: unsupported image mode (TIFF {page.photometric.name}, {count} samples)")
    has_alpha = count > colour_count  # the first extra sample is alpha; any others are dropped
    premultiplied = bool(extras) and extras[0] == 1  # EXTRASAMPLE.ASSOCALPHA
    alpha = np.ascontiguousarray(samples[:, :, colour_count]) if has_alpha else None
    colour: np.ndarray | None = None  # None: the first colour_count samples, as they are

    if kind == photometric.SEPARATED:
        if samples.dtype == np.float32:
            raise ImageReadError(f"{path}: unsupported image mode (floating-point CMYK)")
        cmyk = np.ascontiguousarray(_convert_dtype(samples[:, :, :4], np.dtype(np.uint8)))  # Pillow's CMS is 8-bit
        image = Image.frombytes("CMYK", (cmyk.shape[1], cmyk.shape[0]), cmyk)
        colour = np.asarray(_cmyk_converter(icc_profile, path)(image))
        alpha = None if alpha is None else _convert_dtype(alpha, np.dtype(np.uint8))
        colour_count = 3
    elif kind == photometric.MINISWHITE:
        samples = _inverted(samples, colour_count)
    if premultiplied and alpha is not None:
        colour = _unpremultiply(samples[:, :, :colour_count] if colour is None else colour, alpha)
    if colour is None:
        colour = _front_channels(samples, colour_count)
    if colour_count == 1:
        return np.repeat(colour, 3, axis=2), alpha, True
    return np.ascontiguousarray(colour), alpha, False


def _inverted(samples: np.ndarray, colour_count: int) -> np.ndarray:
    """Min-is-white samples made min-is-black, in their own memory when it is writable."""
    if not samples.flags.writeable:
        samples = samples.copy()
    colour = samples[:, :, :colour_count]
    np.subtract(_max_value(samples.dtype), colour, out=colour)
    return samples


def _normalise_tiff_values(samples: np.ndarray, page: tifffile.TiffPage, path: Path) -> np.ndarray:
    """Bring TIFF samples to uint8, uint16 or float32 in [0, 1] (in place where the values allow)."""
    if samples.dtype == np.bool_:
        return samples.astype(np.uint8) * np.uint8(255)
    if samples.dtype.kind == "f":
        if samples.dtype != np.float32 or not samples.flags.writeable:
            samples = samples.astype(np.float32)
        np.nan_to_num(samples, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
        return np.clip(samples, 0.0, 1.0, out=samples)
    if samples.dtype in (np.uint8, np.uint16):
        bits = int(page.bitspersample)
        full = (1 << bits) - 1
        if bits < samples.dtype.itemsize * 8 and full > 0:  # e.g. 12-bit samples stored in 16-bit words
            scale = _max_value(samples.dtype) / full
            return np.clip(np.rint(samples * scale), 0, _max_value(samples.dtype)).astype(samples.dtype)
        return samples
    raise ImageReadError(f"{path}: unsupported image mode (TIFF samples of type {samples.dtype})")


def _unpremultiply(colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    colour_f = to_float(colour)
    alpha_f = to_float(alpha)[:, :, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        straight = np.where(alpha_f > 0, colour_f / alpha_f, 0.0)
    return from_float(straight, colour.dtype)


def _tiff_exif(file: BinaryIO, tiff: tifffile.TiffFile, page: tifffile.TiffPage, path: Path) -> bytes | None:
    """Build an EXIF block from a TIFF's descriptive IFD0 tags and its EXIF and GPS sub-IFDs.

    Pillow's EXIF reader parses the IFDs straight from the file (the same way it does for its own TIFF images),
    whatever the pixel layout.
    """
    try:
        source = Image.Exif()
        source.endian = tiff.byteorder
        source.bigtiff = bool(tiff.is_bigtiff)
        source.load_from_fp(file, page.offset)
        exif = Image.Exif()
        for tag in (*_DESCRIPTIVE_TAGS, _ORIENTATION_TAG):
            if tag in source:
                exif[tag] = source[tag]
        for tag in (_EXIF_IFD_TAG, _GPS_IFD_TAG):
            entries = {key: value for key, value in source.get_ifd(tag).items() if key != _INTEROP_IFD_TAG}
            if entries:
                exif[tag] = entries
    except (*_DECODE_ERRORS, TypeError) as error:
        warnings.warn(f"{path}: TIFF EXIF metadata unreadable, dropped ({error})", stacklevel=4)
        return None
    if not any(tag in exif for tag in (*_DESCRIPTIVE_TAGS, _EXIF_IFD_TAG, _GPS_IFD_TAG)):
        return None
    return exif.tobytes()


# ---------------------------------------------------------------------------------------- EXIF and orientation


def _normalise_exif(exif: object) -> bytes | None:
    """Return EXIF bytes with the ``Exif\\0\\0`` prefix, or None."""
    if not isinstance(exif, (bytes, bytearray)) or not exif:
        return None
    exif = bytes(exif)
    return exif if exif.startswith(_EXIF_PREFIX) else _EXIF_PREFIX + exif


def _orientation(exif: bytes | None) -> int:
    if not exif:
        return 1
    parsed = Image.Exif()
    try:
        parsed.load(exif)
        return _valid_orientation(parsed.get(_ORIENTATION_TAG, 1))
    except (*_DECODE_ERRORS, TypeError):
        return 1


def _valid_orientation(value: object) -> int:
    try:
        orientation = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 1
    return orientation if 1 <= orientation <= 8 else 1


def _transposed(array: np.ndarray, orientation: int) -> np.ndarray:
    """An upright copy of an HxW(xC) array stored with a transposing EXIF ``orientation``, 5 to 8 (as
    PIL.ImageOps.exif_transpose turns it); the others are turned in place by :func:`_orient`."""
    if orientation == 5:
        array = array.swapaxes(0, 1)
    elif orientation == 6:
        array = np.rot90(array, -1)
    elif orientation == 7:
        array = array[::-1, ::-1].swapaxes(0, 1)
    elif orientation == 8:
        array = np.rot90(array, 1)
    return np.ascontiguousarray(array)


def _reset_orientation(exif: bytes) -> bytes:
    """Return ``exif`` with its orientation tag set to 1, patched in place so every other byte is kept."""
    data = bytearray(exif)
    base = len(_EXIF_PREFIX)
    order = {b"II": "<", b"MM": ">"}.get(bytes(data[base : base + 2]))
    try:
        if order is None:
            raise ValueError("no TIFF header")
        (ifd,) = struct.unpack_from(order + "I", data, base + 4)
        (count,) = struct.unpack_from(order + "H", data, base + ifd)
        for index in range(count):
            entry = base + ifd + 2 + 12 * index
            tag, kind, number = struct.unpack_from(order + "HHI", data, entry)
            if tag == _ORIENTATION_TAG and kind == 3 and number == 1:
                struct.pack_into(order + "H", data, entry + 8, 1)
                break
    except (struct.error, ValueError):
        return _reset_orientation_with_pillow(exif)
    return bytes(data)


def _reset_orientation_with_pillow(exif: bytes) -> bytes:
    parsed = Image.Exif()
    try:
        parsed.load(exif)
        if _ORIENTATION_TAG not in parsed:
            return exif
        parsed[_ORIENTATION_TAG] = 1
        return parsed.tobytes()
    except (*_DECODE_ERRORS, TypeError):
        return exif


# ---------------------------------------------------------------------------------------------------- writing


def save_image(
    picture: Picture | np.ndarray,
    path: str | os.PathLike[str],
    *,
    quality: int = 95,
    overwrite_input: bool = False,
    format: str | None = None,
) -> Path:
    """Write ``picture`` to ``path`` atomically and return the path.

    The format comes from ``format`` or the suffix (.png .jpg .jpeg .webp .tif .tiff .bmp). A bare array may be
    passed: HxW or HxWx1 (gray), HxWx2 (gray+alpha), HxWx3 (RGB), HxWx4 (RGBA). ``quality`` (1-100) applies to
    JPEG and WEBP. Writing over ``picture.source`` is refused unless ``overwrite_input``. The target is replaced
    only by a complete file: the encoder writes a temporary file beside it, which is removed on any failure.
    """
    if not isinstance(picture, Picture):
        picture = _picture_from_array(picture)
    path = Path(path)
    format_name = _output_format(path, format)
    check_quality(quality)
    _check_output_path(path, picture.source, overwrite_input)
    check_output_size(path, picture.width, picture.height, format_name)
    encoder = _ENCODERS[format_name]
    write_atomically(path, lambda file: encoder(picture, file, int(quality)), format_name)
    return path


def check_output(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    quality: int = 95,
    source: str | os.PathLike[str] | None = None,
    overwrite_input: bool = False,
) -> str:
    """Refuse, before any work is done, an output that :func:`save_image` could not write; return its format.

    These are the checks of ``save_image`` that need no pixels (a writable format from ``format`` or the
    suffix, a valid ``quality``, an existing folder, not ``source`` unless ``overwrite_input``) plus a real
    write test: a temporary file is created in the folder and removed again, so that a read-only folder or
    file system is refused now rather than after hours of work.
    """
    path = Path(path)
    format_name = _output_format(path, format)
    check_quality(quality)
    _check_output_path(path, Path(source) if source is not None else None, overwrite_input)
    _check_writable(path)
    return format_name


def check_quality(quality: object) -> None:
    """Refuse a JPEG/WEBP ``quality`` that is not a whole number from 1 to 100."""
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise OptionError(f"quality must be an integer from 1 to 100, got {quality!r}")


def check_output_size(path: str | os.PathLike[str], width: int, height: int, format: str | None = None) -> None:
    """Refuse a ``width`` x ``height`` picture that the format of ``path`` (or ``format``) cannot hold."""
    path = Path(path)
    format_name = _output_format(path, format)
    largest = _LARGEST_SIDE[format_name]
    if max(width, height) > largest:
        raise OutputError(
            f"{path}: {format_name} cannot hold {width}x{height} pixels (largest side {largest:,}); "
            f"choose another format"
        )


def check_output_folder(folder: str | os.PathLike[str]) -> None:
    """Refuse a folder that tessera is to create if needed (parents included) and fill, when it cannot be.

    The folder, or its nearest existing ancestor, must be a folder in which a file can be created (tested with
    a temporary file that is removed again).
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{folder}: cannot create or write this folder, {existing} is not a folder")
    _check_writable(existing / "probe")


def _picture_from_array(array: object) -> Picture:
    array = np.asarray(array)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * np.uint8(255)
    elif array.dtype == np.float64:
        array = array.astype(np.float32)
    if array.dtype not in _DTYPES:
        raise InputError(f"cannot save an array of type {array.dtype}: expected uint8, uint16 or float32")
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise InputError(f"cannot save an array of shape {array.shape}: expected HxW or HxWx1/2/3/4")
    has_alpha = array.shape[2] in (2, 4)
    colour = array[:, :, :-1] if has_alpha else array
    pixels = np.repeat(colour, 3, axis=2) if colour.shape[2] == 1 else colour
    alpha = array[:, :, -1] if has_alpha else None
    return Picture(pixels=pixels, alpha=alpha, gray=colour.shape[2] == 1)


def _output_format(path: Path, format: str | None) -> str:
    """The format to write: ``format`` when given, else the one the suffix of ``path`` selects."""
    if format is not None:
        name = str(format).upper()
        name = {"JPG": "JPEG", "TIF": "TIFF"}.get(name, name)
        return look_up_option(name, _WRITABLE_FORMATS, "image format")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        try:
            look_up_option(suffix or "(none)", IMAGE_SUFFIXES, "image file suffix")
        except OptionError as error:
            raise OptionError(f"{path}: {error}") from None
    return IMAGE_SUFFIXES[suffix]


def _check_output_path(path: Path, source: Path | None, overwrite_input: bool) -> None:
    folder = path.parent
    if not folder.exists():
        raise OutputError(f"{path}: cannot write, folder {folder} does not exist")
    if not folder.is_dir():
        raise OutputError(f"{path}: cannot write, {folder} is not a folder")
    if path.is_dir():
        raise OutputError(f"{path}: cannot write, it is a folder")
    if source is not None and not overwrite_input and same_file(path, Path(source)):
        raise OutputError(f"{path}: refusing to overwrite the input image (pass overwrite_input=True to allow it)")


def copy_atomically(source: Path, target: Path) -> None:
    """Copy ``source``'s bytes to ``target`` (an unchanged copy, not a re-encoding), atomically, keeping its times."""
    import shutil

    def copy(file: BinaryIO) -> None:
        with open(source, "rb") as original:
            shutil.copyfileobj(original, file)

    write_atomically(Path(target), copy, "copy")
    shutil.copystat(source, target)


def same_file(first: Path, second: Path) -> bool:
    """Whether two paths name one file (by inode where both exist, else by resolved path)."""
    try:
        return os.path.samefile(first, second)
    except OSError:
        return first.resolve() == second.resolve()


def write_atomically(path: Path, write: Callable[[BinaryIO], None], format_name: str = "file") -> None:
    """Let ``write`` fill a temporary file beside ``path``, sync it, then rename it over ``path``.

    Whatever fails, ``path`` is either untouched or complete and the temporary file is gone: any exception
    the process survives (KeyboardInterrupt included, and SIGTERM, which the CLI turns into one) removes it.
    What a killed writer leaves behind is removed by a later write into the same folder
    (:func:`remove_stale_temporaries`). OS errors become OutputError (ResourceError when the disk is full).
    Every file tessera writes goes through here.
    """
    path = Path(path)
    _sweep_now_and_then(path.parent)
    temporary: Path | None = None
    try:
        temporary, file = _create_temporary(path)
        with file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        if temporary is not None:
            _remove_if_present(temporary)
        if isinstance(error, OSError):
            raise _output_error(path, error) from None
        if isinstance(error, ValueError) and not isinstance(error, InputError):
            raise OutputError(f"{path}: cannot encode as {format_name} ({error})") from None
        raise
    _sync_folder(path.parent)


def _check_writable(path: Path) -> None:
    """Create and remove a temporary file beside ``path``: the one sure test that the folder takes new files."""
    temporary, file = _create_temporary(path)
    file.close()
    _remove_if_present(temporary)


def _remove_if_present(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# Temporary files are named ".TARGET.HOST-PID-RANDOM.tessera-tmp": the host (a hash of its name) and the
# process id of the writer tell a later process whether the writer is gone, so that what a killed writer left
# can be removed without ever touching the file of a writer still at work.
_TEMPORARY_SUFFIX = ".tessera-tmp"
_TEMPORARY_NAME = re.compile(r"\.(?P<target>.+)\.(?P<host>[0-9a-f]{8})-(?P<pid>[0-9]{1,10})-[0-9a-f]{8}"
                             + re.escape(_TEMPORARY_SUFFIX))
_TARGET_NAME_BYTES = 120  # of the target's name kept in the temporary's (file names stop at 255 bytes)
STALE_TEMPORARY_SECONDS = 7 * 24 * 3600
"""A temporary file untouched for this long is stale whoever wrote it (a process id may have been reused)."""
_SWEEP_INTERVAL_SECONDS = 3600.0
_SWEPT_FOLDERS_KEPT = 10_000
_last_sweeps: dict[str, float] = {}  # folder -> monotonic time of this process's last sweep of it


def _create_temporary(path: Path) -> tuple[Path, BinaryIO]:
    """Create a new file beside ``path`` named after it and its writer (exclusive creation; the umask applies)."""
    for _ in range(100):
        name = f".{_shortened(path.name)}.{_host_tag()}-{os.getpid()}-{secrets.token_hex(4)}{_TEMPORARY_SUFFIX}"
        temporary = path.with_name(name)
        try:
            return temporary, open(temporary, "x+b")
        except FileExistsError:
            continue
        except OSError as error:
            raise _output_error(path, error) from None
    raise OutputError(f"{path}: cannot create a temporary file in {path.parent}")


def _shortened(name: str) -> str:
    """``name`` cut to at most _TARGET_NAME_BYTES bytes on disk, between two characters."""
    while len(os.fsencode(name)) > _TARGET_NAME_BYTES:
        name = name[:-1]
    return name


@functools.lru_cache(maxsize=1)
def _host_tag() -> str:
    """Eight hex digits naming this machine in temporary file names (folders may be shared between machines)."""
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def _process_is_running(pid: int) -> bool:
    """Whether process ``pid`` of this machine exists; True when that cannot be known (never delete on doubt)."""
    if pid < 1:
        return False
    if os.name != "posix":
        return True  # os.kill(pid, 0) would terminate the process on Windows
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):
        return True  # PermissionError: it exists, under another user
    return True


def _is_stale_temporary(entry: os.DirEntry[str], now: float) -> bool:
    """A temporary file of tessera's naming whose writer is gone (this machine, no such process) or that nobody
    has touched for :data:`STALE_TEMPORARY_SECONDS`."""
    match = _TEMPORARY_NAME.fullmatch(entry.name)
    if match is None:
        return False
    try:
        if not entry.is_file(follow_symlinks=False):
            return False
        modified = entry.stat(follow_symlinks=False).st_mtime
    except OSError:
        return False
    if now - modified > STALE_TEMPORARY_SECONDS:
        return True
    return match["host"] == _host_tag() and not _process_is_running(int(match["pid"]))


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Delete the temporary files that killed writers (``kill -9``, a power cut) left in ``folder``; return them.

    Only files of tessera's own temporary naming are considered, and only those whose writer process is gone
    or that are older than :data:`STALE_TEMPORARY_SECONDS`: a live process's temporary file is never touched.
    """
    removed: list[Path] = []
    now = time.time()
    try:
        entries = os.scandir(folder)
    except OSError:
        return removed
    with entries:
        for entry in entries:
            if not _is_stale_temporary(entry, now):
                continue
            try:
                os.unlink(entry.path)
            except OSError:
                continue
            removed.append(Path(entry.path))
    return removed


def _sweep_now_and_then(folder: Path) -> None:
    """Remove stale temporary files from ``folder`` on this process's first write there, then at most hourly
    (a batch writing thousands of files into one folder lists it once an hour, not once per file)."""
    key = os.path.abspath(folder)
    now = time.monotonic()
    last = _last_sweeps.get(key)
    if last is not None and now - last < _SWEEP_INTERVAL_SECONDS:
        return
    if len(_last_sweeps) > _SWEPT_FOLDERS_KEPT:  # a long-running server writes into ever new folders
        _last_sweeps.clear()
    _last_sweeps[key] = now
    remove_stale_temporaries(folder)


def _output_error(path: Path, error: OSError) -> Exception:
    reason = error.strerror or str(error) or type(error).__name__
    if error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
        return ResourceError(f"{path}: cannot write, disk full ({reason})")
    if isinstance(error, PermissionError):
        return OutputError(f"{path}: cannot write, permission denied")
    return OutputError(f"{path}: cannot write ({reason})")


def _sync_folder(folder: Path) -> None:
    """Make the rename durable where the platform allows syncing a folder (POSIX)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _output_channels(picture: Picture, dtype: np.dtype, *, keep_alpha: bool, keep_gray: bool) -> np.ndarray:
    """Return the HxWxC array to encode: C = 1/2 (gray[+alpha]) or 3/4 (RGB[+alpha]), in ``dtype``."""
    pixels = _convert_dtype(picture.pixels, dtype)
    if keep_gray and picture.gray:
        pixels = single_channel(pixels)
    if keep_alpha and picture.alpha is not None:
        return np.dstack([pixels, _convert_dtype(picture.alpha, dtype)])
    return pixels


def single_channel(pixels: np.ndarray) -> np.ndarray:
    """HxWx1 from RGB: the channel itself when all three are equal, the luma (BT.601 weights) otherwise."""
    red = pixels[:, :, 0]
    if np.array_equal(red, pixels[:, :, 1]) and np.array_equal(red, pixels[:, :, 2]):
        return pixels[:, :, :1]
    return cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)[:, :, None]


def _pillow_image(channels: np.ndarray) -> Image.Image:
    modes = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
    channels = np.ascontiguousarray(channels)
    height, width, count = channels.shape
    return Image.frombytes(modes[count], (width, height), channels.tobytes())


def _encode_png(picture: Picture, file: BinaryIO, quality: int) -> None:
    dtype = np.dtype(np.uint8) if picture.pixels.dtype == np.uint8 else np.dtype(np.uint16)
    channels = _output_channels(picture, dtype, keep_alpha=True, keep_gray=True)
    if dtype == np.uint8:
        options = _metadata_options(picture)
        _pillow_image(channels).save(file, format="PNG", compress_level=6, **options)
        return
    if channels.shape[2] == 2:
        data = _encode_png16_gray_alpha(channels)  # neither Pillow nor OpenCV writes 16-bit gray+alpha
    else:
        ok, buffer = cv2.imencode(".png", _to_opencv_order(channels))
        if not ok:
            raise ValueError("OpenCV could not encode the 16-bit PNG")
        data = buffer.tobytes()
    file.write(_with_png_metadata(data, picture.icc_profile, _output_exif(picture)))


def _encode_jpeg(picture: Picture, file: BinaryIO, quality: int) -> None:
    channels = _output_channels(picture, np.dtype(np.uint8), keep_alpha=False, keep_gray=True)
    options = _metadata_options(picture)
    subsampling = 0 if quality >= 90 else 2  # keep colour resolution (4:4:4) at high quality
    _pillow_image(channels).save(file, format="JPEG", quality=quality, subsampling=subsampling, **options)


def _encode_webp(picture: Picture, file: BinaryIO, quality: int) -> None:
    channels = _output_channels(picture, np.dtype(np.uint8), keep_alpha=True, keep_gray=False)
    options = _metadata_options(picture)
    _pillow_image(channels).save(file, format="WEBP", quality=quality, **options)


def _encode_bmp(picture: Picture, file: BinaryIO, quality: int) -> None:
    channels = _output_channels(picture, np.dtype(np.uint8), keep_alpha=False, keep_gray=True)
    _pillow_image(channels).save(file, format="BMP")


def _encode_tiff(picture: Picture, file: BinaryIO, quality: int) -> None:
    channels = _output_channels(picture, picture.pixels.dtype, keep_alpha=True, keep_gray=True)
    colour_count = 1 if channels.shape[2] in (1, 2) else 3
    bigtiff = channels.nbytes > _BIGTIFF_FROM_BYTES
    exif = _parse_exif(_output_exif(picture))
    sub_ifds = _exif_sub_ifds(exif)
    placeholders = [(_placeholder_tag(tag), 16 if bigtiff else 4, 1, 0, True) for tag in sub_ifds]
    tifffile.imwrite(
        file,
        channels if channels.shape[2] > 1 else channels[:, :, 0],
        bigtiff=bigtiff,
        byteorder="<",
        photometric="minisblack" if colour_count == 1 else "rgb",
        planarconfig="contig" if channels.shape[2] > 1 else None,
        extrasamples=("unassalpha",) if channels.shape[2] in (2, 4) else None,
        **_tiff_compression(channels.dtype),
        iccprofile=picture.icc_profile,
        software=False,
        metadata=None,
        extratags=_descriptive_tiff_tags(exif) + placeholders,
    )
    if sub_ifds:
        _append_tiff_sub_ifds(file, sub_ifds, bigtiff)


def _tiff_compression(dtype: np.dtype) -> dict[str, Any]:
    """Deflate with the horizontal predictor where imagecodecs makes it fast; uncompressed otherwise.

    Without imagecodecs, tifffile's pure-Python predictor takes ~15 s on a 12 MP 16-bit picture and deflate alone
    barely shrinks 16-bit photographs, so plain strips (fast, and readable everywhere) are the better default.
    """
    if importlib.util.find_spec("imagecodecs") is None:
        return {"compression": None}
    return {"compression": "zlib", "predictor": dtype != np.float32}


_ENCODERS: dict[str, Callable[[Picture, BinaryIO, int], None]] = {
    "PNG": _encode_png,
    "JPEG": _encode_jpeg,
    "WEBP": _encode_webp,
    "TIFF": _encode_tiff,
    "BMP": _encode_bmp,
}


def _metadata_options(picture: Picture) -> dict[str, bytes]:
    options = {}
    if picture.icc_profile:
        options["icc_profile"] = picture.icc_profile
    exif = _output_exif(picture)
    if exif:
        options["exif"] = exif
    return options


def _output_exif(picture: Picture) -> bytes | None:
    """The picture's EXIF block, prefixed and with orientation 1: the pixels are upright by construction."""
    exif = _normalise_exif(picture.exif)
    return _reset_orientation(exif) if exif else None


def _to_opencv_order(channels: np.ndarray) -> np.ndarray:
    if channels.shape[2] == 3:
        return cv2.cvtColor(channels, cv2.COLOR_RGB2BGR)
    if channels.shape[2] == 4:
        return cv2.cvtColor(channels, cv2.COLOR_RGBA2BGRA)
    return channels


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _with_png_metadata(png: bytes, icc_profile: bytes | None, exif: bytes | None) -> bytes:
    """Insert iCCP and eXIf chunks right after IHDR (OpenCV before 4.12 cannot write them)."""
    chunks = b""
    if icc_profile:
        chunks += _png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc_profile))
    if exif:
        chunks += _png_chunk(b"eXIf", exif.removeprefix(_EXIF_PREFIX))
    if not chunks:
        return png
    end_of_header = len(_PNG_SIGNATURE) + 8 + 13 + 4
    if png[len(_PNG_SIGNATURE) + 4 : len(_PNG_SIGNATURE) + 8] != b"IHDR":
        raise ValueError("the PNG encoder produced an unexpected header")
    return png[:end_of_header] + chunks + png[end_of_header:]


def _encode_png16_gray_alpha(channels: np.ndarray) -> bytes:
    """A 16-bit gray+alpha PNG: every row with the Up filter, deflated, in IDAT chunks of at most 1 MiB."""
    height, width = channels.shape[:2]
    rows = np.ascontiguousarray(channels, dtype=">u2").view(np.uint8).reshape(height, width * 4)
    filtered = np.empty((height, width * 4 + 1), dtype=np.uint8)
    filtered[:, 0] = 2  # Up: each byte minus the byte above it (the row above the first is zero)
    filtered[0, 1:] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])
    compressed = zlib.compress(filtered.tobytes(), 3)
    header = struct.pack(">IIBBBBB", width, height, 16, 4, 0, 0, 0)
    step = 1 << 20
    data = b"".join(_png_chunk(b"IDAT", compressed[at : at + step]) for at in range(0, len(compressed), step))
    return _PNG_SIGNATURE + _png_chunk(b"IHDR", header) + data + _png_chunk(b"IEND", b"")


# --------------------------------------------------------------------------------------------- EXIF in TIFF


def _parse_exif(exif: bytes | None) -> Image.Exif | None:
    if not exif:
        return None
    parsed = Image.Exif()
    try:
        parsed.load(exif)
        return parsed
    except (*_DECODE_ERRORS, TypeError) as error:
        warnings.warn(f"EXIF metadata unreadable, not written to the TIFF ({error})", stacklevel=5)
        return None


def _descriptive_tiff_tags(exif: Image.Exif | None) -> list[tuple[int, str, int, bytes, bool]]:
    """The camera, date and author strings of the EXIF block as TIFF IFD0 tags."""
    if exif is None:
        return []
    tags = []
    for tag in _DESCRIPTIVE_TAGS:
        value = exif.get(tag)
        if isinstance(value, str) and value:
            tags.append((tag, "s", 0, value.encode("ascii", "replace"), True))
    return tags


def _exif_sub_ifds(exif: Image.Exif | None) -> dict[int, dict[int, Any]]:
    if exif is None:
        return {}
    sub_ifds = {}
    for tag in (_EXIF_IFD_TAG, _GPS_IFD_TAG):
        try:
            entries = {key: value for key, value in exif.get_ifd(tag).items() if key != _INTEROP_IFD_TAG}
        except (*_DECODE_ERRORS, TypeError):
            continue
        if entries:
            sub_ifds[tag] = entries
    return sub_ifds


def _placeholder_tag(tag: int) -> int:
    """tifffile refuses to write the EXIF and GPS pointer tags; write them one code higher, then rename.

    No tag exists between the code and code + 1, so the IFD stays sorted after the rename.
    """
    return tag + 1


def _append_tiff_sub_ifds(file: BinaryIO, sub_ifds: dict[int, dict[int, Any]], bigtiff: bool) -> None:
    """Append the EXIF/GPS sub-IFDs to a TIFF just written and point IFD0's placeholder tags at them."""
    file.flush()
    file.seek(0)
    with tifffile.TiffFile(file) as tiff:
        tags = tiff.pages.first.tags
        pointers = {
            tag: (tags[_placeholder_tag(tag)].offset, tags[_placeholder_tag(tag)].valueoffset) for tag in sub_ifds
        }
    header = b"II+\x00\x08\x00\x00\x00" + struct.pack("<Q", 16) if bigtiff else b"II*\x00" + struct.pack("<I", 8)
    for tag, entries in sub_ifds.items():
        file.seek(0, io.SEEK_END)
        position = file.tell()
        if position % 2:
            file.write(b"\x00")
            position += 1
        directory = TiffImagePlugin.ImageFileDirectory_v2(ifh=header, group=tag)
        for key, value in entries.items():
            directory[key] = value
        file.write(directory.tobytes(position))
        entry_offset, value_offset = pointers[tag]
        file.seek(entry_offset)
        file.write(struct.pack("<H", tag))
        file.seek(value_offset)
        file.write(struct.pack("<Q" if bigtiff else "<I", position))
    file.seek(0, io.SEEK_END)
