"""Read and write pictures: the first and last step of every task.

``load_image`` turns a file into a :class:`Picture`: RGB pixels (uint8, uint16 or float32 in [0, 1]) with the
alpha channel kept aside, a ``gray`` flag for one-channel sources, the ICC profile and the EXIF block carried
along, and the EXIF orientation already applied. The pixel count is read from the header and checked against a
limit before anything is decoded (decompression bombs). ``save_image`` writes a picture back atomically: the
encoder writes a temporary file in the target folder, which is renamed over the target only once complete.

Decoders: Pillow for PNG, JPEG, WEBP, BMP and anything else it knows; OpenCV for 16-bit PNG (Pillow cannot hold
16-bit RGB); tifffile for TIFF (16-bit, float, BigTIFF, tiled), with OpenCV's libtiff as the fallback for
compressions tifffile cannot decode without the optional ``imagecodecs`` package (LZW, JPEG).

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

import dataclasses
import errno
import importlib.util
import io
import os
import secrets
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import cv2
import numpy as np
import tifffile
from PIL import Image, TiffImagePlugin

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
    "IMAGE_SUFFIXES",
    "Picture",
    "from_float",
    "load_image",
    "read_image_size",
    "save_image",
    "to_float",
]

DEFAULT_MAX_PIXELS = 500_000_000
"""Pictures with more pixels than this are refused before decoding, unless the caller raises the limit."""

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


def read_image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Return ``(width, height)`` of the image at ``path`` as displayed (EXIF orientation applied).

    Reads the header only, never the pixel data, so it is cheap on any size of file.
    """
    path = Path(path)
    with _open_for_reading(path) as file:
        if _is_tiff(file):
            with _open_tiff(file, path) as tiff:
                page = _first_tiff_page(tiff, path)
                width, height = int(page.imagewidth), int(page.imagelength)
                orientation = _valid_orientation(page.tags.valueof(274, 1))
        else:
            with _open_with_pillow(file, path) as image:
                width, height = image.size
                orientation = _orientation(_normalise_exif(image.info.get("exif")))
    return (height, width) if orientation >= 5 else (width, height)


def load_image(path: str | os.PathLike[str], *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Picture:
    """Read the image at ``path`` into a :class:`Picture` (see the module's docstring for the conventions).

    ``max_pixels`` (None: no limit) is checked against the header before any pixel is decoded.
    Raises ImageReadError (missing, not an image, truncated or corrupt, unsupported mode) or ImageTooLargeError.
    """
    path = Path(path)
    with _open_for_reading(path) as file:
        if _is_tiff(file):
            return _load_tiff(file, path, max_pixels)
        return _load_with_pillow(file, path, max_pixels)


def _open_for_reading(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise ImageReadError(f"{path}: is a folder, not an image file") from None
    except PermissionError:
        raise ImageReadError(f"{path}: permission denied") from None
    except OSError as error:
        raise ImageReadError(f"{path}: cannot open ({error.strerror or error})") from None


def _check_pixel_limit(path: Path, width: int, height: int, max_pixels: int | None) -> None:
    if width <= 0 or height <= 0:
        raise ImageReadError(f"{path}: corrupt header (size {width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageTooLargeError(
            f"{path}: {width}x{height} = {width * height:,} pixels is over the limit of {max_pixels:,} pixels "
            f"(raise max_pixels to read it)"
        )


def _corrupt(path: Path, error: BaseException) -> ImageReadError:
    reason = str(error) or type(error).__name__
    return ImageReadError(f"{path}: truncated or corrupt image data ({reason})")


# Errors Pillow, tifffile and zlib raise on bad data; anything else is a bug and is left to propagate.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, IndexError, KeyError, struct.error, zlib.error)


def _assemble(
    path: Path,
    channels: np.ndarray,
    *,
    gray: bool,
    has_alpha: bool,
    orientation: int,
    icc_profile: bytes | None,
    exif: bytes | None,
    format: str | None,
) -> Picture:
    """Orient an HxWxC array (C = 1/2 gray[+alpha], 3/4 RGB[+alpha]) and split it into a Picture."""
    if channels.ndim == 2:
        channels = channels[:, :, None]
    channels = _apply_orientation(channels, orientation)
    colour = channels[:, :, :-1] if has_alpha else channels
    alpha = np.ascontiguousarray(channels[:, :, -1]) if has_alpha else None
    pixels = np.repeat(colour[:, :, :1], 3, axis=2) if colour.shape[2] == 1 else np.ascontiguousarray(colour)
    return Picture(
        pixels=pixels,
        alpha=alpha,
        gray=gray,
        icc_profile=icc_profile or None,
        exif=_reset_orientation(exif) if exif else None,
        source=path,
        format=format,
    )


# ----------------------------------------------------------------------------------- Pillow (and OpenCV for PNG)


def _open_with_pillow(file: BinaryIO, path: Path) -> Image.Image:
    """Identify ``file`` with Pillow's format plugins, lazily (header only).

    This is ``PIL.Image.open`` without its decompression-bomb check: that check reads the process-wide
    ``Image.MAX_IMAGE_PIXELS`` and would refuse pictures our own, per-call limit allows. Our limit is checked by
    the caller, from the size found here, before decoding.
    """
    prefix = file.read(16)
    if not prefix:
        raise ImageReadError(f"{path}: not an image (empty file)")
    Image.init()  # Pillow's own lazy plugin registration, as Image.open does
    for name in list(Image.ID):
        factory, accept = Image.OPEN[name]
        verdict = accept(prefix) if accept else True
        if not verdict or isinstance(verdict, str):
            continue
        file.seek(0)
        try:
            return factory(file, str(path))
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue
        except (OSError, ValueError, EOFError) as error:
            raise _corrupt(path, error) from None
    raise ImageReadError(f"{path}: not an image (unknown or unsupported format)")


def _load_with_pillow(file: BinaryIO, path: Path, max_pixels: int | None) -> Picture:
    with _open_with_pillow(file, path) as image:
        width, height = image.size
        _check_pixel_limit(path, width, height, max_pixels)
        format_name = image.format
        if format_name == "PNG" and _png_bit_depth(file) == 16:
            channels, gray, has_alpha = _decode_png16(file, path)
        else:
            try:
                image.load()
            except _DECODE_ERRORS as error:
                raise _corrupt(path, error) from None
            channels, gray, has_alpha = _pillow_channels(image, path)
        icc_profile = image.info.get("icc_profile")
        exif = _normalise_exif(image.info.get("exif"))  # PNG's eXIf may come after IDAT: read after load()
        if image.mode == "CMYK":
            icc_profile = None  # the pixels are sRGB now
    return _assemble(
        path,
        channels,
        gray=gray,
        has_alpha=has_alpha,
        orientation=_orientation(exif),
        icc_profile=icc_profile,
        exif=exif,
        format=format_name,
    )


def _pillow_channels(image: Image.Image, path: Path) -> tuple[np.ndarray, bool, bool]:
    """Return (HxWxC array, gray, has_alpha) for a loaded Pillow image of any common mode."""
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
        return np.asarray(image).astype(np.uint16), True, False
    if mode == "I":
        values = np.asarray(image)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ImageReadError(f"{path}: unsupported image mode I (32-bit integers beyond the 16-bit range)")
        return values.astype(np.uint16), True, False
    if mode == "F":
        return from_float(np.asarray(image), np.float32), True, False
    if mode == "CMYK":
        return np.asarray(_cmyk_to_rgb(image, image.info.get("icc_profile"), path)), False, False
    if mode in ("PA", "RGBA", "RGBa") or (mode in ("P", "RGB") and has_transparency):
        return np.asarray(image.convert("RGBA")), False, True
    if mode in ("P", "RGB", "RGBX", "YCbCr", "HSV"):
        return np.asarray(image.convert("RGB")), False, False
    raise ImageReadError(f"{path}: unsupported image mode {mode}")


def _palette_is_gray(image: Image.Image) -> bool:
    palette = image.getpalette("RGB") or []
    entries = np.asarray(palette, dtype=np.uint8).reshape(-1, 3)
    return bool(len(entries)) and bool((entries == entries[:, :1]).all())


def _cmyk_to_rgb(image: Image.Image, icc_profile: bytes | None, path: Path) -> Image.Image:
    """Convert a CMYK image to sRGB through its ICC profile when it has one, with Pillow's formula otherwise."""
    if icc_profile:
        try:
            from PIL import ImageCms

            source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
            target = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
            converted = ImageCms.profileToProfile(image, source, target, outputMode="RGB")
            if converted is not None:
                return converted
        except (ImportError, OSError, ValueError, TypeError) as error:  # PyCMSError is an OSError
            warnings.warn(f"{path}: ICC profile unusable ({error}); converting CMYK naively", stacklevel=3)
    return image.convert("RGB")


def _png_bit_depth(file: BinaryIO) -> int:
    file.seek(0)
    header = file.read(26)
    if len(header) < 26 or not header.startswith(_PNG_SIGNATURE):
        return 8
    return header[24]


def _png_colour_type(file: BinaryIO) -> int:
    file.seek(25)
    return file.read(1)[0]


def _decode_png16(file: BinaryIO, path: Path) -> tuple[np.ndarray, bool, bool]:
    """Decode a 16-bit PNG with OpenCV (Pillow reduces 16-bit RGB to 8 bits)."""
    gray = _png_colour_type(file) in (0, 4)
    file.seek(0)
    channels = _decode_with_opencv(file.read(), path)
    has_alpha = channels.ndim == 3 and channels.shape[2] in (2, 4)
    if gray and channels.ndim == 3:  # OpenCV expands gray+alpha to RGBA with equal colour channels
        channels = channels[:, :, [0, 3]] if has_alpha else channels[:, :, :1]
    return channels, gray, has_alpha


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


def _load_tiff(file: BinaryIO, path: Path, max_pixels: int | None) -> Picture:
    with _open_tiff(file, path) as tiff:
        page = _first_tiff_page(tiff, path)
        _check_pixel_limit(path, int(page.imagewidth), int(page.imagelength), max_pixels)
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
            has_alpha = channels.ndim == 3 and channels.shape[2] in (2, 4)
        else:
            channels, gray, has_alpha = _tiff_channels(page, samples, icc_profile, path)
            if int(page.photometric) == tifffile.PHOTOMETRIC.SEPARATED:
                icc_profile = None  # CMYK converted to sRGB
        exif = _tiff_exif(file, tiff, page)
    return _assemble(
        path,
        channels,
        gray=gray,
        has_alpha=has_alpha,
        orientation=orientation,
        icc_profile=icc_profile if isinstance(icc_profile, bytes) else None,
        exif=exif,
        format="TIFF",
    )


def _check_tiff_complete(file: BinaryIO, page: tifffile.TiffPage, path: Path) -> None:
    """Refuse a TIFF whose strips or tiles reach past the end of the file (tifffile would fill them in)."""
    size = os.fstat(file.fileno()).st_size
    ends = [offset + count for offset, count in zip(page.dataoffsets, page.databytecounts) if count]
    if ends and max(ends) > size:
        raise ImageReadError(f"{path}: truncated or corrupt image data (image data ends past the end of the file)")


def _tiff_channels(
    page: tifffile.TiffPage, samples: np.ndarray, icc_profile: object, path: Path
) -> tuple[np.ndarray, bool, bool]:
    """Return (HxWxC array, gray, has_alpha) for the samples of one TIFF page."""
    axes = page.axes
    if axes.startswith("S") and samples.ndim == 3:
        samples = np.moveaxis(samples, 0, -1)
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
        rgb = table[samples[:, :, 0]]
        return _convert_dtype(rgb.astype(np.uint16), np.dtype(np.uint8)), False, False

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
    colour = samples[:, :, :colour_count]
    alpha = samples[:, :, colour_count] if has_alpha else None

    if kind == photometric.SEPARATED:
        if samples.dtype == np.float32:
            raise ImageReadError(f"{path}: unsupported image mode (floating-point CMYK)")
        cmyk = np.ascontiguousarray(_convert_dtype(colour, np.dtype(np.uint8)))  # Pillow's colour management is 8-bit
        image = Image.frombytes("CMYK", (cmyk.shape[1], cmyk.shape[0]), cmyk)
        colour = np.asarray(_cmyk_to_rgb(image, icc_profile if isinstance(icc_profile, bytes) else None, path))
        alpha = None if alpha is None else _convert_dtype(alpha, np.dtype(np.uint8))
    elif kind == photometric.MINISWHITE:
        colour = _max_value(colour.dtype) - colour
    if alpha is None:
        return colour, colour_count == 1, False
    if premultiplied:
        colour = _unpremultiply(colour, alpha)
    return np.dstack([colour, alpha]), colour_count == 1, True


def _normalise_tiff_values(samples: np.ndarray, page: tifffile.TiffPage, path: Path) -> np.ndarray:
    """Bring TIFF samples to uint8, uint16 or float32 in [0, 1]."""
    if samples.dtype == np.bool_:
        return samples.astype(np.uint8) * np.uint8(255)
    if samples.dtype.kind == "f":
        return from_float(samples, np.float32)
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


def _tiff_exif(file: BinaryIO, tiff: tifffile.TiffFile, page: tifffile.TiffPage) -> bytes | None:
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
        warnings.warn(f"{file.name}: TIFF EXIF metadata unreadable, dropped ({error})", stacklevel=4)
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


def _apply_orientation(array: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an HxW(xC) array stored with EXIF ``orientation`` upright (as PIL.ImageOps.exif_transpose does)."""
    if orientation == 2:
        array = array[:, ::-1]
    elif orientation == 3:
        array = array[::-1, ::-1]
    elif orientation == 4:
        array = array[::-1]
    elif orientation == 5:
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
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise OptionError(f"quality must be an integer from 1 to 100, got {quality!r}")
    _check_output_path(path, picture.source, overwrite_input)
    largest = _LARGEST_SIDE[format_name]
    if max(picture.width, picture.height) > largest:
        raise OutputError(
            f"{path}: {format_name} cannot hold {picture.width}x{picture.height} pixels "
            f"(largest side {largest:,}); choose another format"
        )
    encoder = _ENCODERS[format_name]
    write_atomically(path, lambda file: encoder(picture, file, int(quality)), format_name)
    return path


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
    if format is not None:
        name = str(format).upper()
        name = {"JPG": "JPEG", "TIF": "TIFF"}.get(name, name)
        return look_up_option(name, _WRITABLE_FORMATS, "image format")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        look_up_option(suffix or "(none)", IMAGE_SUFFIXES, "image file suffix")
    return IMAGE_SUFFIXES[suffix]


def _check_output_path(path: Path, source: Path | None, overwrite_input: bool) -> None:
    folder = path.parent
    if not folder.exists():
        raise OutputError(f"{path}: cannot write, folder {folder} does not exist")
    if not folder.is_dir():
        raise OutputError(f"{path}: cannot write, {folder} is not a folder")
    if path.is_dir():
        raise OutputError(f"{path}: cannot write, it is a folder")
    if source is not None and not overwrite_input and _same_file(path, Path(source)):
        raise OutputError(f"{path}: refusing to overwrite the input image (pass overwrite_input=True to allow it)")


def copy_atomically(source: Path, target: Path) -> None:
    """Copy ``source``'s bytes to ``target`` (an unchanged copy, not a re-encoding), atomically, keeping its times."""
    import shutil

    def copy(file: BinaryIO) -> None:
        with open(source, "rb") as original:
            shutil.copyfileobj(original, file)

    write_atomically(Path(target), copy, "copy")
    shutil.copystat(source, target)


def _same_file(first: Path, second: Path) -> bool:
    try:
        return os.path.samefile(first, second)
    except OSError:
        return first.resolve() == second.resolve()


def write_atomically(path: Path, write: Callable[[BinaryIO], None], format_name: str = "file") -> None:
    """Let ``write`` fill a temporary file beside ``path``, sync it, then rename it over ``path``.

    Whatever fails, ``path`` is either untouched or complete and the temporary file is gone; OS errors become
    OutputError (ResourceError when the disk is full). Every file tessera writes goes through here.
    """
    temporary, file = _create_temporary(path)
    try:
        with file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException as error:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        if isinstance(error, OSError):
            raise _output_error(path, error) from None
        if isinstance(error, ValueError) and not isinstance(error, InputError):
            raise OutputError(f"{path}: cannot encode as {format_name} ({error})") from None
        raise
    _sync_folder(path.parent)


def _create_temporary(path: Path) -> tuple[Path, BinaryIO]:
    """Create a new file beside ``path`` with the same suffix (exclusive creation; the umask applies as usual)."""
    for _ in range(100):
        temporary = path.with_name(f".{path.stem}.{secrets.token_hex(4)}.tmp{path.suffix}")
        try:
            return temporary, open(temporary, "x+b")
        except FileExistsError:
            continue
        except OSError as error:
            raise _output_error(path, error) from None
    raise OutputError(f"{path}: cannot create a temporary file in {path.parent}")


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
