"""Paste-back of inpainted crops, and the region files a user can fix by hand (``--save-regions`` / ``stitch``).

Only pixels inside a region's paste mask (its own holes of the grown mask) are written; every other pixel of the
output is the input's, bit for bit. With ``feather`` > 0 the new content is blended with the original over a
band of that many pixels inside the mask edge (raised cosine of the distance to the nearest unmasked pixel).

A result is first rounded to the photo's dtype, then blended: so ``stitch`` of the saved, unedited results
gives exactly the image ``inpaint`` wrote.

A manifest may come from anyone (a folder shared or downloaded), so :func:`read_manifest` checks all of it
before a pixel is read: its types, at most :data:`MAX_REGIONS` regions, every crop inside the photo, every
region file a regular file inside the manifest's folder (no ``..``, no absolute path, no symbolic link leading
out, no FIFO that would block the reader), and :func:`check_region_files` that each file's header has its
crop's size. Each failure is one :class:`~tessera.errors.InputError` line.
"""
from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePath, PureWindowsPath
from typing import Any

import cv2
import numpy as np

from ..errors import InputError, OutputError
from ..image import from_float, to_float, write_atomically
from .inpaint_plan import Box, Region

MANIFEST_VERSION = 1
MAX_REGIONS = 10_000                 # regions a manifest may list (an inpaint with more cannot save them)
MAX_MANIFEST_BYTES = 16 << 20        # a manifest of MAX_REGIONS regions takes about 3 MB
_MAX_SIDE = 2**31 - 1
_DTYPES = ("uint8", "uint16", "float32")


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
        if index >= MAX_REGIONS:
            raise OutputError(f"more than {MAX_REGIONS:,} regions to save in {self.folder}: stitch reads at most "
                              f"{MAX_REGIONS:,}; inpaint without saving the regions, or a part of the mask at a time")
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

# ---------------------------------------------------------------------------------------------- reading back


def regular_file(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` if it is a regular file; InputError otherwise (missing, a folder, a FIFO, a device...)."""
    path = Path(path)
    os.close(_open_regular(path, what))
    return path


def _open_regular(path: Path, what: str) -> int:
    """A read-only descriptor of the regular file ``path``; InputError for anything else.

    Checked with ``stat`` before anything opens it, then opened without blocking (``O_NONBLOCK``) and checked
    again to be that same regular file: a FIFO would block its reader for ever, and a device never ends.
    """
    try:
        before = os.stat(path)
    except FileNotFoundError:
        raise InputError(f"{what} {path} does not exist") from None
    except (OSError, ValueError) as error:
        raise InputError(f"{what} {path} cannot be read ({getattr(error, 'strerror', None) or error})") from None
    if not stat.S_ISREG(before.st_mode):
        raise InputError(f"{what} {path} is not a regular file")
    try:
        descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise InputError(f"{what} {path} cannot be read ({error.strerror or error})") from None
    opened = os.fstat(descriptor)
    if not stat.S_ISREG(opened.st_mode) or (opened.st_dev, opened.st_ino) != (before.st_dev, before.st_ino):
        os.close(descriptor)
        raise InputError(f"{what} {path} changed while it was being checked")
    return descriptor


def _read_json(path: Path) -> Any:
    """The JSON document in the regular file ``path`` (at most MAX_MANIFEST_BYTES), read without blocking."""
    try:
        with os.fdopen(_open_regular(path, "manifest"), "rb") as file:
            data = file.read(MAX_MANIFEST_BYTES + 1)
    except OSError as error:
        raise InputError(f"manifest {path} cannot be read ({error.strerror or error})") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise InputError(f"manifest {path} is over {MAX_MANIFEST_BYTES >> 20} MiB: not one --save-regions wrote")
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        reason = " ".join(str(error).split())[:200] or type(error).__name__
        raise InputError(f"manifest {path} is not a readable JSON file: {reason}") from None


def _shown(value: Any) -> str:
    """``repr(value)`` cut to a length that keeps an error message on one readable line."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 60 else text[:57] + "..."


def _whole_number(value: Any, low: int, high: int) -> int | None:
    """``value`` when it is a JSON integer (not a boolean, not a float) in ``low..high``, else None."""
    if type(value) is int and low <= value <= high:
        return value
    return None


def _field(data: dict[str, Any], key: str, low: int, high: int, path: Path) -> int:
    value = _whole_number(data.get(key), low, high)
    if value is None:
        raise InputError(f"manifest {path}: {key!r} must be a whole number from {low} to {high:,}, "
                         f"got {_shown(data.get(key))}")
    return value


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Load and check a ``--save-regions`` manifest (see the module's docstring for what is checked)."""
    path = Path(path)
    data = _read_json(path)
    if not isinstance(data, dict) or data.get("tessera") != "inpaint-regions":
        raise InputError(f"{path} is not a tessera inpaint manifest (written by --save-regions)")
    version = data.get("version")
    if type(version) is not int or version != MANIFEST_VERSION:
        raise InputError(f"manifest {path} has version {_shown(version)}; this tessera reads {MANIFEST_VERSION}")
    for key in ("width", "height", "regions", "feather"):
        if key not in data:
            raise InputError(f"manifest {path} lacks {key!r}")
    width = _field(data, "width", 1, _MAX_SIDE, path)
    height = _field(data, "height", 1, _MAX_SIDE, path)
    feather = _field(data, "feather", 0, 256, path)
    dtype = data.get("dtype")
    if dtype is not None and dtype not in _DTYPES:
        raise InputError(f"manifest {path}: 'dtype' must be one of {', '.join(_DTYPES)}, got {_shown(dtype)}")
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
        raise InputError(f"manifest {path}: 'input' must be the path of the photo, got {_shown(value)}")
    return Path(value)


def _saved_region(entry: Any, number: int, width: int, height: int, folder: Path, inside: Path,
                  path: Path) -> SavedRegion:
    if not isinstance(entry, dict):
        raise InputError(f"manifest {path}: region {number} must be an object, got {type(entry).__name__}")
    crop = region_crop(entry, width, height, path)
    return SavedRegion(crop, _region_file(entry.get("mask"), "mask", folder, inside, path),
                       _region_file(entry.get("result"), "result", folder, inside, path))


def region_crop(entry: dict[str, Any], width: int, height: int, path: Path) -> Box:
    """The region's crop ``[y0, x0, y1, x1]``: four whole numbers, a non-empty box inside the photo."""
    values = entry.get("crop")
    numbers = [_whole_number(v, 0, _MAX_SIDE) for v in values] if isinstance(values, list) else []
    if len(numbers) != 4 or None in numbers:
        raise InputError(f"manifest {path}: a region has no valid 'crop' [y0, x0, y1, x1] (got {_shown(values)})")
    y0, x0, y1, x1 = numbers
    if not (y0 < y1 <= height and x0 < x1 <= width):
        raise InputError(f"manifest {path}: crop {[y0, x0, y1, x1]} lies outside the {width}x{height} photo")
    return Box(y0, x0, y1, x1)


def _region_file(name: Any, kind: str, folder: Path, inside: Path, path: Path) -> Path:
    """The region file ``name`` as a checked path: relative, inside the manifest's folder once symbolic links
    are followed, and a regular file."""
    if not isinstance(name, str) or not name or "\x00" in name:
        raise InputError(f"manifest {path}: a region lacks its {kind!r} file name (got {_shown(name)})")
    relative = PurePath(name)
    if relative.is_absolute() or PureWindowsPath(name).drive or ".." in relative.parts:
        raise InputError(f"manifest {path}: region {kind} file {_shown(name)} is not inside the manifest's folder")
    real = Path(os.path.realpath(folder / relative))
    if not real.is_relative_to(inside):
        raise InputError(f"manifest {path}: region {kind} file {_shown(name)} leads out of the manifest's "
                         f"folder (a symbolic link)")
    return regular_file(real, f"region {kind} file")


def check_region_files(manifest: Manifest) -> None:
    """Every region's mask and result file has its crop's size, read from their headers (nothing decoded).

    The image reader opens them as :func:`regular_file` does (no blocking on a FIFO, regular files only)."""
    from ..image import read_image_size

    for region in manifest.regions:
        expected = (region.crop.width, region.crop.height)
        for kind, file in (("mask", region.mask), ("result", region.result)):
            size = read_image_size(file)
            if size != expected:
                raise InputError(f"region {kind} {file} is {size[0]}x{size[1]}, expected {expected[0]}x{expected[1]}")


def load_region_array(path: Path, shape: tuple[int, int], dtype: np.dtype, gray: bool, what: str) -> np.ndarray:
    """A region's (possibly hand-edited) result file as HxWx3 pixels of the photo's dtype."""
    from ..image import load_image

    picture = load_image(path, max_pixels=shape[0] * shape[1])
    pixels = picture.pixels
    if pixels.shape[:2] != shape:
        raise InputError(f"{what} {path} is {pixels.shape[1]}x{pixels.shape[0]}, expected {shape[1]}x{shape[0]}")
    if pixels.dtype != dtype:
        pixels = from_float(to_float(pixels), dtype)
    if gray:
        pixels = np.repeat(pixels[:, :, :1], 3, axis=2)
    return pixels


def check_photo(manifest: Manifest, width: int, height: int) -> None:
    """Refuse a photo of another size than the one the manifest was written for."""
    if (width, height) != (manifest.width, manifest.height):
        raise InputError(f"the photo is {width}x{height} but manifest {manifest.path} was written for "
                         f"{manifest.width}x{manifest.height}")


def stitch_pixels(manifest: Manifest | str | os.PathLike[str], picture: Any) -> np.ndarray:
    """Paste the manifest's region results into ``picture``'s pixels; returns the new pixel array.

    Each region file is decoded within its crop's size; :func:`check_region_files` beforehand refuses a wrong
    one before anything is decoded (``stitch`` does both)."""
    from ..masks import load_mask

    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest)
    pixels = picture.pixels
    check_photo(manifest, pixels.shape[1], pixels.shape[0])
    if manifest.dtype and manifest.dtype != str(pixels.dtype):
        raise InputError(f"the photo is {pixels.dtype} but manifest {manifest.path} was written for "
                         f"{manifest.dtype}")
    out = pixels.copy()
    gray = bool(getattr(picture, "gray", False))
    for region in manifest.regions:
        shape = (region.crop.height, region.crop.width)
        paste = load_mask(region.mask, what=f"region mask {region.mask}")
        if paste.shape != shape:
            raise InputError(f"region mask {region.mask} is {paste.shape[1]}x{paste.shape[0]}, expected "
                             f"{shape[1]}x{shape[0]}")
        result = load_region_array(region.result, shape, pixels.dtype, gray, "region result")
        paste_region(out, pixels, region.crop, paste, result, manifest.feather)
    return out
