"""Planning a batch: which images a folder holds, where each result goes, its mask, and what is already done.

Nothing here reads pixels or loads a model: :func:`plan_jobs` lists the images (by suffix, optionally
recursively, filtered by a glob), mirrors the input tree under the output folder in the chosen format, matches
each image's mask by file stem (or one mask for all), and gives each :class:`Job` a second output name for the
case it is streamed into a tiled BigTIFF. A job that cannot run (no mask, two inputs writing one output) carries
its error and fails alone. :func:`finished_output` tells a resumed run what a previous one completed.
"""
from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, look_up_option

FORMATS = ("same", "png", "jpg", "webp", "tif")


@dataclass(frozen=True)
class Job:
    """One image of a batch: where it is read, where its result goes, and its mask (inpainting)."""

    source: Path
    name: str            # path relative to the input folder, POSIX style: the key of the report
    output: Path
    streamed_output: Path  # where the result goes when the image is processed out of core (a tiled TIFF)
    mask: Path | None = None
    error: str | None = None  # a problem found while planning (no mask, two inputs for one output)


def image_suffixes() -> tuple[str, ...]:
    """The file suffixes taken for images (those the writer knows, so those a batch can also produce)."""
    from ..image.write import IMAGE_SUFFIXES

    return tuple(IMAGE_SUFFIXES)


def find_images(folder: str | Path, *, recursive: bool = False, pattern: str | None = None,
                exclude: Path | None = None, suffixes: Iterable[str] | None = None) -> list[Path]:
    """The image files of ``folder`` (by suffix), sorted; hidden files and anything under ``exclude`` left out.

    ``pattern`` is a glob matched against the path relative to ``folder`` and against the file name.
    ``suffixes``: those taken (lower case, with the dot; default :func:`image_suffixes`).
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    suffixes = tuple(suffixes) if suffixes is not None else image_suffixes()
    skip = exclude.resolve() if exclude is not None else None
    found = []
    for path in (root.rglob("*") if recursive else root.iterdir()):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or path.suffix.lower() not in suffixes:
            continue
        if not path.is_file() or (skip is not None and path.resolve().is_relative_to(skip)):
            continue
        if pattern and not (fnmatch.fnmatch(relative.as_posix(), pattern) or fnmatch.fnmatch(path.name, pattern)):
            continue
        found.append(path)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def output_path(relative: Path, output_dir: Path, format: str) -> Path:
    """The output of an input at ``relative`` (to the input folder): the same tree, the chosen format."""
    suffix = relative.suffix if format == "same" else "." + format
    return output_dir / relative.with_suffix(suffix)


def find_mask(relative: Path, masks: Path) -> Path | None:
    """The mask of an input: ``masks`` itself when it is a file, else the image in ``masks`` with the input's
    stem, looked up in the input's own subfolder first, then at the top of ``masks``."""
    if masks.is_file():
        return masks
    suffixes = image_suffixes()
    for folder in (masks / relative.parent, masks):
        if not folder.is_dir():
            continue
        for candidate in sorted(folder.iterdir()):
            if candidate.stem == relative.stem and candidate.suffix.lower() in suffixes and candidate.is_file():
                return candidate
    return None


def plan_jobs(input_dir: str | Path, output_dir: str | Path, *, masks: str | Path | None = None,
              recursive: bool = False, pattern: str | None = None, format: str = "same") -> list[Job]:
    """One :class:`Job` per image of ``input_dir``; jobs that cannot run carry an ``error`` and fail alone."""
    root, out = Path(input_dir), Path(output_dir)
    format = look_up_option(str(format).lower().replace("jpeg", "jpg").replace("tiff", "tif"), FORMATS,
                            "output format")
    mask_root = Path(masks) if masks is not None else None
    if mask_root is not None and not mask_root.exists():
        raise InputError(f"{mask_root}: no such mask file or folder")
    sources = find_images(root, recursive=recursive, pattern=pattern, exclude=out if out != root else None)
    if mask_root is not None and mask_root.is_dir():
        mask_dir = mask_root.resolve()
        sources = [s for s in sources if not s.resolve().is_relative_to(mask_dir)]
    targets: dict[Path, str] = {}
    planned = []
    for source in sources:
        relative = source.relative_to(root)
        target = output_path(relative, out, format)
        error = None
        if target in targets:
            error = f"{targets[target]} already writes {target.name}; rename one of the two inputs"
        targets.setdefault(target, relative.as_posix())
        mask = None
        if mask_root is not None:
            mask = find_mask(relative, mask_root)
            if mask is None and error is None:
                error = f"no mask named {relative.stem}.* in {mask_root}"
        planned.append((source, relative, target, mask, error))
    jobs = []
    for source, relative, target, mask, error in planned:
        streamed = target.with_suffix(".tif")
        if streamed != target and streamed in targets:  # another input writes that name: keep both
            streamed = target.with_name(target.name + ".tif")
        jobs.append(Job(source, relative.as_posix(), target, streamed, mask, error))
    return jobs


def is_complete(path: Path) -> bool:
    """Whether ``path`` is an image whose data is all there, not only its header (outputs are written
    atomically, yet a copy or a full disk elsewhere can cut a file short): :func:`tessera.image.complete.
    is_whole_image`."""
    from ..image.complete import is_whole_image

    return path.is_file() and is_whole_image(path)


def finished_output(job: Job) -> Path | None:
    """The complete output a previous run left for ``job``, if any (in-memory or streamed)."""
    for candidate in dict.fromkeys((job.output, job.streamed_output)):
        if is_complete(candidate):
            return candidate
    return None
