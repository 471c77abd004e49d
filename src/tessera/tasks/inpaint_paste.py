"""Paste-back of inpainted crops, and the region files a user can fix by hand (``--save-regions`` / ``stitch``).

Only pixels inside a region's paste mask (its own holes of the grown mask) are written; every other pixel of the
output is the input's, bit for bit. With ``feather`` > 0 the paste mask also holds a band of that many pixels
around the grown mask (:func:`feather_band`), which the network fills too: the grown mask takes the new
content whole (no edge of a removed object survives), the band blends it into the original with a weight that
falls with the distance from the grown mask (:func:`feather_weights`); beyond the band nothing changes.

A result is first rounded to the photo's dtype, then blended: so ``stitch`` of the saved, unedited results
gives exactly the image ``inpaint`` wrote. A saved paste mask is 255 on grown-mask pixels and
:data:`BAND_VALUE` on band pixels, so ``stitch`` recovers the grown mask, and the same weights, from the files.

A manifest may come from anyone (a folder shared or downloaded), so :func:`read_manifest` checks all of it
before a pixel is read: its types, at most :data:`MAX_REGIONS` regions, every crop inside the photo, every
region file a regular file inside the manifest's folder (no ``..``, no absolute path, no symbolic link leading
out, no FIFO that would block the reader), and :func:`check_region_files` that each file's header has its
crop's size. Each failure is one :class:`~tessera.errors.InputError` line.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import InputError, OutputError
from ..image.pixels import from_float, to_float
from ..masks import grow_mask, mask_values
from .inpaint_regions import Box, Region
from .manifest_checks import (DTYPES, MAX_SIDE, folder_file, int_field, load_pixels, read_json, shown,
                              whole_number, write_json)

MANIFEST_VERSION = 2                 # 2: the feather band lies outside the grown mask (1: inside it)
BAND_VALUE = 160                     # saved paste masks: feather band pixels (grown-mask pixels are 255)
CORE_THRESHOLD = 208                 # a saved mask value at least this is a grown-mask pixel, above 127 pasted
MAX_REGIONS = 10_000                 # regions a manifest may list (an inpaint with more cannot save them)


def feather_band(core: np.ndarray, feather: int) -> np.ndarray:
    """The pixels a fill with ``feather`` replaces: the mask ``core`` and the band of ``feather`` px around it.

    The network fills the band too, so that there is new content to blend with the original there."""
    return grow_mask(core, feather) if feather > 0 else core


def feather_weights(core: np.ndarray, crop: Box, feather: int) -> np.ndarray | None:
    """Blend weights (float32, 0..1) of the new content over ``crop``, or None for a hard paste.

    1 on every pixel of ``core`` (the grown mask of the photo, HxW bool): nothing of the removed object comes
    back. Outside it the weight falls as a raised cosine of the distance to the nearest ``core`` pixel, to 0 at
    ``feather`` + 1 px: the band blends into the original. The distance is taken over the crop and ``feather``
    + 1 px around it (the farthest a pixel that matters can be from its nearest core pixel), so it is the
    photo's, not the crop's; beyond the photo's border there is no core pixel.
    """
    if feather <= 0:
        return None
    outer = crop.expand(feather + 1).clip(*core.shape)
    far = np.where(core[outer.slices], 0, 255).astype(np.uint8)
    distance = cv2.distanceTransform(far, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[crop.relative_to(outer).slices]
    t = np.clip(distance / (feather + 1.0), 0.0, 1.0)
    return (0.5 + 0.5 * np.cos(np.pi * t)).astype(np.float32)


def paste_region(out: np.ndarray, original: np.ndarray, crop: Box, paste: np.ndarray, result: np.ndarray,
                 weights: np.ndarray | None) -> None:
    """Write ``result`` (the crop's new pixels, already in ``out``'s dtype) into ``out`` where ``paste`` is set.

    ``original`` is the input photo (HxWxC), ``out`` the output canvas of the same shape and dtype;
    ``weights`` (crop-sized, from :func:`feather_weights`, or None: a hard paste) blend the result with the
    original.
    """
    if result.shape != (crop.height, crop.width, out.shape[2]) or result.dtype != out.dtype:
        raise InputError(f"region result is {result.shape} {result.dtype}, expected "
                         f"{(crop.height, crop.width, out.shape[2])} {out.dtype}")
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
    """One region of a manifest: its crop in the photo and its paste mask and result files (checked paths)."""

    crop: Box
    mask: Path
    result: Path


@dataclass(frozen=True)
class Manifest:
    """A checked ``--save-regions`` manifest: the photo it was written for and its regions."""

    path: Path
    input: Path | None
    width: int
    height: int
    dtype: str | None
    feather: int
    regions: tuple[SavedRegion, ...]


class RegionWriter:
    """Writes each region's input crop, paste mask and result, then a manifest that ``stitch`` reads back."""

    def __init__(self, folder: str | os.PathLike[str], *, photo: Any, feather: int, strategy: str, model: str):
        from ..image.write import save_image

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

    def add(self, region: Region, crop_pixels: np.ndarray, paste: np.ndarray, result: np.ndarray,
            core: np.ndarray | None = None) -> None:
        """Save one region; ``core``: which crop pixels are of the grown mask (default: all pasted ones)."""
        index = len(self.regions)
        if index >= MAX_REGIONS:
            raise OutputError(f"more than {MAX_REGIONS:,} regions to save in {self.folder}: stitch reads at most "
                              f"{MAX_REGIONS:,}; inpaint without saving the regions, or a part of the mask at a time")
        names = {kind: f"region_{index:03d}_{kind}.png" for kind in ("input", "mask", "result")}
        gray = bool(getattr(self.photo, "gray", False))
        self._save(_for_file(crop_pixels, gray), self.folder / names["input"])
        core = paste if core is None else paste & core
        self._save(np.where(core, 255, np.where(paste, BAND_VALUE, 0)).astype(np.uint8), self.folder / names["mask"])
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

# ---------------------------------------------------------------------------------------------- reading back


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Load and check a ``--save-regions`` manifest (see the module's docstring for what is checked)."""
    path = Path(path)
    data = read_json(path, "--save-regions")
    if not isinstance(data, dict) or data.get("tessera") != "inpaint-regions":
        raise InputError(f"{path} is not a tessera inpaint manifest (written by --save-regions)")
    version = data.get("version")
    if type(version) is not int or version not in (1, MANIFEST_VERSION):
        raise InputError(f"manifest {path} has version {shown(version)}; this tessera reads {MANIFEST_VERSION}")
    for key in ("width", "height", "regions", "feather"):
        if key not in data:
            raise InputError(f"manifest {path} lacks {key!r}")
    width = int_field(data, "width", 1, MAX_SIDE, path)
    height = int_field(data, "height", 1, MAX_SIDE, path)
    feather = int_field(data, "feather", 0, 256, path)
    if version == 1 and feather:
        raise InputError(f"manifest {path} is of version 1, whose feather band lay inside the mask; run "
                         f"`tessera inpaint --save-regions` again to write one this tessera stitches alike")
    dtype = data.get("dtype")
    if dtype is not None and dtype not in DTYPES:
        raise InputError(f"manifest {path}: 'dtype' must be one of {', '.join(DTYPES)}, got {shown(dtype)}")
    entries = data["regions"]
    if not isinstance(entries, list):
        raise InputError(f"manifest {path}: 'regions' must be a list, got {type(entries).__name__}")
    if len(entries) > MAX_REGIONS:
        raise InputError(f"manifest {path} lists {len(entries):,} regions, over the limit of {MAX_REGIONS:,}")
    folder = path.parent
    inside = Path(os.path.realpath(folder))
    regions = tuple(_saved_region(entry, number, width, height, folder, inside, path)
                    for number, entry in enumerate(entries))
    return Manifest(path, _input_photo(data.get("input"), path), width, height, dtype, feather, regions)


def _input_photo(value: Any, path: Path) -> Path | None:
    """The photo the manifest names (an absolute path, as --save-regions writes it), or None."""
    if value is None or value == "":
        return None
    if not isinstance(value, str) or "\x00" in value:
        raise InputError(f"manifest {path}: 'input' must be the path of the photo, got {shown(value)}")
    return Path(value)


def _saved_region(entry: Any, number: int, width: int, height: int, folder: Path, inside: Path,
                  path: Path) -> SavedRegion:
    if not isinstance(entry, dict):
        raise InputError(f"manifest {path}: region {number} must be an object, got {type(entry).__name__}")
    crop = region_crop(entry, width, height, path)
    return SavedRegion(crop, folder_file(entry.get("mask"), "region mask", folder, inside, path),
                       folder_file(entry.get("result"), "region result", folder, inside, path))


def region_crop(entry: dict[str, Any], width: int, height: int, path: Path) -> Box:
    """The region's crop ``[y0, x0, y1, x1]``: four whole numbers, a non-empty box inside the photo."""
    values = entry.get("crop")
    numbers = [whole_number(v, 0, MAX_SIDE) for v in values] if isinstance(values, list) else []
    if len(numbers) != 4 or None in numbers:
        raise InputError(f"manifest {path}: a region has no valid 'crop' [y0, x0, y1, x1] (got {shown(values)})")
    y0, x0, y1, x1 = numbers
    if not (y0 < y1 <= height and x0 < x1 <= width):
        raise InputError(f"manifest {path}: crop {[y0, x0, y1, x1]} lies outside the {width}x{height} photo")
    return Box(y0, x0, y1, x1)


def check_region_files(manifest: Manifest) -> None:
    """Every region's mask and result file has its crop's size, read from their headers (nothing decoded).

    The image reader opens them as :func:`~tessera.tasks.manifest_checks.regular_file` does (no blocking on a FIFO, regular files only)."""
    from ..image.read import read_image_size

    for region in manifest.regions:
        expected = (region.crop.width, region.crop.height)
        for kind, file in (("mask", region.mask), ("result", region.result)):
            size = read_image_size(file)
            if size != expected:
                raise InputError(f"region {kind} {file} is {size[0]}x{size[1]}, expected {expected[0]}x{expected[1]}")


def check_photo(manifest: Manifest, width: int, height: int) -> None:
    """Refuse a photo of another size than the one the manifest was written for."""
    if (width, height) != (manifest.width, manifest.height):
        raise InputError(f"the photo is {width}x{height} but manifest {manifest.path} was written for "
                         f"{manifest.width}x{manifest.height}")


def stitch_pixels(manifest: Manifest | str | os.PathLike[str], picture: Any) -> np.ndarray:
    """Paste the manifest's region results into ``picture``'s pixels; returns the new pixel array.

    Each region file is decoded within its crop's size; :func:`check_region_files` beforehand refuses a wrong
    one before anything is decoded (``stitch`` does both)."""
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest)
    pixels = picture.pixels
    check_photo(manifest, pixels.shape[1], pixels.shape[0])
    if manifest.dtype and manifest.dtype != str(pixels.dtype):
        raise InputError(f"the photo is {pixels.dtype} but manifest {manifest.path} was written for "
                         f"{manifest.dtype}")
    out = pixels.copy()
    gray = bool(getattr(picture, "gray", False))
    core = masks = None
    if manifest.feather:  # the weights need the grown mask of the whole photo: the union of the regions' cores
        masks = [load_region_mask(region) for region in manifest.regions]  # each decoded once
        core = np.zeros(pixels.shape[:2], bool)
        for region, values in zip(manifest.regions, masks):
            core[region.crop.slices] |= values >= CORE_THRESHOLD
    for number, region in enumerate(manifest.regions):
        shape = (region.crop.height, region.crop.width)
        paste = (masks[number] if masks is not None else load_region_mask(region)) > 127
        result = load_pixels(region.result, shape, pixels.dtype, gray, "region result")
        weights = None if core is None else feather_weights(core, region.crop, manifest.feather)
        paste_region(out, pixels, region.crop, paste, result, weights)
    return out


def load_region_mask(region: SavedRegion) -> np.ndarray:
    """A region's saved paste mask as 8-bit values (HxW) of the crop's size: above 127 pasted, from
    CORE_THRESHOLD on of the grown mask."""
    from ..image.read import load_image

    shape = (region.crop.height, region.crop.width)
    picture = load_image(region.mask, max_pixels=shape[0] * shape[1])
    values = mask_values(picture)  # read as every mask is
    if values.shape != shape:
        raise InputError(f"region mask {region.mask} is {values.shape[1]}x{values.shape[0]}, expected "
                         f"{shape[1]}x{shape[0]}")
    if values.dtype != np.uint8:
        values = from_float(to_float(values), np.uint8)
    return values
