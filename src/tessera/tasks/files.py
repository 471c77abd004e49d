"""One image file in, one file out, in memory or streamed: the decision the CLI and batch share.

:func:`process_file` estimates from the input's header what the in-memory flow would hold (the input plus about
three outputs). Within ``max_ram`` it reads the picture, runs the task and saves the result atomically; over it,
a TIFF input is streamed region by region into a tiled BigTIFF (memory then does not depend on the image size),
and anything else is refused with the reason, before any work. Batch runs every image through
:func:`process_file`; the ``upscale`` and ``inpaint`` commands take the same :func:`stream_decision` and
:func:`stream_file`, and keep their own in-memory path (progress bar, messages, ``--overwrite``).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError, OptionError
from ..image import decode
from ..image.regions import STREAM_SUFFIXES, check_streamed_output, tiff_sample_layout
from ..options import format_bytes
from ..progress import ProgressCallback
from .registry import Task
from .result import Result

DEFAULT_RAM_FRACTION = 0.5        # --max-ram default: this share of the machine's memory
IN_MEMORY_COPIES = 3              # an in-memory task holds about input + 3 outputs (result, copy, encoder buffer)
MASK_BYTES_PER_PIXEL = 6          # a mask in memory: its decoded picture (up to 4 bytes), the boolean, its grown copy


def default_max_ram() -> int:
    """The default RAM budget for one image: a share of the machine's physical memory."""
    import psutil

    return int(psutil.virtual_memory().total * DEFAULT_RAM_FRACTION)


def in_memory_bytes(width: int, height: int, *, scale: float = 1.0, itemsize: int = 1, channels: int = 4) -> int:
    """Host memory the in-memory flow needs for an image: the input plus about three outputs."""
    pixels = width * height
    return int(pixels * channels * itemsize * (1 + IN_MEMORY_COPIES * scale * scale))


def in_memory_estimate(path: str | Path, *, scale: float = 1.0) -> tuple[int, int, int]:
    """``(width, height, bytes)``: the image's size and what processing it in memory would take.

    Reads the header only: TIFF's sample type and count, 8-bit RGBA assumed for other formats.
    """
    from ..image.read import read_image_size

    width, height = read_image_size(path)
    itemsize, channels = 1, 4
    if Path(path).suffix.lower() in STREAM_SUFFIXES:
        itemsize, channels = tiff_sample_layout(path, default=(itemsize, channels))
    return width, height, in_memory_bytes(width, height, scale=scale, itemsize=itemsize, channels=channels)


def needs_streaming(path: str | Path, *, scale: float = 1.0, max_ram: int | None = None) -> bool:
    """Whether ``path`` is too large to process in memory within ``max_ram`` bytes (default:
    :func:`default_max_ram`), from its header alone."""
    budget = default_max_ram() if max_ram is None else int(max_ram)
    return in_memory_estimate(path, scale=scale)[2] > budget


@dataclass(frozen=True)
class FileResult:
    """What :func:`process_file` wrote: the path, whether it was streamed, and the task's report."""

    path: Path
    streamed: bool
    report: Any


def stream_decision(task: Task, source: Path, scale: float, max_ram: int | None, *, strict: bool = True,
                    pixel_limit: int | str | None = "default", mask: str | Path | None = None) -> bool:
    """True when ``source`` must be streamed: the in-memory flow would refuse it, and the task and the input
    allow streaming. The in-memory flow refuses an image (or its ``mask``) of more than ``pixel_limit`` pixels
    (the limit its decoder applies, "default": :func:`~tessera.image.read.load_image`'s, which a mask is always
    read under; None: none) and one it would need more than ``max_ram`` bytes for (the photo, its results and
    the mask's copies). When the image cannot be streamed, ``strict`` raises :class:`InputError` saying why (batch: the image would not fit);
    otherwise False lets the in-memory flow try (and apply its own limits). Decided from the headers alone, so no
    image is loaded only to be refused."""
    from ..image.read import read_image_size

    budget = default_max_ram() if max_ram is None else int(max_ram)
    width, height, needed = in_memory_estimate(source, scale=scale)
    pixels = width * height
    limits = [decode.DEFAULT_MAX_PIXELS if pixel_limit == "default" else pixel_limit]
    if mask is not None:
        needed += pixels * MASK_BYTES_PER_PIXEL
        mask_width, mask_height = read_image_size(mask)
        pixels = max(pixels, mask_width * mask_height)
        limits.append(decode.DEFAULT_MAX_PIXELS)
    limit = min((value for value in limits if value is not None), default=None)
    if needed <= budget and (limit is None or pixels <= limit):
        return False
    why = task.stream_refusal if not task.streams else (
        "" if source.suffix.lower() in STREAM_SUFFIXES
        else "only TIFF inputs are read region by region; convert it to a (tiled) TIFF")
    if why and not strict:
        return False
    if why:
        over = (f"needs about {format_bytes(needed)} in memory, over the RAM budget of {format_bytes(budget)}"
                if needed > budget else f"has more than the {limit:,} pixels the in-memory flow reads")
        raise InputError(f"{source}: {width}x{height} {over}; {why}")
    return True


def stream_file(task: Task, source: Path, output: Path, *, mask: str | Path | None = None,
                max_ram: int | None = None, progress: ProgressCallback | None = None,
                cancel: threading.Event | None = None, model_dir: str | None = None, **options: Any) -> Result:
    """Stream ``source`` through ``task`` into the tiled BigTIFF ``output`` (refused unless it is a .tif in an
    existing folder): the streaming branch batch and the single-file commands share."""
    if Path(output).suffix.lower() not in STREAM_SUFFIXES:
        raise OptionError(f"{source} is too large to process in memory (over the RAM budget); it is streamed "
                          f"into a tiled BigTIFF: name the output .tif or .tiff")
    check_streamed_output(output)
    return task.stream(Path(source), Path(output), mask=None if mask is None else Path(mask), max_ram=max_ram,
                       progress=progress, cancel=cancel, model_dir=model_dir, **options)


def process_file(task: Task, source: str | Path, output: str | Path, *, mask: str | Path | None = None,
                 options: dict[str, Any] | None = None, models: dict[str, Any] | None = None,
                 max_ram: int | None = None, quality: int = 95, overwrite_input: bool = False,
                 max_pixels: int | None | str = "default", model_dir: str | None = None,
                 progress: ProgressCallback | None = None, cancel: threading.Event | None = None,
                 stream_output: Path | None = None) -> FileResult:
    """Run ``task`` on the image file ``source`` and write the result to ``output``.

    ``options``: the task's keyword options; ``models``: models already loaded (by :meth:`Task.load_models`),
    which replace their names in ``options``. When the in-memory flow would need more than ``max_ram`` (default:
    :func:`default_max_ram`) and the task and the input allow it, the job streams into ``stream_output``
    (default: ``output`` itself, which must then be a .tif). ``max_pixels``: the decoder's pixel limit for the
    in-memory flow ("default": :func:`~tessera.image.read.load_image`'s own). A result the task did not change
    (``Result.unchanged``: a photo without faces) is the input's own bytes where the formats match.
    """
    source, output = Path(source), Path(output)
    options = dict(options or {})
    models = dict(models or {})
    scale = task.output_scale(options, models)
    arguments = {**options, **models}
    image_limit = "default" if isinstance(max_pixels, str) else max_pixels  # "default" or "auto": the decoder's
    if stream_decision(task, source, scale, max_ram, pixel_limit=image_limit, mask=mask):
        target = stream_output or output
        result = stream_file(task, source, target, mask=mask, max_ram=max_ram, progress=progress, cancel=cancel,
                             model_dir=model_dir, **arguments)
        return FileResult(target, True, result.report)
    from ..image.read import load_image
    from ..image.write import copy_unchanged, save_image

    limit = {} if max_pixels == "default" else {"max_pixels": max_pixels}
    picture = load_image(source, **limit)
    result: Result = task.run(picture, mask=None if mask is None else str(mask), progress=progress, cancel=cancel,
                              model_dir=model_dir, **arguments)
    copied = copy_unchanged(source, output, overwrite_input=overwrite_input) if result.unchanged else None
    path = copied or save_image(result.image, output, quality=quality, overwrite_input=overwrite_input)
    return FileResult(path, False, result.report)
