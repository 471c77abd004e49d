"""Face enhancement: detect, align, restore in batches, paste back, on photos of any size.

Faces are a small part of a photo, so the work follows them: detection on a scaled copy (plus full-resolution
tiles when the faces are small), one aligned crop per face at the network's size and template, the crops run in
batches through the engine, and each result warped back only into its own box with a soft mask. The background
is copied, resized with Lanczos, or upscaled by a network through the tiling engine; faces are pasted at the
output's scale. Without a face network the weight-free clean-up runs, on each face at its own resolution.

Faces are numbered in one stable order, largest first (ties: top, then left): the indices ``--list-faces``
prints, the web preview draws and ``faces=[...]`` chooses by. ``only_largest_face`` keeps face 0,
``only_center_face`` the face whose box centre lies nearest the photo's centre (as GFPGAN's option).

An ``aligned`` input is one face crop already on a template (GPEN's and GFPGAN's ``--aligned``): nothing is
detected; the whole image is resized to the network's face size (a non-square input is stretched to the square
and back), restored, and resized to the output size, the input's size times ``upscale``. GFPGAN and GPEN hand
back the network's own size: with an input at that size and ``upscale`` 1 the two agree; for GPEN-1024's 1024 px
from a 512 px crop ask ``upscale=2``.

``strength`` blends the restored face with the original inside the paste mask. When it is not given, the
model's own default applies: GPEN's authors run GPEN-BFR-2048 with ``--alpha 0.8``, which blends the restored
crop with the aligned input crop before warping it back; here the blend is taken with the original pixels under
the warped mask, the same weights without one more resampling of the original.

Each restored crop is rounded to the saved files' depth (8-bit for 8-bit photos, else 16-bit) before it is
pasted, so ``enhance-stitch`` of the files ``save_faces`` wrote gives back the same output bit for bit.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..engine import Runtime, run_model
from ..errors import InputError, ModelError, OptionError
from ..progress import ProgressCallback
from ..faces.align import (AlignedFace, align_face, alignment_matrix, compose, face_template, footprint, invert,
                           native_crop_size, native_square_size, resize_map, translation)
from ..faces.detect import Face, available_detector, detect_faces
from ..faces.paste import FacePaster, face_parser
from ..filters import deblur, suppress_hf
from ..image.pixels import Picture, from_float, to_float
from ..models.classical.face import classical_face_model
from ..models.classical.lanczos import resize
from ..models.descriptor import Model
from ..options import EngineOptions, FaceOptions, parse_options
from .common import deliver, open_picture
from .result import Result

# Faces are aligned, restored and pasted this many at a time, so crops never pile up for a crowd.
_CHUNK = 16
# --deblur estimates the blur on at least this many pixels around a face (a small face alone shows too little).
_DEBLUR_MIN_SIDE = 256
WEIGHT_FREE_HINT = "gpen-bfr-512"


@dataclass(eq=False)
class RestoredFace:
    """One face as processed: the detection, its crop size, the alignment (photo -> crop), the output box
    (x0, y0, x1, y1) whose pixels the paste may have changed (None when nothing was pasted), and its index in
    the detection order."""

    face: Face
    size: int
    matrix: np.ndarray = field(repr=False)
    box: tuple[int, int, int, int] | None = None
    index: int = 0


@dataclass
class FaceReport:
    """What an enhancement did: the face model, the detector, the background, each face, and timings (s).

    ``found`` counts the faces detected before any choice of faces; ``strength`` is the blend that was used;
    ``manifest`` is the ``save_faces`` manifest written, if any."""

    model: str
    weight_free: bool
    detector: str
    background: str
    scale: tuple[float, float]
    faces: list[RestoredFace] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    found: int = 0
    strength: float = 1.0
    aligned: bool = False
    manifest: Path | None = None


def enhance_faces(image: Any, *, model: str | Model | None = None, background: str | Model | None = None,
                  progress: ProgressCallback | None = None, cancel: threading.Event | None = None,
                  model_dir: str | None = None, **options: Any) -> Result[FaceReport]:
    """Restore the faces of ``image`` (path, :class:`Picture` or numpy array): a :class:`Result` whose ``image``
    has the form given (a Picture for a path) and whose ``report`` is a :class:`FaceReport`.

    ``model``: a face model name (``gpen-bfr-512``, ``gfpgan-1.4``, ``codeformer``, ``restoreformer``...), a
    path, a loaded face :class:`Model`, or None for the weight-free clean-up. ``background``: "auto", "none",
    "lanczos", or an upscaling model (name, path or Model) for the rest of the photo at ``upscale`` > 1.
    Other options (``upscale``, ``strength``, ``fidelity``, ``face_batch``, ``min_face``, ``min_score``,
    ``detector``, ``detect_tiles``, ``aligned``, ``only_center_face``, ``only_largest_face``, ``faces``,
    ``save_faces``, ``deblur``, ``deblur_method``, ``suppress_hf`` and the engine options) are validated by
    :class:`~tessera.options.FaceOptions`; the module's docstring says what the face choices and ``aligned`` do.
    A photo without faces is not an error: it comes back unchanged (resized at ``upscale`` > 1).
    """
    named = {"model": model if isinstance(model, (str, type(None))) else None,
             "background": background if isinstance(background, str) else "auto"}
    opts = parse_options(FaceOptions, **named, **options)
    picture, kind = open_picture(image)
    network, weight_free = _resolve_face_model(model, opts, model_dir)
    network = _with_fidelity(network, opts.fidelity)
    strength = face_strength(opts, network)
    runtime = Runtime.create(opts.device, opts.precision, opts.max_memory, model=network,
                             progress=progress, cancel=cancel)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    detector, found, chosen = "none (aligned input)", [], []
    if not opts.aligned:
        detector = available_detector(opts.detector)
        found = find_faces(picture.pixels, opts, runtime, detector)
        chosen = choose_faces(found, opts, picture.pixels.shape[:2])
    timings["detect"] = time.perf_counter() - started

    mark = time.perf_counter()
    background_model = _background_model(background)
    result, background_name = make_background(picture, opts, background_model, progress, cancel, model_dir)
    timings["background"] = time.perf_counter() - mark
    scale = (result.width / picture.width, result.height / picture.height)

    done = FaceReport(network.name, weight_free, detector, background_name, scale, timings=timings,
                      found=len(found), strength=strength, aligned=opts.aligned)
    if opts.aligned or chosen:
        canvas = result.pixels if result.pixels.flags.writeable else result.pixels.copy()
        parser = None if opts.aligned else face_parser(opts.parse_mask, model_dir)
        writer = _writer(opts, picture, canvas, network, background_name, strength, parser)
        if opts.aligned:
            done.faces = [_restore_aligned(picture.pixels, canvas, network, opts, runtime, timings, strength,
                                           writer)]
        else:
            done.faces = _restore(picture.pixels, canvas, chosen, network, opts, runtime, scale, timings,
                                  strength, writer, parser)
        done.manifest = writer.finish() if writer is not None else None
        result = result.with_pixels(canvas)
    timings["total"] = time.perf_counter() - started
    return Result(deliver(result, kind), done, unchanged=not done.faces and done.scale == (1.0, 1.0))


def face_strength(opts: FaceOptions, network: Model) -> float:
    """The blend to use: the user's ``strength``, else the model's default (``face_strength``), else 1."""
    if opts.strength is not None:
        return float(opts.strength)
    return 1.0 if network.face_strength is None else float(network.face_strength)


def find_faces(pixels: np.ndarray, opts: FaceOptions, runtime: Runtime | None = None,
               detector: str | None = None) -> list[Face]:
    """Detect the faces of ``pixels`` with ``opts``' detection options, in index order
    (:func:`~tessera.faces.boxes.index_order`)."""
    return detect_faces(pixels, min_face=opts.min_face, min_score=opts.min_score,
                         detector=detector or available_detector(opts.detector), tiles=opts.detect_tiles,
                         runtime=runtime)


def choose_faces(faces: list[Face], opts: FaceOptions, shape: tuple[int, ...]) -> list[tuple[int, Face]]:
    """The ``(index, face)`` pairs to restore: all, the largest, the most central, or those ``opts.faces`` names.

    An index beyond the faces found is an InputError: the user asked for a face the detector did not find."""
    indexed = list(enumerate(faces))
    if opts.only_largest_face:
        return indexed[:1]
    if opts.only_center_face:
        if not indexed:
            return []
        rows, cols = shape[:2]

        def distance(item: tuple[int, Face]) -> float:
            x0, y0, x1, y1 = item[1].box
            return float(np.hypot((x0 + x1) / 2 - cols / 2, (y0 + y1) / 2 - rows / 2))

        return [min(indexed, key=distance)]
    if opts.faces is not None:
        missing = [index for index in opts.faces if index >= len(faces)]
        if missing:
            found = f"faces 0-{len(faces) - 1}" if len(faces) > 1 else "face 0" if faces else "no face"
            raise InputError(f"face {', '.join(map(str, missing))} not found: the detector found {found} "
                             f"(`tessera enhance --list-faces` prints them)")
        return [indexed[index] for index in opts.faces]
    return indexed


def _resolve_face_model(model: Any, opts: FaceOptions, model_dir: str | None) -> tuple[Model, bool]:
    """The face network and whether it is the weight-free clean-up; ModelError for a model of another task."""
    if model is None:
        return classical_face_model(), True
    from ..models.loader import as_model, load_model

    network = load_model(model, model_dir=model_dir) if isinstance(model, str) else as_model(model)
    if network.task != "face":
        raise ModelError(f"model {network.name} is a {network.task} model, not a face model (try "
                         f"gpen-bfr-512, gfpgan-1.4, codeformer or restoreformer)")
    return network, False


def _with_fidelity(network: Model, fidelity: float) -> Model:
    """CodeFormer takes its fidelity weight as a call argument: a descriptor for this job that passes it."""
    if "fidelity" not in network.call_options:
        return network

    def call(module: Any, image: Any) -> Any:
        return module(image, weight=fidelity)[0]

    return replace(network, call_fn=call)


def _background_model(background: Any) -> Model | None:
    """A background given as a loaded model, descriptor or module, as a Model; None for a name or None."""
    if isinstance(background, (str, type(None))):
        return None
    from ..models.loader import as_model

    return as_model(background)


def make_background(picture: Picture, opts: FaceOptions, background_model: Model | None,
                    progress: ProgressCallback | None, cancel: threading.Event | None,
                    model_dir: str | None) -> tuple[Picture, str]:
    """The canvas the faces are pasted into: a copy, a Lanczos resize, or a network's upscale; and its name."""
    choice = "model" if background_model is not None else opts.background
    if choice == "auto":
        choice = "none" if opts.upscale == 1 else "lanczos"
    if choice == "none" and opts.upscale != 1:
        raise OptionError(f"background 'none' keeps the photo's size, but upscale is {opts.upscale:g}: use "
                          f"--background lanczos or an upscaling model")
    if choice in ("none", "lanczos") and opts.upscale == 1:  # Lanczos at 1x is the identity: copy
        return picture.with_pixels(picture.pixels.copy()), "none"
    from .upscale import upscale

    engine = {name: getattr(opts, name) for name in EngineOptions.model_fields}
    upscaler = None if choice == "lanczos" else (background_model or choice)
    done = upscale(picture, model=upscaler, scale=opts.upscale, progress=progress, cancel=cancel,
                   model_dir=model_dir, **engine)
    return done.image, "lanczos" if upscaler is None else done.report.model


def _crop_size(network: Model, face: Face, template: str, scale: tuple[float, float]) -> int:
    """The network's face size, or for size-free methods the face's own size at the output scale."""
    if network.face_size:
        return int(network.face_size)
    return native_crop_size(face.landmarks, template, max(scale))


def _align(pixels: np.ndarray, face: Face, template: str, size: int, opts: FaceOptions) -> AlignedFace:
    """The aligned crop of one face, deblurred first when asked (on the photo region under the crop)."""
    if not opts.deblur:
        return align_face(pixels, face.landmarks, template, size)
    matrix = alignment_matrix(face.landmarks, template, size)
    grow = max(0, (_DEBLUR_MIN_SIDE - min(face.width, face.height)) // 2)
    box = footprint(invert(matrix), size, size, pixels.shape[:2], margin=int(8 + grow))
    if box is None:  # a face entirely outside the photo cannot come from the detector
        return align_face(pixels, face.landmarks, template, size)
    x0, y0, x1, y1 = box
    region = deblur(to_float(pixels[y0:y1, x0:x1]), method=opts.deblur_method)
    aligned = align_face(region, face.landmarks - np.array([x0, y0]), template, size)
    return AlignedFace(aligned.crop, compose(aligned.matrix, translation(-x0, -y0)))


def file_dtype(photo_dtype: np.dtype) -> np.dtype:
    """The depth of saved face crops: 8-bit for 8-bit photos, 16-bit for 16-bit and float ones."""
    return np.dtype(np.uint8) if np.dtype(photo_dtype) == np.uint8 else np.dtype(np.uint16)


def _settle(face: np.ndarray, photo_dtype: np.dtype) -> np.ndarray:
    """A restored crop rounded to the saved files' depth (float32 in [0, 1]): what the paste and the file hold."""
    return to_float(from_float(face, file_dtype(photo_dtype)))


def paste_aligned(canvas: np.ndarray, face: np.ndarray, strength: float) -> tuple[int, int, int, int] | None:
    """Put a restored aligned input back: resized to the whole canvas, blended by ``strength``."""
    if strength <= 0:
        return None
    rows, cols = canvas.shape[:2]
    patch = np.clip(resize(np.asarray(face, dtype=np.float32), cols, rows), 0.0, 1.0)
    if patch.ndim == 2:
        patch = patch[:, :, None]
    if strength < 1:
        base = to_float(canvas)
        patch = base + np.float32(strength) * (patch - base)
    canvas[...] = from_float(patch, canvas.dtype)
    return 0, 0, cols, rows


def chunk_size(batch: int | str) -> int:
    """Faces aligned, restored and pasted together for option ``face_batch`` (enhance-stitch pastes the same)."""
    return max(_CHUNK, batch if isinstance(batch, int) else 1)


def _counting(runtime: Runtime, first: int, total: int) -> Runtime:
    """A runtime whose progress events count faces for the whole job: the engine reports each batch of the
    chunk that starts at face ``first``, and this turns that into "faces first + done of total"."""
    if runtime.progress is None:
        return runtime

    def relay(event: Any) -> None:
        runtime.report("faces", first + event.done, total)

    return replace(runtime, progress=relay)


def _restore(pixels: np.ndarray, canvas: np.ndarray, chosen: list[tuple[int, Face]], network: Model,
             opts: FaceOptions, runtime: Runtime, scale: tuple[float, float], timings: dict[str, float],
             strength: float, writer: Any, parser: Model | None = None) -> list[RestoredFace]:
    """Align, restore and paste the faces, a chunk at a time; smaller faces first so larger ones end on top,
    each sparing the others' features (:class:`~tessera.faces.paste.FacePaster`).

    Progress ("faces", done of the face count) moves after every batch the engine runs: every face on the CPU."""
    template = network.face_template or "facexlib"
    order = sorted(chosen, key=lambda item: item[1].size)
    batch = opts.face_batch
    chunk = chunk_size(batch)
    restored: list[RestoredFace] = []
    paster = FacePaster([face.landmarks for _, face in order], scale, strength=strength, parser=parser,
                        runtime=runtime, batch=batch)
    for key in ("align", "restore", "paste"):
        timings[key] = 0.0
    runtime.report("faces", 0, len(order))
    for first in range(0, len(order), chunk):
        runtime.check_cancelled()
        group = order[first:first + chunk]
        mark = time.perf_counter()
        aligned = [_align(pixels, face, template, _crop_size(network, face, template, scale), opts)
                   for _, face in group]
        timings["align"] += time.perf_counter() - mark
        mark = time.perf_counter()
        outputs = run_model(network, [item.crop for item in aligned], _counting(runtime, first, len(order)),
                            batch=batch, stage="faces")
        if opts.suppress_hf:
            outputs = [suppress_hf(output) for output in outputs]
        outputs = [_settle(output, pixels.dtype) for output in outputs]
        timings["restore"] += time.perf_counter() - mark
        mark = time.perf_counter()
        boxes = paster.paste(canvas, first, outputs, [item.matrix for item in aligned])
        for (index, face), item, output, box in zip(group, aligned, outputs, boxes):
            restored.append(RestoredFace(face, item.size, item.matrix, box, index))
            if writer is not None:
                writer.add(index, face, item.matrix, item.crop, output)
        timings["paste"] += time.perf_counter() - mark
        runtime.report("faces", first + len(group), len(order))
    return restored


def _restore_aligned(pixels: np.ndarray, canvas: np.ndarray, network: Model, opts: FaceOptions,
                     runtime: Runtime, timings: dict[str, float], strength: float, writer: Any) -> RestoredFace:
    """Restore an input that is one aligned face: resized to the network's square, run, resized to the canvas."""
    rows, cols = pixels.shape[:2]
    size = int(network.face_size or native_square_size(max(canvas.shape[:2])))
    mark = time.perf_counter()
    source = to_float(pixels)
    if opts.deblur:
        source = deblur(source, method=opts.deblur_method)
    crop = np.clip(resize(source, size, size), 0.0, 1.0).astype(np.float32, copy=False)
    matrix = resize_map(size / cols, size / rows)
    timings["align"] = time.perf_counter() - mark
    mark = time.perf_counter()
    runtime.report("faces", 0, 1)
    output = run_model(network, [crop], _counting(runtime, 0, 1), batch=1, stage="faces")[0]
    if opts.suppress_hf:
        output = suppress_hf(output)
    output = _settle(output, pixels.dtype)
    timings["restore"] = time.perf_counter() - mark
    mark = time.perf_counter()
    box = paste_aligned(canvas, output, strength)
    timings["paste"] = time.perf_counter() - mark
    points = face_template(network.face_template or "facexlib", size)
    landmarks = points @ invert(matrix)[:, :2].T + invert(matrix)[:, 2]
    face = Face((0.0, 0.0, float(cols), float(rows)), 1.0, landmarks)
    if writer is not None:
        writer.add(0, face, matrix, crop, output)
    runtime.report("faces", 1, 1)
    return RestoredFace(face, size, matrix, box, 0)


def _writer(opts: FaceOptions, picture: Picture, canvas: np.ndarray, network: Model, background: str,
            strength: float, parser: Model | None) -> Any:
    """The ``save_faces`` writer (crops, restored crops, manifest), or None when nothing is to be saved."""
    if opts.save_faces is None:
        return None
    from .faces_manifest import FaceWriter

    return FaceWriter(opts.save_faces, picture=picture, output_shape=canvas.shape[:2], upscale=opts.upscale,
                      strength=strength, template=network.face_template or "facexlib", model=network.name,
                      background=background, aligned=opts.aligned, face_batch=opts.face_batch,
                      parse_mask="box" if parser is None else "parsenet")
