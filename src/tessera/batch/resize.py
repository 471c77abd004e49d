"""Shrink photos so that their longest side is at most N pixels, like ``mogrify -resize NxN>``: never enlarges.

Files are rewritten atomically (in place, or into another folder mirroring the tree), in their own format, with
their metadata (ICC profile, EXIF with the orientation already applied, alpha, 16 bits) kept. Photos already small
enough are left untouched, byte for byte. Each file succeeds or fails alone.

Nothing is dropped: every page of a TIFF (:mod:`.resize_pages`) and every frame of an animation (GIF, APNG,
WEBP: :mod:`.resize_frames`) is shrunk and kept, palette pictures stay palette, and a file that cannot be
rewritten faithfully fails with its reason, untouched. GIF and APNG files are found in folders as well (their
own suffixes, beyond those of batch). Shrinking is OpenCV's area averaging (:mod:`.resize_pixels`): no torch.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import BinaryIO

from ..errors import InputError, OptionError, OutputError, TesseraError, look_up_option
from ..image.atomic import copy_atomically
from ..image.pixels import Picture
from .plan import find_images
from .report import Outcome
from .resize_pixels import fitted_size, shrink_array

__all__ = ["fitted_size", "resize_files", "resize_suffixes", "shrink"]

_OWN_SUFFIXES = {".gif": "GIF", ".apng": "PNG"}  # written here (all frames), not by save_image


def resize_suffixes() -> dict[str, str]:
    """The file suffixes resize takes for images, with the format each one is written in."""
    from ..image.write import IMAGE_SUFFIXES

    return {**IMAGE_SUFFIXES, **_OWN_SUFFIXES}


def shrink(picture: Picture, max_side: int) -> Picture:
    """``picture`` with its longest side at most ``max_side`` (area averaging: no aliasing); metadata kept."""
    if max_side < 1:
        raise OptionError(f"max side must be at least 1 pixel, got {max_side}")
    width, height = fitted_size(picture.width, picture.height, max_side)
    if (width, height) == (picture.width, picture.height):
        return picture
    return picture.with_pixels(shrink_array(picture.pixels, width, height))


def resize_files(paths: Iterable[str | Path], max_side: int, *, output_dir: str | Path | None = None,
                 recursive: bool = False, pattern: str | None = None, quality: int = 95,
                 on_outcome: Callable[[Outcome], None] | None = None) -> list[Outcome]:
    """Shrink every image of ``paths`` (files, or folders searched for images) to ``max_side``.

    Without ``output_dir`` files are replaced in place; with it, results go there (a folder's tree mirrored),
    and images that need no shrinking are copied unchanged. Returns one :class:`~tessera.batch.report.Outcome`
    per file: "done", "skipped" (already small enough, in place) or "failed" (with the error).
    """
    if max_side < 1:
        raise OptionError(f"--max-side must be at least 1 pixel, got {max_side}")
    outcomes = []
    for source, relative in _expand(paths, recursive, pattern):
        target = Path(output_dir) / relative if output_dir is not None else source
        outcome = _resize_one(source, target, relative.as_posix(), max_side, quality)
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
    return outcomes


def _expand(paths: Iterable[str | Path], recursive: bool, pattern: str | None) -> list[tuple[Path, Path]]:
    """(file, path relative to what was named) for every file named or found in a named folder."""
    found = []
    for item in map(Path, paths):
        if item.is_dir():
            found.extend((p, p.relative_to(item)) for p in find_images(
                item, recursive=recursive, pattern=pattern, suffixes=resize_suffixes()))
        elif item.exists():
            found.append((item, Path(item.name)))
        else:
            raise InputError(f"{item}: no such file or folder")
    return found


def _resize_one(source: Path, target: Path, name: str, max_side: int, quality: int) -> Outcome:
    from ..image.read import read_image_size

    started = time.monotonic()
    try:
        target_format = resize_suffixes().get(target.suffix.lower())
        width, height = read_image_size(source)  # a regular file of a format tessera reads, known by content
        with open(source, "rb") as file:
            route, longest, count = _route(file, source, target_format, max(width, height))
            if longest <= max_side:
                if target == source:
                    return Outcome(name, "skipped", 0.0, None, str(target))
                target.parent.mkdir(parents=True, exist_ok=True)
                copy_atomically(source, target)
                return Outcome(name, "done", time.monotonic() - started, None, str(target))
            if route != "single" and target_format is None:
                _refuse_suffix(target)
            if route == "pages" and target_format != "TIFF":
                raise OutputError(f"{target}: {target_format} cannot hold the {count} pages of {source.name}")
            target.parent.mkdir(parents=True, exist_ok=True)
            _rewrite(route, file, source, target, target_format, max_side, quality)
    except TesseraError as error:
        return Outcome(name, "failed", time.monotonic() - started, str(error))
    except OSError as error:
        return Outcome(name, "failed", time.monotonic() - started, f"{target}: {error.strerror or error}")
    return Outcome(name, "done", time.monotonic() - started, None, str(target))


def _refuse_suffix(target: Path) -> None:
    """Raise the OptionError for a target whose suffix names no format resize writes."""
    try:
        look_up_option(target.suffix.lower() or "(none)", resize_suffixes(), "image file suffix")
    except OptionError as error:
        raise OptionError(f"{target}: {error}") from None


def _route(file: BinaryIO, source: Path, target_format: str | None, longest: int) -> tuple[str, int, int]:
    """How a file is rewritten, the longest side of its pictures and their count: "pages" (a TIFF of several
    pages), "frames" (an animation, a GIF, or a palette picture that stays palette) or "single" (the picture
    load_image reads, written by save_image)."""
    from ..image.pillow import open_with_pillow
    from ..image.tiff import is_tiff, open_tiff, tifffile_messages
    from .resize_frames import PALETTE_FORMATS, frame_count
    from .resize_pages import needs_pages, page_sizes

    if is_tiff(file):
        with tifffile_messages(source, warn=False), open_tiff(file, source) as tiff:
            if not needs_pages(tiff):
                return "single", longest, 1
            sizes = page_sizes(tiff, source)
        return "pages", max(max(size) for size in sizes), len(sizes)
    file.seek(0)
    with open_with_pillow(file, source) as image:
        count = frame_count(image, source)
        palette = image.mode in ("P", "PA") or image.format == "GIF"
    if count > 1 or target_format == "GIF" or (palette and target_format in PALETTE_FORMATS):
        return "frames", longest, count
    return "single", longest, count


def _rewrite(route: str, file: BinaryIO, source: Path, target: Path, target_format: str | None, max_side: int,
             quality: int) -> None:
    if route == "pages":
        from .resize_pages import resize_pages

        resize_pages(file, source, target, max_side, quality)
    elif route == "frames":
        from .resize_frames import resize_frames

        resize_frames(file, source, target, str(target_format), max_side, quality)
    else:
        from ..image.read import load_image
        from ..image.write import save_image

        picture = load_image(source, max_pixels=None)
        save_image(shrink(picture, max_side), target, quality=quality, overwrite_input=target == source)
