"""Limits of the web UI, checked before any work starts, each with a message that says what to do.

Uploads: a byte limit (also enforced by Gradio while the file arrives) and a pixel limit read from the file's
header before decoding (decompression bombs, photos too large for this machine). Jobs: a job whose predicted
host memory (the photo, the result canvas and the encoder's buffers: :func:`tessera.tasks.files.in_memory_bytes`,
the estimate the CLI and batch use, plus the engine's working memory where the page sets it) is over the budget
is refused up front, from the photo's header, instead of failing half-way (:func:`check_result_fits`); the
message gives the sizes, what the job needs, what is available and the largest factor that would fit.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ImageTooLargeError, InputError, ResourceError
from ..image.pixels import Picture
from ..image.read import load_image
from ..image.write import check_quality as check_image_quality
from ..options import format_bytes

DEFAULT_MAX_UPLOAD = 200 << 20         # bytes
DEFAULT_MAX_PIXELS = 100_000_000       # 100 megapixels
MAX_SCALE = 8.0                        # the largest upscale factor the web UI offers
HOST_MEMORY_SHARE = 0.8                # of the available host memory a job may be predicted to take
# ...and never more than the CLI's RAM budget for one image (tasks.files.DEFAULT_RAM_FRACTION of the machine)


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


@dataclass(frozen=True)
class PictureLayout:
    """What a job's memory depends on: the photo's size and its samples (channels, bytes per sample)."""

    width: int
    height: int
    channels: int = 4
    itemsize: int = 1


def picture_layout(source: Picture | PictureLayout | str | os.PathLike[str]) -> PictureLayout:
    """The layout of a decoded picture, or of an image file from its header alone (no pixel is decoded): TIFF's
    own sample type and count, 8-bit RGBA assumed for other formats (as :func:`~tessera.tasks.files.
    in_memory_estimate` does)."""
    if isinstance(source, PictureLayout):
        return source
    if isinstance(source, Picture):
        return PictureLayout(source.width, source.height, 3 + (source.alpha is not None), source.pixels.itemsize)
    from ..image.read import read_image_size
    from ..image.regions import STREAM_SUFFIXES, tiff_sample_layout

    width, height = read_image_size(source)
    itemsize, channels = 1, 4
    if Path(source).suffix.lower() in STREAM_SUFFIXES:
        itemsize, channels = tiff_sample_layout(source, default=(itemsize, channels))
    return PictureLayout(width, height, channels, itemsize)


def predicted_job_bytes(layout: PictureLayout, scale: float, engine_bytes: int = 0) -> int:
    """Host memory an in-memory job on ``layout`` at ``scale`` takes: the photo, about three result canvases
    (the result, a copy, the encoder's buffer: :func:`~tessera.tasks.files.in_memory_bytes`), and the engine's
    working memory ``engine_bytes``."""
    from ..tasks.files import in_memory_bytes

    return in_memory_bytes(layout.width, layout.height, scale=scale, itemsize=layout.itemsize,
                           channels=layout.channels) + int(engine_bytes)


def host_budget(available: int | None = None, total: int | None = None) -> tuple[int, int]:
    """``(budget, available)``: what one job may take of the host memory, :data:`HOST_MEMORY_SHARE` of what is
    available, capped at the CLI's RAM budget of ``total`` (:data:`tessera.tasks.files.DEFAULT_RAM_FRACTION`).
    Both are read from psutil when ``available`` is None; a given ``available`` without ``total`` sets no cap."""
    from ..tasks.files import DEFAULT_RAM_FRACTION

    if available is None:
        import psutil

        memory = psutil.virtual_memory()
        available, total = int(memory.available), int(memory.total) if total is None else total
    budget = int(HOST_MEMORY_SHARE * available)
    if total is not None:
        budget = min(budget, int(DEFAULT_RAM_FRACTION * total))
    return budget, int(available)


def largest_fitting_scale(layout: PictureLayout, budget: int, engine_bytes: int = 0) -> float:
    """The largest factor (to 0.1) whose predicted job fits in ``budget``; 0 when none does."""
    per_input = layout.width * layout.height * layout.channels * layout.itemsize
    room = (budget - engine_bytes) / per_input - 1 if per_input else 0.0
    if room <= 0:
        return 0.0
    from ..tasks.files import IN_MEMORY_COPIES

    return math.floor(math.sqrt(room / IN_MEMORY_COPIES) * 10) / 10


def engine_host_bytes(options: Any) -> int:
    """The engine's working memory on the host, where the page tells it: the "Max memory" setting of a job that
    runs on the CPU (on a GPU that memory is the device's). Unset (auto), the engine fits its tiles into what is
    left, so nothing is added."""
    max_memory = getattr(options, "max_memory", None)
    if not max_memory:
        return 0
    from ..engine.runtime import resolve_device
    from ..options import parse_size

    try:
        device = resolve_device(getattr(options, "device", None) or "auto")
        return int(parse_size(max_memory)) if device.type == "cpu" else 0
    except (ValueError, InputError):
        return 0


def check_result_fits(source: Picture | PictureLayout | str | os.PathLike[str], scale: float,
                      available: int | None = None, *, total: int | None = None, control: str | None = "scale",
                      engine_bytes: int = 0) -> int:
    """Refuse a job whose predicted host memory (:func:`predicted_job_bytes`) is over :func:`host_budget`;
    return the prediction.

    ``source``: the decoded photo, or its file (its header is read, nothing is decoded), or its layout.
    ``available``: host memory available for the job (default: psutil's figure, plus the decoded ``source``'s
    own bytes, which the prediction counts). ``control``: the option that sets the factor (its control is named
    in the message: choose a smaller one), None where the job has none (a smaller photo is then the advice).
    """
    layout = picture_layout(source)
    need = predicted_job_bytes(layout, scale, engine_bytes)
    if available is None and isinstance(source, Picture):
        import psutil

        memory = psutil.virtual_memory()
        held = source.pixels.nbytes + (source.alpha.nbytes if source.alpha is not None else 0)
        budget, free = host_budget(int(memory.available) + held, int(memory.total) if total is None else total)
    else:
        budget, free = host_budget(available, total)
    if need <= budget:
        return need
    width, height = round(layout.width * scale), round(layout.height * scale)
    fitting = largest_fitting_scale(layout, budget, engine_bytes)
    if control is not None and fitting >= 0.1 and fitting < scale:
        advice = f"choose a smaller --{control} (at most {fitting:g})"
    else:
        advice = "use a smaller photo"
    what = (f"an x{scale:g} result of this {layout.width}x{layout.height} photo is {width}x{height} pixels"
            if scale != 1 else f"the result is {width}x{height} pixels")
    raise ResourceError(f"{what}: the job needs about {format_bytes(need)} of memory (the photo, the result and the "
                        f"encoder's buffers), over the {format_bytes(budget)} one job may take of the "
                        f"{format_bytes(free)} available now; {advice}")
