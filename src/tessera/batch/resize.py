"""Shrink photos so that their longest side is at most N pixels, like ``mogrify -resize NxN>``: never enlarges.

Files are rewritten atomically (in place, or into another folder mirroring the tree), in their own format, with
their metadata (ICC profile, EXIF with the orientation already applied, alpha, 16 bits) kept. Photos already small
enough are left untouched, byte for byte. Each file succeeds or fails alone.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path

from ..errors import InputError, OptionError, TesseraError
from ..image.atomic import copy_atomically
from ..image.pixels import Picture
from .plan import find_images
from .report import Outcome


def fitted_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """The size of a ``width`` x ``height`` picture fitted inside ``max_side`` squared (unchanged if it fits)."""
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    ratio = max_side / longest
    return max(1, round(width * ratio)), max(1, round(height * ratio))


def shrink(picture: Picture, max_side: int) -> Picture:
    """``picture`` with its longest side at most ``max_side`` (area averaging: no aliasing); metadata kept."""
    from ..models.classical.lanczos import resize

    if max_side < 1:
        raise OptionError(f"max side must be at least 1 pixel, got {max_side}")
    width, height = fitted_size(picture.width, picture.height, max_side)
    if (width, height) == (picture.width, picture.height):
        return picture
    return picture.with_pixels(resize(picture.pixels, width, height))


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
            found.extend((p, p.relative_to(item)) for p in find_images(item, recursive=recursive, pattern=pattern))
        elif item.exists():
            found.append((item, Path(item.name)))
        else:
            raise InputError(f"{item}: no such file or folder")
    return found


def _resize_one(source: Path, target: Path, name: str, max_side: int, quality: int) -> Outcome:
    from ..image.read import load_image, read_image_size
    from ..image.write import save_image

    started = time.monotonic()
    try:
        width, height = read_image_size(source)
        if max(width, height) <= max_side:
            if target == source:
                return Outcome(name, "skipped", 0.0, None, str(target))
            target.parent.mkdir(parents=True, exist_ok=True)
            copy_atomically(source, target)
            return Outcome(name, "done", time.monotonic() - started, None, str(target))
        picture = load_image(source, max_pixels=None)
        target.parent.mkdir(parents=True, exist_ok=True)
        save_image(shrink(picture, max_side), target, quality=quality, overwrite_input=target == source)
    except TesseraError as error:
        return Outcome(name, "failed", time.monotonic() - started, str(error))
    except OSError as error:
        return Outcome(name, "failed", time.monotonic() - started, f"{target}: {error.strerror or error}")
    return Outcome(name, "done", time.monotonic() - started, None, str(target))
