"""What the web UI hands out: full-resolution files for download, and small previews (the detected faces).

The page never carries a whole full-resolution photo: the viewer fetches tiles (:mod:`.viewer`), the face overlay
is a preview no larger than ``preview_side`` pixels; the result is written once, at full resolution, in the
chosen format ("auto": the photo's own), into the job's folder of the output directory, and offered as a
download. The save can be cancelled and watched (:func:`save_result`): a cancelled save leaves nothing behind,
not even the job's folder.
"""
from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import OutputError
from ..image.pixels import Picture
from ..image.write import IMAGE_SUFFIXES, check_output_size, save_image
from .retention import new_job_folder

OUTPUT_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp", "TIFF": ".tif"}
AUTO_FORMAT = "auto"  # the photo's own format (of OUTPUT_FORMATS; PNG for any other)
FORMAT_CHOICES = [AUTO_FORMAT, *OUTPUT_FORMATS]  # the Output format menu, "auto" first and the default
FALLBACK_FORMAT = "PNG"
_SOURCE_FORMATS = {"MPO": "JPEG", "JPG": "JPEG", "TIF": "TIFF"}  # Pillow/suffix names -> OUTPUT_FORMATS keys
DEFAULT_PREVIEW_SIDE = 1280
LOSSY_FORMATS = ("JPEG", "WEBP")
WORKING_COPY = ".working.tif"  # a lossy result's exact pixels: "<result file name>.working.tif", beside it


def working_copy_name(result: Path) -> Path:
    """Where the lossless copy of a JPEG or WEBP ``result`` goes (work continued on it reads that)."""
    return result.with_name(result.name + WORKING_COPY)


def shown_upload(upload: str) -> tuple[str, bool]:
    """The name a photo goes by (the result it copies, for a working copy) and whether it is a working copy: a
    result continued from keeps its own name and, for "auto", its own format."""
    name = Path(upload).name
    if name.endswith(WORKING_COPY) and len(name) > len(WORKING_COPY):
        return name[: -len(WORKING_COPY)], True
    return name, False


def preview(pixels: np.ndarray, max_side: int = DEFAULT_PREVIEW_SIDE,
            size: tuple[int, int] | None = None) -> np.ndarray:
    """An 8-bit RGB copy no larger than ``max_side`` (or exactly ``size`` = (width, height)), area-averaged."""
    height, width = pixels.shape[:2]
    if size is None:
        factor = min(1.0, max_side / max(height, width))
        size = (max(1, round(width * factor)), max(1, round(height * factor)))
    if size != (width, height):
        shrinking = size[0] * size[1] < width * height
        pixels = cv2.resize(pixels, size, interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    if pixels.dtype == np.uint16:
        pixels = ((pixels.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif pixels.dtype != np.uint8:
        pixels = np.clip(np.rint(pixels.astype(np.float32) * 255), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(pixels)


def output_name(upload: str | None, task: str, fmt: str) -> str:
    """``<upload stem>-<task><ext>``: the download keeps the user's file name (made safe for the file system).
    ``fmt`` "auto" takes the upload's suffix (:func:`resolve_format`)."""
    stem = Path(upload).stem if upload else "photo"
    stem = re.sub(r"[^\w.-]+", "_", stem).strip("._") or "photo"
    return f"{stem[:80]}-{task}{OUTPUT_FORMATS[resolve_format(fmt, upload=upload)]}"


def check_format(fmt: str) -> str:
    """A format of the Output format menu (:data:`FORMAT_CHOICES`), in its canonical spelling."""
    from ..errors import look_up_option

    name = str(fmt).strip()
    if name.lower() == AUTO_FORMAT:
        return AUTO_FORMAT
    name = _SOURCE_FORMATS.get(name.upper(), name.upper())
    return look_up_option(name, list(OUTPUT_FORMATS), "output format")


def resolve_format(fmt: str, *, upload: str | None = None, source_format: str | None = None,
                   size: tuple[int, int] | None = None) -> str:
    """The format to write: ``fmt`` itself, or for "auto" the photo's own (its decoded ``source_format``, else
    the suffix of ``upload``) when it is one of :data:`OUTPUT_FORMATS`, else PNG. An "auto" format that cannot
    hold a result of ``size`` = (width, height) (WEBP beyond 16,383 pixels a side) becomes PNG too."""
    chosen = check_format(fmt)
    if chosen != AUTO_FORMAT:
        return chosen
    own = source_format or (IMAGE_SUFFIXES.get(Path(upload).suffix.lower()) if upload else None)
    own = _SOURCE_FORMATS.get(str(own).upper(), str(own).upper()) if own else None
    chosen = own if own in OUTPUT_FORMATS else FALLBACK_FORMAT
    if size is not None and chosen != FALLBACK_FORMAT:
        try:
            check_output_size(Path("result"), *size, chosen)
        except OutputError:
            chosen = FALLBACK_FORMAT
    return chosen


def save_result(result: Picture, output_dir: Path, *, upload: str | None, task: str, fmt: str,
                quality: int, source_format: str | None = None, cancel: threading.Event | None = None,
                progress: Callable[[int], None] | None = None) -> Path:
    """Write ``result`` at full resolution into a new job folder; return the file's path.

    ``fmt``: a format of :data:`FORMAT_CHOICES` ("auto": the photo's, from ``source_format`` or the upload's
    suffix). ``cancel`` stops the save at the encoder's next write (or before the rename) with CancelledError;
    ``progress`` gets the bytes written so far (see :func:`~tessera.image.write.save_image`). A save that fails
    or is cancelled leaves nothing: the temporary file is removed, and the job's folder with it.
    """
    fmt = resolve_format(fmt, upload=upload, source_format=source_format, size=(result.width, result.height))
    folder = new_job_folder(output_dir, task)
    try:
        return save_image(result, folder / output_name(upload, task, fmt), quality=int(quality), cancel=cancel,
                          progress=progress)
    except BaseException:
        try:
            folder.rmdir()  # only when empty: never a file of someone else's
        except OSError:
            pass
        raise


def save_mask(mask: np.ndarray, output_dir: Path, *, upload: str | None) -> Path:
    """Write a full-resolution boolean mask as a grey PNG into a new job folder; return its path."""
    folder = new_job_folder(output_dir, "mask")
    return save_image(mask.astype(np.uint8) * np.uint8(255), folder / output_name(upload, "mask", "PNG"))


FACE_COLOUR, CHOSEN_COLOUR = (40, 220, 90), (255, 190, 0)


def draw_faces(pixels: np.ndarray, faces: list[Any], max_side: int, chosen: Any = ()) -> np.ndarray:
    """A preview with each detected face's index (its place in the list), box, score and five landmarks drawn
    on it; the faces whose index is in ``chosen`` in another colour."""
    image = preview(pixels, max_side).copy()
    factor = image.shape[1] / pixels.shape[1]
    thickness = max(2, round(max(image.shape[:2]) / 400))
    for index, face in enumerate(faces):
        colour = CHOSEN_COLOUR if index in chosen else FACE_COLOUR
        x0, y0, x1, y1 = (round(float(v) * factor) for v in face.box)
        cv2.rectangle(image, (x0, y0), (x1, y1), colour, thickness)
        landmarks = getattr(face, "landmarks", None)
        if landmarks is not None:
            for x, y in np.asarray(landmarks, dtype=np.float64).reshape(-1, 2):
                cv2.circle(image, (round(x * factor), round(y * factor)), thickness + 1, (255, 60, 60), -1)
        score = getattr(face, "score", None)
        label = f"#{index}" + ("" if score is None else f" {float(score):.2f}")
        cv2.putText(image, label, (x0, max(0, y0 - 2 * thickness)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.4 * thickness, colour, max(1, thickness // 2), cv2.LINE_AA)
    return image
