"""Paste-back of inpainted crops, and the region files a user can fix by hand (``--save-regions`` / ``stitch``).

Only pixels inside a region's paste mask (its own holes of the grown mask) are written; every other pixel of the
output is the input's, bit for bit. With ``feather`` > 0 the new content is blended with the original over a
band of that many pixels inside the mask edge (raised cosine of the distance to the nearest unmasked pixel).

A result is first rounded to the photo's dtype, then blended: so ``stitch`` of the saved, unedited results
gives exactly the image ``inpaint`` wrote.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import InputError, OutputError
from ..image import from_float, to_float, write_atomically
from .inpaint_plan import Box, Region

MANIFEST_VERSION = 1


def feather_weights(paste: np.ndarray, feather: int, crop: Box, photo_shape: tuple[int, int]) -> np.ndarray | None:
    """Blend weights (float32, 0..1) of the new content over ``paste`` (crop coordinates), or None for a hard paste.

    The distance runs to the nearest unmasked pixel of the photo: across a crop edge inside the photo the
    neighbour is known (unmasked), across the photo border there is none.
    """
    if feather <= 0:
        return None
    height, width = photo_shape
    sides = (crop.y0 > 0, crop.y1 < height, crop.x0 > 0, crop.x1 < width)  # top, bottom, left, right inside?
    top, bottom, left, right = (1 if inside else 0 for inside in sides)
    padded = np.pad(paste, ((top, bottom), (left, right)), mode="edge")
    if top:
        padded[0, :] = False
    if bottom:
        padded[-1, :] = False
    if left:
        padded[:, 0] = False
    if right:
        padded[:, -1] = False
    distance = cv2.distanceTransform(padded.view(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    distance = distance[top:top + paste.shape[0], left:left + paste.shape[1]]
    t = np.clip(distance / (feather + 1.0), 0.0, 1.0)
    return (0.5 - 0.5 * np.cos(np.pi * t)).astype(np.float32)


def paste_region(out: np.ndarray, original: np.ndarray, crop: Box, paste: np.ndarray, result: np.ndarray,
                 feather: int) -> None:
    """Write ``result`` (the crop's new pixels, already in ``out``'s dtype) into ``out`` where ``paste`` is set.

    ``original`` is the input photo (HxWxC), ``out`` the output canvas of the same shape and dtype.
    """
    if result.shape != (crop.height, crop.width, out.shape[2]) or result.dtype != out.dtype:
        raise InputError(f"region result is {result.shape} {result.dtype}, expected "
                         f"{(crop.height, crop.width, out.shape[2])} {out.dtype}")
    weights = feather_weights(paste, feather, crop, out.shape[:2])
    target = out[crop.slices]
    if weights is None:
        target[paste] = result[paste]
        return
    before = to_float(original[crop.slices][paste])
    after = to_float(result[paste])
    w = weights[paste][:, None]
    target[paste] = from_float(after * w + before * (1.0 - w), out.dtype)


def to_gray(result: np.ndarray) -> np.ndarray:
    """Replace colour by its luma (Rec. 601) in all three channels: the fill of a grey photo stays grey."""
    luma = result @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.repeat(luma[:, :, None], 3, axis=2)


# ---------------------------------------------------------------------------------------------- region files


@dataclass(frozen=True)
class SavedRegion:
    """One region as written by ``--save-regions``: its crop and file names relative to the manifest."""

    crop: Box
    input: str
    mask: str
    result: str


def write_json(path: Path, data: Any) -> Path:
    """Write ``data`` as JSON atomically (temporary file in the folder, then rename)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    text = json.dumps(data, indent=2) + "\n"
    write_atomically(path, lambda file: file.write(text.encode("utf-8")), "JSON")
    return path


class RegionWriter:
    """Writes each region's input crop, paste mask and result, then a manifest that ``stitch`` reads back."""

    def __init__(self, folder: str | os.PathLike[str], *, photo: Any, feather: int, strategy: str, model: str):
        from ..image import save_image

        self._save = save_image
        self.folder = Path(folder)
        self.photo = photo
        self.feather = feather
        self.strategy = strategy
        self.model = model
        self.regions: list[dict[str, Any]] = []
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"cannot create --save-regions folder {self.folder}: {exc.strerror or exc}") from None

    def add(self, region: Region, crop_pixels: np.ndarray, paste: np.ndarray, result: np.ndarray) -> None:
        index = len(self.regions)
        names = {kind: f"region_{index:03d}_{kind}.png" for kind in ("input", "mask", "result")}
        gray = bool(getattr(self.photo, "gray", False))
        self._save(_for_file(crop_pixels, gray), self.folder / names["input"])
        self._save(np.where(paste, 255, 0).astype(np.uint8), self.folder / names["mask"])
        self._save(_for_file(result, gray), self.folder / names["result"])
        self.regions.append({"crop": region.crop.as_list(), "run_shape": list(region.run_shape),
                             "holes": [h.as_list() for h in region.holes], **names})

    def finish(self) -> Path:
        source = getattr(self.photo, "source", None)
        pixels = self.photo.pixels
        manifest = {
            "tessera": "inpaint-regions",
            "version": MANIFEST_VERSION,
            "input": str(Path(source).resolve()) if source else None,
            "width": int(pixels.shape[1]),
            "height": int(pixels.shape[0]),
            "dtype": str(pixels.dtype),
            "feather": self.feather,
            "strategy": self.strategy,
            "model": self.model,
            "crop_order": "y0, x0, y1, x1",
            "regions": self.regions,
        }
        return write_json(self.folder / "manifest.json", manifest)


def _for_file(pixels: np.ndarray, gray: bool) -> np.ndarray:
    """Pixels as they go to a PNG: float becomes 16-bit, a grey photo's crops are written grey."""
    if pixels.dtype == np.float32:
        pixels = from_float(pixels, np.uint16)
    return pixels[:, :, 0] if gray else pixels


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load and check a ``--save-regions`` manifest."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"manifest {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"manifest {path} is not a readable JSON file: {exc}") from None
    if not isinstance(data, dict) or data.get("tessera") != "inpaint-regions":
        raise InputError(f"{path} is not a tessera inpaint manifest (written by --save-regions)")
    if data.get("version") != MANIFEST_VERSION:
        raise InputError(f"manifest {path} has version {data.get('version')!r}; this tessera reads {MANIFEST_VERSION}")
    for key in ("width", "height", "regions", "feather"):
        if key not in data:
            raise InputError(f"manifest {path} lacks {key!r}")
    return data


def load_region_array(path: Path, shape: tuple[int, int], dtype: np.dtype, gray: bool, what: str) -> np.ndarray:
    """A region's (possibly hand-edited) result file as HxWx3 pixels of the photo's dtype."""
    from ..image import load_image

    picture = load_image(path)
    pixels = picture.pixels
    if pixels.shape[:2] != shape:
        raise InputError(f"{what} {path} is {pixels.shape[1]}x{pixels.shape[0]}, expected {shape[1]}x{shape[0]}")
    if pixels.dtype != dtype:
        pixels = from_float(to_float(pixels), dtype)
    if gray:
        pixels = np.repeat(pixels[:, :, :1], 3, axis=2)
    return pixels


def region_crop(entry: dict[str, Any], width: int, height: int, path: Path) -> Box:
    try:
        y0, x0, y1, x1 = (int(v) for v in entry["crop"])
    except (KeyError, TypeError, ValueError):
        raise InputError(f"manifest {path}: a region has no valid 'crop' [y0, x0, y1, x1]") from None
    if not (0 <= y0 < y1 <= height and 0 <= x0 < x1 <= width):
        raise InputError(f"manifest {path}: crop {[y0, x0, y1, x1]} lies outside the {width}x{height} photo")
    return Box(y0, x0, y1, x1)


def stitch_pixels(manifest_path: str | os.PathLike[str], picture: Any) -> np.ndarray:
    """Paste the manifest's region results into ``picture``'s pixels; returns the new pixel array."""
    path = Path(manifest_path)
    data = read_manifest(path)
    pixels = picture.pixels
    width, height = int(data["width"]), int(data["height"])
    if pixels.shape[:2] != (height, width):
        raise InputError(f"the photo is {pixels.shape[1]}x{pixels.shape[0]} but manifest {path} was written for "
                         f"{width}x{height}")
    if data.get("dtype") and data["dtype"] != str(pixels.dtype):
        raise InputError(f"the photo is {pixels.dtype} but manifest {path} was written for {data['dtype']}")
    feather = data["feather"]
    if not isinstance(feather, int) or not 0 <= feather <= 256:
        raise InputError(f"manifest {path}: feather {feather!r} is not a whole number of pixels in 0..256")
    out = pixels.copy()
    gray = bool(getattr(picture, "gray", False))
    from ..masks import load_mask

    for entry in data["regions"]:
        crop = region_crop(entry, width, height, path)
        shape = (crop.height, crop.width)
        try:
            result_file, mask_file = path.parent / entry["result"], path.parent / entry["mask"]
        except (KeyError, TypeError):
            raise InputError(f"manifest {path}: a region lacks its 'result' or 'mask' file name") from None
        paste = load_mask(mask_file, what=f"region mask {mask_file}")
        if paste.shape != shape:
            raise InputError(f"region mask {mask_file} is {paste.shape[1]}x{paste.shape[0]}, expected "
                             f"{shape[1]}x{shape[0]}")
        result = load_region_array(result_file, shape, pixels.dtype, gray, "region result")
        paste_region(out, pixels, crop, paste, result, feather)
    return out
