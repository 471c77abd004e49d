"""What the web UI shows and hands out: small previews for the page, full-resolution files for download.

The page never carries a full-resolution photo: the mask editor, the before/after slider and the face overlay
get previews no larger than ``preview_side`` pixels; the result is written once, at full resolution, in the
chosen format, into the job's folder of the output directory, and offered as a download.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..image.pixels import Picture
from ..image.write import save_image
from .retention import new_job_folder

OUTPUT_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "WEBP": ".webp"}
DEFAULT_PREVIEW_SIDE = 1280


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


def compare_pair(before: np.ndarray, after: np.ndarray, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Previews of the input and the result at one size (the slider overlays them), the result's shape."""
    after_small = preview(after, max_side)
    size = (after_small.shape[1], after_small.shape[0])
    return preview(before, size=size), after_small


def output_name(upload: str | None, task: str, fmt: str) -> str:
    """``<upload stem>-<task><ext>``: the download keeps the user's file name (made safe for the file system)."""
    stem = Path(upload).stem if upload else "photo"
    stem = re.sub(r"[^\w.-]+", "_", stem).strip("._") or "photo"
    return f"{stem[:80]}-{task}{OUTPUT_FORMATS[check_format(fmt)]}"


def check_format(fmt: str) -> str:
    from ..errors import look_up_option

    return look_up_option(str(fmt).upper(), list(OUTPUT_FORMATS), "output format")


def save_result(result: Picture, output_dir: Path, *, upload: str | None, task: str, fmt: str,
                quality: int) -> Path:
    """Write ``result`` at full resolution into a new job folder; return the file's path."""
    folder = new_job_folder(output_dir, task)
    return save_image(result, folder / output_name(upload, task, fmt), quality=int(quality))


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
