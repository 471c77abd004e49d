"""Limits of the web UI, checked before any work starts, each with a message that says what to do.

Uploads: a byte limit (also enforced by Gradio while the file arrives) and a pixel limit read from the file's
header before decoding (decompression bombs, photos too large for this machine). Results: a job whose output
would not fit in the host memory that is available is refused up front instead of failing half-way.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ImageTooLargeError, InputError, ResourceError
from ..image.pixels import Picture
from ..image.read import load_image
from ..image.write import check_quality as check_image_quality
from ..options import format_bytes

DEFAULT_MAX_UPLOAD = 200 << 20         # bytes
DEFAULT_MAX_PIXELS = 100_000_000       # 100 megapixels
MAX_SCALE = 8.0                        # the largest upscale factor the web UI offers
RESULT_MEMORY_SHARE = 0.5              # of available host memory a result canvas may take


@dataclass(frozen=True)
class Limits:
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD
    max_pixels: int = DEFAULT_MAX_PIXELS


def check_upload(path: str | None, limits: Limits, what: str = "photo") -> Path:
    """The uploaded file's path, after checking that there is one and that it is not over the byte limit."""
    if not path:
        raise InputError(f"no {what}: upload one first")
    file = Path(path)
    try:
        size = file.stat().st_size
    except OSError:
        raise InputError(f"{file.name}: the upload is gone (the page was open too long?): upload it again") from None
    if size > limits.max_upload_bytes:
        raise ImageTooLargeError(f"{file.name}: {format_bytes(size)} is over the upload limit of "
                                 f"{format_bytes(limits.max_upload_bytes)}")
    if size == 0:
        raise InputError(f"{file.name}: the file is empty")
    return file


def open_upload(path: str | None, limits: Limits, what: str = "photo") -> Picture:
    """Decode an uploaded image within the limits (bytes, pixels); unreadable files raise ImageReadError."""
    return load_image(check_upload(path, limits, what), max_pixels=limits.max_pixels)


def check_quality(quality: object) -> None:
    """The JPEG/WEBP quality a client sent, checked before the job by the check
    :func:`~tessera.image.write.save_image` makes after; a slider sends whole numbers as floats (95.0), which count
    as whole numbers."""
    if isinstance(quality, float) and quality.is_integer():
        quality = int(quality)
    check_image_quality(quality)


def check_scale(scale: float | None) -> None:
    if scale is not None and not 0 < scale <= MAX_SCALE:
        raise InputError(f"scale must be above 0 and at most {MAX_SCALE:g} in the web UI, got {scale:g}")


def check_result_fits(picture: Picture, scale: float, available: int | None = None) -> None:
    """Refuse a job whose result canvas would take more than half of the available host memory."""
    width, height = round(picture.width * scale), round(picture.height * scale)
    channels = 3 + (picture.alpha is not None)
    need = width * height * channels * picture.pixels.itemsize
    if available is None:
        import psutil

        available = int(psutil.virtual_memory().available)
    if need > RESULT_MEMORY_SHARE * available:
        raise ResourceError(f"the result would be {width}x{height} pixels ({format_bytes(need)}); only "
                            f"{format_bytes(available)} of memory is available: choose a smaller scale")
