"""Write pictures: the last step of every task, and the checks that refuse an output before any work.

``save_image`` writes a picture atomically (:func:`tessera.image.atomic.write_atomically`): the encoder writes
a temporary file in the target folder, which is renamed over the target only once complete. The format comes
from the suffix (:data:`IMAGE_SUFFIXES`) or is named.

Conventions: uint16 stays 16-bit in PNG and TIFF; float32 stays float in TIFF and becomes 16-bit in PNG; JPEG,
WEBP and BMP get 8 bits. Alpha is written to PNG, WEBP and TIFF and dropped for JPEG and BMP. Gray pictures are
written with one channel, except to WEBP, which has no gray mode. The ICC profile and the EXIF block (its
orientation 1: the pixels are upright) are written to every format that holds them.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np
import tifffile
from PIL import BmpImagePlugin, Image, JpegImagePlugin, PngImagePlugin, WebPImagePlugin

from tessera.errors import InputError, OptionError, OutputError, look_up_option

from .atomic import check_writable, copy_atomically, same_file, write_atomically
from .exif import (
    append_tiff_sub_ifds,
    descriptive_tiff_tags,
    exif_sub_ifds,
    normalise_exif,
    parse_exif,
    placeholder_tag,
    reset_orientation,
)
from .pixels import DTYPES, Picture, convert_dtype, single_channel
from .png import encode_png16_gray_alpha, with_png_metadata

__all__ = [
    "IMAGE_SUFFIXES",
    "check_output",
    "check_output_folder",
    "check_output_size",
    "check_quality",
    "save_image",
]

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
# The Pillow plugins of the formats Pillow writes for tessera (TIFF is tifffile's): importing them registers them
# (Image.SAVE), so that saving never calls Image.init(), which would load every other plugin.
_PLUGINS = (BmpImagePlugin, JpegImagePlugin, PngImagePlugin, WebPImagePlugin)

_LARGEST_SIDE = {"JPEG": 65_535, "WEBP": 16_383, "PNG": 2**31 - 1, "BMP": 2**31 - 1, "TIFF": 2**32 - 1}
_BIGTIFF_FROM_BYTES = 2**32 - 2**25  # classic TIFF offsets are 32-bit; keep a margin for tags and the EXIF block


def save_image(
    picture: Picture | np.ndarray,
    path: str | os.PathLike[str],
    *,
    quality: int = 95,
    overwrite_input: bool = False,
    format: str | None = None,
    cancel: threading.Event | None = None,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Write ``picture`` to ``path`` atomically and return the path.

    The format comes from ``format`` or the suffix (.png .jpg .jpeg .webp .tif .tiff .bmp). A bare array may be
    passed: HxW or HxWx1 (gray), HxWx2 (gray+alpha), HxWx3 (RGB), HxWx4 (RGBA). ``quality`` (1-100) applies to
    JPEG and WEBP. Writing over ``picture.source`` is refused unless ``overwrite_input``. The target is replaced
    only by a complete file: the encoder writes a temporary file beside it, which is removed on any failure.

    ``cancel`` (an event) stops the save with :class:`~tessera.errors.CancelledError` at the encoder's next
    write, or at the latest before the rename, leaving no file; ``progress`` is called with the bytes written so
    far (see :func:`~tessera.image.atomic.write_atomically`). Pillow's PNG, JPEG and BMP encoders and tifffile
    write as they go; Pillow's WEBP and OpenCV's 16-bit PNG encode the whole file first, so for them a cancel
    takes effect only once the encoding is done (before anything is renamed).
    """
    if not isinstance(picture, Picture):
        picture = _picture_from_array(picture)
    path = Path(path)
    format_name = _output_format(path, format)
    check_quality(quality)
    _check_output_path(path, picture.source, overwrite_input)
    check_output_size(path, picture.width, picture.height, format_name)
    encoder = _ENCODERS[format_name]
    write_atomically(path, lambda file: encoder(picture, file, int(quality)), format_name, cancel=cancel,
                     progress=progress)
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
    check_writable(path)
    return format_name


def check_quality(quality: object) -> None:
    """Refuse a JPEG/WEBP ``quality`` that is not a whole number from 1 to 100."""
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise OptionError(f"quality must be an integer from 1 to 100, got {quality!r}", option="quality",
                          value=quality, expected="an integer from 1 to 100")


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
    check_writable(existing / "probe")


def _picture_from_array(array: object) -> Picture:
    array = np.asarray(array)
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * np.uint8(255)
    elif array.dtype == np.float64:
        array = array.astype(np.float32)
    if array.dtype not in DTYPES:
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


def _output_channels(picture: Picture, dtype: np.dtype, *, keep_alpha: bool, keep_gray: bool) -> np.ndarray:
    """Return the HxWxC array to encode: C = 1/2 (gray[+alpha]) or 3/4 (RGB[+alpha]), in ``dtype``."""
    pixels = convert_dtype(picture.pixels, dtype)
    if keep_gray and picture.gray:
        pixels = single_channel(pixels)
    if keep_alpha and picture.alpha is not None:
        return np.dstack([pixels, convert_dtype(picture.alpha, dtype)])
    return pixels


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
        data = encode_png16_gray_alpha(channels)  # neither Pillow nor OpenCV writes 16-bit gray+alpha
    else:
        ok, buffer = cv2.imencode(".png", _to_opencv_order(channels))
        if not ok:
            raise ValueError("OpenCV could not encode the 16-bit PNG")
        data = buffer.tobytes()
    file.write(with_png_metadata(data, picture.icc_profile, _output_exif(picture)))


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
    exif = parse_exif(_output_exif(picture))
    sub_ifds = exif_sub_ifds(exif)
    placeholders = [(placeholder_tag(tag), 16 if bigtiff else 4, 1, 0, True) for tag in sub_ifds]
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
        extratags=descriptive_tiff_tags(exif) + placeholders,
    )
    if sub_ifds:
        append_tiff_sub_ifds(file, sub_ifds, bigtiff)


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
    exif = normalise_exif(picture.exif)
    return reset_orientation(exif) if exif else None


def _to_opencv_order(channels: np.ndarray) -> np.ndarray:
    if channels.shape[2] == 3:
        return cv2.cvtColor(channels, cv2.COLOR_RGB2BGR)
    if channels.shape[2] == 4:
        return cv2.cvtColor(channels, cv2.COLOR_RGBA2BGRA)
    return channels


def copy_unchanged(source: str | os.PathLike[str], target: str | os.PathLike[str], *,
                   overwrite_input: bool = False) -> Path | None:
    """``source``'s own bytes as ``target`` when both name one format (no re-encoding, metadata and all), for a
    job that changed no pixel; None when the formats differ (the caller encodes then). Refuses to replace the
    input unless ``overwrite_input`` (then there is nothing to write)."""
    source, target = Path(source), Path(target)
    formats = [IMAGE_SUFFIXES.get(path.suffix.lower()) for path in (source, target)]
    if formats[0] is None or formats[0] != formats[1]:
        return None
    if target.exists() and same_file(source, target):
        if not overwrite_input:
            raise OutputError(f"{target}: the output would replace the input (add --overwrite)")
        return target
    copy_atomically(source, target)
    return target
