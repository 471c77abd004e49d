"""Decoding with Pillow: the plugins of the allowed formats only, into memory tessera provides.

Pillow identifies a file with the plugins of PNG, JPEG, WEBP, BMP and GIF only, never another one (EPS, PDF ...
are refused, no external program ever runs), without its process-wide decompression-bomb limit (tessera's own
limit is checked from the header instead). Colour pictures decode into an anonymous memory map
(:class:`_Storage`) whose RGB samples are then moved to its front and its unused quarter given back, so loading
peaks at about 1.5 times the decoded pixels; the conversion to RGB runs a band of rows at a time.
"""

from __future__ import annotations

import contextlib
import io
import math
import mmap
import struct
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import BmpImagePlugin, GifImagePlugin, Image, JpegImagePlugin, PngImagePlugin, WebPImagePlugin

from tessera.errors import ImageReadError, ImageTooLargeError

from .decode import DECODE_ERRORS, DECODE_PEAK, READABLE_FORMATS, Decoded, band_rows, corrupt
from .pixels import from_float
from .png import check_png_rows, plant_sentinel, rows_missing, sentinel_intact

__all__ = [
    "cmyk_converter",
    "decode_with_pillow",
    "is_animated",
    "load_checked",
    "open_with_pillow",
    "pillow_bytes_per_pixel",
    "pillow_decode_peak",
]

# The Pillow plugins of the formats tessera reads: importing them registers them (Image.OPEN) without
# Image.init()'s every other plugin.
_PLUGINS = (BmpImagePlugin, GifImagePlugin, JpegImagePlugin, PngImagePlugin, WebPImagePlugin)
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
_BAND_PIXEL_BYTES = 16  # the most bytes a pixel of a band takes in a conversion (source, copies, result)
# Peak memory of decoding, as a multiple of the decoded pixels, above DECODE_PEAK: libjpeg holds every coefficient
# of a progressive JPEG, and libwebp a whole ARGB frame of a lossless WEBP.
_PROGRESSIVE_JPEG_PEAK = 2.5
_WEBP_PEAK = 3.5


def open_with_pillow(file: BinaryIO, path: Path) -> Image.Image:
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
            with own_limit_only(path):
                return factory(file, "")  # type: ignore[misc]
        except (SyntaxError, IndexError, TypeError, struct.error) as error:
            broken = broken or error
        except (OSError, ValueError, EOFError) as error:
            raise corrupt(path, error) from None
    if broken is not None:
        raise corrupt(path, broken)
    raise _not_readable(path, prefix)


@contextlib.contextmanager
def own_limit_only(path: Path) -> Iterator[None]:
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


def pillow_bytes_per_pixel(image: Image.Image, sixteen_bit: bool) -> int:
    """Bytes a pixel of the Picture made from ``image`` takes (three colour samples, and alpha), from the header."""
    mode = image.mode
    itemsize = 2 if sixteen_bit or mode.startswith("I;16") or mode == "I" else 4 if mode == "F" else 1
    has_alpha = mode in ("RGBA", "LA", "La", "PA", "RGBa") or "transparency" in image.info
    return (3 + has_alpha) * itemsize


def pillow_decode_peak(image: Image.Image) -> float:
    """The peak memory of decoding ``image``, in decoded pixels (see DECODE_PEAK)."""
    if image.format == "WEBP":
        return _WEBP_PEAK
    if image.format in ("JPEG", "MPO") and image.info.get("progressive"):
        return _PROGRESSIVE_JPEG_PEAK
    return DECODE_PEAK


def is_animated(image: Image.Image) -> bool:
    """Whether a GIF, PNG (APNG) or WEBP has more than one frame (a multi-picture JPEG is not an animation)."""
    if image.format not in ("GIF", "PNG", "WEBP"):
        return False
    try:
        return bool(getattr(image, "is_animated", False))
    except DECODE_ERRORS:
        return False  # the frames after the first are unreadable; the first one was read


class _Storage:
    """Memory tessera provides for a Pillow image to decode into: an anonymous memory map.

    Pillow keeps 4 bytes a pixel for RGB and every other colour mode; decoding into a map tessera owns lets the
    RGB samples then be moved to the front of the same memory (:func:`front_channels`) and the unused quarter be
    given back (:meth:`keep`), instead of copying the whole picture out of Pillow's storage. It also lets a PNG's
    last row be checked (:func:`plant_sentinel`).
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


def decode_with_pillow(image: Image.Image, path: Path, last_row: int | None = None) -> Decoded:
    """Decode with the Pillow plugin that recognised the file, into a :class:`_Storage`, then convert in bands.

    Peak memory: 4/3 of the RGB pixels for colour sources (Pillow's storage, which then holds them), the pixels
    plus a third for gray and palette ones (their storage, then the pixels), plus a band. Progressive JPEGs add
    libjpeg's buffer of all the coefficients (about the size of the pixels), which no decoder can avoid.
    ``last_row`` is the row a PNG decoder writes last (:func:`png_last_row`), checked to have been written.
    """
    png = last_row is not None
    storage = _Storage.attach(image, _PNG_STORAGE_PIXEL_BYTES if png else _STORAGE_PIXEL_BYTES)
    if png and storage is None:
        check_png_rows(image.fp, path, *image.size)  # type: ignore[arg-type]
    load_checked(image, path, storage.row(last_row) if storage is not None and last_row is not None else None)
    if storage is not None and image.im is not storage.core:
        storage = None  # the plugin replaced it (not PNG's): convert from Pillow's own storage
    pixels, alpha, gray, in_storage = _convert_bands(image, path, storage)
    info = dict(image.info)
    with own_limit_only(path):
        animated = is_animated(image)
    Image.Image.close(image)  # drops the core and its view of the storage (ImageFile.close would close our file)
    if storage is not None and in_storage:
        shape, dtype = pixels.shape, pixels.dtype
        del pixels  # the storage can shrink only once no view of it is left
        pixels = storage.keep(shape, dtype)
    return Decoded(pixels, alpha, gray, info, animated)


def load_checked(image: Image.Image, path: Path, last_row: np.ndarray | None = None) -> None:
    """Decode ``image`` (Pillow's ``load``), its decoder's errors made ImageReadError.

    ``last_row`` is where, in the storage given to ``image``, its PNG decoder writes its last row: random bytes
    planted there must be gone once it has decoded into that storage (:func:`sentinel_intact`).
    """
    storage = image.im if last_row is not None else None
    sentinel = plant_sentinel(last_row) if last_row is not None else b""
    try:
        with own_limit_only(path):
            image.load()
    except DECODE_ERRORS as error:
        raise corrupt(path, error) from None
    if last_row is not None and image.im is storage and sentinel_intact(last_row, sentinel):
        raise rows_missing(path, image.size)


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
    rows = band_rows(width * _BAND_PIXEL_BYTES)
    # a CMYK picture's colour transform is built once for all its bands (building one takes about as long as
    # converting a band with it)
    cmyk_to_rgb = cmyk_converter(image.info.get("icc_profile"), path) if image.mode == "CMYK" else None
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
    ``cmyk_to_rgb`` when given: the :func:`cmyk_converter` of its file, built once for all its bands)."""
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
        convert = cmyk_to_rgb or cmyk_converter(image.info.get("icc_profile"), path)
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


def cmyk_converter(icc_profile: object, path: Path) -> _ToRGB:
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
