"""Read pictures: the first step of every task.

``load_image`` turns a file into a :class:`~tessera.image.pixels.Picture`: RGB pixels (uint8, uint16 or float32
in [0, 1]) with the alpha channel kept aside, a ``gray`` flag for one-channel sources, the ICC profile and the
EXIF block carried along, and the EXIF orientation already applied. The pixel count is read from the header and
checked against a limit before anything is decoded (decompression bombs); a header that claims more pixels than
the file's bytes could encode is refused before anything is allocated.

Decoders, an allow-list recognised by content (never by suffix): PNG, JPEG, BMP and GIF (first frame) through
Pillow's plugins of these formats only (:mod:`tessera.image.pillow`); 16-bit PNG through Pillow too, in two
passes (:mod:`tessera.image.png16`); WEBP through libwebp (imagecodecs); TIFF through tifffile, with OpenCV's
libtiff as the fallback (:mod:`tessera.image.tiff`). Each decodes into memory tessera provides and converts band
by band, so loading peaks at about 1.5 times the decoded pixels at most.

Conventions:
- ``Picture.exif`` always starts with ``b"Exif\\0\\0"`` and has its orientation set to 1 (it was applied).
- CMYK sources are converted to RGB through their embedded ICC profile when there is one (the result is sRGB, so
  ``icc_profile`` is then None), with Pillow's naive formula otherwise. 16-bit CMYK goes through 8 bits.
- Float sources are clipped to [0, 1] (NaN becomes 0).

The limits (:data:`DEFAULT_MAX_PIXELS`, :data:`MEMORY_SHARE`), :data:`READABLE_FORMATS` and
:class:`FirstFrameWarning` are defined in :mod:`tessera.image.decode`, which every decoder shares, and are
part of this module's interface.
"""

from __future__ import annotations

import io
import os
import stat
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image

from tessera.errors import ImageReadError

from .decode import (
    DEFAULT_MAX_PIXELS,
    MEMORY_SHARE,
    READABLE_FORMATS,
    Decoded,
    FirstFrameWarning,
    check_limits,
    check_max_pixels,
    corrupt,
    planes,
)
from .exif import assemble, exif_orientation, normalise_exif, valid_orientation
from .pillow import decode_with_pillow, is_animated, open_with_pillow, pillow_bytes_per_pixel, pillow_decode_peak
from .pixels import Picture
from .png import PNG_SAMPLES, check_png_rows, png_header, png_last_row
from .png16 import decode_png16
from .tiff import first_tiff_page, is_tiff, load_tiff, open_tiff, tifffile_messages

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FirstFrameWarning",
    "MEMORY_SHARE",
    "READABLE_FORMATS",
    "load_image",
    "read_image_size",
]


def read_image_size(path: str | os.PathLike[str]) -> tuple[int, int]:
    """Return ``(width, height)`` of the image at ``path`` as displayed (EXIF orientation applied).

    Reads the header only, never the pixel data, so it is cheap on any size of file. Only the formats of
    :data:`READABLE_FORMATS` are recognised, as by :func:`load_image`.
    """
    path = Path(path)
    with _open_for_reading(path) as file:
        if is_tiff(file):
            with tifffile_messages(path, warn=False), open_tiff(file, path) as tiff:
                page = first_tiff_page(tiff, path)
                width, height = int(page.imagewidth), int(page.imagelength)
                orientation = valid_orientation(page.tags.valueof(274, 1))
        else:
            with open_with_pillow(file, path) as image:
                width, height = image.size
                orientation = exif_orientation(normalise_exif(image.info.get("exif")))
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
    check_max_pixels(max_pixels)
    path = Path(path)
    with _open_for_reading(path) as file:
        if is_tiff(file):
            with tifffile_messages(path):
                return load_tiff(file, path, max_pixels)
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


def _load_with_pillow(file: BinaryIO, path: Path, max_pixels: int | str | None) -> Picture:
    with open_with_pillow(file, path) as image:
        width, height = image.size
        sixteen_bit = image.format == "PNG" and png_header(file)[0] == 16
        bytes_per_pixel = pillow_bytes_per_pixel(image, sixteen_bit)
        check_limits(path, width, height, bytes_per_pixel, max_pixels, pillow_decode_peak(image))
        _check_encoded_size(file, path, image)
        format_name = image.format
        cmyk = image.mode == "CMYK"
        last_row = png_last_row(file, height) if format_name == "PNG" else None
        if format_name == "PNG" and last_row is None:
            check_png_rows(file, path, width, height)
        if sixteen_bit and image.mode != "I;16":
            decoded = decode_png16(file, path, image, last_row)
        elif format_name == "WEBP":
            decoded = _decode_webp(file, path, image)
        else:
            decoded = decode_with_pillow(image, path, last_row)
    exif = normalise_exif(decoded.info.get("exif"))  # PNG's eXIf may come after IDAT: taken after decoding
    return assemble(
        path,
        decoded,
        orientation=exif_orientation(exif),
        icc_profile=None if cmyk else decoded.info.get("icc_profile"),  # CMYK pixels are sRGB now
        exif=exif,
        format=format_name,
    )


# Sound lower bounds of an encoded size (no valid file is smaller), used to refuse headers that lie:
_DEFLATE_BEST_RATIO = 1032  # a 258-byte deflate match costs at least 2 bits (a length and a distance code)
_JPEG_HUFFMAN_FRAMES = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7})  # >= 1 bit per 8x8 block
_GIF_BYTES_PER_PIXEL = 3 / 8192  # an LZW code stands for at most 4096 pixels, and then takes 12 bits


def _check_encoded_size(file: BinaryIO, path: Path, image: Image.Image) -> None:
    """Refuse a header that claims more pixels than the file's bytes could encode, before anything is allocated.

    Only sound lower bounds are used, which no valid file falls below (see ``_least_encoded_bytes``); a file
    above its bound that is still short of data is refused when its decoder runs out of it.
    """
    size = os.fstat(file.fileno()).st_size
    least = _least_encoded_bytes(file, image)
    if size < least:
        from tessera.options import format_bytes

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
        depth, colour_type, _ = png_header(file)
        samples = PNG_SAMPLES.get(colour_type, 1)
        return height * ((width * samples * depth + 7) // 8) // _DEFLATE_BEST_RATIO
    if image.format in ("JPEG", "MPO") and _jpeg_frame_marker(file) in _JPEG_HUFFMAN_FRAMES:
        return -(-width // 8) * -(-height // 8) // 8
    if image.format == "GIF" and tile is not None:
        left, upper, right, lower = tile[1]
        return int((right - left) * (lower - upper) * _GIF_BYTES_PER_PIXEL)
    if image.format == "BMP" and tile is not None and tile[0] == "raw" and isinstance(tile[3], tuple):
        return int(tile[2]) + int(tile[3][1]) * height
    return 0


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


def _decode_webp(file: BinaryIO, path: Path, image: Image.Image) -> Decoded:
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
        raise corrupt(path, error) from None
    del data
    pixels, alpha = planes(channels, has_alpha)
    return Decoded(pixels, alpha, False, dict(image.info), is_animated(image))
