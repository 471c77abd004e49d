"""TIFF decoding through tifffile (16-bit, float, BigTIFF, tiled), with OpenCV's libtiff as the fallback for
compressions tifffile cannot decode without ``imagecodecs``.

tifffile's log records about a doubtful file are caught per thread and become one Python warning when the file
is read (:func:`tifffile_messages`); a file that is refused gets its one-line error only. Samples are brought to
uint8, uint16 or float32 in [0, 1], min-is-white inverted, CMYK converted to sRGB, premultiplied alpha undone,
all in the samples' own memory where they allow it.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
import tifffile
from PIL import Image

from tessera.errors import ImageReadError

from .decode import DECODE_ERRORS, Decoded, check_limits, corrupt, front_channels, planes
from .exif import (
    DESCRIPTIVE_TAGS,
    EXIF_IFD_TAG,
    GPS_IFD_TAG,
    INTEROP_IFD_TAG,
    ORIENTATION_TAG,
    assemble,
    valid_orientation,
)
from .pillow import cmyk_converter
from .pixels import Picture, convert_dtype, from_float, max_value, to_float

__all__ = ["first_tiff_page", "is_tiff", "load_tiff", "open_tiff", "tifffile_messages"]

_TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


class _TifffileMessages(logging.Filter):
    """Keeps what tifffile logs while this thread reads a TIFF, instead of letting it reach stderr.

    tifffile logs its doubts about a file (wrong strip counts, bad offsets) as warnings, which Python prints when
    nothing is configured: for a file that is refused they would add lines to its one-line error, and for one
    that is read they become a single Python warning (:func:`tifffile_messages`).
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
def tifffile_messages(path: Path, *, warn: bool = True) -> Iterator[None]:
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


def is_tiff(file: BinaryIO) -> bool:
    file.seek(0)
    signature = file.read(4)
    file.seek(0)
    return signature in _TIFF_SIGNATURES


def open_tiff(file: BinaryIO, path: Path) -> tifffile.TiffFile:
    try:
        return tifffile.TiffFile(file, name=path.name)
    except (tifffile.TiffFileError, *DECODE_ERRORS) as error:
        raise corrupt(path, error) from None


def first_tiff_page(tiff: tifffile.TiffFile, path: Path) -> tifffile.TiffPage:
    try:
        page = tiff.pages.first
    except (tifffile.TiffFileError, *DECODE_ERRORS) as error:
        raise corrupt(path, error) from None
    if page.imagedepth > 1:
        raise ImageReadError(f"{path}: unsupported image mode (volumetric TIFF, depth {page.imagedepth})")
    return page


def load_tiff(file: BinaryIO, path: Path, max_pixels: int | str | None) -> Picture:
    with open_tiff(file, path) as tiff:
        page = first_tiff_page(tiff, path)
        check_limits(path, int(page.imagewidth), int(page.imagelength), _tiff_bytes_per_pixel(page), max_pixels)
        check_tiff_complete(file, page, path)
        icc_profile = page.tags.valueof(34675)
        orientation = valid_orientation(page.tags.valueof(274, 1))
        try:
            samples = page.asarray()
        except DECODE_ERRORS as error:
            if "imagecodecs" not in str(error):
                raise corrupt(path, error) from None
            samples = None  # a compression tifffile needs imagecodecs for: let OpenCV's libtiff decode it
        if samples is None:
            file.seek(0)
            channels = _decode_with_opencv(file.read(), path)
            gray = channels.ndim == 2 or channels.shape[2] == 2
            pixels, alpha = planes(channels, channels.ndim == 3 and channels.shape[2] in (2, 4))
        else:
            pixels, alpha, gray = _tiff_channels(page, samples, icc_profile, path)
            del samples
            if int(page.photometric) == tifffile.PHOTOMETRIC.SEPARATED:
                icc_profile = None  # CMYK converted to sRGB
        exif = _tiff_exif(file, tiff, page, path)
    return assemble(
        path,
        Decoded(pixels, alpha, gray, {}),
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


def check_tiff_complete(file: BinaryIO, page: tifffile.TiffPage, path: Path) -> None:
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
        return convert_dtype(table.astype(np.uint16), np.dtype(np.uint8))[samples[:, :, 0]], None, False

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
        cmyk = np.ascontiguousarray(convert_dtype(samples[:, :, :4], np.dtype(np.uint8)))  # Pillow's CMS is 8-bit
        image = Image.frombytes("CMYK", (cmyk.shape[1], cmyk.shape[0]), cmyk)
        colour = np.asarray(cmyk_converter(icc_profile, path)(image))
        alpha = None if alpha is None else convert_dtype(alpha, np.dtype(np.uint8))
        colour_count = 3
    elif kind == photometric.MINISWHITE:
        samples = _inverted(samples, colour_count)
    if premultiplied and alpha is not None:
        colour = _unpremultiply(samples[:, :, :colour_count] if colour is None else colour, alpha)
    if colour is None:
        colour = front_channels(samples, colour_count)
    if colour_count == 1:
        return np.repeat(colour, 3, axis=2), alpha, True
    return np.ascontiguousarray(colour), alpha, False


def _inverted(samples: np.ndarray, colour_count: int) -> np.ndarray:
    """Min-is-white samples made min-is-black, in their own memory when it is writable."""
    if not samples.flags.writeable:
        samples = samples.copy()
    colour = samples[:, :, :colour_count]
    np.subtract(max_value(samples.dtype), colour, out=colour)
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
            scale = max_value(samples.dtype) / full
            return np.clip(np.rint(samples * scale), 0, max_value(samples.dtype)).astype(samples.dtype)
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
        for tag in (*DESCRIPTIVE_TAGS, ORIENTATION_TAG):
            if tag in source:
                exif[tag] = source[tag]
        for tag in (EXIF_IFD_TAG, GPS_IFD_TAG):
            entries = {key: value for key, value in source.get_ifd(tag).items() if key != INTEROP_IFD_TAG}
            if entries:
                exif[tag] = entries
    except (*DECODE_ERRORS, TypeError) as error:
        warnings.warn(f"{path}: TIFF EXIF metadata unreadable, dropped ({error})", stacklevel=4)
        return None
    if not any(tag in exif for tag in (*DESCRIPTIVE_TAGS, EXIF_IFD_TAG, GPS_IFD_TAG)):
        return None
    return exif.tobytes()


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
