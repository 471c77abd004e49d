"""The face files a user can edit by hand: ``save_faces`` writes them, :func:`stitch_faces` puts them back.

For each face ``save_faces`` writes its aligned crop (``face_NNN.png``, NNN the face's index in the detection
order) and the restored crop (``face_NNN_restored.png``), then a ``manifest.json``: the photo's size and dtype,
the output's size, the background, the blend (``strength``), the template, the paste mask (``box`` or
``parsenet``), and for each face in paste order its index, box, score, landmarks, crop size, alignment matrix
(photo pixels -> crop pixels, pixel centres) and file names.

:func:`stitch_faces` rebuilds the background (a copy, Lanczos, or the same upscaling model) and pastes the
restored files exactly as ``enhance`` does (the same :class:`~tessera.faces.paste.FacePaster`, each face sparing
the features of those pasted before it): unedited files give ``enhance``'s output bit for bit (a background
network and ParseNet on the same device, precision and batch).

A manifest may come from anyone, so it is checked as the inpaint manifest is
(:mod:`tessera.tasks.manifest_checks` holds the checks both use): a bounded regular file, its types, at most
:data:`MAX_FACES` faces, finite non-degenerate matrices, every file a regular file inside the manifest's folder
(no ``..``, no absolute path, no symbolic link leading out), each file's header of its crop's size.
"""
from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, OptionError, OutputError
from ..faces.align import TEMPLATES
from ..faces.detect import Face
from ..image.pixels import Picture, from_float, to_float
from ..image.write import save_image
from ..options import FaceOptions, parse_options
from .manifest_checks import (DTYPES, MAX_SIDE, folder_file, int_field, load_pixels, read_json, shown,
                              whole_number, write_json)

MANIFEST_KIND = "face-crops"
MANIFEST_VERSION = 1
MAX_FACES = 10_000          # faces a manifest may list
MAX_CROP = 4096             # largest crop side (networks go to 2048, the weight-free method too)
_MAX_UPSCALE = 8            # FaceOptions.upscale's bound
_MAX_MATRIX = 1e6           # largest matrix entry a real alignment has (photo sides are below 2**31)
_MODES = ("detected", "aligned")


class FaceWriter:
    """Writes each face's aligned crop and restored crop as it is pasted, then the manifest (:meth:`finish`)."""

    def __init__(self, folder: str | os.PathLike[str], *, picture: Picture, output_shape: tuple[int, int],
                 upscale: float, strength: float, template: str, model: str, background: str, aligned: bool,
                 face_batch: int | str = "auto", parse_mask: str = "box"):
        from .faces import file_dtype

        self.folder = Path(folder)
        self.picture = picture
        self.dtype = file_dtype(picture.pixels.dtype)
        self.header = {"output_width": int(output_shape[1]), "output_height": int(output_shape[0]),
                       "upscale": float(upscale), "background": background, "strength": float(strength),
                       "template": template, "model": model, "mode": "aligned" if aligned else "detected",
                       "parse_mask": parse_mask, "face_batch": face_batch}
        self.faces: list[dict[str, Any]] = []
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise OutputError(f"{self.folder}: cannot create the --save-faces folder: "
                              f"{error.strerror or error}") from None

    def add(self, index: int, face: Face, matrix: np.ndarray, crop: np.ndarray, restored: np.ndarray) -> None:
        """Save one face: ``crop`` the aligned input, ``restored`` the (rounded) crop that was pasted."""
        if len(self.faces) >= MAX_FACES:
            raise OutputError(f"more than {MAX_FACES:,} faces to save in {self.folder}: enhance-stitch reads at "
                              f"most {MAX_FACES:,}; choose faces with --faces or do not save them")
        names = {"crop": f"face_{index:03d}.png", "restored": f"face_{index:03d}_restored.png"}
        save_image(from_float(crop, self.dtype), self.folder / names["crop"])
        save_image(from_float(restored, self.dtype), self.folder / names["restored"])
        self.faces.append({"index": int(index), "box": [float(v) for v in face.box], "score": float(face.score),
                           "landmarks": np.asarray(face.landmarks, float).tolist(), "size": int(restored.shape[0]),
                           "matrix": np.asarray(matrix, float).tolist(), **names})

    def finish(self) -> Path:
        """Write ``manifest.json`` (atomically) and return its path."""
        source = getattr(self.picture, "source", None)
        pixels = self.picture.pixels
        manifest = {"tessera": MANIFEST_KIND, "version": MANIFEST_VERSION,
                    "input": str(Path(source).resolve()) if source else None,
                    "width": int(pixels.shape[1]), "height": int(pixels.shape[0]), "dtype": str(pixels.dtype),
                    **self.header, "matrix": "photo pixels -> crop pixels, pixel centres", "faces": self.faces}
        return write_json(self.folder / "manifest.json", manifest)

# ---------------------------------------------------------------------------------------------- reading back


@dataclass(frozen=True)
class SavedFace:
    """One face of a manifest: its index, crop size, alignment and checked file paths."""

    index: int
    size: int
    matrix: np.ndarray
    landmarks: np.ndarray
    crop: Path
    restored: Path


@dataclass(frozen=True)
class FaceManifest:
    """A checked ``save_faces`` manifest."""

    path: Path
    input: Path | None
    width: int
    height: int
    dtype: str
    output_width: int
    output_height: int
    upscale: float
    background: str
    strength: float
    aligned: bool
    parse_mask: str
    face_batch: int | str
    faces: tuple[SavedFace, ...]


def _number(data: dict[str, Any], key: str, low: float, high: float, path: Path) -> float:
    value = data.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise InputError(f"manifest {path}: {key!r} must be a number from {low:g} to {high:g}, got {shown(value)}")
    return float(value)


def _text(data: dict[str, Any], key: str, path: Path, choices: tuple[str, ...] | None = None) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not value or len(value) > 1000 or "\x00" in value or (
            choices is not None and value not in choices):
        wanted = f"one of {', '.join(choices)}" if choices else "a name"
        raise InputError(f"manifest {path}: {key!r} must be {wanted}, got {shown(value)}")
    return value


def _array(value: Any, shape: tuple[int, int], key: str, number: int, path: Path) -> np.ndarray:
    """A ``shape`` list of lists of finite numbers no larger than _MAX_MATRIX, as float64."""
    rows = value if isinstance(value, list) and len(value) == shape[0] else None
    if rows is None or not all(isinstance(row, list) and len(row) == shape[1] and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and abs(v) <= _MAX_MATRIX
            for v in row) for row in rows):
        raise InputError(f"manifest {path}: face {number} has no valid {key!r} ({shape[0]}x{shape[1]} finite "
                         f"numbers), got {shown(value)}")
    return np.array(rows, dtype=np.float64)


def _matrix(value: Any, number: int, path: Path) -> np.ndarray:
    """A 2x3 alignment of finite numbers whose linear part is invertible and not absurdly large or small."""
    matrix = _array(value, (2, 3), "matrix", number, path)
    if not 1e-9 < abs(np.linalg.det(matrix[:, :2])) < 1e12:
        raise InputError(f"manifest {path}: face {number}'s 'matrix' is degenerate")
    return matrix


def read_face_manifest(path: str | os.PathLike[str]) -> FaceManifest:
    """Load and check a ``save_faces`` manifest (see the module's docstring for what is checked)."""
    path = Path(path)
    data = read_json(path, "--save-faces")
    if not isinstance(data, dict) or data.get("tessera") != MANIFEST_KIND:
        raise InputError(f"{path} is not a tessera face manifest (written by --save-faces)")
    version = data.get("version")
    if type(version) is not int or version != MANIFEST_VERSION:
        raise InputError(f"manifest {path} has version {shown(version)}; this tessera reads {MANIFEST_VERSION}")
    width = int_field(data, "width", 1, MAX_SIDE, path)
    height = int_field(data, "height", 1, MAX_SIDE, path)
    output_width = int_field(data, "output_width", width, min(MAX_SIDE, math.ceil(width * _MAX_UPSCALE)), path)
    output_height = int_field(data, "output_height", height, min(MAX_SIDE, math.ceil(height * _MAX_UPSCALE)), path)
    dtype = _text(data, "dtype", path, DTYPES)
    mode = _text(data, "mode", path, _MODES)
    _text(data, "template", path, tuple(TEMPLATES))
    upscale = _number(data, "upscale", 1, _MAX_UPSCALE, path)
    strength = _number(data, "strength", 0, 1, path)
    background = _text(data, "background", path)
    parse_mask = _text(data, "parse_mask", path, ("box", "parsenet"))
    face_batch = data.get("face_batch")
    if face_batch != "auto" and whole_number(face_batch, 1, MAX_FACES) is None:
        raise InputError(f"manifest {path}: 'face_batch' must be auto or a whole number from 1 to {MAX_FACES:,}, "
                         f"got {shown(face_batch)}")
    entries = data.get("faces")
    if not isinstance(entries, list):
        raise InputError(f"manifest {path}: 'faces' must be a list, got {type(entries).__name__}")
    if len(entries) > MAX_FACES:
        raise InputError(f"manifest {path} lists {len(entries):,} faces, over the limit of {MAX_FACES:,}")
    if mode == "aligned" and len(entries) != 1:
        raise InputError(f"manifest {path}: an aligned input has one face, the manifest lists {len(entries)}")
    folder = path.parent
    inside = Path(os.path.realpath(folder))
    faces = tuple(_saved_face(entry, number, folder, inside, path) for number, entry in enumerate(entries))
    source = data.get("input")
    if source is not None and (not isinstance(source, str) or "\x00" in source):
        raise InputError(f"manifest {path}: 'input' must be the path of the photo, got {shown(source)}")
    return FaceManifest(path, Path(source) if source else None, width, height, dtype, output_width,
                        output_height, upscale, background, strength, mode == "aligned", parse_mask, face_batch,
                        faces)


def _saved_face(entry: Any, number: int, folder: Path, inside: Path, path: Path) -> SavedFace:
    if not isinstance(entry, dict):
        raise InputError(f"manifest {path}: face {number} must be an object, got {type(entry).__name__}")
    index = int_field(entry, "index", 0, MAX_SIDE, path)
    size = int_field(entry, "size", 1, MAX_CROP, path)
    matrix = _matrix(entry.get("matrix"), number, path)
    landmarks = _array(entry.get("landmarks"), (5, 2), "landmarks", number, path)
    return SavedFace(index, size, matrix, landmarks, folder_file(entry.get("crop"), "face crop", folder, inside, path),
                     folder_file(entry.get("restored"), "restored face", folder, inside, path))


def check_face_files(manifest: FaceManifest) -> None:
    """Every face's crop and restored file has its crop's size, read from their headers (nothing decoded)."""
    from ..image.read import read_image_size

    for face in manifest.faces:
        for kind, file in (("face crop", face.crop), ("restored face", face.restored)):
            size = read_image_size(file)
            if size != (face.size, face.size):
                raise InputError(f"{kind} {file} is {size[0]}x{size[1]}, expected {face.size}x{face.size}")


def _saved_background(manifest: FaceManifest) -> str:
    """The manifest's background: none, lanczos or a catalog model name, never a path (the manifest is
    untrusted: it must not make tessera load a file it names)."""
    from ..models.catalog import find_entry

    name = manifest.background
    entry = find_entry(name)
    if name in ("none", "lanczos") or (entry is not None and name in (entry.name, *entry.aliases)):
        return name
    raise InputError(f"manifest {manifest.path}: background {shown(name)} is not a catalog model; give the "
                     f"upscaling model with --background")


def stitch_faces(manifest: FaceManifest | str | os.PathLike[str], image: Any = None, *,
                 background: Any = None, model_dir: str | None = None, progress: Any = None,
                 cancel: threading.Event | None = None, **engine: Any) -> Any:
    """Paste the (possibly hand-edited) restored faces of a ``save_faces`` manifest back into the photo.

    ``image``: the photo (path, Picture or array; default: the one the manifest names). ``background``: the
    upscaling model when the manifest's cannot be loaded by name (a Model given to ``enhance_faces``); engine
    options (``device``, ``precision``...) apply to it. Returns the result in the form of ``image``.
    """
    from ..engine import Runtime
    from ..faces.paste import FacePaster, face_parser
    from .common import deliver, open_picture
    from .faces import _background_model, chunk_size, file_dtype, make_background, paste_aligned

    if not isinstance(manifest, FaceManifest):
        manifest = read_face_manifest(manifest)
    check_face_files(manifest)
    if image is None:
        if manifest.input is None:
            raise OptionError(f"manifest {manifest.path} names no input photo (it came from an array): give the "
                              f"photo")
        image = manifest.input
    picture, kind = open_picture(image)
    pixels = picture.pixels
    if (pixels.shape[1], pixels.shape[0]) != (manifest.width, manifest.height) or str(pixels.dtype) != manifest.dtype:
        raise InputError(f"the photo is {pixels.shape[1]}x{pixels.shape[0]} {pixels.dtype} but manifest "
                         f"{manifest.path} was written for {manifest.width}x{manifest.height} {manifest.dtype}")
    if background is None:
        background = _saved_background(manifest)
    named = background if isinstance(background, str) else "auto"
    opts = parse_options(FaceOptions, upscale=manifest.upscale, background=named, **engine)
    result, _ = make_background(picture, opts, _background_model(background), progress, cancel, model_dir)
    if (result.width, result.height) != (manifest.output_width, manifest.output_height):
        raise InputError(f"the background is {result.width}x{result.height} but manifest {manifest.path} was "
                         f"written for {manifest.output_width}x{manifest.output_height}")
    canvas = result.pixels if result.pixels.flags.writeable else result.pixels.copy()
    scale = (result.width / picture.width, result.height / picture.height)
    depth = file_dtype(pixels.dtype)

    def restored(face: SavedFace) -> np.ndarray:
        return to_float(load_pixels(face.restored, (face.size, face.size), depth, False, "restored face"))

    if manifest.aligned:
        paste_aligned(canvas, restored(manifest.faces[0]), manifest.strength)
        return deliver(result.with_pixels(canvas), kind)
    parser = face_parser(manifest.parse_mask, model_dir)
    runtime = Runtime.create(opts.device, opts.precision, opts.max_memory, model=parser, cancel=cancel)
    paster = FacePaster([face.landmarks for face in manifest.faces], scale, strength=manifest.strength,
                        parser=parser, runtime=runtime, batch=manifest.face_batch)
    step = chunk_size(manifest.face_batch)
    for first in range(0, len(manifest.faces), step):  # as enhance pastes them: in chunks, in paste order
        runtime.check_cancelled()
        chunk = manifest.faces[first:first + step]
        paster.paste(canvas, first, [restored(face) for face in chunk], [face.matrix for face in chunk])
    return deliver(result.with_pixels(canvas), kind)
